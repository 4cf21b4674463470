"""The scheduler: sends due reminders, re-engagement messages and broadcasts.

The rows are in the database (crm_store.scheduled); APScheduler is only the clock that calls
`tick` every few seconds in every hub process. Its own job store is never used: two
schedulers on one store fire a job twice, while rows claimed in a transaction are sent once
by whichever process claims them.

One tick:
1. rows whose sent message failed go back to be routed past that channel (failover);
2. due rows without a channel are checked (consent, quiet hours) and routed
   (crm_store.reach: the client's last used reachable channel first; a few queries for the
   whole batch);
3. per channel, as many rows as its rate allows right now (a token bucket in Redis, shared
   by all processes) are claimed and sent: rendered in the client's language just before the
   send, stored as `system` messages with the rows' keys (the channel's batch in one
   transaction; should it fail, row by row), put on the outbound stream, marked sent;
4. broadcasts with nothing left to send are marked done.

A process that dies mid-send leaves its claimed rows to be claimed again when their lease
runs out; the outbound message has the row's key, so the retry neither stores nor sends it
twice (the dispatcher claims a message before it sends it, and sends only a claimed one:
docs/pipeline.md, "Sending once").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from channels.base import Channel
from crm_store import broadcasts as broadcast_store
from crm_store import scheduled
from crm_store.business import Rules
from crm_store.conversations import open_conversation, record_outbound
from crm_store.db import transaction
from crm_store.identity import live_client
from crm_store.models import BotState, Business, Client, Conversation, Message, ScheduledMessage
from crm_store.reach import ReachRules, Route, ensure_identity, routes_many
from crm_store.reengage import plan_reengagement
from crm_store.reminders import in_quiet_hours, quiet_end_after
from crm_store.timeutil import as_utc
from hub import metrics
from hub.jobs.broadcasts import render_broadcast
from hub.jobs.notices import RENDERERS, RenderContext, Skip, language_of
from hub.jobs.rate_limits import RateLimits
from hub.jobs.reengage import render_reengage
from hub.messages import QuickReply, new_id
from hub.pipeline.bus import Bus
from hub.pipeline.events import message_event
from hub.pipeline.replies import outbound_of

log = logging.getLogger(__name__)

MARKETING = ("reengage", "broadcast")
# A stored row ready to publish: its id, its message, the conversation, the quick replies.
Ready = tuple[int, Message, Conversation, list[str]]
RENDERERS.setdefault("reengage", render_reengage)
RENDERERS.setdefault("broadcast", render_broadcast)


@dataclass
class TickReport:
    failed_over: int = 0
    routed: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    postponed: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, channel: str | None = None) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if channel and outcome == "sent":
            self.by_channel[channel] = self.by_channel.get(channel, 0) + 1


@dataclass(frozen=True)
class SchedulerConfig:
    interval_s: float = 2.0
    batch: int = 200
    lease: timedelta = timedelta(minutes=5)
    rates: Mapping[str, float] = field(default_factory=dict)
    burst_s: float = 2.0
    viber_bot_initiated: bool = True
    reengage_every: timedelta = timedelta(hours=1)
    # Rows sent at once per channel within a tick (1 on SQLite: one writer at a time).
    concurrency: int = 8


class Scheduler:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker,
        bus: Bus,
        channels: Mapping[str, Channel],
        business: Callable[[AsyncSession], Awaitable[Business]],
        clock: Callable[[], datetime],
        worker: str,
        config: SchedulerConfig,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.channels = channels
        self.business_of = business
        self.clock = clock
        self.worker = worker
        self.config = config
        self.limits = RateLimits(bus.redis, config.rates, burst_s=config.burst_s)
        self.clock_runner: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()
        self._business: Business | None = None
        self._rounds: set[asyncio.Task[object]] = set()

    # The clock ------------------------------------------------------------------------

    def start(self) -> None:
        # A tick longer than the interval (a big broadcast) makes APScheduler warn "skipped:
        # maximum number of running instances" every interval: that is the design, not news.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        # Its executor logs two INFO lines per run: every 2 s, that would bury the console.
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
        runner = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        runner.add_job(
            self._tick_safely,
            "interval",
            seconds=self.config.interval_s,
            next_run_time=datetime.now().astimezone(),
            id="scheduled-messages",
        )
        runner.add_job(
            self._plan_safely,
            "interval",
            seconds=self.config.reengage_every.total_seconds(),
            next_run_time=datetime.now().astimezone(),
            id="reengagement",
        )
        runner.start()
        self.clock_runner = runner

    async def stop(self, grace: float = 10.0) -> None:
        """No new rounds; a round under way gets `grace` seconds to finish, then is cut
        short (what it claimed stays claimed until its lease ends, and another round sends
        it). APScheduler would cancel it at once and log the cancellation as a crash."""
        runner, self.clock_runner = self.clock_runner, None
        if runner is None or not runner.running:
            return
        runner.pause()
        if self._rounds:
            await asyncio.wait(self._rounds, timeout=grace)
        runner.shutdown(wait=False)

    async def _tick_safely(self) -> None:
        await self._round(self.tick, "scheduler tick failed")

    async def _plan_safely(self) -> None:
        await self._round(self.plan, "re-engagement planning failed")

    async def _round(self, work: Callable[[], Awaitable[object]], failure: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._rounds.add(task)
        try:
            await work()
        except asyncio.CancelledError:
            # Only a shutdown cancels a round: said in one line, not as APScheduler's traceback.
            log.info("a scheduler round was cut short by the shutdown")
        except Exception:
            # The next round tries again; rows stay in the database whatever happened.
            log.exception(failure)
        finally:
            self._rounds.discard(task)  # type: ignore[arg-type]

    # The work -------------------------------------------------------------------------

    def reach_rules(self) -> ReachRules:
        enabled = {
            name: tuple(sorted(getattr(ch, "inboxes", None) or (ch.inbox,)))
            for name, ch in self.channels.items()
        }
        windowed = {"instagram"} | (set() if self.config.viber_bot_initiated else {"viber"})
        return ReachRules(enabled=enabled, windowed=frozenset(windowed))

    async def plan(self) -> int:
        """Plan re-engagement messages that have come due (idempotent: keys decide)."""
        now = as_utc(self.clock())
        async with transaction(self.sessions) as session:
            rules = Rules.of(await self.business_of(session))
            return await plan_reengagement(session, rules=rules, now=now)

    async def tick(self) -> TickReport:
        """One round; safe to call from several processes at once."""
        async with self._lock:
            report = TickReport()
            now = as_utc(self.clock())
            async with self.sessions() as session:
                # Read once a tick: every row of it is rendered with the same settings.
                self._business = await self.business_of(session)
            async with transaction(self.sessions) as session:
                report.failed_over = await scheduled.failed_over(session, now=now)
            await self._route(now, report)
            await asyncio.gather(*(self._send_channel(ch, now, report) for ch in self.channels))
            async with transaction(self.sessions) as session:
                await broadcast_store.finish_done(session, now=now)
            return report

    async def _route(self, now: datetime, report: TickReport) -> None:
        reach = self.reach_rules()
        async with transaction(self.sessions) as session:
            rules = Rules.of(await self.business_of(session))
            rows = await scheduled.due_unrouted(session, now=now, limit=self.config.batch * 5)
            # The cards, and every card's ways to reach it, in a few queries for the batch.
            client_ids = {row.client_id for row in rows}
            if client_ids:
                await session.exec(select(Client).where(col(Client.id).in_(client_ids)))
            clients = {row.id: await _live_client(session, row.client_id) for row in rows}
            live = {c.id: c for c in clients.values() if c is not None}
            found = await routes_many(session, list(live.values()), rules=reach, now=now)
            for row in rows:
                outcome = self._route_one(session, row, clients[row.id], found, rules, now)
                report.count(outcome)
            await session.flush()

    def _route_one(
        self,
        session: Any,
        row: ScheduledMessage,
        client: Client | None,
        reachable: Mapping[int, list[Route]],
        rules: Rules,
        now: datetime,
    ) -> str:
        if client is None:
            scheduled.close(session, row, "skipped", now=now, error="the client card is gone")
            return "skipped"
        if row.kind in MARKETING and not client.marketing_consent:
            scheduled.close(session, row, "skipped", now=now, error="no marketing consent")
            return "skipped"
        if row.attempts >= scheduled.MAX_ATTEMPTS:
            scheduled.close(session, row, "failed", now=now, error=_gave_up(row))
            return "failed"
        if not row.urgent and in_quiet_hours(now, rules):
            until = quiet_end_after(now, rules)
            scheduled.postpone(session, row, until, now=now, reason="quiet hours")
            return "postponed"
        found = [r for r in reachable.get(client.id, []) if r.key not in row.tried]  # type: ignore[arg-type]
        if not found:
            error = _gave_up(row) if row.tried else "no channel reaches this client"
            scheduled.close(session, row, "failed", now=now, error=error)
            return "failed"
        route = found[0]
        if row.client_id != client.id:
            row.client_id = client.id  # type: ignore[assignment]  (a merged card's target)
        scheduled.set_route(row, route.channel, route.inbox, route.chat_id)
        session.add(row)
        return "routed"

    async def _send_channel(self, channel: str, now: datetime, report: TickReport) -> None:
        granted = await self.limits.take(channel, self.config.batch)
        if granted <= 0:
            return
        async with transaction(self.sessions) as session:
            claimed = await scheduled.claim(
                session,
                channel=channel,
                now=now,
                worker=self.worker,
                lease=self.config.lease,
                limit=granted,
            )
            ids = [row.id for row in claimed]
        await self.limits.give_back(channel, granted - len(ids))
        row_ids = [row_id for row_id in ids if row_id is not None]
        try:
            outcomes, ready = await self._store_batch(row_ids, now)
        except Exception:
            # The batch's one transaction failed and was rolled back whole: each row alone,
            # so one bad row fails only itself.
            log.warning("a batch of %d %s rows failed; sending them one by one", len(ids), channel)
            await self._send_each(channel, row_ids, now, report)
            return
        outcomes.update(await self._publish_batch(ready, now))
        for outcome in outcomes.values():
            report.count(outcome, channel)
            metrics.SCHEDULED.labels(channel, outcome).inc()

    async def _store_batch(
        self, row_ids: list[int], now: datetime
    ) -> tuple[dict[int, str], list[Ready]]:
        """Render and store claimed rows in one transaction: the outcome of each row closed
        here (as `_send_one`'s), and the messages to publish."""
        outcomes: dict[int, str] = {}
        ready: list[Ready] = []
        async with transaction(self.sessions) as session:
            rows = await scheduled.still_mine_many(session, row_ids, self.worker)
            # The cards in one query: `live_client` then finds them in the session.
            client_ids = {row.client_id for row in rows.values()}
            if client_ids:
                await session.exec(select(Client).where(col(Client.id).in_(client_ids)))
            for row_id in row_ids:
                row = rows.get(row_id)
                if row is None:
                    outcomes[row_id] = "cancelled"
                    continue
                if row.attempts > scheduled.MAX_ATTEMPTS:
                    scheduled.close(session, row, "failed", now=now, error=_gave_up(row))
                    outcomes[row_id] = "failed"
                    continue
                stored = await self._stored_or_store(session, row, now)
                if stored is None:
                    outcomes[row_id] = "skipped"
                    continue
                ready.append((row_id, *stored))
        return outcomes, ready

    async def _publish_batch(self, ready: list[Ready], now: datetime) -> dict[int, str]:
        """Publish stored messages at once (the bus's group commit shares the pipelines) and
        mark their rows sent in one statement."""
        published = await asyncio.gather(
            *(
                self._publish(message, conversation, quick)
                for _, message, conversation, quick in ready
            ),
            return_exceptions=True,
        )
        sent: list[int] = []
        for (row_id, *_), result in zip(ready, published, strict=True):
            if isinstance(result, BaseException):
                # Left `sending`: claimed again when the lease runs out, and published then.
                log.error("publishing scheduled message %s failed: %s", row_id, result)
            else:
                sent.append(row_id)
        try:
            if sent:
                async with transaction(self.sessions) as session:
                    await scheduled.mark_sent_many(session, sent, self.worker, now=now)
        except Exception:
            # Published already: left `sending`, claimed again when the lease runs out and
            # published again, which the dispatcher sends once (docs/pipeline.md).
            log.exception("marking %d scheduled messages sent failed", len(sent))
            return {}
        return dict.fromkeys(sent, "sent")

    async def _stored_or_store(
        self, session: Any, row: ScheduledMessage, now: datetime
    ) -> tuple[Message, Conversation, list[str]] | None:
        if row.message_id is None:
            return await self._store(session, row, now)
        # Stored by an earlier attempt that died before publishing: publish again.
        message = (
            await session.exec(select(Message).where(Message.public_id == row.message_id))
        ).one()
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        return message, conversation, list(row.payload.get("quick_replies", []))

    async def _publish(
        self, message: Message, conversation: Conversation, quick: list[str]
    ) -> None:
        outbound = outbound_of(message, conversation)
        outbound.quick_replies = [QuickReply(text=q[:64]) for q in quick]
        await self.bus.publish_outbound(outbound)
        await self.bus.publish_event(**message_event(message, conversation))

    async def _send_each(
        self, channel: str, row_ids: list[int], now: datetime, report: TickReport
    ) -> None:
        # Rows are independent: several at once (the rate was paid for above). SQLite takes
        # one writer at a time, so there they go one by one rather than queue on its lock.
        gate = asyncio.Semaphore(self.config.concurrency)

        async def send(row_id: int) -> None:
            async with gate:
                try:
                    outcome = await self._send_one(row_id, now)
                except Exception:
                    # Left `sending`: claimed again when the lease runs out.
                    log.exception("sending scheduled message %s failed", row_id)
                    return
            report.count(outcome, channel)
            metrics.SCHEDULED.labels(channel, outcome).inc()

        await asyncio.gather(*(send(row_id) for row_id in row_ids))

    async def _send_one(self, row_id: int, now: datetime) -> str:
        """Render and queue one claimed row; "sent", "skipped" or "cancelled"."""
        async with transaction(self.sessions) as session:
            row = await scheduled.still_mine(session, row_id, self.worker)
            if row is None:
                return "cancelled"
            if row.attempts > scheduled.MAX_ATTEMPTS:
                # Claimed again and again (a process keeps dying on it): give up, say why.
                scheduled.close(session, row, "failed", now=now, error=_gave_up(row))
                return "failed"
            stored = await self._stored_or_store(session, row, now)
            if stored is None:
                return "skipped"
        await self._publish(*stored)
        async with transaction(self.sessions) as session:
            await scheduled.mark_sent(session, row_id, self.worker, now=now)
        return "sent"

    async def _store(
        self, session: Any, row: ScheduledMessage, now: datetime
    ) -> tuple[Message, Conversation, list[str]] | None:
        """The row's message, stored `queued` in the client's conversation on its route;
        None when the row was closed instead (skipped, or nothing to render it with)."""
        client = await _live_client(session, row.client_id)
        business = self._business or await self.business_of(session)
        rules = Rules.of(business)
        if client is None:
            scheduled.close(session, row, "skipped", now=now, error="the client card is gone")
            return None
        render = RENDERERS.get(row.kind)
        if render is None:
            scheduled.close(session, row, "failed", now=now, error=f"no renderer for {row.kind}")
            return None
        context = RenderContext(
            session=session,
            row=row,
            client=client,
            rules=rules,
            business=business,
            now=now,
            language=language_of(client),
        )
        try:
            notice = await render(context)
        except Skip as why:
            scheduled.close(session, row, "skipped", now=now, error=str(why))
            return None
        route = _route(row)
        if route.channel in ("sms", "email"):
            await ensure_identity(session, client.id, route)  # type: ignore[arg-type]
        conversation, _ = await open_conversation(
            session,
            client_id=client.id,  # type: ignore[arg-type]
            channel=route.channel,
            inbox=route.inbox,
            chat_id=route.chat_id,
            now=now,
        )
        # The row's message_id is set in this same transaction, so a re-claim after a crash
        # finds the message and publishes it again rather than storing a second one; the
        # unique key is the last word if anything else ever tried.
        message = await record_outbound(
            session,
            conversation=conversation,
            text=notice.text,
            author="system",
            outbound_key=f"sched:{row.id}:{len(row.tried)}",
            public_id=new_id(),
            now=now,
        )
        row.message_id = message.public_id
        row.conversation_id = conversation.id
        row.payload = {**row.payload, "quick_replies": notice.quick_replies}
        session.add(row)
        # A new topic: its buttons must not be read against an old, unfinished dialogue of
        # the offline brain.
        await session.exec(delete(BotState).where(col(BotState.conversation_id) == conversation.id))
        return message, conversation, notice.quick_replies


async def _live_client(session: Any, client_id: int) -> Client | None:
    """The card, following merges to the card it was merged into; None when it is gone."""
    try:
        return await live_client(session, client_id)
    except LookupError:
        return None


def _route(row: ScheduledMessage) -> Route:
    channel, inbox, chat_id = str(row.payload["route"]).split("/", 2)
    return Route(channel, inbox, chat_id)


def _gave_up(row: ScheduledMessage) -> str:
    tried = ", ".join(row.tried) or "nothing"
    return f"every channel failed (tried {tried}): {row.last_error or 'no answer'}"
