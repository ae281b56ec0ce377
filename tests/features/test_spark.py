"""The Spark path gives exactly the one-machine results: the same feature table and quality
report from a dirty CSV export, the same refusal, and the same scores (Spark in local mode)."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.customer import customer_features
from features.load import load_inputs
from features.schema import DataError
from features.synthetic import generate
from features.validation import TZ_CONVERTED, validate_transactions


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A generated shop written as a user's CSV export, with bad rows and duplicates planted."""
    root = tmp_path_factory.mktemp("spark")
    customers, tx, _ = generate(1500, seed=3)
    text = tx.astype({"timestamp": "str", "amount": "str"})
    rng = np.random.default_rng(0)
    bad = rng.choice(len(text), 12, replace=False)
    text.loc[bad[:4], "timestamp"] = "not a date"
    text.loc[bad[4:8], "amount"] = "n/a"
    text.loc[bad[8:], "customer_id"] = " "
    text = pd.concat([text, text.sample(40, random_state=1)], ignore_index=True)
    text.to_csv(root / "transactions.csv", index=False)
    customers.to_parquet(root / "customers.parquet")
    return root


def test_features_and_report_on_spark_equal_one_machine(spark, export):
    from features.spark import spark_features, to_pandas

    tx, cust = str(export / "transactions.csv"), str(export / "customers.parquet")
    frame, as_of, reports = spark_features(spark, tx, cust, partitions=3)
    local = load_inputs(tx, cust)
    assert as_of == local.as_of
    expected = customer_features(local.transactions, local.as_of, local.customers)
    pd.testing.assert_frame_equal(to_pandas(frame)[expected.columns], expected, check_dtype=False)
    for got, want in zip(reports, local.reports, strict=True):
        assert (got.rows_read, got.rows_kept) == (want.rows_read, want.rows_kept)
        assert got.dropped == want.dropped and got.noted == want.noted
    assert reports[0].dropped and reports[0].noted  # the planted problems were seen


@pytest.mark.parametrize("bad_date", [True, False])
def test_partition_reports_merge_into_the_one_machine_report(bad_date):
    """Parts of a source validated one by one, as Spark's partitions are, and merged give the
    one-machine report: the note on tz-aware dates depends on the whole source (here, one bad
    date in the first part only, or none), not on each part."""
    from features.spark import _merge

    stamps = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC").astype("str")
    raw = pd.DataFrame(
        {"customer_id": [str(i % 20) for i in range(200)], "timestamp": stamps, "amount": "5"}
    )
    if bad_date:
        raw.loc[7, "timestamp"] = "not a date"
    _, _, whole = validate_transactions(raw, max_bad_fraction=1.0)
    parts = [
        validate_transactions(raw.iloc[rows], max_bad_fraction=1.0, part=True)[2].to_dict()
        for rows in (slice(0, 100), slice(100, 200))
    ]
    merged = _merge(parts, whole.source, max_bad_fraction=1.0)
    assert (merged.dropped, merged.noted) == (whole.dropped, whole.noted)
    assert (TZ_CONVERTED in whole.noted) == bad_date


def test_spark_refuses_what_one_machine_refuses(spark, tmp_path):
    from features.spark import spark_features

    rows = pd.DataFrame(
        {"customer_id": [str(i) for i in range(100)], "timestamp": "2025-01-01", "amount": "5"}
    )
    rows.loc[:4, "timestamp"] = "31/12/2024"  # 5% unparseable: a wrong format, not dirty rows
    rows.to_csv(tmp_path / "tx.csv", index=False)
    with pytest.raises(DataError, match=r"column 'timestamp' has 5 of 100 rows with an unparse"):
        load_inputs(str(tmp_path / "tx.csv"))
    with pytest.raises(DataError, match=r"column 'timestamp' has 5 of 100 rows with an unparse"):
        spark_features(spark, str(tmp_path / "tx.csv"))


def test_scoring_on_spark_equals_batch_scoring(spark, export, tmp_path):
    from features.spark import spark_features
    from serving.batch import score_inputs
    from serving.spark import spark_score
    from training.config import TrainConfig
    from training.run import train

    local = load_inputs(str(export / "transactions.csv"), str(export / "customers.parquet"))
    config = TrainConfig(n_personas=3, stability_resamples=1, min_customers=100)
    bundle = train(local, config).bundle
    expected, _ = score_inputs(local, bundle)
    frame, as_of, _ = spark_features(
        spark, str(export / "transactions.csv"), str(export / "customers.parquet")
    )
    got = spark_score(spark, frame, bundle, str(as_of.date()), tmp_path).toPandas()
    got = got.sort_values("customer_id", ignore_index=True)
    expected = expected.sort_values("customer_id", ignore_index=True)
    for col in ("churn_probability", "predicted_value", "expected_purchases"):
        np.testing.assert_allclose(got[col], expected[col], rtol=0, atol=1e-12)
    for col in ("customer_id", "persona_id", "persona_name", "risk_band", "value_percentile"):
        assert got[col].astype(str).tolist() == expected[col].astype(str).tolist()
    assert [list(r) for r in got["reasons"]] == [list(r) for r in expected["reasons"]]


def test_spark_takes_files_and_tables_not_database_urls():
    from clientela import app

    args = ["features", "-t", "postgresql://127.0.0.1/test#tx", "--out", "x", "--spark", "local"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "with --spark, sources are Parquet/CSV paths or spark:db.table" in said
