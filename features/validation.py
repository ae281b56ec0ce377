"""Raw records -> validated tables, with a data-quality report of everything dropped or noted.

Policy: a problem in a few rows drops those rows and counts them in the report; when more than
`max_bad_fraction` of the rows share a problem, the file is refused, because that is a wrong
column mapping or date format rather than dirty rows.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import (
    ATTRIBUTE_BOUNDS,
    CUSTOMER_OPTIONAL,
    CUSTOMER_REQUIRED,
    CUSTOMER_TYPES,
    TRANSACTION_OPTIONAL,
    TRANSACTION_REQUIRED,
    TZ_SUFFIX,
    ColumnMapping,
    DataError,
    has_utc_offset,
)

DAY = pd.Timedelta(days=1)
_ID_FLOAT = re.compile(r"^(\d+)\.0+$")  # an id exported as a float: 17850.0 -> 17850
EARLIEST_PLAUSIBLE = pd.Timestamp("1900-01-01", tz="UTC")


PARALLEL_ROWS = 1_000_000  # below this, starting threads costs more than they save


def cores() -> int:
    """The cores this process may run on: how many threads the work on big tables is cut for."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plausible_until(as_of: pd.Timestamp | None, today: pd.Timestamp | None = None) -> pd.Timestamp:
    """The first implausible instant: dates after the as_of year + 1 (a typo such as 2300 or a
    placeholder such as 9999). Without an as_of, the current year stands in for it."""
    year = (as_of if as_of is not None else (today or pd.Timestamp.now(tz="UTC"))).year
    return pd.Timestamp(f"{year + 2}-01-01", tz="UTC")


@dataclass
class QualityReport:
    """What happened to the rows of one source: kept, dropped (by reason), noted (kept)."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    noted: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def drop(self, reason: str, count: int, example: str | None = None) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)
            if example is not None:
                self.examples.setdefault(reason, example)

    def note(self, reason: str, count: int, example: str | None = None) -> None:
        if count:
            self.noted[reason] = self.noted.get(reason, 0) + int(count)
            if example is not None:
                self.examples.setdefault(reason, example)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
            "noted": dict(self.noted),
            "examples": dict(self.examples),
        }


def normalize_ids(values: pd.Series) -> pd.Series:
    """Ids as strings: leading zeros kept, `17850.0` -> `17850`, blanks -> missing."""
    if pd.api.types.is_float_dtype(values):
        whole = values.notna() & np.isfinite(values) & (values == np.round(values))
        out = values.astype("string")
        out[whole] = values[whole].astype("int64").astype("string")
        return out.astype("str")
    if pd.api.types.is_integer_dtype(values):
        return values.astype("str")
    if (text := _arrow_text(values)) is not None:  # text read from CSV: vectorised in Arrow
        text = pc.utf8_trim_whitespace(text)
        if pc.any(pc.match_substring(text, ".")).as_py():  # the regex costs 1 s on 10M ids
            text = pc.replace_substring_regex(text, _ID_FLOAT.pattern, r"\1")
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
        return pd.Series(text, index=values.index, dtype="str")
    out = values.astype("str").str.strip()
    out = out.str.replace(_ID_FLOAT.pattern, r"\1", regex=True)
    return out.where(out.notna() & (out != ""), None)


def interned_ids(values: pd.Series) -> pd.Series:
    """`normalize_ids` as a categorical whose levels are the cleaned ids, sorted. Each distinct
    raw id is cleaned once, and the codes are what duplicates, refunds and features group by:
    on a big table, ids that are plain numbers are numbered by value (`_numbered`), others
    hashed once, on every core (`_encoded`)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        raw_codes, raw_levels = values.cat.codes.to_numpy(), values.cat.categories
    elif (text := _arrow_text(values)) is not None and len(text) >= PARALLEL_ROWS:
        if (numbered := _numbered(text)) is not None:  # clean, distinct and sorted already
            return _categorical(*numbered, values.index)
        raw_codes, raw_levels = _encoded(text)
    else:
        raw_codes, raw_levels = pd.factorize(values)  # -1 where missing
    # Raw ids that clean to the same id (`17850.0` and `17850`) meet here; blank ones -> -1.
    codes, levels = _merged_levels(raw_codes, normalize_ids(pd.Series(raw_levels)))
    return _categorical(codes, levels, values.index)


def sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """`pd.factorize(values, sort=True)` of a big column of Arrow text, exactly (no cleaning:
    for tables that are validated already), the way `interned_ids` does it: 10M ids several
    times as fast. None for any other column."""
    text = _arrow_text(values)
    if text is None or len(text) < PARALLEL_ROWS:
        return None
    if (numbered := _numbered(text, blank_is_missing=False)) is not None:
        codes, levels = numbered
        return codes, levels.to_numpy()
    codes, levels = _merged_levels(*_encoded(text))  # an id seen in two slices -> one
    return codes, np.asarray(levels)


def _merged_levels(raw_codes: np.ndarray, raw_levels: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes into raw levels (-1: missing) made codes into their distinct values, sorted: raw
    levels that are equal (or missing) become one."""
    codes, levels = pd.factorize(raw_levels, sort=True)
    return np.append(codes, -1).astype(np.int32)[raw_codes], levels  # a raw -1 takes -1


def _categorical(codes: np.ndarray, levels, index: pd.Index) -> pd.Series:
    """Ids as a categorical of codes into sorted levels (-1: missing), both built here, so
    pandas need not check the codes again (40 ms on 10M rows)."""
    levels = pd.Index(levels, dtype="str")
    return pd.Series(pd.Categorical.from_codes(codes, levels, validate=False), index=index)


_POWERS_OF_TEN = 10 ** np.arange(1, 19)


def _numbered(
    text: pa.ChunkedArray, blank_is_missing: bool = True
) -> tuple[np.ndarray, pd.Series] | None:
    """`interned_ids` of ids that are plain numbers in a dense range (a database's keys, often),
    through their value instead of hashing their text: 10M ids in 0.2 s. Blank ids are missing
    ones, unless not `blank_is_missing`. None when an id is something else (`0x1f`, `-0`),
    when leading zeros could spell one number two ways (`042`, `42`), or when the range is too
    sparse for a table of every value in it."""
    digits_only = pc.ascii_is_decimal(text)
    if not pc.all(digits_only).as_py():  # Arrow's cast would also read `0x1f` and `-0`
        # Blank ids (guest checkouts, common in real exports) do not stop the numbering.
        others = pc.filter(text, pc.invert(digits_only))
        if (
            not blank_is_missing
            or not pc.all(pc.equal(pc.utf8_trim_whitespace(others), "")).as_py()
        ):
            return None
        text = pc.if_else(digits_only, text, pa.scalar(None, text.type))
    try:
        values = pc.cast(text, pa.int64())
    except pa.ArrowInvalid:  # more digits than 64 bits hold
        return None
    high = pc.max(values).as_py()
    if high is None or high >= max(1 << 24, 2 * len(text)):
        return None
    lengths = pc.binary_length(text)
    width = pc.min_max(lengths)
    padded = width["min"] == width["max"]  # 00042, 00043, ...: each number has one spelling
    if not padded and pc.any(pc.and_(pc.starts_with(text, "0"), pc.greater(lengths, 1))).as_py():
        return None
    # A missing id takes the slot past the largest, whose code is -1 (as in pd.factorize).
    if values.null_count:
        values = pc.fill_null(values, high + 1)
    number = values.to_numpy(zero_copy_only=False)
    seen = np.zeros(high + 2, dtype=bool)
    seen[number] = True
    seen[-1] = False
    present = np.flatnonzero(seen)
    if not padded:  # in text order, as the levels are sorted: `10` before `9`, `1` before `10`
        digits = np.searchsorted(_POWERS_OF_TEN, present, side="right") + 1
        as_text = present * 10 ** (int(digits.max()) - digits) * 32 + digits
        present = present[np.argsort(as_text)]
    code = np.full(high + 2, -1, dtype=np.int32)
    code[present] = np.arange(len(present), dtype=np.int32)
    levels = pa.array(present).cast(pa.string())
    if padded:
        levels = pc.utf8_lpad(levels, width["max"].as_py(), "0")
    return code[number], pd.Series(levels, dtype="str")


def _encoded(text: pa.ChunkedArray) -> tuple[np.ndarray, pd.Series]:
    """`pd.factorize` of many strings, one slice of rows per core (Arrow's hashing lets go of
    the GIL): 10M ids in 0.55 s instead of 1.7. The slices' dictionaries are joined, so an id
    seen in two slices is two raw levels, which `interned_ids` then makes one."""
    n, parts = len(text), cores()
    cuts = [n * k // parts for k in range(parts + 1)]

    def encode(k: int) -> tuple[np.ndarray, pa.Array]:
        # One memo table for all the slice's chunks: every chunk has the final dictionary.
        chunks = pc.dictionary_encode(text.slice(cuts[k], cuts[k + 1] - cuts[k])).chunks
        indices = [pc.fill_null(c.indices, -1).to_numpy() for c in chunks]
        return np.concatenate(indices), chunks[-1].dictionary

    with ThreadPoolExecutor(parts) as pool:
        encoded = list(pool.map(encode, range(parts)))
    offset = 0
    for indices, dictionary in encoded:
        np.add(indices, offset, out=indices, where=indices >= 0)
        offset += len(dictionary)
    levels = pa.chunked_array([d for _, d in encoded])
    return np.concatenate([i for i, _ in encoded]), pd.Series(levels, dtype="str")


# Rows worked on at a time by `_each_slice`: the temporaries of a slice stay in a core's
# cache, and a bad value sends only its slice down pandas' row-by-row path.
_SLICE_ROWS = 1 << 16


def _each_slice(work, n: int) -> list:
    """`work(rows)` for each slice of `_SLICE_ROWS` of n rows, results in order; on a big
    table shared out over the cores (numpy's loops and Arrow's casts let go of the GIL)."""
    slices = [slice(start, start + _SLICE_ROWS) for start in range(0, n, _SLICE_ROWS)]
    if n < PARALLEL_ROWS:
        return [work(rows) for rows in slices]
    with ThreadPoolExecutor(cores()) as pool:
        return list(pool.map(work, slices))


def _in_slices(convert, values: pd.Series, *args) -> tuple:
    """`convert` (`parse_timestamps` or `_amounts`: each row's result depends on that row
    alone) of a big text column, a slice at a time (`_each_slice`). A slice with a value Arrow
    does not read goes down pandas' row-by-row path on its own, so a few bad dates in 10M rows
    cost a few slices, not the whole column (8.8 s -> 1 s). Series are joined in order, counts
    summed."""
    if len(values) < PARALLEL_ROWS or _arrow_text(values) is None:
        return convert(values, *args)

    def part(rows: slice) -> tuple:
        done = convert(values.iloc[rows], *args)
        # One resolution in every slice (pandas' path may give nanoseconds), so that joining
        # them never casts a date that microseconds hold to nanoseconds, which do not.
        return tuple(_micros(r) if isinstance(r, pd.Series) else r for r in done)

    parts = _each_slice(part, len(values))
    return tuple(
        pd.concat(column) if isinstance(column[0], pd.Series) else sum(column)
        for column in zip(*parts, strict=True)
    )


def _micros(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.astype("datetime64[us, UTC]")
    return values


def _arrow_text(values: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow strings behind a text column (as CSV sources are read), else None."""
    if isinstance(values.array, pd.arrays.ArrowStringArray):
        found = pa.array(values.array)
        return found if isinstance(found, pa.ChunkedArray) else pa.chunked_array([found])
    return None


def _iso_in_arrow(text: pa.ChunkedArray) -> tuple[pd.Series, int] | None:
    """ISO 8601 text parsed by Arrow's own parser: all naive (read as UTC) or all with an
    offset. None when any value needs more judgement (mixed forms, other layouts, values Arrow
    does not read): the pandas path then parses and reports row by row."""
    given = pc.drop_null(text.slice(0, 1000))
    # Tried in the order the first value suggests: a failed cast of 10M values costs 0.5 s.
    aware_first = len(given) > 0 and has_utc_offset(given[0].as_py())
    for aware in (aware_first, not aware_first):
        try:
            if aware:  # Arrow reads these only when every value has an offset
                parsed = _cast_trimmed(text, pa.timestamp("us", tz="UTC"))
                return _utc(parsed), len(text) - text.null_count
            return _utc(pc.assume_timezone(_cast_trimmed(text, pa.timestamp("us")), "UTC")), 0
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _cast_trimmed(text: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    """Arrow's cast of text, which refuses blanks around a value: trimmed only when it must be
    (a trimmed copy of 10M values costs 0.25 s)."""
    try:
        return pc.cast(text, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pc.cast(pc.utf8_trim_whitespace(text), to)


def _utc(parsed: pa.ChunkedArray) -> pd.Series:
    return pd.Series(parsed.to_pandas(), dtype="datetime64[us, UTC]")


def _amounts(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(amounts as float64, which values are not numbers at all). Text is cast by Arrow when
    every value is a finite number or missing; anything else goes through pandas, which tells
    a non-number from NaN or infinity row by row."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64"), pd.Series(False, index=values.index)
    if (text := _arrow_text(values)) is not None:
        try:
            cast = _cast_trimmed(text, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cast = None
        if cast is not None and pc.all(pc.is_finite(cast)).as_py() is not False:
            amount = pd.Series(cast.to_numpy(), index=values.index, dtype="float64")
            return amount, pd.Series(False, index=values.index)
    text = values.astype("str").str.strip()
    amount = pd.to_numeric(text, errors="coerce").astype("float64")
    lowered = text.str.lower()
    return amount, amount.isna() & text.notna() & ~lowered.isin(["nan", "inf", "-inf"])


def parse_timestamps(values: pd.Series, time_format: str | None) -> tuple[pd.Series, int]:
    """Timestamps in UTC: naive means UTC, tz-aware is converted. Returns (parsed, n tz-aware)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC"), int(values.notna().sum())
    if pd.api.types.is_datetime64_dtype(values):
        return values.dt.tz_localize("UTC"), 0
    if pd.api.types.is_numeric_dtype(values):
        if not time_format:
            raise DataError(
                "column 'timestamp' holds numbers; pass --time-format (e.g. %Y%m%d) to read them"
            )
        values = values.astype("Int64").astype("str")
    arrow = None if time_format else _arrow_text(values)
    if arrow is not None and (fast := _iso_in_arrow(arrow)) is not None:
        parsed, n_aware = fast
        return parsed.set_axis(values.index), n_aware
    text = values.astype("str").str.strip()
    n_aware = int(text.str.contains(TZ_SUFFIX, regex=True, na=False).sum())
    # Without a format only ISO 8601 is read: guessing day/month order silently swaps dates.
    parsed = pd.to_datetime(text, format=time_format or "ISO8601", utc=True, errors="coerce")
    return parsed, n_aware


def _refuse_or_drop(
    bad: np.ndarray,
    frame: pd.DataFrame,
    column: str,
    problem: str,
    raw: pd.Series,
    report: QualityReport,
    max_bad_fraction: float,
) -> None:
    n_bad = int(bad.sum())
    if not n_bad:
        return
    first = raw[bad].iloc[0]
    example = repr(first if isinstance(first, str) else str(first))
    if n_bad > max_bad_fraction * len(frame):
        raise refusal(report.source, column, n_bad, len(frame), problem, example)
    report.drop(f"{problem} in '{column}'", n_bad, example)


def refusal(source: str, column: str, n_bad: int, rows: int, problem: str, example) -> DataError:
    """Too many rows share a problem: a wrong column mapping or date format, not dirty rows."""
    return DataError(
        f"{source}: column '{column}' has {n_bad:,} of {rows:,} rows with {problem} "
        f"(e.g. {example}); check the column mapping / --time-format"
    )


def _check_columns(frame: pd.DataFrame, required: tuple[str, ...], mapping: ColumnMapping, what):
    missing = [c for c in required if c not in frame.columns]
    if missing:
        wanted = ", ".join(f"'{mapping.source_name(c)}' ({c})" for c in missing)
        raise DataError(
            f"{what}: missing required column(s) {wanted}; columns present: "
            f"{list(frame.columns)}. Map yours with --customer-col/--time-col/--amount-col "
            "or --mapping FILE."
        )


def shown_as_written(
    raw: pd.DataFrame,
    mapping: ColumnMapping | None = None,
    as_of: pd.Timestamp | str | None = None,
    today: pd.Timestamp | None = None,
) -> bool:
    """Whether a table whose timestamps and amounts were parsed as it was read
    (`features.sources.read_csv_typed`) has a value that `validate_transactions` would drop or
    refuse: a missing or implausible date, a missing or non-finite amount. Its report shows
    such a value as the file has it, so the caller reads the text instead."""
    mapping = mapping or ColumnMapping()
    stamps = raw.get(mapping.source_name("timestamp"))
    amounts = raw.get(mapping.source_name("amount"))
    if stamps is not None and pd.api.types.is_datetime64_any_dtype(stamps):
        stamps, _ = parse_timestamps(stamps, None)
        until = plausible_until(None if as_of is None else to_day(as_of), today)
        if stamps.isna().any() or (stamps < EARLIEST_PLAUSIBLE).any() or (stamps >= until).any():
            return True
    if amounts is not None and pd.api.types.is_float_dtype(amounts):
        return not np.isfinite(amounts.to_numpy()).all()
    return False


def validate_transactions(
    raw: pd.DataFrame,
    mapping: ColumnMapping | None = None,
    as_of: pd.Timestamp | str | None = None,
    source: str = "transactions",
    max_bad_fraction: float = 0.01,
    drop_duplicates: bool = False,
    today: pd.Timestamp | None = None,
    part: bool = False,
) -> tuple[pd.DataFrame, pd.Timestamp, QualityReport]:
    """Clean a raw transaction table. Returns (table, as_of, report).

    `part`: the table is one part of a source split by customer (a Spark partition): a part
    left with no rows is no error (the whole source may still have some), its as_of is None.

    `as_of` is a UTC day; rows later than that day are dropped and counted. It defaults to the
    day of the latest transaction. Exact duplicate rows are kept and counted (in real exports
    they are usually the same item bought twice) unless `drop_duplicates`, for sources known to
    export rows twice. `today` only matters without `as_of` (see `plausible_until`). The
    table's `customer_id` is a categorical with sorted levels (`interned_ids`).
    """
    mapping = mapping or ColumnMapping()
    as_of = None if as_of is None else to_day(as_of)
    report = QualityReport(source=source, rows_read=len(raw))
    if raw.empty:
        raise DataError(f"{source}: no rows")
    frame = raw.rename(columns=mapping.source_to_canonical(list(raw.columns)))
    _check_columns(frame, TRANSACTION_REQUIRED, mapping, source)
    keep = [c for c in TRANSACTION_REQUIRED + TRANSACTION_OPTIONAL if c in frame.columns]
    frame = frame[keep]

    raw_amount = frame["amount"]
    conversions = (
        (interned_ids, frame["customer_id"]),
        (_in_slices, parse_timestamps, frame["timestamp"], mapping.time_format),
        (_in_slices, _amounts, raw_amount),
    )
    if len(frame) >= 100_000:  # Arrow's kernels release the GIL: one column per core
        with ThreadPoolExecutor() as pool:
            running = [pool.submit(*job) for job in conversions]
            ids, (stamps, n_aware), (amount, not_numeric) = (f.result() for f in running)
    else:
        ids, (stamps, n_aware), (amount, not_numeric) = (f(*a) for f, *a in conversions)
    not_finite = ~np.isfinite(amount.to_numpy()) & ~not_numeric.to_numpy()
    implausible = (stamps < EARLIEST_PLAUSIBLE) | (stamps >= plausible_until(as_of, today))

    checks = [
        (ids.isna(), "customer_id", "a null or empty id", frame["customer_id"]),
        (stamps.isna(), "timestamp", "an unparseable date", frame["timestamp"]),
        (implausible, "timestamp", _IMPLAUSIBLE, frame["timestamp"]),
        (not_numeric, "amount", "a non-numeric value", raw_amount),
        (not_finite, "amount", "a missing, NaN or infinite value", raw_amount),
    ]
    bad_any = np.zeros(len(frame), dtype=bool)
    for bad, column, problem, shown in checks:
        bad = np.asarray(bad, dtype=bool)
        if not bad.any():  # the usual case: no pass over every row for nothing
            continue
        bad = bad & ~bad_any  # count each row once, under its first problem
        # Rows without a customer (guest checkouts) are common in real exports: always dropped.
        limit = 1.0 if column == "customer_id" else max_bad_fraction
        _refuse_or_drop(bad, frame, column, problem, shown, report, limit)
        bad_any |= bad

    clean = pd.DataFrame(
        {"customer_id": ids, "timestamp": stamps.astype("datetime64[us, UTC]"), "amount": amount},
        copy=False,
    )
    for col in TRANSACTION_OPTIONAL:
        if col in frame.columns:
            if col == "quantity":
                clean[col] = pd.to_numeric(frame[col], errors="coerce")
            else:
                clean[col] = normalize_ids(frame[col])
    if bad_any.any():  # a copy of every row: only when some row goes
        clean = clean[~bad_any]
    del raw, frame, raw_amount  # the text, often the largest thing held: free it when it can go
    report.note(TZ_CONVERTED, n_aware)
    if not part:  # a part cannot tell: its whole source's report is settled when merged
        settle_notes(report)

    if clean.empty and not part:
        raise DataError(f"{source}: no valid rows left after dropping {report.dropped}")
    if as_of is None:
        if clean.empty:  # a part with no valid row: nothing to date, nothing kept
            report.rows_kept = 0
            return clean.reset_index(drop=True), None, report
        as_of = clean["timestamp"].max().floor("D")
    late = clean["timestamp"] >= as_of + DAY
    report.drop(
        f"dated after as_of {as_of.date()}",
        int(late.sum()),
        str(clean.loc[late, "timestamp"].iloc[0]) if late.any() else None,
    )
    if late.any():
        clean = clean[~late]
    if clean.empty and not part:
        raise DataError(f"{source}: no rows at or before as_of {as_of.date()}")

    codes = clean["customer_id"].array.codes  # not `.cat.codes`, a copy of every row
    dup = _duplicated(clean, codes)
    example = _row_example(clean[dup]) if dup.any() else None
    if drop_duplicates:
        report.drop("exact duplicate row (--drop-duplicates)", int(dup.sum()), example)
        clean, codes = clean[~dup], codes[~dup]
    else:
        report.note(DUPLICATES_KEPT, int(dup.sum()), example)

    refunds = clean["amount"] < 0
    report.note("refunds (negative amount, netted into spend)", int(refunds.sum()))
    report.note("zero-amount rows (not counted as purchases)", int((clean["amount"] == 0).sum()))
    orphan = _refunds_before_first_purchase(clean, codes)
    report.note(
        "refunds with no earlier purchase (kept, netted)",
        int(orphan.sum()),
        _row_example(clean[orphan]) if orphan.any() else None,
    )
    clean = clean.reset_index(drop=True)
    report.rows_kept = len(clean)
    return clean, as_of, report


def _duplicated(clean: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
    """`clean.duplicated(keep="first")`, without hashing the text columns again: rows are
    hashed from the id codes and the other columns' values, and only rows whose hash repeats
    are compared in full (so a hash collision never marks a duplicate)."""
    hashes = _row_hashes(codes, [_hash_bits(clean[c]) for c in clean.columns.drop("customer_id")])
    repeated = _repeats(hashes)
    out = np.zeros(len(clean), dtype=bool)
    if len(repeated):
        maybe = _members(hashes, repeated)
        out[maybe] = clean[maybe].duplicated(keep="first").to_numpy()
    return out


def _members(hashes: np.ndarray, repeated: np.ndarray) -> np.ndarray:
    """`pd.Series(hashes).isin(repeated)`, three times as fast on a big table with few repeated
    values: a table of 2^20 flags (a core's cache holds it), looked up by each hash's top 20
    bits, rules out most rows; only the rest are looked up in full."""
    if len(hashes) < PARALLEL_ROWS or len(repeated) > 1 << 16:
        return pd.Series(hashes).isin(repeated).to_numpy()
    flags = np.zeros(1 << 20, dtype=bool)
    flags[repeated >> np.uint32(12)] = True
    maybe = np.empty(len(hashes), dtype=bool)

    def flag(rows: slice) -> None:
        maybe[rows] = flags[hashes[rows] >> np.uint32(12)]

    _each_slice(flag, len(hashes))
    rows = np.flatnonzero(maybe)
    out = np.zeros(len(hashes), dtype=bool)
    out[rows[pd.Series(hashes[rows]).isin(repeated).to_numpy()]] = True
    return out


def _hash_bits(values: pd.Series) -> np.ndarray:
    """A column as 64-bit words that are equal where `duplicated` sees equal values: a float
    column's -0.0 and 0.0 are one value, as are its NaNs (made equal by `_row_hashes`)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.to_numpy("datetime64[us]").view(np.uint64)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy("float64", na_value=np.nan)
    return pd.factorize(values)[0].astype(np.uint64)


def _row_hashes(codes: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """A 32-bit hash of each row, a slice at a time (`_each_slice`): 10M rows in 0.03 s, where
    whole-column temporaries took 0.5 s, most of it the system handing out their memory. The
    top 32 bits of a 64-bit mix: sorting them takes 0.6x the time of 64, and they repeat by
    chance for about n^2 / 2^33 pairs of rows (12k in 10M), which the full comparison then
    tells apart."""
    out = np.empty(len(codes), dtype=np.uint32)

    def mix(rows: slice) -> None:
        mixed = codes[rows].astype(np.uint64)
        for column in columns:
            bits = column[rows]
            if bits.dtype == np.float64:
                bits = bits + 0.0  # -0.0 as 0.0
                bits[np.isnan(bits)] = np.nan  # one NaN: pandas compares them so
                bits = bits.view(np.uint64)
            with np.errstate(over="ignore"):
                mixed ^= bits
                mixed *= np.uint64(0x9E3779B97F4A7C15)
                mixed += np.uint64(0xBF58476D1CE4E5B9)
        mixed >>= np.uint64(32)
        out[rows] = mixed

    _each_slice(mix, len(codes))
    return out


def _repeats(hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once, from sorts: three times faster than a hash table
    of every row. On a big table, one range of values per core, each sorted in its own thread
    (numpy's sort lets go of the GIL)."""

    def repeats_in(part: int) -> np.ndarray:
        if ranges > 1:  # the part's range, taken in its thread
            low, high = (2**32 * k // ranges for k in (part, part + 1))
            inside = hashes >= np.uint32(low)
            if high < 2**32:
                inside &= hashes < np.uint32(high)
            ordered = np.sort(hashes[inside])
        else:
            ordered = np.sort(hashes)
        return ordered[1:][ordered[1:] == ordered[:-1]]

    ranges = cores() if len(hashes) >= PARALLEL_ROWS else 1
    if ranges == 1:
        return repeats_in(0)
    with ThreadPoolExecutor(ranges) as pool:
        return np.concatenate(list(pool.map(repeats_in, range(ranges))))


def _refunds_before_first_purchase(clean: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
    """Refunds dated before their customer's first purchase (every refund of a customer who
    never bought). On a big table each core finds the first purchases in a slice of rows
    (`minimum.at` lets go of the GIL): 10M rows in 0.06 s instead of 0.2."""
    stamps = clean["timestamp"].to_numpy("datetime64[us]").view(np.int64)
    amount = clean["amount"].to_numpy("float64")
    never = np.iinfo(np.int64).max
    n = codes.max() + 1 if len(codes) else 0

    def first_purchases(rows: slice) -> np.ndarray:
        first = np.full(n, never)
        np.minimum.at(first, codes[rows], np.where(amount[rows] > 0, stamps[rows], never))
        return first

    if len(codes) < PARALLEL_ROWS:
        first = first_purchases(slice(None))
    else:
        cuts = [len(codes) * k // cores() for k in range(cores() + 1)]
        with ThreadPoolExecutor(cores()) as pool:
            slices = [slice(low, high) for low, high in itertools.pairwise(cuts)]
            first = np.minimum.reduce(list(pool.map(first_purchases, slices)))
    refunds = np.flatnonzero(amount < 0)
    out = np.zeros(len(codes), dtype=bool)
    out[refunds] = stamps[refunds] < first[codes[refunds]]
    return out


def _plain_id(value) -> str | None:
    """`normalize_ids` for one value: stripped, `17850.0` -> `17850`, blank -> None."""
    if value is None:
        return None
    text = str(value).strip()
    return _ID_FLOAT.sub(r"\1", text) or None


def _utc_micros(value: datetime | date) -> int:
    """A datetime (naive = UTC) or a date as microseconds since the epoch, UTC."""
    if not isinstance(value, datetime):
        return (value.toordinal() - _EPOCH_DAY) * _DAY_MICROS
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (value - _EPOCH) // _MICROSECOND


_EPOCH, _MICROSECOND = datetime(1970, 1, 1), timedelta(microseconds=1)
_EPOCH_DAY, _DAY_MICROS = _EPOCH.toordinal(), DAY.value // 1000


@functools.lru_cache(maxsize=256)
def _micros_limits(as_of: pd.Timestamp) -> tuple[int, int, int]:
    """(earliest plausible, first implausible, first after as_of) in microseconds: what
    `record_columns` checks, the same for every request about one day."""
    end = as_of + DAY  # rows from here on are after as_of: dropped
    return tuple(int(t.value // 1000) for t in (EARLIEST_PLAUSIBLE, plausible_until(as_of), end))


_TEXT_OPTIONAL = [c for c in TRANSACTION_OPTIONAL if c != "quantity"]


def record_columns(rows: list, as_of: pd.Timestamp) -> dict[str, list] | None:
    """`validate_transactions` for a few typed records (the API's, with the attributes of
    `TRANSACTION_REQUIRED` and `TRANSACTION_OPTIONAL`, already checked by their schema: ids
    are text, timestamps dates or datetimes, amounts finite numbers), in plain Python: 20 rows
    in well under a millisecond instead of 20. The table's columns as lists (timestamps in
    microseconds), so that the rows of several requests can be joined first;
    `features.customer.transaction_features` computes their features. None when a row needs
    judgement (a blank id, an implausible date) or none is left: the caller then runs
    `validate_transactions`, which decides and explains. `as_of` is a UTC day (`to_day`)."""
    earliest, until, end = _micros_limits(as_of)
    columns: dict[str, list] = {c: [] for c in TRANSACTION_REQUIRED + TRANSACTION_OPTIONAL}
    plain: dict[str, str | None] = {}  # a request's rows are mostly about one customer
    for row in rows:
        raw = row.customer_id
        cid = plain[raw] if raw in plain else plain.setdefault(raw, _plain_id(raw))
        micros = _utc_micros(row.timestamp)
        if cid is None or not earliest <= micros < until:
            return None
        if micros >= end:
            continue
        columns["customer_id"].append(cid)
        columns["timestamp"].append(micros)
        columns["amount"].append(float(row.amount))
        quantity = row.quantity
        columns["quantity"].append(np.nan if quantity is None else float(quantity))
        for col in _TEXT_OPTIONAL:
            columns[col].append(_plain_id(getattr(row, col)))
    return columns if columns["customer_id"] else None


_IMPLAUSIBLE = "an implausible date (before 1900 or after the as_of year + 1)"
TZ_CONVERTED = "tz-aware timestamps converted to UTC (others read as UTC)"
DUPLICATES_KEPT = (
    "exact duplicate rows (kept as repeat purchases; --drop-duplicates if the source "
    "exports rows twice)"
)


def settle_notes(report: QualityReport) -> None:
    """Settle the notes only a whole source can decide (one machine's, or Spark's partitions
    merged): the tz-aware note goes when every date had an offset, since it tells something
    only beside dates that had none."""
    if report.noted.get(TZ_CONVERTED) == report.rows_read:
        del report.noted[TZ_CONVERTED]


def validate_customers(
    raw: pd.DataFrame,
    mapping: ColumnMapping | None = None,
    source: str = "customers",
    max_bad_fraction: float = 0.01,
) -> tuple[pd.DataFrame, QualityReport]:
    """Clean customer attributes. Unusable attribute values become missing and are counted."""
    mapping = mapping or ColumnMapping()
    report = QualityReport(source=source, rows_read=len(raw))
    if raw.empty:
        raise DataError(f"{source}: no rows")
    frame = raw.rename(columns=mapping.source_to_canonical(list(raw.columns)))
    _check_columns(frame, CUSTOMER_REQUIRED, mapping, source)
    ids = normalize_ids(frame["customer_id"])
    _refuse_or_drop(
        ids.isna(),
        frame,
        "customer_id",
        "a null or empty id",
        frame["customer_id"],
        report,
        max_bad_fraction,
    )
    out = pd.DataFrame({"customer_id": ids})
    if "signup_date" in frame.columns:
        signup, _ = parse_timestamps(frame["signup_date"], None)
        signup = signup.where((signup >= EARLIEST_PLAUSIBLE) & (signup < plausible_until(None)))
        _note_nulled(report, "signup_date", frame["signup_date"], signup)
        out["signup_date"] = signup.astype("datetime64[us, UTC]")
    for col, (low, high) in ATTRIBUTE_BOUNDS.items():
        if col in frame.columns:
            num = pd.to_numeric(frame[col], errors="coerce").astype("float64")
            num = num.where((num >= low) & (num <= high))
            _note_nulled(report, col, frame[col], num)
            out[col] = num
    for col in ("gender", "region"):
        if col in frame.columns:
            out[col] = normalize_ids(frame[col])
    if "customer_type" in frame.columns:
        ctype = normalize_ids(frame["customer_type"]).str.upper()
        ctype = ctype.where(ctype.isin(CUSTOMER_TYPES))
        _note_nulled(report, "customer_type", frame["customer_type"], ctype)
        out["customer_type"] = ctype
    out = out[ids.notna().to_numpy()]
    dup = out["customer_id"].duplicated(keep="first")
    report.drop(
        "repeated customer_id (first row kept)",
        int(dup.sum()),
        repr(out.loc[dup, "customer_id"].iloc[0]) if dup.any() else None,
    )
    out = out[~dup].reset_index(drop=True)
    report.rows_kept = len(out)
    return out[["customer_id"] + [c for c in CUSTOMER_OPTIONAL if c in out.columns]], report


def _note_nulled(report: QualityReport, column: str, before: pd.Series, after: pd.Series) -> None:
    lost = before.notna() & (before.astype("str").str.strip() != "") & after.isna()
    if lost.any():
        report.note(
            f"unusable '{column}' set to missing", int(lost.sum()), repr(before[lost].iloc[0])
        )


def to_day(value) -> pd.Timestamp:
    """A date-like value as a UTC day (midnight), between 1900 and 2200."""
    shown = repr(value) if isinstance(value, str) else str(value)  # 1800-01-01, not date(...)
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        raise DataError(f"as_of {shown} is not a date (use YYYY-MM-DD)") from None
    if stamp is pd.NaT or not 1900 <= stamp.year < 2200:
        raise DataError(f"as_of {shown} is not a plausible day (years 1900 to 2199)")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("D").as_unit("us")


def _row_example(rows: pd.DataFrame) -> str:
    # Column by column: a row of mixed types would make pandas hash every id level.
    return ", ".join(f"{k}={rows[k].iloc[0]!s}" for k in ("customer_id", "timestamp", "amount"))
