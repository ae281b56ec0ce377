"""A feature table as plain numpy columns: what the models read.

pandas costs tens of microseconds per column access and per operation. On the few customers of
an API request that was most of the time, on a million customers it is nothing. So the models
read columns through `Columns`. Batch scoring wraps its DataFrame (each column converted once,
when first read), and the API builds the arrays directly (see `serving.together`). Both run the
same model code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class Columns:
    """Named columns of one table. A column can be read as numbers (float64, NaN where
    missing), flags (bool) or text (object: str, or None where missing)."""

    def __init__(self, source: pd.DataFrame | dict[str, Any], n_rows: int):
        self._source = source
        self.n_rows = n_rows
        self._read: dict[tuple[str, str], np.ndarray] = {}

    @classmethod
    def of(cls, table: pd.DataFrame | Columns) -> Columns:
        return table if isinstance(table, Columns) else cls(table, len(table))

    def __len__(self) -> int:
        return self.n_rows

    def __contains__(self, name: str) -> bool:
        return name in self._source  # a DataFrame's `in` looks at its columns

    @property
    def names(self) -> list[str]:
        source = self._source
        return list(source.columns if isinstance(source, pd.DataFrame) else source)

    def with_columns(self, extra: dict[str, np.ndarray]) -> Columns:
        """These columns plus (or instead of) `extra`'s, without copying any."""
        source = self._source
        if isinstance(source, pd.DataFrame):
            source = {name: source[name] for name in source.columns}
        joined = Columns({**source, **extra}, self.n_rows)
        joined._read = {key: v for key, v in self._read.items() if key[1] not in extra}
        return joined

    def number(self, name: str) -> np.ndarray:
        return self._get("number", name, _as_number)

    def flag(self, name: str) -> np.ndarray:
        return self._get("flag", name, _as_flag)

    def text(self, name: str) -> np.ndarray:
        return self._get("text", name, _as_text)

    def _get(self, kind: str, name: str, convert) -> np.ndarray:
        found = self._read.get((kind, name))
        if found is None:
            found = self._read[(kind, name)] = convert(self._source[name])
        return found


def _as_number(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values.astype("float64", copy=False)
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    try:
        return series.to_numpy("float64", na_value=np.nan)
    except (TypeError, ValueError):  # text, as some databases return numbers
        return pd.to_numeric(series, errors="coerce").to_numpy("float64", na_value=np.nan)


def _as_flag(values) -> np.ndarray:
    return np.asarray(values).astype(bool)


def _as_text(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values  # built by clientela: str or None
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    return series.astype("str").to_numpy(object, na_value=None)


def positions(text: np.ndarray, levels: list[str], unseen: int = -1) -> np.ndarray:
    """Each value's position in `levels`, `unseen` where it is none of them (missing values
    included): by a dictionary for the few rows of an API request, by an index for many."""
    if len(text) <= 512:
        position = {level: k for k, level in enumerate(levels)}
        return np.array([position.get(v, unseen) for v in text], dtype="int64")
    codes = pd.Index(levels).get_indexer(text)
    return np.where(codes >= 0, codes, unseen)
