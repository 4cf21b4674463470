"""Appointment reminders: when they are due, and keeping them in step with the appointment.

Booking plans an appointment's reminders in the same transaction; moving it drops them and
plans new ones; cancelling or closing it drops them. The sender checks again before it sends
(crm_store.scheduled rows carry the start they were planned for), so a reminder whose
appointment changed under it is never sent.

Times are the salon's wall-clock times: "a day before" a 10:00 appointment is 10:00 the day
before, also across a daylight-saving change; shorter offsets are real elapsed time. A
reminder that would fall in quiet hours goes before they start instead (the evening before),
and of two reminders that end up close together only the later one is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import scheduled
from crm_store.business import Rules
from crm_store.models import Appointment, Service
from crm_store.timeutil import aware

DAY_MIN = 1440
# A reminder moved out of quiet hours goes this long before they start.
BEFORE_QUIET = timedelta(minutes=30)
# Two reminders closer than this are one too many: the later one is kept.
MIN_GAP = timedelta(hours=3)


def in_quiet_hours(moment: datetime, rules: Rules) -> bool:
    minute = _local_minute(moment, rules)
    start, end = rules.quiet_start_min, rules.quiet_end_min
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def quiet_end_after(moment: datetime, rules: Rules) -> datetime:
    """The first moment at or after `moment` outside quiet hours."""
    if not in_quiet_hours(moment, rules):
        return moment
    local = moment.astimezone(rules.tz)
    end = _at(local.date(), rules.quiet_end_min, rules)
    if end <= moment:
        end = _at(local.date() + timedelta(days=1), rules.quiet_end_min, rules)
    return end


def quiet_start_before(moment: datetime, rules: Rules) -> datetime:
    """The start of the quiet hours `moment` is in."""
    local = moment.astimezone(rules.tz)
    start = _at(local.date(), rules.quiet_start_min, rules)
    if start > moment:
        start = _at(local.date() - timedelta(days=1), rules.quiet_start_min, rules)
    return start


def reminder_times(
    start: datetime, offsets: tuple[int, ...] | list[int], rules: Rules, now: datetime
) -> list[tuple[int, datetime]]:
    """(offset, due) of each reminder still worth sending for an appointment at `start`."""
    planned: list[tuple[int, datetime]] = []
    for offset in sorted(set(offsets)):
        due = _before(start, offset, rules)
        if in_quiet_hours(due, rules):
            due = quiet_start_before(due, rules) - BEFORE_QUIET
        if due <= now or due >= start:
            continue
        planned.append((offset, due))
    kept: list[tuple[int, datetime]] = []
    for offset, due in sorted(planned, key=lambda p: p[1], reverse=True):
        if all(abs(other - due) >= MIN_GAP for _, other in kept):
            kept.append((offset, due))
    return sorted(kept, key=lambda p: p[1])


async def plan_reminders(
    session: AsyncSession, appointment: Appointment, rules: Rules, *, now: datetime
) -> int:
    """Plan the reminders of a live appointment; how many were planned."""
    service = await session.get(Service, appointment.service_id)
    offsets = rules.reminder_offsets_min
    if service is not None and service.reminder_offsets_min is not None:
        offsets = tuple(service.reminder_offsets_min)
    start = aware(appointment.start_at)
    changed = aware(appointment.updated_at) or now
    assert start is not None and appointment.id is not None
    # The change's time in the key: moving an appointment away and back plans new rows.
    version = int(changed.timestamp() * 1000)
    rows = [
        scheduled.Planned(
            key=f"reminder:{appointment.id}:{offset}:{version}",
            kind="reminder",
            client_id=appointment.client_id,
            appointment_id=appointment.id,
            due_at=due,
            urgent=True,
            payload={"offset_min": offset, "start_at": start.astimezone(UTC).isoformat()},
        )
        for offset, due in reminder_times(start, offsets, rules, now)
    ]
    return await scheduled.enqueue(session, rows, now=now)


async def replan_reminders(
    session: AsyncSession, appointment: Appointment, rules: Rules | None, *, now: datetime
) -> None:
    """After any change: drop what was planned, plan again if the appointment is ahead."""
    assert appointment.id is not None
    await scheduled.cancel_open(
        session, now=now, reason=f"appointment {appointment.status}", appointment_id=appointment.id
    )
    if rules is not None and appointment.status == "booked":
        await plan_reminders(session, appointment, rules, now=now)


def still_valid(appointment: Appointment | None, planned_start: str | None, now: datetime) -> str:
    """Why a reminder must not go out ("" when it may)."""
    if appointment is None:
        return "the appointment is gone"
    if appointment.status not in ("booked", "confirmed"):
        return f"the appointment is {appointment.status}"
    start = aware(appointment.start_at)
    assert start is not None
    if planned_start is None or datetime.fromisoformat(planned_start) != start:
        return "the appointment was moved"
    if start <= now:
        return "the appointment has started"
    return ""


def _before(start: datetime, offset_min: int, rules: Rules) -> datetime:
    if offset_min % DAY_MIN:
        return start - timedelta(minutes=offset_min)
    local = start.astimezone(rules.tz).replace(tzinfo=None) - timedelta(minutes=offset_min)
    # Through UTC and back: a wall time that does not exist (the spring-forward hour) comes
    # out as the real moment an hour later.
    return local.replace(tzinfo=rules.tz).astimezone(UTC)


def _local_minute(moment: datetime, rules: Rules) -> int:
    local = moment.astimezone(rules.tz)
    return local.hour * 60 + local.minute


def _at(day: object, minute: int, rules: Rules) -> datetime:
    clock = time(minute // 60, minute % 60)
    return datetime.combine(day, clock, tzinfo=rules.tz).astimezone(UTC)  # type: ignore[arg-type]
