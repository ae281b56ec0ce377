"""Personas: k-means on transformed behaviour and attributes, with stable ids across retrains.

Why these inputs: a persona is *who buys and how* (purchase rate, basket value, age, income,
business or consumer), not *where they are in their lifecycle* (recency), which sits beside it
as the lifecycle stage. The number of personas is chosen by the mean silhouette on a sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score


def persona_inputs(features: pd.DataFrame) -> pd.DataFrame:
    """The transformed columns personas are clustered on (missing attributes stay NaN)."""

    def col(name: str) -> np.ndarray:
        return features[name].to_numpy("float64", na_value=np.nan)

    tenure = np.clip(np.nan_to_num(col("tenure_days")), 30, None)
    out = {
        "log_purchases_per_year": np.log1p(365.0 * col("frequency") / tenure),
        "log_avg_purchase_value": np.log1p(
            np.clip(np.nan_to_num(col("avg_purchase_value")), 0, None)
        ),
    }
    if "age" in features.columns:
        out["age"] = col("age")
    if "income" in features.columns:
        out["log_income"] = np.log1p(np.clip(col("income"), 0, None))
    if "customer_type" in features.columns:
        ctype = features["customer_type"].astype("str").to_numpy()
        out["is_b2b"] = np.where(np.isin(ctype, ["B2B", "B2C"]), ctype == "B2B", np.nan)
    return pd.DataFrame(out, index=features.index)


class PersonaModel:
    """KMeans personas. `fit(features, previous=model)` keeps the previous model's ids for
    clusters that match (Hungarian matching on centroids)."""

    def __init__(
        self,
        n_personas: int | None = None,
        k_range: tuple[int, int] = (3, 8),
        sample_size: int = 5_000,
        random_state: int = 0,
    ):
        self.n_personas = n_personas
        self.k_range = k_range
        self.sample_size = sample_size
        self.random_state = random_state

    def matrix(self, features: pd.DataFrame) -> np.ndarray:
        """Standardised persona inputs, missing values filled with the training medians."""
        raw = persona_inputs(features).reindex(columns=self.columns_).to_numpy("float64")
        filled = np.where(np.isnan(raw), self.fill_, raw)
        return (filled - self.mean_) / self.scale_

    def fit(self, features: pd.DataFrame, previous: PersonaModel | None = None) -> PersonaModel:
        inputs = persona_inputs(features)
        self.columns_ = [c for c in inputs.columns if inputs[c].notna().mean() > 0.5]
        inputs = inputs[self.columns_]
        self.fill_ = inputs.median().fillna(0).to_numpy("float64")
        filled = inputs.fillna(pd.Series(self.fill_, index=self.columns_)).to_numpy("float64")
        self.mean_ = filled.mean(axis=0)
        self.scale_ = np.where(filled.std(axis=0) > 0, filled.std(axis=0), 1.0)
        X = (filled - self.mean_) / self.scale_
        rng = np.random.default_rng(self.random_state)
        sample = X[rng.choice(len(X), min(len(X), self.sample_size), replace=False)]
        if self.n_personas:
            candidates = [self.n_personas]
        else:
            low, high = self.k_range
            candidates = list(range(low, min(high, len(sample) - 1) + 1))
        self.silhouettes_ = {}
        best = None
        for k in candidates:
            km = KMeans(n_clusters=k, n_init=4, random_state=self.random_state).fit(sample)
            score = (
                float(silhouette_score(sample, km.labels_, random_state=self.random_state))
                if len(set(km.labels_)) > 1
                else -1.0
            )
            self.silhouettes_[k] = score
            if best is None or score > best[0]:
                best = (score, km)
        # Refit the chosen k on all rows, started from the sample solution.
        k = best[1].n_clusters
        km = KMeans(n_clusters=k, init=best[1].cluster_centers_, n_init=1).fit(X)
        self.centroids_ = km.cluster_centers_
        self.ids_ = self._match_ids(previous)
        self.names_ = name_personas(self.raw_centroids(), self.columns_, self.ids_)
        return self

    def raw_centroids(self) -> pd.DataFrame:
        """Centroids in the units of `persona_inputs` (for naming and matching)."""
        raw = self.centroids_ * self.scale_ + self.mean_
        return pd.DataFrame(raw, columns=self.columns_)

    def _match_ids(self, previous: PersonaModel | None) -> np.ndarray:
        k = len(self.centroids_)
        if previous is None or previous.columns_ != self.columns_:
            return np.arange(k)
        prev = (previous.raw_centroids().to_numpy() - self.mean_) / self.scale_
        cost = ((self.centroids_[:, None, :] - prev[None, :, :]) ** 2).sum(axis=2)
        rows, cols = linear_sum_assignment(cost)
        ids = np.full(k, -1)
        ids[rows] = previous.ids_[cols]
        fresh = iter(range(int(previous.ids_.max()) + 1, int(previous.ids_.max()) + 1 + k))
        return np.array([i if i >= 0 else next(fresh) for i in ids])

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Persona id per customer (nearest centroid)."""
        X = self.matrix(features)
        dist = ((X[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return self.ids_[dist.argmin(axis=1)]

    def name_of(self, persona_ids: np.ndarray) -> np.ndarray:
        by_id = np.empty(int(self.ids_.max()) + 1, dtype=object)
        by_id[self.ids_] = self.names_
        return by_id[np.asarray(persona_ids, dtype="int64")]

    def to_dict(self) -> dict:
        return {
            "params": {
                "n_personas": self.n_personas,
                "k_range": list(self.k_range),
                "sample_size": self.sample_size,
                "random_state": self.random_state,
            },
            "columns": self.columns_,
            "fill": self.fill_.tolist(),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "centroids": self.centroids_.tolist(),
            "ids": self.ids_.tolist(),
            "names": self.names_,
            "silhouettes": {str(k): v for k, v in self.silhouettes_.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> PersonaModel:
        params = dict(data["params"])
        params["k_range"] = tuple(params["k_range"])
        model = cls(**params)
        model.columns_ = list(data["columns"])
        for name in ("fill", "mean", "scale", "centroids"):
            setattr(model, f"{name}_", np.asarray(data[name], dtype="float64"))
        model.ids_ = np.asarray(data["ids"], dtype="int64")
        model.names_ = list(data["names"])
        model.silhouettes_ = {int(k): v for k, v in data.get("silhouettes", {}).items()}
        return model


def name_personas(centroids: pd.DataFrame, columns: list[str], ids: np.ndarray) -> list[str]:
    """Readable names from centroid profiles: buying rhythm, basket level, who they are."""
    names = []
    value = np.expm1(centroids["log_avg_purchase_value"])
    median_value = float(np.median(value))
    for i, row in centroids.iterrows():
        per_year = float(np.expm1(row["log_purchases_per_year"]))
        rhythm = (
            "frequent"
            if per_year >= 12
            else "regular"
            if per_year >= 4
            else "occasional"
            if per_year >= 1
            else "one-off"
        )
        basket = (
            "premium"
            if value[i] > 2 * median_value
            else "budget"
            if value[i] < 0.6 * median_value
            else ""
        )
        if "is_b2b" in columns and row["is_b2b"] > 0.5:
            who = "business buyers"
        elif "age" in columns and row["age"] < 32:
            who = "young shoppers"
        elif "age" in columns and row["age"] >= 60:
            who = "senior shoppers"
        else:
            who = "shoppers"
        names.append(" ".join(w for w in (rhythm, basket, who) if w))
    return [
        name if names.count(name) == 1 else f"{name} ({pid})"
        for name, pid in zip(names, ids, strict=True)
    ]
