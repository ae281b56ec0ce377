"""The feature snapshot behind lookups by id: a Parquet file answered whole when the API starts
(embedded default) or a PostgreSQL table queried per request (for customer bases too big for a
copy per worker).

`clientela score` writes each customer's predictions beside its features. When they were made
by the model the API serves (same fingerprint), the API answers with them as they are: a lookup
is an index scan, with no model run per request. Otherwise it scores the features itself."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import DataError
from features.sources import engine_for, is_sql, read_table, redact, split_table, write_table
from models.bundle import OUTPUT_COLUMNS, Bundle, joined_reasons
from serving.batching import Batcher
from serving.errors import DatabaseUnavailable

DEFAULT_SNAPSHOT = "clientela_snapshot.parquet"
FINGERPRINT = "model_fingerprint"  # of the bundle that made the predictions in the snapshot
NUMBERS = ["persona_id", "churn_probability", "expected_purchases", "predicted_value"]
log = logging.getLogger("clientela.serving")


def query(engine, sql: str, what: str, **params) -> pd.DataFrame:
    """Rows of a parameterised query (`ids` expands to a list); DatabaseUnavailable naming
    `what` when the database is down or unreachable. A failure drops the pooled connections
    and tries once more, so connections the database dropped (a restart) cost no request."""
    import sqlalchemy
    import sqlalchemy.exc

    statement = sqlalchemy.text(sql)
    if "ids" in params:
        statement = statement.bindparams(sqlalchemy.bindparam("ids", expanding=True))
    for _ in range(2):
        try:
            with engine.connect() as conn:
                return pd.read_sql_query(statement, conn, params=params)
        except (sqlalchemy.exc.DBAPIError, pd.errors.DatabaseError) as exc:
            engine.dispose()
            # pandas wraps some of the driver's errors in its own
            cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
            failure = getattr(cause, "orig", None) or cause or exc
    raise unavailable(what, failure)


def unavailable(what: str, failure: BaseException) -> DatabaseUnavailable:
    reason = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
    return DatabaseUnavailable(f"the {what} database is unavailable: {reason or type(failure)}")


def write_snapshot(
    features: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: str,
    predictions: pd.DataFrame | None = None,
    bundle: Bundle | None = None,
) -> str:
    """Features as of a day (recorded in an `as_of` column), indexed by customer id, with the
    `predictions` that `bundle` made from them beside them when given."""
    table = features.assign(as_of=str(as_of.date()))
    if predictions is not None and bundle is not None:
        table = with_answers(table, predictions, bundle)
        if is_sql(spec) or str(spec).lower().endswith(".csv"):
            table = joined_reasons(table)
    return write_table(table, spec, key="customer_id")


def with_answers(features: pd.DataFrame, predictions: pd.DataFrame, bundle: Bundle) -> pd.DataFrame:
    """The feature table with each customer's predictions and the model's fingerprint added."""
    ids = features["customer_id"].astype("str").to_numpy(dtype=object)
    predictions = predictions.reset_index(drop=True)
    if not np.array_equal(ids, predictions["customer_id"].to_numpy(dtype=object)):
        predictions = predictions.set_index("customer_id").reindex(ids).reset_index()
    added = [c for c in OUTPUT_COLUMNS if c not in features.columns]
    table = features.reset_index(drop=True)
    for column in added:
        table[column] = predictions[column].array
    return table.assign(model_version=bundle.version, **{FINGERPRINT: bundle.fingerprint})


def records(bundle: Bundle, features: pd.DataFrame) -> list[dict]:
    """The API's predictions as plain records, in the order of `features`; built from columns,
    with no per-row DataFrame or model objects."""
    if not len(features):
        return []
    columns = bundle.predict(features)
    plain = {k: v.to_pylist() if k == "reasons" else v.tolist() for k, v in columns.items()}
    return _records(plain, bundle.version)


def stored_records(columns: dict[str, list], version: str) -> list[dict]:
    """The same records from predictions stored in a snapshot (`reasons` as a list, or as
    one ';'-separated string where the store has no lists)."""
    columns = dict(columns)
    columns["reasons"] = [
        (r.split(";") if r else []) if isinstance(r, str) or r is None else list(r)
        for r in columns["reasons"]
    ]
    return _records(columns, version)


def _records(columns: dict[str, list], version: str) -> list[dict]:
    extra = {"model_version": version, "error": None}
    return [
        dict(zip(columns, row, strict=True), **extra) for row in zip(*columns.values(), strict=True)
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
    """Predictions by customer id, for `/score/ids`. A file is answered whole at start, from
    the predictions stored in it or by scoring it with the same code and model as every other
    route, and each answer kept as JSON: the snapshot does not change while the API runs, so a
    lookup only joins bytes (about 1 KB of memory per customer). A PostgreSQL table is queried
    per request through a pool of connections, with one statement text (prepared by the driver
    after a few runs) and the unique index `clientela score` built on the customer id: memory
    does not grow with the table."""

    def __init__(self, spec: str | Path, bundle: Bundle):
        self.spec = str(spec)
        self.bundle = bundle
        self.answers: dict[str, bytes] | None = None
        self.stored = False  # whether the API answers with the snapshot's own predictions
        self._batcher: Batcher | None = None
        if is_sql(self.spec):
            url, self.table = split_table(self.spec)
            # Sized for the requests one worker runs at once; a connection the database
            # dropped is replaced on the first failure (see _fetch), not checked before each use.
            self.engine = engine_for(url, pre_ping=False, pool_size=8, max_overflow=8)
        elif not Path(self.spec).exists():
            raise DataError(
                f"feature snapshot {self.spec} does not exist; `clientela score` writes it"
            )
        try:  # a table lacking feature columns fails here, not per request
            if is_sql(self.spec):
                frame = self._query(f"SELECT * FROM {self.table} LIMIT 1")
                # by the driver's own array parameter: PostgreSQL
                postgres = self.engine.dialect.name == "postgresql"
                self.stored = postgres and self._has_answers(frame)
                if not self.stored:
                    records(bundle, frame)
            else:
                frame = read_table(self.spec)
                self.stored = self._has_answers(frame)
                self._answer_all(frame)
            self.as_of = str(frame["as_of"].iloc[0]) if len(frame) else None
        except KeyError as exc:
            raise DataError(
                f"feature snapshot {self.spec} has no column {exc}; `clientela score` writes a "
                "complete one"
            ) from None
        except DataError as exc:
            raise DataError(f"feature snapshot {self.spec}: {exc}") from None
        if not self.stored and len(frame):
            log.warning(
                "clientela: the snapshot %s holds no predictions by model %s: scoring it %s "
                "(`clientela score` with this model writes them)",
                redact(self.spec),
                bundle.version,
                "per request" if is_sql(self.spec) else "at start",
            )
        if self.stored and is_sql(self.spec):
            quote = self.engine.dialect.identifier_preparer.quote
            columns = ", ".join(quote(c) for c in OUTPUT_COLUMNS)
            self._select = f"SELECT {columns} FROM {self.table} WHERE customer_id = ANY(%s)"

    def _has_answers(self, frame: pd.DataFrame) -> bool:
        """Whether `frame` holds predictions, in typed columns, by the model served."""
        if not len(frame) or any(c not in frame.columns for c in [*OUTPUT_COLUMNS, FINGERPRINT]):
            return False
        typed = all(frame[c].dtype.kind in "biuf" for c in [*NUMBERS, "value_percentile"])
        return typed and bool((frame[FINGERPRINT] == self.bundle.fingerprint).all())

    def _answer_all(self, frame: pd.DataFrame) -> None:
        self.answers, self.labels, shared = {}, {}, {}
        for start in range(0, len(frame), 10_000):  # few records alive at once: less memory
            chunk = frame.iloc[start : start + 10_000]
            if self.stored:
                columns = {c: chunk[c].tolist() for c in OUTPUT_COLUMNS}
                answered = stored_records(columns, self.bundle.version)
            else:
                answered = records(self.bundle, chunk)
            for r in answered:
                self.answers[r["customer_id"]] = to_json(r)
                label = (r["persona_name"], r["risk_band"])
                self.labels[r["customer_id"]] = shared.setdefault(label, label)

    def _query(self, sql: str, **params) -> pd.DataFrame:
        rows = query(self.engine, sql, "feature snapshot", **params)
        rows["customer_id"] = rows["customer_id"].astype("str")
        return rows

    def _fetch(self, ids: list[str]) -> list[tuple]:
        """The stored predictions of `ids`, by the driver directly (no DataFrame per request).
        A failure drops the pooled connections and tries once more, so a database restart
        costs no request; a second failure means the database is unavailable."""
        import sqlalchemy.exc

        errors = (sqlalchemy.exc.DBAPIError, self.engine.dialect.dbapi.Error)
        for _ in range(2):
            try:
                connection = self.engine.raw_connection()
                try:
                    with connection.cursor() as cursor:
                        cursor.execute(self._select, (ids,))
                        return cursor.fetchall()
                finally:
                    connection.close()  # back to the pool
            except errors as exc:
                self.engine.dispose()
                failure = getattr(exc, "orig", None) or exc
        raise unavailable("feature snapshot", failure)

    def lookup(self, ids: list[str]) -> tuple[list[bytes | None], Counter]:
        """(per id, in request order, its prediction as JSON or None when unknown; the
        (persona, risk band) counts of the known ones)."""
        if self.answers is not None:
            known = [i for i in ids if i in self.answers]
            return [self.answers.get(i) for i in ids], Counter(self.labels[i] for i in known)
        return _arrange(ids, self._from_database(ids))

    async def lookup_together(self, ids: list[str]) -> tuple[list[bytes | None], Counter]:
        """`lookup` for the API. From a database, the lookups of concurrent requests go
        together: while one query runs, the ids of requests that arrive wait and go in the
        next one, so the number of round trips (and of model runs, when the snapshot holds no
        predictions) follows the database's pace, not the number of requests."""
        if self.answers is not None:
            return self.lookup(ids)
        if self._batcher is None:
            self._batcher = Batcher(self._together, limit=10_000)
        return _arrange(ids, await self._batcher.submit(ids))

    def _together(self, requests: list[list[str]]) -> list[dict]:
        """One query for the ids of several requests; each gets the whole answer."""
        found = self._from_database(list(dict.fromkeys(i for ids in requests for i in ids)))
        return [found] * len(requests)

    def _from_database(self, ids: list[str]) -> dict[str, tuple[bytes, tuple[str, str]]]:
        """id -> (prediction as JSON, (persona, risk band)) for the ids the snapshot knows."""
        if self.stored:
            rows = self._fetch(list(ids))
            columns = {c: [row[k] for row in rows] for k, c in enumerate(OUTPUT_COLUMNS)}
            scored = stored_records(columns, self.bundle.version)
        else:
            rows = self._query(
                f"SELECT * FROM {self.table} WHERE customer_id IN :ids", ids=list(ids)
            )
            scored = records(self.bundle, rows)
        return {r["customer_id"]: (to_json(r), (r["persona_name"], r["risk_band"])) for r in scored}


def _arrange(ids: list[str], found: dict[str, tuple[bytes, tuple[str, str]]]):
    answers = [found[i][0] if i in found else None for i in ids]
    return answers, Counter(found[i][1] for i in ids if i in found)
