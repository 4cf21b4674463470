"""The owner's figures over HTTP (owners and admins only; a master gets 403): every table at
once, one table as JSON, one table as CSV. The figures and their definitions are
crm_store.analytics' (docs/metrics.md); this module reads the period and the filters from the
query string, and answers times in the salon's zone.

The analytics page (hub/web/analytics_page.py) reads its query with `read_query` too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, get_args
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, Field

from crm_store import analytics
from crm_store.analytics import TABLES, Query, Table
from crm_store.analytics.report import DEFAULT_DAYS, DEFAULT_LOST_DAYS, MAX_DAYS
from crm_store.business import Rules
from crm_store.csv_cells import spreadsheet_safe
from crm_store.timeutil import as_utc
from hub.messages import ChannelName
from hub.web import roles
from hub.web.answers import Day
from hub.web.http_json import CALENDAR, FIRST_YEAR, LAST_YEAR, answer, hub_of, refuse
from prompts import load_json, pick_language

routes = web.RouteTableDef()
CHANNELS: tuple[str, ...] = get_args(ChannelName)
MAX_LOST_DAYS = 90
BOM = "\ufeff"


class Period(BaseModel):
    """The days the figures are for (both included), in the salon's zone."""

    from_: Day = Field(alias="from")
    to: Day
    timezone: str


class TableData(BaseModel):
    """Rows are objects keyed by the columns, in column order (docs/metrics.md)."""

    columns: list[str]
    rows: list[dict[str, Any]]


class Dashboard(BaseModel):
    period: Period
    channel: str | None
    days: int
    currency: str
    tables: dict[str, TableData]


class OneTable(BaseModel):
    table: str
    columns: list[str]
    rows: list[dict[str, Any]]
    period: Period


class QueryError(ValueError):
    """A query string the figures can't be computed for: a 400 in the API, a notice on the
    page."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        # What went wrong, for the page to say in the reader's language: date, order,
        # length, channel or days.
        self.code = code


@cache
def interest_words() -> tuple[str, ...]:
    """Every language's words that mark a question about price or time, once each: a client
    may write in any language, whatever the staff member reads."""
    table = load_json("analytics/interest.json")
    words: dict[str, None] = {}
    for language, found in table.items():
        if language.startswith("_"):
            continue
        words.update(dict.fromkeys(word for word in found if word))
    return tuple(words)


def read_query(params: Mapping[str, str], *, tz: ZoneInfo, now: datetime, language: str) -> Query:
    """`from`, `to` (the salon's local days, both included), `channel` and `days` (lost
    leads) as a Query. Without `to` the period ends today; without `from` it is the
    DEFAULT_DAYS days up to `to`."""
    today = now.astimezone(tz).date()
    last = _date(params, "to") or today
    first = _date(params, "from") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise QueryError("from", "order", "from must not be after to")
    if (last - first).days + 1 > MAX_DAYS:
        raise QueryError("to", "length", f"the period may be at most {MAX_DAYS} days")
    channel = params.get("channel") or None
    if channel is not None and channel not in CHANNELS:
        raise QueryError("channel", "channel", f"channel must be one of {', '.join(CHANNELS)}")
    return Query(
        first=first,
        last=last,
        tz=tz,
        now=now,
        channel=channel,
        lost_days=_lost_days(params),
        language=language,
        interest_words=interest_words(),
    )


def _date(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name)
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise QueryError(name, "date", f"{name} must be a date, YYYY-MM-DD") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise QueryError(name, "date", f"{name} must be {CALENDAR}")
    return day


def _lost_days(params: Mapping[str, str]) -> int:
    value = params.get("days")
    if not value:
        return DEFAULT_LOST_DAYS
    try:
        days = int(value)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_LOST_DAYS:
        raise QueryError("days", "days", f"days must be a whole number from 1 to {MAX_LOST_DAYS}")
    return days


def query_params(query: Query) -> dict[str, str]:
    """The query string that asks for this very query (a link to its CSV, to a period)."""
    params = {"from": query.first.isoformat(), "to": query.last.isoformat()}
    if query.channel:
        params["channel"] = query.channel
    if query.lost_days != DEFAULT_LOST_DAYS:
        params["days"] = str(query.lost_days)
    return params


def csv_url(name: str, query: Query) -> str:
    return f"/api/analytics/{name}.csv?{urlencode(query_params(query))}"


def period(query: Query) -> Period:
    return Period.model_validate(
        {"from": query.first.isoformat(), "to": query.last.isoformat(), "timezone": query.tz.key}
    )


def cell(value: Any, tz: ZoneInfo) -> Any:
    """A value as JSON and CSV carry it: dates ISO, times the salon's wall clock with its
    offset."""
    if isinstance(value, datetime):
        return as_utc(value).astimezone(tz).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def rows_json(table: Table, tz: ZoneInfo) -> list[dict[str, Any]]:
    return [{column: cell(row.get(column), tz) for column in table.columns} for row in table.rows]


def table_csv(table: Table, tz: ZoneInfo) -> str:
    """UTF-8 with a BOM (so a spreadsheet opens Cyrillic names right), the columns as the
    header, an empty field for no value. Text that a spreadsheet would run as a formula (a
    client's name typed as `=HYPERLINK(…)`) is quoted: crm_store.csv_cells."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(_csv_value(cell(row.get(column), tz)) for column in table.columns)
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    # 600.0 seconds is written 600: the same number, as a spreadsheet shows it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return spreadsheet_safe(value)


# Routes ---------------------------------------------------------------------------------------


@routes.get("/api/analytics")
async def every_table(request: web.Request) -> web.Response:
    """Every table (what the analytics page shows), with the period and the currency."""
    staff = await roles.require_manager(request)
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        query = _query(request, rules, staff.language)
        tables = await analytics.dashboard(session, query)
    return answer(
        Dashboard(
            period=period(query),
            channel=query.channel,
            days=query.lost_days,
            currency=rules.currency,
            tables={
                name: TableData(columns=list(found.columns), rows=rows_json(found, query.tz))
                for name, found in tables.items()
            },
        )
    )


# Before /api/analytics/{table}: that pattern would take "responses.csv" for a table's name.
@routes.get("/api/analytics/{table}.csv")
async def one_table_csv(request: web.Request) -> web.Response:
    name, query, found = await _one(request)
    filename = f"analytics-{name}-{query.first.isoformat()}-{query.last.isoformat()}.csv"
    response = web.Response(
        text=table_csv(found, query.tz), content_type="text/csv", charset="utf-8"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Lost leads hold names and phone numbers: no copy kept along the way.
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/api/analytics/{table}")
async def one_table(request: web.Request) -> web.Response:
    name, query, found = await _one(request)
    return answer(
        OneTable(
            table=name,
            columns=list(found.columns),
            rows=rows_json(found, query.tz),
            period=period(query),
        )
    )


async def _one(request: web.Request) -> tuple[str, Query, Table]:
    staff = await roles.require_manager(request)
    name = request.match_info["table"]
    if name not in TABLES:
        raise refuse(web.HTTPNotFound, f"no table {name!r}", tables=list(TABLES))
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        query = _query(request, rules, staff.language)
        found = await analytics.table(session, name, query)
    return name, query, found


def _query(request: web.Request, rules: Rules, language: str) -> Query:
    try:
        return read_query(
            request.query,
            tz=rules.tz,
            now=hub_of(request).clock(),
            language=pick_language(language),
        )
    except QueryError as exc:
        raise refuse(
            web.HTTPBadRequest, str(exc), details=[{"field": exc.field, "error": str(exc)}]
        ) from None
