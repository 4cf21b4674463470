"""Booking, moving, cancelling and closing appointments, each change in the audit log.

Two bookings of one master's time can't both succeed: the functions here run inside the
caller's transaction, lock the masters concerned (PostgreSQL: their staff rows, FOR UPDATE;
SQLite: every write transaction is BEGIN IMMEDIATE, so writers queue) and re-check the time
before writing. Below that, the database refuses overlaps itself (an exclusion constraint on
PostgreSQL, triggers on SQLite), so even a writer that skips these functions can't double-book.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit, scheduled
from crm_store.business import Rules
from crm_store.catalog import Offer, offers_for
from crm_store.models import APPOINTMENT_SOURCES, Appointment, Client, Service, Staff
from crm_store.reminders import plan_reminders, replan_reminders
from crm_store.slots import Slot, find_slots
from crm_store.timeutil import aware

ALTERNATIVES = 5
# Where to look for alternatives to a refused time: a day before it, a week after.
SEARCH_BEFORE = timedelta(days=1)
SEARCH_AFTER = timedelta(days=7)
LIVE = ("booked", "confirmed")
# Which status may follow which; a finished visit may be corrected between done and no-show.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "booked": ("confirmed", "cancelled", "done", "no_show"),
    "confirmed": ("booked", "cancelled", "done", "no_show"),
    "done": ("no_show",),
    "no_show": ("done",),
    "cancelled": (),
}

REASONS = {
    "too_soon": "bookings open {lead} minutes ahead; that time is too soon",
    "too_far": "bookings open at most {horizon} days ahead; that time is too far",
    "past": "that time has passed",
    "not_offered": "the master does not do this service",
    "off_grid": "appointments start on the {step}-minute grid",
    "not_working": "the master does not work then (hours, break or time off)",
    "taken": "that time is already booked",
}


@dataclass(frozen=True)
class Author:
    """Who makes a change, for the audit log."""

    actor: audit.Actor
    staff_id: int | None = None


class AppointmentError(ValueError):
    """A request that can't be carried out as asked; nothing was written."""

    status = 400


class NotFound(AppointmentError):
    status = 404


class SlotUnavailable(AppointmentError):
    """The time asked for is not free: why, and the nearest free times instead."""

    status = 409

    def __init__(self, reason: str, message: str, alternatives: list[Slot]) -> None:
        super().__init__(message)
        self.reason = reason
        self.alternatives = alternatives


@dataclass
class Request:
    service_id: int
    start: datetime
    master_id: int | None = None
    ignore: int | None = None  # the appointment being moved
    client_window: bool = True  # lead time and horizon apply (clients and the bot)


async def book(
    session: AsyncSession,
    *,
    client_id: int,
    service_id: int,
    start: datetime,
    rules: Rules,
    now: datetime,
    author: Author,
    master_id: int | None = None,
    source: str = "staff",
    notes: str = "",
    client_window: bool = True,
) -> Appointment:
    """Book `start` with a master (or the least-loaded free one); raises SlotUnavailable."""
    if source not in APPOINTMENT_SOURCES:
        raise AppointmentError(f"source must be one of {', '.join(APPOINTMENT_SOURCES)}")
    client = await session.get(Client, client_id)
    if client is None or client.merged_into_id is not None:
        raise NotFound(f"no client with id {client_id}")
    request = Request(service_id, _utc(start), master_id, client_window=client_window)
    offer = await _claim(session, request, rules, now)
    appointment = Appointment(
        client_id=client_id,
        master_id=offer.master_id,
        service_id=service_id,
        start_at=request.start,
        end_at=request.start + timedelta(minutes=offer.duration_min),
        block_end_at=request.start + timedelta(minutes=offer.duration_min + offer.buffer_min),
        source=source,
        price_minor=offer.price_minor,
        notes=notes,
        created_by_staff_id=author.staff_id,
        created_at=now,
        updated_at=now,
    )
    await _write(session, appointment, request, rules, now)
    _audit(session, author, appointment, "book", _snapshot(appointment))
    await plan_reminders(session, appointment, rules, now=now)
    return appointment


async def reschedule(
    session: AsyncSession,
    appointment_id: int,
    *,
    start: datetime,
    rules: Rules,
    now: datetime,
    author: Author,
    master_id: int | None = None,
    any_master: bool = False,
    client_window: bool = True,
) -> Appointment:
    """Move to a new time (and master, or any master); the old time is free again."""
    appointment = await _live(session, appointment_id, "move")
    target = None if any_master else (master_id or appointment.master_id)
    request = Request(
        appointment.service_id,
        _utc(start),
        target,
        ignore=appointment_id,
        client_window=client_window,
    )
    offer = await _claim(session, request, rules, now, extra_locks=[appointment.master_id])
    before = _snapshot(appointment)
    appointment.master_id = offer.master_id
    appointment.start_at = request.start
    appointment.end_at = request.start + timedelta(minutes=offer.duration_min)
    appointment.block_end_at = appointment.end_at + timedelta(minutes=offer.buffer_min)
    appointment.status = "booked"  # a confirmation was for the old time
    appointment.updated_at = now
    await _write(session, appointment, request, rules, now)
    _audit(session, author, appointment, "reschedule", _diff(before, _snapshot(appointment)))
    await replan_reminders(session, appointment, rules, now=now)
    return appointment


async def cancel(
    session: AsyncSession,
    appointment_id: int,
    *,
    now: datetime,
    author: Author,
    reason: str = "",
) -> Appointment:
    return await set_status(
        session, appointment_id, "cancelled", now=now, author=author, reason=reason
    )


async def set_status(
    session: AsyncSession,
    appointment_id: int,
    status: str,
    *,
    now: datetime,
    author: Author,
    reason: str = "",
) -> Appointment:
    """Confirm, cancel, or close as done / no-show."""
    appointment = await _get(session, appointment_id)
    if status not in TRANSITIONS:
        raise AppointmentError(f"status must be one of {', '.join(TRANSITIONS)}")
    if status == appointment.status:
        return appointment
    if status not in TRANSITIONS[appointment.status]:
        raise AppointmentError(f"a {appointment.status} appointment can't become {status}")
    if status in ("done", "no_show") and aware(appointment.start_at) > now:  # type: ignore[operator]
        raise AppointmentError(f"an appointment that has not started can't be marked {status}")
    before = appointment.status
    appointment.status = status
    appointment.updated_at = now
    session.add(appointment)
    if status == "done":
        await _visited(session, appointment)
    await session.flush()
    if status in ("cancelled", "done", "no_show"):
        # Nothing more to remind of; a confirmation keeps the reminders still ahead.
        await scheduled.cancel_open(
            session, now=now, reason=f"appointment {status}", appointment_id=appointment.id
        )
    changes: dict[str, Any] = {"status": [before, status]}
    if reason:
        changes["reason"] = reason
    _audit(session, author, appointment, status, changes)
    return appointment


async def _visited(session: AsyncSession, appointment: Appointment) -> None:
    client = await session.get(Client, appointment.client_id)
    if client is None:
        return
    visit = aware(appointment.start_at)
    last = aware(client.last_visit_at)
    if last is None or (visit is not None and visit > last):
        client.last_visit_at = visit
        session.add(client)


async def list_appointments(
    session: AsyncSession,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    master_id: int | None = None,
    client_id: int | None = None,
    statuses: tuple[str, ...] | None = None,
    limit: int = 500,
) -> list[Appointment]:
    query = select(Appointment).order_by(col(Appointment.start_at), col(Appointment.id))
    if start is not None:
        query = query.where(col(Appointment.start_at) >= _utc(start))
    if end is not None:
        query = query.where(col(Appointment.start_at) < _utc(end))
    if master_id is not None:
        query = query.where(col(Appointment.master_id) == master_id)
    if client_id is not None:
        query = query.where(col(Appointment.client_id) == client_id)
    if statuses:
        query = query.where(col(Appointment.status).in_(statuses))
    return list((await session.exec(query.limit(limit))).all())


# The check and the write ----------------------------------------------------------------


async def _claim(
    session: AsyncSession,
    request: Request,
    rules: Rules,
    now: datetime,
    extra_locks: list[int] | None = None,
) -> Offer:
    """Lock the masters who could take the request and pick the one who will."""
    if await session.get(Service, request.service_id) is None:
        raise NotFound(f"no service with id {request.service_id}")
    if request.master_id is not None:
        staff = await session.get(Staff, request.master_id)
        if staff is None or staff.role != "master":
            raise NotFound(f"no master with id {request.master_id}")
    offers = await offers_for(
        session, request.service_id, None if request.master_id is None else [request.master_id]
    )
    await _lock(session, [o.master_id for o in offers] + (extra_locks or []))
    reason = _window_reason(request, rules, now)
    chosen = None
    if reason is None:
        reason, chosen = await _free_master(session, request, rules, offers)
    if chosen is None:
        raise await _refusal(session, reason or "taken", request, rules, now)
    return next(o for o in offers if o.master_id == chosen)


async def _lock(session: AsyncSession, master_ids: list[int]) -> None:
    if not master_ids or session.get_bind().dialect.name != "postgresql":
        return  # SQLite: the transaction began IMMEDIATE and holds the database's write lock
    await session.exec(
        select(Staff.id)
        .where(col(Staff.id).in_(sorted(set(master_ids))))
        .order_by(col(Staff.id))
        .with_for_update()
    )


def _window_reason(request: Request, rules: Rules, now: datetime) -> str | None:
    if request.start < now:
        return "past"
    if not request.client_window:
        return None
    earliest, latest = rules.window(now)
    if request.start < earliest:
        return "too_soon"
    if request.start >= latest:
        return "too_far"
    return None


async def _free_master(
    session: AsyncSession, request: Request, rules: Rules, offers: list[Offer]
) -> tuple[str | None, int | None]:
    """(None, the master who is free then), or (why nobody is, None)."""
    if not offers:
        return "not_offered", None
    local = request.start.astimezone(rules.tz)
    if (local.hour * 60 + local.minute) % rules.step_min or local.second or local.microsecond:
        return "off_grid", None
    day = local.date()
    common = {
        "service_id": request.service_id,
        "rules": rules,
        "first_day": day,
        "last_day": day,
        "master_id": request.master_id,
        "ignore_appointment": request.ignore,
    }
    free = await find_slots(session, **common)
    match = next((s for s in free if s.start == request.start), None)
    if match is not None:
        return None, match.master_id
    unbooked = await find_slots(session, ignore_busy=True, **common)
    return ("taken" if any(s.start == request.start for s in unbooked) else "not_working"), None


async def _write(
    session: AsyncSession, appointment: Appointment, request: Request, rules: Rules, now: datetime
) -> None:
    """Flush in a savepoint: if the database itself refuses an overlap, say so cleanly."""
    try:
        async with session.begin_nested():
            session.add(appointment)
            await session.flush()
    except IntegrityError as exc:
        if "overlap" not in str(exc.orig):
            raise
        if appointment in session:
            await session.refresh(appointment)
        raise await _refusal(session, "taken", request, rules, now) from None


async def _refusal(
    session: AsyncSession, reason: str, request: Request, rules: Rules, now: datetime
) -> SlotUnavailable:
    message = REASONS[reason].format(
        lead=int(rules.lead.total_seconds() // 60),
        horizon=rules.horizon.days,
        step=rules.step_min,
    )
    alternatives = await nearest_free(session, request, rules, now)
    return SlotUnavailable(reason, message, alternatives)


async def nearest_free(
    session: AsyncSession, request: Request, rules: Rules, now: datetime, count: int = ALTERNATIVES
) -> list[Slot]:
    """The free times closest to the one asked for: the same master first, then anyone."""
    earliest, latest = rules.window(now) if request.client_window else (now, None)
    around = request.start.astimezone(rules.tz).date()
    common = {
        "service_id": request.service_id,
        "rules": rules,
        "first_day": around - SEARCH_BEFORE,
        "last_day": around + SEARCH_AFTER,
        "earliest": earliest,
        "latest": latest,
        "ignore_appointment": request.ignore,
    }
    free = await find_slots(session, master_id=request.master_id, **common)
    if not free and request.master_id is not None:
        free = await find_slots(session, master_id=None, **common)
    free.sort(key=lambda s: (abs((s.start - request.start).total_seconds()), s.start))
    return sorted(free[:count])


async def _live(session: AsyncSession, appointment_id: int, doing: str) -> Appointment:
    appointment = await _get(session, appointment_id)
    if appointment.status not in LIVE:
        raise AppointmentError(f"a {appointment.status} appointment can't {doing}")
    return appointment


async def _get(session: AsyncSession, appointment_id: int) -> Appointment:
    appointment = await session.get(Appointment, appointment_id)
    if appointment is None:
        raise NotFound(f"no appointment with id {appointment_id}")
    return appointment


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise AppointmentError("times must carry a UTC offset")
    # SQLite stores the wall time without the offset: only UTC values compare correctly.
    return value.astimezone(UTC)


def _snapshot(appointment: Appointment) -> dict[str, Any]:
    return {
        "client_id": appointment.client_id,
        "master_id": appointment.master_id,
        "service_id": appointment.service_id,
        "start_at": aware(appointment.start_at),
        "end_at": aware(appointment.end_at),
        "status": appointment.status,
        "source": appointment.source,
        "price_minor": appointment.price_minor,
    }


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: [before[k], after[k]] for k in after if before.get(k) != after[k]}


def _audit(
    session: AsyncSession,
    author: Author,
    appointment: Appointment,
    action: str,
    changes: dict[str, Any],
) -> None:
    audit.record(
        session,
        actor=author.actor,
        staff_id=author.staff_id,
        entity="appointment",
        entity_id=appointment.id,  # type: ignore[arg-type]
        action=action,
        changes=changes,
    )
