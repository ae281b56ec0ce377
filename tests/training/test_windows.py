"""The cutoff plan: horizons chosen from the history, fewer cutoffs and a shorter warm-up on
short histories, exact days."""

import pandas as pd
import pytest

from features.schema import DataError
from training.config import TrainConfig
from training.windows import choose_horizons, plan_windows

DAY = pd.Timedelta(days=1)


def history(first: str, as_of: str, customers: int = 300) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Each customer buys on the first day: enough to be known at every cutoff."""
    tx = pd.DataFrame(
        {
            "customer_id": [str(i) for i in range(customers)],
            "timestamp": pd.Timestamp(first, tz="UTC"),
            "amount": 10.0,
        }
    )
    return tx, pd.Timestamp(as_of, tz="UTC")


@pytest.mark.parametrize(
    ("days", "churn", "value"),
    [(1200, 90, 365), (760, 90, 365), (759, 90, 180), (282, 90, 90), (210, 90, 90),
     (209, 60, 60), (89, 28, 28), (44, 7, 7)],
)  # fmt: skip
def test_horizons_are_the_longest_usual_ones_the_history_supports(days, churn, value):
    assert choose_horizons(days, TrainConfig())[:2] == (churn, value)


def test_given_horizons_are_checked_and_the_refusal_names_the_longest_possible():
    assert choose_horizons(282, TrainConfig(churn_horizon=30))[:2] == (30, 90)
    with pytest.raises(DataError, match=r"value horizon of 365 days .* 282 days before as_of; "
                       r"the longest horizon it supports is 126 days"):  # fmt: skip
        choose_horizons(282, TrainConfig(value_horizon=365))
    with pytest.raises(DataError, match="it supports no horizon"):
        choose_horizons(31, TrainConfig())


def test_full_plan_on_a_long_history():
    tx, as_of = history("2023-01-01", "2025-12-31")
    plan = plan_windows(tx, as_of, TrainConfig(churn_horizon=90, value_horizon=365))
    assert plan.churn.evaluation == as_of - 90 * DAY
    assert plan.churn.eval_training == tuple(as_of - DAY * (180 + 91 * k) for k in range(4))
    assert plan.churn.final_training == tuple(as_of - DAY * (90 + 91 * k) for k in range(4))
    assert plan.value.eval_training[0] == as_of - 730 * DAY
    assert plan.value.warmup_days == (as_of - pd.Timestamp("2023-01-01", tz="UTC")).days - 730 - 273
    assert plan.notes == ()  # horizons given, every cutoff and the full warm-up


def test_short_history_uses_fewer_cutoffs_then_a_shorter_warmup_and_says_so():
    tx, as_of = history("2010-12-01", "2011-09-09")  # 282 days
    plan = plan_windows(tx, as_of, TrainConfig(churn_horizon=90, value_horizon=90))
    assert plan.churn.eval_training == (as_of - 180 * DAY,)
    assert plan.churn.warmup_days == 102
    assert plan.churn.final_training == (as_of - 90 * DAY,)
    assert any("1 training cutoff(s)" in n and "wanted 4 and 90" in n for n in plan.notes)
    tx, as_of = history("2025-09-01", "2025-11-30")  # 90 days: below the wanted warm-up
    plan = plan_windows(tx, as_of, TrainConfig(churn_horizon=28, value_horizon=28))
    assert plan.churn.n_cutoffs == 1 and plan.churn.warmup_days == 90 - 56


def test_too_few_customers_at_the_earliest_cutoff():
    tx, as_of = history("2023-01-01", "2025-12-31", customers=50)
    with pytest.raises(DataError, match="need at least 200 customers .* found 50"):
        plan_windows(tx, as_of, TrainConfig())


def test_the_held_out_cutoff_never_overlaps_the_evaluation_window():
    tx, as_of = history("2023-01-01", "2025-12-31")
    plan = plan_windows(tx, as_of, TrainConfig())
    for windows in (plan.churn, plan.value):
        latest_label_day = windows.eval_training[0] + windows.horizon * DAY
        assert latest_label_day <= windows.evaluation
