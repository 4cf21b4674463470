"""Free start times for a service: working hours, breaks, time off, appointments and buffers.

Times are worked out in epoch seconds for speed; the salon's days and hours are wall-clock
times in its zone, so a master who works 10:00-19:00 does so on both sides of a daylight-saving
change. Local times that do not exist (the skipped hour in spring) are never offered; in the
repeated hour in autumn the first occurrence is used.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import Rules
from crm_store.catalog import DayHours, Offer, offers_for, time_off, working_hours
from crm_store.models import Appointment

# Appointments in these statuses hold the master's time (a cancelled one does not).
HOLDING = ("booked", "confirmed", "done", "no_show")


@dataclass(frozen=True, order=True)
class Slot:
    start: datetime  # UTC
    master_id: int
    end: datetime  # when the service ends; the buffer after it is not included

    def local(self, tz: ZoneInfo) -> datetime:
        return self.start.astimezone(tz)


class Intervals:
    """Sorted, merged [start, end) intervals in epoch seconds, with an overlap test."""

    def __init__(self, spans: Iterable[tuple[float, float]] = ()) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(s for s in spans if s[0] < s[1]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def overlaps(self, start: float, end: float) -> bool:
        i = bisect_right(self.ends, start)
        return i < len(self.starts) and self.starts[i] < end

    def __bool__(self) -> bool:
        return bool(self.starts)


class LocalClock:
    """Wall-clock minutes of a local day → epoch seconds, cached across masters."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._cache: dict[tuple[date, int], float | None] = {}

    def at(self, day: date, minute: int) -> float | None:
        """None for a time the clocks skip over."""
        key = (day, minute)
        if key not in self._cache:
            wall = datetime.combine(day, time(), self.tz) + timedelta(minutes=minute)
            real = wall.astimezone(UTC)
            exists = real.astimezone(self.tz).replace(tzinfo=None) == wall.replace(tzinfo=None)
            self._cache[key] = real.timestamp() if exists else None
        return self._cache[key]

    def bound(self, day: date, minute: int) -> float:
        """Like `at`, but a skipped time still gives an instant: the end of the gap."""
        wall = datetime.combine(day, time(), self.tz) + timedelta(minutes=minute)
        return wall.timestamp()

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), self.tz).astimezone(UTC)


def epoch(value: datetime) -> float:
    # SQLite gives stored UTC values back naive; `timestamp()` would read them as local time.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def day_starts(
    hours: DayHours,
    day: date,
    *,
    clock: LocalClock,
    step_min: int,
    duration_s: float,
    buffer_s: float,
    absent: Intervals,
    busy: Intervals,
    earliest: float,
    latest: float,
) -> Iterator[float]:
    """Start times on one day: the service fits the hours and avoids breaks and time off; the
    service and the buffer after it avoid other appointments (the buffer may run past closing)."""
    work_end = clock.bound(day, hours.end_min)
    breaks = Intervals((clock.bound(day, a), clock.bound(day, b)) for a, b in hours.breaks)
    first = -(-hours.start_min // step_min) * step_min
    for minute in range(first, hours.end_min, step_min):
        start = clock.at(day, minute)
        if start is None or start < earliest:
            continue
        end = start + duration_s
        if start >= latest or end > work_end:
            break
        if breaks.overlaps(start, end) or absent.overlaps(start, end):
            continue
        if busy.overlaps(start, end + buffer_s):
            continue
        yield start


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def busy_times(
    session: AsyncSession,
    master_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    ignore_appointment: int | None = None,
) -> dict[int, list[tuple[float, float]]]:
    """Each master's held time (appointment plus buffer) overlapping [start, end)."""
    query = select(Appointment.master_id, Appointment.start_at, Appointment.block_end_at).where(
        col(Appointment.master_id).in_(list(master_ids)),
        col(Appointment.status).in_(HOLDING),
        col(Appointment.start_at) < end,
        col(Appointment.block_end_at) > start,
    )
    if ignore_appointment is not None:
        query = query.where(col(Appointment.id) != ignore_appointment)
    busy: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for master_id, begins, ends in (await session.exec(query)).all():
        busy[master_id].append((epoch(begins), epoch(ends)))
    return busy


async def find_slots(
    session: AsyncSession,
    *,
    service_id: int,
    rules: Rules,
    first_day: date,
    last_day: date,
    master_id: int | None = None,
    earliest: datetime | None = None,
    latest: datetime | None = None,
    ignore_appointment: int | None = None,
    ignore_busy: bool = False,
) -> list[Slot]:
    """Free starts between two local dates (inclusive) for one master, or for any master.

    For "any master" (`master_id=None`) each time appears once, with the master of least
    booked time that day (ties go to the lower id). `earliest`/`latest` bound the starts
    (a client's booking window: `rules.window(now)`); `ignore_appointment` leaves one
    appointment out (rescheduling it); `ignore_busy` disregards appointments altogether.
    """
    offers = await offers_for(session, service_id, None if master_id is None else [master_id])
    if not offers or last_day < first_day:
        return []
    clock = LocalClock(rules.tz)
    range_start = clock.midnight(first_day)
    range_end = clock.midnight(last_day + timedelta(days=1))
    lo = max(epoch(range_start), epoch(earliest) if earliest else float("-inf"))
    hi = min(epoch(range_end), epoch(latest) if latest else float("inf"))
    if lo >= hi:
        return []
    ids = [offer.master_id for offer in offers]
    week = await working_hours(session, ids)
    absent = await time_off(session, ids, range_start, range_end)
    # A buffer can run past midnight, so look a day further for what it might overlap.
    busy = (
        {}
        if ignore_busy
        else await busy_times(
            session,
            ids,
            range_start,
            range_end + timedelta(days=1),
            ignore_appointment=ignore_appointment,
        )
    )
    return plan_slots(
        offers,
        week=week,
        absent=absent,
        busy=busy,
        clock=clock,
        step_min=rules.step_min,
        span=days(first_day, last_day),
        earliest=lo,
        latest=hi,
        any_master=master_id is None,
    )


def plan_slots(
    offers: Sequence[Offer],
    *,
    week: dict[int, dict[int, DayHours]],
    absent: dict[int, list[tuple[datetime, datetime]]],
    busy: dict[int, list[tuple[float, float]]],
    clock: LocalClock,
    step_min: int,
    span: Sequence[date],
    earliest: float,
    latest: float,
    any_master: bool,
) -> list[Slot]:
    """The pure part of `find_slots`: no database, everything already loaded."""
    boundaries = [epoch(clock.midnight(d)) for d in span]
    best: dict[float, tuple[float, int, float]] = {}  # start → (load that day, master, end)
    found: list[Slot] = []
    for offer in offers:
        hours_of = week.get(offer.master_id, {})
        held = busy.get(offer.master_id, [])
        load = _load_per_day(held, boundaries) if any_master else []
        absent_spans = Intervals((epoch(a), epoch(b)) for a, b in absent.get(offer.master_id, []))
        taken = Intervals(held)
        for index, day in enumerate(span):
            hours = hours_of.get(day.weekday())
            if hours is None:
                continue
            for start in day_starts(
                hours,
                day,
                clock=clock,
                step_min=step_min,
                duration_s=offer.duration_min * 60,
                buffer_s=offer.buffer_min * 60,
                absent=absent_spans,
                busy=taken,
                earliest=earliest,
                latest=latest,
            ):
                end = start + offer.duration_min * 60
                if not any_master:
                    found.append(_slot(start, offer.master_id, end))
                    continue
                candidate = (load[index], offer.master_id, end)
                if start not in best or candidate < best[start]:
                    best[start] = candidate
    if any_master:
        found = [_slot(start, m, end) for start, (_, m, end) in best.items()]
    found.sort()
    return found


def _load_per_day(held: Sequence[tuple[float, float]], boundaries: Sequence[float]) -> list[float]:
    """Booked seconds per day of the span, an appointment counted on the day it starts."""
    load = [0.0] * len(boundaries)
    for start, end in held:
        index = bisect_right(boundaries, start) - 1
        if 0 <= index < len(load):
            load[index] += end - start
    return load


def _slot(start: float, master_id: int, end: float) -> Slot:
    return Slot(
        start=datetime.fromtimestamp(start, UTC),
        master_id=master_id,
        end=datetime.fromtimestamp(end, UTC),
    )
