"""One model run for the requests that arrive together (see serving.batching): the tables of
several /score/features or /score/transactions requests joined into one, scored once, and the
answers handed back per request, each exactly as it would be alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.customer import transaction_features
from features.schema import ATTRIBUTE_CATEGORICAL, ATTRIBUTE_NUMERIC, NUMBER_COLUMNS, DataError
from features.table import Columns
from models.bundle import Bundle
from serving.snapshot import records


def feature_table(rows: list[dict]) -> Columns:
    """The feature table of /score/features records, as the models read it: numbers as
    float64 (null -> NaN, as in the feature table), the rest as they came (text or None)."""
    return Columns(
        {
            name: np.array([np.nan if r[name] is None else r[name] for r in rows], "float64")
            if name in NUMBER_COLUMNS
            else np.array([r[name] for r in rows], dtype=object)
            for name in rows[0]
        },
        len(rows),
    )


def features_together(bundle: Bundle, requests: list[list[dict]]) -> list[list[dict] | DataError]:
    """`records` of several requests' feature records from one table and one model run per
    set of fields; a prediction reads its own row only, so each request gets the answers it
    would get alone. The model refuses a table for its fields, so a refusal (DataError) goes
    to every request with those fields and no other."""
    out: list = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for k, rows in enumerate(requests):
        groups.setdefault(tuple(rows[0]), []).append(k)
    for members in groups.values():
        try:
            scored = records(bundle, feature_table([r for k in members for r in requests[k]]))
        except DataError as exc:
            scored = exc
        _hand_out(out, members, scored, [len(requests[k]) for k in members])
    return out


@dataclass(frozen=True)
class Rows:
    """The transactions of one /score/transactions request, as `record_columns` lists."""

    columns: dict[str, list]
    as_of: pd.Timestamp

    def __len__(self) -> int:
        return len(self.columns["customer_id"])


def transactions_together(bundle: Bundle, requests: list[Rows]) -> list[list[dict] | DataError]:
    """`records` for the transactions of several requests, from one feature table and one
    model run per as_of day. Each request's ids are tagged with its place in the run, so that
    two requests about the same customer stay two customers; features and predictions read
    one customer's rows only, so each request gets exactly the answers it would get alone."""
    out: list = [None] * len(requests)
    days: dict[pd.Timestamp, list[int]] = {}
    for k, rows in enumerate(requests):
        days.setdefault(rows.as_of, []).append(k)
    for day, members in days.items():
        joined: dict[str, list] = {name: [] for name in requests[members[0]].columns}
        for j, k in enumerate(members):
            for name, values in requests[k].columns.items():
                joined[name] += [f"{j:06d}{v}" for v in values] if name == "customer_id" else values
        feats = transaction_features(joined, day)  # sorted by id: by request first
        tagged = feats["customer_id"]
        owner = [int(cid[:6]) for cid in tagged]
        feats["customer_id"] = np.array([cid[6:] for cid in tagged], dtype=object)
        try:
            scored = records(bundle, with_unknown_attributes(feats, bundle))
        except DataError as exc:
            scored = exc
        _hand_out(out, members, scored, np.bincount(owner, minlength=len(members)).tolist())
    return out


def _hand_out(out: list, members: list[int], scored: list | DataError, sizes: list[int]) -> None:
    """Each member request its `size` answers, in turn, from one run's answers (or the run's
    refusal to every one of them)."""
    start = 0
    for k, size in zip(members, sizes, strict=True):
        out[k] = scored if isinstance(scored, DataError) else scored[start : start + size]
        start += size


def with_unknown_attributes(feats: dict[str, np.ndarray] | pd.DataFrame, bundle: Bundle) -> Columns:
    """The features of the API's customers, with the attributes not given unknown, as for a
    customer missing from the customers file."""
    n = len(feats["customer_id"])
    unknown = {
        c: np.full(n, np.nan) if c in ATTRIBUTE_NUMERIC else np.full(n, None, dtype=object)
        for c in bundle.feature_columns
        if c not in feats and c in ATTRIBUTE_NUMERIC + ATTRIBUTE_CATEGORICAL
    }
    return Columns(feats, n).with_columns(unknown)
