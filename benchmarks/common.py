"""Shared by the benchmarks: a small trained bundle and its feature snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def trained_bundle(directory: Path, customers: int = 20_000) -> tuple[Path, pd.DataFrame]:
    """Train on synthetic data (no MLflow) and save the bundle; returns (bundle dir, features)."""
    from features.customer import customer_features
    from features.load import Inputs
    from features.synthetic import generate
    from features.validation import validate_customers, validate_transactions
    from training.config import TrainConfig
    from training.job import train

    cust, tx, _ = generate(customers, seed=11)
    clean, as_of, report = validate_transactions(tx)
    attrs, _ = validate_customers(cust)
    bundle = train(Inputs(clean, as_of, attrs, [report]), TrainConfig()).bundle
    feats = customer_features(clean, as_of, attrs).assign(as_of=str(as_of.date()))
    return bundle.save(directory / "bundle"), feats


def replicate(features: pd.DataFrame, rows: int) -> pd.DataFrame:
    """A bigger snapshot made of copies of real feature rows, with fresh ids."""
    reps = -(-rows // len(features))
    big = pd.concat([features] * reps, ignore_index=True).head(rows)
    big["customer_id"] = pd.Series(np.arange(rows)).astype("str").str.zfill(9)
    return big
