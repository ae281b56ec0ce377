"""Training on very large shops: the models are fitted on a stratified sample of customers, so
that the time and memory of fitting stop growing with the shop, while everything that
describes the shop (persona sizes and shares, value quantiles, the drift reference) is
computed on every customer."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.load import Inputs

STRATA = "lifecycle stage x spend quintile"


@dataclass(frozen=True)
class Sample:
    customers: int  # the customers the models were fitted on
    of: int  # the shop's customers at as_of

    @property
    def note(self) -> str:
        return (
            f"the models were fitted on a sample of {self.customers:,} of the shop's "
            f"{self.of:,} customers, drawn within strata ({STRATA}); personas, value quantiles "
            "and drift reference describe every customer (max_customers in the config)"
        )

    def to_params(self) -> dict[str, str]:
        return {
            "training_customers": str(self.customers),
            "shop_customers": str(self.of),
            "sample_strata": STRATA,
        }


def stratified_sample(features: pd.DataFrame, size: int, seed: int) -> np.ndarray:
    """About `size` customer ids, the same share drawn from every stratum (lifecycle stage x
    quintile of total spend): small kinds of customers such as wholesalers or the newly
    arrived keep their share of the sample instead of that share varying by chance."""
    spend = features["total_spend"].rank(method="first", pct=True).to_numpy()
    quintile = np.minimum((spend * 5).astype("int64"), 4)
    strata = features["lifecycle_stage"].astype("str").to_numpy() + ":" + quintile.astype("str")
    drawn = features.groupby(strata, sort=False).sample(
        frac=min(1.0, size / len(features)), random_state=seed
    )
    return drawn["customer_id"].to_numpy()


def restricted(inputs: Inputs, ids: np.ndarray) -> Inputs:
    """The inputs of the customers `ids` only: all their transactions and attributes."""
    tx = inputs.transactions
    customers = inputs.customers
    if customers is not None:
        customers = customers[customers["customer_id"].isin(ids)].reset_index(drop=True)
    return replace(
        inputs,
        transactions=tx[tx["customer_id"].isin(ids)].reset_index(drop=True),
        customers=customers,
    )
