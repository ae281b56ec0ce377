"""API throughput and latency on loopback, against a minimal Starlette app doing the same
XGBoost prediction, measured in the same run with the same load generator.

    python benchmarks/serving.py [--seconds 20] [--concurrency 32] [--workers 1]

Both apps run 2 worker processes by default, with uvloop and httptools, under `wrk -c32`.

Targets: `/score/ids`, one customer per request: throughput >= 1.0x the reference, p99 <=
1.5x, 0 errors; requests of 1,000 customers: >= 50,000 customers/s. `/score/transactions` (one
customer with 20 transactions) and `/score/features` (one feature record), which run the
features and models per request: throughput >= 0.5x the reference, p99 <= 3x. Server memory
(all processes) within 1.5x the reference's.

clientela answers `/score/ids` from predictions it makes for the whole snapshot when it starts;
the reference runs XGBoost per request.

The load generator is `wrk` (apt install wrk) when it is installed: a Python client on the
same two cores measures itself more than the servers (it capped the reference at ~100 req/s).
Without wrk, an httpx client is used and the figures say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parent.parent))

REFERENCE_APP = """
import os
import numpy as np
import pandas as pd
import xgboost as xgb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from models.bundle import Bundle

bundle = Bundle.load(os.environ["BUNDLE"])
bundle.churn.booster_.set_param({"nthread": 1})  # as clientela's workers: no OpenMP thrashing
table = pd.read_parquet(os.environ["SNAPSHOT"]).set_index("customer_id", drop=False)
matrix = bundle.encoder.transform(bundle.model_inputs(table.reset_index(drop=True)))
rows = {cid: i for i, cid in enumerate(table["customer_id"])}

async def score(request: Request):
    body = await request.json()
    idx = [rows[c] for c in body["customer_ids"]]
    p = bundle.churn.booster_.inplace_predict(matrix[idx])
    return JSONResponse({"predictions": [{"customer_id": c, "churn": float(v)}
                                          for c, v in zip(body["customer_ids"], p)]})

app = Starlette(routes=[Route("/score/ids", score, methods=["POST"])])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 120) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.post(f"{url}/score/ids", json={"customer_ids": ["000000001"]}, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not start")


WRK_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""

WRK_IDS = """
local n, batch, k = %(n)d, %(batch)d, 0
request = function()
  local ids = {}
  for j = 1, batch do
    ids[j] = string.format('"%%09d"', (k * batch + j) %% n)
  end
  k = k + 1
  return wrk.format(nil, "/score/ids", nil, '{"customer_ids": [' .. table.concat(ids, ",") .. ']}')
end
"""


def load_wrk(
    url: str, n_ids: int, batch: int, concurrency: int, seconds: float, body: str | None = None
) -> dict:
    """`batch` ids per request to /score/ids, or the same `body` to `url` every time."""
    if body is None:
        script = WRK_POST + WRK_IDS % {"n": n_ids, "batch": batch}
    else:
        script = WRK_POST + f"wrk.body = [[{body}]]\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    threads = str(min(2, concurrency))
    out = subprocess.run(
        ["wrk", "-t", threads, "-c", str(concurrency), "-d", f"{seconds:.0f}s", "-s", fh.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(fh.name)
    requests_, micros, errors, p50, p99 = out.split("RESULT")[1].split()
    elapsed = int(micros) / 1e6
    return {
        "requests_s": int(requests_) / elapsed,
        "customers_s": int(requests_) * batch / elapsed,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "errors": int(errors),
        "requests": int(requests_),
    }


async def load(url: str, ids: list[str], batch: int, concurrency: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            chunk = [ids[(i * batch + j) % len(ids)] for j in range(batch)]
            i += concurrency
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/score/ids", json={"customer_ids": chunk})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(k, client) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    return {
        "requests_s": len(lat) / elapsed,
        "customers_s": len(lat) * batch / elapsed,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "errors": errors,
        "requests": len(lat),
    }


def wait_idle(pid: int, timeout: float = 120) -> None:
    """Until the server's processes stop using CPU: every worker has finished starting. (The
    first ready worker would otherwise accept all of wrk's keep-alive connections.)"""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            p.cpu_percent()
        time.sleep(1)
        if sum(p.cpu_percent() for p in procs) < 10:
            return
    raise RuntimeError("the server kept busy after starting")


def tree_rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="server processes, both apps")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None
    print(f"load generator: {'wrk' if use_wrk else 'httpx (install wrk for fair figures)'}")
    from benchmarks.common import replicate, trained_bundle
    from features.sources import write_table

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("training a bundle on 20,000 synthetic customers ...")
        bundle_dir, feats = trained_bundle(tmp)
        snapshot = write_table(replicate(feats, 100_000), tmp / "snapshot.parquet")
        ids = [f"{i:09d}" for i in range(100_000)]
        record = json.dumps({"features": json.loads(feats.head(1).to_json(orient="records"))})
        as_of = pd.Timestamp(json.loads((bundle_dir / "manifest.json").read_text())["as_of"])
        days = [as_of - pd.Timedelta(days=18 * k + 1) for k in range(20)]
        transactions = json.dumps(
            {
                "transactions": [
                    {"customer_id": "c1", "timestamp": str(d.date()), "amount": 20.0 + k}
                    for k, d in enumerate(days)
                ],
                "as_of": str(as_of.date()),
            }
        )
        per_request = {}
        (tmp / "reference_app.py").write_text(REFERENCE_APP)
        env = {**os.environ, "BUNDLE": str(bundle_dir), "SNAPSHOT": snapshot}
        env["PYTHONPATH"] = str(Path(__file__).parent.parent)
        results = {}
        for name in ("reference", "clientela"):
            port = free_port()
            if name == "reference":
                cmd = [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "reference_app:app",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--workers",
                    str(args.workers),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                ]
            else:
                cmd = [
                    sys.executable,
                    "-c",
                    "from clientela import app; app()",
                    "serve",
                    "--model",
                    str(bundle_dir),
                    "--snapshot",
                    snapshot,
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                ]
            server = subprocess.Popen(
                cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url)
                wait_idle(server.pid)
                bulk_seconds = min(args.seconds, 10)
                if use_wrk:
                    single = load_wrk(url, len(ids), 1, args.concurrency, args.seconds)
                    bulk = load_wrk(url, len(ids), 1000, 4, bulk_seconds)
                    if name == "clientela":
                        for route, body in (
                            ("/score/transactions", transactions),
                            ("/score/features", record),
                        ):
                            per_request[route] = load_wrk(
                                f"{url}{route}", 0, 1, args.concurrency, bulk_seconds, body
                            )
                else:
                    single = asyncio.run(load(url, ids, 1, args.concurrency, args.seconds))
                    bulk = asyncio.run(load(url, ids, 1000, 4, bulk_seconds))
                results[name] = (single, bulk, tree_rss_mb(server.pid))
            finally:
                server.terminate()
                server.wait(timeout=30)

    for name, (single, bulk, rss) in results.items():
        print(
            f"{name:10s} single: {single['requests_s']:7.0f} req/s, "
            f"p50 {single['p50_ms']:6.1f} ms, "
            f"p99 {single['p99_ms']:6.1f} ms, errors {single['errors']}/{single['requests']}; "
            f"1,000-customer requests: {bulk['customers_s']:8.0f} customers/s "
            f"(errors {bulk['errors']}); server RSS {rss:.0f} MB"
        )
    ours, ref = results["clientela"][0], results["reference"][0]
    for route, run in per_request.items():
        print(
            f"clientela  {route}, one customer, features and models per request: "
            f"{run['requests_s']:.0f} req/s, p99 {run['p99_ms']:.1f} ms, "
            f"errors {run['errors']}/{run['requests']}: "
            f"{run['requests_s'] / ref['requests_s']:.2f}x the reference's throughput "
            f"(target >= 0.5x), p99 {run['p99_ms'] / ref['p99_ms']:.2f}x (target <= 3x)"
        )
    print(
        f"/score/ids throughput ratio clientela/reference: "
        f"{ours['requests_s'] / ref['requests_s']:.2f}x (target >= 1.0x); p99 ratio: "
        f"{ours['p99_ms'] / ref['p99_ms']:.2f}x (target <= 1.5x); "
        f"bulk: {results['clientela'][1]['customers_s']:,.0f} customers/s (target >= 50,000); "
        f"memory {results['clientela'][2] / results['reference'][2]:.2f}x the reference's "
        f"(target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
