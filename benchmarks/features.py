"""Feature-table speed and memory against a DuckDB reference, measured in the same run.

    python benchmarks/features.py [--transactions 10000000] [--customers 500000]

1. In memory: both sides start from the same Parquet file. The reference is a DuckDB query
   computing count, sum, min and max date per customer; clientela builds its full feature
   table from the loaded frame (no validation).
2. End to end, as a user runs it: `clientela features -t FILE --out features.parquet` (read,
   validate, quality report, features, write) on a CSV export and on Parquet, against DuckDB
   reading the same file and computing the same per-customer aggregates.
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
    parser.add_argument("--side", choices=["clientela", "duckdb", "cli"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its figures as JSON
        sides = {"clientela": run_clientela, "duckdb": run_duckdb, "cli": run_cli}
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
            cli = min((measure("cli", source) for _ in range(2)), key=_seconds)
            end_to_end[kind] = (reference, cli)
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
    for kind, (reference, cli) in end_to_end.items():
        print(
            f"  {kind:8s} duckdb read + aggregate {reference['total_s']:.2f} s, clientela "
            f"{cli['total_s']:.2f} s: {cli['total_s'] / reference['total_s']:.2f}x (target "
            f"<= 2.0x); peak RSS {cli['peak_rss_mb'] / 1024:.2f} GB (target <= 2 GB)"
        )


if __name__ == "__main__":
    main()
