"""The training run on small generated shops: out-of-time metrics against the BTYD baseline,
short histories, point in time, the bundle."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from features.customer import customer_features
from features.load import Inputs
from features.schema import DataError
from features.shops import SHOPS, generate_shop
from features.synthetic import generate
from features.validation import DAY, validate_customers, validate_transactions
from models.boosted import matrix
from models.bundle import OUTPUT_COLUMNS, SCHEMA_VERSION, Bundle, BundleError, BundleSchemaError
from training.config import TrainConfig
from training.promotion import compare_with_champion
from training.run import datasets, quality_counts, train


def make_inputs(n=5000, seed=5, years=3.0):
    customers, tx, truth = generate(n, seed=seed, years=years)
    clean, as_of, report = validate_transactions(tx)
    cust, _ = validate_customers(customers)
    return Inputs(clean, as_of, cust, [report]), truth


def shop_inputs(name, customers, seed=1, as_of=None, **changes):
    shop = replace(SHOPS[name], customers=customers, **changes)
    attrs, tx, truth = generate_shop(shop, seed=seed)
    clean, last, report = validate_transactions(tx, as_of=as_of)
    attrs = validate_customers(attrs)[0] if attrs is not None else None
    return Inputs(clean, last, attrs, [report]), truth


@pytest.fixture(scope="module")
def trained():
    inputs, truth = make_inputs()
    return inputs, truth, train(inputs, TrainConfig())


def test_default_plan_on_three_years_and_the_bundle_records_it(trained):
    inputs, truth, result = trained
    plan = result.plan
    assert (plan.churn.horizon, plan.value.horizon) == (90, 365)
    assert plan.value.n_cutoffs == 4 and plan.churn.n_cutoffs == 4
    manifest = result.bundle.manifest
    assert manifest["churn_horizon_days"] == 90 and manifest["value_horizon_days"] == 365
    assert manifest["plan"]["value_cutoffs"] == "4"
    m = result.metrics
    assert m["churn_calibration_error"] < 0.05
    # Bootstrap refits (a harsher test than a retrain, see tests/models/test_persona.py).
    assert abs(m["persona_count"] - 5) <= 1 and m["persona_stability"] >= 0.9
    buyers = inputs.transactions["customer_id"].unique()
    planted = truth.set_index("customer_id").loc[buyers, "persona_id"]
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers)
    feats = feats.set_index("customer_id").loc[buyers].reset_index()
    assigned = result.bundle.persona.predict(feats)
    assert adjusted_rand_score(planted, assigned) >= 0.85
    # Active customers are the harder, honest population; all customers stay beside them.
    assert m["eval_customers_churn"] < m["eval_customers_churn_all"]
    assert m["churn_auc"] < m["churn_all_auc"]


def test_models_beat_btyd_clearly_on_a_shop_that_does_not_follow_bgnbd():
    """Monthly refills are regular, not Poisson: the baseline's story does not hold there."""
    inputs, _ = shop_inputs("subscription-pharmacy", 4000)
    m = train(inputs, TrainConfig(churn_horizon=60, value_horizon=60)).metrics
    assert m["churn_auc"] > m["baseline_churn_auc"] + 0.02
    assert m["value_normalized_gini"] > m["baseline_value_normalized_gini"] + 0.02
    assert abs(m["value_aggregate_bias"]) < 0.1


def test_nine_months_of_invoices_train_at_90_days():
    # One year of data ending 2011-12-09, cut at 2011-09-09: nine months, like Online Retail.
    inputs, _ = shop_inputs("gift-wholesale", 3000, as_of="2011-09-09", years=1.0)
    result = train(inputs, TrainConfig(churn_horizon=90, value_horizon=90))
    plan = result.plan
    assert plan.history_days == 274 and plan.churn.n_cutoffs == 1
    assert plan.churn.warmup_days == 274 - 180
    assert any("1 training cutoff(s)" in note for note in plan.notes)
    assert result.metrics["eval_customers_churn"] > 500


def test_three_months_of_receipts_train_at_a_28_day_horizon_chosen_with_a_notice():
    inputs, _ = shop_inputs("grocery-receipts", 3000, as_of="2025-12-03")
    result = train(inputs, TrainConfig())
    plan = result.plan
    assert plan.history_days < 100
    assert (plan.churn.horizon, plan.value.horizon) == (28, 28)
    assert any(note.startswith("churn horizon 28 days, chosen from") for note in plan.notes)
    assert result.bundle.manifest["churn_horizon_days"] == 28
    assert np.isfinite(result.metrics["churn_auc"])


def test_nothing_after_as_of_is_ever_read(trained):
    """Rows after as_of (a planted future of huge purchases, and customers who appear only
    then) change neither the metrics nor the bundle's predictions."""
    inputs, _, result = trained
    tx = inputs.transactions
    days = np.random.default_rng(1).integers(1, 300, 3000)
    future = tx.sample(3000, random_state=1).assign(
        timestamp=inputs.as_of + pd.to_timedelta(days, unit="D"), amount=9999.0
    )
    strangers = future.head(500).assign(
        customer_id=lambda f: "new" + f["customer_id"].astype("str")
    )
    leaky = Inputs(pd.concat([tx, future, strangers]), inputs.as_of, inputs.customers)
    again = train(leaky, TrainConfig())
    assert again.metrics == result.metrics
    feats = customer_features(tx, inputs.as_of, inputs.customers).head(200)
    pd.testing.assert_frame_equal(result.bundle.score(feats), again.bundle.score(feats))


def test_evaluation_models_never_see_their_evaluation_window(trained):
    """Plant a signal only in the evaluation window (E, as_of]: the evaluation models'
    scores at E do not move; only the labels, hence the metrics, do."""
    inputs, _, result = trained
    tx = inputs.transactions
    start = result.plan.churn.evaluation + DAY
    planted = tx["timestamp"] >= start
    changed = tx.assign(amount=np.where(planted, tx["amount"] * 10, tx["amount"]))
    again = train(Inputs(changed, inputs.as_of, inputs.customers), TrainConfig())
    for name in ("model", "BTYD"):
        np.testing.assert_array_equal(
            result.evaluation.churn_scores[name], again.evaluation.churn_scores[name]
        )
    assert again.metrics["value_mae"] != result.metrics["value_mae"]


def test_signups_after_a_cutoff_are_left_out_of_it():
    inputs, _ = make_inputs(n=2000, seed=8)
    customers = inputs.customers.copy()
    late = customers["customer_id"].iloc[:300]
    customers.loc[customers["customer_id"].isin(late), "signup_date"] = inputs.as_of - 10 * DAY
    result = train(
        Inputs(inputs.transactions, inputs.as_of, customers), TrainConfig(min_customers=100)
    )
    eval_ids = set(result.evaluation.churn.features["customer_id"])
    assert eval_ids.isdisjoint(late) and len(eval_ids) > 1000


def test_the_encoder_learns_categories_from_training_cutoffs_only():
    inputs, _ = make_inputs(n=2000, seed=9)
    customers = inputs.customers.copy()
    tx = inputs.transactions
    first = tx.groupby("customer_id")["timestamp"].min()
    recent = first[first > inputs.as_of - 30 * DAY].index  # first seen after every cutoff
    customers.loc[customers["customer_id"].isin(recent), "region"] = "Atlantis"
    result = train(Inputs(tx, inputs.as_of, customers), TrainConfig(min_customers=100))
    assert len(recent) > 10
    assert "Atlantis" not in result.bundle.encoder.categories_["region"]
    assert "North" in result.bundle.encoder.categories_["region"]


def test_churn_from_one_pass_of_contributions_matches_xgboost_prediction(trained):
    inputs, _, result = trained
    bundle = result.bundle
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers).head(500)
    X = bundle.encoder.transform(bundle.model_inputs(feats))
    proba, reasons = bundle.churn.predict_with_reasons(X, matrix(X))
    np.testing.assert_allclose(proba, bundle.churn.predict_proba(X), atol=1e-4)
    assert len(reasons) == len(X) and set(reasons.flatten().to_pylist()) <= set(
        bundle.churn.feature_names_
    )


def test_bundle_round_trip_scores_identically(trained, tmp_path):
    inputs, _, result = trained
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers).head(300)
    path = result.bundle.save(tmp_path / "bundle")
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pickle"))
    loaded = Bundle.load(path)
    expected = result.bundle.score(feats)
    got = loaded.score(feats)
    pd.testing.assert_frame_equal(expected, got)
    assert list(got.columns) == [*OUTPUT_COLUMNS, "model_version"]
    assert got["churn_probability"].between(0, 1).all()
    assert (got["predicted_value"] >= 0).all()
    assert got["value_percentile"].between(0, 100).all()
    assert set(got["risk_band"]) <= {"low", "medium", "high"}
    risky = got.loc[got["churn_probability"] > 0.6, "reasons"]
    assert risky.map(len).gt(0).all()


def test_corrupt_or_foreign_bundle_is_refused(trained, tmp_path):
    _, _, result = trained
    path = result.bundle.save(tmp_path / "bundle")
    with open(path / "value.ubj", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="sha256 of value.ubj does not match"):
        Bundle.load(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleSchemaError, match="schema version 99"):
        Bundle.load(path)
    manifest["schema_version"] = SCHEMA_VERSION
    for files in ({}, None):  # a manifest that vouches for nothing
        (path / "manifest.json").write_text(json.dumps(manifest | {"files": files}))
        with pytest.raises(BundleError, match="lists no files with their sha256"):
            Bundle.load(path)
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(tmp_path)


def test_what_goes_to_mlflow_about_the_data_holds_no_personal_data(trained):
    inputs, _, result = trained
    counts = quality_counts(inputs)
    assert counts[0]["rows_read"] == inputs.reports[0].rows_read and "examples" not in counts[0]
    assert set(datasets(inputs)) == {"transactions", "customers"}
    example = result.bundle.example_input()
    assert list(example["customer_id"]) == ["example-lapsed", "example-regular"]
    assert list(example.columns) == result.bundle.feature_columns
    assert list(example["lifecycle_stage"]) == ["lapsed", "regular"]


def test_too_short_history_names_the_longest_horizon_it_supports():
    inputs, _ = make_inputs(n=300, years=0.25)
    with pytest.raises(DataError, match=r"the longest horizon it supports is \d+ days"):
        train(inputs, TrainConfig(churn_horizon=90))


def test_too_few_customers_is_refused():
    inputs, _ = make_inputs(n=60)
    with pytest.raises(DataError, match="need at least 200 customers"):
        train(inputs, TrainConfig())


def test_first_version_becomes_champion_even_below_the_baseline(trained):
    _, _, result = trained
    below = replace(result, metrics={**result.metrics, "churn_auc": 0.5})
    promote, reason, _ = compare_with_champion(below, None, TrainConfig())
    assert promote and "WARNING: does not beat the BTYD baseline" in reason
    promote, reason, _ = compare_with_champion(result, result.bundle, TrainConfig())
    assert "champion local" in reason


def test_gate_judges_churn_on_active_customers(trained):
    _, _, result = trained
    champion = result.bundle
    # Better on all customers, worse on the active ones: refused.
    worse = {**result.metrics, "churn_auc": result.metrics["baseline_churn_auc"] - 0.01}
    worse["churn_all_auc"] = 0.999
    promote, reason, _ = compare_with_champion(
        replace(result, metrics=worse), champion, TrainConfig()
    )
    assert not promote and "churn AUC on active customers" in reason


def test_stratified_sample_draws_the_same_share_of_every_stratum():
    """Two stages x five spend quintiles; a tenth of each is drawn, rare strata included."""
    stages = ["regular"] * 900 + ["new"] * 100
    feats = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(1000)],
            "lifecycle_stage": stages,
            "total_spend": np.arange(1000.0),  # the 100 'new' ones are the top spenders
        }
    )
    from training.sample import stratified_sample

    ids = stratified_sample(feats, 100, seed=0)
    drawn = feats.set_index("customer_id").loc[ids]
    assert len(ids) == len(set(ids)) == 100
    assert (drawn["lifecycle_stage"] == "new").sum() == 10
    quintiles = (drawn["total_spend"] // 200).value_counts().to_dict()
    assert quintiles == {0.0: 20, 1.0: 20, 2.0: 20, 3.0: 20, 4.0: 20}
    assert set(stratified_sample(feats, 5000, seed=0)) == set(feats["customer_id"])


def test_a_large_shop_is_fitted_on_a_sample_and_described_by_every_customer():
    inputs, _ = make_inputs(4000, seed=7)
    result = train(inputs, TrainConfig(max_customers=1500))
    buyers = inputs.transactions["customer_id"].nunique()
    assert result.sample.of == buyers and abs(result.sample.customers - 1500) <= 10
    manifest = result.bundle.manifest
    assert manifest["training_sample"]["training_customers"] == str(result.sample.customers)
    assert sum(p["size"] for p in manifest["persona_catalog"]) == buyers
    assert result.metrics["churn_auc"] > result.metrics["baseline_churn_auc"] - 0.02
    assert train(inputs, TrainConfig()).sample is None  # 4,000 customers: no sample
