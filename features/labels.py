"""Labels for a cutoff: what happens in the window (as_of, as_of + horizon], whole UTC days."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.validation import DAY, to_day


def future_window(transactions: pd.DataFrame, as_of, horizon_days: int) -> pd.DataFrame:
    """Rows dated in the `horizon_days` days after `as_of` (the as_of day itself excluded)."""
    if horizon_days <= 0:
        raise ValueError(f"horizon must be a positive number of days, got {horizon_days}")
    as_of = to_day(as_of)
    ts = transactions["timestamp"]
    return transactions[(ts >= as_of + DAY) & (ts < as_of + DAY * (horizon_days + 1))]


def labels(transactions: pd.DataFrame, customer_ids, as_of, horizon_days: int) -> pd.DataFrame:
    """Per customer in `customer_ids`: `churned` (no purchase in the window), `future_spend`
    (net spend in the window) and `future_purchase_days` (distinct purchase days)."""
    window = future_window(transactions, as_of, horizon_days)
    ids = pd.Index(pd.Series(customer_ids, dtype="str"))
    buys = window[window["amount"] > 0]
    days = buys["timestamp"].dt.floor("D")
    purchase_days = (
        pd.DataFrame({"customer_id": buys["customer_id"], "day": days})
        .drop_duplicates()
        .groupby("customer_id")
        .size()
    )
    spend = window.groupby("customer_id")["amount"].sum()
    n_days = purchase_days.reindex(ids, fill_value=0).to_numpy()
    return pd.DataFrame(
        {
            "customer_id": ids,
            "churned": n_days == 0,
            "future_spend": spend.reindex(ids, fill_value=0.0).to_numpy(np.float64),
            "future_purchase_days": n_days,
        }
    )
