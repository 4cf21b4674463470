"""Scheduled messages in the store: planning them once, claiming them once, closing them.

A row is one message to one client at `due_at` (crm_store.models.ScheduledMessage). Several
hub processes may run the scheduler against one database; what keeps them from sending a row
twice is here: a row is claimed in a write transaction (PostgreSQL: `FOR UPDATE SKIP LOCKED`,
so two schedulers take different rows; SQLite: every write transaction is `BEGIN IMMEDIATE`,
one writer at a time) and carries a lease (`claimed_until`). A scheduler that dies with a
claimed row leaves it to be claimed again when the lease runs out; the outbound message it
becomes has the row's key, so the retry stores and sends it once.

The life of a row: pending → (routed: `channel` set) → sending → sent | failed | skipped;
`cancelled` when what it was about changed (an appointment moved or cancelled, a broadcast
stopped). A `sent` row whose message failed goes back to pending with the route it tried
in `tried`, so it fails over to the client's next channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import insert_for
from crm_store.models import SCHEDULED_KINDS, Message, ScheduledMessage
from crm_store.timeutil import as_utc

# Statuses a row can still leave on its own; the others are final.
OPEN = ("pending", "sending")
FINAL = ("sent", "failed", "skipped", "cancelled")
# How many times one row is tried (claims, each a route or a crash) before it is given up.
MAX_ATTEMPTS = 6


@dataclass(frozen=True)
class Planned:
    """A row to plan; `key` decides whether it exists already."""

    key: str
    kind: str
    client_id: int
    due_at: datetime
    urgent: bool = False
    appointment_id: int | None = None
    broadcast_id: int | None = None
    service_id: int | None = None
    payload: dict[str, Any] | None = None


async def enqueue(session: AsyncSession, rows: Iterable[Planned], *, now: datetime) -> int:
    """Insert rows whose key is new; an existing key is left alone. How many were new."""
    values = [_values(row, now) for row in rows]
    if not values:
        return 0
    insert = insert_for(session)
    table = ScheduledMessage.__table__  # type: ignore[attr-defined]
    created = 0
    # Bounded statements: PostgreSQL allows 32k bind parameters in one.
    for start in range(0, len(values), 1000):
        chunk = values[start : start + 1000]
        statement = insert(table).values(chunk).on_conflict_do_nothing(index_elements=["key"])
        result = await session.exec(statement)  # type: ignore[call-overload]
        created += max(result.rowcount or 0, 0)
    return created


def _values(row: Planned, now: datetime) -> dict[str, Any]:
    if row.kind not in SCHEDULED_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SCHEDULED_KINDS)}")
    now = as_utc(now)
    return {
        "key": row.key,
        "kind": row.kind,
        "client_id": row.client_id,
        "appointment_id": row.appointment_id,
        "broadcast_id": row.broadcast_id,
        "service_id": row.service_id,
        "due_at": as_utc(row.due_at),
        "urgent": row.urgent,
        "status": "pending",
        "attempts": 0,
        "payload": row.payload or {},
        "tried": [],
        "created_at": now,
        "updated_at": now,
    }


async def cancel_open(
    session: AsyncSession,
    *,
    now: datetime,
    reason: str,
    appointment_id: int | None = None,
    broadcast_id: int | None = None,
) -> int:
    """Drop what has not gone yet for an appointment or a broadcast. How many were dropped.

    A row being sent right now (`sending`) is dropped too: the sender re-reads the row before
    it sends and sends nothing for a cancelled one.
    """
    now = as_utc(now)
    where = [col(ScheduledMessage.status).in_(OPEN)]
    if appointment_id is not None:
        where.append(col(ScheduledMessage.appointment_id) == appointment_id)
    elif broadcast_id is not None:
        where.append(col(ScheduledMessage.broadcast_id) == broadcast_id)
    else:
        raise ValueError("cancel_open needs an appointment or a broadcast")
    result = await session.exec(  # type: ignore[call-overload]
        update(ScheduledMessage)
        .where(*where)
        .values(status="cancelled", last_error=reason[:500], updated_at=now)
    )
    return max(result.rowcount or 0, 0)


async def due_unrouted(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[ScheduledMessage]:
    """Due rows that have no channel yet, locked for this transaction (skipping locked ones)."""
    now = as_utc(now)
    query = (
        select(ScheduledMessage)
        .where(
            ScheduledMessage.status == "pending",
            col(ScheduledMessage.channel).is_(None),
            col(ScheduledMessage.due_at) <= now,
        )
        .order_by(col(ScheduledMessage.due_at), col(ScheduledMessage.id))
        .limit(limit)
    )
    return list((await session.exec(_skip_locked(session, query))).all())


async def claim(
    session: AsyncSession,
    *,
    channel: str,
    now: datetime,
    worker: str,
    lease: timedelta,
    limit: int,
) -> list[ScheduledMessage]:
    """Claim up to `limit` due rows routed to `channel`: theirs to send until the lease ends.

    A row whose lease ran out (its scheduler died mid-send) is claimed again.
    """
    now = as_utc(now)
    if limit <= 0:
        return []
    query = (
        select(ScheduledMessage)
        .where(
            ScheduledMessage.channel == channel,
            col(ScheduledMessage.due_at) <= now,
            or_(
                ScheduledMessage.status == "pending",
                and_(
                    ScheduledMessage.status == "sending",
                    col(ScheduledMessage.claimed_until) < now,
                ),
            ),
        )
        .order_by(col(ScheduledMessage.due_at), col(ScheduledMessage.id))
        .limit(limit)
    )
    rows = list((await session.exec(_skip_locked(session, query))).all())
    if not rows:
        return rows
    # One statement for the batch (the rows are locked by the select above).
    await session.exec(  # type: ignore[call-overload]
        update(ScheduledMessage)
        .where(col(ScheduledMessage.id).in_([r.id for r in rows]))
        .values(
            status="sending",
            claimed_by=worker,
            claimed_until=now + lease,
            attempts=ScheduledMessage.attempts + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    for row in rows:
        session.expunge(row)  # what the caller reads is ids; the rows are re-read to send
    return rows


async def still_mine(session: AsyncSession, row_id: int, worker: str) -> ScheduledMessage | None:
    """The row, locked, if this worker still holds its claim (not cancelled, not re-claimed)."""
    query = select(ScheduledMessage).where(ScheduledMessage.id == row_id)
    row = (await session.exec(_skip_locked(session, query, skip=False))).first()
    if row is None or row.status != "sending" or row.claimed_by != worker:
        return None
    return row


async def still_mine_many(
    session: AsyncSession, row_ids: Sequence[int], worker: str
) -> dict[int, ScheduledMessage]:
    """`still_mine` for a batch in one statement: the rows, locked, this worker still holds,
    by id (a row cancelled or re-claimed meanwhile is left out)."""
    if not row_ids:
        return {}
    query = select(ScheduledMessage).where(
        col(ScheduledMessage.id).in_(list(row_ids)),
        ScheduledMessage.status == "sending",
        ScheduledMessage.claimed_by == worker,
    )
    rows = (await session.exec(_skip_locked(session, query, skip=False))).all()
    return {row.id: row for row in rows if row.id is not None}


async def mark_sent_many(
    session: AsyncSession, row_ids: Sequence[int], worker: str, *, now: datetime
) -> int:
    """`mark_sent` for a batch in one statement; how many rows this worker still held."""
    if not row_ids:
        return 0
    now = as_utc(now)
    result = await session.exec(  # type: ignore[call-overload]
        update(ScheduledMessage)
        .where(
            col(ScheduledMessage.id).in_(list(row_ids)),
            ScheduledMessage.status == "sending",
            ScheduledMessage.claimed_by == worker,
        )
        .values(status="sent", claimed_by=None, claimed_until=None, updated_at=now, sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return max(result.rowcount or 0, 0)


async def mark_sent(session: AsyncSession, row_id: int, worker: str, *, now: datetime) -> bool:
    """Close a claimed row as sent, if this worker still holds it; one statement."""
    now = as_utc(now)
    result = await session.exec(  # type: ignore[call-overload]
        update(ScheduledMessage)
        .where(
            ScheduledMessage.id == row_id,
            ScheduledMessage.status == "sending",
            ScheduledMessage.claimed_by == worker,
        )
        .values(status="sent", claimed_by=None, claimed_until=None, updated_at=now, sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def close(
    session: AsyncSession,
    row: ScheduledMessage,
    status: str,
    *,
    now: datetime,
    error: str | None = None,
) -> None:
    """End a claimed row: sent, failed or skipped (with why)."""
    now = as_utc(now)
    if status not in FINAL:
        raise ValueError(f"status must be one of {', '.join(FINAL)}")
    row.status = status
    row.claimed_by = None
    row.claimed_until = None
    row.updated_at = now
    if error is not None:
        row.last_error = error[:500]
    if status == "sent":
        row.sent_at = now
    session.add(row)


def postpone(
    session: AsyncSession,
    row: ScheduledMessage,
    until: datetime,
    *,
    now: datetime,
    reason: str,
    reroute: bool = False,
) -> None:
    """Back to pending for later (quiet hours, a channel's limit); not counted as an attempt
    unless it was a real one. `reroute` forgets the channel so the row is routed again."""
    now = as_utc(now)
    until = as_utc(until)
    row.status = "pending"
    row.due_at = until
    row.claimed_by = None
    row.claimed_until = None
    row.updated_at = now
    row.last_error = reason[:500]
    if reroute:
        row.channel = None
        row.conversation_id = None
    session.add(row)


async def failed_over(session: AsyncSession, *, now: datetime, limit: int = 500) -> int:
    """Rows whose sent message failed go back to pending, to be routed past what failed."""
    now = as_utc(now)
    query = (
        select(ScheduledMessage, Message.error)
        .join(Message, col(Message.public_id) == col(ScheduledMessage.message_id))
        .where(ScheduledMessage.status == "sent", Message.status == "failed")
        .limit(limit)
    )
    moved = 0
    for row, error in (await session.exec(_skip_locked(session, query))).all():
        route = route_of(row)
        if route and route not in row.tried:
            row.tried = [*row.tried, route]
        row.message_id = None
        postpone(
            session,
            row,
            now,
            now=now,
            reason=f"{row.channel}: {error or 'failed'}",
            reroute=True,
        )
        moved += 1
    await session.flush()
    return moved


def route_of(row: ScheduledMessage) -> str | None:
    """The route a row took, as kept in `tried` ("channel/inbox/chat")."""
    return row.payload.get("route") if row.payload else None


def set_route(row: ScheduledMessage, channel: str, inbox: str, chat_id: str) -> None:
    row.channel = channel
    # A new dict: the JSON column notices assignment, not changes in place.
    row.payload = {**(row.payload or {}), "route": f"{channel}/{inbox}/{chat_id}"}


async def counts(
    session: AsyncSession, *, broadcast_id: int | None = None, kind: str | None = None
) -> dict[str, int]:
    """How many rows are in each status (for a broadcast's progress, or a kind)."""
    query = select(ScheduledMessage.status, func.count()).group_by(ScheduledMessage.status)
    if broadcast_id is not None:
        query = query.where(ScheduledMessage.broadcast_id == broadcast_id)
    if kind is not None:
        query = query.where(ScheduledMessage.kind == kind)
    found = {status: int(n) for status, n in (await session.exec(query)).all()}
    return {status: found.get(status, 0) for status in (*OPEN, *FINAL)}


async def open_for(
    session: AsyncSession, *, appointment_ids: Sequence[int]
) -> list[ScheduledMessage]:
    if not appointment_ids:
        return []
    query = select(ScheduledMessage).where(
        col(ScheduledMessage.appointment_id).in_(appointment_ids),
        col(ScheduledMessage.status).in_(OPEN),
    )
    return list((await session.exec(query)).all())


def _skip_locked(session: AsyncSession, query: Any, *, skip: bool = True) -> Any:
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        # of=: lock only the scheduled rows, not the joined message.
        return query.with_for_update(skip_locked=skip, of=ScheduledMessage)
    return query
