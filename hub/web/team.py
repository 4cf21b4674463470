"""Switching a staff account off or on, with what it takes beyond the database: a deactivated
account is signed out everywhere at once (its sessions end, and its open live-update streams
close: hub/web/events_api.py listens for the `staff` event)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_store import audit
from crm_store.db import transaction
from crm_store.models import Staff
from crm_store.staff import set_active
from hub.pipeline.bus import Bus
from hub.web import auth


async def set_staff_active(
    sessions: async_sessionmaker,
    bus: Bus,
    staff_id: int,
    active: bool,
    *,
    actor: audit.Actor = "system",
    by_staff_id: int | None = None,
) -> Staff:
    """crm_store.staff.set_active, then (when switched off) every session ended and every
    hub process told. Raises StaffError as set_active does."""
    async with transaction(sessions) as session:
        staff = await set_active(session, staff_id, active, actor=actor, by_staff_id=by_staff_id)
    if not active:
        await auth.end_sessions(bus.redis, staff_id)
        await bus.publish_event("staff", staff_id=staff_id, active=False)
    return staff
