"""What a brain builds from the catalogue, kept in memory until the catalogue changes.

Every turn needs the salon, its services and masters; reading and shaping them was five
queries a turn. Now a turn reads one number (crm_store.catalog.catalog_version, moved by
triggers on every write, whoever makes it) and rebuilds only when it moved, so a price or
an hour changed in the browser is in the very next answer, in every hub process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.catalog import catalog_version

T = TypeVar("T")


class CatalogCache(Generic[T]):
    def __init__(self, build: Callable[[AsyncSession], Awaitable[T]]) -> None:
        self._build = build
        self._version: int | None = None
        self._value: T | None = None

    async def get(self, session: AsyncSession) -> T:
        # The version is read before what is built from it: a change committed in between
        # leaves a newer value under an older number, which costs a rebuild next turn and
        # never keeps a stale value.
        version = await catalog_version(session)
        if self._value is None or version != self._version:
            value = await self._build(session)
            self._value, self._version = value, version
            return value
        return self._value
