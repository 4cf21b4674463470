"""`hub staff add|deactivate|activate`: staff accounts from the command line, for the first
owner and for locking someone out when the web is not at hand."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from hub.cli.common import CliError, with_bus, with_database
from hub.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from hub.pipeline.bus import Bus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `staff` to the `hub` command's subparsers."""
    staff = sub.add_parser("staff", help="staff accounts")
    staff_sub = staff.add_subparsers(dest="staff_command", required=True)
    add = staff_sub.add_parser("add", help="add a staff member")
    add.add_argument("--email", required=True)
    add.add_argument("--password", help="at least 8 characters; asked for when omitted")
    add.add_argument("--role", required=True, choices=["owner", "admin", "master"])
    add.add_argument("--name", default="")
    add.set_defaults(func=cmd_staff_add)
    for verb, helptext in (
        ("deactivate", "switch an account off: it is signed out everywhere at once"),
        ("activate", "switch an account back on"),
    ):
        switch = staff_sub.add_parser(verb, help=helptext)
        switch.add_argument("--email", required=True)
        switch.set_defaults(func=cmd_staff_switch, active=verb == "activate")


def cmd_staff_add(args: argparse.Namespace) -> int:
    password = args.password
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
    return asyncio.run(_staff_add(Settings(), args.email, password, args.role, args.name))


async def _staff_add(settings: Settings, email: str, password: str, role: str, name: str) -> int:
    from crm_store.db import session_factory, transaction
    from crm_store.staff import StaffError, add_staff

    async def run(engine: AsyncEngine) -> int:
        try:
            async with transaction(session_factory(engine)) as session:
                staff = await add_staff(
                    session, email=email, password=password, role=role, name=name
                )
        except StaffError as exc:
            raise CliError(str(exc)) from None
        print(f"added {staff.role} {staff.email} (id {staff.id})")
        return 0

    return await with_database(settings, run)


def cmd_staff_switch(args: argparse.Namespace) -> int:
    settings = Settings()

    async def run(engine: AsyncEngine) -> int:
        from crm_store.contacts import normalize_email
        from crm_store.db import session_factory
        from crm_store.staff import StaffError, staff_by_email
        from hub.web.team import set_staff_active

        sessions = session_factory(engine)
        async with sessions() as session:
            staff = await staff_by_email(session, normalize_email(args.email) or "")
        if staff is None:
            raise CliError(f"no staff member with the email {args.email}")

        async def switch(bus: Bus) -> object:
            return await set_staff_active(sessions, bus, staff.id, args.active)

        try:
            await with_bus(settings, switch)
        except StaffError as exc:
            raise CliError(str(exc)) from None
        state = "on" if args.active else "off (every session of it ended)"
        print(f"{staff.email} is {state}")
        return 0

    return asyncio.run(with_database(settings, run))
