"""Visits to settle: appointments that have ended but still say booked or confirmed.

Nobody marks a visit on its own: until staff say "done" or "no-show", an appointment that has
ended stays booked, and the no-show figures (and a client's record) say nothing. These are
the ones to settle.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.models import Appointment

LIVE = ("booked", "confirmed")
UNSETTLED_LIMIT = 200


def _unsettled_where(now: datetime, master_id: int | None) -> list[object]:
    # SQLite compares the stored UTC wall time as text: compare with UTC only.
    where: list[object] = [
        col(Appointment.status).in_(LIVE),
        col(Appointment.end_at) <= now.astimezone(UTC),
    ]
    if master_id is not None:
        where.append(col(Appointment.master_id) == master_id)
    return where


async def unsettled(
    session: AsyncSession,
    *,
    now: datetime,
    master_id: int | None = None,
    limit: int = UNSETTLED_LIMIT,
) -> list[Appointment]:
    """Ended appointments still booked or confirmed (a master's own, or everyone's), the
    oldest first: the longer one waits, the less anyone remembers whether the client came."""
    query = (
        select(Appointment)
        .where(*_unsettled_where(now, master_id))
        .order_by(col(Appointment.start_at), col(Appointment.id))
        .limit(limit)
    )
    return list((await session.exec(query)).all())


async def count_unsettled(
    session: AsyncSession, *, now: datetime, master_id: int | None = None
) -> int:
    query = select(func.count()).select_from(Appointment).where(*_unsettled_where(now, master_id))
    return int((await session.exec(query)).one())  # type: ignore[call-overload]
