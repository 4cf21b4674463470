"""Time arithmetic in SQL that means the same on SQLite and PostgreSQL.

SQLite keeps a timestamp as UTC text and has no interval type; PostgreSQL has `timestamptz`.
These constructs compile to each dialect's own form, so one query serves both. The salon's
local day and time of day come from a CASE over the UTC offsets in force during the period
(at most a few daylight-saving changes), which is exact and costs nothing per row.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, ColumnElement, Float, case, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

DAY_S = 86_400
EPOCH = date(1970, 1, 1)


class epoch_seconds(FunctionElement[int]):
    """Whole seconds since 1970-01-01 UTC (floored)."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_seconds)
def _epoch_default(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


class seconds_between(FunctionElement[float]):
    """`later - earlier` in seconds, with fractions."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between)
def _between_default(element: seconds_between, compiler: Any, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _between_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def offsets(tz: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """The UTC offsets (seconds) in force from `start` to `end`: (since when, offset), oldest
    first. Stepped hour by hour (a year is under 9,000 steps); a change found between two steps
    is pinned to the minute by bisection, for the zones that change on the half hour."""
    at = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    found = [(at, _offset(tz, at))]
    while at < end:
        step = at + timedelta(hours=1)
        offset = _offset(tz, step)
        if offset != found[-1][1]:
            low, high = at, step  # the old offset at `low`, the new one at `high`
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                low, high = (low, middle) if _offset(tz, middle) == offset else (middle, high)
            found.append((high, offset))
        at = step
    return found


def _offset(tz: ZoneInfo, at: datetime) -> int:
    return int(at.astimezone(tz).utcoffset().total_seconds())  # type: ignore[union-attr]


def local_seconds(column: Any, tz: ZoneInfo, start: datetime, end: datetime) -> ColumnElement[int]:
    """Seconds since 1970-01-01 00:00 on the salon's wall clock, for times in [start, end]."""
    spans = offsets(tz, start, end)
    if len(spans) == 1:
        shift: Any = literal(spans[0][1])
    else:
        newest_first = list(reversed(spans))
        shift = case(
            *[(column >= since, literal(offset)) for since, offset in newest_first[:-1]],
            else_=literal(newest_first[-1][1]),
        )
    return epoch_seconds(column) + shift


def local_day(seconds: ColumnElement[int]) -> ColumnElement[int]:
    """The local day number (days since 1970-01-01) of local_seconds(...); times are after 1970,
    so integer division floors on both databases."""
    return seconds // literal(DAY_S)


def day_of(number: int) -> date:
    return EPOCH + timedelta(days=int(number))


def weekday_of(day_number: Any) -> Any:
    """Monday is 0, as in Python: 1970-01-01 was a Thursday."""
    return (day_number + literal(3)) % literal(7)


def minute_of_day(seconds: ColumnElement[int]) -> ColumnElement[int]:
    return (seconds % literal(DAY_S)) // literal(60)
