"""Shared by the benchmarks: a small trained bundle, snapshots, and the out-of-time yardstick
(scores at as_of against what the next horizon brought, beside the BTYD baseline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def trained_bundle(directory: Path, customers: int = 20_000) -> tuple[Path, pd.DataFrame]:
    """Train on synthetic data (no MLflow) and save the bundle; returns (bundle dir, features)."""
    from features.customer import customer_features
    from features.load import Inputs
    from features.synthetic import generate
    from features.validation import validate_customers, validate_transactions
    from training.config import TrainConfig
    from training.run import train

    cust, tx, _ = generate(customers, seed=11)
    clean, as_of, report = validate_transactions(tx)
    attrs, _ = validate_customers(cust)
    bundle = train(Inputs(clean, as_of, attrs, [report]), TrainConfig()).bundle
    feats = customer_features(clean, as_of, attrs).assign(as_of=str(as_of.date()))
    return bundle.save(directory / "bundle"), feats


def replicate(features: pd.DataFrame, rows: int) -> pd.DataFrame:
    """A bigger snapshot made of copies of real feature rows, with fresh ids."""
    reps = -(-rows // len(features))
    big = pd.concat([features] * reps, ignore_index=True).head(rows)
    big["customer_id"] = pd.Series(np.arange(rows)).astype("str").str.zfill(9)
    return big


def holdout_report(
    scores: pd.DataFrame,
    transactions: pd.DataFrame,
    customers: pd.DataFrame | None,
    as_of: pd.Timestamp,
    churn_horizon: int,
    value_horizon: int,
) -> dict:
    """Out of time, as a user would check it: every customer with a purchase by `as_of`, the
    model's scores (`customer_id`, `churn_probability`, `predicted_value`) and the BTYD baseline
    fitted on the same history, against what the horizons after `as_of` brought. Churn AUC
    over all of them and over the active ones (a purchase in the last 2 x horizon days)."""
    from features.customer import customer_features
    from features.labels import labels
    from features.validation import DAY
    from models.btyd import BTYDBaseline
    from training.evaluate import churn_metrics, value_metrics

    history = transactions[transactions["timestamp"] < as_of + DAY]
    feats = customer_features(history, as_of, customers)
    feats = feats[feats["has_purchase"]].reset_index(drop=True)
    y = labels(transactions, feats["customer_id"], as_of, churn_horizon)["churned"].to_numpy()
    spend = labels(transactions, feats["customer_id"], as_of, value_horizon)["future_spend"]
    spend = spend.to_numpy()
    model = scores.set_index("customer_id").reindex(feats["customer_id"])
    baseline = BTYDBaseline().fit(feats).predict(feats, churn_horizon, value_horizon)
    active = feats["recency_days"].to_numpy() < 2 * churn_horizon
    out = {"customers": len(feats), "active": int(active.sum()), "true_total": spend.sum()}
    for name, churn, value in (
        ("model", model["churn_probability"], model["predicted_value"]),
        ("BTYD", baseline["btyd_p_churn"], baseline["btyd_expected_value"]),
    ):
        churn, value = churn.to_numpy("float64"), value.to_numpy("float64")
        v = value_metrics(spend, value)
        active_churn = churn_metrics(y[active], churn[active])
        out[name] = {
            "auc_all": churn_metrics(y, churn)["auc"],
            "auc_active": active_churn["auc"],
            "calibration": active_churn["calibration_error"],
            "gini": v["normalized_gini"],
            "spearman": v["spearman"],
            "predicted_total": float(value.sum()),
            "bias": v["aggregate_bias"],
        }
    return out


def print_report(title: str, report: dict) -> None:
    print(
        f"{title}: {report['customers']:,} customers with a purchase by as_of "
        f"({report['active']:,} active), true spend in the horizon {report['true_total']:,.0f}"
    )
    print(
        f"  {'':6s} {'AUC all':>8s} {'AUC act':>8s} {'cal.err':>8s} {'Gini':>7s} "
        f"{'Spearman':>9s} {'predicted':>12s} {'bias':>7s}"
    )
    for name in ("model", "BTYD"):
        r = report[name]
        print(
            f"  {name:6s} {r['auc_all']:8.3f} {r['auc_active']:8.3f} {r['calibration']:8.3f} "
            f"{r['gini']:7.3f} "
            f"{r['spearman']:9.3f} {r['predicted_total']:12,.0f} {r['bias']:+7.1%}"
        )
