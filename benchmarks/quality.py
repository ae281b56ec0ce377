"""Model quality out of time on shops of many kinds, against the BTYD baseline.

    python benchmarks/quality.py [--shops gift-wholesale,b2b-supplier] [--scale 1.0]

Each shop is generated past its training as_of; the models are trained as of that day (default
settings, horizons as listed) and every customer is scored there, then compared with what the
following days brought, beside a BTYD baseline fitted on the same history. The demo generator
follows BG/NBD, like the baseline; the other shops do not (Pareto/NBD lifetimes, monthly B2B
orders, Christmas gifting, one-off buyers, short histories). This is where defaults are tuned;
the real shop in `realdata.py` is where they are reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parent.parent))

# shop -> (churn horizon, value horizon); the data runs that far past the training as_of.
SHOPS = {
    "demo-bgnbd": (90, 365),
    "gift-wholesale": (90, 90),
    "b2b-supplier": (90, 90),
    "grocery-receipts": (28, 28),
    "electronics-behaviour": (90, 90),
    "subscription-pharmacy": (60, 60),
    "department-store": (90, 180),
}


def shop_data(name: str, scale: float, seed: int):
    """(transactions, customers or None) of a named shop, raw as a user would export them."""
    if name == "demo-bgnbd":
        from features.synthetic import generate

        customers, tx, _ = generate(int(20_000 * scale), seed=seed, years=4.0)
        return tx, customers
    from features.shops import SHOPS as CATALOG
    from features.shops import generate_shop

    shop = CATALOG[name]
    customers, tx, _ = generate_shop(replace(shop, customers=int(shop.customers * scale)), seed)
    return tx, customers


def evaluate_shop(name: str, scale: float = 1.0, seed: int = 3, config=None) -> dict:
    from benchmarks.common import holdout_report
    from features.load import Inputs
    from features.validation import DAY, validate_customers, validate_transactions
    from training.config import TrainConfig
    from training.run import train

    churn_h, value_h = SHOPS[name]
    tx, customers = shop_data(name, scale, seed)
    full, end, report = validate_transactions(tx)
    attrs = validate_customers(customers)[0] if customers is not None else None
    as_of = end - DAY * max(churn_h, value_h)
    config = config or TrainConfig()
    config = replace(config, churn_horizon=churn_h, value_horizon=value_h)
    started = time.perf_counter()
    history = full[full["timestamp"] < as_of + DAY].reset_index(drop=True)
    result = train(Inputs(history, as_of, attrs, [report]), config)
    seconds = time.perf_counter() - started
    from features.customer import customer_features

    feats = customer_features(history, as_of, attrs)
    scores = result.bundle.score(feats, with_reasons=False)
    out = holdout_report(scores, full, attrs, as_of, churn_h, value_h)
    out.update(seconds=seconds, plan=result.plan, metrics=result.metrics)
    return out


def main() -> None:
    from benchmarks.common import print_report

    parser = argparse.ArgumentParser()
    parser.add_argument("--shops", default=",".join(SHOPS))
    parser.add_argument("--scale", type=float, default=1.0, help="customers x this")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    wins = {"churn": 0, "value": 0}
    names = args.shops.split(",")
    for name in names:
        report = evaluate_shop(name, args.scale, args.seed)
        plan = report["plan"]
        print_report(
            f"\n{name} (as of {plan.as_of.date()}, horizons {plan.churn.horizon}/"
            f"{plan.value.horizon} days, {plan.churn.n_cutoffs}/{plan.value.n_cutoffs} cutoffs, "
            f"trained in {report['seconds']:.1f} s)",
            report,
        )
        model, base = report["model"], report["BTYD"]
        wins["churn"] += model["auc_active"] > base["auc_active"]
        wins["value"] += model["gini"] > base["gini"]
    print(
        f"\nmodels ahead of BTYD on {wins['churn']}/{len(names)} shops for active churn AUC, "
        f"{wins['value']}/{len(names)} for value Gini"
    )


if __name__ == "__main__":
    main()
