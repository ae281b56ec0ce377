"""The same validation and features on Apache Spark, for sources one machine cannot hold.

Features are per customer (DESIGN: "Growing past one machine"). Spark hashes customers into
partitions, and each partition, many customers at once, goes through the very functions the
one-machine path runs (`validate_transactions`, `validate_customers`, `customer_features`) with
`mapInPandas`. What spans partitions is settled on the driver: the as_of (the latest valid day,
when not given), and the data-quality report, summed over partitions and held to the same
limits (a problem in more than 1% of all rows refuses the source).

Sources: CSV or Parquet paths (a file or a directory of parts, local or any URL Spark reads),
or `spark:db.table` for a table of the Spark catalog. Outputs: Parquet (a directory of parts)
or `spark:db.table`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from features.customer import customer_features
from features.schema import (
    CUSTOMER_OPTIONAL,
    CUSTOMER_REQUIRED,
    TRANSACTION_OPTIONAL,
    TRANSACTION_REQUIRED,
    ColumnMapping,
    DataError,
)
from features.validation import (
    QualityReport,
    normalize_ids,
    refusal,
    settle_notes,
    to_day,
    validate_customers,
    validate_transactions,
)

TABLE = "spark:"
KIND, KEY, REPORT = "_clientela_kind", "_clientela_key", "_clientela_report"


# PySpark 4.3 warns that it "does not yet fully support pandas >= 3.0.0"; the parts used here
# (mapInPandas, Arrow conversion) are checked equal to the one-machine path in the tests.
QUIET = "ignore:PySpark does not yet fully support pandas:FutureWarning"


def session(master: str):
    """A Spark session on `master` (e.g. `local[2]`, `spark://host:7077`), in UTC."""
    import warnings

    from pyspark.sql import SparkSession

    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
    if master.startswith("local"):
        # Local workers run this very interpreter (the project's venv), not the first `python3`
        # on the PATH; a cluster's executors run what the cluster configures.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("clientela")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executorEnv.PYTHONWARNINGS", QUIET)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read(spark, spec: str, encoding: str = "utf-8"):
    """A source as a Spark DataFrame; CSV columns as text, as on one machine."""
    if spec.startswith(TABLE):
        return spark.table(spec.removeprefix(TABLE))
    if ".csv" in spec.lower():
        return spark.read.option("header", True).option("encoding", encoding).csv(spec)
    return spark.read.parquet(spec)


def write(frame, spec: str) -> str:
    """Replace the destination: Parquet parts in a directory, or a catalog table."""
    if spec.startswith(TABLE):
        frame.write.mode("overwrite").saveAsTable(spec.removeprefix(TABLE))
    else:
        frame.write.mode("overwrite").parquet(spec)
    return spec


def _canonical(frame, mapping: ColumnMapping, wanted: tuple[str, ...]):
    renames = mapping.source_to_canonical(frame.columns)
    for source, canonical in renames.items():
        frame = frame.withColumnRenamed(source, canonical)
    return frame.select([c for c in wanted if c in frame.columns])


def _spark_type(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    return "string"


@dataclass(frozen=True)
class _Plan:
    """What every partition needs to know, sent to the executors with the function."""

    tx_columns: tuple[str, ...]
    customer_columns: tuple[str, ...]
    mapping: ColumnMapping
    as_of: pd.Timestamp | None
    drop_duplicates: bool
    today: pd.Timestamp
    feature_columns: tuple[str, ...] = ()
    feature_dtypes: tuple[str, ...] = ()


def _split(part: pd.DataFrame, plan: _Plan) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    kind = part[KIND].to_numpy()
    tx = part.loc[kind == "t", list(plan.tx_columns)].reset_index(drop=True)
    if not plan.customer_columns:
        return tx, None
    return tx, part.loc[kind == "c", list(plan.customer_columns)].reset_index(drop=True)


def _validated(part: pd.DataFrame, plan: _Plan):
    """(transactions, as_of, report, customers, customers report) of one partition."""
    tx, cust = _split(part, plan)
    clean, as_of, report = None, None, None
    if len(tx):
        # Limits are applied to the sums over all partitions, on the driver.
        clean, as_of, report = validate_transactions(
            tx,
            plan.mapping,
            plan.as_of,
            max_bad_fraction=1.0,
            drop_duplicates=plan.drop_duplicates,
            today=plan.today,
            part=True,
        )
    attrs, attrs_report = None, None
    if cust is not None and len(cust):
        attrs, attrs_report = validate_customers(cust, plan.mapping, max_bad_fraction=1.0)
    return clean, as_of, report, attrs, attrs_report


def _whole(parts: Iterator[pd.DataFrame]) -> pd.DataFrame | None:
    """A partition's rows in one frame (Arrow hands them over in batches), None if empty."""
    frames = [p for p in parts if len(p)]
    return pd.concat(frames, ignore_index=True) if frames else None


def _latest_day(plan: _Plan):
    def run(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        part = _whole(parts)
        if part is None:
            return
        _, as_of, *_ = _validated(part, plan)
        yield pd.DataFrame({"as_of": [None if as_of is None else str(as_of.date())]})

    return run


def _features(plan: _Plan):
    def run(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        part = _whole(parts)
        if part is None:
            return
        clean, _, report, attrs, attrs_report = _validated(part, plan)
        reports = {"transactions": report, "customers": attrs_report}
        summary = {k: r.to_dict() for k, r in reports.items() if r is not None}
        if clean is not None and len(clean):
            table = customer_features(clean, plan.as_of, attrs)
            table = table.reindex(columns=list(plan.feature_columns))
            for col, dtype in zip(plan.feature_columns, plan.feature_dtypes, strict=True):
                if dtype == "string":
                    table[col] = table[col].astype(object).where(table[col].notna(), None)
            yield table.assign(**{REPORT: None})
        # One more row per partition carries what validation did there.
        empty = {c: pd.Series([None], dtype=object) for c in plan.feature_columns}
        yield pd.DataFrame(empty).assign(**{REPORT: json.dumps(summary)})

    return run


def _merge(reports: list[dict], source: str, max_bad_fraction: float) -> QualityReport:
    """One report from the partitions' reports, refused as one machine refuses a source."""
    merged = QualityReport(source=source)
    for r in reports:
        merged.rows_read += r["rows_read"]
        merged.rows_kept += r["rows_kept"]
        for reason, n in r["dropped"].items():
            merged.drop(reason, n, r["examples"].get(reason))
        for reason, n in r["noted"].items():
            merged.note(reason, n, r["examples"].get(reason))
    settle_notes(merged)
    for reason, n in merged.dropped.items():
        problem, _, column = reason.rpartition(" in '")
        column = column.rstrip("'")
        if problem and column != "customer_id" and n > max_bad_fraction * merged.rows_read:
            example = merged.examples.get(reason)
            raise refusal(source, column, n, merged.rows_read, problem, example)
    return merged


def spark_features(
    spark,
    transactions: str,
    customers: str | None = None,
    as_of=None,
    mapping: ColumnMapping | None = None,
    max_bad_fraction: float = 0.01,
    drop_duplicates: bool = False,
    partitions: int | None = None,
):
    """(Spark DataFrame of features, one row per customer; as_of; the quality reports). The
    features are exactly those `customer_features` gives on one machine."""
    from pyspark.sql import functions as F

    mapping = mapping or ColumnMapping()
    tx = _canonical(
        read(spark, transactions, mapping.encoding),
        mapping,
        TRANSACTION_REQUIRED + TRANSACTION_OPTIONAL,
    )
    sample = tx.limit(1000).toPandas()
    # Problems of the whole source (a missing column, numbers for dates) stop here, as on one
    # machine, before any partition runs.
    validate_transactions(sample, mapping, as_of, max_bad_fraction=1.0, part=True)
    frames = [tx.withColumn(KIND, F.lit("t"))]
    cust_columns: tuple[str, ...] = ()
    if customers:
        cust = _canonical(
            read(spark, customers, mapping.encoding), mapping, CUSTOMER_REQUIRED + CUSTOMER_OPTIONAL
        )
        validate_customers(cust.limit(1000).toPandas(), mapping, max_bad_fraction=1.0)
        cust_columns = tuple(cust.columns)
        frames.append(cust.withColumn(KIND, F.lit("c")))
    # Every column as text into the partitions: the one-machine parsers read it as they read
    # a CSV export (typed sources are written out first, so nothing is lost).
    text = [f.select([F.col(c).cast("string").alias(c) for c in f.columns]) for f in frames]
    union = text[0]
    for other in text[1:]:
        union = union.unionByName(other, allowMissingColumns=True)

    @F.pandas_udf("string")
    def key(ids: pd.Series) -> pd.Series:
        return normalize_ids(ids.astype("str"))

    union = union.withColumn(KEY, key(F.col("customer_id")))
    # Each partition is one pandas frame in a Python worker: about four per input split (Spark
    # reads ~128 MB per split) keeps them to a few hundred MB.
    splits = sum(f.rdd.getNumPartitions() for f in frames)
    union = union.repartition(
        partitions or max(spark.sparkContext.defaultParallelism, 4 * splits), KEY
    )
    today = pd.Timestamp.now(tz="UTC")
    plan = _Plan(tuple(tx.columns), cust_columns, mapping, None, drop_duplicates, today)
    if as_of is None:
        days = union.mapInPandas(_latest_day(plan), "as_of string").toPandas()["as_of"]
        if days.dropna().empty:
            raise DataError(f"{transactions}: no valid rows")
        as_of = max(to_day(d) for d in days.dropna())
    as_of = to_day(as_of)
    # The columns and types of the feature table, from the first rows.
    example, day, _ = validate_transactions(sample, mapping, None, max_bad_fraction=1.0, part=True)
    if day is None:
        raise DataError(f"{transactions}: none of the first 1,000 rows is valid")
    attrs = None
    if customers:
        attrs = validate_customers(cust.limit(1000).toPandas(), mapping, max_bad_fraction=1.0)[0]
    shape = customer_features(example, day, attrs)
    dtypes = tuple(_spark_type(t) for t in shape.dtypes)
    plan = _Plan(
        plan.tx_columns, cust_columns, mapping, as_of, drop_duplicates, today,
        tuple(shape.columns), dtypes,
    )  # fmt: skip
    schema = ", ".join(f"`{c}` {t}" for c, t in zip(shape.columns, dtypes, strict=True))
    out = union.mapInPandas(_features(plan), f"{schema}, `{REPORT}` string").persist()
    found = [json.loads(r) for r in out.where(F.col(REPORT).isNotNull()).toPandas()[REPORT]]
    reports = [
        _merge([f[k] for f in found if k in f], spec, max_bad_fraction)
        for k, spec in (("transactions", transactions), ("customers", customers))
        if spec
    ]
    if not reports[0].rows_kept:
        raise DataError(f"{transactions}: no rows at or before as_of {as_of.date()}")
    return out.where(F.col(REPORT).isNull()).drop(REPORT), as_of, reports


def to_pandas(frame) -> pd.DataFrame:
    """A Spark feature table as the one-machine function returns it: sorted by customer."""
    table = frame.toPandas().sort_values("customer_id", ignore_index=True)
    for col in table.columns:
        if table[col].dtype == object:
            table[col] = table[col].astype("str")
    return table
