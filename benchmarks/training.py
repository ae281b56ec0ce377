"""Full training on synthetic data (default 100k customers), with the time of each stage.

    python benchmarks/training.py [--customers 100000]
    python benchmarks/training.py --customers 1120000 --end-to-end

Target: <= 2 minutes on the 2-core reference machine for 100k customers / ~2M transactions,
MLflow logging and registration included (tracking in a temporary directory).

`--end-to-end` runs `clientela train` as a user does, on Parquet files: reading, validation,
features, a model fitted on a stratified sample of the customers (`max_customers`), MLflow.
Goal for 1.12M customers / 20M transactions: <= 10 minutes and <= 8 GB peak memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def write_shop(customers: int, directory: str) -> None:
    """The synthetic shop as Parquet files (run in a child process, see `end_to_end`)."""
    from features.synthetic import generate

    attrs, tx, _ = generate(customers, seed=1)
    tx.to_parquet(Path(directory) / "transactions.parquet")
    attrs.to_parquet(Path(directory) / "customers.parquet")


def end_to_end(customers: int) -> None:
    """`clientela train` in a child process: its wall time and peak memory. The data is made
    in another child, so that this process stays small: a child forked from a large parent
    would count the parent's memory as its own peak."""
    import multiprocessing
    import subprocess

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        maker = multiprocessing.get_context("spawn").Process(
            target=write_shop, args=(customers, tmp)
        )
        maker.start()
        maker.join()
        n_tx = pq.read_metadata(Path(tmp) / "transactions.parquet").num_rows
        print(f"{customers:,} customers, {n_tx:,} transactions written; clientela train ...")
        start = time.perf_counter()
        cli = [sys.executable, "-c", "from clientela import app; app()", "train"]
        with subprocess.Popen(
            [*cli, "-t", "transactions.parquet", "-c", "customers.parquet"],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "120"},
        ) as child:
            output = child.stderr.read()  # rich writes to stderr
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
    print("\n".join(line for line in output.splitlines() if line.strip()))
    if child.returncode != 0:
        raise SystemExit(f"clientela train failed with exit code {child.returncode}")
    peak_gb = usage.ru_maxrss / 2**20  # KiB on Linux
    print(
        f"end to end, {customers:,} customers / {n_tx:,} transactions: {seconds:.0f} s "
        f"(goal <= 600 s), peak memory {peak_gb:.1f} GB (goal <= 8 GB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--end-to-end", action="store_true", help="through `clientela train`")
    args = parser.parse_args()
    if args.end_to_end:
        sys.path.insert(0, str(Path(__file__).parent.parent))
        end_to_end(args.customers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # MLflow's embedded store lands here
        from sklearn.metrics import adjusted_rand_score

        from features.customer import customer_features
        from features.load import Inputs
        from features.synthetic import generate
        from features.validation import validate_customers, validate_transactions
        from training.config import TrainConfig
        from training.run import run_training

        t0 = time.perf_counter()
        customers, tx, truth = generate(args.customers, seed=1)
        t1 = time.perf_counter()
        clean, as_of, report = validate_transactions(tx)
        cust, _ = validate_customers(customers)
        t2 = time.perf_counter()
        import mlflow

        mlflow.search_experiments()  # creates the SQLite store once
        t3 = time.perf_counter()
        outcome = run_training(Inputs(clean, as_of, cust, [report]), TrainConfig(), print)
        t4 = time.perf_counter()

        feats = customer_features(clean, as_of, cust)
        planted = truth.set_index("customer_id").loc[feats["customer_id"], "persona_id"]
        ari = adjusted_rand_score(planted, outcome.result.bundle.persona.predict(feats))

    m = outcome.result.metrics
    print(
        f"\ndata: {args.customers:,} customers, {len(tx):,} transactions "
        f"(generated in {t1 - t0:.1f} s, validated in {t2 - t1:.1f} s)"
    )
    print(f"MLflow store creation (first use only): {t3 - t2:.1f} s")
    print("training stages:")
    for stage, seconds in outcome.result.timings.items():
        print(f"  {stage:28s} {seconds:6.1f} s")
    logged = (t4 - t3) - sum(outcome.result.timings.values())
    print(f"  {'plots + MLflow log/register':28s} {logged:6.1f} s")
    print(f"total training run: {t4 - t3:.1f} s (target <= 120 s)")
    print(
        f"churn AUC (active customers) {m['churn_auc']:.4f} vs BTYD {m['baseline_churn_auc']:.4f}; "
        f"value Gini {m['value_normalized_gini']:.4f} vs BTYD "
        f"{m['baseline_value_normalized_gini']:.4f}"
    )
    print(
        f"personas: {int(m['persona_count'])}, ARI vs planted {ari:.3f}, "
        f"stability {m['persona_stability']:.3f}; promoted: {outcome.promoted} "
        f"({outcome.reason})"
    )


if __name__ == "__main__":
    main()
