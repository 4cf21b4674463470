"""The router alone: how many inbound messages a second one router consumer stores.

    python -m bench.router_batch [--messages 2000] [--clients 200] [--postgres URL]
                                 [--one-by-one]

A fresh database and an embedded Redis of its own. First every client writes once (new
cards, identities and conversations: the "first contact" figure), then `--messages` more
messages round robin over the same clients (known people writing again: the "known" figure),
each phase published to the inbound shards up front and then drained by one router consumer
in this process. Prints messages a second by wall time and the process's CPU time per
message. `--one-by-one` turns the consumer's batch path off (one transaction per message);
the script runs unchanged against an older tree (PYTHONPATH) to compare with it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import func
from sqlmodel import select

from crm_store.db import create_engine, session_factory
from crm_store.models import Message
from hub.cli.bench.databases import fresh_database, label
from hub.cli.bench.traffic import synthetic_messages
from hub.embedded_redis import EmbeddedRedis
from hub.messages import InboundMessage
from hub.pipeline.bus import Bus
from hub.pipeline.router import Router

SHARDS = 8


async def drain(
    router: Router, redis: Redis, msgs: list[InboundMessage], *, one_by_one: bool, total: int
) -> tuple[float, float]:
    """Publish `msgs`, then poll one router consumer until `total` messages are stored:
    (wall seconds, CPU seconds)."""
    await router.bus.publish_inbound_many(msgs)
    consumer = router.consumer(
        "bench-router", claim_idle_ms=30_000, max_deliveries=5, lease_ms=10_000
    )
    if one_by_one and hasattr(consumer, "batch_handler"):
        consumer.batch_handler = None
    wall, cpu = time.perf_counter(), time.process_time()
    while await stored(router) < total:
        await consumer.poll_once()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if consumer.leases is not None:
        await consumer.leases.release_all()
    return wall, cpu


async def stored(router: Router) -> int:
    async with router.sessions() as session:
        return int((await session.exec(select(func.count()).select_from(Message))).one())


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hub-bench-redis-") as tmp:
        embedded = EmbeddedRedis(Path(tmp), persistent=False)
        url = await embedded.astart()
        redis = Redis.from_url(url, decode_responses=True)
        try:
            async with fresh_database(args.postgres) as db_url:
                engine = create_engine(db_url)
                try:
                    bus = Bus(redis, shards=SHARDS, maxlen=1_000_000)
                    router = Router(bus, session_factory(engine))
                    msgs = synthetic_messages(args.clients + args.messages, args.clients)
                    first, known = msgs[: args.clients], msgs[args.clients :]
                    mode = "one by one" if args.one_by_one else "batched"
                    print(f"router alone, {label(db_url)}, {mode}:")
                    for name, part, total in (
                        ("first contact", first, args.clients),
                        ("known", known, len(msgs)),
                    ):
                        wall, cpu = await drain(
                            router, redis, part, one_by_one=args.one_by_one, total=total
                        )
                        print(
                            f"  {name:>13}: {len(part):5d} msgs {len(part) / wall:8.1f} msg/s"
                            f"  cpu {cpu / len(part) * 1e3:6.2f} ms/msg"
                        )
                finally:
                    await engine.dispose()
        finally:
            await redis.aclose()
            await embedded.astop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--postgres", help="an admin URL: a database of its own is made there")
    parser.add_argument("--one-by-one", action="store_true", help="no batch path")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
