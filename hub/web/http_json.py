"""Small pieces every JSON handler uses: the hub of a request, an answer from its pydantic
model, a 4xx in the error shape (hub/web/answers.py ErrorBody), a validated body, and query
values that must be well formed."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, ValidationError
from pydantic_core import from_json, to_json

from hub.state import HUB, Hub
from hub.web.answers import ErrorBody

M = TypeVar("M", bound=BaseModel)
# Ids are 32-bit integers in PostgreSQL: a larger one can name nothing, and asking the
# database about it would be an error rather than "not found".
MAX_ID = 2**31 - 1
WHOLE = re.compile(r"-?[0-9]+")
# The years the API takes dates and times in: far enough either way for any salon's records,
# and short of the ends of Python's calendar (years 1 to 9999), where the arithmetic on them
# (a week on, a zone's offset) would fail. The document says it with a pattern on the year.
FIRST_YEAR, LAST_YEAR = 1900, 2999
YEAR = "^(19|2[0-9])[0-9]{2}-"
CALENDAR = f"in the years {FIRST_YEAR} to {LAST_YEAR}"
D = TypeVar("D", date, datetime)


def _in_calendar(value: D) -> D:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be {CALENDAR}")
    return value


# A time in a body (ISO 8601 with its offset) and a day (YYYY-MM-DD), in the years above.
CalendarTime = Annotated[
    AwareDatetime, AfterValidator(_in_calendar), Field(json_schema_extra={"pattern": YEAR})
]
CalendarDay = Annotated[
    date, AfterValidator(_in_calendar), Field(json_schema_extra={"pattern": YEAR})
]


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


def answer(model: BaseModel, status: int = 200) -> web.Response:
    """A JSON answer from its model: what the document says a route answers is the model's
    schema (hub/web/openapi.py), so the two can't part."""
    return web.json_response(model.model_dump(mode="json", by_alias=True), status=status)


def refuse(kind: type[web.HTTPError], error: str, **extra: Any) -> web.HTTPError:
    """A 4xx in the error shape, raised from anywhere in a handler. `extra` are ErrorBody's
    other keys; those not given stay out of the body."""
    body = ErrorBody(error=error, **extra).model_dump(mode="json", exclude_unset=True)
    return kind(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


async def read_body(request: web.Request, model: type[M]) -> M:
    """The body as `model`, read as strictly as the document's JSON Schema types it: `true` is
    no integer and "5" no number, but 5.0 is an integer (JSON has one kind of number). NUL is
    dropped from its strings, as the channels drop it: PostgreSQL can't keep it."""
    if request.content_type != "application/json":
        raise refuse(web.HTTPUnsupportedMediaType, "send JSON (Content-Type: application/json)")
    try:
        data = from_json(await request.read())
    except ValueError as exc:
        raise _invalid([{"field": "", "error": f"Invalid JSON: {exc}"}]) from None
    try:
        # Back to JSON, so that strict mode still reads times and dates from their strings.
        text = to_json(_as_schema_reads(data), inf_nan_mode="constants")
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise _invalid(
            [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors()]
        ) from None


def _invalid(details: list[dict[str, str]]) -> web.HTTPError:
    return refuse(web.HTTPBadRequest, "invalid request", details=details)


def _as_schema_reads(value: Any) -> Any:
    """JSON as JSON Schema reads it: a number with no fraction is an integer; and no NUL."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_as_schema_reads(item) for item in value]
    if isinstance(value, dict):
        return {key.replace("\x00", ""): _as_schema_reads(item) for key, item in value.items()}
    return value


def positive_int(value: str, name: str) -> int:
    """An id from a path or a query: ASCII digits, 1 to MAX_ID (a 400 otherwise)."""
    number = _whole(value)
    if number is None:
        raise refuse(web.HTTPBadRequest, f"{name} must be a whole number")
    if number < 1:
        raise refuse(web.HTTPBadRequest, f"{name} must be positive")
    if number > MAX_ID:
        raise refuse(web.HTTPBadRequest, f"{name} must be at most {MAX_ID}")
    return number


def query_int(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """A whole number from the query string, clamped to `high`; below `low` is a 400."""
    value = request.query.get(name)
    if not value:
        return default
    number = _whole(value)
    if number is None:
        raise refuse(web.HTTPBadRequest, f"{name} must be a whole number")
    if number < low:
        raise refuse(web.HTTPBadRequest, f"{name} must be at least {low}")
    return min(number, high)


def _whole(value: str) -> int | None:
    """Plain decimal digits, as the document's integers are written (int() alone would take
    "+1", " 1", "1_000" and other scripts' digits too)."""
    if not WHOLE.fullmatch(value):
        return None
    try:
        return int(value)
    except ValueError:  # more digits than int() reads from a string
        return None


def optional_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    return positive_int(value, name) if value else None


def query_text(request: web.Request, name: str, *, limit: int) -> str:
    """Free text from the query string: its first `limit` characters, without NUL (which
    PostgreSQL can't compare)."""
    return request.query.get(name, "").replace("\x00", "")[:limit]


def query_date(request: web.Request, name: str) -> date | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise refuse(web.HTTPBadRequest, f"{name} must be a date, YYYY-MM-DD") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise refuse(web.HTTPBadRequest, f"{name} must be {CALENDAR}")
    return day


def query_datetime(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time with its UTC offset (a `+` in a query string arrives as a space)."""
    value = request.query.get(name)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise refuse(
            web.HTTPBadRequest, f"{name} must be an ISO 8601 time with its offset"
        ) from None
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise refuse(web.HTTPBadRequest, f"{name} must be {CALENDAR}")
    return parsed
