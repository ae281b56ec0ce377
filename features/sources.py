"""Read and write tables: CSV, Parquet, or a SQL table/query through a SQLAlchemy URL.

A SQL source is written `URL#table` or `URL#SELECT ...`; a SQL sink is `URL#table`.
`postgresql://` URLs use the psycopg 3 driver.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
import secrets
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.schema import DataError, has_utc_offset

# Bytes of CSV per block of Arrow's reader (a block is one task for a core). 4 MB read the
# 10M-row benchmark CSV (426 MB) in 0.55-0.7 s, 16 MB in 0.7-0.9 s (smaller tasks are
# probably shared out more evenly over the cores).
BLOCK_BYTES = 1 << 22
_SQL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def is_sql(spec: str) -> bool:
    return "://" in str(spec)


def split_sql(spec: str) -> tuple[str, str]:
    """`URL#table_or_query` -> (URL for SQLAlchemy, table or query)."""
    url, sep, target = str(spec).partition("#")
    if not sep or not target.strip():
        raise DataError(
            f"SQL source/sink {redact(url)!r} needs a table or query after '#', "
            "e.g. postgresql://127.0.0.1/test#transactions"
        )
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url, target.strip()


def split_table(spec: str) -> tuple[str, str]:
    """`URL#table` -> (URL, table), refusing anything but a (schema-qualified) table name,
    since the name is written into SQL."""
    url, table = split_sql(spec)
    if not _SQL_IDENT.match(table):
        raise DataError(f"{redact(url)}: needs a table name after '#', got {table!r}")
    return url, table


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", str(url))


def engine_for(url: str, pre_ping: bool = True, **pool):
    """An engine for `url`; `pool` sizes its connection pool."""
    import sqlalchemy

    try:
        # pre_ping: a connection the database dropped (a restart) is replaced, not used.
        return sqlalchemy.create_engine(url, pool_pre_ping=pre_ping, **pool)
    except Exception as exc:  # bad dialect, missing driver
        raise DataError(f"cannot use database URL {redact(url)}: {exc}") from None


def read_table(spec: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a source as it is. CSV columns come back as strings so that ids keep leading
    zeros."""
    spec = str(spec)
    if is_sql(spec):
        return _read_sql(spec)
    path = _existing(spec)
    if _is_parquet(path):
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    return _read_csv(path, encoding)


def read_csv_typed(spec: str | Path, encoding: str, typed: dict[str, str]) -> pd.DataFrame | None:
    """A CSV source with the columns of `typed` parsed as the file is read, on every core:
    `"number"` as float64, `"timestamp"` as ISO 8601 (with a UTC offset, converted to UTC, when
    the column's first value has one; else naive). Half the time of reading text and converting
    it, and a fraction of the memory. None when the source is not a CSV file, or when any value
    of those columns does not parse: the caller then reads the text (`read_table`), so that
    validation can report the bad rows one by one."""
    spec = str(spec)
    if is_sql(spec) or _is_parquet(path := _existing(spec)):
        return None
    head = _csv_head(path, encoding)
    header = head[0] if head else []
    types = {}
    for name, kind in typed.items():
        if name not in header:
            continue
        if kind == "number":
            types[name] = pa.float64()
        else:
            at = header.index(name)
            first = next((r[at] for r in head[1:] if len(r) > at and r[at].strip()), "")
            types[name] = pa.timestamp("us", tz="UTC" if has_utc_offset(first) else None)
    if not types:
        return None
    try:
        return _read_csv(path, encoding, types)
    except _Unparsed:
        return None


class _Unparsed(Exception):
    """A value of a typed CSV column did not parse."""


def _existing(spec: str) -> Path:
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes)")
    return path


def _is_parquet(path: Path) -> bool:
    suffixes = "".join(path.suffixes).lower()
    return ".parquet" in suffixes or suffixes.endswith(".pq")


def _csv_head(path: Path, encoding: str, rows: int = 100) -> list[list[str]]:
    """The header and first rows, decompressed as Arrow's reader does it (by the suffix:
    `.csv.gz`, `.csv.bz2`, ...)."""
    try:
        with pa.input_stream(str(path), compression="detect") as raw:
            text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
            return list(itertools.islice(csv.reader(text), rows + 1))
    except OSError as exc:  # a corrupt or truncated compressed file
        raise DataError(f"{path} is not a readable CSV file: {exc}") from None


def _read_csv(path: Path, encoding: str, types: dict | None = None) -> pd.DataFrame:
    head = _csv_head(path, encoding, rows=0)
    if not head or not head[0]:
        raise DataError(f"{path} has no header row")
    read_opts = pacsv.ReadOptions(encoding=encoding, block_size=BLOCK_BYTES)
    convert = pacsv.ConvertOptions(
        column_types={name: (types or {}).get(name, pa.string()) for name in head[0]},
        strings_can_be_null=True,
        null_values=[""],
    )
    try:
        table = pacsv.read_csv(path, read_options=read_opts, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf-8" in str(exc).lower():
            line, byte = _first_bad_utf8(path)
            raise DataError(
                f"{path} is not valid UTF-8: byte 0x{byte:02x} on line {line}. "
                "Re-export as UTF-8 or pass --encoding (e.g. --encoding latin-1)."
            ) from None
        if types:  # a value that does not parse, or a file the text read will explain
            raise _Unparsed(str(exc)) from None
        raise DataError(f"{path} is not a readable CSV file: {exc}") from None
    except OSError as exc:  # a compressed file cut short
        raise DataError(f"{path} is not a readable CSV file: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{path} has a header but no data rows")
    return table.to_pandas()


def _first_bad_utf8(path: Path) -> tuple[int, int]:
    with pa.input_stream(str(path), compression="detect") as raw:
        data = raw.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, data[exc.start]
    return 0, 0


def _read_sql(spec: str) -> pd.DataFrame:
    import sqlalchemy

    url, target = split_sql(spec)
    engine = engine_for(url)
    query = target if not _SQL_IDENT.match(target) else f"SELECT * FROM {target}"
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sqlalchemy.text(query), conn)
    except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        reason = str(getattr(cause, "orig", cause)).strip().splitlines()[0]
        raise DataError(f"cannot read {target!r} from {redact(url)}: {reason}") from None
    finally:
        engine.dispose()
    if frame.empty:
        raise DataError(f"{target!r} at {redact(url)} returned no rows")
    return frame


def write_table(frame: pd.DataFrame, spec: str | Path, key: str | None = None) -> str:
    """Write by the destination's form: `.parquet`, `.csv`, or `URL#table`, replacing what was
    there atomically: a reader sees the old rows or the new ones, never part of them. A table
    gets a unique index on `key`, built before it replaces the old one."""
    return write_tables({str(spec): frame}, key)[0]


def write_tables(frames: dict[str, pd.DataFrame], key: str | None = None) -> list[str]:
    """Write several tables that belong together (e.g. lists and their definitions). Tables in
    one database are swapped in one transaction; files are each written beside their place
    and moved into it, once all of them have been written."""
    sql = [spec for spec in frames if is_sql(spec)]
    urls = {split_table(spec)[0] for spec in sql}
    if sql and (len(urls) > 1 or len(sql) < len(frames)):
        raise DataError("tables written together must all go to one database or all to files")
    if sql:
        return _write_sql({split_table(s)[1]: f for s, f in frames.items()}, urls.pop(), key)
    written = [_write_file(frame, Path(spec)) for spec, frame in frames.items()]
    for temporary, path in written:
        os.replace(temporary, path)
    return [str(path) for _, path in written]


def _write_file(frame: pd.DataFrame, path: Path) -> tuple[Path, Path]:
    """Write the file beside `path`; returns (that file, path)."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise DataError(f"cannot tell the format of {path}: use a .parquet or .csv suffix")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    try:
        if suffix == ".csv":
            pacsv.write_csv(table, temporary)
        else:
            # Without pandas' own metadata: it names Arrow-backed dtypes (the list of reasons)
            # in a form pandas cannot read back. Dictionaries only for text: on the numbers of
            # a feature table they cost twice the writing time for a file 20% smaller.
            text = [
                f.name
                for f in table.schema
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ]
            pq.write_table(table.replace_schema_metadata(None), temporary, use_dictionary=text)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary, path


def _write_sql(frames: dict[str, pd.DataFrame], url: str, key: str | None) -> list[str]:
    """Replace the tables atomically: load the rows into staging tables (PostgreSQL COPY where
    available), index them on `key`, then drop the old tables and rename the new ones in one
    transaction. A reader sees the old rows or the new ones, never an empty or half-loaded
    table, and a failed load leaves the old tables as they were."""
    engine = engine_for(url)
    quote = engine.dialect.identifier_preparer.quote

    def qualified(schema: str, n: str) -> str:
        return f"{quote(schema)}.{quote(n)}" if schema else quote(n)

    names = {table: table.rpartition(".") for table in frames}
    current = None
    try:
        for table, frame in frames.items():
            current = table
            schema, _, name = names[table]
            where = {"schema": schema or None, "index": False}
            staging = f"{name}__clientela_staging"
            frame.head(0).to_sql(staging, engine, if_exists="replace", **where)
            if engine.dialect.name == "postgresql":
                _copy_into(engine, qualified(schema, staging), frame)
            else:
                frame.to_sql(staging, engine, if_exists="append", chunksize=50_000, **where)
            if key is not None:
                # a fresh name each time: the old table's index keeps its name until the swap
                index = quote(f"{name[:40]}_{key[:10]}_{secrets.token_hex(4)}")
                target = qualified(schema, staging)
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"CREATE UNIQUE INDEX {index} ON {target} ({quote(key)})")
                    if engine.dialect.name == "postgresql":  # statistics for the planner
                        conn.exec_driver_sql(f"ANALYZE {target}")
        current = ", ".join(frames)
        with engine.begin() as conn:
            for schema, _, name in names.values():
                staging = qualified(schema, f"{name}__clientela_staging")
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {qualified(schema, name)}")
                conn.exec_driver_sql(f"ALTER TABLE {staging} RENAME TO {quote(name)}")
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        for schema, _, name in names.values():
            staging = qualified(schema, f"{name}__clientela_staging")
            with contextlib.suppress(Exception), engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staging}")
        raise DataError(f"cannot write table {current!r} at {redact(url)}: {reason}") from None
    finally:
        engine.dispose()
    return [f"{redact(url)}#{table}" for table in frames]


def _copy_into(engine, target: str, frame: pd.DataFrame) -> None:
    """COPY the rows into `target` (an already quoted table name)."""
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    raw = engine.raw_connection()
    try:
        copy_sql = f"COPY {target} ({cols}) FROM STDIN WITH (FORMAT csv)"
        with raw.cursor() as cur, cur.copy(copy_sql) as copy:
            for start in range(0, len(frame), 200_000):
                buf = io.StringIO()
                frame.iloc[start : start + 200_000].to_csv(buf, index=False, header=False)
                copy.write(buf.getvalue())
        raw.commit()
    finally:
        raw.close()
