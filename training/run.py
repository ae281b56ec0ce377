"""A training run end to end: plan the cutoffs, fit and evaluate out of time against the BTYD
baseline, fit personas and the final models, assemble the bundle; then log it to MLflow,
register it as challenger and promote it if it earns it."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.customer import customer_features
from features.load import Inputs
from models import drift, registry
from models.bundle import Bundle, BundleError, BundleSchemaError, joined_reasons
from training.config import TrainConfig
from training.examples import FeatureCache
from training.fit import Evaluation, evaluate, fit_models
from training.personas import fit_personas, persona_catalog
from training.promotion import compare_with_champion
from training.sample import Sample, restricted, stratified_sample
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
    sample: Sample | None = None  # when the models were fitted on a sample of the customers


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
    everyone, sample = None, None
    if inputs.transactions["customer_id"].nunique() > config.max_customers:
        everyone = customer_features(inputs.transactions, plan.as_of, inputs.customers)
        ids = stratified_sample(everyone, config.max_customers, config.random_state)
        sample = Sample(len(ids), len(everyone))
        inputs = restricted(inputs, ids)
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
    if everyone is not None:  # the shop is described by every customer, not by the sample
        final_features = final_btyd.add_to(everyone, plan.churn.horizon, plan.value.horizon)
        assigned = persona.predict(final_features)
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
    for row in catalog.to_dict(orient="records"):  # the value model's bias, persona by persona
        if row["value_bias"] is not None:
            metrics[f"value_aggregate_bias_persona_{row['persona_id']}"] = row["value_bias"]
    bundle.manifest = {
        "as_of": str(plan.as_of.date()),
        "churn_horizon_days": plan.churn.horizon,
        "value_horizon_days": plan.value.horizon,
        "plan": {**plan.to_params(), "notes": list(plan.notes)},
        "training_config": config.to_params(),
        "training_sample": sample.to_params() if sample else None,
        "metrics": metrics,
        "value_quantiles": np.quantile(predicted_value, np.linspace(0, 1, 101)).tolist(),
        "persona_catalog": catalog.to_dict(orient="records"),
        "baseline": final_btyd.to_dict(),
        # What the inputs and predictions looked like, for `clientela monitor`'s drift (PSI).
        "drift_reference": drift.reference(
            final_features.reindex(columns=model_inputs(bundle)).assign(
                persona_id=assigned.astype(str),
                churn_probability=churn_probability,
                predicted_value=predicted_value,
            )
        ),
    }
    stages.stop()
    return TrainResult(bundle, metrics, plan, evaluation, config, stages.timings, sample)


def model_inputs(bundle: Bundle) -> list[str]:
    """Every feature the models read, the baseline's outputs included; never the customer id."""
    columns = [*bundle.feature_columns, *bundle.encoder.numeric_]
    return [c for c in dict.fromkeys(columns) if c != "customer_id"]


@dataclass
class RunOutcome:
    result: TrainResult
    record: registry.RunRecord
    promoted: bool
    reason: str
    champion_metrics: dict[str, float]
    tracking_uri: str


def current_champion(name: str) -> tuple[Bundle | None, str | None]:
    """(The champion bundle, None), or (None, why) when there is none or it was written by a
    clientela whose bundle format this one does not read. Any other failure to read it stops
    the run: promoting over a champion nobody could read would restart persona ids."""
    if registry.alias_version(name, registry.CHAMPION) is None:
        return None, None
    uri = f"models:/{name}@{registry.CHAMPION}"
    try:
        return registry.load_bundle(uri), None
    except BundleSchemaError as exc:
        return None, f"the champion is from another clientela ({exc}); persona ids restart"
    except (BundleError, registry.RegistryError) as exc:
        raise registry.RegistryError(
            f"the champion {uri} cannot be read: {exc}. Training stops rather than replace it; "
            "repair the store, or point the alias at a readable version with "
            "`clientela rollback` or `clientela promote`"
        ) from None


def _signature_example(bundle: Bundle) -> tuple:
    """Input and output of made-up customers for the pyfunc model's input example and
    signature: no customer's rows go to the artifact store."""
    example = bundle.example_input()
    return example, joined_reasons(bundle.score(example))


def datasets(inputs: Inputs) -> dict[str, tuple[pd.DataFrame, str]]:
    """The validated input tables and where they came from, for MLflow's dataset tracking."""
    tables = {"transactions": inputs.transactions}
    if inputs.customers is not None:
        tables["customers"] = inputs.customers
    sources = [report.source for report in inputs.reports]
    return {
        name: (table, sources[i] if i < len(sources) else name)
        for i, (name, table) in enumerate(tables.items())
    }


def quality_counts(inputs: Inputs) -> list[dict]:
    """What validation did to each source, as counts only: the examples in the report are
    customer rows and stay out of MLflow."""
    return [
        {k: v for k, v in report.to_dict().items() if k != "examples"} for report in inputs.reports
    ]


def run_training(inputs: Inputs, config: TrainConfig, progress: Progress) -> RunOutcome:
    from training.plots import write_plots

    with registry.quiet():
        uri = registry.check_tracking()
        champion, unreadable = current_champion(config.model_name)
        result = train(inputs, config, previous=champion, progress=progress)
        promote, reason, champ_metrics = compare_with_champion(result, champion, config)
        if unreadable:
            reason = f"{reason} ({unreadable})"
        progress("logging to MLflow and registering")
        with tempfile.TemporaryDirectory(prefix="clientela-run-") as tmp:
            bundle_dir = result.bundle.save(Path(tmp) / "bundle")
            plots_dir = write_plots(result, Path(tmp) / "plots")
            tags = {
                "run_name": f"train as_of {result.bundle.manifest['as_of']}",
                "as_of": result.bundle.manifest["as_of"],
                "promotion": "champion" if promote else "challenger",
                "promotion_reason": reason,
                "plan_notes": " | ".join(result.plan.notes) or "full plan",
            }
            timing_metrics = {
                "time_" + re.sub(r"\W+", "_", k).strip("_") + "_s": v
                for k, v in result.timings.items()
            }
            record = registry.log_training_run(
                experiment=result.config.experiment,
                model_name=result.config.model_name,
                params={
                    **result.config.to_params(),
                    **result.plan.to_params(),
                    **(result.sample.to_params() if result.sample else {}),
                },
                metrics={
                    **result.metrics,
                    **result.bundle.btyd.to_params(),
                    **champ_metrics,
                    **timing_metrics,
                },
                tags=tags,
                plots_dir=plots_dir,
                bundle_dir=bundle_dir,
                datasets=datasets(inputs),
                quality=quality_counts(inputs),
                example=_signature_example(result.bundle),
            )
        if promote:
            registry.set_champion(config.model_name, record.version)
    return RunOutcome(result, record, promote, reason, champ_metrics, uri)
