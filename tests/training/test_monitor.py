"""Monitoring: PSI exact on small tables; on a generated shop, an unchanged future raises no
alarm and a planted shift after the cutoff is caught in the realised metrics and in drift."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.load import Inputs
from features.schema import DataError
from features.sources import write_table
from features.synthetic import generate
from features.validation import validate_customers, validate_transactions
from models import drift
from training.config import MonitorConfig, TrainConfig
from training.monitor import monitor
from training.run import train

CUTOFF = "2025-09-01"


def test_reference_bins_and_psi_exactly():
    frame = pd.DataFrame(
        {
            "spend": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            "region": ["N", "N", "S", "S", "S", "S", None, "E", "E", "E"],
            "month": 9,  # the same for everyone: the calendar, not the customers
        }
    )
    ref = drift.reference(frame)
    assert "month" not in ref
    assert ref["region"]["levels"] == ["S", "E", "N"]
    assert ref["region"]["shares"] == pytest.approx([0.4, 0.3, 0.2, 0.0, 0.1])  # + other, missing
    assert len(ref["spend"]["edges"]) == 9 and sum(ref["spend"]["shares"]) == pytest.approx(1)
    assert drift.stability(ref, frame).max() == pytest.approx(0.0)
    # Everyone in the north now: PSI = sum (now - then) ln(now / then), shares floored at 1e-4.
    north = frame.assign(region="N")
    floor = 1e-4
    expected = (1 - 0.2) * np.log(1 / 0.2) + sum(
        (floor - s) * np.log(floor / s) for s in (0.4, 0.3, 0.1)
    )
    assert drift.stability(ref, north)["region"] == pytest.approx(expected)
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0


@pytest.fixture(scope="module")
def shop():
    customers, tx, _ = generate(3000, seed=11, end="2025-12-31", years=3.0)
    cust, _ = validate_customers(customers)
    past, as_of, report = validate_transactions(tx, as_of=CUTOFF)
    bundle = train(
        Inputs(past, as_of, cust, [report]),
        TrainConfig(churn_horizon=90, value_horizon=90, n_personas=4, stability_resamples=1),
    ).bundle
    from features.customer import customer_features

    scores = bundle.score(customer_features(past, as_of, cust)).assign(
        model_version="clientela/1", as_of=CUTOFF
    )
    return {"customers": customers, "cust": cust, "tx": tx, "bundle": bundle, "scores": scores}


def _inputs(shop, tx) -> Inputs:
    clean, as_of, report = validate_transactions(tx)
    return Inputs(clean, as_of, shop["cust"], [report])


def _shifted(tx: pd.DataFrame) -> pd.DataFrame:
    """After the cutoff, half of the customers stop buying and the rest spend three times as
    much per purchase: nothing in the history foretells either."""
    ids = tx["customer_id"].unique()
    gone = set(np.random.default_rng(0).choice(ids, len(ids) // 2, replace=False))
    after = pd.to_datetime(tx["timestamp"], utc=True) > pd.Timestamp(CUTOFF, tz="UTC")
    out = tx[~(after & tx["customer_id"].isin(gone))].copy()
    later = pd.to_datetime(out["timestamp"], utc=True) > pd.Timestamp(CUTOFF, tz="UTC")
    out.loc[later, "amount"] = out.loc[later, "amount"] * 3
    return out


def test_an_unchanged_shop_raises_no_alarm(shop):
    result = monitor(shop["scores"], _inputs(shop, shop["tx"]), shop["bundle"], MonitorConfig())
    assert result.alarms == [], result.alarms
    m = result.metrics
    assert m["churn_auc"] > 0.8 and m["churn_all_auc"] > 0.9
    assert {"baseline_churn_auc", "churn_all_brier", "value_normalized_gini"} <= set(m)
    assert result.feature_psi.max() < 0.25 and result.prediction_psi.max() < 0.25
    assert set(result.by_persona["persona_name"]) == set(shop["scores"]["persona_name"])
    assert result.by_persona["customers"].sum() == len(shop["scores"])


def test_a_planted_shift_is_caught_in_metrics_and_drift(shop):
    result = monitor(
        shop["scores"], _inputs(shop, _shifted(shop["tx"])), shop["bundle"], MonitorConfig()
    )
    alarms = " | ".join(result.alarms)
    assert "churn AUC on active customers" in alarms
    assert "predicted value total" in alarms
    assert "input(s) drifted past PSI" in alarms
    assert result.feature_psi.index[0] in {"spend_90d", "avg_order_value", "recency_days"} or (
        result.feature_psi.iloc[0] > 0.25
    )
    assert result.metrics["retrain_recommended"] == 1.0


def test_labels_not_yet_complete_are_said_so(shop):
    early = shop["tx"][pd.to_datetime(shop["tx"]["timestamp"], utc=True) < "2025-10-15"]
    result = monitor(shop["scores"], _inputs(shop, early), shop["bundle"], MonitorConfig())
    assert "churn_auc" not in result.metrics and "value_normalized_gini" not in result.metrics
    assert "churn labels are complete on 2025-11-30" in result.notes
    assert result.prediction_psi is not None  # drift needs no labels


def test_scores_from_after_the_data_are_refused(shop):
    early = shop["tx"][pd.to_datetime(shop["tx"]["timestamp"], utc=True) < "2025-06-01"]
    with pytest.raises(DataError, match="before the scores' as_of 2025-09-01"):
        monitor(shop["scores"], _inputs(shop, early), shop["bundle"], MonitorConfig())


def test_cli_exits_3_on_a_shift_and_logs_aggregates_linked_to_the_version(
    shop, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    from clientela import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    bundle_dir = shop["bundle"].save(tmp_path / "bundle")
    write_table(shop["scores"], "past.parquet")  # as `clientela score` writes it
    _shifted(shop["tx"]).to_parquet("tx.parquet")
    shop["customers"].to_parquet("customers.parquet")
    (tmp_path / "thresholds.toml").write_text("[monitor]\nmax_value_bias = 0.5\n")
    args = ["monitor", "-s", "past.parquet", "-t", "tx.parquet", "-c", "customers.parquet"]
    result = CliRunner().invoke(
        app, [*args, "--model", str(bundle_dir), "--config", "thresholds.toml"]
    )
    assert result.exit_code == 3, result.output
    assert "retrain recommended" in result.output and "Traceback" not in result.output
    client = MlflowClient()
    experiment = client.get_experiment_by_name("clientela").experiment_id
    [run] = client.search_runs([experiment], "tags.kind = 'monitor'")
    assert run.data.tags["model_version"] == "clientela/1"
    assert run.data.tags["verdict"] == "retrain"
    assert run.data.params["max_value_bias"] == "0.5"
    assert run.data.metrics["retrain_recommended"] == 1.0
    logged = " ".join([*run.data.tags.values(), *run.data.params.values()])
    assert not any(cid in logged for cid in shop["scores"]["customer_id"].head(50))

    bad = CliRunner().invoke(app, [*args, "--model", str(bundle_dir), "--config", "nope.toml"])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    write_table(shop["scores"].assign(model_version="local"), "local.parquet")
    local = CliRunner().invoke(app, ["monitor", "-s", "local.parquet", *args[3:]])
    assert local.exit_code == 2 and "pass that directory with --model" in local.output

    # --retrain: the same data trains a new version, through the usual gate.
    (tmp_path / "thresholds.toml").write_text(
        "[monitor]\nmax_value_bias = 0.5\n[train]\nn_personas = 3\nstability_resamples = 1\n"
    )
    retrained = CliRunner().invoke(
        app, [*args, "--model", str(bundle_dir), "--config", "thresholds.toml", "--retrain"]
    )
    assert retrained.exit_code == 0, retrained.output
    assert "retrain recommended" in retrained.output
    assert str(client.get_model_version_by_alias("clientela", "champion").version) == "1"
