"""The one configuration object of a training run, passed explicitly; readable from TOML."""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from features.schema import DataError


@dataclass(frozen=True)
class TrainConfig:
    # Horizons: None chooses them from the history available (see training.windows).
    churn_horizon: int | None = None  # days without a purchase that count as churn
    value_horizon: int | None = None  # days of future spend predicted
    n_cutoffs: int = 4  # rolling training cutoffs per model, at most (fewer on short histories)
    cutoff_step: int = 91  # days between training cutoffs: a year of seasons in 4 of them
    warmup_days: int = 90  # days of history wanted before the earliest cutoff (30 at least)
    min_customers: int = 200  # customers required at the earliest cutoff
    # Larger shops fit their models on a stratified sample of this many customers (recorded
    # in MLflow); personas, value quantiles and drift reference still cover every customer.
    max_customers: int = 250_000
    # Churn is judged on customers still plausibly active at the evaluation cutoff: a purchase
    # within this many churn horizons before it. Long-gone customers are easy to call churned.
    active_horizons: float = 2.0
    n_personas: int | None = None  # None: chosen in persona_k_range
    persona_k_range: tuple[int, int] = (2, 12)  # mixture components, chosen by BIC
    # A persona with fewer customers shows only its size in the catalog (logged to MLflow and
    # served by /personas): the averages of a handful of customers are their own data.
    min_persona_size: int = 50
    n_estimators: int = 300  # at most: early stopping on the latest cutoff picks the number
    churn_learning_rate: float = 0.1
    value_learning_rate: float = 0.1  # Tweedie overshoots at 0.3: lower Gini than the baseline
    max_depth: int = 4
    loss_tolerance: float = 0.005  # keep the fewest trees within this of the best loss
    stability_resamples: int = 3
    random_state: int = 0
    experiment: str = "clientela"
    model_name: str = "clientela"
    promotion_tolerance: float = 0.01  # largest drop in AUC or Gini a new champion may have

    def __post_init__(self):
        for name in ("churn_horizon", "value_horizon"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        positive = ("n_cutoffs", "cutoff_step", "min_customers", "max_customers")
        for name in (*positive, "n_estimators", "max_depth"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.warmup_days < 30:
            raise ValueError(f"warmup_days must be at least 30, got {self.warmup_days}")
        if self.max_customers < self.min_customers:
            raise ValueError(
                f"max_customers ({self.max_customers}) must be at least min_customers "
                f"({self.min_customers})"
            )
        low, high = self.persona_k_range
        if not 2 <= low <= high:
            raise ValueError(
                f"persona_k_range must be (low, high) with 2 <= low <= high, got "
                f"{self.persona_k_range}"
            )

    def with_horizons(self, churn: int, value: int) -> TrainConfig:
        return replace(self, churn_horizon=churn, value_horizon=value)

    def to_params(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_toml(cls, path: Path | str | None = None, **overrides) -> TrainConfig:
        """Fields from a TOML file (flat `key = value`, or under `[train]`), then `overrides`
        that are not None (the command line wins). Unknown keys and wrong types are refused by
        name."""
        return _from_toml(cls, "train", path, overrides)


@dataclass(frozen=True)
class MonitorConfig:
    """When `clientela monitor` recommends a retrain (exit code 3)."""

    # Realised churn AUC (active customers) this far below the AUC measured at training.
    max_auc_drop: float = 0.05
    # Realised AUC or value Gini this far below the BTYD baseline's on the same customers.
    max_behind_baseline: float = 0.02
    max_value_bias: float = 0.30  # |predicted total / actual total - 1|
    max_feature_psi: float = 0.25  # any model input: above 0.25 is a large shift
    max_prediction_psi: float = 0.25  # churn probability, predicted value, persona shares

    def __post_init__(self):
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"{f.name} must be positive, got {getattr(self, f.name)}")

    def to_params(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_toml(cls, path: Path | str | None = None, **overrides) -> MonitorConfig:
        """Thresholds from the `[monitor]` table of a TOML file (the training settings beside
        it are not read), then `overrides` that are not None."""
        return _from_toml(cls, "monitor", path, overrides)


def _from_toml(cls, section: str, path: Path | str | None, overrides: dict):
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"config file {path} is not valid TOML: {exc}") from None
        if section in data:
            values = data[section]
        elif section == "train" and "monitor" not in data:  # a flat file holds training settings
            values = data
        if not isinstance(values, dict):
            raise DataError(f"config file {path}: [{section}] must be a table")
    values = {**values, **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DataError(
            f"config {path or ''}: unknown setting(s) {unknown}; known: {sorted(known)}"
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        values[name] = _coerce(name, value, hints[name], path)
    try:
        return cls(**values)
    except ValueError as exc:
        raise DataError(f"config {path or ''}: {exc}") from None


def _coerce(name: str, value, hint, path):
    """A TOML value as the field's type: ints are fine where floats go, lists become tuples;
    anything else of the wrong type is refused with the field named."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if origin is tuple and isinstance(value, list | tuple):
            inner = typing.get_args(kind)
            fits = len(value) == len(inner) and all(
                isinstance(v, t) and not isinstance(v, bool)
                for v, t in zip(value, inner, strict=True)
            )
            if fits:
                return tuple(value)
        elif origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        elif origin in (int, str, bool) and type(value) is origin:
            return value
    raise DataError(f"config {path or ''}: {name} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
