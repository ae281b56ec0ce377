import numpy as np
import pandas as pd
import pytest

import models.btyd
from models.btyd import BetaGeoModel, BTYDBaseline, GammaGammaModel, btyd_inputs

TRUE = {"r": 0.6, "alpha": 20.0, "a": 0.8, "b": 2.5}


def simulate_bgnbd(n: int, seed: int = 0):
    """Draw (x, t_x, T) from the BG/NBD process itself."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    T = rng.uniform(200, 700, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    active = np.ones(n, bool)
    while active.any():
        now[active] += rng.exponential(1 / lam[active])
        bought = active & (now <= T)
        x[bought] += 1
        t_x[bought] = now[bought]
        active = bought & (rng.random(n) >= p)
    return x, t_x, T


def test_bgnbd_recovers_known_parameters():
    x, t_x, T = simulate_bgnbd(20_000)
    fitted = BetaGeoModel().fit(x, t_x, T).params_
    for name, value in TRUE.items():
        assert fitted[name] == pytest.approx(value, rel=0.2), name


def test_bgnbd_predictions_are_sane():
    x, t_x, T = simulate_bgnbd(5_000, seed=1)
    model = BetaGeoModel().fit(x, t_x, T)
    alive = model.p_alive(x, t_x, T)
    assert np.all(alive[x == 0] == 1.0) and np.all((alive > 0) & (alive <= 1))
    # Same history, longer silence since the last purchase: less likely alive.
    assert model.p_alive([3], [50], [100])[0] > model.p_alive([3], [50], [300])[0]
    short, long = model.expected_purchases(30, x, t_x, T), model.expected_purchases(365, x, t_x, T)
    assert np.all(long >= short) and np.all(short >= 0)
    no_buy = model.p_no_purchase(90, x, t_x, T)
    assert np.all((no_buy >= 0) & (no_buy <= 1))


def test_gamma_gamma_recovers_parameters():
    rng = np.random.default_rng(3)
    p, q, v = 6.0, 4.0, 15.0
    n = 20_000
    x = rng.integers(1, 10, n).astype(float)
    nu = rng.gamma(q, 1 / v, n)
    m = np.array([rng.gamma(p, 1 / nu_i, int(k)).mean() for nu_i, k in zip(nu, x, strict=True)])
    fitted = GammaGammaModel().fit(x, m).params_
    assert fitted["p"] == pytest.approx(p, rel=0.15)
    assert fitted["q"] == pytest.approx(q, rel=0.15)
    assert fitted["v"] == pytest.approx(v, rel=0.2)
    mean_value = GammaGammaModel().fit(x, m).expected_value(np.array([0.0, 5.0]), np.array([0, 20]))
    assert mean_value[0] == pytest.approx(p * fitted["v"] / (fitted["q"] - 1), rel=0.15)


def test_baseline_round_trips_through_json_dict():
    x, t_x, T = simulate_bgnbd(3_000, seed=2)
    features = pd.DataFrame(
        {
            "has_purchase": True,
            "frequency": x,
            "tenure_days": T,
            "recency_days": T - t_x,
            "days_since_activity": T - t_x,
            "gross_spend": (x + 1) * (20 + 5 * np.random.default_rng(0).random(len(x))),
            "first_purchase_value": 20.0,
        }
    )
    model = BTYDBaseline().fit(features)
    again = BTYDBaseline.from_dict(model.to_dict())
    pd.testing.assert_frame_equal(
        model.predict(features, 90, 365), again.predict(features, 90, 365)
    )


def test_expected_purchases_positive_when_a_below_one():
    model = BetaGeoModel()
    model.params_ = {"r": 0.5, "alpha": 10.0, "a": 0.6, "b": 3.0}
    out = model.expected_purchases(365, np.array([0.0, 2.0, 10.0]), [0, 50, 300], [100, 100, 320])
    assert np.all(np.isfinite(out)) and np.all(out > 0)
    # It must agree with a numerical check: more purchases in a longer window.
    assert np.all(model.expected_purchases(730, [2.0], [50], [100]) > out[1])


def test_gamma_gamma_reads_the_mean_of_repeat_purchases_only():
    features = pd.DataFrame(
        {
            "has_purchase": [True, True, False],
            "frequency": [2.0, 0.0, 0.0],
            "tenure_days": [90.0, 5.0, np.nan],
            "recency_days": [10.0, 5.0, np.nan],
            "days_since_activity": [10.0, 5.0, 40.0],
            "gross_spend": [200.0, 40.0, 0.0],
            "first_purchase_value": [100.0, 40.0, np.nan],  # repeat days: 200 - 100 over 2
        }
    )
    x, t_x, T, m = btyd_inputs(features)
    np.testing.assert_array_equal(m, [50.0, 0.0, 0.0])
    np.testing.assert_array_equal(x, [2, 0, 0])
    np.testing.assert_array_equal(t_x, [80.0, 0.0, 0.0])
    np.testing.assert_array_equal(T, [90.0, 5.0, 40.0])


def test_a_fit_that_does_not_converge_is_retried_with_a_penalty_and_recorded(monkeypatch):
    real = models.btyd.minimize
    calls = []

    def failing_twice(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(result)
        result.success = len(calls) > 2
        return result

    monkeypatch.setattr(models.btyd, "minimize", failing_twice)
    x, t_x, T = simulate_bgnbd(3_000, seed=4)
    model = BetaGeoModel().fit(x, t_x, T)
    assert len(calls) == 3 and model.converged_ and model.penalizer_ == 0.01
    monkeypatch.setattr(models.btyd, "minimize", lambda *a, **k: _failed(real(*a, **k)))
    never = BetaGeoModel().fit(x, t_x, T)
    assert never.converged_ is False and never.penalizer_ == 0.1
    baseline = BTYDBaseline()
    baseline.bgnbd_, baseline.gg_ = (
        never,
        GammaGammaModel().fit([1.0] * 20, [10.0 + i for i in range(20)]),
    )
    params = baseline.to_params()
    assert params["btyd_bgnbd_converged"] == 0.0 and params["btyd_bgnbd_penalizer"] == 0.1
    assert BTYDBaseline.from_dict(baseline.to_dict()).bgnbd_.converged_ is False


def _failed(result):
    result.success = False
    return result
