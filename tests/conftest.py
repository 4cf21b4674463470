"""Real parts: a real Redis (the embedded one, or HUB_TEST_REDIS_URL), a real SQLite file and,
when HUB_TEST_DATABASE_URL is set, a PostgreSQL database of the suite's own."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import create_engine, pg_execute, session_factory
from crm_store.migrate import upgrade
from crm_store.staff import configure_hashing
from hub.config import Settings
from hub.embedded_redis import EmbeddedRedis
from tests.support import RunningHub, start_hub

TEST_REDIS_DB = 13  # the suite's own db number on a shared server; flushed around each test
# On a shared server, two suites running at once must not flush each other's db: a suite
# claims one of these db numbers (kept for the tests of this project) for its run. The claim
# is renewed by every test, so a killed run frees its db within minutes.
CANDIDATE_DBS = (13, 12, 11, 10, 9)
CLAIM_KEY = "hub-test:claimed-by"
CLAIM_TTL_S = 600
CLAIM = f"{os.getpid()}:{secrets.token_hex(4)}"


def _claim_db(external: str) -> int:
    from redis import Redis

    for db in CANDIDATE_DBS:
        client = Redis.from_url(make_url_with_db(external, db))
        try:
            if client.set(CLAIM_KEY, CLAIM, nx=True, ex=CLAIM_TTL_S):
                return db
        finally:
            client.close()
    raise RuntimeError(f"no free Redis db among {CANDIDATE_DBS}: other suites hold them")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("HUB_TEST_REDIS_URL")
    if external:
        from redis import Redis

        url = make_url_with_db(external, _claim_db(external))
        yield url
        client = Redis.from_url(url)
        try:
            client.flushdb()  # the claim goes with it
        finally:
            client.close()
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
    url = server.start()
    try:
        yield url + f"?db={TEST_REDIS_DB}"
    finally:
        server.stop()


def make_url_with_db(url: str, db: int) -> str:
    base = url.split("?")[0].rstrip("/")
    if base.startswith(("redis://", "rediss://")):
        scheme, rest = base.split("://", 1)
        host = rest.split("/")[0]
        return f"{scheme}://{host}/{db}"
    return f"{base}?db={db}"


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "hub-test.sqlite3"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
        return
    admin = os.environ.get("HUB_TEST_DATABASE_URL")
    if not admin:
        pytest.skip("HUB_TEST_DATABASE_URL is not set")
    name = f"hub_test_{secrets.token_hex(4)}"
    admin_url = make_url(admin.replace("postgres://", "postgresql://", 1))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    _pg_admin(admin, f'CREATE DATABASE "{name}"')
    try:
        upgrade(url)
        yield url
    finally:
        _pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(admin_url: str, statement: str) -> None:
    asyncio.run(pg_execute(admin_url, statement))


async def _clean(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            for table in reversed(SQLModel.metadata.sorted_tables):
                await conn.execute(text(f'DELETE FROM "{table.name}"'))
    finally:
        await engine.dispose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    """A clean database (schema migrated once per session), cleaned again afterwards."""
    await _clean(database_url)
    yield database_url
    await _clean(database_url)


@pytest.fixture
async def sessions(db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the clean test database."""
    engine = create_engine(db)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def redis(redis_url: str):
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    await client.set(CLAIM_KEY, CLAIM, ex=CLAIM_TTL_S)  # still this suite's db
    yield client
    await client.flushdb()
    await client.set(CLAIM_KEY, CLAIM, ex=CLAIM_TTL_S)
    await client.aclose()


@pytest.fixture
def settings(db: str, redis_url: str, tmp_path: Path) -> Settings:
    return test_settings(db, redis_url, tmp_path)


def test_settings(db: str, redis_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db,
        "redis_url": redis_url,
        "hub_data_dir": tmp_path / "hub-data",
        "hub_inbound_shards": 4,
        "hub_claim_idle_ms": 300,
        "hub_shard_lease_ms": 2_000,  # short for the crash tests, long enough for a busy CI loop
        "hub_max_deliveries": 3,
        "hub_outbound_backoff_ms": 1,
        "hub_outbound_backoff_max_ms": 5,
        # Tests of the pipeline see only what they send; the bot's tests turn it on.
        "hub_bot": "off",
        # Tests of reminders and broadcasts run the scheduler's tick themselves, on their clock.
        "hub_scheduler": False,
        # Real argon2 hashes, at a cost that lets a suite sign in hundreds of times.
        "hub_argon2_time_cost": 1,
        "hub_argon2_memory_kib": 64,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def hub(settings: Settings, redis) -> AsyncIterator[RunningHub]:
    del redis  # flushed before the hub starts
    running = await start_hub(settings)
    try:
        yield running
    finally:
        await running.stop()


def pytest_configure(config: pytest.Config) -> None:
    del config
    # Staff made straight in the store (no hub) hash as cheaply as the hubs' (test_settings).
    configure_hashing(time_cost=1, memory_kib=64)
    # Tests must never read the developer's .env or credentials.
    for name in ("OPENAI_API_KEY", "REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
