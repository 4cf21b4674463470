"""Small pieces every JSON handler uses: the hub of a request, a 4xx with a JSON body, a
validated body, and query values that must be well formed."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from hub.state import HUB, Hub

M = TypeVar("M", bound=BaseModel)


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


def refuse(kind: type[web.HTTPError], error: str, **extra: Any) -> web.HTTPError:
    """A 4xx with a JSON body, raised from anywhere in a handler."""
    body = json.dumps({"error": error, **extra}, ensure_ascii=False, default=str)
    return kind(text=body, content_type="application/json")


async def read_body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise refuse(web.HTTPUnsupportedMediaType, "send JSON (Content-Type: application/json)")
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        details = [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors()]
        raise refuse(web.HTTPBadRequest, "invalid request", details=details) from None


def positive_int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise refuse(web.HTTPBadRequest, f"{name} must be a whole number") from None
    if number < 1:
        raise refuse(web.HTTPBadRequest, f"{name} must be positive")
    return number


def query_int(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """A whole number from the query string, clamped to `high`; below `low` is a 400."""
    value = request.query.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise refuse(web.HTTPBadRequest, f"{name} must be a whole number") from None
    if number < low:
        raise refuse(web.HTTPBadRequest, f"{name} must be at least {low}")
    return min(number, high)


def optional_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    return positive_int(value, name) if value else None


def query_date(request: web.Request, name: str) -> date | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise refuse(web.HTTPBadRequest, f"{name} must be a date, YYYY-MM-DD") from None


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
    return parsed
