"""Plots logged with every training run (PNG files written to a directory)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from training.evaluate import deciles  # noqa: E402


def write_plots(result, directory: Path) -> Path:
    """Every plot of a training run (`training.run.TrainResult`) as PNG files in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    evaluation = result.evaluation
    churn_y = evaluation.churn.labels["churned"].to_numpy()[evaluation.active]
    churn_scores = {k: v[evaluation.active] for k, v in evaluation.churn_scores.items()}
    value_y = evaluation.value.labels["future_spend"].to_numpy()
    persona_profiles(
        pd.DataFrame(result.bundle.manifest["persona_catalog"]), directory / "persona_profiles.png"
    )
    churn_curves(churn_y, churn_scores, directory / "churn_roc_calibration.png")
    lift_and_value_deciles(
        churn_y,
        churn_scores,
        value_y,
        evaluation.value_scores,
        directory / "lift_and_value_deciles.png",
    )
    feature_importance(
        {"churn": result.bundle.churn.importance(), "value": result.bundle.value.importance()},
        directory / "feature_importance.png",
    )
    return directory


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def persona_profiles(catalog: pd.DataFrame, path: Path) -> None:
    cols = ["share", "revenue_share", "churn_rate"]
    fig, ax = plt.subplots(figsize=(9, 4))
    catalog.set_index("persona_name")[cols].plot.barh(ax=ax)
    ax.set_xlabel("fraction")
    ax.set_title("Personas: size, revenue and churn")
    _save(fig, path)


def churn_curves(y, scores: dict[str, np.ndarray], path: Path) -> None:
    fig, (roc, cal) = plt.subplots(1, 2, figsize=(10, 4))
    for label, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        roc.plot(fpr, tpr, label=label)
        observed, predicted = deciles(y, p)
        cal.plot(predicted, observed, "o-", label=label)
    roc.plot([0, 1], [0, 1], "k:")
    roc.set(
        title="ROC, active customers (out of time)",
        xlabel="false positive rate",
        ylabel="true positive rate",
    )
    cal.plot([0, 1], [0, 1], "k:")
    cal.set(title="Calibration by decile", xlabel="predicted churn", ylabel="observed churn")
    roc.legend()
    _save(fig, path)


def lift_and_value_deciles(y, churn_scores, actual_value, value_scores, path: Path) -> None:
    fig, (lift, value) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(1, 11)
    for i, (label, p) in enumerate(churn_scores.items()):
        observed, _ = deciles(y, p)
        lift.bar(x + 0.4 * i - 0.2, observed / np.mean(y), width=0.4, label=label)
    lift.set(title="Churn lift by decile", xlabel="decile (highest risk first)", ylabel="lift")
    lift.legend()
    for i, (label, v) in enumerate(value_scores.items()):
        observed, _ = deciles(actual_value, v)
        value.bar(x + 0.4 * i - 0.2, observed, width=0.4, label=label)
    value.set(title="Actual spend by predicted-value decile", xlabel="decile", ylabel="spend")
    value.legend()
    _save(fig, path)


def feature_importance(importances: dict[str, dict[str, float]], path: Path, top: int = 15) -> None:
    fig, axes = plt.subplots(1, len(importances), figsize=(6 * len(importances), 5))
    for ax, (label, scores) in zip(np.atleast_1d(axes), importances.items(), strict=True):
        s = pd.Series(scores).sort_values().tail(top)
        (s / s.sum()).plot.barh(ax=ax)
        ax.set_title(f"{label}: share of total gain")
    _save(fig, path)
