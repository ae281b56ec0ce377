"""Out-of-time metrics for churn, value and personas (pure functions of arrays)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def calibration_error(y, p, bins: int = 10) -> float:
    """Expected calibration error: |observed rate - mean prediction| over equal-width
    probability bins, weighted by bin size."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, y, bins) - np.bincount(which, p, bins))
    return float(gap.sum() / len(y)) if n.sum() else float("nan")


def top_decile_lift(y, score) -> float:
    """Positive rate among the 10% highest scores over the overall positive rate."""
    y, score = np.asarray(y, dtype="float64"), np.asarray(score, dtype="float64")
    top = np.argsort(-score, kind="stable")[: max(1, len(y) // 10)]
    return float(y[top].mean() / y.mean()) if y.mean() > 0 else float("nan")


def churn_metrics(y, p) -> dict[str, float]:
    y = np.asarray(y, dtype="int8")
    return {
        "auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, np.clip(p, 0, 1))),
        "calibration_error": calibration_error(y, p),
        "top_decile_lift": top_decile_lift(y, p),
        "base_rate": float(y.mean()),
    }


def gini(actual, predicted) -> float:
    """Gini of `actual` ordered by `predicted` (area between the Lorenz-like curve and the
    diagonal); ties in `predicted` are broken pessimistically by index."""
    actual = np.asarray(actual, dtype="float64")
    order = np.lexsort((np.arange(len(actual)), -np.asarray(predicted, dtype="float64")))
    cum = np.cumsum(actual[order]) / actual.sum()
    n = len(actual)
    return float(cum.sum() / n - (n + 1) / (2 * n))


def normalized_gini(actual, predicted) -> float:
    """Gini of the model over the Gini of a perfect ranking: 1 is perfect, 0 random."""
    return gini(actual, predicted) / gini(actual, actual)


def value_metrics(actual, predicted) -> dict[str, float]:
    actual = np.clip(np.asarray(actual, dtype="float64"), 0, None)
    predicted = np.asarray(predicted, dtype="float64")
    return {
        "mae": float(np.mean(np.abs(actual - predicted))),
        "spearman": float(spearmanr(actual, predicted).statistic),
        "normalized_gini": normalized_gini(actual, predicted),
        "aggregate_bias": float(predicted.sum() / actual.sum() - 1),
    }


def deciles(actual, score, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean actual and mean score per score decile, highest scores first (for lift plots)."""
    order = np.argsort(-np.asarray(score), kind="stable")
    chunks = np.array_split(order, bins)
    actual, score = np.asarray(actual, dtype="float64"), np.asarray(score, dtype="float64")
    return np.array([actual[c].mean() for c in chunks]), np.array([score[c].mean() for c in chunks])
