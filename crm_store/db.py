"""The async engine and sessions. SQLite is the embedded default, PostgreSQL production."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession


def async_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite://); use async drivers."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use PostgreSQL or SQLite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine_or_url: AsyncEngine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    # WAL lets the web app read while the router writes; busy_timeout makes writers queue
    # instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLite's own lower() folds ASCII only; client search must find "Коваленко" by
    # "коваленко" as PostgreSQL does.
    dbapi_conn.create_function("lower", 1, _fold, deterministic=True)
    # Take over transaction control from the driver so that `_sqlite_begin` says how each
    # transaction begins.
    dbapi_conn.isolation_level = None


def _fold(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


# Set on the connection of a `transaction()`: it will write.
WRITES = "hub_writes"


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    # A unit of work takes the write lock at once (BEGIN IMMEDIATE): a deferred transaction
    # that reads, then writes, fails at once with "database is locked" when another writer got
    # there first. A read (a plain session, never committed) begins deferred and so never
    # holds the lock a writer waits for: with WAL it reads its snapshot beside the writer.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITES) else "BEGIN")


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    url = async_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits when the block ends, rolls back when it raises. Writes go
    through here; a plain `sessions()` block only reads (nothing in it is committed)."""
    async with sessions() as session, session.begin():
        if session.bind is not None and session.bind.dialect.name == "sqlite":
            await session.connection(execution_options={WRITES: True})
        yield session


def insert_for(session: AsyncSession) -> Callable[..., Any]:
    """The dialect's own INSERT, which knows ON CONFLICT (both dialects spell it alike)."""
    bind = session.bind
    return (
        postgresql.insert
        if bind is not None and bind.dialect.name == "postgresql"
        else sqlite.insert
    )


async def pg_execute(admin_url: str, statement: str) -> None:
    """One statement outside a transaction, as CREATE/DROP DATABASE need (PostgreSQL)."""
    import asyncpg

    url = make_url(admin_url.replace("postgres://", "postgresql://", 1))
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
