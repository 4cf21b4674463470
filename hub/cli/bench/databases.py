"""Fresh, migrated databases for benchmarks: a SQLite file in a temporary directory, or a
PostgreSQL database of the benchmark's own (created, then dropped)."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from crm_store.db import pg_execute
from crm_store.migrate import upgrade_async


@asynccontextmanager
async def fresh_database(admin_url: str | None) -> AsyncIterator[str]:
    """Yield the URL of an empty, migrated database: SQLite when admin_url is None."""
    if admin_url is None:
        with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            await upgrade_async(url)
            yield url
        return
    admin = make_url(admin_url.replace("postgres://", "postgresql://", 1))
    name = f"hub_bench_{secrets.token_hex(4)}"
    await pg_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        await upgrade_async(url)
        yield url
    finally:
        await pg_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def label(url: str) -> str:
    return make_url(url).get_backend_name()
