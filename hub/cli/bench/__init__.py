"""`hub bench`: how fast this machine runs the hub (docs/performance.md).

    hub bench pipeline   messages end to end through the real pipeline, with the ceilings
    hub bench ingress    webhook requests a second on the Telegram endpoint
    hub bench soak       an idle `hub serve`'s resident memory over time

Each prints human-readable figures, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis

from hub.cli.bench.databases import fresh_database
from hub.embedded_redis import EmbeddedRedis

# subcommand -> module with add_arguments(parser) and run(args) -> exit code
MODES = {
    "ingress": ("hub.cli.bench.ingress", "webhook ingress: Telegram webhook requests a second"),
    "soak": ("hub.cli.bench.soak", "idle `hub serve` resident memory over time"),
}
POSTGRES_ENV = "HUB_BENCH_POSTGRES_URL"


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (docs/performance.md)")
    modes = bench.add_subparsers(dest="bench_command", required=True)
    pipeline = modes.add_parser("pipeline", help="messages end to end through the pipeline")
    add_pipeline_arguments(pipeline)
    pipeline.set_defaults(func=cmd_pipeline)
    for name, (module_name, text) in MODES.items():
        module = importlib.import_module(module_name)
        mode = modes.add_parser(name, help=text)
        module.add_arguments(mode)
        mode.set_defaults(func=module.run)


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """--db and --postgres, as every mode that needs a fresh database takes them."""
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV),
        help=f"a PostgreSQL server URL to make a scratch database on (or {POSTGRES_ENV})",
    )


def admin_url(args: argparse.Namespace) -> str | None:
    """The PostgreSQL server to make the scratch database on; None for SQLite."""
    if args.db == "sqlite":
        return None
    if not args.postgres:
        raise SystemExit(f"--db postgres needs --postgres URL (or {POSTGRES_ENV})")
    return str(args.postgres)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument(
        "--redis", help="a Redis URL with an empty database (default: an embedded server)"
    )
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument(
        "--clients", type=int, help="how many clients write them (default: messages / 2)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages a second offered (0: flat out)"
    )
    parser.add_argument(
        "--routers",
        type=int,
        default=0,
        help="router processes of their own (0: the hub's process routes); as --processes router=N",
    )
    parser.add_argument(
        "--processes",
        default="",
        metavar="ROLE[+ROLE]=N,…",
        help="processes of their own by role, e.g. router=2,bot=1 or router+bot=2 (the roles"
        " none has, and always the dispatcher, stay in the bench's process)",
    )
    parser.add_argument(
        "--model-delay-ms",
        type=int,
        help="answer with a model that takes this long instead of the offline brain",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-ceilings", action="store_true", help="skip the ceilings")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def cmd_pipeline(args: argparse.Namespace) -> int:
    from hub.cli.bench import pipeline

    if args.messages < 1 or (args.clients is not None and args.clients < 1):
        raise SystemExit("--messages and --clients must be at least 1")
    try:
        processes = pipeline.parse_layout(args.processes)
    except ValueError as exc:
        raise SystemExit(f"--processes: {exc}") from None

    async def go() -> int:
        async with (
            fresh_database(admin_url(args)) as db_url,
            bench_redis(args.redis) as redis_url,
        ):
            scratch = tempfile.TemporaryDirectory(prefix="hub-bench-data-")
            opts = pipeline.Options(
                database_url=db_url,
                redis_url=redis_url,
                messages=args.messages,
                clients=min(args.clients or max(1, args.messages // 2), args.messages),
                rate=args.rate,
                routers=args.routers,
                processes=processes,
                model_delay_ms=args.model_delay_ms,
                timeout_s=args.timeout,
                ceilings=not args.no_ceilings,
                data_dir=Path(scratch.name),
            )
            try:
                figures = await pipeline.run(opts)
            finally:
                scratch.cleanup()
        print(pipeline.as_json(figures) if args.json else pipeline.report(figures))
        return 0

    return asyncio.run(go())


@contextlib.asynccontextmanager
async def bench_redis(url: str | None) -> AsyncIterator[str]:
    """The Redis the benchmark may fill: an embedded server in a scratch directory (as
    `hub serve` runs it, appendonly), or the given URL's database, which must be empty."""
    if url:
        client = Redis.from_url(url)
        try:
            if await client.dbsize():
                raise SystemExit(f"the Redis database at {url} is not empty: give an empty one")
        finally:
            await client.aclose()
        try:
            yield url
        finally:
            client = Redis.from_url(url)
            await client.flushdb()
            await client.aclose()
        return
    with tempfile.TemporaryDirectory(prefix="hub-bench-redis-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        yield await server.astart()
        await server.astop()
