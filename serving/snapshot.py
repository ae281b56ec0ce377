"""The feature snapshot behind lookups by id: a Parquet file held in memory (embedded default)
or a PostgreSQL table queried per request (for scale)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.schema import DataError
from features.sources import engine_for, is_sql, read_table, split_table, write_table

DEFAULT_SNAPSHOT = "clientela_snapshot.parquet"


def write_snapshot(features: pd.DataFrame, as_of: pd.Timestamp, spec: str) -> str:
    """Features as of a day, with that day recorded in an `as_of` column."""
    return write_table(features.assign(as_of=str(as_of.date())), spec)


class Snapshot:
    def __init__(self, spec: str | Path = DEFAULT_SNAPSHOT):
        self.spec = str(spec)
        if is_sql(self.spec):
            url, self.table = split_table(self.spec)
            self.engine = engine_for(url)
            self.frame = None
        else:
            if not Path(self.spec).exists():
                raise DataError(
                    f"feature snapshot {self.spec} does not exist; `clientela score` writes it"
                )
            frame = read_table(self.spec)
            self.frame = frame.set_index("customer_id", drop=False)
        self.as_of = self._as_of()

    def _as_of(self) -> str | None:
        if self.frame is not None:
            return str(self.frame["as_of"].iloc[0]) if len(self.frame) else None
        import sqlalchemy

        with self.engine.connect() as conn:
            row = conn.execute(sqlalchemy.text(f"SELECT as_of FROM {self.table} LIMIT 1")).first()
        return str(row[0]) if row else None

    def lookup(self, ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
        """(feature rows of the known ids, the unknown ids), in request order."""
        if self.frame is not None:
            known = [i for i in ids if i in self.frame.index]
            rows = self.frame.loc[known].reset_index(drop=True)
        else:
            import sqlalchemy

            query = sqlalchemy.text(
                f"SELECT * FROM {self.table} WHERE customer_id IN :ids"
            ).bindparams(sqlalchemy.bindparam("ids", expanding=True))
            with self.engine.connect() as conn:
                rows = pd.read_sql_query(query, conn, params={"ids": list(ids)})
            rows["customer_id"] = rows["customer_id"].astype("str")
            order = {cid: i for i, cid in enumerate(ids)}
            rows = rows.sort_values("customer_id", key=lambda s: s.map(order)).reset_index(
                drop=True
            )
            known = set(rows["customer_id"])
        known = set(known)
        unknown = [i for i in ids if i not in known]
        return rows, unknown
