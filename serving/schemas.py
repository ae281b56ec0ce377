"""Request and response schemas of the prediction API (pydantic; shown in the OpenAPI document)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from features.schema import (
    ATTRIBUTE_BOUNDS,
    CUSTOMER_TYPES,
    LIFECYCLE_STAGES,
    NUMERIC_FEATURES,
    OPTIONAL_BREADTH,
    WINDOWS,
)


@dataclass(frozen=True)
class Settings:
    """The service's settings, read from the environment once, when it starts."""

    token: str | None = None  # CLIENTELA_API_TOKEN: inference routes need this bearer token
    max_customers: int = 10_000  # CLIENTELA_MAX_CUSTOMERS: customers per request
    audiences: str = "clientela_audiences.parquet"  # CLIENTELA_AUDIENCES: lists for /audiences
    report: str = "clientela_report.html"  # CLIENTELA_REPORT: the page for /report

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get("CLIENTELA_MAX_CUSTOMERS", "10000")
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"CLIENTELA_MAX_CUSTOMERS must be a positive integer, got {raw!r}")
        return cls(
            os.environ.get("CLIENTELA_API_TOKEN") or None,
            int(raw),
            os.environ.get("CLIENTELA_AUDIENCES") or cls.audiences,
            os.environ.get("CLIENTELA_REPORT") or cls.report,
        )


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


_AGE, _INCOME = ATTRIBUTE_BOUNDS["age"], ATTRIBUTE_BOUNDS["income"]  # one rule for files and API


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: CustomerId
    signup_date: date | None = None
    age: float | None = Field(None, ge=_AGE[0], le=_AGE[1])
    gender: str | None = None
    income: float | None = Field(None, ge=_INCOME[0], allow_inf_nan=False)
    region: str | None = None
    customer_type: str | None = Field(None, pattern="^(" + "|".join(CUSTOMER_TYPES) + ")$")


# Bounds of the feature columns (features.customer): days, counts and amounts that cannot be
# negative, a share, a month. Everything else is any finite number.
_NON_NEGATIVE = {
    "recency_days", "tenure_days", "frequency", "n_transactions", "gross_spend",
    "refund_amount", "refund_share", "avg_purchase_value", "first_purchase_value",
    *(f"purchase_days_{w}d" for w in WINDOWS), "mean_interpurchase_days",
    "std_interpurchase_days", "lateness", "days_since_activity",
}  # fmt: skip
_BOUNDS = {"holiday_share": {"ge": 0, "le": 1}, "as_of_month": {"ge": 1, "le": 12}}


def _feature_record() -> type[BaseModel]:
    """The request schema of one feature row, generated from the feature definition
    (`features.customer`): every behaviour column is required (null where unknown, as in the
    table), attributes and breadth columns are optional (absent = unknown), and anything else
    is refused by name."""
    fields: dict = {
        "customer_id": (CustomerId, ...),
        "as_of": (str | None, Field(None, description="the day of the features (informational)")),
        "lifecycle_stage": (Literal[LIFECYCLE_STAGES], ...),  # type: ignore[valid-type]
        "has_purchase": (bool, ...),
    }
    for name in NUMERIC_FEATURES:
        bounds = _BOUNDS.get(name, {"ge": 0} if name in _NON_NEGATIVE else {})
        fields[name] = (float | None, Field(..., allow_inf_nan=False, **bounds))
    for name in OPTIONAL_BREADTH.values():
        fields[name] = (float | None, Field(None, ge=0, allow_inf_nan=False))
    for name, field in Customer.model_fields.items():
        if name not in ("customer_id", "signup_date"):
            fields[name] = (field.annotation, field)
    fields["signup_days"] = (float | None, Field(None, ge=0, allow_inf_nan=False))
    return create_model(
        "FeatureRecord",
        __config__=ConfigDict(extra="forbid"),
        __doc__="One row of the customer feature table, as written by `clientela features`.",
        **fields,
    )


FeatureRecord = _feature_record()


class ScoreTransactionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: Annotated[list[Transaction], Field(min_length=1, max_length=1_000_000)]
    customers: list[Customer] | None = None
    as_of: date | None = Field(
        None,
        description="the day the answer is for; default today in UTC (a customer last seen a "
        "year ago is then lapsed); transactions after it are ignored",
    )


class ScoreFeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: Annotated[list[FeatureRecord], Field(min_length=1)]  # type: ignore[valid-type]


class ErrorResponse(BaseModel):
    error: str
    detail: list[dict] | None = Field(None, description="one entry per invalid field")


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


class AudienceSummary(BaseModel):
    audience: str
    description: str
    rules: dict = Field(description="the definition as written in the rules file")
    customers: int
    predicted_value: float
    value_at_risk: float = Field(description="sum of churn probability x predicted value")
    model_version: str
    as_of: str = Field(description="the day of the scores the audience was built from")
    built_at: str


class AudiencesResponse(BaseModel):
    audiences: list[AudienceSummary]


class AudienceMember(BaseModel):
    rank: int
    customer_id: str
    persona_id: int | None
    persona_name: str | None
    lifecycle_stage: str | None
    risk_band: str | None
    churn_probability: float | None
    expected_purchases: float | None
    predicted_value: float | None
    value_percentile: int | None
    value_at_risk: float | None


class AudiencePage(BaseModel):
    audience: AudienceSummary
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")
    customers: list[AudienceMember]
