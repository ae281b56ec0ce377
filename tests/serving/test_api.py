"""The prediction API in-process: parity with batch scoring, bad requests, limits, auth."""

import json

import pandas as pd
import pytest

FIELDS = [
    "persona_id",
    "persona_name",
    "lifecycle_stage",
    "risk_band",
    "reasons",
    "value_percentile",
    "model_version",
]
NUMBERS = ["churn_probability", "expected_purchases", "predicted_value"]


def assert_same_as_batch(prediction: dict, batch: pd.DataFrame) -> None:
    row = batch.loc[prediction["customer_id"]]
    for field in FIELDS:
        assert prediction[field] == (list(row[field]) if field == "reasons" else row[field]), field
    for field in NUMBERS:
        assert prediction[field] == pytest.approx(row[field], rel=1e-6, abs=1e-9), field


def test_score_by_ids_matches_batch_and_reports_unknown_ids(client, served):
    ids = list(served["predictions"].index[:5])
    response = client.post("/score/ids", json={"customer_ids": [*ids, "no-such-customer"]})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["customer_id"] for p in predictions] == [*ids, "no-such-customer"]
    for p in predictions[:5]:
        assert_same_as_batch(p, served["predictions"])
    assert predictions[-1]["error"].startswith("unknown customer_id")
    assert predictions[-1]["churn_probability"] is None


def test_score_by_transactions_matches_batch(client, served):
    ids = list(served["predictions"].index[10:13])
    tx = served["transactions"]
    rows = tx[tx["customer_id"].isin(ids)].assign(timestamp=lambda d: d["timestamp"].astype(str))
    customers = served["customers"]
    attrs = customers[customers["customer_id"].isin(ids)].assign(
        signup_date=lambda d: d["signup_date"].dt.date.astype(str)
    )
    body = {
        "transactions": json.loads(rows.to_json(orient="records")),
        "customers": json.loads(attrs.to_json(orient="records")),
        "as_of": str(served["as_of"].date()),
    }
    response = client.post("/score/transactions", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert sorted(p["customer_id"] for p in predictions) == sorted(ids)
    for p in predictions:
        assert_same_as_batch(p, served["predictions"])


def test_all_three_routes_agree_with_batch_on_random_customers(client, served):
    """40 random customers through /score/ids, /score/transactions and /score/features: the
    same persona, stage, band, reasons and percentile, and numbers to 1e-6, as batch."""
    ids = served["predictions"].sample(40, random_state=11).index.tolist()
    tx = served["transactions"]
    rows = tx[tx["customer_id"].isin(ids)].assign(timestamp=lambda d: d["timestamp"].astype(str))
    customers = served["customers"]
    attrs = customers[customers["customer_id"].isin(ids)].assign(
        signup_date=lambda d: d["signup_date"].dt.date.astype(str)
    )
    snapshot = pd.read_parquet(served["features"])
    features = snapshot[snapshot["customer_id"].isin(ids)]
    answers = {
        "/score/ids": client.post("/score/ids", json={"customer_ids": ids}),
        "/score/transactions": client.post(
            "/score/transactions",
            json={
                "transactions": json.loads(rows.to_json(orient="records")),
                "customers": json.loads(attrs.to_json(orient="records")),
                "as_of": str(served["as_of"].date()),
            },
        ),
        "/score/features": client.post(
            "/score/features", json={"features": json.loads(features.to_json(orient="records"))}
        ),
    }
    for route, response in answers.items():
        assert response.status_code == 200, (route, response.text)
        predictions = response.json()["predictions"]
        assert sorted(p["customer_id"] for p in predictions) == sorted(ids), route
        for p in predictions:
            assert_same_as_batch(p, served["predictions"])


def test_score_by_feature_records(client, served):
    snapshot = pd.read_parquet(served["features"]).head(3)
    records = json.loads(snapshot.to_json(orient="records"))
    response = client.post("/score/features", json={"features": records})
    assert response.status_code == 200, response.text
    for p in response.json()["predictions"]:
        assert_same_as_batch(p, served["predictions"])


def test_as_of_defaults_to_today_so_a_lapsed_customer_is_scored_as_lapsed(client):
    """Four purchases a year and more ago: on the day of the last one the customer looks
    active; today (the default) they are lapsed and much more likely to have churned."""
    last = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=400)
    rows = [
        {"customer_id": "L", "timestamp": str((last - pd.Timedelta(days=d)).date()), "amount": 40}
        for d in (0, 30, 60, 90)
    ]
    then = client.post(
        "/score/transactions", json={"transactions": rows, "as_of": str(last.date())}
    ).json()["predictions"][0]
    today = client.post("/score/transactions", json={"transactions": rows}).json()["predictions"]
    assert today[0]["lifecycle_stage"] == "lapsed" and then["lifecycle_stage"] != "lapsed"
    assert today[0]["churn_probability"] > then["churn_probability"] + 0.2


def test_feature_records_need_every_behaviour_field_and_nothing_unknown(client, served):
    record = json.loads(pd.read_parquet(served["features"]).head(1).to_json(orient="records"))[0]
    short = {k: v for k, v in record.items() if k not in ("spend_90d", "holiday_share")}
    response = client.post("/score/features", json={"features": [short]})
    assert response.status_code == 400
    missing = {(d["type"], d["loc"][-1]) for d in response.json()["detail"]}
    assert missing == {("missing", "spend_90d"), ("missing", "holiday_share")}
    response = client.post("/score/features", json={"features": [record | {"loyalty": 3}]})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["features", 0, "loyalty"]
    # Attributes left out are unknown, as for a customer missing from the customers file.
    anonymous = {k: v for k, v in record.items() if k not in ("age", "income", "region")}
    assert client.post("/score/features", json={"features": [anonymous]}).status_code == 200


def test_a_feature_record_of_nulls_is_scored_not_a_500(client):
    """Found by schemathesis: a one-row request with null amounts reached the baseline as
    Python objects (a ZeroDivisionError, 500)."""
    from features.schema import NUMERIC_FEATURES

    record = {"customer_id": "n", "lifecycle_stage": "new", "has_purchase": True}
    record |= dict.fromkeys(NUMERIC_FEATURES) | {"gross_spend": 10.0, "frequency": 0.0}
    response = client.post("/score/features", json={"features": [record]})
    assert response.status_code == 200, response.text


def test_one_attribute_rule_for_files_and_the_api(client):
    """Age 121: a customers file loses the value (counted); the API answers 400 naming it."""
    from features.validation import validate_customers

    clean, report = validate_customers(pd.DataFrame({"customer_id": ["a"], "age": ["121"]}))
    assert (
        pd.isna(clean.loc[0, "age"])
        and sum(report.dropped.values()) + sum(report.noted.values()) >= 1
    )
    body = {
        "transactions": [{"customer_id": "a", "timestamp": "2025-01-01", "amount": 5}],
        "customers": [{"customer_id": "a", "age": 121}],
    }
    response = client.post("/score/transactions", json=body)
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["customers", 0, "age"]


def test_settings_are_read_once_and_checked_at_start(monkeypatch):
    from serving.schemas import Settings

    monkeypatch.setenv("CLIENTELA_MAX_CUSTOMERS", "12")
    monkeypatch.setenv("CLIENTELA_API_TOKEN", "t")
    assert Settings.from_env() == Settings(token="t", max_customers=12)
    monkeypatch.setenv("CLIENTELA_MAX_CUSTOMERS", "lots")
    with pytest.raises(ValueError, match="CLIENTELA_MAX_CUSTOMERS must be a positive integer"):
        Settings.from_env()


def test_catalog_and_metadata(client):
    personas = client.get("/personas").json()["personas"]
    assert len(personas) == 5 and {"persona_id", "persona_name", "share"} <= set(personas[0])
    meta = client.get("/model").json()
    assert meta["as_of"] == "2025-12-31" and "churn_auc" in meta["metrics"]
    assert meta["snapshot_as_of"] == "2025-12-31"


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/score/ids", {}, "customer_ids"),
        ("/score/ids", {"customer_ids": "0001"}, "customer_ids"),
        ("/score/ids", {"customer_ids": []}, "customer_ids"),
        ("/score/transactions", {"transactions": [{"customer_id": "1", "amount": 3}]}, "timestamp"),
        (
            "/score/transactions",
            {"transactions": [{"customer_id": "1", "timestamp": "2025-01-01", "amount": "x"}]},
            "amount",
        ),
        (
            "/score/features",
            {
                "features": [
                    {
                        "customer_id": "1",
                        "lifecycle_stage": "new",
                        "recency_days": -3,
                        "tenure_days": 5,
                        "frequency": 1,
                        "total_spend": 5,
                        "days_since_activity": 1,
                    }
                ]
            },
            "recency_days",
        ),
    ],
)
def test_bad_requests_get_400_naming_the_field(client, route, body, field):
    response = client.post(route, json=body)
    assert response.status_code == 400
    assert field in response.text


def test_malformed_json_and_pickle_are_refused(client):
    bad = client.post("/score/ids", content=b"{oops", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "Invalid JSON" in bad.text
    pickled = client.post(
        "/score/ids",
        content=b"\x80\x04",
        headers={"content-type": "application/vnd.bentoml+pickle"},
    )
    assert pickled.status_code == 415


def with_settings(monkeypatch, **changes):
    """The running service's settings (read once at start) changed for one test."""
    from dataclasses import replace

    from serving.service import info_app

    service = info_app.state.clientela
    monkeypatch.setattr(service, "settings", replace(service.settings, **changes))


def test_per_request_limit(client, monkeypatch):
    with_settings(monkeypatch, max_customers=3)
    response = client.post("/score/ids", json={"customer_ids": ["1", "2", "3", "4"]})
    assert response.status_code == 400
    assert "customer_ids: 4 customers in one request, the limit is 3" in response.text


def test_bad_transactions_content_is_a_400(client):
    future_only = {
        "transactions": [{"customer_id": "1", "timestamp": "2025-06-01", "amount": 5}],
        "as_of": "2025-01-01",
    }
    response = client.post("/score/transactions", json=future_only)
    assert response.status_code == 400 and "as_of" in response.text
    ancient = {**future_only, "as_of": "1800-01-01"}
    response = client.post("/score/transactions", json=ancient)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "as_of 1800-01-01 is not a plausible day (years 1900 to 2199)"
    )


def test_bearer_token_guards_inference_but_not_health(client, monkeypatch):
    with_settings(monkeypatch, token="s3cret")
    assert client.post("/score/ids", json={"customer_ids": ["1"]}).status_code == 401
    assert client.get("/personas").status_code == 401
    wrong = client.get("/model", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = client.get("/model", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_openapi_documents_routes_and_schemas(client):
    spec = client.get("/docs.json").json()
    for route in ("/score/ids", "/score/transactions", "/score/features", "/personas", "/model"):
        assert route in spec["paths"]
    assert "Prediction" in json.dumps(spec)


@pytest.mark.parametrize(
    "rows",
    [
        [{"customer_id": "R", "timestamp": "2025-01-01", "amount": -5}],  # refunds only
        [{"customer_id": "Z", "timestamp": "2025-01-01", "amount": 0}],  # zero amount only
        [{"customer_id": "H", "timestamp": "2025-01-01", "amount": 1e308}],  # beyond float32
    ],
)
def test_odd_but_valid_transactions_are_scored(client, rows):
    response = client.post("/score/transactions", json={"transactions": rows})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert 0 <= prediction["churn_probability"] <= 1 and prediction["predicted_value"] >= 0


def test_a_date_outside_pandas_range_is_a_400_naming_the_field(client):
    rows = [
        {"customer_id": "O", "timestamp": "0001-01-01", "amount": 5},
        {"customer_id": "O", "timestamp": "2025-01-01", "amount": 5},
    ]
    response = client.post("/score/transactions", json={"transactions": rows})
    assert response.status_code == 400
    assert "'timestamp'" in response.text and "implausible date" in response.text


def test_score_by_ids_from_a_postgresql_snapshot(client, served, pg_url, monkeypatch):
    from features.sources import write_table
    from models.bundle import Bundle
    from serving.service import info_app
    from serving.snapshot import Snapshot

    table = f"{pg_url}#clientela_test_api_snapshot"
    write_table(pd.read_parquet(served["features"]), table)
    service = info_app.state.clientela
    named = f"{pg_url}?application_name=clientela_api_test#clientela_test_api_snapshot"
    monkeypatch.setattr(service, "snapshot", Snapshot(named, Bundle.load(served["bundle_dir"])))
    ids = list(served["predictions"].index[20:23])
    response = client.post("/score/ids", json={"customer_ids": [ids[1], "nobody", ids[0]]})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["customer_id"] for p in predictions] == [ids[1], "nobody", ids[0]]
    assert_same_as_batch(predictions[0], served["predictions"])
    assert_same_as_batch(predictions[2], served["predictions"])
    assert predictions[1]["error"].startswith("unknown customer_id")

    # The database drops the API's connections (a restart): the next request still answers.
    import sqlalchemy

    from features.sources import engine_for

    with sqlalchemy.create_engine(pg_url).connect() as admin:
        terminated = admin.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'clientela_api_test'"
        ).fetchall()
    assert terminated  # the API's pooled connection was among them
    assert client.post("/score/ids", json={"customer_ids": ids[:1]}).status_code == 200
    # The database is gone: 503 with a retry hint, not 500; and back once it returns.
    working = service.snapshot.engine
    monkeypatch.setattr(
        service.snapshot, "engine", engine_for("postgresql+psycopg://postgres@127.0.0.1:9/test")
    )
    response = client.post("/score/ids", json={"customer_ids": ids[:1]})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "snapshot database is unavailable" in response.text
    monkeypatch.setattr(service.snapshot, "engine", working)
    assert client.post("/score/ids", json={"customer_ids": ids[:1]}).status_code == 200
