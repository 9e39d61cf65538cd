"""Group commit: concurrent calls of one statement coalesced into one transaction.

At a thousand webhooks a second, each delivery's own commit (a WAL flush, a round trip, the fixed
costs of a statement in PostgreSQL and in asyncpg) cost more than its rows. :class:`GroupCommit`
runs the statement once per call's arguments in one pipelined batch (asyncpg's ``fetchmany``:
one Sync, so one implicit transaction and one commit), and each caller awaits its own row. A
batch is what arrived while the previous one was in flight: an idle system waits for nothing.
One batch at a time made the largest batches and cost the least CPU (two or four in flight cost
10-15 % more per webhook in bench/webhook_ingest.py); but a batch that waits on a lock must not
hold back everything behind it, so one in flight longer than ``patience_s`` lets another go.

A batch that fails is run again one call at a time, each in its own transaction, so one bad call
gets its own error and the others still commit. An error outside PostgreSQL's answer (the
connection, the pool) goes to every caller of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass(slots=True)
class _Call:
    args: tuple[Any, ...]
    order: Any
    future: asyncio.Future[asyncpg.Record | None] = field(repr=False)


class GroupCommit:
    """Calls of ``query``, which must return exactly one row per call, batched per transaction.

    ``order`` (given per call) sorts a batch before it runs: calls that lock shared rows must
    take them in one global order, or two batches could deadlock where two single calls queue.
    The sort is stable, so calls of equal order keep their arrival order.
    """

    def __init__(self, pool: asyncpg.Pool, query: str, *, max_batch: int = 64, max_in_flight: int = 4,
                 patience_s: float = 0.05) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._pool = pool
        self._query = query
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.patience_s = patience_s
        self._pending: list[_Call] = []
        self._workers: set[asyncio.Task[None]] = set()
        self.batches = 0  # transactions committed or tried, for tests and measurements
        self.calls = 0
        self.fallbacks = 0  # batches that failed and were run again one call at a time

    async def fetchrow(self, *args: Any, order: Hashable | None = None) -> asyncpg.Record | None:
        """The call's row, once its transaction has committed; or the call's own error."""
        future: asyncio.Future[asyncpg.Record | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(args, order, future))
        if not self._workers:
            self._start_worker()
        return await future

    def _start_worker(self) -> None:
        worker = asyncio.create_task(self._work())  # it starts after this loop turn: calls made meanwhile join
        self._workers.add(worker)

    def _impatient(self) -> None:
        """A batch is still in flight after ``patience_s``: the calls waiting behind it go ahead."""
        if self._pending and len(self._workers) < self.max_in_flight:
            self._start_worker()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                taken, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                # a caller that was cancelled (its client left) before its batch formed writes nothing
                calls = [c for c in taken if not c.future.done()]
                if calls:
                    timer = loop.call_later(self.patience_s, self._impatient)
                    try:
                        await self._run(calls)
                    finally:
                        timer.cancel()
        finally:
            # in the same step as the last look at _pending: a done callback would run a turn
            # later, and a call made in between would wait for a worker that has already left
            self._workers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _run(self, calls: list[_Call]) -> None:
        if all(c.order is not None for c in calls):
            calls.sort(key=lambda c: c.order)
        self.batches += 1
        self.calls += len(calls)
        try:
            async with self._pool.acquire() as conn:
                if len(calls) == 1:
                    rows = [await conn.fetchrow(self._query, *calls[0].args)]
                else:
                    try:
                        rows = await conn.fetchmany(self._query, [c.args for c in calls])
                    except asyncpg.PostgresError:
                        self.fallbacks += 1
                        await self._one_by_one(conn, calls)
                        return
                    if len(rows) != len(calls):
                        raise RuntimeError(f"{len(rows)} rows for {len(calls)} calls: the query must return one row per call")
        except BaseException as exc:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for call, row in zip(calls, rows, strict=True):
            if not call.future.done():
                call.future.set_result(row)

    async def _one_by_one(self, conn: asyncpg.Connection, calls: list[_Call]) -> None:
        for call in calls:
            try:
                row = await conn.fetchrow(self._query, *call.args)
            except asyncpg.PostgresError as exc:
                if not call.future.done():
                    call.future.set_exception(exc)
                continue
            if not call.future.done():
                call.future.set_result(row)
