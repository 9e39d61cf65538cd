"""GroupCommit's batching rules, against a fake pool (the PostgreSQL side: tests/integration/test_webhook_group_commit.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from engine.db.group_commit import GroupCommit


class FakeConn:
    def __init__(self, fail: Exception | None = None, poison: Any = None, hold: Any = None) -> None:
        self.batches: list[list[Any]] = []
        self.fail = fail
        self.poison = poison
        self.hold = hold  # a call with this value waits (a lock) until the event is set
        self.released = asyncio.Event()

    async def fetchrow(self, query: str, *args: Any) -> Any:
        await asyncio.sleep(0)
        if args[0] == self.hold:
            await self.released.wait()
        if args[0] == self.poison:
            raise asyncpg.exceptions.DataError("poison")
        self.batches.append([args[0]])
        return {"echo": args[0]}

    async def fetchmany(self, query: str, args: list[tuple[Any, ...]]) -> list[Any]:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if any(a[0] == self.poison for a in args):
            raise asyncpg.exceptions.DataError("poison")
        self.batches.append([a[0] for a in args])
        return [{"echo": a[0]} for a in args]


class FakePool:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConn]:
        yield self.conn


async def test_calls_made_together_form_one_sorted_batch_and_each_gets_its_row() -> None:
    conn = FakeConn()
    group = GroupCommit(FakePool(conn), "q")  # type: ignore[arg-type]
    rows = await asyncio.gather(*(group.fetchrow(v, order=(v % 3, i)) for i, v in enumerate([5, 4, 3, 2, 1, 0])))
    assert [r["echo"] for r in rows] == [5, 4, 3, 2, 1, 0]
    assert conn.batches == [[3, 0, 4, 1, 5, 2]]


async def test_calls_arriving_during_a_batch_form_the_next_one() -> None:
    conn = FakeConn()
    group = GroupCommit(FakePool(conn), "q", max_in_flight=1)  # type: ignore[arg-type]
    first = asyncio.ensure_future(group.fetchrow(0))
    await asyncio.sleep(0)  # the first batch is in flight
    rest = [asyncio.ensure_future(group.fetchrow(i)) for i in range(1, 5)]
    await asyncio.gather(first, *rest)
    assert conn.batches == [[0], [1, 2, 3, 4]]


async def test_a_refused_call_fails_alone() -> None:
    conn = FakeConn(poison=2)
    group = GroupCommit(FakePool(conn), "q")  # type: ignore[arg-type]
    answers = await asyncio.gather(*(group.fetchrow(i) for i in range(4)), return_exceptions=True)
    assert [a["echo"] if isinstance(a, dict) else type(a) for a in answers] == [0, 1, asyncpg.exceptions.DataError, 3]
    assert group.fallbacks == 1


async def test_a_connection_error_reaches_every_caller() -> None:
    group = GroupCommit(FakePool(FakeConn(fail=ConnectionResetError())), "q")  # type: ignore[arg-type]
    answers = await asyncio.gather(*(group.fetchrow(i) for i in range(3)), return_exceptions=True)
    assert [type(a) for a in answers] == [ConnectionResetError] * 3


async def test_a_caller_cancelled_before_its_batch_forms_writes_nothing() -> None:
    conn = FakeConn()
    group = GroupCommit(FakePool(conn), "q", max_in_flight=1)  # type: ignore[arg-type]
    first = asyncio.ensure_future(group.fetchrow(0))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(group.fetchrow(1))
    kept = asyncio.ensure_future(group.fetchrow(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await first)["echo"] == 0 and (await kept)["echo"] == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert conn.batches == [[0], [2]]


async def test_one_batch_at_a_time_unless_it_is_held_up_longer_than_the_patience() -> None:
    conn = FakeConn(hold="locked")
    group = GroupCommit(FakePool(conn), "q", patience_s=0.05)  # type: ignore[arg-type]
    held = asyncio.ensure_future(group.fetchrow("locked"))
    await asyncio.sleep(0.01)
    behind = [asyncio.ensure_future(group.fetchrow(i)) for i in range(3)]
    await asyncio.sleep(0.02)
    assert not any(f.done() for f in behind)  # waiting for the batch in flight, as usual
    done, _ = await asyncio.wait(behind, timeout=1)
    assert len(done) == 3 and not held.done()  # past the patience they went ahead
    conn.released.set()
    assert (await held)["echo"] == "locked"
    assert conn.batches == [[0, 1, 2], ["locked"]]


async def test_a_call_made_as_the_last_batch_ends_is_not_left_waiting() -> None:
    """A caller answered by a batch that calls again at once (the next delivery on its
    connection) must start a batch of its own, not wait for one that has just ended."""
    conn = FakeConn()
    group = GroupCommit(FakePool(conn), "q")  # type: ignore[arg-type]

    async def two_in_a_row() -> Any:
        await group.fetchrow(1)
        return await group.fetchrow(2)

    assert (await asyncio.wait_for(two_in_a_row(), timeout=1))["echo"] == 2
    assert conn.batches == [[1], [2]]
