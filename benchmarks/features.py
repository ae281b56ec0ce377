"""Feature-table speed and memory against a DuckDB reference, measured in the same run.

    python benchmarks/features.py [--transactions 10000000] [--customers 500000]

Both sides start from the same Parquet file. The reference is a DuckDB query computing count,
sum, min and max date per customer; clientela builds its full feature table. Each side runs
in its own process so that its peak memory (max RSS) is its own.
Target: clientela <= 2x the DuckDB time, peak memory <= 4 GB.
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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# This file is named like the `features` package; keep its folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def make_data(path: Path, n_tx: int, n_customers: int, seed: int = 0) -> None:
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
    from features.customer import customer_features

    t0 = time.perf_counter()
    tx = pd.read_parquet(path)
    t1 = time.perf_counter()
    table = customer_features(tx, tx["timestamp"].max())
    t2 = time.perf_counter()
    return {"read_s": t1 - t0, "compute_s": t2 - t1, "total_s": t2 - t0, "rows": len(table)}


def run_duckdb(path: str) -> dict:
    import duckdb

    t0 = time.perf_counter()
    rows = duckdb.sql(
        f"SELECT customer_id, count(*), sum(amount), min(timestamp::DATE), max(timestamp::DATE) "
        f"FROM read_parquet('{path}') GROUP BY customer_id"
    ).fetchnumpy()
    t1 = time.perf_counter()
    return {"total_s": t1 - t0, "rows": len(rows["customer_id"])}


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
    parser.add_argument("--side", choices=["clientela", "duckdb"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its figures as JSON
        result = (run_clientela if args.side == "clientela" else run_duckdb)(args.path)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transactions.parquet"
        print(f"generating {args.transactions:,} transactions / {args.customers:,} customers")
        make_data(path, args.transactions, args.customers)
        duck = min((measure("duckdb", path) for _ in range(3)), key=lambda r: r["total_s"])
        ours = min((measure("clientela", path) for _ in range(3)), key=lambda r: r["total_s"])
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


if __name__ == "__main__":
    main()
