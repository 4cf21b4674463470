"""The audit log: who changed what on a client card or an appointment."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.models import AuditEntry
from crm_store.timeutil import iso

Actor = Literal["staff", "bot", "system", "client", "import"]


def record(
    session: AsyncSession,
    *,
    actor: Actor,
    entity: str,
    entity_id: int,
    action: str,
    changes: dict[str, Any] | None = None,
    staff_id: int | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        staff_id=staff_id,
        entity=entity,
        entity_id=entity_id,
        action=action,
        changes=_jsonable(changes or {}),
    )
    session.add(entry)
    return entry


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {key: _scalar(value) for key, value in changes.items()}


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_scalar(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    return str(value)
