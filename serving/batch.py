"""Batch scoring: every customer as of a day, with the same fields as the API."""

from __future__ import annotations

import pandas as pd

from features.customer import customer_features
from features.load import Inputs
from features.sources import is_sql, write_table
from models.bundle import Bundle, joined_reasons


def score_features(features: pd.DataFrame, bundle: Bundle, as_of: str) -> pd.DataFrame:
    """Predictions for a feature table, in chunks so that memory stays flat on big tables."""
    chunks = [
        bundle.score(features.iloc[start : start + 200_000])
        for start in range(0, len(features), 200_000)
    ]
    out = pd.concat(chunks, ignore_index=True) if chunks else bundle.score(features)
    out["as_of"] = as_of
    return out


def score_inputs(inputs: Inputs, bundle: Bundle) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, the feature snapshot they were computed from)."""
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers)
    return score_features(feats, bundle, str(inputs.as_of.date())), feats


def write_predictions(predictions: pd.DataFrame, spec: str) -> str:
    """Parquet keeps `reasons` as a list; CSV and SQL get it joined with ';'."""
    if is_sql(spec) or str(spec).lower().endswith(".csv"):
        predictions = joined_reasons(predictions)
    return write_table(predictions, spec)
