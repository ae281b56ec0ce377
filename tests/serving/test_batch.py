"""`clientela score`: files, PostgreSQL tables, and the snapshot the API reads."""

import json
from collections import Counter

import pandas as pd
import pytest
from typer.testing import CliRunner

from clientela import app
from features.schema import DataError
from models.bundle import Bundle
from serving.batch import score_features
from serving.snapshot import DatabaseUnavailable, Snapshot, to_json

runner = CliRunner()


def score_served(served, *options):
    """`clientela score` on the served fixture's transactions and customers with its bundle."""
    root = served["root"]
    return runner.invoke(
        app,
        [
            "score",
            "-t", str(root / "transactions.parquet"),
            "-c", str(root / "customers.parquet"),
            "--model", str(served["bundle_dir"]),
            *options,
        ],
    )  # fmt: skip


def test_score_to_csv_writes_predictions_and_snapshot(served, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = score_served(served, "--out", "scores.csv")
    assert result.exit_code == 0, result.output
    scores = pd.read_csv("scores.csv", dtype={"customer_id": str})
    assert len(scores) == len(served["predictions"])
    assert set(scores["as_of"]) == {"2025-12-31"}
    first = scores.iloc[0]
    expected = served["predictions"].loc[first["customer_id"]]
    assert first["churn_probability"] == pytest.approx(expected["churn_probability"])
    assert first["reasons"] == ";".join(expected["reasons"])
    assert (tmp_path / "clientela_snapshot.parquet").exists()  # the API's default snapshot

    again = runner.invoke(
        app,
        [
            "score",
            "--features",
            "clientela_snapshot.parquet",
            "--model",
            str(served["bundle_dir"]),
            "--out",
            "again.parquet",
        ],
    )
    assert again.exit_code == 0, again.output
    from_snapshot = pd.read_parquet("again.parquet").set_index("customer_id")
    assert from_snapshot["churn_probability"].to_dict() == pytest.approx(
        served["predictions"]["churn_probability"].to_dict()
    )


def test_score_into_postgresql_and_look_up_ids_there(served, pg_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = score_served(
        served,
        "--out", f"{pg_url}#clientela_test_scores",
        "--snapshot", f"{pg_url}#clientela_test_snapshot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = pd.read_sql_table("clientela_test_scores", pg_url)
    assert len(stored) == len(served["predictions"])
    bundle = Bundle.load(served["bundle_dir"])
    snapshot = Snapshot(f"{pg_url}#clientela_test_snapshot", bundle)
    assert snapshot.as_of == "2025-12-31"
    assert snapshot.stored  # the predictions `score` wrote, looked up by the unique index
    assert_lookup_matches_batch(snapshot, served)
    ids = list(served["predictions"].index[:50])
    in_memory = Snapshot(served["snapshot"], bundle)
    assert snapshot.lookup(ids)[0] == in_memory.lookup(ids)[0]  # the same bytes
    index = pd.read_sql_query(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'clientela_test_snapshot'", pg_url
    )["indexdef"].tolist()
    assert len(index) == 1 and "UNIQUE INDEX" in index[0] and "(customer_id)" in index[0]

    # The database drops the pooled connections (a restart): the next lookup still answers.
    import sqlalchemy

    named = f"{pg_url}?application_name=clientela_snapshot_test#clientela_test_snapshot"
    snapshot = Snapshot(named, bundle)
    assert snapshot.lookup(ids[:1])[0][0] is not None
    with sqlalchemy.create_engine(pg_url).connect() as admin:
        assert admin.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'clientela_snapshot_test'"
        ).fetchall()
    assert snapshot.lookup(ids[:1])[0] == in_memory.lookup(ids[:1])[0]
    # The database is gone: DatabaseUnavailable (the API's 503), not a driver traceback.
    from features.sources import engine_for
    from serving.snapshot import DatabaseUnavailable

    snapshot.engine = engine_for("postgresql+psycopg://postgres@127.0.0.1:9/test")
    with pytest.raises(DatabaseUnavailable, match="feature snapshot database is unavailable"):
        snapshot.lookup(ids[:1])


def test_chunks_scored_on_all_cores_match_one_pass(served):
    features = pd.read_parquet(served["features"])
    bundle = Bundle.load(served["bundle_dir"])
    chunked = score_features(features, bundle, "2025-12-31", chunk=700)
    pd.testing.assert_frame_equal(chunked, bundle.score(features).assign(as_of="2025-12-31"))
    assert bundle.nthread == -1  # restored after scoring


def test_score_needs_exactly_one_input(served):
    result = runner.invoke(app, ["score", "--model", str(served["bundle_dir"]), "--out", "x.csv"])
    assert result.exit_code == 2 and "either --transactions or --features" in result.output


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "no registered model" in result.output or "no version with alias" in result.output


def test_snapshot_table_must_be_a_plain_table_name():
    from features.schema import DataError

    with pytest.raises(DataError, match="needs a table name"):
        Snapshot("postgresql://127.0.0.1/test#t; DROP TABLE x", bundle=None)


def assert_lookup_matches_batch(snapshot: Snapshot, served) -> None:
    """Answers in request order, None for an unknown id, the batch scores for known ones, and
    the (persona, risk band) counts of the known ones."""
    ids = list(served["predictions"].index[:3])
    answers, counts = snapshot.lookup([ids[2], "nobody", ids[0]])
    assert answers[1] is None
    found = [json.loads(answers[0]), json.loads(answers[2])]
    assert [a["customer_id"] for a in found] == [ids[2], ids[0]]
    expected = served["predictions"].loc[[ids[2], ids[0]]]
    assert [a["churn_probability"] for a in found] == expected["churn_probability"].tolist()
    assert [a["reasons"] for a in found] == [list(r) for r in expected["reasons"]]
    assert counts == Counter(zip(expected["persona_name"], expected["risk_band"], strict=True))


def test_file_snapshot_is_answered_once_and_answers_match_batch(served):
    snapshot = Snapshot(served["snapshot"], Bundle.load(served["bundle_dir"]))
    assert snapshot.stored and len(snapshot.answers) == len(served["predictions"])
    assert_lookup_matches_batch(snapshot, served)


def test_stored_predictions_are_used_only_when_made_by_the_model_served(served, tmp_path):
    """A snapshot without predictions, or with another model's, is scored by the API itself;
    either way every answer is byte for byte the one the stored predictions give."""
    bundle = Bundle.load(served["bundle_dir"])
    stored = Snapshot(served["snapshot"], bundle)
    scored = Snapshot(served["features"], bundle)
    assert not scored.stored
    assert scored.answers == stored.answers
    other = pd.read_parquet(served["snapshot"]).assign(
        model_fingerprint="0" * 16, churn_probability=0.5
    )
    other.to_parquet(tmp_path / "other.parquet")
    rescored = Snapshot(str(tmp_path / "other.parquet"), bundle)
    assert not rescored.stored and rescored.answers == stored.answers


def test_non_finite_numbers_become_null():
    assert json.loads(to_json({"customer_id": "a", "expected_purchases": float("nan")})) == {
        "customer_id": "a",
        "expected_purchases": None,
    }


def test_snapshot_without_feature_columns_is_a_clear_error(served, tmp_path):
    pd.DataFrame({"customer_id": ["a"], "as_of": ["2025-12-31"]}).to_parquet(tmp_path / "x.parquet")
    bundle = Bundle.load(served["bundle_dir"])
    with pytest.raises(DataError, match="x.parquet: the feature table lacks"):
        Snapshot(str(tmp_path / "x.parquet"), bundle)


def test_postgresql_snapshot_without_feature_columns_fails_at_start(served, pg_url):
    incomplete = pd.DataFrame({"customer_id": ["a"], "as_of": ["2025-12-31"]})
    incomplete.to_sql("clientela_test_incomplete", pg_url, if_exists="replace", index=False)
    bundle = Bundle.load(served["bundle_dir"])
    with pytest.raises(DataError, match="clientela_test_incomplete: the feature table lacks"):
        Snapshot(f"{pg_url}#clientela_test_incomplete", bundle)


def test_a_feature_table_missing_model_columns_is_refused_by_name(served):
    bundle = Bundle.load(served["bundle_dir"])
    feats = pd.read_parquet(served["features"]).head(20)
    dropped = ["recency_days", "spend_90d", "age"]
    with pytest.raises(DataError, match="lacks 3 column") as error:
        score_features(feats.drop(columns=dropped), bundle, "2025-12-31")
    assert all(name in str(error.value) for name in dropped)


def test_text_in_a_numeric_feature_column_is_refused_by_name(served):
    bundle = Bundle.load(served["bundle_dir"])
    feats = pd.read_parquet(served["features"]).head(20)
    feats["frequency"] = feats["frequency"].astype("str")
    with pytest.raises(DataError, match="must be numbers hold text: frequency"):
        score_features(feats, bundle, "2025-12-31")


def test_requests_that_arrive_during_a_run_go_together_in_the_next():
    """Each request still gets its own result; an exception result reaches its request only,
    an exception from the run every request of that run."""
    import asyncio
    import threading

    from serving.batching import Batcher

    calls: list[list[list[str]]] = []
    release = threading.Event()

    def run(requests):
        calls.append(requests)
        release.wait(5)  # the first run is slow: the other requests pile up behind it
        if ["down"] in requests:
            raise DatabaseUnavailable("the feature snapshot database is unavailable: test")
        return [ValueError(r[0]) if r == ["bad"] else [i.upper() for i in r] for r in requests]

    async def go():
        batcher = Batcher(run, limit=4)
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.05)
        later = [batcher.submit(r) for r in (["b", "c"], ["bad"], ["d"], ["e", "f"], ["down"])]
        later = [asyncio.ensure_future(r) for r in later]
        await asyncio.sleep(0.05)
        release.set()
        return await first, await asyncio.gather(*later, return_exceptions=True)

    first, (bc, bad, d, ef, down) = asyncio.run(go())
    assert first == ["A"] and bc == ["B", "C"] and d == ["D"]
    assert isinstance(bad, ValueError)  # alone: its neighbours got their answers
    assert calls == [[["a"]], [["b", "c"], ["bad"], ["d"]], [["e", "f"], ["down"]]]
    assert isinstance(ef, DatabaseUnavailable) and isinstance(down, DatabaseUnavailable)


def test_requests_still_being_read_join_the_run_that_is_about_to_start():
    """Requests a few event-loop turns behind the first (as a server reads, routes and parses
    them) share its run when the batcher waits that many turns, and not when it does not."""
    import asyncio

    from serving.batching import Batcher

    def runs_for(turns: int) -> list[list[str]]:
        calls = []

        def run(requests):
            calls.append([r[0] for r in requests])
            return requests

        async def arriving(batcher, name, behind):
            for _ in range(behind):  # the turns its server spends before `submit`
                await asyncio.sleep(0)
            return await batcher.submit([name])

        async def go():
            batcher = Batcher(run, limit=100, turns=turns)
            names = "abcdef"
            answers = await asyncio.gather(*(arriving(batcher, n, k) for k, n in enumerate(names)))
            assert answers == [[n] for n in names]  # each its own answer either way

        asyncio.run(go())
        return calls

    assert runs_for(turns=6) == [list("abcdef")]
    assert runs_for(turns=0)[0] == ["a"]


def test_feature_records_scored_together_answer_as_each_alone(served):
    import json

    from serving.snapshot import records
    from serving.together import feature_table, features_together

    bundle = Bundle.load(served["bundle_dir"])
    feats = pd.read_parquet(served["features"]).sample(60, random_state=3)
    rows = json.loads(feats.to_json(orient="records"))
    requests = [rows[k : k + n] for k, n in ((0, 1), (1, 16), (17, 3), (20, 40))]
    requests[2] = [{k: v for k, v in r.items() if k != "as_of"} for r in requests[2]]
    broken = [{k: v for k, v in r.items() if k != "frequency"} for r in requests[1]]
    together = features_together(bundle, [*requests, broken, broken[:2]])
    for request, scored in zip(requests, together, strict=False):
        assert scored == records(bundle, feature_table(request))
    for refused in together[-2:]:  # the model reads frequency: both refused, nobody else
        assert isinstance(refused, DataError) and "frequency" in str(refused)
    # The API's columns (no pandas) answer as batch scoring's table does, to JSON's precision.
    batch = records(bundle, feats.reset_index(drop=True).drop(columns="as_of"))
    api = [answer for answers in together[:4] for answer in answers]
    assert len(api) == len(batch) == 60
    for mine, theirs in zip(api, batch, strict=True):
        numbers = [k for k, v in theirs.items() if isinstance(v, float)]
        assert {k: mine[k] for k in numbers} == pytest.approx(
            {k: theirs[k] for k in numbers}, rel=1e-6, abs=1e-9
        )
        assert {k: v for k, v in mine.items() if k not in numbers} == {
            k: v for k, v in theirs.items() if k not in numbers
        }


def test_transactions_of_requests_scored_together_answer_as_each_alone(served):
    """Two requests about the same customer with different histories stay two customers; a
    request for another day gets its own run; the answers equal those of each request alone."""
    from features.customer import transaction_features
    from features.validation import record_columns, to_day
    from serving.schemas import Transaction
    from serving.snapshot import records
    from serving.together import Rows, transactions_together, with_unknown_attributes

    bundle = Bundle.load(served["bundle_dir"])
    tx = served["transactions"]
    ids = tx["customer_id"].drop_duplicates().sample(7, random_state=4).tolist()
    recent = tx[tx["timestamp"] >= pd.Timestamp("2025-06-01", tz="UTC")]
    ids[0] = recent["customer_id"].value_counts().index[0]  # a busy buyer, cut short below
    day, other_day = to_day("2025-12-31"), to_day("2025-06-30")

    def rows(*customers, before=None):
        chosen = tx[tx["customer_id"].isin(customers)]
        if before is not None:
            chosen = chosen[chosen["timestamp"] < pd.Timestamp(before, tz="UTC")]
        return [Transaction(**r) for r in chosen.to_dict("records")]

    requests = [
        Rows(record_columns(rows(ids[0]), day), day),
        Rows(record_columns(rows(ids[1], ids[2], ids[3]), day), day),
        Rows(record_columns(rows(ids[0], before="2025-06-01"), day), day),  # ids[0] again
        Rows(record_columns(rows(ids[4], ids[5]), other_day), other_day),
        Rows(record_columns(rows(ids[6]), day), day),
    ]
    together = transactions_together(bundle, requests)
    for request, answers in zip(requests, together, strict=True):
        alone = transaction_features(request.columns, request.as_of)
        assert answers == records(bundle, with_unknown_attributes(alone, bundle))
    assert [a["customer_id"] for a in together[1]] == sorted(ids[1:4])
    assert together[0][0]["customer_id"] == together[2][0]["customer_id"] == ids[0]
    assert together[0][0]["expected_purchases"] != together[2][0]["expected_purchases"]
