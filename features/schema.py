"""The data contract: canonical column names and the mapping from a real export's names."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

TRANSACTION_REQUIRED = ("customer_id", "timestamp", "amount")
TRANSACTION_OPTIONAL = ("order_id", "quantity", "channel", "category")
CUSTOMER_REQUIRED = ("customer_id",)
CUSTOMER_OPTIONAL = ("signup_date", "age", "gender", "income", "region", "customer_type")
CUSTOMER_TYPES = ("B2C", "B2B")
# Plausible attribute values, for files (others become missing and are counted) and the API
# (others are a 400) alike.
ATTRIBUTE_BOUNDS = {"age": (0.0, 120.0), "income": (0.0, float("inf"))}

# The feature table's columns (computed in features.customer; the API's schemas read them
# from here without loading pandas).
LIFECYCLE_STAGES = ("walk-in", "new", "existing", "regular", "lapsed")
WINDOWS = (30, 90, 365)

NUMERIC_FEATURES = [
    "recency_days",
    "tenure_days",
    "frequency",
    "total_spend",
    "n_transactions",
    "gross_spend",
    "refund_amount",
    "refund_share",
    "avg_purchase_value",
    "first_purchase_value",
    *[f"purchase_days_{w}d" for w in WINDOWS],
    *[f"spend_{w}d" for w in WINDOWS],
    "mean_interpurchase_days",
    "std_interpurchase_days",
    "lateness",
    "trend_90d",
    "holiday_share",
    "days_since_activity",
    "as_of_month",
]
OPTIONAL_BREADTH = {"category": "n_categories", "channel": "n_channels"}
ATTRIBUTE_NUMERIC = ["age", "income", "signup_days"]
# Every column of the feature table that holds a number (NaN where unknown).
NUMBER_COLUMNS = frozenset([*NUMERIC_FEATURES, *OPTIONAL_BREADTH.values(), *ATTRIBUTE_NUMERIC])
ATTRIBUTE_CATEGORICAL = ["gender", "region", "customer_type"]


# A UTC offset after a time of day: Z, +01, +0100 or +01:00 (ISO 8601; `-01` alone ends a date).
TZ_SUFFIX = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def has_utc_offset(stamp: str) -> bool:
    """Whether one timestamp's text ends in a UTC offset: how Arrow is told to read a column by
    its first value (Arrow reads tz-aware text only when every value has an offset)."""
    return re.search(TZ_SUFFIX, stamp.strip()) is not None


class DataError(ValueError):
    """Unusable input; the message names the column, the count and an example."""


@dataclass(frozen=True)
class ColumnMapping:
    """Canonical column name -> the name it has in the source (only the ones that differ).

    One mapping serves both tables: `customer_id` is renamed wherever the source name appears.
    """

    renames: dict[str, str] = field(default_factory=dict)
    time_format: str | None = None
    encoding: str = "utf-8"

    @classmethod
    def from_options(
        cls,
        mapping_file: Path | None = None,
        time_format: str | None = None,
        encoding: str = "utf-8",
        **columns: str | None,
    ) -> ColumnMapping:
        """Build from a JSON/TOML mapping file plus `--<name>-col` options (options win)."""
        renames: dict[str, str] = {}
        if mapping_file is not None:
            renames.update(_read_mapping_file(Path(mapping_file)))
        renames.update({k: v for k, v in columns.items() if v})
        known = set(TRANSACTION_REQUIRED + TRANSACTION_OPTIONAL + CUSTOMER_OPTIONAL)
        unknown = sorted(set(renames) - known)
        if unknown:
            raise DataError(
                f"column mapping names unknown field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(renames=renames, time_format=time_format, encoding=encoding)

    def source_to_canonical(self, columns: list[str]) -> dict[str, str]:
        """Renames to apply to a frame with these columns."""
        present = set(columns)
        return {src: canon for canon, src in self.renames.items() if src in present}

    def source_name(self, canonical: str) -> str:
        return self.renames.get(canonical, canonical)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _read_mapping_file(path: Path) -> dict[str, str]:
    if not path.exists():
        raise DataError(f"mapping file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"mapping file {path} is not valid JSON/TOML: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise DataError(
            f"mapping file {path} must map field names to column names, "
            'e.g. {"customer_id": "CustomerID", "timestamp": "InvoiceDate"}'
        )
    return data
