"""The `hub` command: serve, migrate, staff add|deactivate|activate, dead list|replay."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hub import bench
from hub.cli import broadcast as cli_broadcast
from hub.cli import eval as cli_eval
from hub.cli import import_clients as cli_import
from hub.config import Settings

if TYPE_CHECKING:
    from crm_store.demo import DemoSummary
    from hub.state import Hub

log = logging.getLogger("hub")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # SQLAlchemy's engine logs every statement at INFO, and these drivers their parameters at
    # DEBUG (password hashes, saved channel sessions): only their warnings reach the log.
    for chatty in ("aiosqlite", "asyncpg", "sqlalchemy.engine"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class CliError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Omnichannel salon messaging hub")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run everything in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--demo", action="store_true", help="load the demo salon")
    serve.add_argument("--migrate", action="store_true", help="migrate PostgreSQL before serving")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    demo = sub.add_parser("demo-data", help="fill an empty database with the demo salon")
    demo.set_defaults(func=cmd_demo_data)

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

    dead = sub.add_parser("dead", help="dead-letter entries")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True)
    dead_list = dead_sub.add_parser("list", help="list dead letters")
    dead_list.add_argument("--count", type=int, default=100)
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dead_list.set_defaults(func=cmd_dead_list)
    replay = dead_sub.add_parser("replay", help="put dead letters back on their streams")
    replay.add_argument("id", nargs="?", help="the dead letter's id (from `hub dead list`)")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.add_argument(
        "--data", help="replace the entry's data with this file's content (- for stdin)"
    )
    replay.set_defaults(func=cmd_dead_replay)
    cli_import.register(sub)
    cli_eval.register(sub)
    cli_broadcast.register(sub)
    bench.register(sub)
    return parser


# serve ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    return asyncio.run(
        serve(Settings(), args.host, args.port, demo=args.demo, migrate=args.migrate)
    )


def _brain_name(hub: Hub) -> str:
    name = type(hub.responder).__name__ if hub.responder else "SilentResponder"
    return {
        "LlmBrain": f"LLM ({hub.settings.hub_llm_model})",
        "OfflineBrain": "offline brain (set OPENAI_API_KEY for the LLM)",
    }.get(name, "off (HUB_BOT=off)")


async def serve(settings: Settings, host: str, port: int, *, demo: bool, migrate: bool) -> int:
    metrics_address = _host_port(settings.hub_metrics_listen)
    for address in (host, port), metrics_address:
        if address is not None:
            _check_free(*address)
    from aiohttp import web

    from crm_store.migrate import SchemaOutOfDate
    from hub.state import Hub
    from hub.web.app import AccessLogger, create_app, metrics_app

    hub = Hub(settings, migrate=migrate)
    try:
        await hub.open()
    except SchemaOutOfDate as exc:
        await hub.close()
        raise CliError(str(exc)) from None
    runner: web.AppRunner | None = None
    metrics_runner: web.AppRunner | None = None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        login = await load_demo(hub) if demo else None
        await hub.start()
        runner = web.AppRunner(create_app(hub), handle_signals=False, access_log_class=AccessLogger)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        if metrics_address is not None:
            metrics_runner = web.AppRunner(metrics_app(hub), handle_signals=False)
            await metrics_runner.setup()
            await web.TCPSite(metrics_runner, *metrics_address).start()
        settle_heap()
        base = settings.hub_public_url or f"http://{host}:{port}"
        print(f"\nThe hub is running at {base}", flush=True)
        print(f"  staff inbox:                  {base}/inbox", flush=True)
        print(f"  web chat (write as a client): {base}/chat", flush=True)
        print(f"  staff API:                    {base}/api/  (POST /api/auth/login)", flush=True)
        print(f"  health:                       {base}/healthz", flush=True)
        print(f"  channels:                     {', '.join(sorted(hub.channels))}", flush=True)
        print(f"  AI administrator:             {_brain_name(hub)}", flush=True)
        if login:
            print(f"  demo owner login:             {login[0]} / {login[1]}", flush=True)
        print("Press Ctrl-C to stop.\n", flush=True)
        await stopping.wait()
        log.info("shutting down")
    finally:
        await hub.stop()
        for started in (runner, metrics_runner):
            if started is not None:
                await started.cleanup()
        await hub.close()
    return 0


def _host_port(address: str | None) -> tuple[str, int] | None:
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _check_free(host: str, port: int) -> None:
    """Fail at once, in one line, when the address is taken: before the database, the demo
    salon and the channels, which take seconds and print a page."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"can't listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            # As aiohttp's server will: an old connection in TIME_WAIT doesn't count as taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                raise CliError(
                    f"can't listen on {host}:{port}: {exc.strerror} (another hub running? "
                    "choose another with --port)"
                ) from None


def settle_heap() -> None:
    """Take what start-up made (modules, models, the app: it lives as long as the process)
    out of the garbage collector's sight. Otherwise every full collection walks those million
    objects again: a 100-200 ms pause every few seconds under load, which held up webhook
    answers (hub bench ingress: p99 170 ms, 45 ms with this)."""
    gc.collect()
    gc.freeze()


async def load_demo(hub: Hub) -> tuple[str, str]:
    """The demo salon, and its owner with a fresh password each start (printed, never stored
    in clear)."""
    from crm_store.db import transaction
    from crm_store.staff import add_staff, hash_password, staff_by_email

    summary = await _fill_demo(hub.settings, hub.sessions)
    if summary.created:
        print(_demo_line(summary), flush=True)
    email = "owner@demo.salon"
    password = secrets.token_urlsafe(9)
    async with transaction(hub.sessions) as session:
        staff = await staff_by_email(session, email)
        if staff is None:
            await add_staff(
                session, email=email, password=password, role="owner", name="Demo Owner"
            )
        else:
            staff.password_hash = hash_password(password)
    return email, password


async def _fill_demo(settings: Settings, sessions) -> DemoSummary:  # type: ignore[no-untyped-def]
    from crm_store.db import transaction
    from crm_store.demo import load_demo_salon

    async with transaction(sessions) as session:
        return await load_demo_salon(
            session,
            now=datetime.now(UTC),
            timezone=settings.hub_timezone,
            currency=settings.hub_currency,
            chats=True,
        )


def _demo_line(summary: DemoSummary) -> str:
    return (
        f"demo salon: {summary.services} services, {summary.masters} masters, "
        f"{summary.clients} clients, {summary.appointments} appointments"
    )


def cmd_demo_data(args: argparse.Namespace) -> int:
    del args

    async def run(engine) -> DemoSummary:  # type: ignore[no-untyped-def]
        from crm_store.db import session_factory

        return await _fill_demo(Settings(), session_factory(engine))

    summary = asyncio.run(_with_database(Settings(), run))
    if not summary.created:
        print("the database already has a price list; nothing was added")
    print(_demo_line(summary))
    return 0


async def _with_database(settings: Settings, action):  # type: ignore[no-untyped-def]
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


# migrate, staff -------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from crm_store.migrate import upgrade

    del args
    settings = Settings()
    upgrade(settings.effective_database_url())
    print("the database schema is up to date")
    return 0


def cmd_staff_add(args: argparse.Namespace) -> int:
    password = args.password
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
    return asyncio.run(_staff_add(Settings(), args.email, password, args.role, args.name))


async def _staff_add(settings: Settings, email: str, password: str, role: str, name: str) -> int:
    from crm_store.db import session_factory, transaction
    from crm_store.staff import StaffError, add_staff

    async def run(engine) -> int:  # type: ignore[no-untyped-def]
        try:
            async with transaction(session_factory(engine)) as session:
                staff = await add_staff(
                    session, email=email, password=password, role=role, name=name
                )
        except StaffError as exc:
            raise CliError(str(exc)) from None
        print(f"added {staff.role} {staff.email} (id {staff.id})")
        return 0

    return await _with_database(settings, run)


def cmd_staff_switch(args: argparse.Namespace) -> int:
    settings = Settings()

    async def run(engine) -> int:  # type: ignore[no-untyped-def]
        from crm_store.contacts import normalize_email
        from crm_store.db import session_factory
        from crm_store.staff import StaffError, staff_by_email
        from hub.web.team import set_staff_active

        sessions = session_factory(engine)
        async with sessions() as session:
            staff = await staff_by_email(session, normalize_email(args.email) or "")
        if staff is None:
            raise CliError(f"no staff member with the email {args.email}")

        async def switch(bus):  # type: ignore[no-untyped-def]
            return await set_staff_active(sessions, bus, staff.id, args.active)

        try:
            await _with_bus(settings, switch)
        except StaffError as exc:
            raise CliError(str(exc)) from None
        state = "on" if args.active else "off (every session of it ended)"
        print(f"{staff.email} is {state}")
        return 0

    return asyncio.run(_with_database(settings, run))


# dead letters ---------------------------------------------------------------------------


async def _with_bus(settings: Settings, action):  # type: ignore[no-untyped-def]
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


def cmd_dead_list(args: argparse.Namespace) -> int:
    rows = asyncio.run(_with_bus(Settings(), lambda bus: bus.dead_letters(args.count)))
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print("no dead letters")
        return 0
    for row in rows:
        failed = datetime.fromtimestamp(row["failed_at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{row['id']}  {row['stream']}  {failed}Z  deliveries={row['deliveries']}")
        print(f"    error: {row['error']}")
        data = str(row["fields"].get("data", ""))
        print(f"    data:  {data[:200]}{'…' if len(data) > 200 else ''}")
    return 0


def cmd_dead_replay(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.all):
        raise CliError("give a dead letter id or --all")
    if args.all and args.data:
        raise CliError("--data replaces one entry's data: give an id with it")
    data = None
    if args.data:
        data = sys.stdin.read() if args.data == "-" else Path(args.data).read_text(encoding="utf-8")

    from hub.pipeline.bus import NotReplayable

    async def action(bus):  # type: ignore[no-untyped-def]
        if args.all:
            return await bus.replay_all()
        try:
            return [await bus.replay(args.id, data)]
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        except NotReplayable as exc:
            raise CliError(str(exc)) from None

    ids = asyncio.run(_with_bus(Settings(), action))
    print(f"replayed {len(ids)} entr{'y' if len(ids) == 1 else 'ies'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
