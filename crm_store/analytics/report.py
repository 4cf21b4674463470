"""The shapes every analytics figure comes in: a query (period, filter, clock) and flat tables.

A table is a list of rows with fixed columns, so the page, the JSON API and the CSV export
all serve one object. The definitions are in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Executable, Result
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.timeutil import as_utc

MAX_DAYS = 366
DEFAULT_DAYS = 30
DEFAULT_LOST_DAYS = 3

COLUMNS: dict[str, tuple[str, ...]] = {
    "responses": (
        "dimension", "key", "inquiries", "answered", "unanswered", "median_s", "p90_s",
    ),
    "volume": ("date", "channel", "inquiries"),
    "sources": ("channel", "source", "inquiries", "clients", "new_clients", "converted"),
    "conversion": ("channel", "inquiries", "converted", "rate"),
    "containment": (
        "channel", "inquiries", "bot_answered", "contained", "handed_off",
        "containment_rate", "handoff_rate",
    ),
    "no_shows": ("master_id", "master", "done", "no_shows", "unsettled", "rate"),
    "occupancy_days": ("date", "master_id", "master", "working_min", "booked_min", "rate"),
    "occupancy_weeks": ("week", "master_id", "master", "working_min", "booked_min", "rate"),
    "returns": ("first_visits", "returned", "still_open", "rate"),
    "revenue_services": ("service_id", "service", "visits", "revenue_minor"),
    "revenue_masters": ("master_id", "master", "visits", "revenue_minor"),
    "lost_leads": (
        "client_id", "name", "phone", "email", "channel", "conversation_id",
        "asked_at", "text", "last_reply_at",
    ),
}  # fmt: skip
TABLES = tuple(COLUMNS)


@dataclass(frozen=True)
class Query:
    """What the owner asked for: local days `first`..`last` (both included) in `tz`."""

    first: date
    last: date
    tz: ZoneInfo
    now: datetime
    channel: str | None = None
    lost_days: int = DEFAULT_LOST_DAYS
    language: str = "uk"
    # Words that mark a question about price or time (prompts/analytics/interest.json).
    interest_words: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Compared with stored times, which SQLite keeps as UTC wall time without an offset.
        object.__setattr__(self, "now", as_utc(self.now))

    @property
    def start(self) -> datetime:
        return local_midnight(self.first, self.tz)

    @property
    def end(self) -> datetime:
        return local_midnight(self.last + timedelta(days=1), self.tz)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant a local day begins (midnight exists in every zone we serve)."""
    return as_utc(datetime(day.year, day.month, day.day, tzinfo=tz))


@dataclass
class Table:
    name: str
    rows: list[dict[str, Any]]

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS[self.name]


def ratio(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 4) if whole else None


async def run(session: AsyncSession, statement: Executable) -> Result[Any]:
    """Core statements on the session's connection (its transaction, its temporary tables)."""
    return await (await session.connection()).execute(statement)
