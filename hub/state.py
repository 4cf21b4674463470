"""The running hub: Redis, the database, the bus, the channels and the workers of one process.

A process runs some of the hub's roles (`hub serve --role`, docs/pipeline.md "Processes by
role"): `web` (the HTTP app, which hub.cli.serve binds; nothing here), `router`, `bot`,
`dispatch` and `scheduler`. Each role's work is shared between the processes that run it the
way it always was (consumer groups, shard leases, claimed rows), so any layout is correct and
only its speed differs. The channels are started where a role speaks to providers (`web`
takes webhooks, `dispatch` and `scheduler` send); their pollers (email IMAP, Instagram
private) hold an exclusive lease, so one of those processes polls at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bots.base import Responder
from channels.base import Channel, FanoutHandler
from crm_store import channel_state
from crm_store.business import Rules, get_business
from crm_store.conversations import chat_history
from crm_store.db import create_engine, is_sqlite, session_factory, transaction
from crm_store.identity import mark_unreachable
from crm_store.migrate import require_head, upgrade_async
from crm_store.models import Business
from crm_store.staff import configure_hashing
from crm_store.timeutil import utcnow
from hub.brains import build_responder
from hub.channel_setup import build_channels
from hub.config import Settings
from hub.embedded_redis import EmbeddedRedis
from hub.jobs.scheduler import Scheduler, SchedulerConfig
from hub.messages import DeliveryStatus, InboundMessage
from hub.pipeline.bot_worker import BotWorker
from hub.pipeline.bus import Bus, BusUnavailable
from hub.pipeline.consumer import StreamConsumer
from hub.pipeline.dispatcher import Backoff, Dispatcher
from hub.pipeline.events import message_frame
from hub.pipeline.exclusive import run_exclusive
from hub.pipeline.router import Router, RouterHooks

log = logging.getLogger(__name__)

HUB: web.AppKey[Hub] = web.AppKey("hub")
FANOUT_PREFIX = "hub:fanout:"
PUBLISH_RETRY_AFTER_S = 5
ROLES = ("web", "router", "bot", "dispatch", "scheduler")
# The roles that talk to providers, so need the channels started: webhooks come in through
# `web`, replies go out through `dispatch`, reminders and broadcasts through `scheduler`.
CHANNEL_ROLES = frozenset({"web", "dispatch", "scheduler"})


def parse_roles(text: str) -> frozenset[str]:
    """`web,router` as a set of roles; `all` is every role. ValueError names what is unknown."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return frozenset(ROLES)
    unknown = sorted(set(names) - set(ROLES))
    choices = f"choose from {', '.join(ROLES)} or all"
    if unknown:
        raise ValueError(f"unknown role {', '.join(unknown)}: {choices}")
    if not names:
        raise ValueError(f"no role given: {choices}")
    return frozenset(names)


class HubContext:
    """What channels get from the hub (channels.base.ChannelContext)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.handlers: dict[str, list[FanoutHandler]] = defaultdict(list)

    async def publish(self, msg: InboundMessage) -> None:
        try:
            await self.hub.bus.publish_inbound(msg)
        except BusUnavailable as exc:
            # Not taken, so not promised: a webhook lets this through as a 503 ("come back
            # later", where a 500 says the hub broke) and the provider sends it again; a
            # poller treats it as any failure and reads the message again.
            log.warning("a %s message was not taken: %s", msg.channel, exc)
            raise web.HTTPServiceUnavailable(
                text="the hub cannot take messages right now; try again",
                headers={"Retry-After": str(PUBLISH_RETRY_AFTER_S)},
            ) from exc

    async def report(self, status: DeliveryStatus) -> None:
        await self.hub.dispatcher.record(status)

    async def unreachable(self, channel: str, inbox: str, external_id: str, reason: str) -> None:
        async with transaction(self.hub.sessions) as session:
            await mark_unreachable(
                session,
                channel=channel,
                inbox=inbox,
                external_id=external_id,
                reason=reason,
                at=self.hub.clock(),
            )

    async def history(self, channel: str, inbox: str, chat_id: str) -> list[dict[str, Any]]:
        async with self.hub.sessions() as session:
            rows = await chat_history(session, channel=channel, inbox=inbox, chat_id=chat_id)
        return [message_frame(m) for m in rows]

    async def set_aside(
        self, channel: str, inbox: str, reason: str, details: dict[str, Any]
    ) -> None:
        await self.hub.bus.set_aside(f"{channel}/{inbox}", reason, details)

    async def load_state(self, channel: str, inbox: str, key: str) -> dict[str, Any] | None:
        return await channel_state.load_state(self.hub.sessions, channel, inbox, key)

    async def save_state(self, channel: str, inbox: str, key: str, value: dict[str, Any]) -> None:
        await channel_state.save_state(
            self.hub.sessions, channel, inbox, key, value, at=self.hub.clock()
        )

    async def run_exclusive(self, name: str, job: Callable[[], Awaitable[None]]) -> None:
        await run_exclusive(self.hub.redis, self.hub.name, name, job)

    async def fanout(self, topic: str, payload: dict[str, Any]) -> None:
        await self.hub.redis.publish(FANOUT_PREFIX + topic, json.dumps(payload, default=str))

    def on_fanout(self, topic: str, handler: FanoutHandler) -> None:
        self.handlers[topic].append(handler)

    async def listen(self) -> None:
        """One pub/sub connection per process carries every channel's fan-out."""
        while True:
            pubsub = self.hub.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(FANOUT_PREFIX + "*")
                self.hub.fanout_ready.set()
                async for item in pubsub.listen():
                    if item.get("type") != "pmessage":
                        continue
                    topic = str(item["channel"])[len(FANOUT_PREFIX) :]
                    try:
                        payload = json.loads(item["data"])
                    except (TypeError, json.JSONDecodeError):
                        log.warning("ignoring a malformed fan-out payload on %s", topic)
                        continue
                    for handler in self.handlers.get(topic, ()):
                        try:
                            await handler(payload)
                        except Exception:
                            log.exception("fan-out handler for %s failed", topic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fan-out connection lost (%s); reconnecting", exc)
                await asyncio.sleep(1)
            finally:
                self.hub.fanout_ready.clear()
                await pubsub.aclose()


class Hub:
    """One process's hub.

    Which workers it runs is said either by `roles` (a subset of ROLES, as `hub serve --role`
    gives it) or, for tests and benchmarks that pick single workers, by the `run_*` switches;
    `roles` wins when given. The scheduler runs only where HUB_SCHEDULER is on as well, so one
    setting still turns it off everywhere.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        responder: Responder | None = None,
        router_hooks: RouterHooks | None = None,
        roles: Iterable[str] | None = None,
        run_router: bool = True,
        run_dispatcher: bool = True,
        run_bots: bool = True,
        run_scheduler: bool | None = None,
        migrate: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.migrate = migrate
        # Every "now" of the booking rules comes from here, so tests can set the time.
        self.clock = clock
        self.settings = settings
        self.responder: Responder | None = responder
        self.router_hooks = router_hooks
        self.roles = frozenset(ROLES if roles is None else roles)
        self.start_channels = True
        if roles is not None:
            run_router = "router" in self.roles
            run_dispatcher = "dispatch" in self.roles
            run_bots = "bot" in self.roles
            run_scheduler = "scheduler" in self.roles and settings.hub_scheduler
            # A router or bot process never speaks to a provider: no second Telegram
            # long-poller, no idle SMTP or Instagram sessions there.
            self.start_channels = bool(self.roles & CHANNEL_ROLES)
        self.run_router = run_router
        self.run_dispatcher = run_dispatcher
        self.run_bots = run_bots
        # None: as HUB_SCHEDULER says. Tests that move the clock call `scheduler.tick()`.
        self.run_scheduler = settings.hub_scheduler if run_scheduler is None else run_scheduler
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.embedded: EmbeddedRedis | None = None
        self.channels: dict[str, Channel] = {}
        self.consumers: list[StreamConsumer] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.fanout_ready = asyncio.Event()
        self.ctx = HubContext(self)
        self.redis: Redis
        self.engine: AsyncEngine
        self.sessions: async_sessionmaker
        self.bus: Bus
        self.dispatcher: Dispatcher
        self.router: Router
        self.scheduler: Scheduler

    # Lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to Redis and the database (starting the embedded Redis if needed)."""
        s = self.settings
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis(s.data_dir)
            url = await self.embedded.astart()
        # Commands past max_connections wait for a free connection (up to 10 s) instead of
        # raising MaxConnectionsError, which the consumers would take for an outage.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=s.hub_redis_max_connections,
            timeout=10,
            decode_responses=True,
            health_check_interval=30,
        )
        self.redis = Redis.from_pool(pool)
        await self.redis.ping()
        configure_hashing(time_cost=s.hub_argon2_time_cost, memory_kib=s.hub_argon2_memory_kib)
        db_url = s.effective_database_url()
        self.engine = create_engine(db_url)
        if is_sqlite(db_url) or self.migrate:
            await upgrade_async(db_url)
        else:
            # Several processes may start at once against PostgreSQL: `hub migrate` is explicit.
            await require_head(self.engine)
        self.sessions = session_factory(self.engine)
        self.bus = Bus(self.redis, shards=s.hub_inbound_shards, maxlen=s.hub_stream_maxlen)
        self.channels = build_channels(s, self.ctx)
        self.router = Router(
            self.bus, self.sessions, region=s.hub_default_region, hooks=self.router_hooks
        )
        self.dispatcher = Dispatcher(
            self.bus,
            self.sessions,
            self.channels,
            backoff=Backoff(
                base=s.hub_outbound_backoff_ms / 1000,
                cap=s.hub_outbound_backoff_max_ms / 1000,
                attempts=s.hub_outbound_attempts,
            ),
        )
        self.scheduler = Scheduler(
            sessions=self.sessions,
            bus=self.bus,
            channels=self.channels,
            business=self.business,
            clock=lambda: self.clock(),
            worker=self.name,
            config=SchedulerConfig(
                interval_s=s.hub_scheduler_interval_s,
                batch=s.hub_scheduler_batch,
                lease=timedelta(seconds=s.hub_scheduler_lease_s),
                rates=s.send_rates,
                viber_bot_initiated=s.hub_viber_bot_initiated,
                reengage_every=timedelta(minutes=s.hub_reengage_every_min),
                concurrency=1 if is_sqlite(db_url) else 8,
            ),
        )

    async def start(self) -> None:
        """Start channels, the fan-out listener and the workers."""
        s = self.settings
        if self.start_channels:
            for channel in self.channels.values():
                await channel.start()
        self.tasks.append(asyncio.create_task(self.ctx.listen(), name="fanout"))
        common = {"claim_idle_ms": s.hub_claim_idle_ms, "max_deliveries": s.hub_max_deliveries}
        if self.run_router:
            self.consumers.append(
                self.router.consumer(f"router-{self.name}", lease_ms=s.hub_shard_lease_ms, **common)
            )
        if self.run_dispatcher and self.channels:
            self.consumers.append(self.dispatcher.consumer(f"dispatch-{self.name}", **common))
        if self.run_bots:
            if self.responder is None:
                # Late-bound: a test that sets hub.clock moves the bot's "now" too.
                self.responder = build_responder(s, self.sessions, lambda: self.clock())
            worker = BotWorker(self.bus, self.sessions, self.responder, max_turns=s.hub_bot_turns)
            self.consumers.append(worker.consumer(f"bots-{self.name}", **common))
        for consumer in self.consumers:
            self.tasks.append(asyncio.create_task(consumer.run(), name=consumer.name))
        if self.run_scheduler:
            self.scheduler.start()
        await asyncio.wait_for(self.fanout_ready.wait(), 10)

    async def stop(self, grace: float = 10.0) -> None:
        """Let workers finish the entry in hand; what is cut short stays pending in Redis."""
        if hasattr(self, "scheduler"):
            await self.scheduler.stop(grace)
        for consumer in self.consumers:
            consumer.stop()
        workers = [t for t in self.tasks if t.get_name() != "fanout"]
        if workers:
            _, pending = await asyncio.wait(workers, timeout=grace)
            for task in pending:
                log.warning("%s did not stop within %.0fs: cancelled", task.get_name(), grace)
                task.cancel()
        for task in self.tasks:
            if not task.done():
                task.cancel()
        if self.tasks:
            # Bounded: a library that swallows a cancellation (redis-py can) must not turn a
            # shutdown into a hang.
            _, stuck = await asyncio.wait(self.tasks, timeout=grace)
            for task in stuck:
                log.warning("%s ignored its cancellation; left behind", task.get_name())
        self.tasks.clear()
        self.consumers.clear()
        # Started or not: stop also closes what a channel made when it was built.
        for channel in self.channels.values():
            await channel.stop()

    async def close(self) -> None:
        if hasattr(self, "engine"):
            await self.engine.dispose()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        if self.embedded is not None:
            await self.embedded.astop()

    async def business(self, session: AsyncSession) -> Business:
        """The salon's saved settings, else the environment's defaults."""
        return await get_business(
            session, timezone=self.settings.hub_timezone, currency=self.settings.hub_currency
        )

    async def rules(self, session: AsyncSession) -> Rules:
        """The salon's booking rules."""
        return Rules.of(await self.business(session))

    # Health ----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        try:
            await asyncio.wait_for(self.redis.ping(), 2)
            state["redis"] = "ok"
        except Exception as exc:
            state["redis"] = f"error: {type(exc).__name__}"
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
            state["database"] = "ok"
        except Exception as exc:
            state["database"] = f"error: {type(exc).__name__}"
        state["ok"] = state["redis"] == "ok" and state["database"] == "ok"
        # A paused channel (say, Instagram asking for a login challenge) is shown, but the hub
        # itself is up: a load balancer must not take it out for that.
        state["channels"] = {name: ch.status().as_json() for name, ch in self.channels.items()}
        return state
