"""The MLflow edge: the only module that talks to MLflow, for logging, registering, aliasing and
loading bundles. Tracking URI: MLflow's own resolution (MLFLOW_TRACKING_URI, else its embedded
SQLite default in the working directory)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from models.bundle import Bundle, sha256
from models.errors import BundleError, RegistryError

DEFAULT_NAME = "clientela"
DEFAULT_URI = f"models:/{DEFAULT_NAME}@champion"
CHAMPION, CHALLENGER = "champion", "challenger"
MANIFEST_TAG = "manifest_sha256"  # model version tag: sha256 of the bundle's manifest
HISTORY_TAG = "champion_history"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def check_tracking(timeout: float = 5.0) -> str:
    """Fail fast with a clear message when a remote tracking server does not answer."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as exc:
            raise RegistryError(
                f"MLflow tracking server {uri} is unreachable ({exc.__class__.__name__}); "
                "nothing was logged or registered"
            ) from None
    return uri


@contextmanager
def quiet():
    """Do not let MLflow's HTTP client retry for minutes against a dead server, nor log its
    routine INFO lines (store creation, registration) between clientela's own output."""
    # Fewer retries; no "View run" links printed: clientela prints where the run is itself.
    defaults = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1",
    }
    added = [key for key in defaults if key not in os.environ]
    os.environ.update({key: defaults[key] for key in added})
    import mlflow  # noqa: F401  (its import configures the logger: set the level after it)

    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        mlflow_log.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


@dataclass
class RunRecord:
    run_id: str
    experiment_id: str
    version: str
    model_uri: str


# What the pyfunc model imports (models/ and features/ as code): not the API, CLI or plots.
PYFUNC_NEEDS = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "xgboost", "mlflow")


def _requirements() -> list[str]:
    """This project's pins of the packages the pyfunc model needs."""
    reqs = importlib.metadata.requires("clientela") or []
    name = re.compile(r"^([A-Za-z0-9_.\-]+)")
    return [r for r in reqs if name.match(r)[1].lower() in PYFUNC_NEEDS and "extra ==" not in r]


def _dataset(frame, source: str, name: str):
    """An MLflow dataset of a table: its schema, row count, a digest of every row and where it
    came from (a password-free path or URL); never the rows themselves."""
    import hashlib
    from functools import cached_property

    import pandas as pd
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.types.utils import _infer_schema

    class Table(PandasDataset):
        @cached_property
        def schema(self):
            # MLflow infers it value by value (30 s for 2M rows); the columns of a validated
            # table have one type each, which the first rows show.
            return _infer_schema(self._df.head(1000))

    # Row hashes a million rows at a time: the same digest as in one go, without text
    # columns turned into Python strings all at once (+3 GB on 20M transactions).
    digest = hashlib.sha256()
    for start in range(0, len(frame), 1_000_000):
        rows = frame.iloc[start : start + 1_000_000]
        digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            origin = resolve_dataset_source(source)
    except Exception:  # a SQL source: MLflow has no resolver for it
        origin = CodeDatasetSource(tags={"source": source})
    return Table(frame, source=origin, name=name, digest=digest.hexdigest()[:32])


def log_training_run(
    *,
    experiment: str,
    model_name: str,
    params: dict,
    metrics: dict[str, float],
    tags: dict[str, str],
    plots_dir: Path,
    bundle_dir: Path,
    datasets: dict[str, tuple],
    quality: list[dict],
    example: tuple | None = None,
) -> RunRecord:
    """One MLflow run: params, metrics, tags, plots, the input datasets (`name -> (table,
    source)`, logged as MLflow datasets: digest, schema, row count, no rows), the data-quality
    counts and the bundle, registered as a new version with alias `challenger`. `example` =
    (model input, model output) of made-up customers gives the pyfunc model its input example
    and signature. A failure marks the run FAILED and leaves no registered version behind."""
    import mlflow

    import features
    import models

    with quiet():
        check_tracking()
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=tags.get("run_name"))
        try:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            for name, (frame, source) in datasets.items():
                mlflow.log_input(_dataset(frame, source, name), context="training")
            mlflow.log_dict(quality, "data_quality.json")
            mlflow.log_artifacts(str(plots_dir), "plots")
            with warnings.catch_warnings():
                # Integer feature columns: the features never have missing counts.
                warnings.filterwarnings("ignore", message=".*integer column")
                signature = mlflow.models.infer_signature(*example) if example else None
            info = mlflow.pyfunc.log_model(
                name="bundle",
                python_model=str(PYFUNC_FILE),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(Path(features.__file__).parent), str(Path(models.__file__).parent)],
                pip_requirements=_requirements(),
                signature=signature,
                input_example=example[0] if example else None,
            )
            manifest_digest = sha256(Path(bundle_dir) / "manifest.json")
            mlflow.set_tag("manifest_sha256", manifest_digest)
            version = _register(info.model_uri, model_name, run.info.run_id, manifest_digest)
        except Exception as exc:
            raise _abandoned(run.info.run_id, exc) from None
        mlflow.end_run()
        return RunRecord(run.info.run_id, run.info.experiment_id, version, info.model_uri)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:300]}" if text else exc.__class__.__name__


def _abandoned(run_id: str, exc: Exception) -> RegistryError:
    """A run that failed half-way (often: the tracking server went away). Mark it FAILED if
    the server still answers, and say plainly what is left either way."""
    import mlflow
    from mlflow.tracking import fluent

    try:
        mlflow.end_run("FAILED")
        state = "the run is marked FAILED"
    except Exception:
        fluent._active_run_stack.get().clear()  # this process is done with the run either way
        state = "the run could not be marked FAILED and shows as RUNNING (the server is gone)"
    if isinstance(exc, _LeftBehind):
        left = (
            f"version {exc.version} of {exc.name!r} was registered without an alias and could "
            "not be removed: delete it in the MLflow UI"
        )
        cause = str(exc)
    else:
        left, cause = "no model version was registered", _one_line(exc)
    return RegistryError(
        f"logging run {run_id} to MLflow at {tracking_uri()} failed ({cause}): {state}; {left}"
    )


def log_report(experiment: str, table, tags: dict[str, str], metrics: dict[str, float]) -> str:
    """A value-at-risk report as its own MLflow run (kind `report`), tagged with the model
    version and as_of it summarises: aggregate figures only, no customer rows. Returns the
    run id."""
    import mlflow

    with quiet():
        check_tracking()
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"report as_of {tags.get('as_of', '?')}") as run:
            mlflow.set_tags({"kind": "report", **tags})
            mlflow.log_metrics(metrics)
            mlflow.log_table(table, "value_at_risk.json")
        return run.info.run_id


def log_monitoring(
    experiment: str,
    model_version: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    tables: dict[str, object],
    params: dict[str, str],
    alarms: list[str],
) -> str:
    """A monitoring run (kind `monitor`), linked both ways to the model version it checked: the
    run is tagged with it, and the version gets the run's id and verdict as tags. Aggregates
    only: no customer rows. Returns the run id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, _, version = model_version.partition("/")
    with quiet():
        check_tracking()
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"monitor {model_version} as_of {tags['as_of']}") as run:
            mlflow.set_tags({"kind": "monitor", "model_version": model_version, **tags})
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            for artifact, table in tables.items():
                mlflow.log_table(table, artifact)
            mlflow.log_dict({"alarms": alarms}, "alarms.json")
        if version.isdigit():
            try:
                client = _client()
                client.set_model_version_tag(name, version, "monitor_run_id", run.info.run_id)
                verdict = "retrain" if metrics.get("retrain_recommended") else "ok"
                client.set_model_version_tag(name, version, "monitor_verdict", verdict)
            except MlflowException:  # scores of a model this store does not hold
                pass
        return run.info.run_id


def latest_monitoring(experiment: str, model_version: str) -> dict | None:
    """The latest monitoring run of a model version: metrics, tags, alarms and the PSI of every
    column (largest first); None when there is none."""
    import mlflow
    import pandas as pd

    if not re.fullmatch(r"[\w.-]+/\d+", model_version):  # it goes into a filter string
        return None
    with quiet():
        check_tracking()
        found = mlflow.search_runs(
            experiment_names=[experiment],
            filter_string=f"tags.kind = 'monitor' and tags.model_version = '{model_version}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if not found:
            return None
        run = found[0]
        run_id = run.info.run_id
        psi = []
        for name in ("prediction_psi.json", "feature_psi.json"):
            try:
                psi.append(mlflow.load_table(name, run_ids=[run_id]))
            except Exception:  # a run without that table (drift had no reference)
                continue
        alarms = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/alarms.json")["alarms"]
    table = pd.concat(psi) if psi else pd.DataFrame(columns=["column", "psi"])
    return {
        "run_id": run_id,
        "metrics": run.data.metrics,
        "tags": run.data.tags,
        "alarms": alarms,
        "psi": table.set_index("column")["psi"].sort_values(ascending=False),
    }


def _register(model_uri: str, name: str, run_id: str, manifest_digest: str) -> str:
    import mlflow

    client = _client()
    tags = {"run_id": run_id, MANIFEST_TAG: manifest_digest}
    mv = mlflow.register_model(model_uri, name, tags=tags)
    try:
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    except Exception as exc:
        try:
            client.delete_model_version(name, mv.version)
        except Exception:
            raise _LeftBehind(name, str(mv.version), exc) from None
        raise
    return str(mv.version)


class _LeftBehind(RuntimeError):
    """A version was registered but neither aliased nor removed (the server went away)."""

    def __init__(self, name: str, version: str, cause: Exception):
        super().__init__(_one_line(cause))
        self.name, self.version = name, version


def alias_version(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_champion(name: str, version: str) -> None:
    """Move the champion alias and remember the order, so rollback can move it back."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version}") from None
    history = _history(name)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*history, str(version)]))


def rollback(name: str) -> tuple[str, str]:
    """Move champion back to the version that held it before. Returns (from, to)."""
    history = _history(name)
    current = alias_version(name, CHAMPION)
    if current is None:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise RegistryError(f"model {name!r}: no earlier champion than version {current}")
    client = _client()
    client.set_registered_model_alias(name, CHAMPION, history[-1])
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return current, history[-1]


def _history(name: str) -> list[str]:
    from mlflow.exceptions import MlflowException

    try:
        tags = _client().get_registered_model(name).tags
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]


_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def load_bundle(uri: str = DEFAULT_URI) -> Bundle:
    """A bundle from a local directory or the registry (`models:/name@alias`,
    `models:/name/version`). The registry version is recorded as the bundle's model_version."""
    if Path(uri).exists():
        return Bundle.load(uri)
    match = _MODEL_URI.match(uri)
    if not match:
        raise RegistryError(
            f"{uri!r} is neither a bundle directory nor a models:/NAME@ALIAS or "
            "models:/NAME/VERSION URI"
        )
    name, version = match["name"], match["version"]
    with quiet():
        check_tracking()
        if match["alias"]:
            version = alias_version(name, match["alias"])
            if version is None:
                raise RegistryError(
                    f"model {name!r} has no version with alias {match['alias']!r} at "
                    f"{tracking_uri()}; train one with `clientela train`"
                )
        import mlflow
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="clientela-bundle-") as target:
            try:
                recorded = _client().get_model_version(name, version).tags.get(MANIFEST_TAG)
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}", dst_path=target
                )
            except MlflowException as exc:
                raise RegistryError(
                    f"cannot load models:/{name}/{version}: {exc.message}"
                ) from None
            bundle_dir = Path(local) / "artifacts" / "bundle"
            if not bundle_dir.is_dir():
                raise BundleError(f"models:/{name}/{version} holds no clientela bundle")
            # The manifest lists every file's sha256; its own digest was recorded at
            # registration, so an edited manifest (horizons, quantiles) is refused too.
            if recorded is None or sha256(bundle_dir / "manifest.json") != recorded:
                raise BundleError(
                    f"models:/{name}/{version}: manifest.json does not match the digest "
                    "recorded at registration (edited or replaced): refused"
                )
            bundle = Bundle.load(bundle_dir)  # reads every file into memory
    bundle.manifest["model_version"] = f"{name}/{version}"
    return bundle
