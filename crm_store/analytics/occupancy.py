"""How full each master was: booked minutes over working minutes, per day and per ISO week.

Booked minutes come from SQL (appointments grouped by master and local day); working minutes
from the weekly hours, breaks and time off, the same way slot search reads them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics.report import Query, Table, ratio, run
from crm_store.analytics.visits import A, names_of_staff, started_in
from crm_store.catalog import DayHours, time_off, working_hours
from crm_store.models import Staff
from crm_store.slots import Intervals, LocalClock
from crm_store.sqltime import day_of, local_day, local_seconds, seconds_between
from crm_store.timeutil import as_utc

Key = tuple[date, int]  # (local day, master)


async def occupancy(session: AsyncSession, query: Query) -> tuple[Table, Table]:
    booked = await _booked_minutes(session, query)
    masters = set((await run(session, _masters())).scalars()) | {m for _, m in booked}
    working = await _working_minutes(session, query, masters)
    names = await names_of_staff(session, masters)
    days = sorted(k for k in set(booked) | set(working) if working.get(k) or booked.get(k))

    def row(when: str, day: date, master: int, work: float, held: float) -> dict[str, Any]:
        work_min, held_min = round(work), round(held)
        return {
            when: day,
            "master_id": master,
            "master": names.get(master),
            "working_min": work_min,
            "booked_min": held_min,
            "rate": ratio(held_min, work_min),
        }

    weeks: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for day, master in days:
        week = weeks[(day - timedelta(days=day.weekday()), master)]
        week[0] += working.get((day, master), 0.0)
        week[1] += booked.get((day, master), 0.0)
    per_day = [
        row("date", d, m, working.get((d, m), 0.0), booked.get((d, m), 0.0)) for d, m in days
    ]
    per_week = [row("week", w, m, *weeks[(w, m)]) for w, m in sorted(weeks)]
    return Table("occupancy_days", per_day), Table("occupancy_weeks", per_week)


def _masters() -> Any:
    return select(Staff.id).where(Staff.role == "master", Staff.active)  # type: ignore[arg-type]


async def _booked_minutes(session: AsyncSession, query: Query) -> dict[Key, float]:
    day = local_day(local_seconds(A.start_at, query.tz, query.start, query.end))
    result = await run(
        session,
        select(A.master_id, day, func.sum(seconds_between(A.end_at, A.start_at)))
        .where(started_in(query), A.status != "cancelled")
        .group_by(A.master_id, day),
    )
    return {(day_of(d), master): float(s) / 60 for master, d, s in result.all()}


async def _working_minutes(
    session: AsyncSession, query: Query, masters: set[int]
) -> dict[Key, float]:
    if not masters:
        return {}
    week = await working_hours(session, masters)
    absent = await time_off(session, masters, query.start, query.end)
    clock = LocalClock(query.tz, 15)
    found: dict[Key, float] = {}
    for master in masters:
        away = Intervals((as_utc(a).timestamp(), as_utc(b).timestamp()) for a, b in absent[master])
        for day in query.days:
            hours = week[master].get(day.weekday())
            if hours is not None:
                found[(day, master)] = _minutes(hours, day, clock, away)
    return found


def _minutes(hours: DayHours, day: date, clock: LocalClock, away: Intervals) -> float:
    breaks = Intervals((clock.at(day, a), clock.at(day, b)) for a, b in hours.breaks)
    total = 0.0
    for low, high in breaks.subtract_from(
        clock.at(day, hours.start_min), clock.at(day, hours.end_min)
    ):
        total += sum(b - a for a, b in away.subtract_from(low, high))
    return total / 60
