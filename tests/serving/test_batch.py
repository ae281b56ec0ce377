"""`clientela score`: files, PostgreSQL tables, and the snapshot the API reads."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from clientela import app
from features.schema import DataError
from models.bundle import Bundle
from serving.snapshot import Snapshot

runner = CliRunner()


def score_served(served, *options):
    """`clientela score` on the served fixture's transactions and customers with its bundle."""
    root = served["root"]
    return runner.invoke(
        app,
        [
            "score",
            "-t", str(root / "transactions.parquet"),
            "-c", str(root / "customers.parquet"),
            "--model", str(served["bundle_dir"]),
            *options,
        ],
    )  # fmt: skip


def test_score_to_csv_writes_predictions_and_snapshot(served, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = score_served(served, "--out", "scores.csv")
    assert result.exit_code == 0, result.output
    scores = pd.read_csv("scores.csv", dtype={"customer_id": str})
    assert len(scores) == len(served["predictions"])
    assert set(scores["as_of"]) == {"2025-12-31"}
    first = scores.iloc[0]
    expected = served["predictions"].loc[first["customer_id"]]
    assert first["churn_probability"] == pytest.approx(expected["churn_probability"])
    assert first["reasons"] == ";".join(expected["reasons"])
    assert (tmp_path / "clientela_snapshot.parquet").exists()  # the API's default snapshot

    again = runner.invoke(
        app,
        [
            "score",
            "--features",
            "clientela_snapshot.parquet",
            "--model",
            str(served["bundle_dir"]),
            "--out",
            "again.parquet",
        ],
    )
    assert again.exit_code == 0, again.output
    from_snapshot = pd.read_parquet("again.parquet").set_index("customer_id")
    assert from_snapshot["churn_probability"].to_dict() == pytest.approx(
        served["predictions"]["churn_probability"].to_dict()
    )


def test_score_into_postgresql_and_look_up_ids_there(served, pg_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = score_served(
        served,
        "--out", f"{pg_url}#clientela_test_scores",
        "--snapshot", f"{pg_url}#clientela_test_snapshot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = pd.read_sql_table("clientela_test_scores", pg_url)
    assert len(stored) == len(served["predictions"])
    bundle = Bundle.load(served["bundle_dir"])
    snapshot = Snapshot(f"{pg_url}#clientela_test_snapshot", bundle.prepare)
    ids = list(served["predictions"].index[:3])
    rows, unknown = snapshot.lookup([ids[2], "nobody", ids[0]])
    assert list(rows.customer_id) == [ids[2], ids[0]] and unknown == ["nobody"]
    assert snapshot.as_of == "2025-12-31"


def test_score_needs_exactly_one_input(served):
    result = runner.invoke(app, ["score", "--model", str(served["bundle_dir"]), "--out", "x.csv"])
    assert result.exit_code == 2 and "either --transactions or --features" in result.output


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "no registered model" in result.output or "no version with alias" in result.output


def test_snapshot_table_must_be_a_plain_table_name():
    from features.schema import DataError

    with pytest.raises(DataError, match="needs a table name"):
        Snapshot("postgresql://127.0.0.1/test#t; DROP TABLE x", prepare=None)


def test_file_snapshot_lookup_keeps_request_order_and_matches_batch_scores(served):
    bundle = Bundle.load(served["bundle_dir"])
    snapshot = Snapshot(served["snapshot"], bundle.prepare)
    ids = list(served["predictions"].index[:3])
    prepared, unknown = snapshot.lookup([ids[2], "nobody", ids[0]])
    assert list(prepared.customer_id) == [ids[2], ids[0]] and unknown == ["nobody"]
    churn = bundle.predict(prepared)["churn_probability"]
    expected = served["predictions"].loc[[ids[2], ids[0]], "churn_probability"]
    assert churn.tolist() == pytest.approx(expected.tolist())


def test_snapshot_without_feature_columns_is_a_clear_error(served, tmp_path):
    pd.DataFrame({"customer_id": ["a"], "as_of": ["2025-12-31"]}).to_parquet(tmp_path / "x.parquet")
    bundle = Bundle.load(served["bundle_dir"])
    with pytest.raises(DataError, match="x.parquet has no column"):
        Snapshot(str(tmp_path / "x.parquet"), bundle.prepare)
