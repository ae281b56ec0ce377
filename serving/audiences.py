"""Audiences: named customer lists built from one scoring run by rules a marketer writes in TOML.

    [win-back-big-spenders]
    description = "lapsed customers who still carry value, to win back"
    lifecycle_stage = "lapsed"
    value_percentile = { min = 80 }
    top = 1000                      # the 1,000 with the most value at risk (`by`)

Rules combine with AND: `persona`, `lifecycle_stage` and `risk_band` take one value or a list;
the scores (`churn_probability`, `value_percentile`, `predicted_value`, `expected_purchases`,
`value_at_risk` = churn probability x predicted value) take `{ min = .., max = .. }`. `top = N`
keeps the first N by `by` (default value at risk, largest first); `min_size = N` makes a
smaller list an error instead of a quiet, short campaign.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import LIFECYCLE_STAGES, DataError
from features.sources import is_sql, split_table
from serving.errors import AudiencesMissing

RISK_BANDS = ("low", "medium", "high")  # models.bundle.RISK_BANDS, named without the models
SCORES = {  # score -> the range it can take
    "churn_probability": (0.0, 1.0),
    "value_percentile": (0.0, 100.0),
    "predicted_value": (0.0, math.inf),
    "expected_purchases": (0.0, math.inf),
    "value_at_risk": (0.0, math.inf),
}
LISTS = {"persona": None, "lifecycle_stage": LIFECYCLE_STAGES, "risk_band": RISK_BANDS}
OPTIONS = ("description", "top", "by", "min_size")
FIELDS = (*OPTIONS, *LISTS, *SCORES)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MEMBER_COLUMNS = [
    "audience",
    "rank",
    "customer_id",
    "persona_id",
    "persona_name",
    "lifecycle_stage",
    "risk_band",
    "churn_probability",
    "expected_purchases",
    "predicted_value",
    "value_percentile",
    "value_at_risk",
    "model_version",
    "as_of",
]
BUNDLED = Path(__file__).with_name("audiences.toml")


@dataclass(frozen=True)
class Audience:
    """One audience definition, checked: every field known, every range possible."""

    name: str
    description: str = ""
    lists: dict[str, tuple] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    top: int | None = None
    by: str = "value_at_risk"
    min_size: int = 0

    def definition(self) -> dict:
        """The rules as written (for the output, MLflow and the API)."""
        rules: dict = {k: list(v) for k, v in self.lists.items()}
        for score, (low, high) in self.ranges.items():
            rules[score] = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        if self.top is not None:
            rules["top"] = self.top
        rules["by"] = self.by
        if self.min_size:
            rules["min_size"] = self.min_size
        return rules

    def select(self, scores: pd.DataFrame) -> pd.DataFrame:
        """The members, best first by `by` (ties by customer id), cut at `top`."""
        keep = np.ones(len(scores), dtype=bool)
        for column, allowed in self.lists.items():
            if column == "persona":
                ids = [v for v in allowed if isinstance(v, int)]
                names = [v for v in allowed if isinstance(v, str)]
                keep &= (
                    scores["persona_id"].isin(ids) | scores["persona_name"].isin(names)
                ).to_numpy()
            else:
                keep &= scores[column].isin(allowed).to_numpy()
        for score, (low, high) in self.ranges.items():
            values = scores[score].to_numpy(dtype="float64", na_value=np.nan)
            if low is not None:
                keep &= values >= low
            if high is not None:
                keep &= values <= high
        chosen = scores[keep].sort_values([self.by, "customer_id"], ascending=[False, True])
        return chosen if self.top is None else chosen.head(self.top)


def _fail(source: str, name: str, message: str) -> DataError:
    return DataError(f"{source}: audience [{name}]: {message}")


def _number(source: str, name: str, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _fail(source, name, f"{where} must be a number, got {value!r}")
    return float(value)


def _count(source: str, name: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(source, name, f"{key} must be a whole number of at least 1, got {value!r}")
    return value


def _audience(source: str, name: str, rules) -> Audience:
    if not isinstance(rules, dict):
        raise DataError(
            f"{source}: {name!r} is not an audience: write [{name}] with its rules below it"
        )
    if not NAME.match(name):
        raise _fail(source, name, "a name is letters, digits, '-', '_' or '.' (it appears in URLs)")
    unknown = [k for k in rules if k not in FIELDS]
    if unknown:
        raise _fail(
            source, name, f"unknown field {unknown[0]!r}; known fields: {', '.join(FIELDS)}"
        )
    lists = {}
    for key, allowed in LISTS.items():
        if key not in rules:
            continue
        values = rules[key] if isinstance(rules[key], list) else [rules[key]]
        if not values:
            raise _fail(source, name, f"{key} is an empty list: no customer can match")
        for value in values:
            if key == "persona":
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise _fail(source, name, f"persona is a name or an id, got {value!r}")
            elif value not in allowed:
                raise _fail(
                    source,
                    name,
                    f"{key} {value!r} is not one of {', '.join(map(repr, allowed))}",
                )
        lists[key] = tuple(values)
    ranges = {}
    for score, (lowest, highest) in SCORES.items():
        if score not in rules:
            continue
        bounds = rules[score]
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
            raise _fail(source, name, f"{score} takes {{ min = .., max = .. }}, got {bounds!r}")
        low, high = (
            None if bounds.get(k) is None else _number(source, name, f"{score}.{k}", bounds[k])
            for k in ("min", "max")
        )
        for k, v in (("min", low), ("max", high)):
            if v is not None and not lowest <= v <= highest:
                raise _fail(
                    source,
                    name,
                    f"{score}.{k} = {v:g} is outside the range of {score} "
                    f"[{lowest:g}, {highest:g}]: no customer can match",
                )
        if low is not None and high is not None and low > high:
            raise _fail(source, name, f"{score}: min {low:g} > max {high:g}, no customer can match")
        ranges[score] = (low, high)
    by = rules.get("by", "value_at_risk")
    if by not in SCORES:
        raise _fail(source, name, f"by = {by!r}: rank by one of {', '.join(SCORES)}")
    description = rules.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, name, f"description must be text, got {description!r}")
    top = None if "top" not in rules else _count(source, name, "top", rules["top"])
    min_size = 0 if "min_size" not in rules else _count(source, name, "min_size", rules["min_size"])
    if top is not None and min_size > top:
        raise _fail(source, name, f"min_size {min_size} > top {top}: the list can never be full")
    return Audience(name, description, lists, ranges, top, by, min_size)


def parse_audiences(text: str, source: str) -> list[Audience]:
    """Audience definitions from TOML text, each checked; the first problem is an error that
    names the audience and the field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{source} is not valid TOML: {exc}") from None
    if not document:
        raise DataError(f"{source} defines no audience: write [name] followed by its rules")
    return [_audience(source, name, rules) for name, rules in document.items()]


def load_audiences(path: str | Path | None) -> list[Audience]:
    """Definitions from a TOML file; without one, the examples that ship with clientela."""
    path = Path(path) if path is not None else BUNDLED
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"audience rules {path} do not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read audience rules {path}: {exc}") from None
    return parse_audiences(text, str(path))


def build_audiences(
    scores: pd.DataFrame, audiences: list[Audience], source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members: one row per audience and customer with its rank and scores; definitions: one
    row per audience with its rules, size, value at risk, model version and as_of)."""
    frame = scores.assign(
        churn_probability=pd.to_numeric(scores["churn_probability"]),
        predicted_value=pd.to_numeric(scores["predicted_value"]),
    )
    frame["value_at_risk"] = frame["churn_probability"] * frame["predicted_value"]
    frame["customer_id"] = frame["customer_id"].astype("str")
    personas = set(frame["persona_name"].dropna()) | set(frame["persona_id"].dropna().astype(int))
    built_at = datetime.now(UTC).isoformat(timespec="seconds")
    version = str(frame["model_version"].iloc[0]) if len(frame) else ""
    as_of = str(frame["as_of"].iloc[0]) if len(frame) else ""
    members, definitions = [], []
    for audience in audiences:
        absent = [p for p in audience.lists.get("persona", ()) if p not in personas]
        if absent:
            named = ", ".join(sorted(map(repr, frame["persona_name"].dropna().unique())))
            raise _fail(
                source, audience.name, f"persona {absent[0]!r} is not in these scores ({named})"
            )
        chosen = audience.select(frame)
        if len(chosen) < audience.min_size:
            raise _fail(
                source,
                audience.name,
                f"{len(chosen)} customer(s) match, fewer than min_size = {audience.min_size}",
            )
        members.append(
            chosen.assign(audience=audience.name, rank=np.arange(1, len(chosen) + 1))
            .reindex(columns=MEMBER_COLUMNS)
            .astype({"rank": "int64"})
        )
        definitions.append(
            {
                "audience": audience.name,
                "description": audience.description,
                "rules": json.dumps(audience.definition(), sort_keys=True),
                "customers": len(chosen),
                "predicted_value": float(chosen["predicted_value"].sum()),
                "value_at_risk": float(chosen["value_at_risk"].sum()),
                "model_version": version,
                "as_of": as_of,
                "built_at": built_at,
            }
        )
    return pd.concat(members, ignore_index=True), pd.DataFrame(definitions)


def definitions_spec(spec: str) -> str:
    """Where the definitions go beside the members: `x.parquet` -> `x.definitions.parquet`,
    `URL#table` -> `URL#table_definitions`."""
    if is_sql(spec):
        split_table(spec)  # a clear error for anything but a table name
        return f"{spec}_definitions"
    path = Path(spec)
    return str(path.with_name(f"{path.stem}.definitions{path.suffix}"))


NUMBERS = {
    "customers": "int64",
    "rank": "int64",
    "persona_id": "Int64",
    "value_percentile": "Int64",
}


def _records(frame: pd.DataFrame) -> list[dict]:
    """Plain records with numbers as numbers (a CSV reads back as text) and null for missing."""
    frame = frame.copy()
    for col in frame.columns:
        if col in NUMBERS or col in SCORES or col == "predicted_value":
            frame[col] = pd.to_numeric(frame[col]).astype(NUMBERS.get(col, "float64"))
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


class AudienceStore:
    """The audiences the API serves, as `clientela audience` last wrote them. Files are read
    again when they change (a rebuild shows without a restart); a database is queried per
    request, a page of members at a time."""

    def __init__(self, spec: str):
        self.spec = spec
        self.definitions_spec = definitions_spec(spec)
        self._files: tuple | None = None  # (mtimes, definitions, members by audience)
        if is_sql(spec):
            from features.sources import engine_for

            url, self.table = split_table(spec)
            self.engine = engine_for(url)

    def definitions(self) -> list[dict]:
        """One record per audience, as `build_audiences` wrote it, rules as a dict."""
        if is_sql(self.spec):
            frame = self._query(f"SELECT * FROM {self.table}_definitions ORDER BY audience")
        else:
            frame = self._read_files()[0]
        return [
            {**r, "description": r["description"] or "", "rules": json.loads(r["rules"])}
            for r in _records(frame)
        ]

    def members(self, name: str, offset: int, limit: int) -> list[dict]:
        """Members `offset` .. `offset + limit` of one audience, by rank."""
        if is_sql(self.spec):
            frame = self._query(
                f"SELECT * FROM {self.table} WHERE audience = :name "
                "ORDER BY rank LIMIT :limit OFFSET :offset",
                name=name,
                limit=limit,
                offset=offset,
            )
        else:
            frame = self._read_files()[1].get(name, pd.DataFrame(columns=MEMBER_COLUMNS))
            frame = frame.iloc[offset : offset + limit]
        return _records(frame.drop(columns=["audience", "model_version", "as_of"]))

    def _query(self, sql: str, **params) -> pd.DataFrame:
        import sqlalchemy

        from serving.snapshot import DatabaseUnavailable, query

        try:
            return query(self.engine, sql, "audiences", **params)
        except DatabaseUnavailable:
            schema, _, name = self.table.rpartition(".")
            try:
                present = sqlalchemy.inspect(self.engine).has_table(name, schema or None)
            except Exception:  # the database itself is away: the 503 stands
                raise DatabaseUnavailable from None
            if not present:
                raise AudiencesMissing(self._missing()) from None
            raise

    def _missing(self) -> str:
        return f"no audiences at {self.spec}: build them with `clientela audience --out ...`"

    def _read_files(self) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        from features.sources import read_table

        paths = (Path(self.definitions_spec), Path(self.spec))
        try:
            mtimes = tuple(p.stat().st_mtime_ns for p in paths)
        except FileNotFoundError:
            raise AudiencesMissing(self._missing()) from None
        if self._files is None or self._files[0] != mtimes:
            definitions = read_table(paths[0])
            # With every list empty, a CSV of members is a header alone.
            empty = not pd.to_numeric(definitions["customers"]).sum()
            members = pd.DataFrame(columns=MEMBER_COLUMNS) if empty else read_table(paths[1])
            members["customer_id"] = members["customer_id"].astype("str")
            groups = {k: g.sort_values("rank") for k, g in members.groupby("audience")}
            sizes = {k: len(g) for k, g in groups.items()}
            counts = pd.to_numeric(definitions["customers"]).astype("int64")
            written = {a: n for a, n in zip(definitions["audience"], counts, strict=True) if n}
            # The two files are replaced one after the other: read across a rebuild they may not
            # match yet, and the last pair that did is kept until they do.
            if self._files is None or sizes == written:
                self._files = (mtimes, definitions.sort_values("audience"), groups)
        return self._files[1], self._files[2]
