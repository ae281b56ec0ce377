"""The feature snapshot behind lookups by id: a Parquet file held in memory as model inputs
(embedded default) or a PostgreSQL table queried per request (for scale)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import DataError
from features.sources import engine_for, is_sql, read_table, split_table, write_table
from models.bundle import Prepared

DEFAULT_SNAPSHOT = "clientela_snapshot.parquet"


def write_snapshot(features: pd.DataFrame, as_of: pd.Timestamp, spec: str) -> str:
    """Features as of a day, with that day recorded in an `as_of` column."""
    return write_table(features.assign(as_of=str(as_of.date())), spec)


class Snapshot:
    """Feature rows by customer id, turned into model inputs by `prepare` (`Bundle.prepare`).
    A file is prepared once at start, so a lookup is only array indexing; a PostgreSQL table
    is queried and prepared per request."""

    def __init__(self, spec: str | Path, prepare: Callable[[pd.DataFrame], Prepared]):
        self.spec = str(spec)
        self.prepare = prepare
        if is_sql(self.spec):
            url, self.table = split_table(self.spec)
            self.engine = engine_for(url)
            self.prepared = None
        else:
            if not Path(self.spec).exists():
                raise DataError(
                    f"feature snapshot {self.spec} does not exist; `clientela score` writes it"
                )
            frame = read_table(self.spec)
            try:
                self.prepared = prepare(frame)
                self.as_of = str(frame["as_of"].iloc[0]) if len(frame) else None
            except KeyError as exc:
                raise DataError(
                    f"feature snapshot {self.spec} has no column {exc}; `clientela score` "
                    "writes a complete one"
                ) from None
            self.rows = {cid: i for i, cid in enumerate(self.prepared.customer_id)}
            return
        self.as_of = self._sql_as_of()

    def _sql_as_of(self) -> str | None:
        import sqlalchemy

        with self.engine.connect() as conn:
            row = conn.execute(sqlalchemy.text(f"SELECT as_of FROM {self.table} LIMIT 1")).first()
        return str(row[0]) if row else None

    def lookup(self, ids: list[str]) -> tuple[Prepared, list[str]]:
        """(model inputs of the known ids, in request order; the unknown ids)."""
        if self.prepared is not None:
            found = [self.rows.get(i) for i in ids]
            unknown = [i for i, row in zip(ids, found, strict=True) if row is None]
            rows = np.array([row for row in found if row is not None], dtype="int64")
            return self.prepared.take(rows), unknown
        import sqlalchemy

        query = sqlalchemy.text(f"SELECT * FROM {self.table} WHERE customer_id IN :ids").bindparams(
            sqlalchemy.bindparam("ids", expanding=True)
        )
        with self.engine.connect() as conn:
            rows = pd.read_sql_query(query, conn, params={"ids": list(ids)})
        rows["customer_id"] = rows["customer_id"].astype("str")
        order = {cid: i for i, cid in enumerate(ids)}
        rows = rows.sort_values("customer_id", key=lambda s: s.map(order))
        known = set(rows["customer_id"])
        return self.prepare(rows), [i for i in ids if i not in known]
