"""Audiences: exact lists on a small scores table, errors that name the rule, atomic outputs
(files and PostgreSQL), and the /audiences routes."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from clientela import app
from features.schema import DataError
from serving.audiences import (
    RISK_BANDS,
    AudiencesMissing,
    AudienceStore,
    build_audiences,
    definitions_spec,
    load_audiences,
    parse_audiences,
)

SCORES = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d", "e", "f"],
        "persona_id": [0, 0, 1, 1, 2, 0],
        "persona_name": [
            "regulars",
            "regulars",
            "wholesalers",
            "wholesalers",
            "one-offs",
            "regulars",
        ],
        "lifecycle_stage": ["regular", "regular", "existing", "lapsed", "walk-in", "lapsed"],
        "churn_probability": [0.1, 0.7, 0.6, 0.9, 0.95, 0.8],
        "risk_band": ["low", "high", "medium", "high", "high", "high"],
        "expected_purchases": [4.0, 1.0, 6.0, 0.2, 0.05, 0.3],
        "predicted_value": [100.0, 50.0, 2000.0, 300.0, 5.0, 40.0],
        "value_percentile": [70, 50, 99, 90, 10, 45],
        "model_version": "clientela/3",
        "as_of": "2025-12-31",
    }
)
RULES = """
[at-risk]
description = "worth keeping, likely to go"
churn_probability = { min = 0.5 }
value_percentile = { min = 50 }

[win-back]
lifecycle_stage = "lapsed"
top = 1
by = "predicted_value"

[wholesale-or-regular]
persona = ["wholesalers", 0]
risk_band = ["high", "medium"]
value_at_risk = { max = 1000 }
"""


def test_rules_select_rank_and_summarise_exactly():
    members, summary = build_audiences(SCORES, parse_audiences(RULES, "rules.toml"), "x")
    lists = {k: g["customer_id"].tolist() for k, g in members.groupby("audience", sort=False)}
    # value at risk: b 35, c 1200, d 270, f 32 -> ranked by it, largest first
    assert lists["at-risk"] == ["c", "d", "b"]
    assert lists["win-back"] == ["d"]  # lapsed d (300) and f (40): top 1 by predicted value
    assert lists["wholesale-or-regular"] == ["d", "b", "f"]  # c's 1,200 at risk is over 1,000
    at_risk = members[members["audience"] == "at-risk"]
    assert at_risk["rank"].tolist() == [1, 2, 3]
    assert at_risk["value_at_risk"].tolist() == pytest.approx([1200, 270, 35])
    row = summary.set_index("audience").loc["at-risk"]
    assert row["customers"] == 3
    assert row["predicted_value"] == pytest.approx(2350)
    assert row["value_at_risk"] == pytest.approx(1505)
    assert (row["model_version"], row["as_of"]) == ("clientela/3", "2025-12-31")
    assert json.loads(row["rules"]) == {
        "by": "value_at_risk",
        "churn_probability": {"min": 0.5},
        "value_percentile": {"min": 50.0},
    }
    assert row["description"] == "worth keeping, likely to go"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("[a]\nchurn = { min = 0.5 }", r"audience \[a\]: unknown field 'churn'"),
        ("[a]\nchurn_probability = { min = 0.8, max = 0.5 }", "min 0.8 > max 0.5"),
        ("[a]\nchurn_probability = { max = 1.5 }", r"outside the range of churn_probability"),
        ("[a]\nvalue_percentile = { min = -1 }", "value_percentile.min = -1 is outside"),
        ("[a]\nchurn_probability = 0.5", r"takes \{ min = .., max = .. \}"),
        ("[a]\nchurn_probability = { above = 0.5 }", "takes"),
        ("[a]\nchurn_probability = { min = 'high' }", "churn_probability.min must be a number"),
        ("[a]\nlifecycle_stage = 'vip'", "lifecycle_stage 'vip' is not one of 'walk-in'"),
        ("[a]\nrisk_band = []", "risk_band is an empty list"),
        ("[a]\ntop = 0", "top must be a whole number of at least 1, got 0"),
        ("[a]\nby = 'age'", "by = 'age': rank by one of churn_probability"),
        ("[a]\ntop = 5\nmin_size = 10", "min_size 10 > top 5"),
        ('["a b"]\ntop = 5', "a name is letters"),
        ("top = 5", "'top' is not an audience"),
        ("", "defines no audience"),
        ("[a\n", "is not valid TOML"),
    ],
)
def test_bad_definitions_name_the_audience_and_the_field(rules, message):
    with pytest.raises(DataError, match=message):
        parse_audiences(rules, "rules.toml")


def test_an_unknown_persona_or_a_short_list_is_refused():
    unknown = parse_audiences("[a]\npersona = 'VIPs'", "rules.toml")
    with pytest.raises(DataError, match=r"\[a\]: persona 'VIPs' is not in these scores"):
        build_audiences(SCORES, unknown, "rules.toml")
    short = parse_audiences("[a]\nlifecycle_stage = 'new'\nmin_size = 1", "rules.toml")
    with pytest.raises(DataError, match="0 customer\\(s\\) match, fewer than min_size = 1"):
        build_audiences(SCORES, short, "rules.toml")


def test_the_bundled_rules_are_valid_and_the_bands_are_the_models():
    from models.bundle import RISK_BANDS as thresholds

    assert len(load_audiences(None)) == 3
    assert (*thresholds, "high") == RISK_BANDS


def test_definitions_go_beside_the_members():
    assert definitions_spec("out/a.parquet") == "out/a.definitions.parquet"
    assert definitions_spec("a.csv") == "a.definitions.csv"
    assert definitions_spec("postgresql://h/db#lists") == "postgresql://h/db#lists_definitions"
    with pytest.raises(DataError, match="needs a table name"):
        definitions_spec("postgresql://h/db#SELECT 1")


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_cli_writes_lists_and_definitions_that_the_store_reads_back(tmp_path, suffix):
    SCORES.to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "rules.toml").write_text(RULES)
    out = tmp_path / f"lists.{suffix}"
    store = AudienceStore(str(out))
    with pytest.raises(AudiencesMissing, match="build them with `clientela audience"):
        store.definitions()
    scores, rules = str(tmp_path / "scores.parquet"), str(tmp_path / "rules.toml")
    result = CliRunner().invoke(
        app, ["audience", "-s", scores, "--rules", rules, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "at-risk" in result.output and "1,505" in result.output
    assert not list(tmp_path.glob(".*partial"))  # written beside, then moved into place
    definitions = store.definitions()
    assert [d["audience"] for d in definitions] == ["at-risk", "wholesale-or-regular", "win-back"]
    assert definitions[0]["customers"] == 3 and definitions[0]["rules"]["by"] == "value_at_risk"
    page = store.members("at-risk", 1, 5)
    assert [(m["rank"], m["customer_id"]) for m in page] == [(2, "d"), (3, "b")]
    assert page[0]["persona_id"] == 1 and page[0]["value_at_risk"] == pytest.approx(270)


def test_cli_refuses_bad_rules_with_one_line(tmp_path):
    SCORES.to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "rules.toml").write_text("[a]\nchurn_probability = { min = 2 }")
    result = CliRunner().invoke(
        app, ["audience", "-s", str(tmp_path / "scores.parquet"), "--rules",
              str(tmp_path / "rules.toml"), "--out", str(tmp_path / "x.parquet")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "audience [a]: churn_probability.min = 2 is outside" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.parquet").exists()


def test_lists_and_definitions_replace_together_in_postgresql(pg_url):
    import sqlalchemy

    from features.sources import write_tables

    spec = f"{pg_url}#clientela_test_audiences"
    first, summary = build_audiences(SCORES, parse_audiences(RULES, "r"), "r")
    write_tables({spec: first, definitions_spec(spec): summary})
    store = AudienceStore(spec)
    assert [d["customers"] for d in store.definitions()] == [3, 3, 1]
    assert [m["customer_id"] for m in store.members("at-risk", 0, 2)] == ["c", "d"]
    # A rebuild that fails on the second table (PostgreSQL stores no NUL in text) leaves both
    # tables as they were, the first one included.
    bad = summary.assign(description="nul \x00")
    with pytest.raises(DataError, match="cannot write table"):
        write_tables({spec: first.head(1), definitions_spec(spec): bad})
    assert [d["customers"] for d in store.definitions()] == [3, 3, 1]
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE clientela_test_audiences_definitions")
        conn.exec_driver_sql("DROP TABLE clientela_test_audiences")
    engine.dispose()
    with pytest.raises(AudiencesMissing):
        store.definitions()


def test_audience_routes_page_through_the_lists(client, tmp_path, monkeypatch):
    from serving.service import info_app

    out = str(tmp_path / "lists.parquet")
    service = info_app.state.clientela
    monkeypatch.setattr(service, "audiences", AudienceStore(out))
    missing = client.get("/audiences")
    assert missing.status_code == 404 and "clientela audience" in missing.json()["error"]

    members, summary = build_audiences(SCORES, parse_audiences(RULES, "r"), "r")
    from features.sources import write_tables

    write_tables({out: members, definitions_spec(out): summary})
    listed = client.get("/audiences").json()["audiences"]
    assert [(a["audience"], a["customers"]) for a in listed] == [
        ("at-risk", 3),
        ("wholesale-or-regular", 3),
        ("win-back", 1),
    ]
    assert listed[0]["value_at_risk"] == pytest.approx(1505)
    page = client.get("/audiences/at-risk", params={"limit": 2}).json()
    assert [c["customer_id"] for c in page["customers"]] == ["c", "d"]
    assert page["next_offset"] == 2 and page["audience"]["as_of"] == "2025-12-31"
    last = client.get("/audiences/at-risk", params={"offset": 2, "limit": 2}).json()
    assert [c["customer_id"] for c in last["customers"]] == ["b"] and last["next_offset"] is None

    # A rebuild shows without a restart.
    fewer = parse_audiences("[win-back]\nlifecycle_stage = 'lapsed'", "r")
    members, summary = build_audiences(SCORES, fewer, "r")
    write_tables({out: members, definitions_spec(out): summary})
    assert [a["audience"] for a in client.get("/audiences").json()["audiences"]] == ["win-back"]

    unknown = client.get("/audiences/at-risk")
    assert unknown.status_code == 404 and "the audiences are: win-back" in unknown.text
    bad = client.get("/audiences/win-back", params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["query", "limit"]
    over = client.get("/audiences/win-back", params={"limit": 10**6})
    assert over.status_code == 400 and "the limit is" in over.text


def test_audiences_need_the_token(client, monkeypatch):
    from dataclasses import replace

    from serving.service import info_app

    service = info_app.state.clientela
    monkeypatch.setattr(service, "settings", replace(service.settings, token="s3cret"))
    assert client.get("/audiences").status_code == 401
    assert client.get("/audiences/x").status_code == 401
