"""A small trained bundle, its batch scores and feature snapshot, shared by the serving tests."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from features.load import Inputs
from features.synthetic import generate
from features.validation import validate_customers, validate_transactions
from serving.batch import score_inputs
from serving.snapshot import write_snapshot
from training.config import TrainConfig
from training.run import train


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    customers, tx, _ = generate(3000, seed=5)
    clean, as_of, report = validate_transactions(tx)
    cust, _ = validate_customers(customers)
    inputs = Inputs(clean, as_of, cust, [report])
    bundle = train(inputs, TrainConfig(n_personas=5)).bundle
    bundle_dir = bundle.save(root / "bundle")
    predictions, feats = score_inputs(inputs, bundle)
    # as `clientela score` writes it: features with the predictions beside them
    snapshot = write_snapshot(feats, as_of, str(root / "snapshot.parquet"), predictions, bundle)
    features = write_snapshot(feats, as_of, str(root / "features.parquet"))
    tx.to_parquet(root / "transactions.parquet")
    customers.to_parquet(root / "customers.parquet")
    return {
        "root": root,
        "bundle_dir": bundle_dir,
        "snapshot": snapshot,
        "features": features,
        "predictions": predictions.set_index("customer_id"),
        "transactions": tx,
        "customers": customers,
        "as_of": as_of,
    }


@pytest.fixture(scope="session")
def client(served):
    """One app for the session: BentoML registers its Prometheus metrics once per process."""
    from starlette.testclient import TestClient

    from serving.service import Clientela

    env = {"CLIENTELA_MODEL": str(served["bundle_dir"]), "CLIENTELA_SNAPSHOT": served["snapshot"]}
    saved = {k: os.environ.get(k) for k in [*env, "CLIENTELA_API_TOKEN"]}
    os.environ.update(env)
    os.environ.pop("CLIENTELA_API_TOKEN", None)
    try:
        with TestClient(Clientela.to_asgi()) as test_client:
            yield test_client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


CLI = [sys.executable, "-c", "from clientela import app; app()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle, snapshot, port, log, **env):
    return subprocess.Popen(
        [*CLI, "serve", "--model", str(bundle), "--port", str(port), "--snapshot", snapshot],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        cwd=Path(snapshot).parent,
    )


@pytest.fixture
def serve_process():
    """(the CLI command, a function that starts `clientela serve`, a free-port picker), for
    tests that run their own server process."""
    return CLI, start, free_port


@pytest.fixture(scope="session")
def server(served, tmp_path_factory):
    """A real `clientela serve` process on loopback, with a bearer token ('tok')."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("log") / "serve.log", "w+")  # noqa: SIM115
    proc = start(served["bundle_dir"], served["snapshot"], port, log, CLIENTELA_API_TOKEN="tok")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        log.seek(0)
        pytest.fail(f"server did not become ready:\n{log.read()[-3000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
