"""Training examples: customer features at a cutoff (plus the outputs of a BTYD baseline fitted
at that same cutoff) and their labels. Built once per cutoff and shared by every model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.customer import customer_features
from features.labels import labels
from features.load import Inputs
from features.validation import DAY
from models.btyd import BTYDBaseline


@dataclass
class Examples:
    features: pd.DataFrame  # feature table (+ BTYD outputs), one row per customer and cutoff
    labels: pd.DataFrame  # churned, future_spend, future_purchase_days; same rows

    def __len__(self) -> int:
        return len(self.features)

    def split(self, holdout: float, seed: int) -> tuple[Examples, Examples]:
        """(fit, holdout) by customer, seeded: used when a model has only one cutoff."""
        ids = self.features["customer_id"].drop_duplicates().to_numpy()
        rng = np.random.default_rng(seed)
        held = set(rng.choice(ids, int(round(holdout * len(ids))), replace=False))
        mask = self.features["customer_id"].isin(held).to_numpy()
        return self.take(~mask), self.take(mask)

    def take(self, mask: np.ndarray) -> Examples:
        return Examples(
            self.features[mask].reset_index(drop=True), self.labels[mask].reset_index(drop=True)
        )


class FeatureCache:
    """Features + BTYD outputs per cutoff day, computed once.

    Point in time: only transactions up to `inputs.as_of` are ever read, and at a past cutoff a
    customer whose signup date (from the customers file, a snapshot taken now) is after the
    cutoff is left out: their attributes could not have been known then."""

    def __init__(self, inputs: Inputs, churn_horizon: int, value_horizon: int):
        tx = inputs.transactions
        self.transactions = tx[tx["timestamp"] < inputs.as_of + DAY]
        self.customers = inputs.customers
        self.horizons = (churn_horizon, value_horizon)
        self._cache: dict[pd.Timestamp, tuple[pd.DataFrame, BTYDBaseline]] = {}

    def at(self, cutoff: pd.Timestamp) -> tuple[pd.DataFrame, BTYDBaseline]:
        if cutoff not in self._cache:
            tx = self.transactions[self.transactions["timestamp"] < cutoff + DAY]
            feats = self._signed_up_by(customer_features(tx, cutoff, self.customers), cutoff)
            btyd = BTYDBaseline().fit(feats)
            self._cache[cutoff] = (btyd.add_to(feats, *self.horizons), btyd)
        return self._cache[cutoff]

    def examples(self, cutoffs, horizon: int) -> Examples:
        frames, targets = [], []
        for cutoff in cutoffs:
            feats, _ = self.at(cutoff)
            frames.append(feats)
            targets.append(labels(self.transactions, feats["customer_id"], cutoff, horizon))
        return Examples(pd.concat(frames, ignore_index=True), pd.concat(targets, ignore_index=True))

    def _signed_up_by(self, feats: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
        if self.customers is None or "signup_date" not in self.customers.columns:
            return feats
        signup = self.customers.set_index("customer_id")["signup_date"]
        later = (signup.reindex(feats["customer_id"]) > cutoff).to_numpy()
        return feats[~later].reset_index(drop=True) if later.any() else feats
