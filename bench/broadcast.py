"""A broadcast to many clients across channels, through the whole hub and fake providers.

    python -m bench.broadcast [--clients 10000] [--rates telegram=25,viber=20,sms=5]
                              [--processes 1] [--postgres postgresql://user@host/db]
                              [--redis redis://…/N]

Clients are spread over Telegram, Viber and SMS in proportion to the channels' rates, all with
marketing consent. One broadcast goes to all of them; a running hub (its scheduler on its own
APScheduler clock, the dispatcher, the channels) sends it to local fakes of the Bot API, the
Viber REST API and Twilio, which run in a process of their own (bench/fake_providers.py).
The ideal time is clients / (sum of the rates): every channel busy at its limit from the
first second to the last. With --processes N, N-1 more hub processes send beside the first
(rows are claimed with SKIP LOCKED, the rates are shared through Redis). Prints the time to
finish, the ratio to the ideal, the first hub process's CPU time per message (steadier than the
wall time on a busy machine), the achieved rate per channel, and the duplicates: provider
calls beyond one per client, and stored messages beyond one per client (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import select

from bench.fake_providers import TELEGRAM_TOKEN, FakeProviders
from crm_store import broadcasts
from crm_store.db import transaction
from crm_store.models import ChannelIdentity, Client, Message, ScheduledMessage
from hub.cli.bench.databases import fresh_database, label
from hub.config import Settings, parse_rates
from hub.state import Hub
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.fakes.viber_server import AUTH_TOKEN as VIBER_TOKEN

CHANNELS = ("telegram", "viber", "sms")


def _cpu_s() -> float:
    """CPU seconds of this (the first hub's) process, every thread: a figure other work on
    the machine changes less than the wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def split(clients: int, rates: dict[str, float]) -> dict[str, int]:
    total = sum(rates[c] for c in CHANNELS)
    counts = {c: int(clients * rates[c] / total) for c in CHANNELS}
    counts["telegram"] += clients - sum(counts.values())
    return counts


def external_id(channel: str, n: int) -> str:
    if channel == "telegram":
        return str(10_000_000 + n)
    if channel == "viber":
        return f"viber-user-{n:06d}=="
    return f"+38067{n:07d}"


async def seed(hub: Hub, counts: dict[str, int]) -> None:
    """Cards and identities in bulk (the import path would take longer than the broadcast)."""
    now = datetime.now(UTC)
    n = 0
    async with transaction(hub.sessions) as session:
        for channel, count in counts.items():
            for start in range(0, count, 1000):
                batch = range(n + start, n + min(count, start + 1000))
                cards = [
                    {
                        "name": f"Client {i}",
                        "phone": external_id("sms", i) if channel == "sms" else None,
                        "language": "uk",
                        "source_channel": channel,
                        "tags": ["bench"],
                        "notes": "",
                        "marketing_consent": True,
                        "created_at": now,
                    }
                    for i in batch
                ]
                ids = (
                    await session.exec(  # type: ignore[call-overload]
                        insert(Client).values(cards).returning(Client.id)  # type: ignore[arg-type]
                    )
                ).all()
                inbox = "main"
                await session.exec(  # type: ignore[call-overload]
                    insert(ChannelIdentity).values(
                        [
                            {
                                "client_id": client_id,
                                "channel": channel,
                                "inbox": inbox,
                                "external_id": external_id(channel, i),
                                "created_at": now,
                            }
                            for (client_id,), i in zip(ids, batch, strict=True)
                        ]
                    )
                )
            n += count


async def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    rates = parse_rates(args.rates)
    counts = split(args.clients, rates)
    with FakeProviders() as fakes, tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": args.redis,
            "hub_data_dir": tmp,
            "hub_bot": "off",
            "hub_webchat_enabled": False,
            "telegram_bot_tokens": TELEGRAM_TOKEN,
            "telegram_api_url": fakes.urls["telegram"],
            "telegram_mode": "polling",
            "viber_bot_token": VIBER_TOKEN,
            "viber_api_url": fakes.urls["viber"],
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_from_number": FROM_NUMBER,
            "twilio_api_url": fakes.urls["sms"],
            "hub_send_rates": args.rates,
            "hub_scheduler_interval_s": 0.25,
            "hub_scheduler_batch": 500,
        }
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        hub = Hub(settings, run_bots=False)
        await hub.open()
        if args.redis:
            await hub.redis.flushdb()
        try:
            await seed(hub, counts)
            async with transaction(hub.sessions) as session:
                draft = await broadcasts.create_draft(
                    session,
                    title="Bench",
                    text="{name}, -20% on gel manicure this week!",
                    segment={"tags": ["bench"]},
                    now=datetime.now(UTC),
                )
                await broadcasts.launch(session, draft.id, now=datetime.now(UTC))  # type: ignore[arg-type]
            started = time.perf_counter()
            cpu_started = _cpu_s()
            await hub.start()
            others = [HubProcess(values) for _ in range(args.processes - 1)]
            channel_done = await wait_done(hub, fakes, counts)
            for other in others:
                other.stop()
            elapsed = max(channel_done.values()) - started
            cpu = _cpu_s() - cpu_started
            await asyncio.sleep(1)  # anything sent twice would arrive now
            stored = await stored_per_client(hub)
            final = await fakes.stats()
        finally:
            await hub.stop()
            await hub.close()
            await fakes.close()
    ideal = args.clients / sum(rates[c] for c in CHANNELS)
    return {
        "database": label(database_url),
        "clients": args.clients,
        "split": counts,
        "elapsed_s": elapsed,
        "ideal_s": ideal,
        "ratio": elapsed / ideal,
        "per_channel": {c: (counts[c] / (channel_done[c] - started), rates[c]) for c in CHANNELS},
        "provider_duplicates": sum(s["sent"] - s["recipients"] for s in final.values()),
        "provider_calls": sum(s["sent"] for s in final.values()),
        "stored_duplicates": stored,
        "cpu_ms_per_message": cpu * 1000 / args.clients,
    }


class HubProcess:
    """Another hub process on the same database and Redis: its scheduler and dispatcher
    take rows and entries beside the first one's (the rates stay shared)."""

    def __init__(self, values: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.stopping = context.Event()
        self.process = context.Process(target=_other_hub, args=(values, self.stopping))
        self.process.start()

    def stop(self) -> None:
        self.stopping.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def _other_hub(values: dict[str, Any], stopping: Any) -> None:
    async def serve() -> None:
        hub = Hub(Settings(_env_file=None, **values), run_bots=False)  # type: ignore[call-arg]
        await hub.open()
        await hub.start()
        try:
            await asyncio.to_thread(stopping.wait)
        finally:
            await hub.stop()
            await hub.close()

    asyncio.run(serve())


async def stored_per_client(hub: Hub) -> int:
    async with hub.sessions() as session:
        query = (
            select(Message.client_id, func.count())
            .where(Message.author == "system")
            .group_by(Message.client_id)
            .having(func.count() > 1)
        )
        return len((await session.exec(query)).all())


async def wait_done(hub: Hub, fakes: FakeProviders, counts: dict[str, int]) -> dict[str, float]:
    """When each channel's last recipient's message reached its provider."""
    last_report = 0.0
    last_delivered = -1
    done: dict[str, float] = {}
    clients = sum(counts.values())
    while True:
        stats = await fakes.stats()
        for channel, count in counts.items():
            if channel not in done and stats[channel]["sent"] >= count:
                done[channel] = time.perf_counter()
        delivered = sum(s["sent"] for s in stats.values())
        if len(done) == len(counts):
            return done
        if time.perf_counter() - last_report > 10:
            async with hub.sessions() as session:
                open_rows = (
                    await session.exec(
                        select(func.count()).where(
                            ScheduledMessage.status.in_(("pending", "sending"))  # type: ignore[attr-defined]
                        )
                    )
                ).one()
            print(f"  … {delivered}/{clients} at the providers, {open_rows} rows open", flush=True)
            # A row is closed once its message is queued, a moment before the dispatcher
            # hands it to the provider: only rows closed long ago and still short say more.
            if not open_rows and delivered == last_delivered and delivered < clients:
                raise SystemExit("rows closed without reaching the providers (scheduled_messages)")
            last_report = time.perf_counter()
            last_delivered = delivered
        await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rates", default="telegram=25,viber=20,sms=5")
    parser.add_argument(
        "--processes", type=int, default=1, help="hub processes sending (default 1)"
    )
    parser.add_argument("--postgres", help="an admin URL: a fresh database is made and dropped")
    parser.add_argument(
        "--redis",
        default=os.environ.get("HUB_BENCH_REDIS_URL"),
        help="a Redis URL (a db of its own: it is flushed); default: the embedded server",
    )
    args = parser.parse_args()

    async def go() -> dict[str, Any]:
        async with fresh_database(args.postgres) as url:
            return await run(args, url)

    result = asyncio.run(go())
    print(
        f"{result['database']}, {args.processes} hub process(es): "
        f"{result['clients']} clients {result['split']}: "
        f"finished in {result['elapsed_s']:.1f} s; ideal {result['ideal_s']:.1f} s "
        f"(clients / sum of rates); ratio {result['ratio']:.3f}"
    )
    print(f"  the hub's CPU: {result['cpu_ms_per_message']:.1f} ms a message")
    for channel, (achieved, limit) in result["per_channel"].items():
        print(f"  {channel}: {achieved:.1f} messages/s against a limit of {limit:g}/s")
    print(
        f"provider calls {result['provider_calls']}, duplicates at providers "
        f"{result['provider_duplicates']}, clients with more than one stored message "
        f"{result['stored_duplicates']}"
    )
    if result["provider_duplicates"] or result["stored_duplicates"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
