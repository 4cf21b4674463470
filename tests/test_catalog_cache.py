"""The brains keep the catalogue in memory and still answer from the one in the database: a
price, a master or an hour changed anywhere (the API, the command line, another process, a
hand edit in SQL) is in the very next answer, and an unchanged catalogue costs one query."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.base import Turn
from bots.catalog_cache import CatalogCache
from bots.offline import OfflineBrain
from bots.tools import Tools
from crm_store.business import update_business
from crm_store.catalog import add_time_off, catalog_version, set_master_services
from crm_store.db import create_engine, session_factory, transaction
from crm_store.staff import set_active
from tests.salon import build_salon, kyiv
from tests.test_bot_tools import NOW, chat_of_a_stranger


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_every_write_to_the_catalogue_moves_its_version(sessions) -> None:
    salon = await build_salon(sessions)

    async def version() -> int:
        async with sessions() as session:
            return await catalog_version(session)

    seen = [await version()]
    writes = [
        lambda s: update_business(s, {"name": "Nail Bar"}, actor="staff"),
        lambda s: set_master_services(s, salon.olena, {salon.haircut: (None, None)}),
        lambda s: add_time_off(s, salon.iryna, kyiv("2027-03-02 10:00"), kyiv("2027-03-02 12:00")),
        lambda s: set_active(s, salon.iryna, False),
        # By hand, as a hosting engineer might in psql: the triggers see it too.
        lambda s: s.exec(text("UPDATE services SET price_minor = price_minor + 100")),
        lambda s: s.exec(text("DELETE FROM working_hours WHERE weekday = 6")),
        # The stamp row itself deleted: the next write brings it back, still moving on.
        lambda s: s.exec(text("DELETE FROM catalog_stamp")),
        lambda s: s.exec(text("UPDATE staff SET name = 'Olena K.' WHERE role = 'master'")),
    ]
    for write in writes:
        async with transaction(sessions) as session:
            await write(session)
        seen.append(await version())
    assert seen[0] > 0
    assert all(b != a for a, b in pairwise(seen)), seen
    # Reads and writes elsewhere leave it alone.
    before = await version()
    async with transaction(sessions) as session:
        await session.exec(text("UPDATE clients SET name = 'Oksana K.'"))
    assert await version() == before


async def test_the_bot_answers_from_the_catalogue_as_it_is_now(sessions, db: str) -> None:
    salon = await build_salon(sessions)
    engine = sessions.kw["bind"]
    brain = OfflineBrain(Tools(sessions, clock=lambda: NOW), sessions, clock=lambda: NOW)
    conversation, client = await chat_of_a_stranger(sessions, "price-watch")
    asked = iter(range(1000))

    async def ask(question: str) -> str:
        turn = Turn(
            conversation_id=conversation,
            client_id=client,
            channel="webchat",
            message_id=f"q{next(asked)}",
            text=question,
            language="uk",
        )
        return "\n".join(r.text for r in await brain.respond(turn))

    assert "800" in await ask("Скільки коштує манікюр з покриттям?")
    # Unchanged: the catalogue is not read again, one number is.
    with statements(engine) as seen:
        assert "800" in await ask("А скільки коштує манікюр з покриттям?")
    catalogue_reads = [s for s in seen if "FROM services" in s or "FROM master_services" in s]
    assert catalogue_reads == [] and any("catalog_stamp" in s for s in seen)

    # Another process changes the price: the next answer has it.
    other = create_engine(db)
    try:
        async with transaction(session_factory(other)) as session:
            await session.exec(
                text(f"UPDATE services SET price_minor = 95000 WHERE id = {salon.manicure}")
            )
    finally:
        await other.dispose()
    answer = await ask("Скільки коштує манікюр з покриттям?")
    assert "950" in answer and "800" not in answer

    # A master stops doing it: the bot no longer offers her.
    async with transaction(sessions) as session:
        await set_master_services(session, salon.iryna, {})
        await set_active(session, salon.olena, False)
    answer = await ask("Скільки коштує манікюр з покриттям?")
    assert "950" not in answer, answer


async def test_turns_at_the_same_moment_share_one_look_at_the_version(sessions) -> None:
    await build_salon(sessions)
    built: list[int] = []

    async def build(session) -> int:  # type: ignore[no-untyped-def]
        built.append(await catalog_version(session))
        return len(built)

    cache = CatalogCache(sessions, build)
    with statements(sessions.kw["bind"]) as seen:
        values = await asyncio.gather(*(cache.get() for _ in range(10)))
    assert values == [1] * 10 and len(built) == 1
    assert len([s for s in seen if "FROM catalog_stamp" in s]) == 2  # the shared look, the build
    # A change: the next look sees it, and the catalogue is built again once.
    async with transaction(sessions) as session:
        await session.exec(text("UPDATE services SET price_minor = 1"))
    assert await asyncio.gather(cache.get(), cache.get()) == [2, 2]
