"""The champion gate: does a new version earn the `champion` alias?"""

from __future__ import annotations

import pandas as pd

from models.bundle import Bundle
from training.config import TrainConfig
from training.evaluate import churn_metrics, value_metrics


def beats_baseline(metrics: dict[str, float]) -> bool:
    return (
        metrics["churn_auc"] > metrics["baseline_churn_auc"]
        and metrics["value_normalized_gini"] > metrics["baseline_value_normalized_gini"]
    )


def compare_with_champion(
    result, champion: Bundle | None, config: TrainConfig
) -> tuple[bool, str, dict[str, float]]:
    """(promote, reason, the champion's metrics). Churn is judged on active customers.

    Without a champion the first version is promoted (with a warning when it does not beat
    the BTYD baseline): scoring needs a champion. Otherwise the challenger must beat the
    baseline (churn AUC and value Gini) and do at least as well as the champion on the mean of
    the two, with neither dropping by more than the tolerance. The champion is re-scored on
    the same out-of-time examples when those are out of time for it too (its training as_of is
    not later than the evaluation cutoffs) and it predicts the same horizons; otherwise its own
    recorded out-of-time metrics are used."""
    m = result.metrics
    auc, gini = m["churn_auc"], m["value_normalized_gini"]
    versus = (
        f"churn AUC on active customers {auc:.3f} vs {m['baseline_churn_auc']:.3f}, value "
        f"Gini {gini:.3f} vs {m['baseline_value_normalized_gini']:.3f}"
    )
    if champion is None:
        if beats_baseline(m):
            return True, "no champion yet", {}
        return True, f"no champion yet; WARNING: does not beat the BTYD baseline ({versus})", {}
    if not beats_baseline(m):
        return False, f"does not beat the BTYD baseline ({versus})", {}
    plan, evaluation = result.plan, result.evaluation
    same_horizons = (champion.churn_horizon, champion.value_horizon) == (
        plan.churn.horizon,
        plan.value.horizon,
    )
    champ_as_of = pd.Timestamp(champion.manifest["as_of"], tz="UTC")
    earliest = min(plan.churn.evaluation, plan.value.evaluation)
    if same_horizons and champ_as_of <= earliest:
        active = evaluation.active
        churn_features = evaluation.churn.features[active]
        c_auc = churn_metrics(
            evaluation.churn.labels["churned"].to_numpy()[active],
            champion.score(churn_features, with_reasons=False)["churn_probability"],
        )["auc"]
        c_gini = value_metrics(
            evaluation.value.labels["future_spend"],
            champion.score(evaluation.value.features, with_reasons=False)["predicted_value"],
        )["normalized_gini"]
        how = "re-scored on this evaluation"
    else:
        c_auc = champion.manifest["metrics"]["churn_auc"]
        c_gini = champion.manifest["metrics"]["value_normalized_gini"]
        why = "its training data overlaps this evaluation" if same_horizons else "other horizons"
        how = f"its recorded out-of-time metrics ({why})"
    champ = {"champion_churn_auc": c_auc, "champion_value_normalized_gini": c_gini}
    tol = config.promotion_tolerance
    better = (auc + gini) / 2 > (c_auc + c_gini) / 2
    no_big_drop = auc >= c_auc - tol and gini >= c_gini - tol
    verdict = (
        f"champion {champion.version} ({how}): AUC {c_auc:.3f}, Gini {c_gini:.3f}; "
        f"challenger: AUC {auc:.3f}, Gini {gini:.3f}"
    )
    return better and no_big_drop, verdict, champ
