"""Personas in a training run: fitting (ids matched to the previous champion's), stability on
bootstrap refits, and the catalog that marketing reads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.persona import PersonaModel, distinctions
from training.config import TrainConfig


def fit_personas(
    features: pd.DataFrame, config: TrainConfig, previous: PersonaModel | None
) -> tuple[PersonaModel, np.ndarray, dict[str, float]]:
    """(model, assignment of `features`, metrics)."""
    model = PersonaModel(
        config.n_personas, config.persona_k_range, random_state=config.random_state
    ).fit(features, previous=previous)
    posteriors = model.posteriors(features)
    assigned = model.ids_[posteriors.argmax(axis=1)]
    metrics = {
        "persona_count": float(len(model.ids_)),
        "persona_components": float(model.classes_.n_classes),
        # How clearly customers belong: the mean probability of their own persona.
        "persona_certainty": float(posteriors.max(axis=1).mean()),
        "persona_stability": stability(model, features, assigned, config),
    }
    return model, assigned, metrics


def stability(
    model: PersonaModel, features: pd.DataFrame, base: np.ndarray, config: TrainConfig
) -> float:
    """Share of customers keeping their persona id (`base`: this model's assignment) when
    personas are refitted on bootstrap resamples (ids matched to this model, as in a retrain)."""
    rng = np.random.default_rng(config.random_state)
    same = []
    for i in range(config.stability_resamples):
        sample = features.iloc[rng.integers(0, len(features), len(features))]
        # Same number of components: this measures whether the assignment is stable.
        k = model.classes_.n_classes
        refit = PersonaModel(k_range=(k, k), random_state=config.random_state + i + 1)
        refit = refit.fit(sample, previous=model)
        same.append(float(np.mean(refit.predict(features) == base)))
    return float(np.mean(same)) if same else float("nan")


def persona_catalog(
    features: pd.DataFrame,
    assigned: np.ndarray,
    churn_probability: np.ndarray,
    predicted_value: np.ndarray,
    persona: PersonaModel,
    evaluation,
    min_size: int,
) -> pd.DataFrame:
    """Profile per persona: size, revenue share, typical behaviour, demographics, predicted
    churn, value and value at risk (churn probability x predicted value) now; and, from the
    out-of-time evaluation (personas applied at the evaluation cutoffs), the observed churn
    rate and the value model's aggregate bias."""
    frame = features.assign(
        persona_id=assigned,
        churn_probability=churn_probability,
        predicted_value=predicted_value,
        value_at_risk=churn_probability * predicted_value,
    )
    spend = frame["spend_365d"].clip(lower=0)
    grouped = frame.groupby("persona_id")
    catalog = pd.DataFrame(
        {
            "size": grouped.size(),
            "share": grouped.size() / len(frame),
            "revenue_share": spend.groupby(frame["persona_id"]).sum() / max(spend.sum(), 1e-9),
            "median_recency_days": grouped["recency_days"].median(),
            "median_frequency": grouped["frequency"].median(),
            "median_total_spend": grouped["total_spend"].median(),
            "mean_churn_probability": grouped["churn_probability"].mean(),
            "mean_predicted_value": grouped["predicted_value"].mean(),
            "value_at_risk": grouped["value_at_risk"].sum(),
        }
    )
    for col in ("age", "income"):
        if col in frame.columns:
            catalog[f"mean_{col}"] = grouped[col].mean()
    if "customer_type" in frame.columns:
        catalog["b2b_share"] = grouped["customer_type"].apply(lambda s: float((s == "B2B").mean()))
    past = persona.predict(evaluation.churn.features)
    churned = pd.Series(evaluation.churn.labels["churned"].to_numpy())
    catalog["churn_rate"] = churned.groupby(past).mean().reindex(catalog.index)
    past_value = (
        pd.DataFrame(
            {
                "persona_id": persona.predict(evaluation.value.features),
                "predicted": evaluation.value_scores["model"],
                "actual": evaluation.value.labels["future_spend"].clip(lower=0).to_numpy(),
            }
        )
        .groupby("persona_id")[["predicted", "actual"]]
        .sum()
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = past_value["predicted"] / past_value["actual"] - 1
    catalog["value_bias"] = bias.replace([np.inf, -np.inf], np.nan).reindex(catalog.index)
    catalog["sets_apart"] = pd.Series(distinctions(features, assigned)).reindex(catalog.index)
    catalog = suppress_small_personas(catalog.reset_index(), min_size)
    catalog.insert(1, "persona_name", persona.name_of(catalog["persona_id"].to_numpy()))
    return catalog.round(4).astype(object).where(catalog.notna(), None)


def suppress_small_personas(catalog: pd.DataFrame, min_size: int) -> pd.DataFrame:
    """Blank every per-persona aggregate (demographics, behaviour, churn, value) of personas
    with fewer than `min_size` customers; their id, size and share stay."""
    stats = [c for c in catalog.columns if c not in ("persona_id", "size", "share")]
    text = [c for c in stats if not pd.api.types.is_numeric_dtype(catalog[c])]
    out = catalog.astype({c: "float64" for c in stats if c not in text})
    small = out["size"] < min_size
    out.loc[small, [c for c in stats if c not in text]] = np.nan
    for col in text:
        out[col] = out[col].where(~small, None)
    return out
