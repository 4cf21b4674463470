"""What more than one command of `hub` uses: the error a command stops with, the configured
database and Redis for the length of one command, the demo salon, and the heap settling that
`hub serve` and `hub bench ingress` share.

Imports nothing heavy at module level (the database layers, Redis and the web app are imported
where they are used): every command, `hub --help` included, loads this module."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from hub.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
    from sqlmodel.ext.asyncio.session import AsyncSession

    from crm_store.demo import DemoSummary
    from hub.pipeline.bus import Bus

T = TypeVar("T")


class CliError(Exception):
    """A command can't go on: `hub` prints `error: <the message>` and exits with 2."""


async def with_database(settings: Settings, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `action(engine)` on the configured database: SQLite is migrated on the way,
    PostgreSQL must already be at the schema's head (`hub migrate`)."""
    from crm_store.db import create_engine, is_sqlite
    from crm_store.migrate import SchemaOutOfDate, require_head, upgrade_async

    url = settings.effective_database_url()
    if is_sqlite(url):
        await upgrade_async(url)
    engine = create_engine(url)
    try:
        if not is_sqlite(url):
            await require_head(engine)
        return await action(engine)
    except SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None
    finally:
        await engine.dispose()


async def with_bus(settings: Settings, action: Callable[[Bus], Awaitable[T]]) -> T:
    """Run `action(bus)` on the configured Redis; without REDIS_URL on the running hub's
    embedded server, else on one started for this command alone."""
    from redis.asyncio import Redis

    from hub.embedded_redis import EmbeddedRedis
    from hub.pipeline.bus import Bus

    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.data_dir)
        if embedded.socket.exists():
            url = embedded.url  # the running hub's server
            embedded = None
        else:
            url = await embedded.astart()
    redis = Redis.from_url(url, decode_responses=True)
    try:
        return await action(
            Bus(redis, shards=settings.hub_inbound_shards, maxlen=settings.hub_stream_maxlen)
        )
    finally:
        await redis.aclose()
        if embedded is not None:
            await embedded.astop()


async def fill_demo(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    loading: Callable[[], object] | None = None,
) -> DemoSummary:
    """The demo salon, with six weeks of past chats, in an empty database; a salon that
    already has a price list is left as it is. `loading()` is called first when there is
    something to load, since that takes seconds."""
    from sqlmodel import select

    from crm_store.db import transaction
    from crm_store.demo import load_demo_salon
    from crm_store.models import Service

    async with transaction(sessions) as session:
        # load_demo_salon's own test, asked first so that the wait can be announced.
        if (
            loading is not None
            and (await session.exec(select(Service.id).limit(1))).first() is None
        ):
            loading()
        return await load_demo_salon(
            session,
            now=datetime.now(UTC),
            timezone=settings.hub_timezone,
            currency=settings.hub_currency,
            chats=True,
        )


def demo_line(summary: DemoSummary) -> str:
    return (
        f"demo salon: {summary.services} services, {summary.masters} masters, "
        f"{summary.clients} clients, {summary.appointments} appointments"
    )


def settle_heap() -> None:
    """Take what start-up made (modules, models, the app: it lives as long as the process)
    out of the garbage collector's sight. Otherwise every full collection walks those million
    objects again: a 100-200 ms pause every few seconds under load, which held up webhook
    answers (hub bench ingress: p99 170 ms, 45 ms with this)."""
    gc.collect()
    gc.freeze()
