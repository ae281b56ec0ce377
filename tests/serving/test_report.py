"""`clientela report`: value at risk by persona and lifecycle stage, exact on a small table."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from clientela import app
from features.schema import DataError
from serving.report import check_scores, value_at_risk

SCORES = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "persona_id": [0, 0, 1, 0],
        "persona_name": ["regulars", "regulars", "wholesalers", "regulars"],
        "lifecycle_stage": ["regular", "regular", "existing", "lapsed"],
        "churn_probability": [0.1, 0.5, 0.2, 0.9],
        "predicted_value": [100.0, 50.0, 2000.0, 10.0],
        "model_version": "clientela/3",
        "as_of": "2025-12-31",
    }
)


def test_value_at_risk_by_persona_and_stage_with_a_total():
    table = value_at_risk(SCORES)
    assert table["persona_name"].tolist() == ["wholesalers", "regulars", "regulars", "all"]
    assert table["lifecycle_stage"].tolist() == ["existing", "regular", "lapsed", "all"]
    assert table["customers"].tolist() == [1, 2, 1, 4]
    assert table["expected_churners"].tolist() == pytest.approx([0.2, 0.6, 0.9, 1.7])
    assert table["predicted_value"].tolist() == pytest.approx([2000, 150, 10, 2160])
    # 0.2 x 2000; 0.1 x 100 + 0.5 x 50; 0.9 x 10
    assert table["value_at_risk"].tolist() == pytest.approx([400, 35, 9, 444])
    assert table["share_of_value_at_risk"].iloc[-1] == pytest.approx(1.0)


def test_a_table_that_is_not_scores_is_refused_by_name():
    with pytest.raises(DataError, match="lacks column.*churn_probability"):
        check_scores(SCORES.drop(columns="churn_probability"), "x.csv")
    with pytest.raises(DataError, match="outside \\[0, 1\\] in 1 row"):
        check_scores(SCORES.assign(churn_probability=[0.1, 1.5, 0.2, 0.3]), "x.csv")
    with pytest.raises(DataError, match="predicted_value holds 1 non-number"):
        check_scores(SCORES.assign(predicted_value=["1", "x", "2", "3"]), "x.csv")


def test_report_through_the_cli_writes_the_table_and_logs_aggregates_only(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    SCORES.to_csv("scores.csv", index=False)
    result = CliRunner().invoke(app, ["report", "-s", "scores.csv", "--out", "var.csv"])
    assert result.exit_code == 0, result.output
    assert "444" in result.output and "400" in result.output  # total, wholesalers
    written = pd.read_csv("var.csv")
    assert written["value_at_risk"].iloc[-1] == pytest.approx(444)
    client = MlflowClient()
    [run] = client.search_runs(
        [client.get_experiment_by_name("clientela").experiment_id], "tags.kind = 'report'"
    )
    assert (
        run.data.tags["model_version"] == "clientela/3" and run.data.tags["as_of"] == "2025-12-31"
    )
    assert run.data.metrics["value_at_risk"] == pytest.approx(444)
    logged = (tmp_path / "mlruns").rglob("value_at_risk.json")
    assert all('"a"' not in path.read_text() for path in logged)  # no customer ids
    bad = CliRunner().invoke(app, ["report", "-s", "var.csv", "--no-mlflow"])
    assert bad.exit_code == 2 and "not the output of" in bad.output
