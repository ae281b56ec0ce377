"""A training run end to end: plan the cutoffs, fit and evaluate out of time against the BTYD
baseline, fit personas and the final models, assemble the bundle; then log it to MLflow,
register it as challenger and promote it if it earns it."""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.load import Inputs
from models import registry
from models.bundle import Bundle, BundleError, joined_reasons
from training.config import TrainConfig
from training.examples import FeatureCache
from training.fit import Evaluation, evaluate, fit_models
from training.personas import fit_personas, persona_catalog
from training.promotion import compare_with_champion
from training.windows import Plan, plan_windows

STAGES = (
    "features at the cutoffs",
    "models for the out-of-time evaluation",
    "evaluation against the BTYD baseline",
    "personas",
    "final models on the latest windows",
    "bundle",
)
Progress = Callable[[str], None]


class _Stages:
    """Reports each stage as it starts and times it."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self.stop()
        self._current = (name, time.perf_counter())
        self.progress(name)

    def stop(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.timings[name] = time.perf_counter() - started
            self._current = None


@dataclass
class TrainResult:
    bundle: Bundle
    metrics: dict[str, float]
    plan: Plan
    evaluation: Evaluation
    config: TrainConfig  # with the horizons the plan chose
    timings: dict[str, float] = field(default_factory=dict)


def train(
    inputs: Inputs,
    config: TrainConfig,
    previous: Bundle | None = None,
    progress: Progress = lambda _stage: None,
) -> TrainResult:
    """Fit, evaluate and assemble a bundle. Pure of MLflow: logging happens at the edge.
    `progress` is called with each of `STAGES` as it starts."""
    plan = plan_windows(inputs.transactions, inputs.as_of, config)
    config = config.with_horizons(plan.churn.horizon, plan.value.horizon)
    stages = _Stages(progress)
    stages.start(STAGES[0])
    cache = FeatureCache(inputs, plan.churn.horizon, plan.value.horizon)
    final_features, final_btyd = cache.at(plan.as_of)
    for cutoff in {*plan.churn.eval_training, *plan.value.eval_training}:
        cache.at(cutoff)

    stages.start(STAGES[1])
    eval_models = fit_models(cache, plan.churn.eval_training, plan.value.eval_training, config)

    stages.start(STAGES[2])
    evaluation = evaluate(eval_models, cache, plan, config)
    metrics = evaluation.metrics()

    stages.start(STAGES[3])
    persona, assigned, persona_metrics = fit_personas(
        final_features, config, previous.persona if previous else None
    )
    metrics.update(persona_metrics)

    stages.start(STAGES[4])
    final = fit_models(cache, plan.churn.final_training, plan.value.final_training, config)

    stages.start(STAGES[5])
    bundle = Bundle(final.encoder, persona, final.churn, final.value, final_btyd)
    X = final.encoder.transform(final_features)
    predicted_value = final.value.predict(X)
    churn_probability = final.churn.predict_proba(X)
    catalog = persona_catalog(
        final_features,
        assigned,
        churn_probability,
        predicted_value,
        persona,
        evaluation,
        config.min_persona_size,
    )
    bundle.manifest = {
        "as_of": str(plan.as_of.date()),
        "churn_horizon_days": plan.churn.horizon,
        "value_horizon_days": plan.value.horizon,
        "plan": {**plan.to_params(), "notes": list(plan.notes)},
        "training_config": config.to_params(),
        "metrics": metrics,
        "value_quantiles": np.quantile(predicted_value, np.linspace(0, 1, 101)).tolist(),
        "persona_catalog": catalog.to_dict(orient="records"),
        "baseline": final_btyd.to_dict(),
    }
    stages.stop()
    return TrainResult(bundle, metrics, plan, evaluation, config, stages.timings)


@dataclass
class RunOutcome:
    result: TrainResult
    record: registry.RunRecord
    promoted: bool
    reason: str
    champion_metrics: dict[str, float]
    tracking_uri: str


def current_champion(name: str) -> Bundle | None:
    """The champion bundle, or None when there is none (or it can no longer be read)."""
    if registry.alias_version(name, registry.CHAMPION) is None:
        return None
    try:
        return registry.load_bundle(f"models:/{name}@{registry.CHAMPION}")
    except (BundleError, registry.RegistryError):
        return None


def _signature_example(result: TrainResult) -> tuple:
    """Input and output rows for the pyfunc signature (MLflow keeps the column names and types,
    not the values)."""
    sample = result.evaluation.churn.features.head(3)
    sample = sample.drop(columns=[c for c in sample.columns if c.startswith("btyd_")])
    out = result.bundle.score(sample)
    return sample, joined_reasons(out)


def data_summary(inputs: Inputs) -> dict:
    """Digest and shape of the training data: no ids, no attribute values."""
    tx = inputs.transactions
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(tx, index=False).to_numpy().tobytes())
    summary = {
        "transactions_sha256": digest.hexdigest(),
        "transactions_rows": len(tx),
        "customers_seen": int(tx["customer_id"].nunique()),
        "first_day": str(tx["timestamp"].min().date()),
        "last_day": str(tx["timestamp"].max().date()),
        "as_of": str(inputs.as_of.date()),
        "transaction_columns": list(tx.columns),
    }
    if inputs.customers is not None:
        summary["customer_rows"] = len(inputs.customers)
        summary["customer_columns"] = list(inputs.customers.columns)
    summary["quality"] = [
        {"source_kind": i, "rows_read": r.rows_read, "rows_kept": r.rows_kept, "dropped": r.dropped}
        for i, r in zip(("transactions", "customers"), inputs.reports, strict=False)
    ]
    return summary


def run_training(inputs: Inputs, config: TrainConfig, progress: Progress) -> RunOutcome:
    from training.plots import write_plots

    uri = registry.check_tracking()
    champion = current_champion(config.model_name)
    result = train(inputs, config, previous=champion, progress=progress)
    promote, reason, champ_metrics = compare_with_champion(result, champion, config)
    progress("logging to MLflow and registering")
    with tempfile.TemporaryDirectory(prefix="clientela-run-") as tmp:
        bundle_dir = result.bundle.save(Path(tmp) / "bundle")
        plots_dir = write_plots(result, Path(tmp) / "plots")
        tags = {
            "run_name": f"train as_of {result.bundle.manifest['as_of']}",
            "as_of": result.bundle.manifest["as_of"],
            "promotion": "champion" if promote else "challenger",
            "promotion_reason": reason,
        }
        timing_metrics = {
            "time_" + re.sub(r"\W+", "_", k).strip("_") + "_s": v for k, v in result.timings.items()
        }
        record = registry.log_training_run(
            experiment=result.config.experiment,
            model_name=result.config.model_name,
            params={**result.config.to_params(), **result.plan.to_params()},
            metrics={**result.metrics, **champ_metrics, **timing_metrics},
            tags=tags,
            plots_dir=plots_dir,
            bundle_dir=bundle_dir,
            data_summary=data_summary(inputs),
            example=_signature_example(result),
        )
    if promote:
        registry.set_champion(config.model_name, record.version)
    return RunOutcome(result, record, promote, reason, champ_metrics, uri)
