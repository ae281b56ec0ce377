import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features
from features.labels import labels
from features.synthetic import generate
from features.validation import validate_transactions

AS_OF = "2024-03-31"


def table(rows):
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"], dtype="str")
    clean, _, _ = validate_transactions(frame, as_of="2030-01-01")
    return clean


HAND = table(
    [
        # A: purchases on Jan 1, Jan 11 (twice that day), Mar 21; a refund on Mar 22.
        ("A", "2024-01-01 09:00", "100"),
        ("A", "2024-01-11 09:00", "50"),
        ("A", "2024-01-11 18:00", "30"),
        ("A", "2024-03-21 12:00", "20"),
        ("A", "2024-03-22 12:00", "-10"),
        # B: one purchase on as_of day itself (counts), one the day after (never counts).
        ("B", "2024-03-31 23:59", "40"),
        ("B", "2024-04-01 00:00", "999"),
        # C: refunds only.
        ("C", "2024-02-01", "-15"),
        # D: a repeat buyer gone quiet.
        ("D", "2023-01-01", "10"),
        ("D", "2023-02-01", "10"),
    ]
)


def test_exact_values_on_a_hand_built_table():
    f = customer_features(HAND, AS_OF).set_index("customer_id")
    assert list(f.index) == ["A", "B", "C", "D"]
    a = f.loc["A"]
    assert a["recency_days"] == 10  # Mar 31 - Mar 21
    assert a["tenure_days"] == 90  # Mar 31 - Jan 1 (leap year)
    assert a["frequency"] == 2  # 3 distinct purchase days - 1
    assert a["total_spend"] == 190.0  # 200 bought - 10 refunded
    assert a["n_transactions"] == 5
    assert a["refund_share"] == pytest.approx(10 / 200)
    assert a["avg_purchase_value"] == pytest.approx(200 / 3)
    assert a["mean_interpurchase_days"] == 40  # gaps 10 and 70
    assert a["std_interpurchase_days"] == 30
    assert a["lateness"] == pytest.approx(10 / 40)
    assert a["purchase_days_30d"] == 1 and a["spend_30d"] == 10.0
    assert a["purchase_days_90d"] == 2  # Jan 1 is 90 days back: outside [as_of - 89, as_of]
    assert a["lifecycle_stage"] == "existing"
    b = f.loc["B"]
    assert (b["recency_days"], b["tenure_days"], b["frequency"], b["total_spend"]) == (0, 0, 0, 40)
    assert b["lifecycle_stage"] == "new"
    c = f.loc["C"]
    assert not c["has_purchase"] and np.isnan(c["recency_days"]) and np.isnan(c["tenure_days"])
    assert c["frequency"] == 0 and c["total_spend"] == -15.0 and c["refund_share"] == 1.0
    assert c["lifecycle_stage"] == "existing"
    d = f.loc["D"]
    assert d["recency_days"] == 424 and d["frequency"] == 1
    assert d["lifecycle_stage"] == "lapsed"


def test_lifecycle_walk_in_and_regular():
    rows = [("W", "2024-01-01", "5")]
    rows += [("R", f"2024-{m:02d}-01", "5") for m in range(1, 8)]
    f = customer_features(table(rows), "2024-07-15").set_index("customer_id")
    assert f.loc["W", "lifecycle_stage"] == "walk-in"
    assert f.loc["R", "lifecycle_stage"] == "regular"


def test_holiday_share_counts_purchase_days_in_november_and_december():
    rows = [("G", "2022-11-30", "5"), ("G", "2022-12-24", "5"), ("G", "2022-12-24", "9")]
    rows += [("G", "2023-01-01", "5"), ("G", "2023-10-31", "5"), ("R", "2023-10-31", "-5")]
    f = customer_features(table(rows), "2023-12-31").set_index("customer_id")
    assert f.loc["G", "holiday_share"] == pytest.approx(2 / 4)  # 4 purchase days, 2 of them
    assert np.isnan(f.loc["R", "holiday_share"])  # refunds only: no purchase days


def test_rows_after_as_of_change_nothing():
    before = customer_features(HAND, AS_OF)
    later = table([("A", "2024-04-02", "500"), ("E", "2024-05-01", "7")])
    after = customer_features(pd.concat([HAND, later]), AS_OF)
    pd.testing.assert_frame_equal(before, after)


def test_row_order_changes_nothing():
    shuffled = HAND.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        customer_features(HAND, AS_OF), customer_features(shuffled, AS_OF)
    )


def test_customer_attributes_are_joined_point_in_time():
    customers = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "signup_date": pd.to_datetime(["2023-12-31", "2024-06-01"], utc=True),
            "age": [30.0, 40.0],
            "customer_type": ["B2B", "B2C"],
        }
    )
    f = customer_features(HAND, AS_OF, customers).set_index("customer_id")
    assert f.loc["A", "signup_days"] == 91
    assert np.isnan(f.loc["B", "signup_days"])  # signed up after as_of: not known yet
    assert f.loc["A", "customer_type"] == "B2B"
    assert len(f) == 4  # customers without attributes keep their row


def test_labels_use_only_the_horizon_window():
    out = labels(HAND, ["A", "B", "D"], "2024-03-21", horizon_days=10).set_index("customer_id")
    # A's Mar 21 purchase is on as_of (excluded); its Mar 22 refund is inside the window.
    assert out.loc["A"].tolist() == [True, -10.0, 0]
    assert out.loc["B"].tolist() == [False, 40.0, 1]  # Mar 31 is the last day of the window
    assert bool(out.loc["D", "churned"])
    with pytest.raises(ValueError, match="positive"):
        labels(HAND, ["A"], AS_OF, horizon_days=0)


def test_synthetic_data_is_deterministic_and_has_planted_structure():
    c1, t1, truth = generate(3000, seed=11)
    c2, t2, _ = generate(3000, seed=11)
    pd.testing.assert_frame_equal(t1, t2)
    assert t1["customer_id"].str.len().eq(7).all() and (t1["amount"] < 0).any()
    f = customer_features(t1, t1["timestamp"].max(), c1).merge(truth, on="customer_id")
    by = f.groupby("persona_name")
    assert by["avg_purchase_value"].median().idxmax() == "business buyers"
    assert by["frequency"].median().idxmin() == "fading one-timers"
    assert (f.loc[f["persona_name"] == "business buyers", "customer_type"] == "B2B").all()
    assert truth["dropped_out"].between(0, 1).all() and 0.3 < truth["dropped_out"].mean() < 0.9


def test_no_rows_by_as_of_gives_an_empty_table_not_an_error():
    f = customer_features(HAND, "2022-01-01")
    assert f.empty
    assert list(f.columns) == list(customer_features(HAND, AS_OF).columns)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_customer_ranges_computed_apart_equal_the_whole_table(monkeypatch, parts):
    """Big tables are cut into customer ranges, their rows grouped by range and computed in
    threads; stacked, they must be the very table one pass gives, with the optional breadth
    columns and rows after as_of."""
    import features.customer as fc

    cust, tx, _ = generate(1500, seed=5)
    rng = np.random.default_rng(5)
    tx = tx.assign(category=rng.choice(["a", "b", None], len(tx)), channel="web")
    clean, as_of, _ = validate_transactions(tx, as_of="2025-06-30")
    whole = customer_features(clean, as_of, cust)
    monkeypatch.setattr(fc, "PARALLEL_ROWS", 0)
    monkeypatch.setattr(fc, "RANGE_ROWS", len(clean) // parts)
    monkeypatch.setattr(fc, "cores", lambda: 2)
    split = customer_features(clean, as_of, cust)
    pd.testing.assert_frame_equal(whole, split)
    assert len(fc._customer_ranges(clean["customer_id"].cat.codes.to_numpy(), 1500, parts)) > 1


def test_validated_ids_are_categories_read_as_plain_ids():
    """Validation hands the ids over as a categorical (hashed once); the features of the same
    rows with the ids as plain text, or with unused levels left by a filter, are the same."""
    plain = HAND.assign(customer_id=HAND["customer_id"].astype("str"))
    assert isinstance(HAND["customer_id"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(customer_features(HAND, AS_OF), customer_features(plain, AS_OF))
    without_b = HAND[HAND["customer_id"] != "B"]
    assert "B" in without_b["customer_id"].cat.categories
    f = customer_features(without_b, AS_OF)
    assert f["customer_id"].tolist() == ["A", "C", "D"]
    pd.testing.assert_frame_equal(
        f, customer_features(plain[plain["customer_id"] != "B"], AS_OF).reset_index(drop=True)
    )
