"""Monitoring after a model ships: how past scores did once their horizon passed (delayed
labels), beside the BTYD baseline on the same customers, and how far today's inputs and
predictions have drifted from those the model was trained on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.customer import customer_features
from features.labels import labels
from features.load import Inputs
from features.schema import DataError
from features.validation import DAY, to_day
from models import drift
from models.bundle import Bundle
from training.config import MonitorConfig
from training.evaluate import churn_metrics, value_metrics
from training.fit import active_mask
from training.run import model_inputs

PREDICTIONS = ("churn_probability", "predicted_value", "persona_id")


@dataclass
class MonitorResult:
    """What monitoring found. `alarms` name each threshold crossed; any alarm recommends a
    retrain."""

    scored_as_of: pd.Timestamp
    as_of: pd.Timestamp
    model_version: str
    customers: int  # scored customers found in today's data
    churn_due: pd.Timestamp  # when the churn labels are complete
    value_due: pd.Timestamp
    metrics: dict[str, float] = field(default_factory=dict)
    by_persona: pd.DataFrame | None = None
    feature_psi: pd.Series | None = None
    prediction_psi: pd.Series | None = None
    alarms: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def retrain(self) -> bool:
        return bool(self.alarms)


def _realised_churn(
    result: MonitorResult, then: pd.DataFrame, scores: pd.DataFrame, tx, bundle: Bundle
) -> None:
    horizon = bundle.churn_horizon
    y = labels(tx, then["customer_id"], result.scored_as_of, horizon)["churned"].to_numpy()
    if y.all() or not y.any():
        result.notes.append("churn: every scored customer had the same outcome, no AUC")
        return
    horizons = float(bundle.manifest.get("training_config", {}).get("active_horizons", 2.0))
    active = active_mask(then, horizon, horizons)
    baseline = bundle.btyd.predict(then, horizon, bundle.value_horizon)["btyd_p_churn"]
    for who, p in (("", scores["churn_probability"]), ("baseline_", baseline)):
        p = p.to_numpy("float64")
        for k, v in churn_metrics(y, p).items():
            result.metrics[f"{who}churn_all_{k}"] = v
        if y[active].any() and not y[active].all():
            for k, v in churn_metrics(y[active], p[active]).items():
                result.metrics[f"{who}churn_{k}"] = v
    result.metrics["customers_active"] = float(active.sum())


def _realised_value(
    result: MonitorResult, then: pd.DataFrame, scores: pd.DataFrame, tx, bundle: Bundle
) -> None:
    horizon = bundle.value_horizon
    actual = labels(tx, then["customer_id"], result.scored_as_of, horizon)["future_spend"]
    actual = actual.to_numpy("float64")
    if np.clip(actual, 0, None).sum() <= 0:
        result.notes.append("value: no spend after the scores' as_of, no value metrics")
        return
    baseline = bundle.btyd.predict(then, bundle.churn_horizon, horizon)["btyd_expected_value"]
    for who, p in (("", scores["predicted_value"]), ("baseline_", baseline)):
        for k, v in value_metrics(actual, p.to_numpy("float64")).items():
            result.metrics[f"{who}value_{k}"] = v
    result.by_persona = (
        pd.DataFrame(
            {
                "persona_name": scores["persona_name"].to_numpy(),
                "customers": 1,
                "predicted_value": scores["predicted_value"].to_numpy("float64"),
                "baseline_value": baseline.to_numpy("float64"),
                "actual_value": actual,
            }
        )
        .groupby("persona_name")
        .sum()
        .assign(bias=lambda f: f["predicted_value"] / f["actual_value"] - 1)
        .sort_values("actual_value", ascending=False)
        .reset_index()
    )


def _drift(result: MonitorResult, inputs: Inputs, bundle: Bundle) -> None:
    reference = bundle.manifest.get("drift_reference")
    now = customer_features(inputs.transactions, result.as_of, inputs.customers)
    now = bundle.btyd.add_to(now, bundle.churn_horizon, bundle.value_horizon)
    predicted = bundle.predict(now, with_reasons=False)
    if reference is None:  # trained before references were kept: the value quantiles remain
        result.notes.append("this model keeps no drift reference: only predicted value's PSI")
        shares = np.bincount(np.minimum(predicted["value_percentile"] // 10, 9), minlength=10)
        result.prediction_psi = pd.Series(
            {"predicted_value": drift.psi(np.full(10, 0.1), shares / shares.sum())}
        )
        return
    result.feature_psi = drift.stability(reference, now[model_inputs(bundle)])
    frame = pd.DataFrame({k: predicted[k] for k in PREDICTIONS}).astype({"persona_id": str})
    result.prediction_psi = drift.stability(reference, frame)


def _judge(result: MonitorResult, bundle: Bundle, config: MonitorConfig) -> None:
    m, trained = result.metrics, bundle.manifest.get("metrics", {})
    if "churn_auc" in m:
        if "churn_auc" in trained and m["churn_auc"] < trained["churn_auc"] - config.max_auc_drop:
            result.alarms.append(
                f"churn AUC on active customers is {m['churn_auc']:.3f}, down from "
                f"{trained['churn_auc']:.3f} at training (more than {config.max_auc_drop})"
            )
        if m["churn_auc"] < m["baseline_churn_auc"] - config.max_behind_baseline:
            result.alarms.append(
                f"churn AUC on active customers is {m['churn_auc']:.3f}, behind the BTYD "
                f"baseline's {m['baseline_churn_auc']:.3f}"
            )
    if "value_aggregate_bias" in m:
        if abs(m["value_aggregate_bias"]) > config.max_value_bias:
            result.alarms.append(
                f"predicted value total is {m['value_aggregate_bias']:+.0%} off the actual "
                f"(more than {config.max_value_bias:.0%})"
            )
        gini, base = m["value_normalized_gini"], m["baseline_value_normalized_gini"]
        if gini < base - config.max_behind_baseline:
            result.alarms.append(f"value Gini {gini:.3f} is behind the BTYD baseline's {base:.3f}")
    for psi, limit, what in (
        (result.feature_psi, config.max_feature_psi, "input"),
        (result.prediction_psi, config.max_prediction_psi, "prediction"),
    ):
        if psi is None:
            continue
        over = psi[psi > limit]
        if len(over):
            worst = ", ".join(f"{k} {v:.2f}" for k, v in over.head(3).items())
            result.alarms.append(f"{len(over)} {what}(s) drifted past PSI {limit}: {worst}")


def monitor(
    scores: pd.DataFrame, inputs: Inputs, bundle: Bundle, config: MonitorConfig
) -> MonitorResult:
    """Realised metrics of `scores` (one `clientela score` run) whose horizons have passed by
    `inputs.as_of`, the same for the BTYD baseline, and drift; alarms where `config`'s
    thresholds are crossed."""
    days = scores["as_of"].astype(str).unique()
    if len(days) != 1:
        raise DataError(f"scores hold several as_of days ({', '.join(days[:3])}): give one run")
    scored_as_of = to_day(days[0])
    if inputs.as_of < scored_as_of:
        raise DataError(
            f"the transactions end on {inputs.as_of.date()}, before the scores' as_of "
            f"{scored_as_of.date()}: monitoring needs what happened after it"
        )
    then = customer_features(inputs.transactions, scored_as_of, inputs.customers)
    ids = scores["customer_id"].astype(str)
    known = ids.isin(then["customer_id"])
    result = MonitorResult(
        scored_as_of=scored_as_of,
        as_of=inputs.as_of,
        model_version=str(scores["model_version"].iloc[0]),
        customers=int(known.sum()),
        churn_due=scored_as_of + DAY * bundle.churn_horizon,
        value_due=scored_as_of + DAY * bundle.value_horizon,
    )
    if not known.all():
        result.notes.append(
            f"{int((~known).sum()):,} scored customer(s) have no transactions up to "
            f"{scored_as_of.date()} in this data and are left out, e.g. {ids[~known].iloc[0]!r}"
        )
    if not known.any():
        raise DataError("none of the scored customers is in these transactions")
    scores = scores[known.to_numpy()].reset_index(drop=True)
    then = (
        then.set_index("customer_id").loc[scores["customer_id"].astype(str).to_numpy()]
    ).reset_index()
    result.metrics["customers"] = float(len(scores))
    if inputs.as_of >= result.churn_due:
        _realised_churn(result, then, scores, inputs.transactions, bundle)
    else:
        result.notes.append(f"churn labels are complete on {result.churn_due.date()}")
    if inputs.as_of >= result.value_due:
        _realised_value(result, then, scores, inputs.transactions, bundle)
    else:
        result.notes.append(f"value labels are complete on {result.value_due.date()}")
    _drift(result, inputs, bundle)
    for name, psi in (("feature", result.feature_psi), ("prediction", result.prediction_psi)):
        if psi is not None and len(psi):
            result.metrics[f"max_{name}_psi"] = float(psi.iloc[0])
    if result.prediction_psi is not None:
        for k, v in result.prediction_psi.items():
            result.metrics[f"psi_{k}"] = float(v)
    _judge(result, bundle, config)
    result.metrics["retrain_recommended"] = float(result.retrain)
    return result
