from __future__ import annotations

from datetime import UTC, datetime


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for aware columns: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """What to write or compare: SQLite keeps a datetime's wall time and drops its offset, so
    every value that reaches it must be UTC already (a naive one is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """A stored datetime as ISO 8601 with its UTC offset (SQLite's naive values included)."""
    value = aware(value)
    return value.isoformat() if value else None


def utcnow() -> datetime:
    return datetime.now(UTC)
