"""The training job: rolling cutoffs, out-of-time evaluation against the BTYD baseline, final
refit on the most recent windows, the bundle, MLflow logging and promotion.

Windows (E = as_of - horizon is the evaluation cutoff of a model):
  evaluation models  train on cutoffs E - horizon - k*step   (labels end by E)
  evaluation         features at E, labels in (E, as_of]      (out of time)
  final models       train on cutoffs as_of - horizon - k*step (the same recipe, moved forward)
Each model fits on all but its latest training cutoff; the latest decides when to stop adding
trees (early stopping) and, for churn, calibrates the probabilities.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import silhouette_score

from features.customer import customer_features
from features.labels import labels
from features.load import Inputs
from features.schema import DataError
from features.validation import DAY
from models.boosted import ChurnModel, ValueModel
from models.btyd import BTYDBaseline
from models.bundle import Bundle
from models.encoding import FeatureEncoder
from models.persona import PersonaModel
from training import plots
from training.config import TrainConfig
from training.evaluate import churn_metrics, value_metrics

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    bundle: Bundle
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    plots_dir: Path | None = None
    eval_sets: dict = field(default_factory=dict)


class FeatureCache:
    """Features (+ BTYD outputs from a baseline fitted at the same cutoff) per cutoff day."""

    def __init__(self, inputs: Inputs, config: TrainConfig):
        self.inputs = inputs
        self.config = config
        self._cache: dict[pd.Timestamp, tuple[pd.DataFrame, BTYDBaseline]] = {}

    def at(self, cutoff: pd.Timestamp) -> tuple[pd.DataFrame, BTYDBaseline]:
        if cutoff not in self._cache:
            feats = customer_features(self.inputs.transactions, cutoff, self.inputs.customers)
            btyd = BTYDBaseline().fit(feats)
            horizons = (self.config.churn_horizon, self.config.value_horizon)
            self._cache[cutoff] = (btyd.add_to(feats, *horizons), btyd)
        return self._cache[cutoff]

    def examples(self, cutoffs, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        frames, targets = [], []
        for cutoff in cutoffs:
            feats, _ = self.at(cutoff)
            frames.append(feats)
            targets.append(labels(self.inputs.transactions, feats["customer_id"], cutoff, horizon))
        return pd.concat(frames, ignore_index=True), pd.concat(targets, ignore_index=True)


def check_eligibility(inputs: Inputs, config: TrainConfig) -> None:
    """Refuse up front, naming the requirement, when the data cannot support training."""
    tx = inputs.transactions
    first = tx["timestamp"].min().floor("D")
    span = (inputs.as_of - first).days + 1
    need = config.required_history_days()
    if span < need:
        raise DataError(
            f"not enough history to train: need at least {need} days (2 x the longest horizon "
            f"{max(config.churn_horizon, config.value_horizon)} + {config.n_cutoffs - 1} cutoff "
            f"steps of {config.cutoff_step} + {config.min_history} days before the first "
            f"cutoff), the data spans {span} days ({first.date()} to {inputs.as_of.date()}); "
            "shorten --value-horizon/--churn-horizon or load more history"
        )
    earliest = inputs.as_of - DAY * (need - config.min_history)
    known = tx.loc[tx["timestamp"] < earliest + DAY, "customer_id"].nunique()
    if known < config.min_customers:
        raise DataError(
            f"not enough customers to train: need at least {config.min_customers} customers "
            f"with history by the first training cutoff {earliest.date()}, found {known:,}"
        )


def _cutoffs(end: pd.Timestamp, config: TrainConfig, horizon: int) -> list[pd.Timestamp]:
    """Training cutoffs whose label windows end by `end`, most recent first."""
    latest = end - DAY * horizon
    return [latest - DAY * (k * config.cutoff_step) for k in range(config.n_cutoffs)]


def fit_churn(cache, cutoffs, encoder, config) -> ChurnModel:
    X_fit, y_fit = cache.examples(cutoffs[1:], config.churn_horizon)
    X_cal, y_cal = cache.examples(cutoffs[:1], config.churn_horizon)
    return ChurnModel(
        config.n_estimators,
        config.churn_learning_rate,
        config.max_depth,
        config.random_state,
        tolerance=config.loss_tolerance,
    ).fit(
        encoder.transform(X_fit),
        y_fit["churned"],
        encoder.transform(X_cal),
        y_cal["churned"],
        encoder.feature_names_,
    )


def fit_value(cache, cutoffs, encoder, config) -> ValueModel:
    X, y = cache.examples(cutoffs[1:], config.value_horizon)
    X_val, y_val = cache.examples(cutoffs[:1], config.value_horizon)
    return ValueModel(
        config.n_estimators,
        config.value_learning_rate,
        config.max_depth,
        random_state=config.random_state,
        tolerance=config.loss_tolerance,
    ).fit(
        encoder.transform(X),
        y["future_spend"],
        encoder.transform(X_val),
        y_val["future_spend"],
        encoder.feature_names_,
    )


def persona_stability(
    model: PersonaModel, features: pd.DataFrame, base: np.ndarray, config: TrainConfig
) -> float:
    """Share of customers keeping their persona id (`base`: this model's assignment) when
    personas are refitted on bootstrap resamples (ids matched to this model, as in a retrain)."""
    rng = np.random.default_rng(config.random_state)
    same = []
    for i in range(config.stability_resamples):
        sample = features.iloc[rng.integers(0, len(features), len(features))]
        # Same number of personas: this measures whether the assignment is stable.
        refit = PersonaModel(len(model.ids_), random_state=config.random_state + i + 1)
        refit = refit.fit(sample, previous=model)
        same.append(float(np.mean(refit.predict(features) == base)))
    return float(np.mean(same)) if same else float("nan")


def train(
    inputs: Inputs,
    config: TrainConfig,
    previous: Bundle | None = None,
    progress: Progress = lambda _msg: None,
) -> TrainResult:
    """Fit, evaluate and assemble a bundle. Pure of MLflow: logging happens at the edge."""
    check_eligibility(inputs, config)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    cache = FeatureCache(inputs, config)
    as_of = inputs.as_of
    churn_eval_at = as_of - DAY * config.churn_horizon
    value_eval_at = as_of - DAY * config.value_horizon

    progress("features at rolling cutoffs")
    final_feats, final_btyd = cache.at(as_of)
    encoder = FeatureEncoder().fit(final_feats)
    lap("features")

    progress("churn and value models for out-of-time evaluation")
    eval_churn = fit_churn(
        cache, _cutoffs(churn_eval_at, config, config.churn_horizon), encoder, config
    )
    eval_value = fit_value(
        cache, _cutoffs(value_eval_at, config, config.value_horizon), encoder, config
    )
    lap("fit (evaluation models)")

    progress("out-of-time evaluation against the BTYD baseline")
    Xc, yc = cache.examples([churn_eval_at], config.churn_horizon)
    Xv, yv = cache.examples([value_eval_at], config.value_horizon)
    churn_model_p = eval_churn.predict_proba(encoder.transform(Xc))
    value_model_v = eval_value.predict(encoder.transform(Xv))
    metrics: dict[str, float] = {}
    for prefix, scores in (("churn", churn_model_p), ("baseline_churn", Xc["btyd_p_churn"])):
        for k, v in churn_metrics(yc["churned"], scores).items():
            metrics[f"{prefix}_{k}"] = v
    for prefix, scores in (("value", value_model_v), ("baseline_value", Xv["btyd_expected_value"])):
        for k, v in value_metrics(yv["future_spend"], scores).items():
            metrics[f"{prefix}_{k}"] = v
    metrics["eval_customers_churn"] = float(len(Xc))
    metrics["eval_customers_value"] = float(len(Xv))
    lap("evaluation")

    progress("personas")
    persona = PersonaModel(
        config.n_personas, config.persona_k_range, random_state=config.random_state
    ).fit(final_feats, previous=previous.persona if previous else None)
    assigned = persona.predict(final_feats)
    sample = np.random.default_rng(0).choice(len(final_feats), min(5000, len(final_feats)), False)
    metrics["persona_count"] = float(len(persona.ids_))
    metrics["persona_silhouette"] = float(
        silhouette_score(persona.matrix(final_feats.iloc[sample]), assigned[sample])
    )
    metrics["persona_stability"] = persona_stability(persona, final_feats, assigned, config)
    lap("personas")

    progress("final churn and value models on the most recent windows")
    churn = fit_churn(cache, _cutoffs(as_of, config, config.churn_horizon), encoder, config)
    value = fit_value(cache, _cutoffs(as_of, config, config.value_horizon), encoder, config)
    lap("fit (final models)")

    progress("bundle")
    bundle = Bundle(encoder, persona, churn, value, final_btyd)
    predicted_value = value.predict(encoder.transform(final_feats))
    bundle.manifest = {
        "as_of": str(as_of.date()),
        "churn_horizon_days": config.churn_horizon,
        "value_horizon_days": config.value_horizon,
        "training_config": config.to_params(),
        "metrics": metrics,
        "value_quantiles": np.quantile(predicted_value, np.linspace(0, 1, 101)).tolist(),
        "persona_catalog": persona_catalog(
            final_feats, assigned, predicted_value, persona, cache, churn_eval_at, config
        ).to_dict(orient="records"),
        "baseline": final_btyd.to_dict(),
    }
    lap("bundle")
    result = TrainResult(bundle, metrics, timings)
    result.eval_sets = {
        "churn_y": yc["churned"].to_numpy(),
        "churn_scores": {"model": churn_model_p, "BTYD": Xc["btyd_p_churn"].to_numpy()},
        "value_y": yv["future_spend"].to_numpy(),
        "value_scores": {"model": value_model_v, "BTYD": Xv["btyd_expected_value"].to_numpy()},
        "churn_features": Xc,
        "value_features": Xv,
        "importance": {"churn": churn.importance(), "value": value.importance()},
        "earliest_eval_cutoff": min(churn_eval_at, value_eval_at),
    }
    return result


def persona_catalog(
    feats, assigned, predicted_value, persona, cache, churn_eval_at, config
) -> pd.DataFrame:
    """Profile per persona: size, revenue share, typical behaviour, demographics, observed churn
    rate (personas applied at the churn evaluation cutoff) and mean predicted value."""
    frame = feats.assign(persona_id=assigned, predicted_value=predicted_value)
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
            "mean_predicted_value": grouped["predicted_value"].mean(),
        }
    )
    for col in ("age", "income"):
        if col in frame.columns:
            catalog[f"mean_{col}"] = grouped[col].mean()
    if "customer_type" in frame.columns:
        catalog["b2b_share"] = grouped["customer_type"].apply(lambda s: float((s == "B2B").mean()))
    past, _ = cache.at(churn_eval_at)
    churned = labels(
        cache.inputs.transactions, past["customer_id"], churn_eval_at, config.churn_horizon
    )
    past_persona = persona.predict(past)
    catalog["churn_rate"] = (
        pd.Series(churned["churned"].to_numpy()).groupby(past_persona).mean().reindex(catalog.index)
    )
    catalog = suppress_small_personas(catalog.reset_index(), config.min_persona_size)
    catalog.insert(1, "persona_name", persona.name_of(catalog["persona_id"].to_numpy()))
    return catalog.round(4).astype(object).where(catalog.notna(), None)


def suppress_small_personas(catalog: pd.DataFrame, min_size: int) -> pd.DataFrame:
    """Blank every per-persona aggregate (demographics, behaviour, churn, value) of personas
    with fewer than `min_size` customers; their id, size and share stay."""
    stats = [c for c in catalog.columns if c not in ("persona_id", "size", "share")]
    out = catalog.astype({c: "float64" for c in stats})
    out.loc[out["size"] < min_size, stats] = np.nan
    return out


def compare_with_champion(
    result: TrainResult, champion: Bundle | None, config: TrainConfig
) -> tuple[bool, str, dict[str, float]]:
    """Decide promotion. The challenger must beat the BTYD baseline (churn AUC and value Gini);
    then, if there is a champion, it must do at least as well on average over AUC and Gini
    with neither dropping more than the tolerance. The champion is re-scored on the same
    out-of-time sets when those are out of time for it too (its training as_of is not later
    than the evaluation cutoffs); otherwise its own recorded out-of-time metrics are used."""
    m = result.metrics
    auc, gini = m["churn_auc"], m["value_normalized_gini"]
    if auc <= m["baseline_churn_auc"] or gini <= m["baseline_value_normalized_gini"]:
        return (
            False,
            f"does not beat the BTYD baseline (churn AUC {auc:.3f} vs "
            f"{m['baseline_churn_auc']:.3f}, value Gini {gini:.3f} vs "
            f"{m['baseline_value_normalized_gini']:.3f})",
            {},
        )
    if champion is None:
        return True, "no champion yet", {}
    sets = result.eval_sets
    champ_as_of = pd.Timestamp(champion.manifest["as_of"], tz="UTC")
    if champ_as_of <= sets["earliest_eval_cutoff"]:
        c_auc = churn_metrics(
            sets["churn_y"],
            champion.score(sets["churn_features"], with_reasons=False)["churn_probability"],
        )["auc"]
        c_gini = value_metrics(
            sets["value_y"],
            champion.score(sets["value_features"], with_reasons=False)["predicted_value"],
        )["normalized_gini"]
        how = "re-scored on this evaluation"
    else:
        c_auc = champion.manifest["metrics"]["churn_auc"]
        c_gini = champion.manifest["metrics"]["value_normalized_gini"]
        how = "its recorded out-of-time metrics (its training data overlaps this evaluation)"
    champ = {"champion_churn_auc": c_auc, "champion_value_normalized_gini": c_gini}
    tol = config.promotion_tolerance
    better = (auc + gini) / 2 > (c_auc + c_gini) / 2
    no_big_drop = auc >= c_auc - tol and gini >= c_gini - tol
    verdict = (
        f"champion {champion.version} ({how}): AUC {c_auc:.3f}, Gini {c_gini:.3f}; "
        f"challenger: AUC {auc:.3f}, Gini {gini:.3f}"
    )
    return better and no_big_drop, verdict, champ


def data_summary(inputs: Inputs) -> dict:
    """Digest and shape of the training data: no ids, no attribute values."""
    tx = inputs.transactions
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(tx, index=False).to_numpy().tobytes())
    summary = {
        "transactions_sha256": digest.hexdigest(),
        "transactions_rows": len(tx),
        "customers_seen": int(tx["customer_id"].nunique()),
        "first_day": str(tx["timestamp"].min().date()),
        "last_day": str(tx["timestamp"].max().date()),
        "as_of": str(inputs.as_of.date()),
        "transaction_columns": list(tx.columns),
    }
    if inputs.customers is not None:
        summary["customer_rows"] = len(inputs.customers)
        summary["customer_columns"] = list(inputs.customers.columns)
    summary["quality"] = [
        {"source_kind": i, "rows_read": r.rows_read, "rows_kept": r.rows_kept, "dropped": r.dropped}
        for i, r in zip(("transactions", "customers"), inputs.reports, strict=False)
    ]
    return summary


def write_plots(result: TrainResult, directory: Path | None = None) -> Path:
    directory = Path(directory or tempfile.mkdtemp(prefix="clientela-plots-"))
    directory.mkdir(parents=True, exist_ok=True)
    sets = result.eval_sets
    catalog = pd.DataFrame(result.bundle.manifest["persona_catalog"])
    plots.persona_profiles(catalog, directory / "persona_profiles.png")
    plots.churn_curves(
        sets["churn_y"], sets["churn_scores"], directory / "churn_roc_calibration.png"
    )
    plots.lift_and_value_deciles(
        sets["churn_y"],
        sets["churn_scores"],
        sets["value_y"],
        sets["value_scores"],
        directory / "lift_and_value_deciles.png",
    )
    plots.feature_importance(sets["importance"], directory / "feature_importance.png")
    result.plots_dir = directory
    return directory
