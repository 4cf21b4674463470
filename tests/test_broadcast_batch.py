"""Sending scheduled rows in batches: a batch reads and closes only the rows its scheduler
still holds, and the dispatcher's group commit stores concurrent units of work in one
transaction without letting one bad unit fail the others (both databases)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import scheduled
from crm_store.db import transaction
from crm_store.models import Client, ScheduledMessage
from crm_store.scheduled import Planned
from hub.pipeline.write_batch import WriteBatch

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


async def five_rows(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with transaction(sessions) as session:
        client = Client(name="Oksana", marketing_consent=True)
        session.add(client)
        await session.flush()
        planned = [
            Planned(key=f"batch:{n}", kind="broadcast", client_id=client.id, due_at=NOW)
            for n in range(5)
        ]
        await scheduled.enqueue(session, planned, now=NOW)
        rows = (await session.exec(select(ScheduledMessage).order_by(ScheduledMessage.id))).all()
        for row in rows:
            scheduled.set_route(row, "telegram", "main", "100")
            session.add(row)
        return [row.id for row in rows]  # type: ignore[misc]


async def claim(sessions: async_sessionmaker[AsyncSession], worker: str, limit: int) -> list[int]:
    async with transaction(sessions) as session:
        rows = await scheduled.claim(
            session, channel="telegram", now=NOW, worker=worker, lease=LEASE, limit=limit
        )
        return [row.id for row in rows]  # type: ignore[misc]


async def statuses(sessions: async_sessionmaker[AsyncSession]) -> dict[int, str]:
    async with sessions() as session:
        rows = (await session.exec(select(ScheduledMessage))).all()
        return {row.id: row.status for row in rows}  # type: ignore[misc]


async def test_a_batch_reads_only_the_rows_its_scheduler_still_holds(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ids = await five_rows(sessions)
    mine = await claim(sessions, "a", 3)
    theirs = await claim(sessions, "b", 1)
    async with transaction(sessions) as session:
        cancelled = await session.get(ScheduledMessage, mine[0])
        assert cancelled is not None
        scheduled.close(session, cancelled, "skipped", now=NOW, error="gone meanwhile")

    async with transaction(sessions) as session:
        held = await scheduled.still_mine_many(session, ids, "a")

    assert sorted(held) == sorted(mine[1:])
    assert set(theirs).isdisjoint(held)


async def test_a_batch_is_marked_sent_in_one_statement_only_where_still_held(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ids = await five_rows(sessions)
    mine = await claim(sessions, "a", 2)
    theirs = await claim(sessions, "b", 2)

    async with transaction(sessions) as session:
        marked = await scheduled.mark_sent_many(session, [*mine, *theirs], "a", now=NOW)

    assert marked == 2
    found = await statuses(sessions)
    assert [found[i] for i in mine] == ["sent", "sent"]
    assert [found[i] for i in theirs] == ["sending", "sending"]
    assert [found[i] for i in ids if i not in mine + theirs] == ["pending"]


async def test_concurrent_units_share_a_transaction_and_one_bad_unit_fails_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writes = WriteBatch(sessions)

    def add(name: str) -> Callable[[AsyncSession], Awaitable[str]]:
        async def unit(session: AsyncSession) -> str:
            session.add(Client(name=name))
            await session.flush()
            return name

        return unit

    async def bad(session: AsyncSession) -> str:
        raise RuntimeError("this unit is broken")

    results = await asyncio.gather(
        writes.run(add("Anna")),
        writes.run(add("Olha")),
        writes.run(bad),
        writes.run(add("Iryna")),
        return_exceptions=True,
    )

    assert results[:2] == ["Anna", "Olha"] and results[3] == "Iryna"
    assert isinstance(results[2], RuntimeError)
    async with sessions() as session:
        names = sorted(c.name for c in (await session.exec(select(Client))).all())
    assert names == ["Anna", "Iryna", "Olha"]  # each stored once, the bad one's rollback undone


async def test_units_arriving_together_go_in_one_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writes = WriteBatch(sessions)
    seen: list[int] = []

    async def unit(session: AsyncSession) -> None:
        seen.append(id(session))

    await asyncio.gather(*(writes.run(unit) for _ in range(10)))

    assert len(seen) == 10
    assert len(set(seen)) == 1


async def test_empty_batches_touch_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        assert await scheduled.still_mine_many(session, [], "a") == {}
        assert await scheduled.mark_sent_many(session, [], "a", now=NOW) == 0


async def test_a_unit_whose_caller_is_gone_before_the_commit_is_undone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writes = WriteBatch(sessions)
    running, finish = asyncio.Event(), asyncio.Event()

    async def add(session: AsyncSession) -> int:
        running.set()
        await finish.wait()
        client = Client(name="Claimed")
        session.add(client)
        await session.flush()
        return client.id  # type: ignore[return-value]

    def undo(client_id: int) -> Callable[[AsyncSession], Awaitable[None]]:
        async def unit(session: AsyncSession) -> None:
            await session.delete(await session.get(Client, client_id))

        return unit

    caller = asyncio.create_task(writes.run(add, undo=undo))
    await running.wait()
    caller.cancel()  # the caller goes away while its unit is in the transaction
    finish.set()
    await asyncio.gather(caller, return_exceptions=True)
    await writes.run(lambda session: asyncio.sleep(0))  # after the flush that undid it

    async with sessions() as session:
        assert (await session.exec(select(Client))).all() == []
