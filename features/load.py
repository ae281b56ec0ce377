"""Source -> validated tables: the one loading path shared by every command and the API."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from features.schema import ColumnMapping
from features.sources import read_csv_typed, read_table, redact
from features.validation import (
    QualityReport,
    shown_as_written,
    validate_customers,
    validate_transactions,
)


@dataclass
class Inputs:
    """Validated transactions (+ customers), the as_of day and what validation did."""

    transactions: pd.DataFrame
    as_of: pd.Timestamp
    customers: pd.DataFrame | None = None
    reports: list[QualityReport] = field(default_factory=list)


def load_inputs(
    transactions: str,
    customers: str | None = None,
    as_of=None,
    mapping: ColumnMapping | None = None,
    max_bad_fraction: float = 0.01,
    drop_duplicates: bool = False,
) -> Inputs:
    mapping = mapping or ColumnMapping()
    tx, as_of, tx_report = validate_transactions(
        _read_transactions(transactions, mapping, as_of),  # held by no one else: freed early
        mapping,
        as_of,
        source=redact(transactions),
        max_bad_fraction=max_bad_fraction,
        drop_duplicates=drop_duplicates,
    )
    inputs = Inputs(tx, as_of, reports=[tx_report])
    if customers:
        raw_c = read_table(customers, encoding=mapping.encoding)
        inputs.customers, c_report = validate_customers(
            raw_c, mapping, source=redact(customers), max_bad_fraction=max_bad_fraction
        )
        inputs.reports.append(c_report)
    return inputs


def _read_transactions(spec: str, mapping: ColumnMapping, as_of) -> pd.DataFrame:
    """The transactions, a CSV's timestamps and amounts parsed as it is read (twice as fast)
    unless a value does not parse or is one the quality report shows as written: then as
    text, as `validate_transactions` reads anything."""
    typed = {mapping.source_name("amount"): "number"}
    if not mapping.time_format:  # a given format is pandas' to read
        typed[mapping.source_name("timestamp")] = "timestamp"
    raw = read_csv_typed(spec, mapping.encoding, typed)
    if raw is None or shown_as_written(raw, mapping, as_of):
        return read_table(spec, mapping.encoding)
    return raw
