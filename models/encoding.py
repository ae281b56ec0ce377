"""Feature table -> numeric matrix for the boosted models, with categories learned at fit time
and stored as JSON (no pickled transformer on the serving path)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import (
    ATTRIBUTE_CATEGORICAL,
    ATTRIBUTE_NUMERIC,
    NUMERIC_FEATURES,
    OPTIONAL_BREADTH,
)
from features.table import Columns, positions

BTYD_FEATURES = ["btyd_p_alive", "btyd_p_churn", "btyd_expected_purchases", "btyd_expected_value"]
CANDIDATE_NUMERIC = (
    NUMERIC_FEATURES + list(OPTIONAL_BREADTH.values()) + ATTRIBUTE_NUMERIC + BTYD_FEATURES
)
CANDIDATE_CATEGORICAL = ["lifecycle_stage", *ATTRIBUTE_CATEGORICAL]
MAX_LEVELS = 20


class FeatureEncoder:
    """Numeric features pass through (missing stays NaN for XGBoost); categoricals are one-hot
    encoded over the levels seen at fit (the `MAX_LEVELS` most common)."""

    def fit(self, frames: pd.DataFrame | list[pd.DataFrame]) -> FeatureEncoder:
        """Learn the columns and category levels of one feature table or several (e.g. the
        training cutoffs, without copying them into one)."""
        frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
        columns = set(frames[0].columns)
        self.numeric_ = [c for c in CANDIDATE_NUMERIC if c in columns]
        self.categories_ = {}
        for col in CANDIDATE_CATEGORICAL:
            if col in columns:
                each = [f[col].dropna().astype("str").value_counts() for f in frames]
                counts = pd.concat(each).groupby(level=0).sum()
                counts = counts.sort_values(ascending=False, kind="stable")
                levels = counts[counts.index != "nan"].index[:MAX_LEVELS]
                self.categories_[col] = sorted(levels.tolist())
        return self

    @property
    def feature_names_(self) -> list[str]:
        names = list(self.numeric_)
        for col, levels in self.categories_.items():
            names += [f"{col}={level}" for level in levels]
        return names

    @property
    def input_columns_(self) -> list[str]:
        return self.numeric_ + list(self.categories_)

    def transform(self, frame: pd.DataFrame | Columns) -> np.ndarray:
        """The model matrix: rows are customers, columns `feature_names_` (float32)."""
        columns = Columns.of(frame)
        out = np.full((len(columns), len(self.feature_names_)), np.nan, "float32", order="F")
        with np.errstate(over="ignore"):  # beyond float32: capped below
            for j, col in enumerate(self.numeric_):
                if col in columns:
                    out[:, j] = columns.number(col)
        j = len(self.numeric_)
        for col, levels in self.categories_.items():
            codes = positions(columns.text(col), levels) if col in columns else -1
            for k in range(len(levels)):
                out[:, j + k] = codes == k
            j += len(levels)
        # Values beyond float32's range become its largest finite value, not inf (XGBoost
        # refuses inf); missing values stay NaN. XGBoost reads rows, hence the final copy.
        big = np.finfo("float32").max
        return np.ascontiguousarray(np.clip(out, -big, big, out=out))

    def to_dict(self) -> dict:
        return {"numeric": self.numeric_, "categories": self.categories_}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureEncoder:
        enc = cls()
        enc.numeric_ = list(data["numeric"])
        enc.categories_ = {k: list(v) for k, v in data["categories"].items()}
        return enc
