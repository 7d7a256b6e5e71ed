"""Micro-batching: concurrent requests answered by one scoring call.

Scoring one user costs a model call with fixed overheads (Python, the item-table GEMM set-up,
the history pools); scoring 32 users in one call costs far less than 32 calls. The batcher
queues each request, and a single worker takes the first waiting request, everything else
already queued and, when the previous batch held more than one request (concurrent clients),
whatever arrives within ``max_wait`` seconds (2 ms by default), up to ``max_batch``; then it runs
``score`` on the whole batch in the scoring thread. Under load, requests pile up while the
previous batch is scored and are all taken at once; the wait gathers the stragglers of a burst
(clients answered by one batch come back at almost, not exactly, the same time). A lone client
never waits: its batches hold one request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


@dataclass
class _Pending:
    group: Hashable
    payload: Any
    future: asyncio.Future


class MicroBatcher:
    """Batches calls of ``score(group, payloads) -> results`` (one result per payload, in order).

    Requests with different ``group`` keys (for example whether explanations are wanted) are
    never mixed in one call; a batch holding several groups makes one call per group.
    """

    def __init__(
        self,
        score: Callable[[Hashable, Sequence[Any]], Sequence[Any]],
        executor: Executor,
        *,
        max_batch: int = 64,
        max_wait: float = 0.002,
    ) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")
        self.score = score
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batch_sizes: list[int] = []  # sizes of the last batches, for /health and tests
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, group: Hashable, payload: Any) -> Any:
        """Queue one request and wait for its result (or its exception)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        future = loop.create_future()
        self._queue.put_nowait(_Pending(group, payload, future))
        return await future

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.get_loop() is asyncio.get_running_loop():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        wait = self.max_wait if self.batch_sizes and self.batch_sizes[-1] > 1 else 0.0
        deadline = loop.time() + wait
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [item for item in await self._collect(queue) if not item.future.done()]
            self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
            groups: dict[Hashable, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.group, []).append(item)
            for group, items in groups.items():
                payloads = [item.payload for item in items]
                try:
                    results = await loop.run_in_executor(self.executor, self.score, group, payloads)
                except Exception as exc:  # every waiting request gets the error
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                for item, result in zip(items, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)
