"""Group commit for the database: units of work submitted while a transaction is under way
go together in the next one, so a burst of sends costs one commit (and on SQLite one turn at
the write lock) instead of one each.

Each caller still gets its own unit's result, and only after the commit. When the shared
transaction fails, each unit of it is run again alone in a transaction of its own, so one bad
unit fails only its own caller (and a database outage fails each, as before). A unit must
therefore only touch the database: it may run twice, the first time rolled back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import transaction
from hub.pipeline.group_commit import Batched

T = TypeVar("T")
# One unit of work: its statements, in the session of the shared transaction.
Unit = Callable[[AsyncSession], Awaitable[T]]
# A unit, and what makes its work void again should its caller be gone once it ran.
Item = tuple[Unit[Any], Callable[[Any], Unit[Any]] | None]


class WriteBatch:
    def __init__(self, sessions: async_sessionmaker, *, max_batch: int = 200) -> None:
        self.sessions = sessions
        self._batched: Batched[Item, Any] = Batched(
            self._together, max_batch=max_batch, name="db-group-commit", orphaned=self._undo
        )

    async def run(self, unit: Unit[T], *, undo: Callable[[T], Unit[Any]] | None = None) -> T:
        """The unit's result once committed. `undo` makes the unit's work void again when its
        caller was cancelled after the unit ran (the commit no longer reaches anyone): a claim
        nobody will use must not wait out its lease."""
        return await self._batched.submit((unit, undo))

    async def _undo(self, item: Item, result: Any) -> None:
        _, undo = item
        if undo is not None:
            await self._together([(undo(result), None)])

    async def _together(self, batch: list[Item]) -> list[Any]:
        if len(batch) > 1:
            try:
                async with transaction(self.sessions) as session:
                    return [await unit(session) for unit, _ in batch]
            except asyncio.CancelledError:
                raise
            except Exception:
                pass  # rolled back: each unit again, alone
        results: list[Any] = []
        for unit, _ in batch:
            try:
                async with transaction(self.sessions) as session:
                    results.append(await unit(session))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                results.append(exc)
        return results
