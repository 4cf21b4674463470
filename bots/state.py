"""The bot's memory of a conversation: the dialogue state and the failures in a row, kept in
the database so a restart mid-dialogue continues where it was."""

from __future__ import annotations

import functools
from collections.abc import Callable
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


async def recall(sessions: async_sessionmaker[AsyncSession], conversation_id: int) -> Memory:
    async with sessions() as session:
        return await memory_of(session, conversation_id)


async def memory_of(session: AsyncSession, conversation_id: int) -> Memory:
    row = await session.get(BotState, conversation_id)
    if row is None:
        return Memory(conversation_id)
    return Memory(conversation_id, dict(row.state or {}), row.failures)


async def remember(sessions: async_sessionmaker[AsyncSession], memory: Memory) -> None:
    async with transaction(sessions) as session:
        await session.exec(
            _upsert(insert_for(session)),
            params={
                "conversation_id": memory.conversation_id,
                "state": memory.state,
                "failures": memory.failures,
                "updated_at": utcnow(),
            },
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
