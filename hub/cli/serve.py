"""`hub serve`: everything in one process (the web app, the pipeline's workers, the scheduler,
the channels), on the embedded Redis and SQLite unless REDIS_URL and DATABASE_URL say otherwise.

`--role` runs a part of it (docs/pipeline.md "Processes by role"), e.g. `--role web` beside
`--role router,dispatch` and `--role bot` processes. One command rather than a separate
`hub worker`: the roles combine freely, every process starts the same way (schema check,
signals, HUB_METRICS_LISTEN), and "all" stays the default. A process without `web` binds no
port; HUB_METRICS_LISTEN gives it /metrics and /healthz.

The start is ordered for the person at the terminal:

1. The listening sockets are bound before anything is created or started, so a taken port is
   one line at once, not a traceback after the database and the demo salon. The very sockets
   bound are the ones served: no other process can take the port between a check and its use.
2. Each slow step says on stderr that it is starting (the embedded Redis, a new or outdated
   schema, the demo salon), and only when it really happens: a restart says little.
3. Where to go, on stdout, once the hub answers there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hub.cli.common import CliError, demo_line, fill_demo, settle_heap
from hub.config import Settings

if TYPE_CHECKING:
    from hub.state import Hub

log = logging.getLogger("hub")

BACKLOG = 128  # aiohttp's default for a site


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` to the `hub` command's subparsers."""
    serve = sub.add_parser("serve", help="run the hub (everything in one process by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--demo", action="store_true", help="load the demo salon")
    serve.add_argument("--migrate", action="store_true", help="migrate PostgreSQL before serving")
    serve.add_argument(
        "--role",
        type=_roles,
        metavar="ROLE[,ROLE…]",
        help="what this process runs: web, router, bot, dispatch, scheduler or all (default)",
    )
    serve.set_defaults(func=cmd_serve)


def _roles(text: str) -> frozenset[str]:
    # Imported here, not at the top: `hub --help` and a plain `hub serve` stay light.
    from hub.state import parse_roles

    try:
        return parse_roles(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings()
    roles: frozenset[str] | None = args.role  # None: all of them
    with contextlib.ExitStack() as bound:
        site = None
        if roles is None or "web" in roles:
            site = bound.enter_context(listen(args.host, args.port, change="--port"))
        metrics = None
        metrics_address = _host_port(settings.hub_metrics_listen)
        if metrics_address is not None:
            metrics = bound.enter_context(listen(*metrics_address, change="HUB_METRICS_LISTEN"))
        return asyncio.run(
            serve(settings, site, metrics, demo=args.demo, migrate=args.migrate, roles=roles)
        )


# Listening ------------------------------------------------------------------------------


@dataclass
class Listening:
    """An address's bound, listening sockets: one per family it resolves to (`localhost` is
    127.0.0.1 and ::1), as aiohttp's TCPSite would have made them."""

    host: str
    port: int
    sockets: list[socket.socket]

    def __enter__(self) -> Listening:
        return self

    def __exit__(self, *exc: object) -> None:
        # Once served, the server closed them already; closing twice is harmless.
        for sock in self.sockets:
            sock.close()

    @property
    def url(self) -> str:
        return f"http://{_address(self.host, self.port)}"


def listen(host: str, port: int, *, change: str) -> Listening:
    """Bind and listen on host:port now, or raise CliError in one line naming the address and
    `change`, the option that moves it. Listening at once, not only binding, is what holds the
    port: on Linux two sockets with SO_REUSEADDR may bind one port while neither listens.
    Connections that arrive before the hub serves wait in the backlog."""
    where = _address(host, port)
    try:
        # As asyncio's create_server resolves a host: "" is every interface.
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CliError(f"can't listen on {where}: {exc.strerror}") from None
    listening = Listening(host, port, [])
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this machine lacks (no IPv6), as create_server skips it
            listening.sockets.append(sock)
            if port == 0 and listening.port:
                # Port 0 is "any free port": the same one for each family of the host.
                address = (address[0], listening.port, *address[2:])
            # As aiohttp's server does: an old connection in TIME_WAIT doesn't count as taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Else "::" would take the IPv4 port too, and 0.0.0.0 beside it would fail.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(BACKLOG)
                listening.port = sock.getsockname()[1]
            except OSError as exc:
                raise CliError(
                    f"can't listen on {where}: {exc.strerror}{_hint(exc, change)}"
                ) from None
            sock.setblocking(False)
    except BaseException:
        listening.__exit__()
        raise
    if not listening.sockets:
        raise CliError(f"can't listen on {where}: no address of it can be used here")
    return listening


def _hint(exc: OSError, change: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f" (another hub running? choose another with {change})"
    if exc.errno == errno.EACCES:
        return f" (ports below 1024 need privileges: choose another with {change})"
    return ""


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_port(address: str | None) -> tuple[str, int] | None:
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


# Serving --------------------------------------------------------------------------------


def step(text: str) -> None:
    """Say that a slow step starts, so the first start is not seconds of silence."""
    print(text, file=sys.stderr, flush=True)


async def serve(
    settings: Settings,
    site: Listening | None,
    metrics: Listening | None = None,
    *,
    demo: bool,
    migrate: bool,
    roles: frozenset[str] | None = None,
) -> int:
    """Run the hub's `roles` (None: all) until SIGINT or SIGTERM; `site` is the web app's
    address, None exactly when `web` is not among the roles."""
    async with contextlib.AsyncExitStack() as started:
        if not settings.redis_url:
            settings = await _embedded_redis(settings, started)
        from aiohttp import web

        from crm_store.migrate import SchemaOutOfDate
        from hub.state import Hub
        from hub.web.app import AccessLogger, create_app, healthz, metrics_app

        schema = await _schema_work(settings, migrate=migrate)
        if schema:
            step(schema)
        hub = Hub(settings, migrate=migrate, roles=roles)
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
            if site is not None:
                runner = web.AppRunner(
                    create_app(hub), handle_signals=False, access_log_class=AccessLogger
                )
                await runner.setup()
                for sock in site.sockets:
                    await web.SockSite(runner, sock, backlog=BACKLOG).start()
            if metrics is not None:
                observed = metrics_app(hub)
                # A process without `web` has no other address a load balancer or an
                # orchestrator could ask whether it is alive.
                observed.router.add_get("/healthz", healthz)
                metrics_runner = web.AppRunner(observed, handle_signals=False)
                await metrics_runner.setup()
                for sock in metrics.sockets:
                    await web.SockSite(metrics_runner, sock, backlog=BACKLOG).start()
            settle_heap()
            if site is not None:
                _print_welcome(hub, settings.hub_public_url or site.url, login)
            else:
                _print_worker(hub, metrics)
            await stopping.wait()
            log.info("shutting down")
        finally:
            await hub.stop()
            for runner_started in (runner, metrics_runner):
                if runner_started is not None:
                    await runner_started.cleanup()
            await hub.close()
    return 0


async def _embedded_redis(settings: Settings, started: contextlib.AsyncExitStack) -> Settings:
    """Start the embedded Redis here rather than in Hub.open, so that it is said before it
    starts; the hub gets its URL like any Redis's, and stopping it stays with `started`."""
    from hub.embedded_redis import EmbeddedRedis

    embedded = EmbeddedRedis(settings.data_dir)
    step(f"starting the embedded Redis in {settings.data_dir} …")
    try:
        url = await embedded.astart()
    except RuntimeError as exc:  # no binary, another hub on this data directory, a crash
        raise CliError(str(exc)) from None
    started.push_async_callback(embedded.astop)
    return settings.model_copy(update={"redis_url": url})


async def _schema_work(settings: Settings, *, migrate: bool) -> str | None:
    """What Hub.open is about to do to the schema, in words; None when it has nothing to do
    (the usual restart) or is not allowed to (PostgreSQL without --migrate: it refuses)."""
    from crm_store.db import create_engine, is_sqlite
    from crm_store.migrate import SchemaOutOfDate, require_head

    url = settings.effective_database_url()
    if not (is_sqlite(url) or migrate):
        return None
    new_file = _new_sqlite_file(url) if is_sqlite(url) else None
    if new_file is not None:
        return f"creating the database {new_file} …"
    engine = create_engine(url)
    try:
        await require_head(engine)
    except SchemaOutOfDate:
        return "bringing the database schema up to date …"
    finally:
        await engine.dispose()
    return None


def _new_sqlite_file(url: str) -> str | None:
    """The SQLite file that is not there yet, which the migration will make."""
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    return path if path and path != ":memory:" and not Path(path).exists() else None


async def load_demo(hub: Hub) -> tuple[str, str]:
    """The demo salon, and its owner with a fresh password each start (printed, never stored
    in clear)."""
    from crm_store.db import transaction
    from crm_store.staff import add_staff, hash_password, staff_by_email

    summary = await fill_demo(
        hub.settings,
        hub.sessions,
        loading=lambda: step(
            "loading the demo salon: services, masters, clients, six weeks of chats …"
        ),
    )
    if summary.created:
        print(demo_line(summary), flush=True)
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


def _print_welcome(hub: Hub, base: str, login: tuple[str, str] | None) -> None:
    print(f"\nThe hub is running at {base}", flush=True)
    if _role_list(hub) != "all":
        print(f"  roles:                        {_role_list(hub)}", flush=True)
    print(f"  staff inbox:                  {base}/inbox", flush=True)
    print(f"  web chat (write as a client): {base}/chat", flush=True)
    print(f"  staff API:                    {base}/api/  (POST /api/auth/login)", flush=True)
    print(f"  health:                       {base}/healthz", flush=True)
    print(f"  channels:                     {', '.join(sorted(hub.channels))}", flush=True)
    print(f"  AI administrator:             {_brain_name(hub)}", flush=True)
    if login:
        print(f"  demo owner login:             {login[0]} / {login[1]}", flush=True)
    print("Press Ctrl-C to stop.\n", flush=True)


def _print_worker(hub: Hub, metrics: Listening | None) -> None:
    print(f"\nThe hub is running: {_role_list(hub)} (no web app here)", flush=True)
    if metrics is not None:
        print(f"  metrics and health:           {metrics.url}/metrics, /healthz", flush=True)
    if hub.start_channels:
        print(f"  channels:                     {', '.join(sorted(hub.channels))}", flush=True)
    if "bot" in hub.roles:
        print(f"  AI administrator:             {_brain_name(hub)}", flush=True)
    print("Press Ctrl-C to stop.\n", flush=True)


def _role_list(hub: Hub) -> str:
    from hub.state import ROLES

    said = "all" if hub.roles == set(ROLES) else ", ".join(r for r in ROLES if r in hub.roles)
    if "scheduler" in hub.roles and not hub.run_scheduler:
        said += " (the scheduler off: HUB_SCHEDULER=false)"
    return said


def _brain_name(hub: Hub) -> str:
    if "bot" not in hub.roles:
        return "in the processes with the bot role"
    name = type(hub.responder).__name__ if hub.responder else "SilentResponder"
    return {
        "LlmBrain": f"LLM ({hub.settings.hub_llm_model})",
        "OfflineBrain": "offline brain (set OPENAI_API_KEY for the LLM)",
    }.get(name, "off (HUB_BOT=off)")
