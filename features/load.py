"""Source -> validated tables: the one loading path shared by every command and the API."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from features.schema import ColumnMapping
from features.sources import read_table, redact
from features.validation import QualityReport, validate_customers, validate_transactions


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
        read_table(transactions, mapping.encoding),  # held by no one else: freed early
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
