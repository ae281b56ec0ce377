"""BTYD baseline: BG/NBD (Fader, Hardie & Lee 2005) + Gamma-Gamma (Fader, Hardie & Lee 2005b),
fitted by maximum likelihood with scipy. Time is in days.

Inputs per customer follow the BTYD convention: `x` repeat purchase days, `t_x` days from first
to last purchase, `T` days from first purchase to the cutoff, `m` mean spend per repeat purchase
day (the first purchase left out, as in the published Gamma-Gamma model).

A fit that does not converge is retried with a stronger L2 penalty on the log-parameters, towards
their starting values (`PENALTIES`); `converged_` and `penalizer_` record how it ended.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from features.table import Columns

PENALTIES = (0.0, 0.001, 0.01, 0.1)


def btyd_inputs(
    features: pd.DataFrame | Columns,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T, m) from the customer feature table (refund-only customers: x = 0, T = age)."""
    f = Columns.of(features)
    has = f.flag("has_purchase")
    x = f.number("frequency")
    T = np.where(has, f.number("tenure_days"), f.number("days_since_activity"))
    t_x = np.where(has, T - np.nan_to_num(f.number("recency_days")), 0.0)
    repeat_spend = f.number("gross_spend") - np.nan_to_num(f.number("first_purchase_value"))
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(x > 0, repeat_spend / x, 0.0)
    return x, t_x, T, np.nan_to_num(m, nan=0.0)


def _arrays(*values) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v, dtype="float64") for v in values)


def _minimize(objective, start, bounds) -> tuple[np.ndarray, bool, float]:
    """(log-parameters, converged, penalizer): the first penalty in `PENALTIES` with which
    L-BFGS-B converges (else the last attempt)."""
    for penalizer in PENALTIES:
        result = minimize(
            lambda z, pen=penalizer: objective(z) + pen * np.sum((z - start) ** 2),
            start,
            method="L-BFGS-B",
            bounds=bounds,
        )
        converged = bool(result.success) and bool(np.all(np.isfinite(result.x)))
        if converged:
            break
    return result.x, converged, penalizer


class BetaGeoModel:
    """BG/NBD: purchases arrive at a Gamma(r, alpha) distributed rate; after each purchase the
    customer drops out with a Beta(a, b) distributed probability."""

    @staticmethod
    def _loglik(params: np.ndarray, x, t_x, T, x_levels=None) -> np.ndarray:
        """Per-customer log-likelihood. Terms that depend on x alone are computed once per
        distinct x (`x_levels` = (unique x, inverse index)); that is most of the cost."""
        r, alpha, a, b = params
        ux, inv = x_levels if x_levels is not None else np.unique(x, return_inverse=True)
        by_x = gammaln(r + ux) - gammaln(r) + r * np.log(alpha)
        beta_x = betaln(a, b + ux) - betaln(a, b)
        beta_x1 = betaln(a + 1, b + np.maximum(ux, 1) - 1) - betaln(a, b)
        term1 = beta_x[inv] - (r + x) * np.log(alpha + T)
        term2 = np.where(x > 0, beta_x1[inv] - (r + x) * np.log(alpha + t_x), -np.inf)
        return by_x[inv] + np.logaddexp(term1, term2)

    def fit(self, x, t_x, T) -> BetaGeoModel:
        # Customers with the same (x, t_x, T) share a likelihood term: fit on unique rows.
        rows, weights = np.unique(np.column_stack(_arrays(x, t_x, T)), axis=0, return_counts=True)
        x, t_x, T = rows.T
        weights = weights / weights.sum()
        x_levels = np.unique(x, return_inverse=True)

        def objective(log_params):
            return -(self._loglik(np.exp(log_params), x, t_x, T, x_levels) @ weights)

        start = np.log([1.0, max(float(np.mean(T)), 1.0), 1.0, 1.0])
        log_params, self.converged_, self.penalizer_ = _minimize(objective, start, [(-10, 10)] * 4)
        self.params_ = dict(zip(("r", "alpha", "a", "b"), np.exp(log_params).tolist(), strict=True))
        return self

    def _p(self):
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def p_alive(self, x, t_x, T) -> np.ndarray:
        r, alpha, a, b = self._p()
        x, t_x, T = _arrays(x, t_x, T)
        log_ratio = (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        odds = np.where(x > 0, a / (b + np.maximum(x, 1) - 1) * np.exp(log_ratio), 0.0)
        return 1.0 / (1.0 + odds)

    def expected_purchases(self, t: float, x, t_x, T) -> np.ndarray:
        """E[purchase days in the next t days | history]."""
        r, alpha, a, b = self._p()
        x, t_x, T = _arrays(x, t_x, T)
        z = t / (alpha + T + t)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
        a = a if abs(a - 1) > 1e-6 else 1 + 1e-6  # removable singularity of the closed form
        # For a < 1 both factors are negative and the product stays positive.
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        out = head * body * self.p_alive(x, t_x, T)
        return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0), 0.0, None)

    def p_no_purchase(self, t: float, x, t_x, T) -> np.ndarray:
        """P(no purchase in the next t days): dead, or alive with no arrival."""
        r, alpha, _, _ = self._p()
        x, t_x, T = _arrays(x, t_x, T)
        alive = self.p_alive(x, t_x, T)
        return 1 - alive + alive * ((alpha + T) / (alpha + T + t)) ** (r + x)


class GammaGammaModel:
    """Gamma-Gamma spend model: mean spend per purchase, shrunk towards the population. Fitted
    on repeat customers only: `m` is the mean of their repeat purchases."""

    def fit(self, x, m) -> GammaGammaModel:
        x, m = np.asarray(x, dtype="float64"), np.asarray(m, dtype="float64")
        keep = (x > 0) & (m > 0)
        x, m = x[keep], m[keep]
        if len(x) < 10:
            raise ValueError("Gamma-Gamma needs at least 10 repeat customers with positive spend")

        def objective(log_params):
            p, q, v = np.exp(log_params)
            ll = (
                gammaln(p * x + q)
                - gammaln(p * x)
                - gammaln(q)
                + q * np.log(v)
                + (p * x - 1) * np.log(m)
                + (p * x) * np.log(x)
                - (p * x + q) * np.log(v + m * x)
            )
            return -ll.mean()

        start = np.log([1.0, 2.0, float(np.mean(m))])
        log_params, self.converged_, self.penalizer_ = _minimize(objective, start, [(-10, 15)] * 3)
        self.params_ = dict(zip(("p", "q", "v"), np.exp(log_params).tolist(), strict=True))
        return self

    def expected_value(self, x, m) -> np.ndarray:
        """E[spend per purchase day]; customers without repeat purchases get the population mean."""
        p, q, v = (self.params_[k] for k in ("p", "q", "v"))
        x, m = np.asarray(x, dtype="float64"), np.asarray(m, dtype="float64")
        population = p * v / (q - 1) if q > 1 else float(np.mean(m[m > 0]))
        with np.errstate(divide="ignore", invalid="ignore"):
            posterior = (v + m * x) * p / (p * x + q - 1)
        return np.where((x > 0) & (m > 0), posterior, population)


class BTYDBaseline:
    """BG/NBD + Gamma-Gamma on the feature table: the bar the boosted models must beat.

    Four + three population parameters are estimated well from a sample: fitting uses at most
    `sample_size` customers (seeded), predictions cover everyone."""

    def __init__(self, sample_size: int = 30_000, random_state: int = 0):
        self.sample_size = sample_size
        self.random_state = random_state

    def fit(self, features: pd.DataFrame) -> BTYDBaseline:
        if len(features) > self.sample_size:
            features = features.sample(self.sample_size, random_state=self.random_state)
        x, t_x, T, m = btyd_inputs(features)
        self.bgnbd_ = BetaGeoModel().fit(x, t_x, T)
        self.gg_ = GammaGammaModel().fit(x, m)
        return self

    def outputs(
        self, features: pd.DataFrame | Columns, churn_horizon: int, value_horizon: int
    ) -> dict[str, np.ndarray]:
        """Expected purchases and spend over the value horizon, P(alive), P(churn) over the
        churn horizon."""
        x, t_x, T, m = btyd_inputs(features)
        purchases = self.bgnbd_.expected_purchases(value_horizon, x, t_x, T)
        return {
            "btyd_p_alive": self.bgnbd_.p_alive(x, t_x, T),
            "btyd_p_churn": self.bgnbd_.p_no_purchase(churn_horizon, x, t_x, T),
            "btyd_expected_purchases": purchases,
            "btyd_expected_value": purchases * self.gg_.expected_value(x, m),
        }

    def predict(
        self, features: pd.DataFrame, churn_horizon: int, value_horizon: int
    ) -> pd.DataFrame:
        """`outputs` as a table, on the feature table's index."""
        columns = self.outputs(features, churn_horizon, value_horizon)
        return pd.DataFrame(columns, index=features.index)

    def add_to(
        self, features: pd.DataFrame, churn_horizon: int, value_horizon: int
    ) -> pd.DataFrame:
        """The feature table with this baseline's outputs as columns (replacing older ones):
        what the boosted models take as input."""
        outputs = self.predict(features, churn_horizon, value_horizon)
        return pd.concat([features.drop(columns=outputs.columns, errors="ignore"), outputs], axis=1)

    def to_dict(self) -> dict:
        return {
            "bgnbd": self.bgnbd_.params_,
            "gamma_gamma": self.gg_.params_,
            "fit": {
                name: {"converged": part.converged_, "penalizer": part.penalizer_}
                for name, part in (("bgnbd", self.bgnbd_), ("gamma_gamma", self.gg_))
            },
        }

    def to_params(self) -> dict[str, float]:
        """Flat, for MLflow: parameters, convergence (1/0) and the penalty each fit needed."""
        out: dict[str, float] = {}
        for name, part in (("bgnbd", self.bgnbd_), ("gamma_gamma", self.gg_)):
            out.update({f"btyd_{name}_{k}": v for k, v in part.params_.items()})
            out[f"btyd_{name}_converged"] = float(part.converged_)
            out[f"btyd_{name}_penalizer"] = part.penalizer_
        return out

    @classmethod
    def from_dict(cls, data: dict) -> BTYDBaseline:
        model = cls()
        model.bgnbd_ = BetaGeoModel()
        model.gg_ = GammaGammaModel()
        for name, part in (("bgnbd", model.bgnbd_), ("gamma_gamma", model.gg_)):
            part.params_ = dict(data[name])
            fit = data.get("fit", {}).get(name, {})
            part.converged_, part.penalizer_ = fit.get("converged"), fit.get("penalizer")
        return model
