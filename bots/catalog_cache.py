"""What a brain builds from the catalogue, kept in memory until the catalogue changes.

Every turn needs the salon, its services and masters; reading and shaping them was five
queries a turn. Now a turn reads one number (crm_store.catalog.catalog_version, moved by
triggers on every write, whoever makes it) and rebuilds only when it moved, so a price or
an hour changed in the browser is in the very next answer, in every hub process. The turns
asking at the same moment share that one read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.catalog import catalog_version

T = TypeVar("T")


class CatalogCache(Generic[T]):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        build: Callable[[AsyncSession], Awaitable[T]],
    ) -> None:
        self.sessions = sessions
        self._build = build
        self._version: int | None = None
        self._value: T | None = None
        self._next: asyncio.Future[int] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._building = asyncio.Lock()

    async def get(self) -> T:
        # The version is read before what is built from it: a change committed in between
        # leaves a newer value under an older number, which costs a rebuild next turn and
        # never keeps a stale value.
        version = await self._read_version()
        if self._value is not None and version == self._version:
            return self._value
        async with self._building:  # turns that find it stale at once build it once
            if self._value is None or version != self._version:
                async with self.sessions() as session:
                    self._value = await self._build(session)
                self._version = version
            return self._value

    async def _read_version(self) -> int:
        """Callers at the same moment share one read. One arriving while a read is on its
        way waits for the next: the change it must see may have come after that one began."""
        loop = asyncio.get_running_loop()
        if self._next is None or self._next.get_loop() is not loop:
            self._next = loop.create_future()
        waiting = self._next
        reader = self._reader
        if reader is None or reader.done() or reader.get_loop() is not loop:
            self._reader = loop.create_task(self._read_versions(), name="catalog-version")
        return await asyncio.shield(waiting)

    async def _read_versions(self) -> None:
        while self._next is not None:
            answering, self._next = self._next, None
            try:
                async with self.sessions() as session:
                    answering.set_result(await catalog_version(session))
            except asyncio.CancelledError:
                # Stopping: nobody may be left waiting.
                answering.cancel()
                if self._next is not None:
                    self._next.cancel()
                    self._next = None
                raise
            except Exception as exc:
                answering.set_exception(exc)
