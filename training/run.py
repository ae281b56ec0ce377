"""A training run end to end: train, log to MLflow, register as challenger, promote if it
beats the champion and the baseline."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from features.load import Inputs
from models import registry
from models.bundle import Bundle, BundleError, joined_reasons
from training.config import TrainConfig
from training.job import (
    Progress,
    TrainResult,
    compare_with_champion,
    data_summary,
    train,
    write_plots,
)


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
    sample = result.eval_sets["churn_features"].head(3)
    sample = sample.drop(columns=[c for c in sample.columns if c.startswith("btyd_")])
    out = result.bundle.score(sample)
    return sample, joined_reasons(out)


def run_training(inputs: Inputs, config: TrainConfig, progress: Progress) -> RunOutcome:
    uri = registry.check_tracking()
    progress(f"tracking at {uri}")
    champion = current_champion(config.model_name)
    result = train(inputs, config, previous=champion, progress=progress)
    progress("comparing with the champion")
    promote, reason, champ_metrics = compare_with_champion(result, champion, config)
    with tempfile.TemporaryDirectory(prefix="clientela-run-") as tmp:
        bundle_dir = result.bundle.save(Path(tmp) / "bundle")
        plots_dir = write_plots(result, Path(tmp) / "plots")
        progress("logging to MLflow and registering the bundle")
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
            experiment=config.experiment,
            model_name=config.model_name,
            params=config.to_params(),
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
