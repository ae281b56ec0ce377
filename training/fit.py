"""Fitting the boosted models on a plan's cutoffs, and judging them out of time against the BTYD
baseline fitted at the same cutoff."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.boosted import ChurnModel, ValueModel
from models.encoding import FeatureEncoder
from training.config import TrainConfig
from training.evaluate import churn_metrics, value_metrics
from training.examples import Examples, FeatureCache

HOLDOUT = 0.25  # share of customers held out when a model has a single training cutoff


@dataclass
class Fitted:
    encoder: FeatureEncoder
    churn: ChurnModel
    value: ValueModel


def fit_and_holdout(cache: FeatureCache, cutoffs, horizon: int, seed: int):
    """(fit, holdout) examples: the latest cutoff is held out to stop the boosting and
    calibrate; with a single cutoff, a seeded share of its customers is."""
    if len(cutoffs) > 1:
        return cache.examples(cutoffs[1:], horizon), cache.examples(cutoffs[:1], horizon)
    return cache.examples(cutoffs, horizon).split(HOLDOUT, seed)


def fit_models(cache: FeatureCache, churn_cutoffs, value_cutoffs, config: TrainConfig) -> Fitted:
    """Encoder, churn and value models from examples at the given training cutoffs only."""
    churn_fit, churn_cal = fit_and_holdout(
        cache, churn_cutoffs, config.churn_horizon, config.random_state
    )
    value_fit, value_val = fit_and_holdout(
        cache, value_cutoffs, config.value_horizon, config.random_state
    )
    encoder = FeatureEncoder().fit(
        [churn_fit.features, churn_cal.features, value_fit.features, value_val.features]
    )

    def fit(model, examples: Examples, held_out: Examples, target: str):
        return model.fit(
            encoder.transform(examples.features),
            examples.labels[target],
            encoder.transform(held_out.features),
            held_out.labels[target],
            encoder.feature_names_,
        )

    churn = ChurnModel(
        config.n_estimators,
        config.churn_learning_rate,
        config.max_depth,
        config.random_state,
        tolerance=config.loss_tolerance,
    )
    value = ValueModel(
        config.n_estimators,
        config.value_learning_rate,
        config.max_depth,
        random_state=config.random_state,
        tolerance=config.loss_tolerance,
    )
    churn = fit(churn, churn_fit, churn_cal, "churned")
    value = fit(value, value_fit, value_val, "future_spend")
    return Fitted(encoder, churn, value)


def active_mask(features: pd.DataFrame, horizon: int, horizons: float) -> np.ndarray:
    """Customers still plausibly active at the cutoff: a purchase within `horizons` x the
    churn horizon days before it (recency below that many days)."""
    recency = features["recency_days"].to_numpy("float64", na_value=np.nan)
    return np.nan_to_num(recency, nan=np.inf) < horizons * horizon


@dataclass
class Evaluation:
    """Out-of-time examples at the evaluation cutoffs, with the model's and the baseline's
    scores (for metrics, plots and the champion comparison)."""

    churn: Examples
    value: Examples
    active: np.ndarray
    churn_scores: dict[str, np.ndarray]
    value_scores: dict[str, np.ndarray]

    def metrics(self) -> dict[str, float]:
        """Churn first on active customers (`churn_*`), then on all (`churn_all_*`); value;
        the same for the baseline under `baseline_`."""
        y = self.churn.labels["churned"].to_numpy()
        spend = self.value.labels["future_spend"].to_numpy()
        out: dict[str, float] = {}
        for who, prefix in (("model", ""), ("BTYD", "baseline_")):
            p = self.churn_scores[who]
            for k, v in churn_metrics(y[self.active], p[self.active]).items():
                out[f"{prefix}churn_{k}"] = v
            for k, v in churn_metrics(y, p).items():
                out[f"{prefix}churn_all_{k}"] = v
            for k, v in value_metrics(spend, self.value_scores[who]).items():
                out[f"{prefix}value_{k}"] = v
        out["eval_customers_churn"] = float(self.active.sum())
        out["eval_customers_churn_all"] = float(len(y))
        out["eval_customers_value"] = float(len(spend))
        return out


def evaluate(fitted: Fitted, cache: FeatureCache, plan, config: TrainConfig) -> Evaluation:
    """The evaluation models and the baseline, scored at the evaluation cutoffs and compared
    with what happened next."""
    churn = cache.examples([plan.churn.evaluation], plan.churn.horizon)
    value = cache.examples([plan.value.evaluation], plan.value.horizon)
    return Evaluation(
        churn=churn,
        value=value,
        active=active_mask(churn.features, plan.churn.horizon, config.active_horizons),
        churn_scores={
            "model": fitted.churn.predict_proba(fitted.encoder.transform(churn.features)),
            "BTYD": churn.features["btyd_p_churn"].to_numpy("float64"),
        },
        value_scores={
            "model": fitted.value.predict(fitted.encoder.transform(value.features)),
            "BTYD": value.features["btyd_expected_value"].to_numpy("float64"),
        },
    )
