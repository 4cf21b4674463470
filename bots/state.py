"""The bot's memory of a conversation: the dialogue state and the failures in a row, kept in
the database so a restart mid-dialogue continues where it was.

A brain reads it with `recall` and keeps it with `remember`. Whoever runs the turn may read
and write it for the brain instead, alongside the conversation and the replies
(hub/pipeline/turn_store.py: one query and one transaction for many turns at once): it puts
a `MemorySlot` in `TURN_MEMORY`, recall then answers from the slot and remember fills it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import insert_for, transaction
from crm_store.models import BotState
from crm_store.timeutil import utcnow


@dataclass
class Memory:
    conversation_id: int
    state: dict[str, Any] = field(default_factory=dict)
    failures: int = 0

    @classmethod
    def of(cls, conversation_id: int, row: BotState | None) -> Memory:
        if row is None:
            return cls(conversation_id)
        return cls(conversation_id, dict(row.state or {}), row.failures)


@dataclass
class MemorySlot:
    """A turn's memory as its runner read it, and what the brain asked to keep (None: the
    brain kept nothing, so nothing is written)."""

    loaded: Memory
    kept: Memory | None = None


TURN_MEMORY: ContextVar[MemorySlot | None] = ContextVar("turn_memory", default=None)


def _slot(conversation_id: int) -> MemorySlot | None:
    slot = TURN_MEMORY.get()
    return slot if slot is not None and slot.loaded.conversation_id == conversation_id else None


async def recall(sessions: async_sessionmaker[AsyncSession], conversation_id: int) -> Memory:
    if (slot := _slot(conversation_id)) is not None:
        return slot.loaded
    async with sessions() as session:
        return await recall_in(session, conversation_id)


async def recall_in(session: AsyncSession, conversation_id: int) -> Memory:
    """`recall`, in a session the caller has open for its other reads."""
    if (slot := _slot(conversation_id)) is not None:
        return slot.loaded
    return Memory.of(conversation_id, await session.get(BotState, conversation_id))


async def remember(sessions: async_sessionmaker[AsyncSession], memory: Memory) -> None:
    if (slot := _slot(memory.conversation_id)) is not None:
        slot.kept = memory
        return
    async with transaction(sessions) as session:
        await keep(session, [memory])


async def keep(session: AsyncSession, memories: Sequence[Memory]) -> None:
    """Write memories in the caller's transaction: one statement for all of them."""
    if not memories:
        return
    now = utcnow()
    await session.exec(
        _upsert(insert_for(session)),
        params=[
            {
                "conversation_id": m.conversation_id,
                "state": m.state,
                "failures": m.failures,
                "updated_at": now,
            }
            for m in memories
        ],
    )


@functools.cache
def _upsert(insert: Callable[..., Any]) -> Any:
    # Built once per dialect: a statement made afresh each turn cost more than running it.
    statement = insert(BotState)
    kept = {name: statement.excluded[name] for name in ("state", "failures", "updated_at")}
    return statement.on_conflict_do_update(index_elements=["conversation_id"], set_=kept)


async def forget(sessions: async_sessionmaker[AsyncSession], conversation_id: int) -> None:
    """A conversation given back to the bot starts its dialogue afresh."""
    async with transaction(sessions) as session:
        row = await session.get(BotState, conversation_id)
        if row is not None:
            await session.delete(row)
