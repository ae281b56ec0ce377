"""The prediction API (BentoML 1.4 service API).

Configuration from the environment, read when the service starts (never at import):
  CLIENTELA_MODEL          registry URI or bundle directory (default models:/clientela@champion)
  CLIENTELA_SNAPSHOT       feature snapshot for lookups by id (default ./clientela_snapshot.parquet)
  CLIENTELA_API_TOKEN      if set, inference routes need `Authorization: Bearer <token>`
  CLIENTELA_MAX_CUSTOMERS  per-request limit on customers (default 10,000)
  CLIENTELA_AUDIENCES      lists served at /audiences (default ./clientela_audiences.parquet)
  CLIENTELA_REPORT         page served at /report (default ./clientela_report.html)
"""

from __future__ import annotations

import functools
import gc
import hmac
import logging
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import bentoml
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response

from features.schema import DataError
from serving.batching import Batcher
from serving.errors import AudiencesMissing, DatabaseUnavailable
from serving.schemas import (
    AudiencePage,
    AudiencesResponse,
    ErrorResponse,
    Prediction,
    ScoreFeaturesRequest,
    ScoreIdsRequest,
    ScoreResponse,
    ScoreTransactionsRequest,
    Settings,
)

if TYPE_CHECKING:
    import pandas as pd

    from serving.audiences import AudienceStore
    from serving.together import Rows

# What scores (pandas, XGBoost, the models) is imported where it is used, so when a worker
# starts: BentoML's supervisor process imports this module only to read the service's
# settings, and held 175 MB of libraries it never ran.
log = logging.getLogger("clientela.serving")
PROTECTED = ("/score/", "/personas", "/model", "/audiences", "/report")

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
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            service = getattr(info_app.state, "clientela", None)
            if service is None:  # still starting: nothing to answer with yet
                await _error(503, "starting", **{"retry-after": "5"})(scope, receive, send)
                return
            token = service.settings.token
        else:
            token = None
        if token:
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


def _over_limit(request: Request, field: str, n: int) -> str | None:
    """The error message when a request has more customers than the limit."""
    limit = request.app.state.clientela.settings.max_customers
    return f"{field}: {n} customers in one request, the limit is {limit}" if n > limit else None


def _error(status: int, message: str, detail: list | None = None, **headers) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status, headers=headers or None)


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    """The request body validated against `model`, or the 415/400 answer naming what is
    wrong. The scoring routes read their body themselves instead of going through BentoML's
    IO layer: measured twice the throughput, and errors in the documented shape."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0]
    if media_type.strip().lower() != "application/json":
        return _error(415, "send application/json")
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        detail = exc.errors(include_context=False, include_input=False, include_url=False)
        return _error(400, f"{exc.error_count()} validation error(s) in the request", detail)


def _inlined(model: type[BaseModel]) -> dict:
    """The model's JSON schema with nested models written in place: an OpenAPI document has
    no `$defs` to point at."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


def _documented(request_model: type[BaseModel], summary: str) -> dict:
    """OpenAPI for a route that reads its own body: request schema and every answer."""
    return {
        "response_model": ScoreResponse,
        "summary": summary,
        "responses": {
            400: {"model": ErrorResponse, "description": "invalid request, field named"},
            401: {"model": ErrorResponse, "description": "missing or invalid bearer token"},
            415: {"model": ErrorResponse, "description": "not application/json"},
            503: {"model": ErrorResponse, "description": "snapshot database unavailable"},
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inlined(request_model)}},
            }
        },
    }


async def _respond(service: Clientela, request: list[dict] | Rows, route: str) -> Response:
    """Predictions for a request's feature records or transactions as the JSON body, scored off
    the event loop together with the requests that arrive meanwhile (serving.batching)."""
    try:
        scored = await service.batchers[route].submit(request)
    except DataError as exc:
        return _error(400, str(exc))
    return _scored(scored)


def _scored(scored: list[dict]) -> Response:
    from serving.snapshot import labels, to_json

    count(labels(scored))
    return _predictions([to_json(r) for r in scored])


def _predictions(answers: list[bytes]) -> Response:
    """The response body of every scoring route, from predictions already in JSON."""
    return Response(b'{"predictions":[' + b",".join(answers) + b"]}", media_type="application/json")


@info_app.post("/score/ids", **_documented(ScoreIdsRequest, "Score customers by id"))
async def score_ids(request: Request) -> Response:
    """Score customers by id, with features from the latest snapshot. Unknown ids come back
    with `error` set instead of failing the request."""
    parsed = await _parse(request, ScoreIdsRequest)
    if isinstance(parsed, JSONResponse):
        return parsed
    ids = parsed.customer_ids
    if message := _over_limit(request, "customer_ids", len(ids)):
        return _error(400, message)
    service: Clientela = request.app.state.clientela
    snapshot = service.snapshot
    if snapshot is None:
        return _error(400, "no feature snapshot is loaded: run `clientela score`")
    ids = list(dict.fromkeys(ids))
    try:
        answers, scored = await snapshot.lookup_together(ids)
    except DatabaseUnavailable as exc:
        return _error(503, str(exc), **{"retry-after": "5"})
    count(scored)
    version = service.bundle.version
    for k, cid in enumerate(ids):
        if answers[k] is None:
            error = f"unknown customer_id (not in the snapshot as of {snapshot.as_of})"
            unknown = Prediction(customer_id=cid, model_version=version, error=error)
            answers[k] = unknown.model_dump_json().encode()
    return _predictions(answers)


@info_app.post(
    "/score/transactions",
    **_documented(ScoreTransactionsRequest, "Score customers from their transactions"),
)
async def score_transactions(request: Request) -> Response:
    """Score customers from their transactions; features are computed by the same code as
    training. `as_of` (the day the answer is for) defaults to today in UTC, so a customer
    whose last purchase was months ago is scored as lapsed; transactions after `as_of` are
    ignored. Without `customers`, attributes are unknown."""
    from features.validation import record_columns
    from serving.together import Rows

    parsed = await _parse(request, ScoreTransactionsRequest)
    if isinstance(parsed, JSONResponse):
        return parsed
    rows = parsed.transactions
    if message := _over_limit(request, "transactions", len({r.customer_id for r in rows})):
        return _error(400, message)
    service: Clientela = request.app.state.clientela
    try:
        as_of = service.day(parsed.as_of or datetime.now(UTC).date())
        # Rows that need no judgement take the plain-Python path (the same table, proved in
        # tests/features/test_validation.py), their features computed together with those of
        # the requests that arrive meanwhile; anything else the full validation, alone.
        fast = None if parsed.customers or len(rows) > 1000 else record_columns(rows, as_of)
        if fast is not None:
            return await _respond(service, Rows(fast, as_of), "transactions")
        # Off the event loop, so that health checks keep answering.
        scored = await run_in_threadpool(_transaction_answers, parsed, as_of, service)
    except DataError as exc:
        return _error(400, str(exc))
    return _scored(scored)


def _transaction_answers(
    parsed: ScoreTransactionsRequest, as_of: pd.Timestamp, service: Clientela
) -> list[dict]:
    """The answers to a /score/transactions request that needs the full validation or has
    customer attributes (DataError for bad content)."""
    import pandas as pd

    from features.customer import customer_features
    from features.validation import validate_customers, validate_transactions
    from serving.snapshot import records
    from serving.together import with_unknown_attributes

    rows = pd.DataFrame([t.model_dump() for t in parsed.transactions])
    tx, day, _ = validate_transactions(rows, as_of=as_of, source="transactions")
    attrs = None
    if parsed.customers:
        attrs, _ = validate_customers(
            pd.DataFrame([c.model_dump() for c in parsed.customers]), source="customers"
        )
    feats = with_unknown_attributes(customer_features(tx, day, attrs), service.bundle)
    return records(service.bundle, feats)


@info_app.post(
    "/score/features", **_documented(ScoreFeaturesRequest, "Score rows of the feature table")
)
async def score_features(request: Request) -> Response:
    """Score feature records (rows of `clientela features` output). Behaviour columns are
    required (null where unknown); attributes not given are unknown."""
    parsed = await _parse(request, ScoreFeaturesRequest)
    if isinstance(parsed, JSONResponse):
        return parsed
    if message := _over_limit(request, "features", len(parsed.features)):
        return _error(400, message)
    rows = [f.model_dump() for f in parsed.features]  # one table for the whole batch
    return await _respond(request.app.state.clientela, rows, "features")


@info_app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Bad query parameters get the same 400 body as a bad request body."""
    detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
    return _error(400, f"{len(detail)} validation error(s) in the request", detail)


_AUDIENCE_ERRORS = {
    400: {"model": ErrorResponse, "description": "invalid paging, field named"},
    401: {"model": ErrorResponse, "description": "missing or invalid bearer token"},
    404: {"model": ErrorResponse, "description": "no audiences built, or no such audience"},
    503: {"model": ErrorResponse, "description": "audience database unavailable"},
}


@info_app.get(
    "/audiences",
    response_model=AudiencesResponse,
    responses=_AUDIENCE_ERRORS,
    summary="The audiences built by `clientela audience`",
)
async def audiences(request: Request) -> Response:
    """Every audience with its rules, size, predicted value, value at risk, and the model
    version and `as_of` of the scores it was built from."""
    store: AudienceStore = request.app.state.clientela.audiences
    try:
        found = await run_in_threadpool(store.definitions)
    except AudiencesMissing as exc:
        return _error(404, str(exc))
    except DatabaseUnavailable as exc:
        return _error(503, str(exc), **{"retry-after": "5"})
    body = AudiencesResponse(audiences=found)
    return Response(body.model_dump_json(), media_type="application/json")


@info_app.get(
    "/audiences/{name}",
    response_model=AudiencePage,
    responses=_AUDIENCE_ERRORS,
    summary="One audience's customers, a page at a time, best first",
)
async def audience(
    request: Request,
    name: str,
    offset: Annotated[int, Query(ge=0, le=2**62, description="members to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=2**62, description="members in this page")] = 100,
) -> Response:
    """Customer ids and scores of one audience in rank order (by its `by` score), paged with
    `offset` and `limit` (at most CLIENTELA_MAX_CUSTOMERS)."""
    if message := _over_limit(request, "limit", limit):
        return _error(400, message)
    store: AudienceStore = request.app.state.clientela.audiences
    try:
        found = await run_in_threadpool(store.definitions)
        summary = next((a for a in found if a["audience"] == name), None)
        if summary is None:
            known = ", ".join(a["audience"] for a in found)
            return _error(404, f"no audience {name!r}; the audiences are: {known}")
        members = await run_in_threadpool(store.members, name, offset, limit)
    except AudiencesMissing as exc:
        return _error(404, str(exc))
    except DatabaseUnavailable as exc:
        return _error(503, str(exc), **{"retry-after": "5"})
    following = offset + len(members)
    page = AudiencePage(
        audience=summary,
        offset=offset,
        limit=limit,
        next_offset=following if following < summary["customers"] else None,
        customers=members,
    )
    return Response(page.model_dump_json(), media_type="application/json")


@info_app.get(
    "/report",
    response_class=HTMLResponse,
    responses={
        status: {
            "description": description,
            "content": {"application/json": {"schema": _inlined(ErrorResponse)}},
        }
        for status, description in (
            (401, "missing or invalid bearer token"),
            (404, "no report page written yet"),
        )
    },
    summary="The report page written by `clientela report --html`",
)
async def report(request: Request) -> Response:
    """Personas, value at risk, score distributions and the latest monitoring, as the one
    self-contained page `clientela report --html` last wrote (read again on every request, so
    a new page shows without a restart)."""
    path = Path(request.app.state.clientela.settings.report)
    try:
        page = await run_in_threadpool(path.read_bytes)
    except OSError:
        return _error(404, f"no report page at {path}: write it with `clientela report --html`")
    return HTMLResponse(page)


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
        from features.validation import to_day
        from models.registry import DEFAULT_URI, load_bundle
        from serving.audiences import AudienceStore
        from serving.snapshot import DEFAULT_SNAPSHOT, Snapshot
        from serving.together import features_together, transactions_together

        self.settings = Settings.from_env()
        # Requests name a handful of days (mostly today): each parsed once.
        self.day = functools.lru_cache(maxsize=256)(to_day)
        uri = os.environ.get("CLIENTELA_MODEL", DEFAULT_URI)
        try:
            self.bundle = load_bundle(uri)
        except Exception as exc:
            log.error("clientela: cannot load model %s: %s", uri, exc)
            raise
        self.bundle.use_threads(1)  # measured: 9 ms per one-customer request instead of 3
        # One model run at a time per route, for every request that arrived meanwhile.
        self.batchers = {
            "features": Batcher(functools.partial(features_together, self.bundle), limit=1_000),
            "transactions": Batcher(
                functools.partial(transactions_together, self.bundle), limit=1_000
            ),
        }
        snapshot = os.environ.get("CLIENTELA_SNAPSHOT", DEFAULT_SNAPSHOT)
        try:
            self.snapshot = Snapshot(snapshot, self.bundle)
        except DataError as exc:
            log.warning("clientela: no lookups by id: %s", exc)
            self.snapshot = None
        self.audiences = AudienceStore(self.settings.audiences)
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
