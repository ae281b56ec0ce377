"""Value at risk, where it is: one scoring run summarised by persona and lifecycle stage."""

from __future__ import annotations

import pandas as pd

from features.schema import DataError

NEEDED = {
    "persona_id": "persona id",
    "persona_name": "persona name",
    "lifecycle_stage": "lifecycle stage",
    "churn_probability": "churn probability",
    "predicted_value": "predicted value",
}
COLUMNS = [
    "persona_id",
    "persona_name",
    "lifecycle_stage",
    "customers",
    "expected_churners",
    "predicted_value",
    "value_at_risk",
    "share_of_value_at_risk",
]


def check_scores(
    scores: pd.DataFrame, source: str, columns: tuple[str, ...] = tuple(NEEDED)
) -> None:
    """Refuse a table that is not `clientela score` output (lacking any of `columns`), naming
    what is wrong."""
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise DataError(
            f"{source} lacks column(s) {', '.join(missing)}: it is not the output of "
            "`clientela score`"
        )
    numbers = ("churn_probability", "predicted_value", "expected_purchases", "value_percentile")
    for col in (c for c in numbers if c in scores.columns):
        values = pd.to_numeric(scores[col], errors="coerce")
        bad = values.isna() & scores[col].notna()
        if bad.any():
            example = scores.loc[bad, col].iloc[0]
            raise DataError(
                f"{source}: {col} holds {int(bad.sum())} non-number(s), e.g. {example!r}"
            )
    churn = pd.to_numeric(scores["churn_probability"])
    outside = ~churn.between(0, 1) & churn.notna()
    if outside.any():
        raise DataError(
            f"{source}: churn_probability outside [0, 1] in {int(outside.sum())} row(s), "
            f"e.g. {churn[outside].iloc[0]}"
        )


def value_at_risk(scores: pd.DataFrame) -> pd.DataFrame:
    """Per persona and lifecycle stage: customers, expected churners (the sum of churn
    probabilities), predicted value, and value at risk (the sum of churn probability x
    predicted value), largest value at risk first, then a total row ("all")."""
    frame = scores[list(NEEDED)].assign(
        churn_probability=lambda f: pd.to_numeric(f["churn_probability"]).fillna(0.0),
        predicted_value=lambda f: pd.to_numeric(f["predicted_value"]).fillna(0.0),
    )
    frame["value_at_risk"] = frame["churn_probability"] * frame["predicted_value"]
    table = (
        frame.groupby(["persona_id", "persona_name", "lifecycle_stage"], observed=True)
        .agg(
            customers=("churn_probability", "size"),
            expected_churners=("churn_probability", "sum"),
            predicted_value=("predicted_value", "sum"),
            value_at_risk=("value_at_risk", "sum"),
        )
        .reset_index()
        .sort_values(["value_at_risk", "persona_id"], ascending=[False, True])
    )
    total = pd.DataFrame(
        {
            "persona_id": [None],
            "persona_name": ["all"],
            "lifecycle_stage": ["all"],
            "customers": [len(frame)],
            "expected_churners": [frame["churn_probability"].sum()],
            "predicted_value": [frame["predicted_value"].sum()],
            "value_at_risk": [frame["value_at_risk"].sum()],
        }
    )
    table = pd.concat([table, total], ignore_index=True)
    whole = float(total["value_at_risk"].iloc[0])
    table["share_of_value_at_risk"] = table["value_at_risk"] / whole if whole > 0 else 0.0
    table["persona_id"] = table["persona_id"].astype("Int64")
    return table[COLUMNS]
