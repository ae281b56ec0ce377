"""Feature-table speed and memory against DuckDB, measured in the same run.

    python benchmarks/features.py [--transactions 10000000] [--customers 500000]

1. In memory: both sides start from the same Parquet file. The reference is a DuckDB query
   computing count, sum, min and max date per customer; clientela builds its full feature
   table from the loaded frame (no validation).
2. End to end, as a user runs it: `clientela features -t FILE --out features.parquet` (read,
   validate, quality report, features, write) on a CSV export and on Parquet, against two
   DuckDB references reading the same file:
   - "4 aggregates": count, sum, min and max date per customer (a lower bound: most of the
     feature table and every check left out);
   - "same job": the same checks and counts as the quality report (null ids, dates, amounts,
     duplicates, refunds, refunds before a first purchase) and the same feature table in SQL,
     written to Parquet; the script checks that both tables hold the same values.
Each side runs in its own process so that its peak memory (max RSS) is its own.
Targets (issue 13): end to end <= 2x DuckDB on CSV and on Parquet, peak memory <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the `features` package; keep its folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def make_data(path: Path, n_tx: int, n_customers: int, seed: int = 0) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    # Skewed activity: a few customers buy a lot, most a little.
    weights = rng.pareto(1.5, n_customers) + 0.1
    cust = rng.choice(n_customers, size=n_tx, p=weights / weights.sum())
    ids = pa.array(np.arange(n_customers)).cast(pa.string())
    start = pd.Timestamp("2023-01-01", tz="UTC").value // 1000
    span = 3 * 365 * 86_400_000_000
    stamps = start + rng.integers(0, span, n_tx)
    amount = np.round(rng.lognormal(3.5, 1.0, n_tx) * np.where(rng.random(n_tx) < 0.03, -1, 1), 2)
    table = pa.table(
        {
            "customer_id": ids.take(pa.array(cust)),
            "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "amount": amount,
        }
    )
    pq.write_table(table, path)


def run_clientela(path: str) -> dict:
    import pandas as pd

    from features.customer import customer_features

    t0 = time.perf_counter()
    tx = pd.read_parquet(path)
    t1 = time.perf_counter()
    table = customer_features(tx, tx["timestamp"].max())
    t2 = time.perf_counter()
    return {"read_s": t1 - t0, "compute_s": t2 - t1, "total_s": t2 - t0, "rows": len(table)}


def run_cli(path: str) -> dict:
    """`clientela features` as typed at the shell, in this process (which has loaded no
    pandas or Arrow before it, as at the shell: the CLI chooses Arrow's memory pool)."""
    from clientela import app

    out = str(Path(path).with_name("features.parquet"))
    t0 = time.perf_counter()
    try:
        app(["features", "-t", path, "--out", out], standalone_mode=False)
    finally:
        t1 = time.perf_counter()
    import pyarrow.parquet as pq

    return {"total_s": t1 - t0, "rows": pq.read_metadata(out).num_rows}


def run_duckdb(path: str) -> dict:
    import duckdb

    reader = "read_csv" if path.endswith(".csv") else "read_parquet"
    t0 = time.perf_counter()
    rows = duckdb.sql(
        f"SELECT customer_id, count(*), sum(amount), min(timestamp::DATE), max(timestamp::DATE) "
        f"FROM {reader}('{path}') GROUP BY customer_id"
    ).fetchnumpy()
    t1 = time.perf_counter()
    return {"total_s": t1 - t0, "rows": len(rows["customer_id"])}


def run_duckdb_job(path: str) -> dict:
    """clientela's job in DuckDB SQL: read, check and count as the quality report does, build
    the same feature table (attributes and `as_of_month` aside), write it to Parquet."""
    import duckdb

    out = str(Path(path).with_name("duckdb_features.parquet"))
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    source = (
        f"read_csv('{path}', all_varchar = true)"
        if path.endswith(".csv")
        else f"read_parquet('{path}')"
    )
    con.execute(
        "CREATE TEMP TABLE raw AS SELECT nullif(trim(customer_id::VARCHAR), '') AS cid, "
        "TRY_CAST(timestamp AS TIMESTAMPTZ) AS ts, TRY_CAST(trim(amount::VARCHAR) AS DOUBLE) "
        f"AS amount FROM {source}"
    )
    *bad, as_of = con.execute(
        "SELECT count(*) FILTER (cid IS NULL), count(*) FILTER (ts IS NULL), "
        "count(*) FILTER (ts < TIMESTAMPTZ '1900-01-01' "
        "OR ts >= make_timestamptz(year(current_date) + 2, 1, 1, 0, 0, 0)), "
        "count(*) FILTER (amount IS NULL OR NOT isfinite(amount)), max(ts)::DATE FROM raw"
    ).fetchall()[0]
    con.execute(
        f"CREATE TEMP TABLE t AS SELECT cid, ts, amount, (DATE '{as_of}' - ts::DATE)::INTEGER "
        "AS ago FROM raw WHERE cid IS NOT NULL AND ts IS NOT NULL AND isfinite(amount)"
    )
    counts = con.execute(
        "SELECT count(*) FILTER (amount < 0), count(*) FILTER (amount = 0), "
        "(SELECT count(*) FROM t) - (SELECT count(*) FROM (SELECT DISTINCT cid, ts, amount "
        "FROM t)), (SELECT count(*) FROM t JOIN (SELECT cid, min(ts) FILTER (amount > 0) AS f "
        "FROM t GROUP BY cid) USING (cid) WHERE amount < 0 AND (f IS NULL OR ts < f)) FROM t"
    ).fetchall()[0]
    con.execute(f"COPY ({_FEATURES_SQL.format(as_of=as_of)}) TO '{out}' (FORMAT parquet)")
    t1 = time.perf_counter()
    return {"total_s": t1 - t0, "checks": [*bad, *counts], "out": out}


_FEATURES_SQL = """
WITH days AS (SELECT cid, ago, sum(amount) AS buy FROM t WHERE amount > 0 GROUP BY cid, ago),
gaps AS (
    SELECT cid, ago, buy, lead(ago) OVER (PARTITION BY cid ORDER BY ago) - ago AS gap FROM days),
per_day AS (
    SELECT cid, min(ago) AS recency_days, max(ago) AS tenure_days, count(*) AS n_days,
        arg_max(buy, ago) AS first_purchase_value,
        count(*) FILTER (ago < 30) AS pd30, count(*) FILTER (ago < 90) AS pd90,
        count(*) FILTER (ago < 365) AS pd365, count(*) FILTER (ago >= 90 AND ago < 180) AS prev90,
        count(*) FILTER (month(DATE '{as_of}' - ago) >= 11) AS holiday_days,
        avg(gap) AS mean_gap, stddev_pop(gap) AS std_gap, count(gap) AS n_gaps
    FROM gaps GROUP BY cid),
per_row AS (
    SELECT cid, count(*) AS n_transactions, sum(amount) AS total_spend,
        coalesce(sum(amount) FILTER (amount > 0), 0) AS gross_spend,
        coalesce(-sum(amount) FILTER (amount < 0), 0) AS refund_amount,
        min(ago) AS days_since_activity, coalesce(sum(amount) FILTER (ago < 30), 0) AS spend_30d,
        coalesce(sum(amount) FILTER (ago < 90), 0) AS spend_90d,
        coalesce(sum(amount) FILTER (ago < 365), 0) AS spend_365d
    FROM t GROUP BY cid)
SELECT cid AS customer_id, recency_days, tenure_days,
    greatest(coalesce(n_days, 0) - 1, 0) AS frequency, total_spend, n_transactions, gross_spend,
    refund_amount,
    CASE WHEN gross_spend > 0 THEN refund_amount / gross_spend
         WHEN refund_amount > 0 THEN 1 ELSE 0 END AS refund_share,
    gross_spend / n_days AS avg_purchase_value, first_purchase_value,
    coalesce(pd30, 0) AS purchase_days_30d, coalesce(pd90, 0) AS purchase_days_90d,
    coalesce(pd365, 0) AS purchase_days_365d, spend_30d, spend_90d, spend_365d,
    CASE WHEN n_gaps > 0 THEN mean_gap END AS mean_interpurchase_days,
    CASE WHEN n_gaps > 1 THEN std_gap END AS std_interpurchase_days,
    CASE WHEN n_gaps > 0 THEN recency_days / mean_gap END AS lateness,
    coalesce(pd90, 0) - coalesce(prev90, 0) AS trend_90d, holiday_days / n_days AS holiday_share,
    days_since_activity, n_days IS NOT NULL AS has_purchase,
    CASE WHEN n_days IS NULL AND days_since_activity > 180 THEN 'lapsed'
         WHEN n_days IS NULL THEN 'existing' WHEN tenure_days < 30 THEN 'new'
         WHEN n_days = 1 THEN 'walk-in' WHEN recency_days > 180 THEN 'lapsed'
         WHEN pd365 >= 6 THEN 'regular' ELSE 'existing' END AS lifecycle_stage
FROM per_row LEFT JOIN per_day USING (cid) ORDER BY customer_id
"""


def same_values(ours: str, reference: str) -> list[str]:
    """The columns of the reference's feature table whose values differ from clientela's."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(ours), pd.read_parquet(reference)
    if len(a) != len(b) or not (a["customer_id"].to_numpy() == b["customer_id"].to_numpy()).all():
        return ["customer_id"]
    differ = []
    for column in b.columns.drop("customer_id"):
        x, y = a[column], b[column]
        if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
            x, y = x.to_numpy("float64"), y.to_numpy("float64")
            same = np.allclose(x, y, rtol=1e-9, atol=1e-6, equal_nan=True)
        else:
            same = (x.astype("str").to_numpy() == y.astype("str").to_numpy()).all()
        if not same:
            differ.append(column)
    return differ


def _seconds(result: dict) -> float:
    return result["total_s"]


def measure(side: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--side", side, "--path", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--side", choices=["clientela", "duckdb", "duckdb-job", "cli"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its figures as JSON
        sides = {
            "clientela": run_clientela,
            "duckdb": run_duckdb,
            "duckdb-job": run_duckdb_job,
            "cli": run_cli,
        }
        result = sides[args.side](args.path)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transactions.parquet"
        print(f"generating {args.transactions:,} transactions / {args.customers:,} customers")
        make_data(path, args.transactions, args.customers)
        duck = min((measure("duckdb", path) for _ in range(3)), key=lambda r: r["total_s"])
        ours = min((measure("clientela", path) for _ in range(3)), key=lambda r: r["total_s"])
        csv = Path(tmp) / "transactions.csv"
        import duckdb

        duckdb.sql(f"COPY (SELECT * FROM '{path}') TO '{csv}' (HEADER)")
        end_to_end = {}
        for kind, source in (("CSV", csv), ("Parquet", path)):
            reference = min((measure("duckdb", source) for _ in range(3)), key=_seconds)
            job = min((measure("duckdb-job", source) for _ in range(2)), key=_seconds)
            cli = min((measure("cli", source) for _ in range(2)), key=_seconds)
            job["differ"] = same_values(str(source.with_name("features.parquet")), job["out"])
            end_to_end[kind] = (reference, job, cli)
    ratio = ours["total_s"] / duck["total_s"]
    print(
        f"duckdb reference (count/sum/min/max per customer): {duck['total_s']:.2f} s, "
        f"peak RSS {duck['peak_rss_mb']:.0f} MB"
    )
    print(
        f"clientela full feature table: {ours['total_s']:.2f} s "
        f"(read {ours['read_s']:.2f} s + features {ours['compute_s']:.2f} s) "
        f"for {ours['rows']:,} customers, peak RSS {ours['peak_rss_mb']:.0f} MB"
    )
    print(
        f"ratio clientela / duckdb: {ratio:.2f}x (target <= 2.0x); "
        f"memory {ours['peak_rss_mb'] / 1024:.2f} GB (target <= 4 GB)"
    )
    print("end to end (`clientela features -t FILE --out features.parquet`):")
    for kind, (reference, job, cli) in end_to_end.items():
        seconds = cli["total_s"]
        same = "same values" if not job["differ"] else f"values differ in {job['differ']}"
        print(
            f"  {kind:8s} clientela {seconds:.2f} s, peak RSS {cli['peak_rss_mb'] / 1024:.2f} GB "
            f"(target <= 2 GB)\n"
            f"           vs DuckDB 4 aggregates {reference['total_s']:.2f} s: "
            f"{seconds / reference['total_s']:.2f}x (target <= 2.0x)\n"
            f"           vs DuckDB same job {job['total_s']:.2f} s: "
            f"{seconds / job['total_s']:.2f}x (target <= 2.0x; {same}, DuckDB peak RSS "
            f"{job['peak_rss_mb'] / 1024:.2f} GB; its counts {job['checks']})"
        )


if __name__ == "__main__":
    main()
