"""`hub migrate` and `hub demo-data`: the database's schema and the demo salon in it, for when
the hub runs on PostgreSQL (SQLite is migrated by every command on the way)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from hub.cli.common import demo_line, fill_demo, with_database
from hub.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from crm_store.demo import DemoSummary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `migrate` and `demo-data` to the `hub` command's subparsers."""
    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    demo = sub.add_parser("demo-data", help="fill an empty database with the demo salon")
    demo.set_defaults(func=cmd_demo_data)


def cmd_migrate(args: argparse.Namespace) -> int:
    from crm_store.migrate import upgrade

    del args
    settings = Settings()
    upgrade(settings.effective_database_url())
    print("the database schema is up to date")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    del args

    async def run(engine: AsyncEngine) -> DemoSummary:
        from crm_store.db import session_factory

        return await fill_demo(Settings(), session_factory(engine))

    summary = asyncio.run(with_database(Settings(), run))
    if not summary.created:
        print("the database already has a price list; nothing was added")
    print(demo_line(summary))
    return 0
