"""Schema migrations (Alembic) run from code: `hub migrate` and `hub serve` call these."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_store.db import async_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' would be read as interpolation by configparser (passwords may hold one).
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    # env.py runs its own event loop, so it goes to a worker thread.
    await asyncio.to_thread(upgrade, url, revision)


def revision(url: str, message: str) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=True)


class SchemaOutOfDate(RuntimeError):
    pass


async def require_head(engine: AsyncEngine) -> None:
    """Refuse to run against a database whose schema is not the code's."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()

    def current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        revision_now = await conn.run_sync(current)
    if revision_now != head:
        raise SchemaOutOfDate(
            f"the database schema is at {revision_now or 'nothing'}, the code needs {head}: "
            "run `hub migrate` (or `hub serve --migrate`)"
        )
