"""Batch scoring from a feature snapshot: customers per second of `clientela score --features`.

    python benchmarks/scoring.py [--customers 1000000]

Target: >= 200,000 customers/s, reading the snapshot and writing Parquet included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    from benchmarks.common import replicate, trained_bundle
    from features.sources import read_table, write_table
    from models.bundle import Bundle
    from serving.batch import score_features, write_predictions

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("training a bundle on 20,000 synthetic customers ...")
        bundle_dir, feats = trained_bundle(tmp)
        snapshot = write_table(replicate(feats, args.customers), tmp / "snapshot.parquet")
        bundle = Bundle.load(bundle_dir)
        t0 = time.perf_counter()
        table = read_table(snapshot)
        t1 = time.perf_counter()
        scored = score_features(table, bundle, str(table["as_of"].iloc[0]))
        t2 = time.perf_counter()
        write_predictions(scored, str(tmp / "scores.parquet"))
        t3 = time.perf_counter()
        no_reasons = time.perf_counter()
        bundle.score(table.head(200_000), with_reasons=False)
        no_reasons = 200_000 / (time.perf_counter() - no_reasons)
    n = args.customers
    print(f"{n:,} customers: read {t1 - t0:.2f} s, score {t2 - t1:.2f} s, write {t3 - t2:.2f} s")
    print(
        f"end to end: {n / (t3 - t0):,.0f} customers/s (target >= 200,000); "
        f"scoring alone {n / (t2 - t1):,.0f}/s; without reason codes {no_reasons:,.0f}/s"
    )
    trees = (bundle.churn.booster_.num_boosted_rounds(), bundle.value.booster_.num_boosted_rounds())
    print(f"model size: churn {trees[0]} trees, value {trees[1]} trees")


if __name__ == "__main__":
    main()
