"""Training through the command line against real MLflow stores: the embedded SQLite default
and an `mlflow server` backed by PostgreSQL; registration, aliases, promotion, rollback."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from clientela import app
from features.synthetic import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    customers, tx, _ = generate(5000, seed=5)
    tx.to_parquet(out / "transactions.parquet")
    customers.to_parquet(out / "customers.parquet")
    # A second snapshot: the same business one month earlier (a retrain on older data).
    tx[tx["timestamp"] < "2025-12-01"].to_parquet(out / "transactions_nov.parquet")
    return out


def train_cli(data_dir, *extra):
    return runner.invoke(
        app,
        [
            "train",
            "-t",
            str(data_dir / "transactions.parquet"),
            "-c",
            str(data_dir / "customers.parquet"),
            "--personas",
            "5",
            *extra,
        ],
    )


def test_train_registers_promotes_and_rolls_back_on_sqlite(data_dir, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    first = train_cli(data_dir)
    assert first.exit_code == 0, first.output
    assert "promoted to champion" in first.output and "mlflow ui" in first.output
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("clientela", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("clientela", "challenger").version) == "1"

    run = client.get_run(client.get_model_version("clientela", "1").run_id)
    assert run.info.status == "FINISHED"
    assert float(run.data.metrics["churn_auc"]) > float(run.data.metrics["baseline_churn_auc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/churn_roc_calibration.png" in artifacts
    assert run.data.params["value_horizon"] == "365" and run.data.params["churn_cutoffs"] == "4"
    assert run.data.metrics["btyd_bgnbd_converged"] == 1.0
    # The data as MLflow datasets: digest, schema and row count, never the rows.
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"transactions", "customers"}
    assert len(inputs["transactions"].digest) == 32
    assert '"num_rows"' in inputs["transactions"].profile
    assert "customer_id" in inputs["transactions"].schema
    # No raw personal data in params, tags, datasets or the model's input example.
    logged = " ".join(
        map(str, [*run.data.params.values(), *run.data.tags.values(), *inputs.values()])
    )
    assert "0000001" not in logged and "0000042" not in logged
    model_dir = mlflow.artifacts.download_artifacts("models:/clientela/1", dst_path=str(tmp_path))
    example = (Path(model_dir) / "input_example.json").read_text()
    assert "example-regular" in example and "0000001" not in example
    requirements = (Path(model_dir) / "requirements.txt").read_text()
    assert "xgboost==" in requirements and "scikit-learn==" in requirements
    for unneeded in ("bentoml", "typer", "matplotlib", "rich"):
        assert unneeded not in requirements

    second = runner.invoke(
        app,
        [
            "train",
            "-t",
            str(data_dir / "transactions_nov.parquet"),
            "-c",
            str(data_dir / "customers.parquet"),
            "--personas",
            "5",
        ],
    )
    assert second.exit_code == 0, second.output
    assert str(client.get_model_version_by_alias("clientela", "challenger").version) == "2"
    champion = str(client.get_model_version_by_alias("clientela", "champion").version)
    # Either outcome of the gate is legitimate here; the output must say which one happened.
    expected = {"1": "left as challenger", "2": "promoted to champion"}
    assert champion in expected and expected[champion] in second.output

    promoted = runner.invoke(app, ["promote", "--version", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert str(client.get_model_version_by_alias("clientela", "champion").version) == "2"
    back = runner.invoke(app, ["rollback"])
    assert back.exit_code == 0, back.output
    assert str(client.get_model_version_by_alias("clientela", "champion").version) == "1"
    missing = runner.invoke(app, ["promote", "--version", "42"])
    assert missing.exit_code == 2 and "no version 42" in missing.output

    # MLflow-native tools load the bundle as a pyfunc model (models-from-code, no pickle).
    from features.customer import customer_features
    from features.load import load_inputs

    inputs = load_inputs(
        str(data_dir / "transactions.parquet"), str(data_dir / "customers.parquet")
    )
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers).head(20)
    model = mlflow.pyfunc.load_model("models:/clientela@champion")
    out = model.predict(feats)
    assert list(out["customer_id"]) == list(feats["customer_id"])
    assert out["churn_probability"].between(0, 1).all()

    # An edited manifest in the store (a horizon changed) is refused, not served...
    import json

    from models.bundle import BundleError
    from models.registry import load_bundle

    stored = [
        path
        for path in (tmp_path / "mlruns").rglob("manifest.json")
        if json.loads(path.read_text()).get("as_of") == "2025-12-31"  # version 1's
    ]
    assert stored
    for path in stored:
        path.write_text(json.dumps(json.loads(path.read_text()) | {"churn_horizon_days": 30}))

    with pytest.raises(BundleError, match="does not match the digest recorded"):
        load_bundle("models:/clientela@champion")
    # ... and training stops instead of replacing a champion it cannot read.
    stopped = train_cli(data_dir)
    assert stopped.exit_code == 2 and "cannot be read" in " ".join(stopped.output.split())
    assert str(client.get_model_version_by_alias("clientela", "champion").version) == "1"


def test_unreachable_tracking_server_is_a_clear_error(data_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    result = train_cli(data_dir)
    assert result.exit_code == 2
    assert "unreachable" in result.output and "nothing was logged" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(backend: str, root: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on loopback, ready to answer."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "a"),  # noqa: SIM115
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        start_new_session=True,  # its workers in one process group, stopped together
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.5)
    _stop(proc)
    pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server and its workers (a kill -9 of them all: a crash)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


@pytest.fixture
def postgres_mlflow_server(pg_url, tmp_path):
    import sqlalchemy

    db = "clientela_mlflow_test"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    admin.dispose()
    port = _free_port()
    proc = _start_server(pg_url.rsplit("/", 1)[0] + f"/{db}", tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@pytest.mark.parametrize("server_dies", [True, False])
def test_a_run_that_fails_half_way_is_one_line_and_leaves_no_version(
    data_dir, tmp_path, monkeypatch, server_dies
):
    """Mid-run, either the tracking server is killed (a real `mlflow server`) or logging fails
    while it still answers. One clear line, exit 2; the run is marked FAILED when the server
    can still be told; no version is registered either way."""
    import mlflow
    from mlflow import MlflowClient

    backend, port = f"sqlite:///{tmp_path}/mlflow.db", _free_port()
    server = _start_server(backend, tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    log_artifacts = mlflow.log_artifacts

    def half_way(*args, **kwargs):
        if server_dies:
            _stop(server, signal.SIGKILL)
            return log_artifacts(*args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow, "log_artifacts", half_way)
    result = train_cli(data_dir)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "Traceback" not in result.output and said.count("error:") == 1
    assert "logging run" in said and f"to MLflow at {url} failed" in said
    assert "no model version was registered" in said
    if server_dies:
        assert "could not be marked FAILED and shows as RUNNING" in said
        server = _start_server(backend, tmp_path, port)  # the same store, back up
    else:
        assert "No space left on device" in said and "the run is marked FAILED" in said
    try:
        client = MlflowClient(url)
        [run] = client.search_runs([client.get_experiment_by_name("clientela").experiment_id])
        assert run.info.status == ("RUNNING" if server_dies else "FAILED")
        assert client.search_model_versions("name = 'clientela'") == []
    finally:
        _stop(server)


def test_train_against_an_mlflow_server_on_postgresql(
    data_dir, postgres_mlflow_server, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_mlflow_server)
    result = train_cli(data_dir, "--experiment", "pg-test")
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    version = client.get_model_version_by_alias("clientela", "champion")
    assert str(version.version) == "1"
    assert client.get_run(version.run_id).info.status == "FINISHED"
    assert not (tmp_path / "mlflow.db").exists()  # nothing fell back to the embedded store


def test_short_history_trains_through_the_cli_with_a_config_file(tmp_path, monkeypatch):
    """Nine months of invoices: horizons chosen with a notice, one cutoff, said and logged."""
    from dataclasses import replace

    from mlflow import MlflowClient

    from features.shops import SHOPS, generate_shop

    shop = replace(SHOPS["gift-wholesale"], customers=2500, years=1.0)
    _, tx, _ = generate_shop(shop, seed=2)
    tx[tx["timestamp"] < "2011-09-10"].to_csv(tmp_path / "invoices.csv", index=False)
    (tmp_path / "train.toml").write_text(
        '[train]\nexperiment = "gift-shop"\npersona_k_range = [2, 5]\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = runner.invoke(
        app, ["train", "-t", "invoices.csv", "--config", "train.toml", "--value-horizon", "60"]
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "on 274 days of history: churn horizon 90 days (1 training cutoffs)" in out
    assert "value horizon 60 days (1 training cutoffs)" in out
    assert "notice: churn model: 1 training cutoff(s) 91 days apart with 94 days" in out
    assert "INFO mlflow" not in out
    assert "done models for the out-of-time evaluation" in out
    client = MlflowClient()
    run = client.get_run(client.get_model_version("clientela", "1").run_id)
    assert client.get_experiment(run.info.experiment_id).name == "gift-shop"
    assert run.data.params["churn_cutoffs"] == "1" and run.data.params["value_horizon"] == "60"
    assert run.data.params["persona_k_range"] == "(2, 5)"
    assert "1 training cutoff(s)" in run.data.tags["plan_notes"]
    bad = runner.invoke(app, ["train", "-t", "invoices.csv", "--churn-horizon", "200"])
    assert bad.exit_code == 2
    assert "the longest horizon it supports is 122 days" in " ".join(bad.output.split())
