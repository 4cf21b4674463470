"""Live updates for the inbox: Server-Sent Events at GET /api/events.

One reader per hub process follows the `hub:events` stream (XREAD BLOCK) and fans each event
out to the open connections' queues; a connection only ever waits on its own queue. A queue is
bounded: a browser that stops reading loses its connection (it reconnects and reloads), the
reader never waits for it. A master gets only the events of conversations assigned to them.
The reader starts with the first subscriber and stops with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from crm_store.models import Conversation
from hub.pipeline.bus import EVENTS_STREAM, parse_entries
from hub.state import HUB, Hub
from hub.web import auth, roles
from hub.web.http_json import refuse

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PING_SECONDS = 15.0  # a comment line this often keeps proxies from closing the connection
QUEUE_SIZE = 500
# Under redis-py's default 5 s socket timeout, which a longer blocking read would trip.
BLOCK_MS = 2_000
ASSIGNEE_TTL = 2.0  # seconds an assignee lookup is trusted (a `conversation` event refreshes)
# "appointment": a change the client made through the bot (hub/pipeline/bot_worker.py).
SSE_EVENTS = frozenset({"message", "conversation", "appointment"})
REPLAY_MAX = 500  # events a reconnecting browser gets back at most (Last-Event-ID)
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


@dataclass(eq=False)
class Subscriber:
    staff_id: int
    # None: sees everything (owner, admin); else the master's own id.
    master_id: int | None
    # (stream entry id, SSE frame); None ends the connection.
    queue: asyncio.Queue[tuple[str, str] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    dropped: bool = False


class EventFanout:
    """The process's one reader of hub:events and its subscribers."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.assignees: dict[int, tuple[float, int | None]] = {}
        self.closed = False

    async def subscribe(self, subscriber: Subscriber) -> None:
        if self.closed:
            raise refuse(web.HTTPServiceUnavailable, "the hub is stopping")
        self.subscribers.add(subscriber)
        if self.task is None or self.task.done():
            self.ready = asyncio.Event()
            self.task = asyncio.create_task(self._run(self.ready), name="sse-reader")
        # Once the reader has fixed where it starts, nothing published from now on is missed.
        await self.ready.wait()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def close(self) -> None:
        """On app shutdown: the reader stops, and every open stream ends."""
        self.closed = True
        for subscriber in list(self.subscribers):
            _end(subscriber)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _run(self, ready: asyncio.Event) -> None:
        # The stream's present end, as a concrete id: an event published between a subscribe
        # and the first XREAD is not missed (a bare "$" would miss it).
        while True:
            try:
                last = await self.hub.redis.xrevrange(EVENTS_STREAM, count=1)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live events: %s unavailable (%s); retrying", EVENTS_STREAM, exc)
                await asyncio.sleep(1)
        ready.set()
        await self._read(last[0][0] if last else "0-0")

    async def _read(self, last_id: str) -> None:
        while self.subscribers and not self.closed:
            try:
                reply = await self.hub.redis.xread({EVENTS_STREAM: last_id}, block=BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live events: reading %s failed (%s); retrying", EVENTS_STREAM, exc)
                await asyncio.sleep(1)
                continue
            for _, entries in parse_entries(reply):
                for entry_id, fields in entries:
                    last_id = entry_id
                    try:
                        await self._deliver(entry_id, fields or {})
                    except Exception:  # one bad event (a failed lookup) must not stop the rest
                        log.exception("live events: delivering %s failed", entry_id)

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        if not self.subscribers:
            return
        off = _switched_off(fields)
        if off is not None:
            # An account switched off (hub/web/team.py): its open streams end now, in every process.
            for subscriber in [s for s in self.subscribers if s.staff_id == off]:
                self.unsubscribe(subscriber)
                _end(subscriber)
            return
        parsed = _parse(entry_id, fields)
        if parsed is None:
            return
        event, frame = parsed
        owners = await self._owners(event)
        for subscriber in list(self.subscribers):
            if not _sees(subscriber, owners):
                continue
            try:
                subscriber.queue.put_nowait((entry_id, frame))
            except asyncio.QueueFull:
                log.info("live events: staff %s reads too slowly; dropped", subscriber.staff_id)
                self.unsubscribe(subscriber)
                _end(subscriber)

    async def missed(self, subscriber: Subscriber, after_id: str) -> list[tuple[str, str]]:
        """What a reconnecting browser missed after its Last-Event-ID (the latest
        REPLAY_MAX at most), as the live reader would have given it."""
        rows = await self.hub.redis.xrevrange(
            EVENTS_STREAM, max="+", min=f"({after_id}", count=REPLAY_MAX
        )
        found = []
        for entry_id, fields in reversed(rows):
            parsed = _parse(entry_id, fields or {})
            if parsed is not None and _sees(subscriber, await self._owners(parsed[0], live=False)):
                found.append((entry_id, parsed[1]))
        return found

    async def _owners(self, event: dict[str, Any], *, live: bool = True) -> set[int]:
        """The masters who may see this event: the conversation's assignee (and, for a change
        of hands, the one who made it and the one it was taken from, so their list follows)."""
        if not any(s.master_id is not None for s in self.subscribers):
            return set()
        owners: set[int] = set()
        if event.get("type") == "appointment" and isinstance(event.get("master_id"), int):
            owners.add(event["master_id"])  # the master whose day it is
        conversation_id = event.get("conversation_id")
        if not isinstance(conversation_id, int):
            return owners
        if event.get("type") == "conversation" and live:
            self.assignees.pop(conversation_id, None)
            # Whoever made the change (a master giving theirs back) and whoever lost it.
            for key in ("previous_assignee_id", "staff_id"):
                if isinstance(event.get(key), int):
                    owners.add(event[key])
        if event.get("type") == "conversation" and not live:
            # A past change: who took part in it may see it again.
            for key in ("previous_assignee_id", "staff_id"):
                if isinstance(event.get(key), int):
                    owners.add(event[key])
        if "assignee_id" in event:
            assignee = event["assignee_id"]
            if live:
                self.assignees[conversation_id] = (time.monotonic(), assignee)
        else:
            assignee = await self._assignee(conversation_id)
        if isinstance(assignee, int):
            owners.add(assignee)
        return owners

    async def _assignee(self, conversation_id: int) -> int | None:
        cached = self.assignees.get(conversation_id)
        if cached and time.monotonic() - cached[0] < ASSIGNEE_TTL:
            return cached[1]
        async with self.hub.sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
        assignee = conversation.assignee_id if conversation else None
        if len(self.assignees) > 10_000:
            self.assignees.clear()
        self.assignees[conversation_id] = (time.monotonic(), assignee)
        return assignee


def _event(fields: dict[str, str]) -> dict[str, Any] | None:
    try:
        event = json.loads(fields.get("data", ""))
    except (TypeError, json.JSONDecodeError):
        return None
    return event if isinstance(event, dict) else None


def _switched_off(fields: dict[str, str]) -> int | None:
    """The staff id of a `staff` event that switched an account off."""
    event = _event(fields)
    if event is None or event.get("type") != "staff" or event.get("active") is not False:
        return None
    staff_id = event.get("staff_id")
    return staff_id if isinstance(staff_id, int) else None


def _parse(entry_id: str, fields: dict[str, str]) -> tuple[dict[str, Any], str] | None:
    """The event of a hub:events entry and its SSE frame; None for what the inbox ignores."""
    event = _event(fields)
    kind = event.get("type") if event is not None else None
    if kind not in SSE_EVENTS:
        return None
    data = json.dumps(event, ensure_ascii=False)
    return event, f"id: {entry_id}\nevent: {kind}\ndata: {data}\n\n"


def _sees(subscriber: Subscriber, owners: set[int]) -> bool:
    return subscriber.master_id is None or subscriber.master_id in owners


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _end(subscriber: Subscriber) -> None:
    """Wake the connection's handler so it ends (its queue may be full: empty it first)."""
    subscriber.dropped = True
    while not subscriber.queue.empty():
        subscriber.queue.get_nowait()
    subscriber.queue.put_nowait(None)


FANOUT = web.AppKey("event_fanout", EventFanout)


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    staff = await roles.staff_of(request)
    fanout = request.app[FANOUT]
    subscriber = Subscriber(staff.id, None if roles.is_manager(staff) else staff.id)  # type: ignore[arg-type]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    resume = request.headers.get("Last-Event-ID", "")
    try:
        await fanout.subscribe(subscriber)
        await response.prepare(request)
        # The first bytes tell the client it is subscribed: what comes next reaches it.
        await response.write(b": ready\n\n")
        sent = (0, 0)
        if STREAM_ID.fullmatch(resume):
            # A browser reconnecting (EventSource sends the last id it got): what it missed.
            for entry_id, frame in await fanout.missed(subscriber, resume):
                await response.write(frame.encode())
                sent = _order(entry_id)
        while not subscriber.dropped:
            try:
                item = await asyncio.wait_for(subscriber.queue.get(), PING_SECONDS)
            except TimeoutError:
                if not await _still_signed_in(request):
                    break  # signed out, or the account was switched off in the database
                await response.write(b": ping\n\n")
                continue
            if item is None:
                break
            entry_id, frame = item
            if _order(entry_id) > sent:  # not already replayed
                await response.write(frame.encode())
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        fanout.unsubscribe(subscriber)
    return response


async def _still_signed_in(request: web.Request) -> bool:
    """The stream's session still lives and its account is still on (read afresh)."""
    session = await auth.session_of(request.app[HUB].redis, request.cookies.get(auth.COOKIE))
    return session is not None and await roles.load_active(request)


def setup(app: web.Application) -> None:
    """Routes plus the reader's lifetime: it ends, with every open stream, on shutdown."""
    app[FANOUT] = EventFanout(app[HUB])

    async def on_shutdown(app: web.Application) -> None:
        await app[FANOUT].close()

    app.on_shutdown.append(on_shutdown)
    app.add_routes(routes)
