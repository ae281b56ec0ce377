"""Request and response schemas of the prediction API (pydantic; shown in the OpenAPI document)."""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from features.customer import LIFECYCLE_STAGES


def max_customers() -> int:
    """Per-request limit on customers (CLIENTELA_MAX_CUSTOMERS, default 10,000)."""
    return int(os.environ.get("CLIENTELA_MAX_CUSTOMERS", "10000"))


CustomerId = Annotated[str, Field(min_length=1, max_length=128, examples=["0000042"])]
Days = Annotated[float, Field(ge=0)]
Count = Annotated[float, Field(ge=0)]


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: CustomerId
    timestamp: datetime | date = Field(description="naive = UTC")
    amount: float = Field(allow_inf_nan=False, description="negative = refund")
    order_id: str | None = None
    quantity: float | None = None
    channel: str | None = None
    category: str | None = None


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: CustomerId
    signup_date: date | None = None
    age: float | None = Field(None, ge=0, le=120)
    gender: str | None = None
    income: float | None = Field(None, ge=0)
    region: str | None = None
    customer_type: str | None = Field(None, pattern="^(B2C|B2B)$")


class FeatureRecord(BaseModel):
    """One row of the customer feature table, as written by `clientela features`. Every
    column the served model reads must be given (null where unknown); unknown fields are
    refused by name."""

    model_config = ConfigDict(extra="forbid")
    customer_id: CustomerId
    as_of: str | None = Field(None, description="the day of the features (informational)")
    lifecycle_stage: str = Field(pattern="^(" + "|".join(LIFECYCLE_STAGES) + ")$")
    has_purchase: bool = True
    recency_days: Days | None
    tenure_days: Days | None
    frequency: Count
    total_spend: float
    days_since_activity: Days
    avg_purchase_value: float | None = None
    first_purchase_value: float | None = None
    n_transactions: Count | None = None
    gross_spend: float | None = None
    refund_amount: float | None = None
    refund_share: float | None = None
    purchase_days_30d: Count | None = None
    purchase_days_90d: Count | None = None
    purchase_days_365d: Count | None = None
    spend_30d: float | None = None
    spend_90d: float | None = None
    spend_365d: float | None = None
    mean_interpurchase_days: Days | None = None
    std_interpurchase_days: Days | None = None
    lateness: float | None = None
    trend_90d: float | None = None
    holiday_share: float | None = Field(None, ge=0, le=1)
    as_of_month: int | None = Field(None, ge=1, le=12)
    n_categories: Count | None = None
    n_channels: Count | None = None
    age: float | None = Field(None, ge=0, le=120)
    income: float | None = Field(None, ge=0)
    signup_days: Days | None = None
    gender: str | None = None
    region: str | None = None
    customer_type: str | None = None


class ScoreIdsRequest(BaseModel):
    customer_ids: Annotated[list[CustomerId], Field(min_length=1)]


class Prediction(BaseModel):
    customer_id: str
    persona_id: int | None = None
    persona_name: str | None = None
    lifecycle_stage: str | None = None
    churn_probability: float | None = None
    risk_band: str | None = None
    reasons: list[str] = Field(default_factory=list)
    expected_purchases: float | None = None
    predicted_value: float | None = None
    value_percentile: int | None = None
    model_version: str
    error: str | None = Field(None, description="set when this customer could not be scored")


class ScoreResponse(BaseModel):
    predictions: list[Prediction]
