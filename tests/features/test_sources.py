import gzip

import pandas as pd
import pytest

from features.load import load_inputs
from features.schema import ColumnMapping, DataError
from features.sources import read_csv_typed, read_table, redact, write_table
from features.validation import validate_transactions


def test_csv_keeps_leading_zeros(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("customer_id,timestamp,amount\n00042,2024-01-01,5\n17850.0,2024-01-02,3\n")
    inputs = load_inputs(str(path))
    assert inputs.transactions["customer_id"].tolist() == ["00042", "17850"]


def test_a_compressed_csv_is_read_as_text_too(tmp_path):
    """A `.csv.gz` export: its header read through the decompression, so that its columns come
    back as text (Arrow would guess `00042` to be the number 42)."""
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("customer_id,timestamp,amount\n00042,2024-01-01,5\n00042,2024-01-03,x\n")
    assert read_table(path)["customer_id"].tolist() == ["00042", "00042"]
    inputs = load_inputs(str(path), max_bad_fraction=1.0)
    assert inputs.transactions["customer_id"].tolist() == ["00042"]
    assert list(inputs.reports[0].dropped) == ["a non-numeric value in 'amount'"]
    with pytest.raises(DataError, match="byte 0xe9 on line 3"):
        bad = tmp_path / "latin.csv.gz"
        with gzip.open(bad, "wb") as fh:
            fh.write(b"customer_id,timestamp,amount\n1,2024-01-01,5\n2,2024-01-02,caf\xe9\n")
        read_table(bad)
    rows = "customer_id,timestamp,amount\n" + "".join(f"{i},2024-01-01,5\n" for i in range(9**5))
    packed = gzip.compress(rows.encode())
    broken = {
        "plain.csv.gz": rows[:200].encode(),  # not gzip at all
        "header_cut.csv.gz": packed[:20],
        "rows_cut.csv.gz": packed[: len(packed) // 2],  # the header reads, the rows do not
    }
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name} is not a readable CSV file"):
            load_inputs(str(tmp_path / name))


def _shop_csv(path, stamps, amounts, ids=None):
    ids = ids or [f"{i % 7:03d}" for i in range(len(stamps))]
    rows = [f"{c},{t},{a}" for c, t, a in zip(ids, stamps, amounts, strict=True)]
    path.write_text("cust,ts,value\n" + "\n".join(rows) + "\n")
    return path


GOOD = [f"2024-0{1 + i % 9}-1{i % 10} 10:0{i % 10}:00" for i in range(60)]
AMOUNTS = [f"{(i % 13 - 2) * 1.25}" for i in range(60)]


@pytest.mark.parametrize(
    ("stamps", "amounts", "typed"),
    [
        (GOOD, AMOUNTS, True),  # naive times
        ([t + "+02:00" for t in GOOD], AMOUNTS, True),  # with offsets
        ([t[:10] for t in GOOD[:30]] + [t + "Z" for t in GOOD[30:]], AMOUNTS, False),  # mixed
        (GOOD[:-1] + ["31/12/2024"], AMOUNTS, False),  # unparseable
        (GOOD[:-1] + ["9999-12-31"], AMOUNTS, True),  # parses, but shown as written
        (GOOD, AMOUNTS[:-2] + ["nan", ""], True),  # parses, but shown as written
        (GOOD, AMOUNTS[:-1] + ['"1,5"'], False),
        (GOOD[:-1] + [""], [" " + a for a in AMOUNTS], True),
    ],
)
def test_a_csv_read_with_typed_columns_validates_as_its_text_does(tmp_path, stamps, amounts, typed):
    """A CSV's timestamps and amounts are parsed as it is read when they all parse; any value
    that does not, or that the report shows as written, sends it back to the text path. The
    table, as_of and report are the ones the text gives, either way."""
    path = _shop_csv(tmp_path / "shop.csv", stamps, amounts)
    mapping = ColumnMapping.from_options(customer_id="cust", timestamp="ts", amount="value")
    got = load_inputs(str(path), mapping=mapping, max_bad_fraction=1.0)
    clean, as_of, report = validate_transactions(
        read_table(path), mapping, max_bad_fraction=1.0, source=str(path)
    )
    pd.testing.assert_frame_equal(got.transactions, clean)
    assert got.as_of == as_of and got.reports[0].to_dict() == report.to_dict()
    raw = read_csv_typed(path, "utf-8", {"ts": "timestamp", "value": "number"})
    assert (raw is not None) == typed
    if raw is not None:
        assert pd.api.types.is_datetime64_any_dtype(raw["ts"]) and raw["value"].dtype == "float64"
        assert raw["cust"].tolist()[:2] == ["000", "001"]


def test_empty_and_header_only_files_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(empty)
    header = tmp_path / "header.csv"
    header.write_text("customer_id,timestamp,amount\n")
    with pytest.raises(DataError, match="no data rows"):
        read_table(header)


def test_non_utf8_byte_names_line_and_encoding_option(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(
        b"customer_id,timestamp,amount,channel\n1,2024-01-01,5,web\n2,2024-01-02,3,caf\xe9\n"
    )
    with pytest.raises(DataError, match=r"byte 0xe9 on line 3.*--encoding"):
        read_table(path)
    frame = read_table(path, encoding="latin-1")
    assert frame["channel"].tolist() == ["web", "café"]


def test_parquet_round_trip(tmp_path):
    frame = pd.DataFrame({"customer_id": ["007"], "timestamp": ["2024-01-01"], "amount": [1.5]})
    write_table(frame, tmp_path / "x.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "x.parquet"), frame)
    with pytest.raises(DataError, match="suffix"):
        write_table(frame, tmp_path / "x.xlsx")


def test_missing_file_and_bad_sql_spec():
    with pytest.raises(DataError, match="does not exist"):
        read_table("/nonexistent/t.csv")
    with pytest.raises(DataError, match="needs a table or query"):
        read_table("postgresql://u:secret@127.0.0.1/test")


def test_redact_hides_passwords():
    assert redact("postgresql://bob:hunter2@db/x#t") == "postgresql://bob:***@db/x#t"


def test_postgres_table_and_query_sources(pg_url):
    frame = pd.DataFrame(
        {
            "cust": ["00042", "00042", "00007"],
            "ts": ["20240101", "20240105", "20240103"],
            "value": [10.0, -2.5, 4.0],
        }
    )
    write_table(frame, f"{pg_url}#clientela_test_tx")
    mapping = ColumnMapping.from_options(
        time_format="%Y%m%d", customer_id="cust", timestamp="ts", amount="value"
    )
    inputs = load_inputs(f"{pg_url}#clientela_test_tx", mapping=mapping)
    tx = inputs.transactions.sort_values(["customer_id", "timestamp"])
    assert tx["customer_id"].tolist() == ["00007", "00042", "00042"]
    assert tx["amount"].sum() == pytest.approx(11.5)
    query = f"{pg_url}#SELECT * FROM clientela_test_tx WHERE value > 0"
    assert len(read_table(query)) == 2
    with pytest.raises(DataError, match="cannot read 'no_such_table'"):
        read_table(f"{pg_url}#no_such_table")


@pytest.mark.parametrize("schema", ["", "public."])
def test_a_table_is_replaced_atomically_and_a_failed_load_keeps_the_old_rows(
    pg_url, monkeypatch, schema
):
    import sqlalchemy

    import features.sources as sources

    spec = f"{pg_url}#{schema}clientela_test_atomic"
    write_table(pd.DataFrame({"customer_id": ["a", "b"], "v": [1.0, 2.0]}), spec)
    write_table(pd.DataFrame({"customer_id": ["c"], "v": [3.0]}), spec)
    assert read_table(spec)["customer_id"].tolist() == ["c"]

    def broken_copy(engine, target, frame):  # the load dies half-way
        raise RuntimeError("connection lost during COPY")

    monkeypatch.setattr(sources, "_copy_into", broken_copy)
    with pytest.raises(DataError, match="connection lost during COPY"):
        write_table(pd.DataFrame({"customer_id": ["d"], "v": [4.0]}), spec)
    assert read_table(spec)["customer_id"].tolist() == ["c"]  # the old rows, untouched
    tables = sqlalchemy.inspect(sqlalchemy.create_engine(pg_url)).get_table_names()
    assert not [t for t in tables if "staging" in t]


def test_a_keyed_table_gets_a_unique_index_each_time_it_is_replaced(pg_url):
    import sqlalchemy

    spec = f"{pg_url}#clientela_test_keyed"
    for ids in (["a", "b"], ["c", "d", "e"]):  # the second write must not trip on the first index
        write_table(pd.DataFrame({"customer_id": ids, "v": 1.0}), spec, key="customer_id")
    engine = sqlalchemy.create_engine(pg_url)
    indexes = sqlalchemy.inspect(engine).get_indexes("clientela_test_keyed")
    assert [(i["column_names"], i["unique"]) for i in indexes] == [(["customer_id"], True)]
    with pytest.raises(DataError, match="clientela_test_keyed.*(duplicate|unique)"):
        write_table(pd.DataFrame({"customer_id": ["x", "x"], "v": 1.0}), spec, key="customer_id")
    assert read_table(spec)["customer_id"].tolist() == ["c", "d", "e"]


def test_sql_sink_needs_a_plain_table_name():
    frame = pd.DataFrame({"a": [1]})
    for bad in ("t; DROP TABLE x", "SELECT 1"):
        with pytest.raises(DataError, match="needs a table name"):
            write_table(frame, f"postgresql://127.0.0.1/test#{bad}")
