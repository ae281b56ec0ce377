"""The feature snapshot behind lookups by id: a Parquet file scored whole when the API starts
(embedded default) or a PostgreSQL table queried and scored per request (for scale)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from features.schema import DataError
from features.sources import engine_for, is_sql, read_table, split_table, write_table
from models.bundle import Bundle

DEFAULT_SNAPSHOT = "clientela_snapshot.parquet"


class DatabaseUnavailable(RuntimeError):
    """A database behind the API cannot be reached now (the API answers 503 and retries)."""


def query(engine, sql: str, what: str, **params) -> pd.DataFrame:
    """Rows of a parameterised query (`ids` expands to a list); DatabaseUnavailable naming
    `what` when the database is down or unreachable."""
    import sqlalchemy
    import sqlalchemy.exc

    statement = sqlalchemy.text(sql)
    if "ids" in params:
        statement = statement.bindparams(sqlalchemy.bindparam("ids", expanding=True))
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(statement, conn, params=params)
    except (sqlalchemy.exc.DBAPIError, pd.errors.DatabaseError) as exc:
        # pandas wraps some of the driver's errors in its own
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        orig = getattr(cause, "orig", None) or cause or exc
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"the {what} database is unavailable: {reason}") from None


def write_snapshot(features: pd.DataFrame, as_of: pd.Timestamp, spec: str) -> str:
    """Features as of a day, with that day recorded in an `as_of` column."""
    return write_table(features.assign(as_of=str(as_of.date())), spec)


def records(bundle: Bundle, features: pd.DataFrame) -> list[dict]:
    """The API's predictions as plain records, in the order of `features`; built from columns,
    with no per-row DataFrame or model objects."""
    if not len(features):
        return []
    columns = bundle.predict(features)
    plain = {k: v.to_pylist() if k == "reasons" else v.tolist() for k, v in columns.items()}
    extra = {"model_version": bundle.version, "error": None}
    return [
        dict(zip(plain, row, strict=True), **extra) for row in zip(*plain.values(), strict=True)
    ]


def to_json(record: dict) -> bytes:
    """One prediction as JSON; missing or non-finite numbers become null, as pydantic does."""
    finite = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(finite, separators=(",", ":")).encode()


def labels(records: list[dict]) -> Counter:
    """(persona, risk band) -> customers, for the Prometheus counter."""
    return Counter((r["persona_name"], r["risk_band"]) for r in records)


class Snapshot:
    """Predictions by customer id, for `/score/ids`. A file is scored once at start, by the same
    code and model as every other route, and each answer kept as JSON: the snapshot does not
    change while the API runs, so a lookup only joins bytes (about 1 KB of memory per customer). A
    PostgreSQL table is queried and scored per request."""

    def __init__(self, spec: str | Path, bundle: Bundle):
        self.spec = str(spec)
        self.bundle = bundle
        self.answers: dict[str, bytes] | None = None
        if is_sql(self.spec):
            url, self.table = split_table(self.spec)
            self.engine = engine_for(url)
        elif not Path(self.spec).exists():
            raise DataError(
                f"feature snapshot {self.spec} does not exist; `clientela score` writes it"
            )
        try:  # a table lacking feature columns fails here, not per request
            if is_sql(self.spec):
                frame = self._query(f"SELECT * FROM {self.table} LIMIT 1")
                records(bundle, frame)
            else:
                frame = read_table(self.spec)
                self._answer_all(frame)
            self.as_of = str(frame["as_of"].iloc[0]) if len(frame) else None
        except KeyError as exc:
            raise DataError(
                f"feature snapshot {self.spec} has no column {exc}; `clientela score` writes a "
                "complete one"
            ) from None
        except DataError as exc:
            raise DataError(f"feature snapshot {self.spec}: {exc}") from None

    def _answer_all(self, frame: pd.DataFrame) -> None:
        self.answers, self.labels, shared = {}, {}, {}
        for start in range(0, len(frame), 10_000):  # few records alive at once: less memory
            for r in records(self.bundle, frame.iloc[start : start + 10_000]):
                self.answers[r["customer_id"]] = to_json(r)
                label = (r["persona_name"], r["risk_band"])
                self.labels[r["customer_id"]] = shared.setdefault(label, label)

    def _query(self, sql: str, **params) -> pd.DataFrame:
        rows = query(self.engine, sql, "feature snapshot", **params)
        rows["customer_id"] = rows["customer_id"].astype("str")
        return rows

    def lookup(self, ids: list[str]) -> tuple[list[bytes | None], Counter]:
        """(per id, in request order, its prediction as JSON or None when unknown; the
        (persona, risk band) counts of the known ones)."""
        if self.answers is not None:
            known = [i for i in ids if i in self.answers]
            return [self.answers.get(i) for i in ids], Counter(self.labels[i] for i in known)
        rows = self._query(f"SELECT * FROM {self.table} WHERE customer_id IN :ids", ids=list(ids))
        scored = records(self.bundle, rows)
        answers = {r["customer_id"]: to_json(r) for r in scored}
        return [answers.get(i) for i in ids], labels(scored)
