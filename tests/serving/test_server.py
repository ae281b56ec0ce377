"""`clientela serve` as a real BentoML server process on loopback."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import requests


def test_scores_counts_predictions_and_guards_with_token(server, served):
    cid = served["predictions"].index[0]
    assert requests.post(f"{server}/score/ids", json={"customer_ids": [cid]}).status_code == 401
    response = requests.post(
        f"{server}/score/ids",
        json={"customer_ids": [cid]},
        headers={"Authorization": "Bearer tok"},
    )
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    assert prediction["churn_probability"] == pytest.approx(
        served["predictions"].loc[cid, "churn_probability"]
    )
    metrics = requests.get(f"{server}/metrics").text
    band = prediction["risk_band"]
    assert (
        f'clientela_predictions_total{{persona="{prediction["persona_name"]}",risk_band="{band}"}}'
        in metrics
    )
    assert requests.get(f"{server}/livez").status_code == 200


def test_corrupt_bundle_stops_the_server_with_a_clear_log_line(served, tmp_path, serve_process):
    _, start, free_port = serve_process
    broken = tmp_path / "bundle"
    shutil.copytree(served["bundle_dir"], broken)
    (broken / "persona.json").write_text("{}")
    log_path = tmp_path / "serve.log"
    with open(log_path, "w+") as log:
        proc = start(broken, served["snapshot"], free_port(), log)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the server kept running with a corrupt bundle")
    assert code != 0
    assert "sha256 of persona.json does not match" in log_path.read_text()


def test_a_port_in_use_is_one_clear_line_and_exit_2(served, serve_process):
    cli, _, _ = serve_process
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*cli, "serve", "--model", str(served["bundle_dir"]), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_an_alias_is_served_as_the_version_it_points_to_now():
    from clientela import pinned
    from models.bundle import Bundle

    bundle = Bundle.__new__(Bundle)
    bundle.manifest = {"model_version": "clientela/7"}
    assert pinned("models:/clientela@champion", bundle) == "models:/clientela/7"
    assert pinned("models:/clientela/3", bundle) == "models:/clientela/3"
    assert pinned("/srv/bundle", bundle) == "/srv/bundle"


def test_a_bento_is_built_for_one_model_version():
    import yaml

    from clientela import pin_bentofile

    text = (Path(__file__).parents[2] / "bentofile.yaml").read_text()
    spec = yaml.safe_load(pin_bentofile(text, "models:/clientela/7"))
    assert spec["envs"] == [
        {"name": "OMP_NUM_THREADS", "value": "1"},  # kept: one OpenMP thread per worker
        {"name": "CLIENTELA_MODEL", "value": "models:/clientela/7"},
    ]
    assert spec["service"] == "serving.service:Clientela"  # the rest is left as it was
    assert spec["python"] == yaml.safe_load(text)["python"]


def test_a_bad_setting_is_one_clear_line_and_exit_2(served, serve_process):
    cli, _, free_port = serve_process
    done = subprocess.run(
        [*cli, "serve", "--model", str(served["bundle_dir"]), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CLIENTELA_MAX_CUSTOMERS": "lots"},
    )
    assert done.returncode == 2
    assert "CLIENTELA_MAX_CUSTOMERS must be a positive integer" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_importing_the_service_loads_no_model_library():
    """BentoML's supervisor imports the service module only for its settings: the scoring
    libraries load in the workers, not in the supervisor too (175 MB)."""
    import sys

    code = (
        "import sys, serving.service; "
        "print(sorted({'pandas', 'numpy', 'xgboost', 'sklearn', 'mlflow'} & set(sys.modules)))"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
