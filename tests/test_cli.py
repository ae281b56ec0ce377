"""The command line as a user meets it: real-world-shaped exports, clear errors, exit codes."""

import pandas as pd
from typer.testing import CliRunner

from clientela import app

runner = CliRunner()


def test_features_from_an_export_with_other_column_names(tmp_path):
    export = tmp_path / "export.csv"
    export.write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,6,20101201,2.55,17850.0,United Kingdom\n"
        "536366,71053,6,20101203,3.39,17850.0,United Kingdom\n"
        "536367,84406B,8,20101202,2.75,01234,France\n"
        "536368,84406B,8,20101202,2.75,,France\n"
    )
    out = tmp_path / "features.parquet"
    result = runner.invoke(
        app,
        [
            "features",
            "-t",
            str(export),
            "--out",
            str(out),
            "--as-of",
            "2010-12-03",
            "--customer-col",
            "CustomerID",
            "--time-col",
            "InvoiceDate",
            "--amount-col",
            "UnitPrice",
            "--time-format",
            "%Y%m%d",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out).set_index("customer_id")
    assert sorted(table.index) == ["01234", "17850"]
    assert table.loc["17850", "frequency"] == 1
    assert table.loc["17850", "recency_days"] == 0
    assert "null or empty id" in result.output  # the dropped row is reported


def test_mapping_file(tmp_path):
    export = tmp_path / "export.csv"
    export.write_text("who,when,paid\n1,2024-01-01,5\n")
    mapping = tmp_path / "map.json"
    mapping.write_text('{"customer_id": "who", "timestamp": "when", "amount": "paid"}')
    out = tmp_path / "f.csv"
    result = runner.invoke(
        app, ["features", "-t", str(export), "--out", str(out), "--mapping", str(mapping)]
    )
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out, dtype={"customer_id": str})["customer_id"].tolist() == ["1"]


def test_refused_file_exits_non_zero_without_traceback(tmp_path):
    export = tmp_path / "export.csv"
    export.write_text("customer_id,timestamp\n1,2024-01-01\n")
    result = runner.invoke(app, ["features", "-t", str(export), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 2
    assert "missing required column(s) 'amount'" in result.output
    assert "Traceback" not in result.output


def test_generate_writes_data_and_truth(tmp_path):
    result = runner.invoke(app, ["generate", "--customers", "300", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert len(truth) == 300 and truth["persona_id"].nunique() == 5


def test_dates_outside_pandas_range_are_counted_or_refused_never_a_traceback(tmp_path):
    export = tmp_path / "export.csv"
    rows = [f"{i},2024-01-{1 + i % 28:02d},5" for i in range(200)] + ["900,9999-12-31,5"]
    export.write_text("customer_id,timestamp,amount\n" + "\n".join(rows) + "\n")
    out = str(tmp_path / "f.parquet")
    result = runner.invoke(app, ["features", "-t", str(export), "--out", out])
    assert result.exit_code == 0, result.output
    assert "implausible date" in result.output and "'9999-12-31'" in result.output
    assert len(pd.read_parquet(out)) == 200
    for day in ("0001-01-01", "2300-01-01"):
        result = runner.invoke(app, ["features", "-t", str(export), "--out", out, "--as-of", day])
        assert result.exit_code == 2 and "not a plausible day" in result.output
        assert "Traceback" not in result.output


def test_a_full_disk_is_one_clear_line_and_exit_1(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    import os

    import pytest

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine to stand in for a full disk")
    export = tmp_path / "tx.csv"
    export.write_text("customer_id,timestamp,amount\na,2024-01-01,5\nb,2024-01-02,7\n")
    out = tmp_path / "features.parquet"
    # Files are written beside their place first, then moved into it: that write fails.
    (tmp_path / f".features.parquet.{os.getpid()}.partial").symlink_to("/dev/full")
    result = runner.invoke(app, ["features", "-t", str(export), "--out", str(out)])
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
