import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from features.customer import customer_features
from features.shops import SHOPS, generate_shop
from features.validation import validate_customers, validate_transactions
from models.persona import PersonaModel, distinctions, merge_components

ATTRIBUTES = ["age", "income", "gender", "region", "customer_type", "signup_days"]


@pytest.fixture(scope="module")
def supplier():
    """A supplier with monthly business accounts, ad-hoc businesses and consumers (periodic,
    Pareto/NBD and BG/NBD processes): transactions, attributes and the planted groups."""
    shop = replace(SHOPS["b2b-supplier"], customers=3000)
    customers, tx, truth = generate_shop(shop, seed=3)
    clean, as_of, _ = validate_transactions(tx)
    return clean, as_of, validate_customers(customers)[0], truth.set_index("customer_id")


def buyers(clean, as_of, attrs):
    feats = customer_features(clean, as_of, attrs)
    return feats[feats["has_purchase"]].reset_index(drop=True)


def test_recovers_planted_groups_on_a_shop_it_was_not_built_on(supplier):
    clean, as_of, attrs, truth = supplier
    feats = buyers(clean, as_of, attrs)
    model = PersonaModel().fit(feats)
    planted = truth.loc[feats["customer_id"], "group_id"].to_numpy()
    assert abs(len(model.ids_) - 3) <= 1
    assert adjusted_rand_score(planted, model.predict(feats)) >= 0.85
    assert len(set(model.names_)) == len(model.names_)
    # The monthly accounts are business accounts of high value, and the name says so.
    monthly = truth.loc[feats["customer_id"], "group_name"].to_numpy() == "monthly accounts"
    persona = np.bincount(model.predict(feats)[monthly]).argmax()
    name = model.name_of(np.array([persona]))[0]
    assert "business accounts" in name and "high-value" in name


@pytest.mark.parametrize("change", ["one more month", "without attributes"])
def test_ids_survive_a_retrain(supplier, change):
    clean, as_of, attrs, _ = supplier
    before = as_of - pd.Timedelta(days=30)
    old = buyers(clean, before, attrs)
    first = PersonaModel().fit(old)
    new = buyers(clean, as_of, attrs) if change == "one more month" else buyers(clean, before, None)
    second = PersonaModel(random_state=7).fit(new, previous=first)
    # Each customer's id before and after, over those in both tables (planted groups are fixed).
    was = pd.Series(first.predict(old), index=old["customer_id"])
    now = pd.Series(second.predict(new), index=new["customer_id"])
    assert (now.reindex(was.index) == was).mean() >= 0.95


def test_small_valuable_groups_are_never_merged_and_tiny_cheap_ones_are_folded():
    rng = np.random.default_rng(0)
    n = 3000
    # Components 0 and 1 cannot be told apart (each customer 50/50): one persona.
    # Component 2 overlaps 3 as much, but is worth 10x per customer: kept apart.
    # Component 4 is 0.5% of customers and cheap: folded into the one it overlaps.
    resp = np.zeros((n, 5))
    resp[:1000, [0, 1]] = 0.5
    resp[1000:1500, [2, 3]] = [0.5, 0.5]
    resp[1500:2985, 3] = 1.0
    resp[2985:, 4] = 0.6
    resp[2985:, 3] = 0.4
    value = np.where(np.arange(n) < 1000, 50.0, 20.0)
    value[1000:1500] = rng.uniform(10_000, 12_000, 500)  # rows 1000-1500 carry component 2
    groups = merge_components(resp, value, threshold=0.15)
    as_sets = sorted(sorted(g) for g in groups)
    assert [0, 1] in as_sets
    assert [2] in as_sets
    assert any(3 in g and 4 in g for g in as_sets)


def test_json_round_trip_without_pickle_and_fixed_count(supplier):
    clean, as_of, attrs, _ = supplier
    feats = buyers(clean, as_of, attrs)
    model = PersonaModel(n_personas=4).fit(feats)
    saved = json.dumps(model.to_dict())
    again = PersonaModel.from_dict(json.loads(saved))
    assert len(model.ids_) == 4
    np.testing.assert_array_equal(model.predict(feats), again.predict(feats))
    np.testing.assert_allclose(model.posteriors(feats), again.posteriors(feats), atol=1e-12)
    assert again.names_ == model.names_


def test_missing_values_and_customers_without_purchases_are_scored(supplier):
    clean, as_of, attrs, _ = supplier
    feats = customer_features(clean, as_of, attrs)
    model = PersonaModel(n_personas=3).fit(feats)
    blank = feats.head(50).copy()
    blank[["age", "income", "region", "customer_type"]] = None
    blank["has_purchase"] = False
    for col in ("recency_days", "tenure_days", "avg_purchase_value", "holiday_share"):
        blank[col] = np.nan
    blank["frequency"] = 0
    probs = model.posteriors(blank)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_distinctions_name_what_sets_a_persona_apart():
    feats = pd.DataFrame(
        {
            "has_purchase": True,
            "frequency": [11] * 10 + [1] * 90,
            "tenure_days": 365.0,
            "avg_purchase_value": [1000.0] * 10 + [40.0] * 90,
            "gross_spend": [12_000.0] * 10 + [80.0] * 90,
            "holiday_share": 0.1,
            "customer_type": ["B2B"] * 10 + ["B2C"] * 90,
            "region": ["North"] * 100,
        }
    )
    words = distinctions(feats, np.array([0] * 10 + [1] * 90))
    assert "B2B 100% (all 10%)" in words[0]
    assert "basket 1,000 (all 40)" in words[0]
    assert "region" not in words[0] and "in North" not in words[0]  # everyone is in North
    assert words[1] == ""  # the bulk of customers is what "all" looks like


def test_personas_that_would_share_a_name_are_told_apart_by_basket_else_by_id():
    from models.persona import name_personas

    regular = {"yearly_spend": 300.0, "repeat_share": 0.9, "purchases_per_year": 6.0}
    profiles = pd.DataFrame(
        [
            {**regular, "share": 0.2, "basket": 640.0},
            {**regular, "share": 0.7, "basket": 200.0},
            {**regular, "share": 0.1, "basket": 180.0, "purchases_per_year": 5.0},
        ]
    )
    names = name_personas(profiles, np.array([2, 3, 7]))
    assert names == ["big-basket regular buyers", "regular buyers #3", "regular buyers #7"]
    profiles.loc[1, "basket"] = 90.0  # now each basket is apart from the others
    names = name_personas(profiles, np.array([2, 3, 7]))
    assert names == ["big-basket regular buyers", "small-basket regular buyers", "regular buyers"]
