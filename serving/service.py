"""The prediction API (BentoML 1.4 service API).

Configuration from the environment, read when the service starts (never at import):
  CLIENTELA_MODEL          registry URI or bundle directory (default models:/clientela@champion)
  CLIENTELA_SNAPSHOT       feature snapshot for lookups by id (default ./clientela_snapshot.parquet)
  CLIENTELA_API_TOKEN      if set, inference routes need `Authorization: Bearer <token>`
  CLIENTELA_MAX_CUSTOMERS  per-request limit on customers (default 10,000)
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
from collections import Counter
from datetime import UTC, date, datetime
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BadInput
from fastapi import FastAPI, Request
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from features.customer import ATTRIBUTE_CATEGORICAL, ATTRIBUTE_NUMERIC, customer_features
from features.schema import DataError
from features.validation import validate_customers, validate_transactions
from models.registry import DEFAULT_URI, load_bundle
from serving.schemas import (
    Customer,
    FeatureRecord,
    Prediction,
    ScoreIdsRequest,
    ScoreResponse,
    Transaction,
    max_customers,
)
from serving.snapshot import DEFAULT_SNAPSHOT, Snapshot, SnapshotUnavailable, labels, records

log = logging.getLogger("clientela.serving")
PROTECTED = ("/score/", "/personas", "/model")

predictions_total = bentoml.metrics.Counter(
    name="clientela_predictions_total",
    documentation="Customers scored, by persona and churn risk band",
    labelnames=["persona", "risk_band"],
)


def count(scored: Counter) -> None:
    for (persona, band), n in scored.items():
        predictions_total.labels(persona=persona, risk_band=band).inc(n)


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
                response = JSONResponse(
                    {"error": "missing or invalid bearer token"},
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


info_app = FastAPI(title="clientela")


def _over_limit(field: str, n: int) -> str | None:
    """The error message when a request has more customers than the limit."""
    limit = max_customers()
    return f"{field}: {n} customers in one request, the limit is {limit}" if n > limit else None


def _check_limit(field: str, n: int) -> None:
    if message := _over_limit(field, n):
        raise BadInput(message)


@info_app.post(
    "/score/ids",
    response_model=ScoreResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ScoreIdsRequest.model_json_schema()}},
        }
    },
)
async def score_ids(request: Request) -> Response:
    """Score customers by id, with features from the latest snapshot. Unknown ids come back
    with `error` set instead of failing the request."""
    # The hot path of marketing systems: a plain route that reads the body itself instead of
    # going through BentoML's IO layer (measured: twice the throughput); errors keep
    # BentoML's shape.
    media_type = request.headers.get("content-type", "application/json").split(";")[0]
    if media_type.strip().lower() != "application/json":
        return JSONResponse({"error": "send application/json"}, status_code=415)
    try:
        ids = ScoreIdsRequest.model_validate_json(await request.body()).customer_ids
    except ValidationError as exc:
        detail = exc.errors(include_context=False, include_input=False, include_url=False)
        error = f"{exc.error_count()} validation error for {exc.title}"
        return JSONResponse({"error": error, "detail": detail}, status_code=400)
    if message := _over_limit("customer_ids", len(ids)):
        return JSONResponse({"error": message}, status_code=400)
    service: Clientela = request.app.state.clientela
    snapshot = service.snapshot
    if snapshot is None:
        return JSONResponse({"error": "no feature snapshot is loaded: run `clientela score`"}, 400)
    ids = list(dict.fromkeys(ids))
    if snapshot.answers is not None:  # in memory: cheaper than a hop to a thread
        answers, scored = snapshot.lookup(ids)
    else:
        try:
            answers, scored = await run_in_threadpool(snapshot.lookup, ids)
        except SnapshotUnavailable as exc:
            return JSONResponse({"error": str(exc)}, 503, headers={"retry-after": "5"})
    count(scored)
    version = service.bundle.version
    for k, cid in enumerate(ids):
        if answers[k] is None:
            error = f"unknown customer_id (not in the snapshot as of {snapshot.as_of})"
            unknown = Prediction(customer_id=cid, model_version=version, error=error)
            answers[k] = unknown.model_dump_json().encode()
    return Response(b'{"predictions":[' + b",".join(answers) + b"]}", media_type="application/json")


@bentoml.asgi_app(info_app, path="/")
@bentoml.service(
    name="clientela",
    traffic={"timeout": 60},
    http={"port": 3000},
    # Per-request access lines cost about a third of the throughput, OpenTelemetry spans on the
    # inference routes half of it; Prometheus counts the traffic. `clientela serve --access-log`
    # and `--tracing` turn them on.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": list(PROTECTED)},
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
        self.bundle.use_threads(1)  # measured: 9 ms per one-customer request instead of 3
        snapshot = os.environ.get("CLIENTELA_SNAPSHOT", DEFAULT_SNAPSHOT)
        try:
            self.snapshot = Snapshot(snapshot, self.bundle)
        except DataError as exc:
            log.warning("clientela: no lookups by id: %s", exc)
            self.snapshot = None
        info_app.state.clientela = self
        # Full passes of the cyclic garbage collector stalled requests by 50-100 ms (p99 150 ms
        # instead of 13): they walked the models and answers loaded here, which live as long as
        # the worker, and the timer BentoML's timeout middleware keeps alive per request for
        # `traffic.timeout` seconds. Freeze the former and make full passes rarer.
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1000)
        log.info("clientela: serving model %s (as_of %s)", self.bundle.version, self.as_of)

    @property
    def as_of(self) -> str:
        return self.bundle.manifest["as_of"]

    def __is_ready__(self) -> bool:
        return getattr(self, "bundle", None) is not None

    def _scored(self, features: pd.DataFrame) -> ScoreResponse:
        try:
            scored = records(self.bundle, features)
        except DataError as exc:
            raise BadInput(str(exc)) from None
        count(labels(scored))
        return ScoreResponse(predictions=scored)

    @bentoml.api(route="/score/transactions")
    def score_transactions(
        self,
        transactions: Annotated[list[Transaction], Field(min_length=1, max_length=1_000_000)],
        customers: list[Customer] | None = None,
        as_of: date | None = None,
    ) -> ScoreResponse:
        """Score customers from their transactions; features are computed by the same code as
        training. `as_of` (the day the answer is for) defaults to today in UTC, so a customer
        whose last purchase was months ago is scored as lapsed; transactions after `as_of` are
        refused."""
        raw = pd.DataFrame([t.model_dump() for t in transactions])
        _check_limit("transactions", raw["customer_id"].nunique())
        as_of = as_of or datetime.now(UTC).date()
        try:
            tx, day, _ = validate_transactions(raw, as_of=as_of, source="transactions")
            attrs = None
            if customers:
                attrs, _ = validate_customers(
                    pd.DataFrame([c.model_dump() for c in customers]), source="customers"
                )
        except DataError as exc:
            raise BadInput(str(exc)) from None
        feats = customer_features(tx, day, attrs)
        # Without `customers` (or without some of their columns) attributes are unknown, as
        # for a customer missing from the customers file in batch scoring.
        unknown = [c for c in self.bundle.feature_columns if c not in feats.columns]
        unknown_attrs = [c for c in unknown if c in ATTRIBUTE_NUMERIC + ATTRIBUTE_CATEGORICAL]
        feats = feats.assign(**dict.fromkeys(unknown_attrs, np.nan))
        return self._scored(feats)

    @bentoml.api(route="/score/features")
    def score_features(
        self, features: Annotated[list[FeatureRecord], Field(min_length=1)]
    ) -> ScoreResponse:
        """Score feature records (rows of `clientela features` output)."""
        _check_limit("features", len(features))
        needed = set(self.bundle.feature_columns)
        for i, record in enumerate(features):
            if missing := sorted(needed - record.model_fields_set):
                raise BadInput(
                    f"features[{i}] lacks {len(missing)} field(s) model {self.bundle.version} "
                    f"reads: {', '.join(missing)} (null is allowed where the value is unknown)"
                )
        frame = pd.DataFrame([f.model_dump() for f in features]).replace({None: np.nan})
        return self._scored(frame)

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
