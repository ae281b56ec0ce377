"""Population stability: a compact reference of each model input and prediction, taken when the
model is trained and kept in its manifest, and the PSI of a later table against it.

PSI = sum over bins of (now - then) x ln(now / then), with the bins fixed at training: deciles
of each number (plus one bin for missing), the most common levels of each category (plus
"other" and missing). Below 0.1 is stable, 0.1-0.25 a moderate shift, above 0.25 a large one.
A handful of lines of numpy: drift libraries would bring a large dependency for this sum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 10
LEVELS = 20  # categories kept by name; the rest count as "other"
FLOOR = 1e-4  # shares are floored here: an empty bin would make the PSI infinite


def _numeric_shares(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    counts = np.bincount(np.searchsorted(edges, values[finite]), minlength=len(edges) + 1)
    return np.append(counts, (~finite).sum()) / max(len(values), 1)


def _categorical_shares(levels: list, values: pd.Series) -> np.ndarray:
    missing = values.isna().to_numpy()
    counts = values[~missing].astype(str).value_counts()
    named = counts.reindex(levels, fill_value=0).to_numpy()
    other = counts.sum() - named.sum()
    return np.append(named, [other, missing.sum()]) / max(len(values), 1)


def reference(frame: pd.DataFrame) -> dict:
    """Per column: the bins and the share of rows in each. Numbers are binned at their
    deciles, anything else by its most common levels. A column with one value for everyone
    (the month of `as_of`) describes the calendar, not the customers, and is left out."""
    out = {}
    for col in frame.columns:
        values = frame[col]
        if values.nunique(dropna=False) <= 1:
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            x = values.to_numpy(dtype="float64", na_value=np.nan)
            finite = x[np.isfinite(x)]
            qs = np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]) if len(finite) else []
            edges = np.unique(qs)
            out[col] = {"edges": edges.tolist(), "shares": _numeric_shares(edges, x).tolist()}
        else:
            levels = values.dropna().astype(str).value_counts().index[:LEVELS].tolist()
            out[col] = {"levels": levels, "shares": _categorical_shares(levels, values).tolist()}
    return out


def psi(expected, actual) -> float:
    expected = np.clip(np.asarray(expected, dtype="float64"), FLOOR, None)
    actual = np.clip(np.asarray(actual, dtype="float64"), FLOOR, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def stability(ref: dict, frame: pd.DataFrame) -> pd.Series:
    """PSI of every column of `frame` that the reference holds, largest first."""
    out = {}
    for col, bins in ref.items():
        if col not in frame.columns:
            continue
        if "edges" in bins:
            x = pd.to_numeric(frame[col], errors="coerce").to_numpy("float64", na_value=np.nan)
            now = _numeric_shares(np.asarray(bins["edges"], dtype="float64"), x)
        else:
            now = _categorical_shares(bins["levels"], frame[col])
        out[col] = psi(bins["shares"], now)
    return pd.Series(out, dtype="float64").sort_values(ascending=False)
