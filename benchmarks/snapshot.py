"""`/score/ids` from a PostgreSQL snapshot of 10M customers, against the file snapshot of 100k
customers that every worker holds in memory, measured in the same run with the same load.

    python benchmarks/snapshot.py [--customers 10000000] [--seconds 20]

Targets: one id per request from the 10M-customer PostgreSQL snapshot at >= 0.5x the
throughput of the 100k-customer file snapshot; the server's memory does not grow with the
size of the PostgreSQL snapshot (10M against 100k customers).

The snapshots are written as `clientela score` writes them (features with the predictions
beside them, a unique index on the customer id); the 10M-customer table is made inside
PostgreSQL from the 100k-customer one with fresh ids. The database is CLIENTELA_BENCH_PG
(default: the local test database); without it the benchmark says so and stops. Needs `wrk`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parent.parent))

PG = os.environ.get("CLIENTELA_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SMALL = 100_000


def database_or_none():
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return engine
    except Exception as exc:  # absent or refusing
        print(f"PostgreSQL not reachable at {PG} ({type(exc).__name__}): skipped")
        return None


def grow(engine, source: str, target: str, customers: int) -> float:
    """`target`: `customers` rows copied from `source`'s, with fresh ids, indexed as `clientela
    score` indexes its snapshots; returns the seconds taken."""
    import sqlalchemy

    start = time.perf_counter()
    columns = [c["name"] for c in sqlalchemy.inspect(engine).get_columns(source)]
    rest = ", ".join(f's."{c}"' for c in columns if c != "customer_id")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {target}")
        conn.exec_driver_sql(
            f"CREATE TABLE {target} AS SELECT lpad(g::text, 9, '0') AS customer_id, {rest} "
            f"FROM generate_series(0, {customers - 1}) AS g JOIN {source} AS s "
            f"ON s.customer_id = lpad(mod(g, {SMALL})::text, 9, '0')"
        )
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX ON {target} (customer_id)")
        conn.exec_driver_sql(f"ANALYZE {target}")
    return time.perf_counter() - start


def serve_and_load(bundle_dir: Path, snapshot: str, ids: int, seconds: float, cwd: Path) -> dict:
    """`clientela serve` (2 workers) on `snapshot`: one id per request at -c32, then 1,000 ids
    per request at -c4; the server's memory (all processes) after the load."""
    from benchmarks.serving import free_port, load_wrk, tree_rss_mb, wait_idle, wait_ready

    port = free_port()
    cmd = [sys.executable, "-c", "from clientela import app; app()", "serve"]
    cmd += ["--model", str(bundle_dir), "--snapshot", snapshot, "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--workers", "2"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        wait_idle(server.pid)
        single = load_wrk(url, ids, 1, 32, seconds)
        bulk = load_wrk(url, ids, 1000, 4, min(seconds, 10))
        return {
            **single,
            "bulk_customers_s": bulk["customers_s"],
            "rss_mb": tree_rss_mb(server.pid),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt install wrk): skipped")
        return
    engine = database_or_none()
    if engine is None:
        return
    import pandas as pd

    from benchmarks.common import replicate, trained_bundle
    from models.bundle import Bundle
    from serving.batch import score_features
    from serving.snapshot import write_snapshot

    small_table, big_table = "clientela_bench_snapshot_small", "clientela_bench_snapshot_big"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("training a bundle on 20,000 synthetic customers ...")
        bundle_dir, feats = trained_bundle(tmp)
        bundle = Bundle.load(bundle_dir)
        as_of = pd.Timestamp(feats["as_of"].iloc[0])
        small = replicate(feats.drop(columns="as_of"), SMALL)
        predictions = score_features(small, bundle, str(as_of.date()))
        in_file = write_snapshot(small, as_of, str(tmp / "snapshot.parquet"), predictions, bundle)
        start = time.perf_counter()
        in_pg = write_snapshot(small, as_of, f"{PG}#{small_table}", predictions, bundle)
        seconds = time.perf_counter() - start
        print(f"{SMALL:,}-customer snapshot written to PostgreSQL in {seconds:.1f}s")
        print(f"making the {args.customers:,}-customer table in PostgreSQL ...")
        seconds = grow(engine, small_table, big_table, args.customers)
        size = pd.read_sql_query(
            f"SELECT pg_size_pretty(pg_total_relation_size('{big_table}')) AS s", engine
        )["s"].iloc[0]
        print(f"  {seconds:.0f}s, {size} with its index")
        runs = {
            f"file, {SMALL:,} customers": (in_file, SMALL),
            f"PostgreSQL, {SMALL:,} customers": (in_pg, SMALL),
            f"PostgreSQL, {args.customers:,} customers": (f"{PG}#{big_table}", args.customers),
        }
        results = {}
        for name, (snapshot, ids) in runs.items():
            results[name] = serve_and_load(bundle_dir, snapshot, ids, args.seconds, tmp)
            r = results[name]
            print(
                f"{name:32s} {r['requests_s']:7.0f} req/s, p50 {r['p50_ms']:5.1f} ms, "
                f"p99 {r['p99_ms']:6.1f} ms, errors {r['errors']}/{r['requests']}; "
                f"1,000 ids per request: {r['bulk_customers_s']:8,.0f} customers/s; "
                f"server RSS {r['rss_mb']:.0f} MB"
            )
    with engine.begin() as conn:  # 10M rows are not left behind in the test database
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {big_table}")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {small_table}")
    file, small_pg, big_pg = results.values()
    print(
        f"PostgreSQL {args.customers:,} / file {SMALL:,}: throughput "
        f"{big_pg['requests_s'] / file['requests_s']:.2f}x (target >= 0.5x), p99 "
        f"{big_pg['p99_ms'] / file['p99_ms']:.2f}x; server memory PostgreSQL "
        f"{args.customers:,} / {SMALL:,}: {big_pg['rss_mb'] / small_pg['rss_mb']:.2f}x "
        f"(target: no growth), file {SMALL:,}: {file['rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
