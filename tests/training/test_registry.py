"""Training through the command line against real MLflow stores: the embedded SQLite default
and an `mlflow server` backed by PostgreSQL; registration, aliases, promotion, rollback."""

import os
import socket
import subprocess
import sys
import time

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
    # No raw personal data in params or tags.
    logged = " ".join(map(str, [*run.data.params.values(), *run.data.tags.values()]))
    assert "0000001" not in logged

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
    assert champion in {"1", "2"}
    if champion == "1":
        assert "left as challenger" in second.output

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


@pytest.fixture
def postgres_mlflow_server(pg_url, tmp_path):
    import sqlalchemy

    db = "clientela_mlflow_test"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    admin.dispose()
    backend = pg_url.rsplit("/", 1)[0] + f"/{db}"
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


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
