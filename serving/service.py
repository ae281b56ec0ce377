"""The prediction API (BentoML 1.4 service API).

Configuration from the environment, read when the service starts (never at import):
  CLIENTELA_MODEL          registry URI or bundle directory (default models:/clientela@champion)
  CLIENTELA_SNAPSHOT       feature snapshot for lookups by id (default ./clientela_snapshot.parquet)
  CLIENTELA_API_TOKEN      if set, inference routes need `Authorization: Bearer <token>`
  CLIENTELA_MAX_CUSTOMERS  per-request limit on customers (default 10,000)
"""

from __future__ import annotations

import hmac
import logging
import os
from collections import Counter
from datetime import date
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BadInput
from fastapi import FastAPI
from pydantic import Field

from features.customer import customer_features
from features.schema import DataError
from features.validation import validate_customers, validate_transactions
from models.bundle import Prepared
from models.registry import DEFAULT_URI, load_bundle
from serving.schemas import (
    Customer,
    FeatureRecord,
    ScoreResponse,
    Transaction,
    max_customers,
)
from serving.snapshot import DEFAULT_SNAPSHOT, Snapshot

log = logging.getLogger("clientela.serving")
PROTECTED = ("/score/", "/personas", "/model")

predictions_total = bentoml.metrics.Counter(
    name="clientela_predictions_total",
    documentation="Customers scored, by persona and churn risk band",
    labelnames=["persona", "risk_band"],
)


class BearerAuth:
    """ASGI middleware: inference routes need the token when CLIENTELA_API_TOKEN is set;
    health, readiness, metrics and the docs stay open."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        token = os.environ.get("CLIENTELA_API_TOKEN")
        if token and scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given, f"Bearer {token}"):
                await _json(send, 401, {"error": "missing or invalid bearer token"})
                return
        await self.app(scope, receive, send)


async def _json(send, status: int, body: dict) -> None:
    import json

    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


info_app = FastAPI(title="clientela metadata")


def _check_limit(field: str, n: int) -> None:
    if n > max_customers():
        raise BadInput(f"{field}: {n} customers in one request, the limit is {max_customers()}")


@bentoml.asgi_app(info_app, path="/")
@bentoml.service(
    name="clientela",
    traffic={"timeout": 60},
    http={"port": 3000},
    # Per-request access lines cost about a third of the throughput; Prometheus counts the
    # traffic. `clientela serve --access-log` turns them on.
    logging={"access": {"enabled": False}},
)
class Clientela:
    """Personas, churn risk and customer value for marketing systems."""

    def __init__(self) -> None:
        uri = os.environ.get("CLIENTELA_MODEL", DEFAULT_URI)
        try:
            self.bundle = load_bundle(uri)
        except Exception as exc:
            log.error("clientela: cannot load model %s: %s", uri, exc)
            raise
        # One thread per worker: OpenMP threads that spin-wait between small requests starve
        # the event loop (measured: 9 ms per one-customer request instead of 3). Scale with
        # `clientela serve --workers`.
        for booster in (self.bundle.churn.booster_, self.bundle.value.booster_):
            booster.set_param({"nthread": 1})
        snapshot = os.environ.get("CLIENTELA_SNAPSHOT", DEFAULT_SNAPSHOT)
        try:
            self.snapshot = Snapshot(snapshot, self.bundle.prepare)
        except DataError as exc:
            log.warning("clientela: no lookups by id: %s", exc)
            self.snapshot = None
        log.info("clientela: serving model %s (as_of %s)", self.bundle.version, self.as_of)

    @property
    def as_of(self) -> str:
        return self.bundle.manifest["as_of"]

    def __is_ready__(self) -> bool:
        return getattr(self, "bundle", None) is not None

    def _predict(self, prepared: Prepared) -> list[dict]:
        """Predictions as plain records, built from columns (no per-row DataFrame or model
        objects: pydantic validates the response in one pass)."""
        if not len(prepared):
            return []
        columns = self.bundle.predict(prepared)
        plain = {k: v.to_pylist() if k == "reasons" else v.tolist() for k, v in columns.items()}
        counts = Counter(zip(plain["persona_name"], plain["risk_band"], strict=True))
        for (persona, band), n in counts.items():
            predictions_total.labels(persona=persona, risk_band=band).inc(n)
        version = self.bundle.version
        rows = zip(*plain.values(), strict=True)
        return [dict(zip(plain, row, strict=True), model_version=version) for row in rows]

    def _predict_frame(self, features: pd.DataFrame) -> list[dict]:
        return self._predict(self.bundle.prepare(features)) if len(features) else []

    @bentoml.api(route="/score/ids")
    def score_ids(
        self,
        customer_ids: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)],
    ) -> ScoreResponse:
        """Score customers by id, with features from the latest snapshot. Unknown ids come back
        with `error` set instead of failing the request."""
        if self.snapshot is None:
            raise BadInput("no feature snapshot is loaded: run `clientela score` first")
        _check_limit("customer_ids", len(customer_ids))
        ids = list(dict.fromkeys(customer_ids))
        prepared, unknown = self.snapshot.lookup(ids)
        by_id = {p["customer_id"]: p for p in self._predict(prepared)}
        for cid in unknown:
            by_id[cid] = {
                "customer_id": cid,
                "model_version": self.bundle.version,
                "error": f"unknown customer_id (not in the snapshot as of {self.snapshot.as_of})",
            }
        return ScoreResponse(predictions=[by_id[cid] for cid in ids])

    @bentoml.api(route="/score/transactions")
    def score_transactions(
        self,
        transactions: Annotated[list[Transaction], Field(min_length=1, max_length=1_000_000)],
        customers: list[Customer] | None = None,
        as_of: date | None = None,
    ) -> ScoreResponse:
        """Score customers from their transactions; features are computed by the same code as
        training. `as_of` defaults to the latest transaction's day."""
        raw = pd.DataFrame([t.model_dump() for t in transactions])
        _check_limit("transactions", raw["customer_id"].nunique())
        try:
            tx, day, _ = validate_transactions(raw, as_of=as_of, source="transactions")
            attrs = None
            if customers:
                attrs, _ = validate_customers(
                    pd.DataFrame([c.model_dump() for c in customers]), source="customers"
                )
        except DataError as exc:
            raise BadInput(str(exc)) from None
        return ScoreResponse(predictions=self._predict_frame(customer_features(tx, day, attrs)))

    @bentoml.api(route="/score/features")
    def score_features(
        self, features: Annotated[list[FeatureRecord], Field(min_length=1)]
    ) -> ScoreResponse:
        """Score feature records (rows of `clientela features` output)."""
        _check_limit("features", len(features))
        frame = pd.DataFrame([f.model_dump() for f in features]).replace({None: np.nan})
        return ScoreResponse(predictions=self._predict_frame(frame))

    @info_app.get("/personas")
    def personas(self) -> dict:
        """The persona catalog: id, name and profile of each persona."""
        catalog = self.bundle.manifest["persona_catalog"]
        return {"model_version": self.bundle.version, "personas": catalog}

    @info_app.get("/model")
    def model(self) -> dict:
        """Model metadata: version, training as_of, horizons, metrics."""
        m = self.bundle.manifest
        return {
            "model_version": self.bundle.version,
            "as_of": m["as_of"],
            "churn_horizon_days": m["churn_horizon_days"],
            "value_horizon_days": m["value_horizon_days"],
            "features": m["features"],
            "metrics": m["metrics"],
            "snapshot_as_of": self.snapshot.as_of if self.snapshot else None,
        }


Clientela.add_asgi_middleware(BearerAuth)
