"""Shops of many kinds, for benchmarks and tests: planted customer groups whose purchases follow
different processes, so that no default is tuned to one generator (the demo's
`features.synthetic` is BG/NBD through and through, like the baseline the models must beat).

A group's purchases follow one of these processes:

  bgnbd     Poisson purchases; after each one the customer leaves with probability `dropout`
  pareto    Poisson purchases over an exponentially distributed lifetime (Pareto/NBD)
  periodic  an order every 365 / rate days with jitter and missed orders (B2B accounts,
            subscriptions), over an exponential lifetime
  seasonal  purchases in the weeks before Christmas (gifting), over an exponential lifetime
  one-time  a single purchase

Real exports start while the shop is already running: a share of customers (`prior_years`) were
acquired before the data begins, and only their later purchases are in it. Each customer's
purchase rate, lifetime and basket vary around the group's values (Gamma heterogeneity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PROCESSES = ("bgnbd", "pareto", "periodic", "seasonal", "one-time")
REGIONS = ("North", "South", "East", "West", "Central")
DAY_S = 86_400


@dataclass(frozen=True)
class Group:
    """A planted customer group: how its customers buy and who they are.

    Attributes left as None are drawn from the shop's population, so they do not tell this
    group apart."""

    name: str
    share: float
    process: str = "pareto"
    purchases_per_year: float = 6.0
    lifetime_years: float | None = 3.0  # mean; None: nobody leaves (pareto, periodic, seasonal)
    dropout: float = 0.1  # bgnbd: probability of leaving after each purchase
    basket: float = 50.0  # mean spend per purchase
    basket_cv: float = 0.5  # variation of one customer's spend per purchase
    age: float | None = None
    income: float | None = None
    b2b: float | None = None  # share of business accounts
    regions: tuple[float, ...] | None = None  # weights over REGIONS

    def __post_init__(self):
        if self.process not in PROCESSES:
            raise ValueError(f"process must be one of {PROCESSES}, got {self.process!r}")


@dataclass(frozen=True)
class Shop:
    name: str
    groups: tuple[Group, ...]
    customers: int = 20_000
    years: float = 3.0
    end: str = "2025-12-31"
    prior_years: float = 0.0  # customers acquired this long before the data starts
    customers_file: bool = True
    # Columns of the customers file.
    attributes: tuple[str, ...] = (
        "signup_date",
        "age",
        "gender",
        "income",
        "region",
        "customer_type",
    )
    refund_rate: float = 0.03
    repeat_line_rate: float = 0.01  # purchases exported as two identical rows (same item twice)
    same_day_rate: float = 0.05  # purchases followed by another order the same day
    age: tuple[float, float] = (42.0, 14.0)  # population mean and sd
    income: float = 50_000.0
    b2b: float = 0.02
    # Gamma shape of the spread of rate, lifetime and basket between the customers of one group
    # (8: a coefficient of variation of 0.35).
    spread: float = 8.0
    description: str = ""


# fmt: off
SHOPS = {
    shop.name: shop
    for shop in (
        Shop("gift-wholesale", description="online gift shop: wholesalers beside consumers, "
             "Christmas gifters, one-off buyers; two years of history, no attributes but region",
             customers=8_000, years=2.0, end="2011-12-09", prior_years=1.0,
             attributes=("region",), groups=(
            Group("wholesalers", 0.08, "pareto", 24, 4.0, basket=900, basket_cv=0.7, b2b=1.0, regions=(1, 1, 0, 0, 0)),
            Group("regular consumers", 0.30, "pareto", 8, 3.0, basket=150, regions=(0, 0, 1, 1, 1)),
            Group("christmas gifters", 0.22, "seasonal", 2, 4.0, basket=200, regions=(0, 0, 1, 1, 1)),
            Group("one-off buyers", 0.40, "one-time", basket=50, regions=(0, 0, 1, 1, 1)),
        )),
        Shop("grocery-receipts", description="grocery chain: four months of daily receipts",
             customers=6_000, years=0.33, prior_years=1.0, customers_file=False, groups=(
            Group("weekly families", 0.45, "pareto", 50, 3.0, basket=85, basket_cv=0.4),
            Group("daily top-ups", 0.20, "pareto", 180, 2.0, basket=12, basket_cv=0.5),
            Group("occasional", 0.35, "pareto", 10, 2.0, basket=30),
        )),
        Shop("b2b-supplier", description="supplier: monthly accounts, ad-hoc buyers, one-offs",
             customers=5_000, years=2.5, prior_years=1.0, groups=(
            Group("monthly accounts", 0.25, "periodic", 12, 4.0, basket=1_500, basket_cv=0.3, b2b=1.0),
            Group("ad-hoc businesses", 0.35, "pareto", 4, 3.0, basket=400, b2b=1.0),
            Group("consumers", 0.40, "bgnbd", 3, dropout=0.3, basket=80, b2b=0.0),
        )),
        Shop("fashion-attributes", description="fashion: groups that buy alike and differ in "
             "age, income and region only", customers=15_000, years=3.0, groups=(
            Group("students", 0.30, "pareto", 5, 3.0, basket=60, age=21, income=15_000, regions=(1, 0, 0, 0, 0)),
            Group("young professionals", 0.30, "pareto", 5, 3.0, basket=60, age=33, income=60_000, regions=(0, 1, 0, 0, 0)),
            Group("families", 0.25, "pareto", 5, 3.0, basket=60, age=45, income=45_000, regions=(0, 0, 1, 0, 0)),
            Group("retirees", 0.15, "pareto", 5, 3.0, basket=60, age=70, income=30_000, regions=(0, 0, 0, 1, 1)),
        )),
        Shop("electronics-behaviour", description="electronics: groups told apart by behaviour "
             "only, no customers file", customers=20_000, years=3.0, customers_file=False, groups=(
            Group("gadget fans", 0.10, "pareto", 12, 4.0, basket=250),
            Group("accessory buyers", 0.30, "pareto", 5, 3.0, basket=20),
            Group("big-ticket", 0.15, "pareto", 1, 5.0, basket=1_200, basket_cv=0.3),
            Group("deal hunters", 0.25, "bgnbd", 30, dropout=0.02, basket=15),
            Group("one-timers", 0.20, "one-time", basket=150),
        )),
        Shop("department-store", description="department store: ten groups from 2% to 30%, "
             "behaviour and attributes", customers=60_000, years=3.0, prior_years=1.0, groups=(
            Group("vip", 0.02, "pareto", 40, 5.0, basket=600, age=55, income=200_000),
            Group("corporate", 0.03, "periodic", 12, 5.0, basket=3_000, basket_cv=0.3, b2b=1.0),
            Group("loyal families", 0.15, "pareto", 20, 5.0, basket=90, age=42, income=70_000, regions=(1, 1, 0, 0, 0)),
            Group("young trendsetters", 0.10, "pareto", 12, 3.0, basket=60, age=24, income=30_000, regions=(0, 0, 1, 0, 0)),
            Group("seasonal gifters", 0.10, "seasonal", 2, 5.0, basket=150, age=50),
            Group("weekend browsers", 0.30, "pareto", 3, 3.0, basket=45, regions=(0, 0, 0, 1, 0)),
            Group("retired regulars", 0.08, "pareto", 15, 5.0, basket=35, age=74, income=35_000),
            Group("one-off tourists", 0.12, "one-time", basket=110, regions=(0, 0, 0, 0, 1)),
            Group("premium occasional", 0.05, "pareto", 2, 4.0, basket=800, income=150_000),
            Group("bargain regulars", 0.05, "bgnbd", 40, dropout=0.01, basket=12, age=30),
        )),
        Shop("marketplace-large", description="large marketplace: 200k customers, six groups",
             customers=200_000, years=3.0, prior_years=0.5, groups=(
            Group("power buyers", 0.05, "pareto", 40, 5.0, basket=90, age=38),
            Group("business resellers", 0.05, "periodic", 24, 4.0, basket=900, basket_cv=0.4, b2b=1.0),
            Group("regulars", 0.30, "pareto", 8, 4.0, basket=45),
            Group("deal seekers", 0.25, "bgnbd", 12, dropout=0.03, basket=12, age=27),
            Group("gift givers", 0.15, "seasonal", 2, 4.0, basket=120, age=55),
            Group("one-timers", 0.20, "one-time", basket=70),
        )),
        Shop("subscription-pharmacy", description="pharmacy: monthly refills beside occasional "
             "buyers", customers=5_000, years=2.0, groups=(
            Group("monthly refills", 0.35, "periodic", 12, 4.0, basket=45, basket_cv=0.2, age=66),
            Group("quarterly refills", 0.25, "periodic", 4, 4.0, basket=140, basket_cv=0.2, age=55),
            Group("occasional", 0.40, "pareto", 3, 2.0, basket=20, age=32),
        )),
    )
}
# fmt: on


def retail_season(doy: np.ndarray) -> np.ndarray:
    """Mild retail seasonality: a summer low and a pre-Christmas peak."""
    return 1.0 + 0.2 * np.cos(2 * np.pi * (doy - 15) / 365.25) + 0.6 * _peak(doy, 340, 14)


def gifting_season(doy: np.ndarray) -> np.ndarray:
    """Gifting: little all year, most of it in the five weeks before Christmas."""
    return 0.03 + _peak(doy, 342, 10)


def _peak(doy, centre, width):
    return np.exp(-0.5 * ((doy - centre) / width) ** 2)


def _doy(days: np.ndarray, origin: pd.Timestamp) -> np.ndarray:
    return ((days + origin.dayofyear - 1) % 365.25) + 1


def _thinned(rng, birth, stop, rate, season, origin) -> tuple[np.ndarray, np.ndarray]:
    """Event times of an inhomogeneous Poisson process (rate x season / mean season) on
    (birth, stop) per customer, by thinning. Returns (customer index, day)."""
    profile = season(np.arange(1, 367))
    s_max = float(profile.max())
    span = np.clip(stop - birth, 0, None)
    n = rng.poisson(rate * s_max / profile.mean() * span)
    cust = np.repeat(np.arange(len(birth)), n)
    t = birth[cust] + rng.random(len(cust)) * span[cust]
    keep = rng.random(len(t)) * s_max < season(_doy(t, origin))
    return cust[keep], t[keep]


def _seasonal_births(rng, low, high, origin, n) -> np.ndarray:
    """Days in (low, high) drawn with the gifting season's density (rejection sampling)."""
    out = np.full(n, np.nan)
    todo = np.arange(n)
    while len(todo):
        t = low + rng.random(len(todo)) * (high - low)
        ok = rng.random(len(todo)) < gifting_season(_doy(t, origin))
        out[todo[ok]] = t[ok]
        todo = todo[~ok]
    return out


def generate_shop(
    shop: Shop, seed: int = 0
) -> tuple[pd.DataFrame | None, pd.DataFrame, pd.DataFrame]:
    """(customers or None, transactions, truth) for a shop; the same seed gives the same data.

    `truth` has every customer's planted group, lifetime end and whether they are in the data."""
    rng = np.random.default_rng(seed)
    n = shop.customers
    groups = shop.groups
    shares = np.array([g.share for g in groups], dtype="float64")
    group = rng.choice(len(groups), size=n, p=shares / shares.sum())
    end = pd.Timestamp(shop.end, tz="UTC") + pd.Timedelta(days=1)  # exclusive, in days from start
    horizon = shop.years * 365.25
    start = end - pd.Timedelta(days=horizon)
    earliest = -shop.prior_years * 365.25

    def per(attr, default=np.nan):
        values = [getattr(g, attr) for g in groups]
        return np.array([default if v is None else v for v in values], dtype="float64")[group]

    process = np.array([g.process for g in groups])[group]
    gamma = rng.gamma(shop.spread, 1 / shop.spread, size=(3, n))  # rate, lifetime, basket
    rate = per("purchases_per_year") / 365.25 * gamma[0]
    lifetime = rng.exponential(per("lifetime_years", np.inf) * 365.25 * gamma[1])
    birth = earliest + rng.random(n) * (horizon - earliest)
    seasonal = process == "seasonal"
    birth[seasonal] = _seasonal_births(rng, earliest, horizon, start, int(seasonal.sum()))
    death = np.where(np.isin(process, ["pareto", "periodic", "seasonal"]), birth + lifetime, np.inf)
    stop = np.minimum(death, horizon)

    cust, days = [np.arange(n)], [birth]  # the first purchase, at acquisition
    for kind, season in (("pareto", retail_season), ("bgnbd", retail_season)):
        idx = np.flatnonzero(process == kind)
        c, t = _thinned(rng, birth[idx], stop[idx], rate[idx], season, start)
        if kind == "bgnbd":  # leaves after each purchase with probability p
            p = np.clip(per("dropout")[idx] * rng.gamma(8.0, 1 / 8.0, len(idx)), 0.001, 0.95)
            order = np.lexsort((t, c))
            c, t = c[order], t[order]
            rank = np.arange(len(c)) - np.searchsorted(c, c)
            alive = rank < (rng.geometric(p) - 1)[c]
            gone = np.bincount(c[~alive], minlength=len(idx)) > 0
            last = birth[idx].copy()
            np.maximum.at(last, c[alive], t[alive])
            death[idx[gone]] = last[gone]
            c, t = c[alive], t[alive]
        cust.append(idx[c])
        days.append(t)
    idx = np.flatnonzero(seasonal)
    c, t = _thinned(rng, birth[idx], stop[idx], rate[idx], gifting_season, start)
    cust.append(idx[c])
    days.append(t)
    idx = np.flatnonzero(process == "periodic")
    period = 1 / rate[idx]
    k = np.floor((stop[idx] - birth[idx]) / period).clip(0, None).astype("int64")
    c = np.repeat(np.arange(len(idx)), k)
    step = np.arange(len(c)) - np.repeat(np.cumsum(k) - k, k) + 1
    t = birth[idx][c] + step * period[c] + rng.normal(0, 0.1, len(c)) * period[c]
    keep = (rng.random(len(c)) > 0.08) & (t < stop[idx][c])  # about one order in 12 missed
    cust.append(idx[c[keep]])
    days.append(t[keep])

    cust, days = np.concatenate(cust), np.concatenate(days)
    seen = (days >= 0) & (days < horizon)
    cust, days = cust[seen], days[seen]
    # Another order the same day, a few hours later.
    again = rng.random(len(cust)) < shop.same_day_rate
    cust = np.r_[cust, cust[again]]
    days = np.r_[
        days, np.minimum(days[again] + rng.uniform(0.01, 0.2, again.sum()), horizon - 1e-6)
    ]
    basket = per("basket") * gamma[2]
    cv = per("basket_cv")[cust]
    amount = (rng.gamma(1 / cv**2, basket[cust] * cv**2) + 0.5).round(2)
    # Partial refunds 1-30 days later, inside the data.
    refunded = np.flatnonzero(rng.random(len(cust)) < shop.refund_rate)
    r_days = days[refunded] + rng.integers(1, 31, len(refunded))
    refunded, r_days = refunded[r_days < horizon], r_days[r_days < horizon]
    r_amount = -(amount[refunded] * rng.uniform(0.3, 1.0, len(refunded))).round(2)
    # The same item bought twice in one order: two identical rows.
    twice = np.flatnonzero(rng.random(len(cust)) < shop.repeat_line_rate)
    all_cust = np.r_[cust, cust[refunded], cust[twice]]
    all_days = np.r_[days, r_days, days[twice]]
    all_amount = np.r_[amount, r_amount, amount[twice]]
    order = np.argsort(all_days, kind="stable")
    ids = pd.Series(np.arange(1, n + 1)).astype("str").str.zfill(6).to_numpy(dtype=object)
    stamps = start + pd.to_timedelta(np.floor(all_days[order] * DAY_S), unit="s")
    transactions = pd.DataFrame(
        {
            "customer_id": pd.Series(ids[all_cust[order]], dtype="str"),
            "timestamp": stamps.astype("datetime64[us, UTC]"),
            "amount": all_amount[order],
        }
    )

    customers = _attributes(rng, shop, group, ids, start, birth) if shop.customers_file else None
    in_data = np.bincount(cust, minlength=n) > 0
    truth = pd.DataFrame(
        {
            "customer_id": pd.Series(ids, dtype="str"),
            "group_id": group,
            "group_name": np.array([g.name for g in groups])[group],
            "process": process,
            "in_data": in_data,
            "alive_at_end": death >= horizon,
        }
    )
    return customers, transactions, truth


def _attributes(rng, shop: Shop, group, ids, start, birth) -> pd.DataFrame:
    groups = shop.groups
    n = len(group)

    def per(attr, default):
        values = [getattr(g, attr) for g in groups]
        return np.array([default if v is None else v for v in values], dtype="float64")[group]

    own_age = per("age", np.nan)
    sd = np.where(np.isnan(own_age), shop.age[1], 6.0)
    age = np.clip(rng.normal(np.where(np.isnan(own_age), shop.age[0], own_age), sd), 18, 95)
    income = per("income", shop.income) * rng.lognormal(0, 0.2, n)
    b2b = rng.random(n) < per("b2b", shop.b2b)
    weights = np.array(
        [g.regions if g.regions is not None else (1,) * len(REGIONS) for g in groups], "float64"
    )
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)[group]
    region = np.array(REGIONS)[np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), 4)]
    signup = (start + pd.to_timedelta(np.floor(birth), unit="D")).floor("D")
    table = pd.DataFrame(
        {
            "customer_id": pd.Series(ids, dtype="str"),
            "signup_date": signup.astype("datetime64[us, UTC]"),
            "age": age.round(),
            "gender": rng.choice(np.array(["F", "M", "X"]), n, p=[0.49, 0.48, 0.03]),
            "income": income.round(-2),
            "region": region,
            "customer_type": np.where(b2b, "B2B", "B2C"),
        }
    )
    return table[["customer_id", *shop.attributes]]
