"""`hub bench pipeline`: synthetic client messages through the real pipeline, end to end.

Bus entry (what a webhook does once a request is accepted) → Redis → router → store →
hub:events → bot worker (the offline brain, or a model with a fixed delay) → reply stored
→ hub:out → dispatcher → a sink channel. Printed: throughput, end-to-end latency (accepted →
handed to the channel) and the hub's own share of it (the brain's time taken out), the
ceilings of the parts measured in the same run (hub.bench.ceilings) and the ratio of the
pipeline to them, and peak memory. docs/performance.md has the figures and how to read them.

With `--processes router=2,bot=1` (docs/pipeline.md "Processes by role") those roles run in
processes of their own, as `hub serve --role` would run them, and the bench's process keeps
the rest: the dispatcher and its sink channel always, which time each delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from crm_store.db import transaction
from crm_store.demo import load_demo_salon
from crm_store.models import Message
from crm_store.timeutil import utcnow
from hub.brains import build_responder
from hub.cli.bench.ceilings import answered_ceiling, redis_ceiling
from hub.cli.bench.router_process import bench_roles
from hub.cli.bench.stats import cpu_seconds, peak_rss_mib, percentile
from hub.cli.bench.traffic import (
    DelayedModel,
    Deliveries,
    SinkChannel,
    TimedResponder,
    synthetic_messages,
)
from hub.config import Settings
from hub.messages import InboundMessage
from hub.state import Hub

log = logging.getLogger(__name__)

WARM_UP = 100  # at most; a tenth of the run for small runs
CHUNK = 200


@dataclass
class Options:
    database_url: str
    redis_url: str
    messages: int = 5_000
    clients: int = 2_500
    rate: float = 0.0  # messages a second; 0: flat out
    routers: int = 0  # 0: the router runs in the hub's process, as `hub serve` runs it
    # More processes of their own: (roles, how many), e.g. ((frozenset({"bot"}), 1),); the
    # roles none of them has stay in the hub's process.
    processes: tuple[tuple[frozenset[str], int], ...] = ()
    model_delay_ms: int | None = None  # None: the offline brain
    timeout_s: float = 600.0
    ceilings: bool = True
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hub-bench-")))


def layout(opts: Options) -> tuple[tuple[frozenset[str], int], ...]:
    """Every worker process to start: `processes`, and `routers` as router=N."""
    extra = ((frozenset({"router"}), opts.routers),) if opts.routers else ()
    return tuple((roles, n) for roles, n in (*opts.processes, *extra) if n > 0)


def parse_layout(text: str) -> tuple[tuple[frozenset[str], int], ...]:
    """`router=2,bot=1,router+bot=1` as (roles, count) pairs; ValueError says what is wrong."""
    found = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if not count.isdigit():
            raise ValueError(f"{item!r}: say how many, e.g. {name or 'router'}=2")
        found.append((bench_roles(name), int(count)))
    return tuple(found)


def layout_name(pairs: Sequence[tuple[frozenset[str], int]]) -> str:
    return ", ".join(f"{'+'.join(sorted(roles))}={n}" for roles, n in pairs)


def bench_settings(opts: Options) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=opts.database_url,
        redis_url=opts.redis_url,
        hub_data_dir=opts.data_dir,
        hub_bot="offline",
        hub_scheduler=False,
    )


async def run(opts: Options) -> dict[str, Any]:
    settings = bench_settings(opts)
    elsewhere = frozenset().union(*(roles for roles, _ in layout(opts)))
    hub = Hub(
        settings,
        run_router="router" not in elsewhere,
        run_bots="bot" not in elsewhere,
        run_scheduler=False,
    )
    await hub.open()
    try:
        async with transaction(hub.sessions) as session:
            await load_demo_salon(session, now=utcnow(), history=False)
        deliveries = Deliveries()
        hub.channels.clear()  # the dispatcher holds this very dict
        for name in ("telegram", "viber", "sms", "instagram", "webchat"):
            hub.channels[name] = SinkChannel(hub.ctx, name, deliveries)
        inner = (
            build_responder(settings, hub.sessions, utcnow)
            if opts.model_delay_ms is None
            else DelayedModel(opts.model_delay_ms / 1000)
        )
        responder = TimedResponder(inner)
        hub.responder = responder
        async with worker_processes(opts, settings) as workers:
            await hub.start()
            routers = [p for roles, p, _ in workers if "router" in roles]
            if routers:
                await wait_for_leases(hub, len(routers))
            warm = synthetic_messages(
                warm_up := min(WARM_UP, max(10, opts.messages // 10)),
                warm_up,
                seed=99,
                prefix="warm",
            )
            await flow(hub, warm, deliveries, rate=0, timeout_s=opts.timeout_s)
            msgs = synthetic_messages(opts.messages, opts.clients)
            pids = {"hub": os.getpid()} | {
                f"{'+'.join(sorted(roles))} {n}": p.pid
                for n, (roles, p, _) in enumerate(workers, 1)
            }
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            figures = await flow(hub, msgs, deliveries, rate=opts.rate, timeout_s=opts.timeout_s)
            # Per process, what the measured messages cost it; PostgreSQL's and Redis's own
            # processes are not counted.
            figures["cpu_ms_per_message"] = {
                name: round((cpu_seconds(pid) - cpu_before[name]) * 1000 / len(msgs), 2)
                for name, pid in pids.items()
            }
            latency = figures.pop("_latency")
            figures["memory_mib"] = {
                "hub_peak": round(peak_rss_mib(), 1),
                "routers_peak": [round(peak_rss_mib(p.pid), 1) for p in routers],
                "processes_peak": [
                    {"roles": "+".join(sorted(roles)), "mib": round(peak_rss_mib(p.pid), 1)}
                    for roles, p, _ in workers
                ],
            }
            figures["dead_letters"] = await hub.bus.dead_count()
            await hub.stop()
        # The bot processes wrote their brain's times as they stopped.
        for _, _, times in workers:
            if times is not None and times.exists():
                responder.seconds.update(json.loads(times.read_text()))
        figures["overhead"] = overheads(latency, responder.seconds)
        figures["brain_ms"] = summary(
            [responder.seconds[i] for i in latency if i in responder.seconds]
        )
        if opts.ceilings:
            figures["ceilings"] = {
                "redis": await redis_ceiling(hub.redis, [m.to_json() for m in msgs]),
                "store": await answered_ceiling(hub.sessions, msgs),
            }
            figures["ratios"] = ratios(figures)
        figures["options"] = {
            "messages": opts.messages,
            "clients": opts.clients,
            "rate": opts.rate or "flat out",
            "routers": sum(n for roles, n in layout(opts) if "router" in roles)
            or "in the hub process",
            "processes": layout_name(layout(opts)) or "none: all in the hub process",
            "brain": "offline"
            if opts.model_delay_ms is None
            else f"model answering after {opts.model_delay_ms} ms",
            "database": hub.engine.dialect.name,
        }
        return figures
    finally:
        await hub.stop()
        await hub.close()


async def flow(
    hub: Hub,
    msgs: Sequence[InboundMessage],
    deliveries: Deliveries,
    *,
    rate: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Offer `msgs` (at `rate` a second, or all at once) and wait until every client's last
    message is answered and every message is stored."""
    last_of_client = {m.chat_id: m.id for m in msgs}
    waiting = set(last_of_client.values())
    accepted: dict[str, float] = {}
    producer = asyncio.create_task(produce(hub, msgs, accepted, rate))
    stored_at: float | None = None
    prefixes = {m.provider_message_id.split("-")[0] for m in msgs}
    deadline = time.perf_counter() + timeout_s
    while True:
        waiting -= deliveries.first.keys()
        if stored_at is None and producer.done():
            if await stored_count(hub, prefixes) >= len(msgs):
                stored_at = time.perf_counter()
        if not waiting and stored_at is not None:
            break
        if time.perf_counter() > deadline:
            producer.cancel()
            raise TimeoutError(
                f"{len(waiting)} clients still waiting for an answer after {timeout_s:.0f} s"
            )
        deliveries.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(deliveries.changed.wait(), 0.1)
    await producer
    begun = min(accepted.values())
    done = max(deliveries.first[i] for i in last_of_client.values())
    latency = {i: deliveries.first[i] - t for i, t in accepted.items() if i in deliveries.first}
    return {
        "messages": len(msgs),
        "seconds": round(done - begun, 3),
        "throughput_per_s": round(len(msgs) / (done - begun), 1),
        "stored_per_s": round(len(msgs) / (stored_at - begun), 1),
        "answered": len(latency),
        "latency_ms": summary(list(latency.values())),
        "_latency": latency,
        "stored": await stored_count(hub, prefixes),
        "replies_sent": deliveries.count,
        "replies_doubled": deliveries.count - len(deliveries.keys),
    }


async def produce(
    hub: Hub, msgs: Sequence[InboundMessage], accepted: dict[str, float], rate: float
) -> None:
    """Publish as a webhook would; a message counts as accepted once it is in Redis."""
    started = time.perf_counter()
    sent = 0
    while sent < len(msgs):
        due = (
            len(msgs)
            if rate <= 0
            else min(len(msgs), int((time.perf_counter() - started) * rate) + 1)
        )
        while sent < due:
            chunk = msgs[sent : min(due, sent + CHUNK)]
            await hub.bus.publish_inbound_many(chunk)
            now = time.perf_counter()
            for m in chunk:
                accepted[m.id] = now
            sent += len(chunk)
        if sent < len(msgs):
            next_due = started + (sent + 1) / rate
            await asyncio.sleep(max(0.0, min(0.01, next_due - time.perf_counter())))


async def stored_count(hub: Hub, prefixes: set[str]) -> int:
    async with hub.sessions() as session:
        total = 0
        for prefix in prefixes:
            query = select(func.count()).where(
                col(Message.provider_message_id).startswith(f"{prefix}-"),
                Message.direction == "in",
            )
            total += int((await session.exec(query)).one())
        return total


def summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {q: round(percentile(ms, v), 1) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def overheads(latency: dict[str, float], brain: dict[str, float]) -> dict[str, float]:
    """End-to-end latency minus the time the brain took over the same message."""
    return summary([t - brain.get(i, 0.0) for i, t in latency.items()])


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    pipeline = figures["throughput_per_s"]
    ceilings = figures["ceilings"]
    return {
        "pipeline_to_store": round(pipeline / ceilings["store"]["answered_per_s"], 3),
        "pipeline_to_redis": round(pipeline / ceilings["redis"]["write_read_per_s"], 3),
    }


# A worker process: its roles, the process, the file its brain's times come back in.
Worker = tuple[frozenset[str], asyncio.subprocess.Process, Path | None]


@contextlib.asynccontextmanager
async def worker_processes(opts: Options, settings: Settings) -> AsyncIterator[list[Worker]]:
    """The processes of `layout(opts)` (none: the hub's process does everything)."""
    env = {
        **os.environ,
        "DATABASE_URL": opts.database_url,
        "REDIS_URL": opts.redis_url,
        "HUB_DATA_DIR": str(opts.data_dir),
        "HUB_INBOUND_SHARDS": str(settings.hub_inbound_shards),
        "HUB_BOT": str(settings.hub_bot),
        "HUB_SCHEDULER": "false",
    }
    workers: list[Worker] = []
    for roles, count in layout(opts):
        for _ in range(count):
            args = [",".join(sorted(roles))]
            times = None
            if "bot" in roles:
                times = opts.data_dir / f"brain-times-{len(workers)}.json"
                args += ["--brain-times", str(times)]
                if opts.model_delay_ms is not None:
                    args += ["--model-delay-ms", str(opts.model_delay_ms)]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hub.cli.bench.router_process", *args, env=env, stdout=PIPE
            )
            workers.append((roles, proc, times))
    procs = [proc for _, proc, _ in workers]
    try:
        for roles, proc, _ in workers:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(
                    f"a {'+'.join(sorted(roles))} process did not start (exit {proc.returncode})"
                )
        yield workers
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()


async def wait_for_leases(hub: Hub, routers: int, timeout_s: float = 60.0) -> None:
    """Until the shards are spread over the router processes (or each owns one)."""
    streams = hub.bus.inbound_streams()
    want = min(routers, len(streams))
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        owners = [await hub.redis.get(f"{s}:lease") for s in streams]
        if all(owners) and len(set(owners)) >= want:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the router processes did not take the shards")


def report(figures: dict[str, Any]) -> str:
    o = figures["options"]
    lat, over = figures["latency_ms"], figures["overhead"]
    lines = [
        f"pipeline: {o['messages']} messages from {o['clients']} clients, rate {o['rate']},"
        f" processes of their own: {o['processes']}, brain {o['brain']},"
        f" database {o['database']}",
        f"throughput: {figures['throughput_per_s']} messages/s end to end"
        f" ({figures['seconds']} s); stored {figures['stored_per_s']} messages/s",
        f"latency accepted → handed to the channel: p50 {lat['p50']} ms · p95 {lat['p95']} ms"
        f" · p99 {lat['p99']} ms ({figures['answered']} answered;"
        f" {figures['messages'] - figures['answered']} answered together with a newer message)",
        f"hub overhead (latency minus the brain's time): p50 {over['p50']} ms"
        f" · p95 {over['p95']} ms · p99 {over['p99']} ms",
        f"the brain's own time per message: p50 {figures['brain_ms']['p50']} ms"
        f" · p95 {figures['brain_ms']['p95']} ms · p99 {figures['brain_ms']['p99']} ms",
        f"checks: stored {figures['stored']}/{figures['messages']}, dead letters"
        f" {figures['dead_letters']}, replies sent {figures['replies_sent']},"
        f" sent twice {figures['replies_doubled']}",
        f"peak memory: hub process {figures['memory_mib']['hub_peak']} MiB"
        + (
            "; "
            + ", ".join(
                f"{p['roles']} process {p['mib']} MiB"
                for p in figures["memory_mib"]["processes_peak"]
            )
            if figures["memory_mib"]["processes_peak"]
            else ""
        ),
    ]
    lines.append(
        "CPU per message: "
        + ", ".join(f"{name} {ms} ms" for name, ms in figures["cpu_ms_per_message"].items())
    )
    if "ceilings" in figures:
        r, s = figures["ceilings"]["redis"], figures["ceilings"]["store"]
        lines += [
            f"ceiling, Redis stream: write {r['write_per_s']}/s, read+ack {r['read_per_s']}/s,"
            f" both {r['write_read_per_s']}/s",
            f"ceiling, store: answered messages ({s['how']}): {s['answered_per_s']}/s",
            f"pipeline / store ceiling: {figures['ratios']['pipeline_to_store']:.0%};"
            f" pipeline / Redis ceiling: {figures['ratios']['pipeline_to_redis']:.0%}",
        ]
    return "\n".join(lines)


def as_json(figures: dict[str, Any]) -> str:
    return json.dumps(figures, ensure_ascii=False, indent=2)
