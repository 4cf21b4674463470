"""hub/pipeline/turn_store.py: turns that start together share one read, turns that end
together share one transaction, and one bad turn fails only itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from bots.base import Reply
from bots.state import Memory, recall
from crm_store.db import transaction
from crm_store.models import Client, Conversation, Message
from hub.pipeline.replies import BotSilenced
from hub.pipeline.turn_store import TurnEnd, TurnStore, reply_key


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def chats(sessions, n: int, *, status: str = "bot") -> list[int]:
    async with transaction(sessions) as session:
        ids = []
        for i in range(n):
            client = Client(name=f"Guest {i}", language="en")
            session.add(client)
            await session.flush()
            conversation = Conversation(
                client_id=client.id,
                channel="telegram",
                inbox="main",
                chat_id=f"c{i}",
                status=status,
            )
            session.add(conversation)
            await session.flush()
            ids.append(conversation.id)
        return ids


def end(conversation_id: int, answering: str, *texts: str, step: str = "asked") -> TurnEnd:
    return TurnEnd(
        conversation_id,
        answering,
        [Reply(text=t, quick_replies=["Yes", "No"]) for t in texts],
        Memory(conversation_id, {"step": step}, failures=1),
    )


async def test_turns_at_the_same_moment_share_one_read_and_one_write(sessions) -> None:
    ids = await chats(sessions, 10)
    store = TurnStore(sessions)
    engine = sessions.kw["bind"]
    with statements(engine) as seen:
        starts = await asyncio.gather(*(store.start(i) for i in [*ids, 999_999]))
    assert [s.conversation.id for s in starts[:-1]] == ids and starts[-1] is None
    assert starts[0].client.name == "Guest 0" and starts[0].memory == Memory(ids[0])
    assert len([s for s in seen if s.startswith("SELECT")]) == 1

    with statements(engine) as seen:
        queued = await asyncio.gather(
            *(store.finish(end(i, f"m{i}", f"Hello {i}", f"Bye {i}")) for i in ids)
        )
    inserts = [s for s in seen if s.startswith("INSERT INTO messages")]
    upserts = [s for s in seen if s.startswith("INSERT INTO bot_states")]
    assert len(inserts) == 1 and len(upserts) == 1, seen
    assert [[q.outbound.text for q in one] for one in queued] == [
        [f"Hello {i}", f"Bye {i}"] for i in ids
    ]
    first = queued[0][0]
    assert first.created and first.outbound.quick_replies[0].text == "Yes"
    assert first.outbound.chat_id == "c0" and first.message.outbound_key == reply_key(
        f"m{ids[0]}", 0
    )

    async with sessions() as session:
        stored = (await session.exec(select(Message).order_by(col(Message.id)))).all()
        touched = (await session.exec(select(Conversation))).all()
    assert len(stored) == 20 and all(m.status == "queued" and m.author == "bot" for m in stored)
    assert all(c.last_message_at is not None and c.first_response_at for c in touched)
    assert await recall(sessions, ids[3]) == Memory(ids[3], {"step": "asked"}, failures=1)


async def test_one_bad_turn_fails_alone_and_a_silenced_one_keeps_its_memory(sessions) -> None:
    bot = await chats(sessions, 3)
    (staff,) = await chats(sessions, 1, status="human")
    store = TurnStore(sessions)
    # A redelivered turn: its reply is stored already under the same key.
    await store.finish(end(bot[0], "again", "First answer"))
    again, fine, silenced, other = await asyncio.gather(
        store.finish(end(bot[0], "again", "First answer", step="second time")),
        store.finish(end(bot[1], "new", "Fine")),
        store.finish(end(staff, "late", "Too late", step="kept")),
        store.finish(end(bot[2], "new2", "Also fine")),
        return_exceptions=True,
    )
    assert isinstance(again, IntegrityError)
    assert isinstance(silenced, BotSilenced)
    assert [q.outbound.text for q in fine] == ["Fine"]  # type: ignore[union-attr]
    assert [q.outbound.text for q in other] == ["Also fine"]  # type: ignore[union-attr]
    async with sessions() as session:
        texts = sorted(m.text for m in (await session.exec(select(Message))).all())
    assert texts == ["Also fine", "Fine", "First answer"]
    assert (await recall(sessions, staff)).state == {"step": "kept"}
    # What failed wrote nothing of its own: the first answer's memory stands.
    assert (await recall(sessions, bot[0])).state == {"step": "asked"}


@pytest.mark.parametrize("replies", [0, 1])
async def test_a_turn_without_memory_or_replies_writes_what_it_has(sessions, replies: int) -> None:
    (chat,) = await chats(sessions, 1)
    store = TurnStore(sessions)
    texts = ["Only this"][:replies]
    queued = await store.finish(TurnEnd(chat, "m", [Reply(text=t) for t in texts], None))
    assert [q.outbound.text for q in queued] == texts
    assert await recall(sessions, chat) == Memory(chat)
