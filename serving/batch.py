"""Batch scoring: every customer as of a day, with the same fields as the API."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from features.customer import customer_features
from features.load import Inputs
from features.sources import is_sql, write_table
from models.bundle import Bundle, joined_reasons


def score_features(
    features: pd.DataFrame, bundle: Bundle, as_of: str, chunk: int = 50_000
) -> pd.DataFrame:
    """Predictions for a feature table, in chunks so that memory stays flat on big tables.
    Chunks are scored on all cores at once, one XGBoost thread each: the pandas and numpy
    steps then run in parallel too (measured: 1.6x the speed of one chunk at a time on
    2 cores). XGBoost's prediction is thread-safe."""
    threads = bundle.nthread
    bundle.use_threads(1)
    try:
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            starts = range(0, len(features), chunk)
            chunks = list(pool.map(lambda s: bundle.score(features.iloc[s : s + chunk]), starts))
    finally:
        bundle.use_threads(threads)
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
