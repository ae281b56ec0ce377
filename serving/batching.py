"""Requests that arrive together are answered together: one model run (or one database query)
for all of them instead of one each. Scoring 16 customers costs about what scoring one does
(the fixed cost of a prediction is set-up, not arithmetic), so under load a worker answers
many more requests, and alone a request waits for nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class Batcher:
    """Runs `run` (requests -> one result per request, in order; blocking) in a thread, one
    call at a time, over every request that arrived while the previous call ran or within
    `turns` turns of the event loop, up to `limit` items a call (a request counts
    `len(request)`; a bigger one runs alone). A result that is an exception is raised to its
    request only; an exception from `run` reaches every request of that call."""

    def __init__(self, run: Callable[[list], Sequence[Any]], limit: int, turns: int = 6):
        self.run = run
        self.limit = limit
        self.turns = turns
        self.waiting: list[tuple[Any, asyncio.Future]] = []
        self.driver: asyncio.Task | None = None

    async def submit(self, request: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((request, future))
        if self.driver is None or self.driver.done():
            self.driver = loop.create_task(self._drive())
        return await future

    async def _drive(self) -> None:
        from starlette.concurrency import run_in_threadpool

        while self.waiting:
            # A few turns of the event loop before each run: a request whose bytes have come
            # needs several to reach `submit` (server, middleware, body, schema) and then
            # joins this run instead of the next. Measured at 32 connections on 2 workers:
            # 8 -> 15 requests a run, /score/transactions 2,800 -> 3,800 req/s; a lone
            # request's latency is unchanged (p50 2.7 ms).
            for _ in range(self.turns):
                await asyncio.sleep(0)
            batch, size = [], 0
            while self.waiting and (not batch or size + len(self.waiting[0][0]) <= self.limit):
                batch.append(self.waiting.pop(0))
                size += len(batch[-1][0])
            try:
                results = await run_in_threadpool(self.run, [request for request, _ in batch])
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its request was cancelled
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
