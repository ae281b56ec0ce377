"""The one configuration object of a training run, passed explicitly."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainConfig:
    churn_horizon: int = 90  # days without a purchase that count as churn
    value_horizon: int = 365  # days of future spend predicted
    n_cutoffs: int = 4  # rolling training cutoffs per model (churn: the latest calibrates)
    cutoff_step: int = 30  # days between training cutoffs
    min_history: int = 90  # days of data required before the earliest cutoff
    min_customers: int = 200  # customers required at the earliest cutoff
    n_personas: int | None = None  # None: chosen in persona_k_range by silhouette
    persona_k_range: tuple[int, int] = (3, 8)
    # A persona with fewer customers shows only its size in the catalog (logged to MLflow and
    # served by /personas): the averages of a handful of customers are their own data.
    min_persona_size: int = 50
    n_estimators: int = 300  # at most: early stopping on the latest cutoff picks the number
    churn_learning_rate: float = 0.3  # few trees: each one costs scoring time (contributions)
    value_learning_rate: float = 0.1  # Tweedie overshoots at 0.3: lower Gini than the baseline
    max_depth: int = 5
    loss_tolerance: float = 0.005  # keep the fewest trees within this of the best loss
    stability_resamples: int = 3
    random_state: int = 0
    experiment: str = "clientela"
    model_name: str = "clientela"
    promotion_tolerance: float = 0.01  # largest drop in AUC or Gini a new champion may have

    def __post_init__(self):
        for name in ("churn_horizon", "value_horizon", "n_cutoffs", "cutoff_step"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_cutoffs < 2:
            raise ValueError("n_cutoffs must be at least 2 (one cutoff calibrates churn)")

    def required_history_days(self) -> int:
        """Days of data needed: evaluation window + training window + history before them."""
        longest = max(self.churn_horizon, self.value_horizon)
        return 2 * longest + (self.n_cutoffs - 1) * self.cutoff_step + self.min_history

    def to_params(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}
