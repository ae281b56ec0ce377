"""Synthetic but realistic customers and transactions with planted personas (seeded, vectorised).

Each customer belongs to one planted persona, which sets their demographics and the parameters of
a buy-till-you-die process: purchases arrive as a Poisson process (rate drawn per customer around
the persona's rate, modulated by seasonality); after each purchase the customer drops out with the
persona's dropout probability (the BG/NBD story); basket values are Gamma-distributed around a
per-customer mean. Some purchases are later partly refunded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY_S = 86_400
REGIONS = np.array(["North", "South", "East", "West", "Central"])
CHANNELS = np.array(["web", "store", "app"])
CATEGORIES = np.array(
    ["grocery", "home", "fashion", "electronics", "beauty", "sports", "toys", "office"]
)


@dataclass(frozen=True)
class PlantedPersona:
    name: str
    share: float
    purchases_per_year: float
    dropout: float  # probability of dropping out after each purchase
    basket: float  # mean spend per purchase
    age: float
    income: float
    b2b_share: float
    regions: tuple[float, ...]
    channels: tuple[float, ...]
    categories: tuple[float, ...]


# fmt: off
# name, share, purchases/year, dropout after each purchase, basket, age, income, B2B share,
# weights over REGIONS, CHANNELS, CATEGORIES.
PERSONAS = (
    PlantedPersona("loyal high spenders", 0.15, 48, 0.02, 140, 52, 95_000, 0.03,
                   (0.3, 0.2, 0.2, 0.2, 0.1), (0.3, 0.6, 0.1), (1, 3, 2, 2, 1, 1, 0.5, 0.5)),
    PlantedPersona("bargain regulars", 0.25, 62, 0.03, 25, 27, 32_000, 0.0,
                   (0.2, 0.3, 0.2, 0.1, 0.2), (0.5, 0.1, 0.4), (5, 1, 2, 0.5, 2, 1, 0.5, 0.2)),
    PlantedPersona("business buyers", 0.10, 24, 0.03, 900, 45, 150_000, 1.0,
                   (0.1, 0.1, 0.2, 0.2, 0.4), (0.8, 0.1, 0.1), (0.5, 1, 0.2, 3, 0.2, 0.2, 0, 5)),
    PlantedPersona("occasional shoppers", 0.30, 13, 0.12, 60, 38, 58_000, 0.02,
                   (0.2, 0.2, 0.2, 0.2, 0.2), (0.4, 0.4, 0.2), (1, 1, 2, 1, 1, 2, 2, 0.5)),
    PlantedPersona("fading one-timers", 0.20, 5, 0.5, 45, 66, 40_000, 0.0,
                   (0.1, 0.4, 0.1, 0.3, 0.1), (0.1, 0.8, 0.1), (3, 2, 1, 0.5, 1, 0.5, 1, 0.2)),
)
# fmt: on


def seasonality(day_of_year: np.ndarray) -> np.ndarray:
    """Relative purchase intensity by day of year: a summer low, a November-December peak."""
    base = 1.0 + 0.25 * np.cos(2 * np.pi * (day_of_year - 15) / 365.25)
    peak = 0.8 * np.exp(-0.5 * ((day_of_year - 340) / 12.0) ** 2)
    return base + peak


def generate(
    n_customers: int,
    seed: int = 7,
    end: str = "2025-12-31",
    years: float = 3.0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Returns (customers, transactions, truth). Deterministic for a given seed."""
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    rng = np.random.default_rng(seed)
    end_s = pd.Timestamp(end, tz="UTC").value // 1_000_000_000 + DAY_S - 1
    start_s = end_s - int(years * 365.25 * DAY_S)
    shares = np.array([p.share for p in PERSONAS])
    persona = rng.choice(len(PERSONAS), size=n_customers, p=shares / shares.sum())

    def per(attr):
        return np.array([getattr(p, attr) for p in PERSONAS], dtype="float64")[persona]

    # Demographics.
    age = np.clip(rng.normal(per("age"), 5.0), 18, 90).round()
    income = (per("income") * rng.lognormal(0.0, 0.15, n_customers)).round(-2)
    b2b = rng.random(n_customers) < per("b2b_share")
    gender = rng.choice(np.array(["F", "M", "X"]), size=n_customers, p=[0.49, 0.48, 0.03])
    region = _choose_by_persona(rng, persona, "regions", REGIONS)
    # Acquisition: first purchase on signup, spread over the window.
    signup_s = rng.integers(start_s, end_s, n_customers)

    # Buy-till-you-die: heterogeneous rates and dropout probabilities within each persona.
    rate = per("purchases_per_year") / 365.25 / DAY_S * rng.gamma(6.0, 1 / 6.0, n_customers)
    drop_p = np.clip(per("dropout") * rng.gamma(8.0, 1 / 8.0, n_customers), 0.001, 0.95)
    n_repeat_max = rng.geometric(drop_p) - 1  # repeat purchases made before dropping out
    s_max = float(seasonality(np.arange(1, 367)).max())
    n_candidates = rng.poisson(rate * s_max * (end_s - signup_s))
    cust = np.repeat(np.arange(n_customers), n_candidates)
    t = signup_s[cust] + rng.random(len(cust)) * (end_s - signup_s[cust])
    doy = pd.to_datetime(t.astype("int64"), unit="s").dayofyear.to_numpy()
    keep = rng.random(len(t)) * s_max < seasonality(doy)
    cust, t = cust[keep], t[keep]
    # Dropped out = stopped before the end of the data although the process would have continued.
    dropped = n_repeat_max < np.bincount(cust, minlength=n_customers)
    order = np.lexsort((t, cust))
    cust, t = cust[order], t[order]
    starts = np.r_[0, np.flatnonzero(np.diff(cust)) + 1] if len(cust) else np.zeros(0, int)
    rank = np.arange(len(cust)) - np.repeat(starts, np.diff(np.r_[starts, len(cust)]))
    alive = rank < n_repeat_max[cust]
    cust, t = cust[alive], t[alive]
    # Every customer's first purchase is at signup.
    cust = np.r_[np.arange(n_customers), cust]
    t = np.r_[signup_s.astype("float64"), t]
    last_t = pd.Series(t).groupby(cust).max().to_numpy()

    # Basket values: Gamma around a per-customer mean (Gamma-Gamma story).
    mean_value = per("basket") * rng.gamma(6.0, 1 / 6.0, n_customers)
    amount = rng.gamma(4.0, mean_value[cust] / 4.0).round(2) + 0.01
    channel = _choose_by_persona(rng, persona[cust], "channels", CHANNELS)
    category = _choose_by_persona(rng, persona[cust], "categories", CATEGORIES)

    # Refunds: 4% of purchases are partly or fully refunded 1-30 days later (within the data).
    refunded = rng.random(len(t)) < 0.04
    r_t = t[refunded] + rng.integers(1, 31, refunded.sum()) * DAY_S
    inside = r_t <= end_s
    r_idx = np.flatnonzero(refunded)[inside]
    r_amount = -(amount[r_idx] * rng.uniform(0.3, 1.0, len(r_idx))).round(2)

    all_cust = np.r_[cust, cust[r_idx]]
    all_t = np.r_[t, r_t[inside]]
    order_no = np.r_[np.arange(len(t)), r_idx]
    sort = np.argsort(all_t, kind="stable")
    ids = _ids(n_customers)
    transactions = pd.DataFrame(
        {
            "customer_id": ids.take(pa.array(all_cust[sort])),
            "timestamp": pd.to_datetime(all_t[sort].astype("int64"), unit="s", utc=True),
            "amount": np.r_[amount, r_amount][sort],
            "order_id": _ids(len(t), prefix="O", width=10).take(pa.array(order_no[sort])),
            "channel": np.r_[channel, channel[r_idx]][sort],
            "category": np.r_[category, category[r_idx]][sort],
        }
    )
    for col in ("customer_id", "order_id"):
        transactions[col] = transactions[col].astype("str")
    customers = pd.DataFrame(
        {
            "customer_id": pd.Series(ids.to_pylist(), dtype="str"),
            "signup_date": pd.to_datetime(signup_s, unit="s", utc=True).floor("D"),
            "age": age.astype("int64"),
            "gender": gender,
            "income": income,
            "region": region,
            "customer_type": np.where(b2b, "B2B", "B2C"),
        }
    )
    truth = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "persona_id": persona,
            "persona_name": np.array([p.name for p in PERSONAS])[persona],
            "purchases_per_year": rate * 365.25 * DAY_S,
            "dropout_probability": drop_p,
            "dropped_out": dropped,
            "dropout_time": pd.to_datetime(
                np.where(dropped, last_t, np.nan), unit="s", utc=True
            ).floor("s"),
        }
    )
    return customers, transactions, truth


def _choose_by_persona(rng, persona: np.ndarray, attr: str, values: np.ndarray) -> np.ndarray:
    """Draw one of `values` per row with the persona's weights (inverse-CDF, vectorised)."""
    weights = np.array([getattr(p, attr) for p in PERSONAS], dtype="float64")
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(persona))
    idx = (u[:, None] > cdf[persona]).sum(axis=1)
    return values[np.minimum(idx, len(values) - 1)]


def _ids(n: int, prefix: str = "", width: int = 7) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "") if prefix else digits
