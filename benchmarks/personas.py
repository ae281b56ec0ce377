"""Personas on shops they were not built on: do they find the groups that are really there?

    python benchmarks/personas.py [--shops a,b] [--scale 1.0]

Eight generated shops (`features/shops.py`, a generator separate from the demo's) vary the
number of planted groups (3 to 10, shares 2% to 50%), what tells them apart (behaviour only,
attributes only, both), B2B accounts, Christmas gifters, one-off buyers, shops with and without
a customers file, dropout processes other than BG/NBD, and 5k to 200k customers. For each it
prints the planted k, the chosen k, the adjusted Rand index (ARI) against the planted groups
and the time, beside references measured in the same run on plainly standardised inputs:
k-means told the true k, and a Gaussian mixture whose k is chosen by BIC. `oracle` is a
classifier trained on half of the planted labels and scored on the other half: how much of
the planting the features can show at all.

Targets: median ARI >= 0.80 and worst >= 0.65; chosen k within +-1 of the planted k on at
least 7 of 8; ahead of k-means-with-true-k on the median.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parent.parent))

SHOPS = (
    "gift-wholesale",
    "grocery-receipts",
    "b2b-supplier",
    "fashion-attributes",
    "electronics-behaviour",
    "department-store",
    "marketplace-large",
    "subscription-pharmacy",
)


def shop_features(name: str, scale: float = 1.0, seed: int = 4):
    """(features at the last day, planted group per row, shop) of a generated shop."""
    from features.customer import customer_features
    from features.shops import SHOPS as CATALOG
    from features.shops import generate_shop
    from features.validation import validate_customers, validate_transactions

    shop = CATALOG[name]
    shop = replace(shop, customers=max(1000, int(shop.customers * scale)))
    customers, tx, truth = generate_shop(shop, seed=seed)
    clean, as_of, _ = validate_transactions(tx)
    attrs = validate_customers(customers)[0] if customers is not None else None
    feats = customer_features(clean, as_of, attrs)
    feats = feats[feats["has_purchase"]].reset_index(drop=True)
    planted = truth.set_index("customer_id").loc[feats["customer_id"], "group_id"].to_numpy()
    return feats, planted, shop


def plain_inputs(feats) -> np.ndarray:
    """What a data scientist would feed sklearn by hand: purchase rate and basket on a log
    scale, the attributes there are (regions one-hot), each column standardised."""
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    tenure = np.clip(feats["tenure_days"].fillna(0).to_numpy(), 30, None)
    cols = {
        "rate": np.log1p(365 * feats["frequency"].to_numpy() / tenure),
        "basket": np.log1p(feats["avg_purchase_value"].fillna(0).clip(lower=0).to_numpy()),
    }
    for name in ("age", "income"):
        if name in feats.columns:
            values = feats[name].astype("float64")
            cols[name] = np.log1p(values) if name == "income" else values
    if "customer_type" in feats.columns:
        cols["b2b"] = (feats["customer_type"] == "B2B").astype(float)
    frame = pd.DataFrame(cols)
    if "region" in feats.columns:
        frame = frame.join(pd.get_dummies(feats["region"], prefix="region", dtype=float))
    frame = frame.fillna(frame.median())
    return StandardScaler().fit_transform(frame.to_numpy("float64"))


def references(feats, planted, k_true: int, seed: int = 0) -> dict[str, tuple[int, float]]:
    """(k, ARI) of k-means with the true k, a BIC-chosen Gaussian mixture, and the oracle."""
    from sklearn.cluster import KMeans
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import cross_val_predict

    X = plain_inputs(feats)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(X), min(len(X), 20_000), replace=False)
    km = KMeans(k_true, n_init=4, random_state=seed).fit(X[sample])
    out = {"kmeans_true_k": (k_true, adjusted_rand_score(planted, km.predict(X)))}
    best = None
    for k in range(2, 13):
        gm = GaussianMixture(k, covariance_type="full", random_state=seed, n_init=1)
        gm.fit(X[sample])
        bic = gm.bic(X[sample])
        if best is None or bic < best[0]:
            best = (bic, k, gm)
    out["gmm_bic"] = (best[1], adjusted_rand_score(planted, best[2].predict(X)))
    oracle_X = np.column_stack([X, feats.select_dtypes("number").fillna(-1).to_numpy()])
    guess = cross_val_predict(
        HistGradientBoostingClassifier(max_iter=100), oracle_X[sample], planted[sample], cv=2
    )
    out["oracle"] = (k_true, adjusted_rand_score(planted[sample], guess))
    return out


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from models.persona import PersonaModel

    parser = argparse.ArgumentParser()
    parser.add_argument("--shops", default=",".join(SHOPS))
    parser.add_argument("--scale", type=float, default=1.0, help="customers x this")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    print(
        f"{'shop':24s} {'customers':>9s} {'k':>3s} {'chosen':>6s} {'ARI':>6s} {'time':>6s} | "
        f"{'k-means true k':>14s} | {'GMM by BIC':>10s} | {'oracle':>6s}"
    )
    rows = []
    for name in args.shops.split(","):
        feats, planted, shop = shop_features(name, args.scale, args.seed)
        k_true = len(shop.groups)
        started = time.perf_counter()
        model = PersonaModel().fit(feats)
        assigned = model.predict(feats)
        seconds = time.perf_counter() - started
        ari = adjusted_rand_score(planted, assigned)
        refs = references(feats, planted, k_true)
        rows.append((ari, len(model.ids_), k_true, refs["kmeans_true_k"][1]))
        print(
            f"{name:24s} {len(feats):9,d} {k_true:3d} {len(model.ids_):6d} {ari:6.3f} "
            f"{seconds:5.1f}s | {refs['kmeans_true_k'][1]:14.3f} | "
            f"{refs['gmm_bic'][1]:6.3f} k={refs['gmm_bic'][0]:<2d} | {refs['oracle'][1]:6.3f}",
            flush=True,
        )
    aris = np.array([r[0] for r in rows])
    within = sum(abs(r[1] - r[2]) <= 1 for r in rows)
    kmeans_median = float(np.median([r[3] for r in rows]))
    print(
        f"\nmedian ARI {np.median(aris):.3f} (target >= 0.80), worst {aris.min():.3f} "
        f"(>= 0.65); k within +-1 on {within}/{len(rows)} (>= 7/8); k-means with the true k: "
        f"median {kmeans_median:.3f} (to beat)"
    )


if __name__ == "__main__":
    main()
