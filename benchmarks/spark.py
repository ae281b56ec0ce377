"""Features on Apache Spark (local mode) next to the one-machine engine, measured in one run.

    python benchmarks/spark.py [--transactions 10000000 50000000] [--customers 500000]

For each size, the same generated Parquet file goes through `clientela features --out ...`
on one machine and `clientela features --spark local[2] --out ...`, as a user runs them. It
prints the wall time of each and the machine's peak memory in use during the run (the Spark
driver's JVM and its Python workers are separate processes: their sum is what counts against
the machine's 24 GB). The two feature tables are checked equal.
Target (issue 13): 50M transactions on local[2] complete within the machine's memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.features import make_data  # noqa: E402


def _available_kb() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable"))


def run(*args: str) -> tuple[float, float]:
    """(seconds, peak GB in use above the level before the run) of one CLI run."""
    before, lowest, done = _available_kb(), [_available_kb()], threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            lowest[0] = min(lowest[0], _available_kb())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    command = [str(Path(sys.executable).with_name("clientela")), *args]
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    if finished.returncode != 0:
        sys.exit(f"`clientela {' '.join(args)}` failed:\n{finished.stdout}\n{finished.stderr}")
    return seconds, (before - lowest[0]) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--customers", type=int, default=500_000)
    args = parser.parse_args()
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("spark: skipped, pyspark is not installed (pip install -e .[spark])")
        return
    print(f"{os.cpu_count()} cores; Spark in local[2]")
    for n in args.transactions:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "transactions.parquet"
            make_data(source, n, args.customers)
            one_s, one_gb = run("features", "-t", str(source), "--out", f"{tmp}/one.parquet")
            spark_s, spark_gb = run(
                "features", "-t", str(source), "--out", f"{tmp}/spark.parquet",
                "--spark", "local[2]",
            )  # fmt: skip
            one = pd.read_parquet(f"{tmp}/one.parquet")
            spark = pd.read_parquet(f"{tmp}/spark.parquet")
            spark = spark.sort_values("customer_id", ignore_index=True)[one.columns]
            pd.testing.assert_frame_equal(spark, one, check_dtype=False)
        print(
            f"{n:>12,} transactions: one machine {one_s:6.1f} s, peak {one_gb:5.1f} GB | "
            f"Spark local[2] {spark_s:6.1f} s, peak {spark_gb:5.1f} GB | same features: yes"
        )


if __name__ == "__main__":
    main()
