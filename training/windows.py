"""The cutoff plan: which days the training examples and the out-of-time evaluation come from.

For a model with horizon h, E = as_of - h is its evaluation cutoff: features at E, labels in
(E, as_of]. Its evaluation model trains on cutoffs whose label windows end by E, i.e. at
E - h - k x step; the final model (the one that ships) uses the same recipe moved forward by h,
at as_of - h - k x step. The most recent training cutoff decides when to stop adding trees and
calibrates; with a single cutoff, a seeded quarter of its customers does.

History needed: 2 x the longest horizon + 30 days (the evaluation window, one training window,
and a month before the earliest cutoff). With less than the preferred amount, a model uses fewer
cutoffs first, then a shorter warm-up before the earliest one; the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.schema import DataError
from features.validation import DAY
from training.config import TrainConfig

MIN_WARMUP = 30
CHURN_HORIZONS = (90, 60, 28, 14, 7)  # chosen from, longest first, when not given
VALUE_HORIZONS = (365, 180, 90, 60, 28, 14, 7)


def needed_days(horizon: int) -> int:
    return 2 * horizon + MIN_WARMUP


def longest_horizon(history_days: int) -> int:
    return (history_days - MIN_WARMUP) // 2


def choose_horizons(history_days: int, config: TrainConfig) -> tuple[int, int, list[str]]:
    """(churn horizon, value horizon, notices): the given ones, checked, or the longest of the
    usual ones that the history supports."""
    notes = []
    chosen = {}
    for name, given, candidates in (
        ("churn", config.churn_horizon, CHURN_HORIZONS),
        ("value", config.value_horizon, VALUE_HORIZONS),
    ):
        if given is not None:
            if needed_days(given) > history_days:
                raise DataError(_too_short(history_days, f"a {name} horizon of {given} days"))
            chosen[name] = given
            continue
        fitting = [h for h in candidates if needed_days(h) <= history_days]
        if not fitting:
            raise DataError(_too_short(history_days, f"the shortest {name} horizon, 7 days,"))
        chosen[name] = fitting[0]
        if fitting[0] != candidates[0]:
            notes.append(
                f"{name} horizon {fitting[0]} days, chosen from {history_days} days of history "
                f"({candidates[0]} days needs {needed_days(candidates[0])}); "
                f"--{name}-horizon sets it"
            )
    return chosen["churn"], chosen["value"], notes


def _too_short(history_days: int, what: str) -> str:
    longest = longest_horizon(history_days)
    supports = (
        f"the longest horizon it supports is {longest} days"
        if longest >= 1
        else "it supports no horizon"
    )
    return (
        f"not enough history to train: {what} needs 2 x the horizon + {MIN_WARMUP} days, the "
        f"data has {history_days} days before as_of; {supports}. Load more history or pass a "
        "shorter --churn-horizon/--value-horizon."
    )


@dataclass(frozen=True)
class Windows:
    """The days one model's examples come from (cutoffs most recent first)."""

    horizon: int
    evaluation: pd.Timestamp
    eval_training: tuple[pd.Timestamp, ...]
    final_training: tuple[pd.Timestamp, ...]
    warmup_days: int  # history before the earliest evaluation-model cutoff

    @property
    def n_cutoffs(self) -> int:
        return len(self.eval_training)


@dataclass(frozen=True)
class Plan:
    as_of: pd.Timestamp
    first_day: pd.Timestamp
    churn: Windows
    value: Windows
    notes: tuple[str, ...]

    @property
    def history_days(self) -> int:
        return (self.as_of - self.first_day).days

    @property
    def earliest_cutoff(self) -> pd.Timestamp:
        return min(self.churn.eval_training[-1], self.value.eval_training[-1])

    def to_params(self) -> dict[str, str]:
        return {
            "history_days": str(self.history_days),
            "churn_horizon": str(self.churn.horizon),
            "value_horizon": str(self.value.horizon),
            "churn_cutoffs": str(self.churn.n_cutoffs),
            "value_cutoffs": str(self.value.n_cutoffs),
            "churn_warmup_days": str(self.churn.warmup_days),
            "value_warmup_days": str(self.value.warmup_days),
        }


def _windows(as_of: pd.Timestamp, history_days: int, horizon: int, config) -> tuple:
    """Windows for one model and, if it had to settle for less, a notice saying why."""
    room = history_days - 2 * horizon  # days before the latest evaluation-model cutoff
    step = config.cutoff_step
    wanted = config.warmup_days + (config.n_cutoffs - 1) * step
    if room >= wanted:
        n, warmup = config.n_cutoffs, room - (config.n_cutoffs - 1) * step
    elif room >= config.warmup_days:  # fewer cutoffs, full warm-up
        n = 1 + (room - config.warmup_days) // step
        warmup = room - (n - 1) * step
    else:  # one cutoff, shorter warm-up
        n, warmup = 1, room
    evaluation = as_of - DAY * horizon
    windows = Windows(
        horizon=horizon,
        evaluation=evaluation,
        eval_training=tuple(evaluation - DAY * (horizon + k * step) for k in range(n)),
        final_training=tuple(as_of - DAY * (horizon + k * step) for k in range(n)),
        warmup_days=warmup,
    )
    note = None
    if n < config.n_cutoffs or warmup < config.warmup_days:
        note = (
            f"{n} training cutoff(s) {step} days apart with {warmup} days of history before the "
            f"earliest (wanted {config.n_cutoffs} and {config.warmup_days}: {history_days} days "
            f"of history, {2 * horizon} of them for the out-of-time evaluation)"
        )
    return windows, note


def plan_windows(transactions: pd.DataFrame, as_of: pd.Timestamp, config: TrainConfig) -> Plan:
    """The plan for this data, or a DataError naming what the history cannot support."""
    first_day = transactions["timestamp"].min().floor("D")
    history_days = (as_of - first_day).days
    churn_h, value_h, notes = choose_horizons(history_days, config)
    churn, churn_note = _windows(as_of, history_days, churn_h, config)
    value, value_note = _windows(as_of, history_days, value_h, config)
    for name, note in (("churn", churn_note), ("value", value_note)):
        if note:
            notes.append(f"{name} model: {note}")
    plan = Plan(as_of, first_day, churn, value, tuple(notes))
    earliest = plan.earliest_cutoff
    known = transactions.loc[transactions["timestamp"] < earliest + DAY, "customer_id"].nunique()
    if known < config.min_customers:
        raise DataError(
            f"not enough customers to train: need at least {config.min_customers} customers "
            f"with history by the first training cutoff {earliest.date()}, found {known:,}"
        )
    return plan
