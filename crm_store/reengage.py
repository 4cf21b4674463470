"""Re-engagement: who is due a "time for your next visit" message, planned once per visit.

A service with `return_interval_days` (manicure 21, haircut 35) brings a client back that
often. A client whose last done visit of such a service is older than the interval, who has
nothing booked, who agreed to marketing messages and whose card is not merged away, is due
one message. The row's key carries the visit it is about (`reengage:<client>:<service>:<epoch
of the visit>`), so planning again and again plans nothing new until there is a new visit: a
client who ignores the message is not asked again for the same visit.

One nudge at a time: a client with an open re-engagement row, or one sent in the last
`SPACING`, gets no other, even when several services are due; of several the most overdue
goes first, the next one after the spacing if the client still has not booked.

The sender (hub.reengage) checks `still_due` again just before it sends: the client may have
booked or withdrawn consent in the meantime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, String, cast, exists, func, literal, true
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import scheduled
from crm_store.appointments import LIVE
from crm_store.business import Rules
from crm_store.models import Appointment, Client, ScheduledMessage, Service
from crm_store.reminders import quiet_end_after
from crm_store.timeutil import aware

KIND = "reengage"
# No second nudge (for another service) sooner than this after one was sent.
SPACING = timedelta(days=7)
# A booked appointment that started this recently and is not closed yet was most likely a
# visit staff have not marked done: no "it's been weeks" message over it.
UNCLOSED = timedelta(days=2)
DAY_S = 86_400


@dataclass(frozen=True)
class Due:
    client_id: int
    service_id: int
    last_visit: datetime  # UTC
    key: str


def reengage_key(client_id: int, service_id: int, visit_epoch: int) -> str:
    return f"{KIND}:{client_id}:{service_id}:{visit_epoch}"


async def plan_reengagement(
    session: AsyncSession, *, rules: Rules, now: datetime, limit: int = 500
) -> int:
    """Plan the messages of clients due one (at most `limit`); how many were planned."""
    due = await find_due(session, now=now, limit=limit)
    # Planned in quiet hours, due when they end: the scheduler would hold it until then.
    when = quiet_end_after(now, rules)
    rows = [
        scheduled.Planned(
            key=d.key,
            kind=KIND,
            client_id=d.client_id,
            service_id=d.service_id,
            due_at=when,
            urgent=False,
            payload={"last_visit": d.last_visit.isoformat()},
        )
        for d in due
    ]
    return await scheduled.enqueue(session, rows, now=now)


async def find_due(session: AsyncSession, *, now: datetime, limit: int = 500) -> list[Due]:
    """Clients due a re-engagement message and not planned one for their last visit yet,
    one service each (the most overdue), most overdue first."""
    now = now.astimezone(UTC)  # SQLite compares stored UTC wall times as text
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    last = (
        select(
            col(Appointment.client_id).label("client_id"),
            col(Appointment.service_id).label("service_id"),
            func.max(col(Appointment.start_at)).label("last_at"),
        )
        .where(Appointment.status == "done")
        .group_by(col(Appointment.client_id), col(Appointment.service_id))
        .subquery("last_visits")
    )
    visit_epoch = _epoch_seconds(last.c.last_at, dialect)
    interval = col(Service.return_interval_days)
    due_epoch = visit_epoch + interval * DAY_S
    # The key built by the database, the way reengage_key builds it, so a visit already
    # planned for is left out here rather than after the limit (ignored messages would
    # otherwise fill every batch).
    key = (
        literal(f"{KIND}:")
        + cast(last.c.client_id, String)
        + literal(":")
        + cast(last.c.service_id, String)
        + literal(":")
        + cast(visit_epoch, String)
    )
    candidates = (
        select(
            last.c.client_id,
            last.c.service_id,
            last.c.last_at,
            visit_epoch.label("visit_epoch"),
            due_epoch.label("due_epoch"),
            func.row_number()
            .over(partition_by=last.c.client_id, order_by=(due_epoch, last.c.service_id))
            .label("rank"),
        )
        .join(Service, col(Service.id) == last.c.service_id)
        .join(Client, col(Client.id) == last.c.client_id)
        .where(
            interval.is_not(None),
            col(Service.active) == true(),
            due_epoch <= int(now.timestamp()),
            col(Client.marketing_consent) == true(),
            col(Client.merged_into_id).is_(None),
            ~_booked(last.c.client_id, now),
            ~_nudged(last.c.client_id, now),
            ~exists().where(col(ScheduledMessage.key) == key),
        )
        .subquery("candidates")
    )
    query = (
        select(
            candidates.c.client_id,
            candidates.c.service_id,
            candidates.c.last_at,
            candidates.c.visit_epoch,
        )
        .where(candidates.c.rank == 1)
        .order_by(candidates.c.due_epoch, candidates.c.client_id)
        .limit(limit)
    )
    found = (await session.exec(query)).all()  # type: ignore[call-overload]
    return [
        Due(
            client_id=client_id,
            service_id=service_id,
            last_visit=aware(last_at).astimezone(UTC),  # type: ignore[union-attr]
            key=reengage_key(client_id, service_id, int(epoch)),
        )
        for client_id, service_id, last_at, epoch in found
    ]


async def still_due(
    session: AsyncSession,
    *,
    client: Client,
    service: Service | None,
    last_visit: str | None,
    now: datetime,
) -> str:
    """Why a planned re-engagement message must not go out now ("" when it may)."""
    if client.merged_into_id is not None:
        return "the client card was merged into another"
    if not client.marketing_consent:
        return "the client has not agreed to marketing messages"
    if service is None or not service.active or service.return_interval_days is None:
        return "the service is no longer offered for re-engagement"
    assert client.id is not None and service.id is not None
    if await has_upcoming(session, client_id=client.id, now=now):
        return "the client has booked"
    latest = await last_visit_of(session, client_id=client.id, service_id=service.id, now=now)
    if last_visit and latest is not None and latest > datetime.fromisoformat(last_visit):
        return "the client has visited since"
    return ""


async def has_upcoming(session: AsyncSession, *, client_id: int, now: datetime) -> bool:
    query = select(literal(1)).where(_booked(literal(client_id), now.astimezone(UTC)))
    return (await session.exec(query)).first() is not None  # type: ignore[call-overload]


async def last_visit_of(
    session: AsyncSession, *, client_id: int, service_id: int, now: datetime
) -> datetime | None:
    """The start of the client's last done visit of the service (UTC), if any."""
    query = select(func.max(col(Appointment.start_at))).where(
        Appointment.client_id == client_id,
        Appointment.service_id == service_id,
        Appointment.status == "done",
        col(Appointment.start_at) <= now.astimezone(UTC),
    )
    value = (await session.exec(query)).first()  # type: ignore[call-overload]
    return aware(value).astimezone(UTC) if value is not None else None  # type: ignore[union-attr]


def _booked(client_id: Any, now: datetime) -> Any:
    """A live appointment ahead (or just past and not closed yet) for the client."""
    return exists().where(
        col(Appointment.client_id) == client_id,
        col(Appointment.status).in_(LIVE),
        col(Appointment.start_at) > now - UNCLOSED,
    )


def _nudged(client_id: Any, now: datetime) -> Any:
    """A re-engagement message for the client still to go, or sent within the spacing."""
    return exists().where(
        col(ScheduledMessage.client_id) == client_id,
        ScheduledMessage.kind == KIND,
        (col(ScheduledMessage.status).in_(scheduled.OPEN))
        | ((ScheduledMessage.status == "sent") & (col(ScheduledMessage.sent_at) >= now - SPACING)),
    )


def _epoch_seconds(column: Any, dialect: str) -> Any:
    """Whole epoch seconds of a stored UTC datetime, as an integer, on either database."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return cast(func.floor(func.extract("epoch", column)), BigInteger)
