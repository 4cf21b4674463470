"""The figures built on appointments: no-shows, returns and revenue (docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import DateTime, and_, case, func, literal, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics.report import Query, Table, ratio, run
from crm_store.models import Appointment, Service, Staff
from crm_store.sqltime import seconds_between

RETURN_S = 60 * 86400
A = Appointment.__table__.c  # type: ignore[attr-defined]


def started_in(query: Query, *, until: Any = None) -> Any:
    return and_(A.start_at >= query.start, A.start_at < (until or query.end))


async def names_of_staff(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await run(session, select(Staff.id, Staff.name).where(Staff.id.in_(ids)))  # type: ignore[union-attr]
    return dict(rows.all())  # type: ignore[arg-type]


async def no_shows(session: AsyncSession, query: Query) -> Table:
    def count(*statuses: str) -> Any:
        return func.sum(case((A.status.in_(statuses), 1), else_=0))

    result = await run(
        session,
        select(A.master_id, count("done"), count("no_show"), count("booked", "confirmed"))
        .where(started_in(query, until=min(query.end, query.now)), A.status != "cancelled")
        .group_by(A.master_id)
        .order_by(A.master_id),
    )
    per = [
        (master, int(done), int(missed), int(open_)) for master, done, missed, open_ in result.all()
    ]
    if not per:
        return Table("no_shows", [])
    names = await names_of_staff(session, {m for m, *_ in per})
    total = (None, *(sum(row[i] for row in per) for i in (1, 2, 3)))
    rows = [
        {
            "master_id": master,
            "master": names.get(master) if master is not None else None,
            "done": done,
            "no_shows": missed,
            "unsettled": open_,
            "rate": ratio(missed, done + missed),
        }
        for master, done, missed, open_ in [total, *per]
    ]
    return Table("no_shows", rows)


async def returns(session: AsyncSession, query: Query) -> Table:
    # Each client's visits in order, once: the first and the one after it, side by side (a
    # correlated lookup per client let SQLite, which has no statistics, scan by status).
    # Visit times, each once: two services side by side at one time are one visit.
    times = (
        select(A.client_id, A.start_at)
        .where(A.status == "done")
        .group_by(A.client_id, A.start_at)
        .subquery("times")
    )
    order = dict(partition_by=times.c.client_id, order_by=times.c.start_at)
    visits = select(
        times.c.start_at.label("first_at"),
        func.lead(times.c.start_at).over(**order).label("second_at"),
        func.row_number().over(**order).label("nth"),
    ).subquery("visits")
    v = visits.c
    now = literal(query.now, DateTime(timezone=True))
    came_back = and_(v.second_at.is_not(None), seconds_between(v.second_at, v.first_at) <= RETURN_S)
    still_open = and_(~came_back, seconds_between(now, v.first_at) < RETURN_S)
    result = await run(
        session,
        select(
            func.count(),
            func.sum(case((came_back, 1), else_=0)),
            func.sum(case((still_open, 1), else_=0)),
        ).where(v.nth == 1, v.first_at >= query.start, v.first_at < query.end),
    )
    first_visits, returned, waiting = (int(v or 0) for v in result.one())
    row = {
        "first_visits": first_visits,
        "returned": returned,
        "still_open": waiting,
        "rate": ratio(returned, first_visits - waiting),
    }
    return Table("returns", [row])


async def _service_names(session: AsyncSession, ids: set[int], language: str) -> dict[int, str]:
    """Names in the staff member's language, Ukrainian where a translation is missing."""
    S = Service.__table__.c  # type: ignore[attr-defined]
    names = S.get(f"name_{language}", S.name_uk)
    found = await run(session, select(S.id, names, S.name_uk).where(S.id.in_(ids)))
    return {sid: name or fallback for sid, name, fallback in found.all()}


async def revenue(session: AsyncSession, query: Query) -> tuple[Table, Table]:
    per_service = await _revenue_by(
        session, query, "service", lambda ids: _service_names(session, ids, query.language)
    )
    per_master = await _revenue_by(
        session, query, "master", lambda ids: names_of_staff(session, ids)
    )
    return Table("revenue_services", per_service), Table("revenue_masters", per_master)


async def _revenue_by(
    session: AsyncSession,
    query: Query,
    what: str,
    names_of: Callable[[set[int]], Awaitable[dict[int, str]]],
) -> list[dict[str, Any]]:
    """Done visits and their revenue per service or master, largest first."""
    key = A[f"{what}_id"]
    result = await run(
        session,
        select(key, func.count(), func.sum(A.price_minor))
        .where(A.status == "done", started_in(query))
        .group_by(key),
    )
    found = result.all()
    names = await names_of({row[0] for row in found})
    rows = [
        {f"{what}_id": id_, what: names.get(id_), "visits": n, "revenue_minor": int(total or 0)}
        for id_, n, total in found
    ]
    return sorted(rows, key=lambda r: (-r["revenue_minor"], r[f"{what}_id"]))
