"""Broadcasts: one text to a segment of clients, sent by the scheduler one row per recipient.

The life of a broadcast: `draft` (its title, text, segment and time can still change) →
`launch` turns the segment into one ScheduledMessage per client (kind "broadcast", key
`broadcast:<id>:<client id>`, due at the broadcast's time or at once) and the broadcast is
`scheduled` (due later) or `sending` → `done` once no row of it is open (`finish_done`, run by
the scheduler's tick) — or `cancelled` at any point before that: the rows not sent yet are
dropped.

The segment is read once, at launch: a client who enters it later is not added, one who
leaves it (or withdraws consent) is skipped by the scheduler, which sends kind "broadcast"
only to clients with marketing consent. Launching twice adds nothing: the keys exist.

Creating, changing, launching and cancelling a broadcast are written to the audit log
(entity "broadcast").
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import exists, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit, scheduled
from crm_store.models import Broadcast, Client, ScheduledMessage, Service
from crm_store.scheduled import OPEN, Planned
from crm_store.segments import Segment, segment_client_ids
from crm_store.timeutil import aware

MAX_TITLE = 200
MAX_TEXT = 2000
# How far ahead a broadcast may be scheduled.
MAX_AHEAD = timedelta(days=366)
# The one placeholder a text may use: the client's first name.
PLACEHOLDERS = ("name",)
EDITABLE = ("title", "text", "segment", "scheduled_at")
ROW_STATUSES = (*scheduled.OPEN, *scheduled.FINAL)


class BroadcastError(ValueError):
    """A request that can't be done; nothing was changed. `field` names the culprit."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BroadcastNotFound(BroadcastError):
    status = 404


class BroadcastConflict(BroadcastError):
    """Not in a state that allows it (a sent broadcast can't be edited)."""

    status = 409


@dataclass
class Progress:
    """Where the rows of a broadcast are: counts by status, and by channel and status."""

    counts: dict[str, int]
    channels: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return sum(self.counts.get(status, 0) for status in OPEN)

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            # pending as people mean it: not sent yet, whether or not a scheduler holds it.
            "pending": self.open,
            "channels": self.channels,
        }


@dataclass
class Recipient:
    client_id: int
    name: str | None
    channel: str | None
    status: str
    last_error: str | None
    due_at: datetime | None
    sent_at: datetime | None


# Drafts ----------------------------------------------------------------------------------


async def create_draft(
    session: AsyncSession,
    *,
    title: str,
    text: str,
    segment: Segment | dict[str, Any],
    scheduled_at: datetime | None = None,
    now: datetime,
    staff_id: int | None = None,
) -> Broadcast:
    now = now.astimezone(UTC)  # stored: SQLite keeps no offset
    values = await _checked(
        session,
        {"title": title, "text": text, "segment": segment, "scheduled_at": scheduled_at},
        now=now,
    )
    broadcast = Broadcast(**values, status="draft", created_by_staff_id=staff_id, created_at=now)
    session.add(broadcast)
    await session.flush()
    _audit(session, broadcast, "create", staff_id, {k: values[k] for k in EDITABLE})
    return broadcast


async def update_draft(
    session: AsyncSession,
    broadcast_id: int,
    changes: dict[str, Any],
    *,
    now: datetime,
    staff_id: int | None = None,
) -> Broadcast:
    """Change the fields given (a draft only); `scheduled_at: None` means "send at once"."""
    now = now.astimezone(UTC)
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise BroadcastError(f"can't change {', '.join(sorted(unknown))}")
    broadcast = await get_broadcast(session, broadcast_id, lock=True)
    if broadcast.status != "draft":
        raise BroadcastConflict(f"only a draft can be changed; this one is {broadcast.status}")
    values = await _checked(session, changes, now=now)
    diff: dict[str, Any] = {}
    for key, value in values.items():
        before = getattr(broadcast, key)
        if key == "scheduled_at":
            before = aware(before)
        if before != value:
            diff[key] = [before, value]
            setattr(broadcast, key, value)
    if diff:
        session.add(broadcast)
        await session.flush()
        _audit(session, broadcast, "update", staff_id, diff)
    return broadcast


async def _checked(
    session: AsyncSession, values: dict[str, Any], *, now: datetime
) -> dict[str, Any]:
    """The values as they are stored, or BroadcastError naming the first bad one."""
    checked: dict[str, Any] = {}
    if "title" in values:
        title = " ".join(str(values["title"] or "").split())
        if not title:
            raise BroadcastError("the title can't be empty", "title")
        if len(title) > MAX_TITLE:
            raise BroadcastError(f"the title is at most {MAX_TITLE} characters", "title")
        checked["title"] = title
    if "text" in values:
        checked["text"] = check_text(values["text"])
    if "segment" in values:
        checked["segment"] = (await check_segment(session, values["segment"])).as_json()
    if "scheduled_at" in values:
        checked["scheduled_at"] = _check_time(values["scheduled_at"], now)
    return checked


def check_text(text: Any) -> str:
    text = str(text or "").strip()
    if not text:
        raise BroadcastError("the text can't be empty", "text")
    if len(text) > MAX_TEXT:
        raise BroadcastError(f"the text is at most {MAX_TEXT} characters", "text")
    try:
        fields = [
            # "{name!r}" or "{name:>9}" would be formatted, not just filled in.
            name if not spec and not conversion else "?"
            for _, name, spec, conversion in string.Formatter().parse(text)
            if name is not None
        ]
    except ValueError:
        fields = ["?"]
    wrong = [name for name in fields if name not in PLACEHOLDERS]
    if wrong:
        # Anything else would reach clients as written, or break the message.
        raise BroadcastError(
            "the text may use only the {name} placeholder (write a brace as {{ or }})", "text"
        )
    return text


async def check_segment(session: AsyncSession, segment: Segment | dict[str, Any]) -> Segment:
    if not isinstance(segment, Segment):
        try:
            segment = Segment.model_validate(segment)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(["segment", *map(str, error["loc"])])
            raise BroadcastError(f"{where}: {error['msg']}", where) from None
    if segment.service_id is not None and await session.get(Service, segment.service_id) is None:
        raise BroadcastError(f"no service with id {segment.service_id}", "segment.service_id")
    return segment


def _check_time(value: datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise BroadcastError("scheduled_at needs its UTC offset", "scheduled_at")
    if value <= now:
        raise BroadcastError("scheduled_at is in the past: send it now instead", "scheduled_at")
    if value > now + MAX_AHEAD:
        raise BroadcastError("scheduled_at is more than a year ahead", "scheduled_at")
    # Stored in UTC: SQLite keeps the wall time without its offset.
    return value.astimezone(UTC)


# Launching, cancelling, finishing --------------------------------------------------------


async def launch(
    session: AsyncSession,
    broadcast_id: int,
    *,
    now: datetime,
    staff_id: int | None = None,
    tz: ZoneInfo | None = None,
) -> Broadcast:
    """One scheduled row per client of the segment, due at the broadcast's time (or now).

    A broadcast launched already is answered as it is: nothing new is planned.
    """
    now = now.astimezone(UTC)
    broadcast = await get_broadcast(session, broadcast_id, lock=True)
    if broadcast.status == "cancelled":
        raise BroadcastConflict("the broadcast was cancelled")
    if broadcast.status != "draft":
        return broadcast
    segment = await check_segment(session, broadcast.segment)
    client_ids = await segment_client_ids(session, segment, now=now, tz=tz)
    if not client_ids:
        raise BroadcastError(
            "nobody to send to: no client with marketing consent is in the segment", "segment"
        )
    due = max(aware(broadcast.scheduled_at) or now, now).astimezone(UTC)
    await scheduled.enqueue(
        session,
        [
            Planned(
                kind="broadcast",
                key=f"broadcast:{broadcast_id}:{client_id}",
                client_id=client_id,
                broadcast_id=broadcast_id,
                due_at=due,
                urgent=False,
            )
            for client_id in client_ids
        ],
        now=now,
    )
    broadcast.total = len(client_ids)
    broadcast.status = "scheduled" if due > now else "sending"
    if broadcast.status == "sending":
        broadcast.started_at = now
    session.add(broadcast)
    await session.flush()
    _audit(
        session,
        broadcast,
        "launch",
        staff_id,
        {"status": ["draft", broadcast.status], "total": broadcast.total, "due_at": due},
    )
    return broadcast


async def cancel(
    session: AsyncSession,
    broadcast_id: int,
    *,
    now: datetime,
    staff_id: int | None = None,
) -> Broadcast:
    """Stop it: what has not gone yet is dropped; what went, went. Cancelling twice is fine."""
    now = now.astimezone(UTC)
    broadcast = await get_broadcast(session, broadcast_id, lock=True)
    if broadcast.status == "cancelled":
        return broadcast
    if broadcast.status == "done":
        raise BroadcastConflict("the broadcast has finished: there is nothing left to cancel")
    before = broadcast.status
    dropped = await scheduled.cancel_open(
        session, now=now, reason="broadcast cancelled", broadcast_id=broadcast_id
    )
    broadcast.status = "cancelled"
    broadcast.finished_at = now
    session.add(broadcast)
    await session.flush()
    _audit(
        session,
        broadcast,
        "cancel",
        staff_id,
        {"status": [before, "cancelled"], "dropped": dropped},
    )
    return broadcast


async def finish_done(session: AsyncSession, *, now: datetime) -> int:
    """The scheduler's bookkeeping: a scheduled broadcast whose time came is `sending`; a
    sending one with no pending or sending row left is `done`. How many became done."""
    now = now.astimezone(UTC)
    await session.exec(  # type: ignore[call-overload]
        update(Broadcast)
        .where(
            col(Broadcast.status) == "scheduled",
            col(Broadcast.scheduled_at) <= now,
        )
        .values(status="sending", started_at=Broadcast.scheduled_at)
    )
    still_open = exists().where(
        col(ScheduledMessage.broadcast_id) == col(Broadcast.id),
        col(ScheduledMessage.status).in_(OPEN),
    )
    result = await session.exec(  # type: ignore[call-overload]
        update(Broadcast)
        .where(col(Broadcast.status) == "sending", ~still_open)
        .values(status="done", finished_at=now)
    )
    return max(result.rowcount or 0, 0)


# Reading ---------------------------------------------------------------------------------


async def get_broadcast(
    session: AsyncSession, broadcast_id: int, *, lock: bool = False
) -> Broadcast:
    query = select(Broadcast).where(Broadcast.id == broadcast_id)
    if lock and session.bind is not None and session.bind.dialect.name == "postgresql":
        # Two launches (or a launch and a cancel) at once: one waits for the other.
        query = query.with_for_update()
    broadcast = (await session.exec(query)).first()
    if broadcast is None:
        raise BroadcastNotFound(f"no broadcast with id {broadcast_id}")
    return broadcast


async def list_broadcasts(
    session: AsyncSession, *, limit: int = 50, offset: int = 0
) -> list[Broadcast]:
    """Newest first."""
    query = select(Broadcast).order_by(col(Broadcast.id).desc()).limit(limit).offset(offset)
    return list((await session.exec(query)).all())


async def progress(session: AsyncSession, broadcast_id: int) -> Progress:
    await get_broadcast(session, broadcast_id)
    counts = await scheduled.counts(session, broadcast_id=broadcast_id)
    rows = await session.exec(
        select(ScheduledMessage.channel, ScheduledMessage.status, func.count())
        .where(ScheduledMessage.broadcast_id == broadcast_id)
        .group_by(ScheduledMessage.channel, ScheduledMessage.status)
    )
    channels: dict[str, dict[str, int]] = {}
    for channel, status, n in rows.all():
        # A row not routed yet has no channel: "" in the answer.
        channels.setdefault(channel or "", {})[status] = int(n)
    return Progress(counts=counts, channels=channels)


async def counts_of(
    session: AsyncSession, broadcast_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """Counts by status for several broadcasts at once (the list)."""
    found: dict[int, dict[str, int]] = {i: dict.fromkeys(ROW_STATUSES, 0) for i in broadcast_ids}
    if not broadcast_ids:
        return found
    rows = await session.exec(
        select(ScheduledMessage.broadcast_id, ScheduledMessage.status, func.count())
        .where(col(ScheduledMessage.broadcast_id).in_(list(broadcast_ids)))
        .group_by(ScheduledMessage.broadcast_id, ScheduledMessage.status)
    )
    for broadcast_id, status, n in rows.all():
        if broadcast_id is not None:
            found[int(broadcast_id)][status] = int(n)
    return found


async def recipients(
    session: AsyncSession,
    broadcast_id: int,
    *,
    statuses: Sequence[str] = (),
    limit: int = 100,
    offset: int = 0,
) -> list[Recipient]:
    """The broadcast's rows with the client's name, in the order they were planned."""
    await get_broadcast(session, broadcast_id)
    wrong = set(statuses) - set(ROW_STATUSES)
    if wrong:
        raise BroadcastError(f"status must be among {', '.join(ROW_STATUSES)}", "status")
    query = (
        select(ScheduledMessage, Client.name)
        .join(Client, col(Client.id) == col(ScheduledMessage.client_id))
        .where(ScheduledMessage.broadcast_id == broadcast_id)
        .order_by(col(ScheduledMessage.id))
        .limit(limit)
        .offset(offset)
    )
    if statuses:
        query = query.where(col(ScheduledMessage.status).in_(list(statuses)))
    return [
        Recipient(
            client_id=row.client_id,
            name=name,
            channel=row.channel,
            status=row.status,
            last_error=row.last_error,
            due_at=aware(row.due_at),
            sent_at=aware(row.sent_at),
        )
        for row, name in (await session.exec(query)).all()
    ]


def _audit(
    session: AsyncSession,
    broadcast: Broadcast,
    action: str,
    staff_id: int | None,
    changes: dict[str, Any],
) -> None:
    assert broadcast.id is not None
    audit.record(
        session,
        actor="staff" if staff_id is not None else "system",
        staff_id=staff_id,
        entity="broadcast",
        entity_id=broadcast.id,
        action=action,
        changes={key: _plain(value) for key, value in changes.items()},
    )


def _plain(value: Any) -> Any:
    """A segment (a dict) as its JSON text: the audit log keeps scalars and lists."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
