"""Free start times for a service: working hours, breaks, time off, appointments and buffers.

Times are worked out in epoch seconds for speed; the salon's days and hours are wall-clock
times in its zone, so a master who works 10:00-19:00 does so on both sides of a daylight-saving
change. Local times that do not exist (the skipped hour in spring) are never offered; in the
repeated hour in autumn the first occurrence is used.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import Rules
from crm_store.catalog import DayHours, Offer, offers_for, time_off, working_hours
from crm_store.models import Appointment
from crm_store.sqltime import epoch_seconds

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
    """Sorted, merged [start, end) intervals in epoch seconds."""

    def __init__(self, spans: Iterable[tuple[float, float]] = ()) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(s for s in spans if s[0] < s[1]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def subtract_from(self, low: float, high: float) -> list[tuple[float, float]]:
        """[low, high) without these intervals."""
        pieces = []
        i = bisect_right(self.ends, low)
        while i < len(self.starts) and self.starts[i] < high:
            if self.starts[i] > low:
                pieces.append((low, self.starts[i]))
            low = max(low, self.ends[i])
            i += 1
        if low < high:
            pieces.append((low, high))
        return pieces


class LocalClock:
    """The salon's wall clock in epoch seconds, and each day's grid of start times."""

    def __init__(self, tz: ZoneInfo, step_min: int) -> None:
        self.tz = tz
        self.step_min = step_min

    def at(self, day: date, minute: int) -> float:
        """A wall-clock time of `day`; one the clocks skip over lands an offset-change later."""
        return (datetime.combine(day, time(), self.tz) + timedelta(minutes=minute)).timestamp()

    def grid(self, day: date) -> list[float]:
        return _grid(self.tz, self.step_min, day)

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), self.tz).astimezone(UTC)


@lru_cache(maxsize=4096)
def _grid(tz: ZoneInfo, step_min: int, day: date) -> list[float]:
    """Every step of the day from midnight, less the times the clocks skip over."""
    midnight = datetime.combine(day, time(), tz)
    times = []
    for minute in range(0, 24 * 60, step_min):
        wall = midnight + timedelta(minutes=minute)
        real = wall.astimezone(UTC)
        if real.astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
            times.append(real.timestamp())
    return sorted(times)


def epoch(value: datetime) -> float:
    # SQLite gives stored UTC values back naive; `timestamp()` would read them as local time.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def day_starts(
    hours: DayHours,
    day: date,
    *,
    clock: LocalClock,
    duration_s: float,
    buffer_s: float,
    absent: Intervals,
    busy: Intervals,
    earliest: float,
    latest: float,
) -> Iterator[float]:
    """Start times on one day: the service fits the hours and avoids breaks and time off; the
    service and the buffer after it avoid other appointments (the buffer may run past closing).

    Worked out as ranges of allowed starts, then read off the day's grid: the cost grows with
    the appointments and the slots found, not with every step of the day.
    """
    closed = Intervals((clock.at(day, a), clock.at(day, b)) for a, b in hours.breaks)
    work_start, work_end = clock.at(day, hours.start_min), clock.at(day, hours.end_min)
    grid = clock.grid(day)
    for low, high in closed.subtract_from(work_start, work_end):
        for free_low, free_high in absent.subtract_from(low, high):
            # Starts s with [s, s + duration) inside the free span: a closed range.
            first, last = max(free_low, earliest), min(free_high - duration_s, latest - 0.5)
            for start_low, start_high in _avoiding(busy, first, last, duration_s + buffer_s):
                index = bisect_left(grid, start_low)
                while index < len(grid) and grid[index] <= start_high:
                    yield grid[index]
                    index += 1


def _avoiding(
    busy: Intervals, first: float, last: float, hold_s: float
) -> Iterator[tuple[float, float]]:
    """Closed ranges of starts in [first, last] whose [s, s + hold) meets no busy interval:
    a busy [b0, b1) rules out the starts in the open range (b0 - hold, b1)."""
    if first > last:
        return
    i = bisect_right(busy.ends, first)
    while i < len(busy.starts) and busy.starts[i] - hold_s < last:
        if busy.starts[i] - hold_s >= first:
            yield first, busy.starts[i] - hold_s
        first = max(first, busy.ends[i])
        i += 1
    if first <= last:
        yield first, last


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
    connection = await session.connection()
    query = select(
        Appointment.master_id,
        epoch_seconds(col(Appointment.start_at)),
        epoch_seconds(col(Appointment.block_end_at)),
    ).where(
        col(Appointment.master_id).in_(list(master_ids)),
        col(Appointment.status).in_(HOLDING),
        col(Appointment.start_at) < end,
        col(Appointment.block_end_at) > start,
    )
    if ignore_appointment is not None:
        query = query.where(col(Appointment.id) != ignore_appointment)
    busy: dict[int, list[tuple[float, float]]] = defaultdict(list)
    # Core, not ORM, and epoch seconds from the database: this is the hot path of slot search.
    for master_id, begins, ends in (await connection.execute(query)).all():
        busy[master_id].append((begins, ends))
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
    clock = LocalClock(rules.tz, rules.step_min)
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
