"""Small JSON documents a channel keeps across restarts, one per (channel, inbox, key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import transaction
from crm_store.models import ChannelState


async def load_state(
    sessions: async_sessionmaker[AsyncSession], channel: str, inbox: str, key: str
) -> dict[str, Any] | None:
    async with sessions() as session:
        row = await session.get(ChannelState, (channel, inbox, key))
        return None if row is None else dict(row.value)


async def save_state(
    sessions: async_sessionmaker[AsyncSession],
    channel: str,
    inbox: str,
    key: str,
    value: dict[str, Any],
    *,
    at: datetime,
) -> None:
    """Insert or replace; two processes saving the first value at once: the later one wins."""
    for attempt in range(2):
        try:
            async with transaction(sessions) as session:
                row = await session.get(ChannelState, (channel, inbox, key))
                if row is None:
                    row = ChannelState(channel=channel, inbox=inbox, key=key)
                row.value = value
                row.updated_at = at
                session.add(row)
            return
        except IntegrityError:
            if attempt:
                raise
