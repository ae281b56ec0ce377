import numpy as np
import pandas as pd
import pytest

from features.schema import ColumnMapping, DataError
from features.validation import (
    DUPLICATES_KEPT,
    normalize_ids,
    validate_customers,
    validate_transactions,
)


def raw(rows, columns=("customer_id", "timestamp", "amount")):
    return pd.DataFrame(rows, columns=list(columns), dtype="str")


GOOD = [("001", "2024-01-01", "10.0")] * 0 + [
    (f"{i:03d}", f"2024-01-{1 + i % 28:02d}", "10.0") for i in range(200)
]


def test_ids_keep_leading_zeros_and_float_ids_are_fixed():
    ids = normalize_ids(pd.Series(["00042", " 17850.0 ", "", None, "A-1"]))
    assert ids.tolist()[:2] == ["00042", "17850"]
    assert ids.isna().tolist() == [False, False, True, True, False]
    assert normalize_ids(pd.Series([17850.0, 12.0, np.nan])).tolist()[:2] == ["17850", "12"]
    assert normalize_ids(pd.Series([7, 8])).tolist() == ["7", "8"]


def test_missing_column_is_named():
    with pytest.raises(DataError, match=r"missing required column\(s\) 'amount'"):
        validate_transactions(raw([("1", "2024-01-01")], ("customer_id", "timestamp")))


def test_mapping_renames_and_yyyymmdd_integers_parse():
    frame = pd.DataFrame({"Cust": [1, 2], "Day": [20240105, 20240107], "Value": [3.5, 4.0]})
    mapping = ColumnMapping.from_options(
        time_format="%Y%m%d", customer_id="Cust", timestamp="Day", amount="Value"
    )
    clean, as_of, _ = validate_transactions(frame, mapping)
    assert clean["customer_id"].tolist() == ["1", "2"]
    assert as_of == pd.Timestamp("2024-01-07", tz="UTC")
    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-05", tz="UTC")


def test_missing_mapped_column_names_the_source_name():
    mapping = ColumnMapping.from_options(customer_id="CustomerID")
    with pytest.raises(DataError, match="'CustomerID' \\(customer_id\\)"):
        validate_transactions(raw(GOOD, ("cust", "timestamp", "amount")), mapping)


def test_unknown_mapping_field_is_refused():
    with pytest.raises(DataError, match="unknown field"):
        ColumnMapping.from_options(colour="Colour")


def test_a_few_bad_rows_are_dropped_and_counted_with_an_example():
    rows = GOOD + [
        ("900", "not a date", "1"),
        ("901", "2024-01-02", "abc"),
        ("902", "2024-01-02", "inf"),
        ("", "2024-01-02", "1"),
    ]
    clean, _, report = validate_transactions(raw(rows), max_bad_fraction=0.05)
    assert len(clean) == 200
    assert report.dropped == {
        "a null or empty id in 'customer_id'": 1,
        "an unparseable date in 'timestamp'": 1,
        "a non-numeric value in 'amount'": 1,
        "a missing, NaN or infinite value in 'amount'": 1,
    }
    assert report.examples["a non-numeric value in 'amount'"] == "'abc'"
    assert report.rows_read == 204 and report.rows_kept == 200


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("1", "31/12/2024", "1")] * 5, r"column 'timestamp' has 5 of 5 rows with an unparseable"),
        ([("1", "2024-01-01", "1,5")] * 3, r"column 'amount' has 3 of 3 rows with a non-numeric"),
        ([("", "2024-01-01", "1")] * 2, r"no valid rows left"),
    ],
)
def test_many_bad_rows_refuse_the_file(rows, message):
    with pytest.raises(DataError, match=message):
        validate_transactions(raw(rows))


def test_nan_amount_in_numeric_source_is_dropped():
    frame = pd.DataFrame(
        {
            "customer_id": ["1"] * 200,
            "timestamp": pd.date_range("2024-01-01", periods=200, freq="h"),
            "amount": [np.nan] + [1.0] * 199,
        }
    )
    clean, _, report = validate_transactions(frame)
    assert len(clean) == 199
    assert report.dropped == {"a missing, NaN or infinite value in 'amount'": 1}


def test_empty_table_is_refused():
    with pytest.raises(DataError, match="no rows"):
        validate_transactions(raw([]))


def test_rows_after_as_of_are_dropped_and_counted():
    rows = [("1", "2024-01-01", "5"), ("1", "2024-01-02 23:59", "5"), ("1", "2024-01-03", "5")]
    clean, as_of, report = validate_transactions(raw(rows), as_of="2024-01-02")
    assert as_of == pd.Timestamp("2024-01-02", tz="UTC")
    assert len(clean) == 2
    assert report.dropped == {"dated after as_of 2024-01-02": 1}


def test_exact_duplicates_are_kept_and_flagged_unless_asked_to_drop():
    rows = [("1", "2024-01-01 10:00", "14.37"), ("1", "2024-01-01 10:00", "14.37")]
    rows += [("1", "2024-01-01 11:00", "5")]
    clean, _, report = validate_transactions(raw(rows))
    assert clean["amount"].sum() == pytest.approx(33.74)  # two identical purchases: 28.74 + 5
    assert report.dropped == {}
    assert report.noted[DUPLICATES_KEPT] == 1
    assert report.examples[DUPLICATES_KEPT] == (
        "customer_id=1, timestamp=2024-01-01 10:00:00+00:00, amount=14.37"
    )
    clean, _, report = validate_transactions(raw(rows), drop_duplicates=True)
    assert clean["amount"].sum() == pytest.approx(19.37)
    assert report.dropped == {"exact duplicate row (--drop-duplicates)": 1}
    assert DUPLICATES_KEPT not in report.noted


IMPLAUSIBLE = "an implausible date (before 1900 or after the as_of year + 1) in 'timestamp'"


def test_implausible_dates_are_dropped_and_counted_even_outside_pandas_range():
    rows = GOOD + [
        ("901", "0001-01-01", "5"),
        ("902", "2300-05-01", "5"),
        ("903", "9999-12-31", "5"),
    ]
    rows += [("904", "1899-12-31 23:59", "5"), ("905", "2025-06-01", "5")]
    clean, as_of, report = validate_transactions(
        raw(rows), as_of="2024-03-01", max_bad_fraction=0.05
    )
    assert report.dropped == {IMPLAUSIBLE: 4, "dated after as_of 2024-03-01": 1}
    assert report.examples[IMPLAUSIBLE] == "'0001-01-01'"
    assert len(clean) == 200 and as_of == pd.Timestamp("2024-03-01", tz="UTC")


def test_without_as_of_an_implausible_date_cannot_become_the_as_of():
    rows = GOOD + [("901", "9999-12-31", "5")]
    today = pd.Timestamp("2024-06-01", tz="UTC")
    _, as_of, report = validate_transactions(raw(rows), today=today)
    assert as_of == pd.Timestamp("2024-01-28", tz="UTC")  # the latest plausible row
    assert report.dropped == {IMPLAUSIBLE: 1}


def test_many_implausible_dates_refuse_the_file():
    rows = GOOD[:10] + [("901", "0001-01-01", "5")] * 5
    with pytest.raises(DataError, match=r"5 of 15 rows with an implausible date .*'0001-01-01'"):
        validate_transactions(raw(rows))


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "not a day"])
def test_an_implausible_as_of_is_refused(day):
    with pytest.raises(DataError, match="as_of"):
        validate_transactions(raw(GOOD), as_of=day)


def test_refunds_are_kept_and_orphan_refunds_are_noted():
    rows = [("1", "2024-01-01", "-3"), ("1", "2024-01-02", "10"), ("1", "2024-01-03", "-4")]
    clean, _, report = validate_transactions(raw(rows))
    assert clean["amount"].sum() == 3.0
    assert report.noted["refunds (negative amount, netted into spend)"] == 2
    assert report.noted["refunds with no earlier purchase (kept, netted)"] == 1


def test_mixed_aware_and_naive_timestamps_become_utc():
    rows = [("1", "2024-01-01 10:00", "1"), ("1", "2024-01-02T10:00:00+02:00", "1")]
    clean, _, report = validate_transactions(raw(rows))
    assert clean["timestamp"].tolist() == [
        pd.Timestamp("2024-01-01 10:00", tz="UTC"),
        pd.Timestamp("2024-01-02 08:00", tz="UTC"),
    ]
    assert report.noted == {"tz-aware timestamps converted to UTC (others read as UTC)": 1}


def test_customers_attributes_are_cleaned_and_counted():
    frame = pd.DataFrame(
        {
            "customer_id": ["001", "002", "002", "003"],
            "age": ["34", "-5", "40", "x"],
            "customer_type": ["b2b", "B2C", "B2C", "retail"],
            "signup_date": ["2023-01-01", "2023-02-01", "2023-02-01", "9999-01-01"],
        }
    )
    clean, report = validate_customers(frame)
    assert clean["customer_id"].tolist() == ["001", "002", "003"]
    assert clean["age"].tolist()[0] == 34 and clean["age"].isna().tolist() == [False, True, True]
    assert clean["customer_type"].tolist()[:2] == ["B2B", "B2C"]
    assert report.noted["unusable 'age' set to missing"] == 2
    assert report.noted["unusable 'customer_type' set to missing"] == 1
    assert report.noted["unusable 'signup_date' set to missing"] == 1
    assert report.dropped == {"repeated customer_id (first row kept)": 1}


def test_as_of_before_every_row_is_refused():
    with pytest.raises(DataError, match="no rows at or before as_of 2023-01-01"):
        validate_transactions(raw([("1", "2024-01-01", "5")]), as_of="2023-01-01")


def test_a_table_of_refunds_only_is_kept_and_counted():
    clean, _, report = validate_transactions(
        raw([("1", "2024-01-01", "-5"), ("2", "2024-01-02", "0")])
    )
    assert len(clean) == 2
    assert report.noted["refunds with no earlier purchase (kept, netted)"] == 1
    assert report.noted["zero-amount rows (not counted as purchases)"] == 1


def test_the_api_fast_path_gives_the_same_table_as_the_full_validation():
    """`record_columns` (the API's plain-Python path) against `validate_transactions` on
    randomized requests: ids with padding, leading zeros and a `.0`, naive and tz-aware
    datetimes and plain dates, refunds and zeros, rows after as_of. Where the fast path takes
    a request, its rows and features are identical (2,000 customers and more); where it
    declines, the full path decides."""
    import datetime as dt
    import random

    from features.customer import customer_features, transaction_features
    from features.validation import record_columns, to_day
    from serving.schemas import Transaction

    rng = random.Random(0)

    def row():
        stamp = dt.datetime(2025, 6, 1) + dt.timedelta(seconds=rng.randint(-400, 300) * 86_400)
        stamp += dt.timedelta(seconds=rng.randint(0, 86_399))
        offset = dt.timezone(dt.timedelta(minutes=rng.choice([-600, -45, 0, 330, 840])))
        stamp = rng.choice([stamp, stamp.date(), stamp.replace(tzinfo=offset)])
        cid = rng.choice(["{:04d}", " {} ", "{}.0", "c{}"]).format(rng.randint(0, 3000))
        return Transaction(
            customer_id=cid,
            timestamp=stamp,
            amount=rng.choice([0.0, -3.5, 12.25, 1e6, 5.0, 0.01]),
            order_id=rng.choice([None, "o1", " 2.0 "]),
            quantity=rng.choice([None, 1.0, 2.5]),
            channel=rng.choice([None, "web", "store"]),
            category=rng.choice([None, "x", ""]),
        )

    day = to_day("2025-12-31")
    taken = customers = 0
    for _ in range(150):
        rows = [row() for _ in range(rng.randint(1, 50))]
        fast = record_columns(rows, day)
        try:
            table = pd.DataFrame([r.model_dump() for r in rows])
            slow_tx, slow_day, _ = validate_transactions(table, as_of=day)
        except DataError:
            assert fast is None
            continue
        if fast is None:
            continue
        assert slow_day == day
        assert fast["customer_id"] == slow_tx["customer_id"].tolist()
        assert fast["timestamp"] == slow_tx["timestamp"].astype("int64").tolist()  # micros
        assert fast["amount"] == slow_tx["amount"].tolist()
        for col in ("order_id", "channel", "category"):
            assert fast[col] == slow_tx[col].to_numpy(object, na_value=None).tolist()
        np.testing.assert_array_equal(fast["quantity"], slow_tx["quantity"])
        pd.testing.assert_frame_equal(
            pd.DataFrame(transaction_features(fast, day)), customer_features(slow_tx, day)
        )
        taken += 1
        customers += slow_tx["customer_id"].nunique()
    assert taken >= 120 and customers >= 2000
    # A blank id or an implausible date needs judgement: the fast path declines.
    assert record_columns([row().model_copy(update={"customer_id": "  "})], day) is None
    later = row().model_copy(update={"timestamp": dt.date(9999, 1, 1)})
    assert record_columns([later], day) is None


def _export(n: int, seed: int, dirty: bool, aware: bool) -> pd.DataFrame:
    """A text export as `read_table` gives it for a CSV: every column strings."""
    rng = np.random.default_rng(seed)
    ids = rng.choice([f"{i:05d}" for i in range(n // 8)] + [" 17850.0 ", "17850"], n)
    base = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700 * 86400, n), "s")
    stamps = base.strftime("%Y-%m-%d %H:%M:%S").to_numpy(object)
    if aware:
        stamps = np.array([s + "+02:00" for s in stamps], dtype=object)
    amounts = np.round(rng.lognormal(3, 1, n) * np.where(rng.random(n) < 0.1, -1, 1), 2)
    frame = pd.DataFrame({"customer_id": ids, "timestamp": stamps, "amount": amounts.astype(str)})
    frame = pd.concat([frame, frame.sample(n // 20, random_state=seed)], ignore_index=True)
    if dirty:
        k = len(frame)
        for col, junk in {
            "customer_id": ["", "  ", None],
            "timestamp": ["31/12/2024", "0001-01-01", "9999-12-31", None, "2024-05-01Z"],
            "amount": ["abc", "nan", "inf", None, " 5 "],
        }.items():
            where = rng.choice(k, 15, replace=False)
            frame.loc[where, col] = rng.choice(np.array(junk, dtype=object), 15)
    return frame


@pytest.mark.parametrize(
    ("dirty", "aware", "drop"),
    [(False, False, False), (False, True, True), (True, False, False), (True, True, True)],
)
def test_the_arrow_fast_path_equals_the_row_by_row_path(dirty, aware, drop):
    """CSV text goes through Arrow's parsers; the same values as Python objects go through
    pandas row by row. Tables and reports (counts and examples) must be identical."""
    export = _export(4000, seed=int(dirty) * 2 + int(aware), dirty=dirty, aware=aware)
    text = export.astype("str").where(export.notna(), None).astype("str")
    assert isinstance(text["timestamp"].array, pd.arrays.ArrowStringArray)
    as_objects = export.astype(object)
    kwargs = {"max_bad_fraction": 1.0, "drop_duplicates": drop, "today": pd.Timestamp("2026-01-01")}
    fast, fast_day, fast_report = validate_transactions(text, **kwargs)
    slow, slow_day, slow_report = validate_transactions(as_objects, **kwargs)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast_day == slow_day
    assert fast_report.to_dict() == slow_report.to_dict()
    assert slow_report.noted  # duplicates and orphan refunds were planted


@pytest.mark.parametrize("offsets", ["none", "all", "some"])
def test_text_converted_in_slices_equals_the_row_by_row_path(monkeypatch, offsets):
    """A big text column's dates and amounts are converted a slice of rows at a time, and a
    slice with a value Arrow does not read goes down pandas' row-by-row path on its own:
    tables and reports (counts and examples) must be those of that path for every row."""
    import features.validation as fv

    export = _export(4000, seed=11, dirty=True, aware=offsets == "all")
    if offsets == "some":  # offsets on the first rows: slices of each kind, and one of both
        first = export.index < 1500
        with_offset = export.loc[first, "timestamp"].map(lambda t: t + "+02:00", na_action="ignore")
        export.loc[first, "timestamp"] = with_offset
    text = export.astype("str").where(export.notna(), None).astype("str")
    kwargs = {"max_bad_fraction": 1.0, "today": pd.Timestamp("2026-01-01")}
    slow, slow_day, slow_report = validate_transactions(export.astype(object), **kwargs)
    monkeypatch.setattr(fv, "PARALLEL_ROWS", 0)
    monkeypatch.setattr(fv, "_SLICE_ROWS", 512)
    fast, fast_day, fast_report = validate_transactions(text, **kwargs)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast_day == slow_day
    assert fast_report.to_dict() == slow_report.to_dict()
    assert len(slow_report.dropped) >= 4  # bad ids, dates and amounts were planted


@pytest.mark.parametrize("ranges", [1, 2, 3, 9])
def test_duplicates_found_in_hash_ranges_are_pandas_own(monkeypatch, ranges):
    """Big tables hash their rows a slice at a time and look for repeated hashes in one range
    of hashes per core; the rows marked must be exactly `DataFrame.duplicated()`'s, whatever
    the number of slices and ranges."""
    import features.validation as fv

    export = _export(6000, seed=7, dirty=False, aware=False)
    export["category"] = np.random.default_rng(7).choice(["a", "b", None], len(export))
    clean, _, _ = validate_transactions(export, max_bad_fraction=1.0)
    monkeypatch.setattr(fv, "PARALLEL_ROWS", 0)
    monkeypatch.setattr(fv, "cores", lambda: ranges)
    monkeypatch.setattr(fv, "_SLICE_ROWS", 1000)
    found = fv._duplicated(clean, clean["customer_id"].cat.codes.to_numpy())
    expected = clean.duplicated(keep="first").to_numpy()
    assert expected.sum() > 100
    np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("slices", [1, 2, 3, 9])
def test_ids_hashed_in_slices_are_the_same_categorical(monkeypatch, slices):
    """Big text columns are hashed one slice of rows per core; an id in several slices, or in
    two spellings (`17850.0`, `17850`), is still one level, and blank or null ids are -1."""
    import features.validation as fv

    export = _export(6000, seed=3, dirty=True, aware=False)
    text = export["customer_id"].astype("str").where(export["customer_id"].notna(), None)
    text = text.astype("str")
    expected = fv.interned_ids(export["customer_id"].astype(object))
    monkeypatch.setattr(fv, "PARALLEL_ROWS", 0)
    monkeypatch.setattr(fv, "cores", lambda: slices)
    found = fv.interned_ids(text)
    pd.testing.assert_series_equal(found, expected)
    assert found.isna().sum() >= 1 and "17850" in found.cat.categories
    assert (found == "17850").sum() == (normalize_ids(export["customer_id"]) == "17850").sum()


@pytest.mark.parametrize(
    ("spellings", "numbered"),
    [
        ([f"{i:06d}" for i in range(0, 3000, 3)], True),  # zero-padded: one spelling each
        ([str(i) for i in range(1, 900)] + ["0"], True),  # no leading zeros
        ([str(i) for i in range(5, 700)] + [None], True),  # missing ids stay missing
        ([str(i) for i in range(5, 700)] + ["", "  "], True),  # blank ids are missing ones
        (["042", "42", "7", "1000"], False),  # 042 and 42 would be one number
        (["-3", "4", "5"], False),
        (["0x10", "0x11", "1234"], False),  # hex to Arrow's cast; text to us
        (["-0", "1", "2"], False),
        (["3", str(2**40)], False),  # too sparse for a table of every value
        (["17850.0", "17850", "9"], False),
        ([" 5", "6"], False),
    ],
)
def test_ids_numbered_by_value_are_the_same_categorical(monkeypatch, spellings, numbered):
    """Plain-number ids of a big table are numbered through their value, not their text; the
    categorical (levels, codes, missing ids) must be the one hashing the text gives, and ids
    that are not plain numbers in a dense range must be left to the hashing."""
    import features.validation as fv

    rng = np.random.default_rng(len(spellings))
    ids = pd.Series(rng.choice(np.array(spellings, dtype=object), 5000), dtype="str")
    expected = fv.interned_ids(ids.astype(object))
    assert (fv._numbered(fv._arrow_text(ids)) is not None) == numbered
    monkeypatch.setattr(fv, "PARALLEL_ROWS", 0)
    pd.testing.assert_series_equal(fv.interned_ids(ids), expected)


@pytest.mark.parametrize(
    "spellings",
    [
        [str(i) for i in range(1, 900)],  # numbered by value, in text order
        [f"{i:05d}" for i in range(300)],
        ["b", "a", "17850.0", "17850", " 5", "A"],  # hashed, and left as written
        [str(i) for i in range(1, 900)] + ["", " "],  # blanks are ids here, as in pandas
    ],
)
def test_sorted_codes_are_pandas_factorize(monkeypatch, spellings):
    """The text ids of a big table that is validated already are numbered on every core,
    exactly as `pd.factorize(sort=True)` numbers them, with no cleaning."""
    import features.validation as fv

    rng = np.random.default_rng(len(spellings))
    ids = pd.Series(rng.choice(np.array(spellings, dtype=object), 5000), dtype="str")
    assert fv.sorted_codes(ids) is None  # a small table: pandas does it
    monkeypatch.setattr(fv, "PARALLEL_ROWS", 0)
    monkeypatch.setattr(fv, "cores", lambda: 3)
    codes, levels = fv.sorted_codes(ids)
    expected_codes, expected_levels = pd.factorize(ids, sort=True)
    np.testing.assert_array_equal(codes, expected_codes)
    assert list(levels) == list(expected_levels)
