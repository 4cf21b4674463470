from __future__ import annotations

from datetime import UTC, datetime


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for aware columns: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """A stored datetime as ISO 8601 with its UTC offset (SQLite's naive values included)."""
    value = aware(value)
    return value.isoformat() if value else None


def utcnow() -> datetime:
    return datetime.now(UTC)
