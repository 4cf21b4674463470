"""The OpenAPI 3.1 document of the staff API, served at GET /api/openapi.json.

It is generated from the registry below: one line per route (method, path, summary, the
pydantic model of its body, the model of its answer, its query parameters, the refusals it can
give). Request and answer schemas are the handlers' own models (`models_json_schema`, shared
shapes under components/schemas); every handler answers through `http_json.answer(model)` and
refuses through `http_json.refuse()`, whose body is `answers.ErrorBody`. tests/test_openapi.py
checks both ways that the registry and the app's routes agree and that each handler reads the
body model and returns the answer model listed here; tests/test_api_contract.py runs
schemathesis against a live hub, so what the document says a route takes and answers is what
the code does. Like the rest of /api/, the document needs a session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from typing import Any, Literal, get_args

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from crm_store.analytics import TABLES
from crm_store.analytics.report import DEFAULT_DAYS, DEFAULT_LOST_DAYS, MAX_DAYS
from crm_store.broadcasts import ROW_STATUSES
from crm_store.conversations import STATUSES
from crm_store.models import APPOINTMENT_STATUSES
from hub.messages import ChannelName
from hub.web import (
    analytics_api,
    answers,
    api,
    booking_answers,
    booking_api,
    broadcasts_api,
    clients_api,
    inbox_answers,
    inbox_api,
    team_api,
)
from hub.web.answers import ErrorBody
from hub.web.client_files import SANDBOX
from hub.web.http_json import MAX_ID, YEAR, answer
from prompts import LANGUAGES

routes = web.RouteTableDef()
REF = "#/components/schemas/{model}"


class OpenApiDocument(BaseModel):
    """This document (OpenAPI 3.1)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, dict[str, Any]]
    components: dict[str, Any]
    security: list[dict[str, list[str]]]


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter, typed as its handler reads it. An optional query
    parameter sent empty is taken as not sent (`allowEmptyValue`)."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    where: Literal["query", "header"] = "query"


@dataclass(frozen=True)
class Raw:
    """An answer that is not JSON: its media type, what its bytes are, and its headers
    (name: (description, always sent))."""

    media_type: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    headers: dict[str, tuple[str, bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One route. `answer`: the model of its JSON answer, or what it answers if not JSON;
    `status`: the success codes (all with `answer`); `refusals`: the 4xx it can give beyond
    those every route of its kind gives (401 without a session, 403 without the CSRF token on
    a change, 400 for an id in the path, 400/413/415 for a body): document() adds those."""

    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | Raw | None = None
    params: tuple[Param, ...] = ()
    status: tuple[int, ...] = (200,)
    refusals: tuple[int, ...] = ()
    headers: dict[str, tuple[str, bool]] = field(default_factory=dict)


# Parameter types, as http_json and the handlers read them ---------------------------------

ID: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
# Dates and times in the years http_json takes them in (the pattern is on the year).
DATE: dict[str, Any] = {"type": "string", "format": "date", "pattern": YEAR}
TIME: dict[str, Any] = {"type": "string", "format": "date-time", "pattern": YEAR}
ANY_TEXT: dict[str, Any] = {"type": "string"}


def listed(values: tuple[str, ...]) -> dict[str, Any]:
    """A comma-separated list of `values` (empty items are skipped, as the handlers do)."""
    one = "|".join(map(re.escape, values))
    return {"type": "string", "pattern": f"^(?:{one})?(?:,(?:{one})?)*$"}


def one_of(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def count(minimum: int, default: int, note: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "default": default, "description": note}


CHANNELS: tuple[str, ...] = get_args(ChannelName)
LIMIT_50 = Param("limit", count(1, 50, "more than 200 gives 200"))
OFFSET = Param("offset", count(0, 0, "rows to skip"))
PERIOD = (
    Param("from", DATE, f"first day (the salon's), default the {DEFAULT_DAYS} days up to `to`"),
    Param("to", DATE, f"last day, default today; at most {MAX_DAYS} days in all"),
    Param("channel", one_of(CHANNELS), "only the figures built on this channel's messages"),
    Param(
        "days",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": analytics_api.MAX_LOST_DAYS,
            "default": DEFAULT_LOST_DAYS,
        },
        "lost leads: not written to for this many days",
    ),
)
ATTACHMENT_HEADERS = {
    "Content-Disposition": ("inline for a raster image, else attachment; the file's name", True),
    "Content-Security-Policy": (SANDBOX, True),
    "X-Content-Type-Options": ("nosniff", True),
    "Cache-Control": ("private, max-age=3600", True),
}
SESSION_COOKIES = {
    "Set-Cookie": ("hub_session (HttpOnly), hub_csrf and hub_device, all SameSite=Strict", True)
}

ENDPOINTS: tuple[Endpoint, ...] = (
    # Auth
    Endpoint(
        "POST",
        "/api/auth/login",
        "Sign in: the staff member with csrf_token, and the session cookies",
        api.LoginBody,
        api.SignedIn,
        refusals=(401, 429),
        headers=SESSION_COOKIES,
    ),
    Endpoint("POST", "/api/auth/logout", "Sign out", answer=answers.Done),
    Endpoint("GET", "/api/me", "The signed-in staff member", answer=api.SignedIn),
    Endpoint(
        "GET", "/api/channels", "The channels that are on, with their state", answer=api.ChannelList
    ),
    Endpoint(
        "GET",
        "/api/staff",
        "Active staff (for assigning); email for owners and admins only",
        answer=inbox_answers.StaffList,
    ),
    Endpoint(
        "POST",
        "/api/staff/{id}/deactivate",
        "Switch an account off (owner): every session of it ends at once",
        answer=team_api.AccountState,
        refusals=(400, 403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/staff/{id}/activate",
        "Switch an account back on (owner)",
        answer=team_api.AccountState,
        refusals=(400, 403, 404),
    ),
    # Conversations
    Endpoint(
        "GET",
        "/api/conversations",
        "The conversation list: waiting first, then newest",
        answer=inbox_answers.ConversationList,
        params=(
            Param("status", listed(STATUSES), "comma-separated"),
            Param("channel", one_of(CHANNELS)),
            Param(
                "assignee",
                {"anyOf": [{"type": "string", "enum": ["me", "none"]}, ID]},
                "me, none (nobody's) or a staff id",
            ),
            Param("unread", ANY_TEXT, "1 or true: only those unread by the caller"),
            Param("q", ANY_TEXT, "name, email, 3+ phone digits or message text (100 read)"),
            LIMIT_50,
            Param("before", ID, "the last conversation of the previous page"),
        ),
        refusals=(400,),
    ),
    Endpoint(
        "GET",
        "/api/conversations/{id}/messages",
        "A conversation's messages",
        answer=api.MessageList,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/messages",
        "A staff reply (takes the conversation); 200: already sent with this idempotency_key",
        api.ReplyBody,
        answers.MessageFrame,
        status=(201, 200),
        refusals=(403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/take",
        "Take it: human, assigned to the caller",
        answer=inbox_answers.ConversationView,
        refusals=(400, 403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/assign",
        "Assign to staff or to nobody (owner/admin)",
        inbox_api.AssignBody,
        inbox_answers.ConversationView,
        refusals=(403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/read",
        "Mark read for the caller",
        answer=inbox_answers.ConversationView,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/release",
        "Give it back to the bot",
        answer=api.Moved,
        refusals=(400, 403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/close",
        "Close it",
        answer=api.Moved,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "GET",
        "/api/attachments/{channel}/{inbox}/{ref}",
        "A client's file, from the provider (served so that nothing in it can run)",
        answer=Raw(
            "*/*",
            "the file: a raster image as its bytes say, anything else a download",
            {"type": "string", "format": "binary"},
            ATTACHMENT_HEADERS,
        ),
        refusals=(403, 404),
    ),
    Endpoint(
        "GET",
        "/api/events",
        "Live updates: message, conversation, appointment (docs/api.md)",
        answer=Raw(
            "text/event-stream",
            "opens with `: ready`, then `id:`, `event:` and `data:` (JSON) per event",
            headers={"Cache-Control": ("no-cache", True)},
        ),
        params=(
            Param(
                "Last-Event-ID",
                ANY_TEXT,
                "the last event id a reconnecting browser got: the missed ones come first",
                where="header",
            ),
        ),
        refusals=(503,),
    ),
    # Clients
    Endpoint(
        "GET",
        "/api/clients",
        "Client cards, most recently in touch first",
        answer=clients_api.ClientList,
        params=(
            Param("q", ANY_TEXT, "part of the name or email, or 3+ phone digits (100 read)"),
            LIMIT_50,
            OFFSET,
        ),
        refusals=(400,),
    ),
    Endpoint(
        "GET",
        "/api/clients/{id}",
        "The whole card: identities, appointments, audit",
        answer=clients_api.CardView,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "PATCH",
        "/api/clients/{id}",
        "Edit the card (audited)",
        clients_api.ClientBody,
        clients_api.ClientView,
        refusals=(403, 404),
    ),
    Endpoint(
        "GET",
        "/api/clients/{id}/timeline",
        "The client's history across channels, with notes",
        answer=inbox_answers.TimelinePage,
        params=(
            Param("before", TIME, "an item's `at`: the items before it"),
            Param("limit", count(1, 100, "more than 200 gives 200")),
        ),
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "POST",
        "/api/clients/{id}/notes",
        "A private note (never sent; audited)",
        inbox_api.NoteBody,
        inbox_answers.TimelineNote,
        status=(201,),
        refusals=(403, 404),
    ),
    Endpoint(
        "POST",
        "/api/clients/{id}/messages",
        "Reply to the client on their channel; 200: already sent with this idempotency_key",
        inbox_api.ClientMessageBody,
        inbox_answers.TimelineMessage,
        status=(201, 200),
        refusals=(403, 404),
    ),
    Endpoint(
        "POST",
        "/api/clients/{id}/merge",
        "Merge another card into this one (owner/admin)",
        inbox_api.MergeBody,
        clients_api.CardView,
        refusals=(403, 404),
    ),
    # Canned replies
    Endpoint("GET", "/api/canned", "Canned replies", answer=inbox_answers.CannedList),
    Endpoint(
        "POST",
        "/api/canned",
        "Add a canned reply (owner/admin)",
        inbox_api.CannedBody,
        inbox_answers.CannedView,
        status=(201,),
        refusals=(403,),
    ),
    Endpoint(
        "PATCH",
        "/api/canned/{id}",
        "Change a canned reply (owner/admin)",
        inbox_api.CannedChangeBody,
        inbox_answers.CannedView,
        refusals=(403, 404),
    ),
    Endpoint(
        "DELETE",
        "/api/canned/{id}",
        "Delete a canned reply (owner/admin)",
        answer=answers.Done,
        refusals=(400, 403, 404),
    ),
    # The salon and booking
    Endpoint(
        "GET",
        "/api/services",
        "The price list",
        answer=booking_answers.ServiceList,
        params=(Param("all", ANY_TEXT, "1 or true: the inactive services too"),),
    ),
    Endpoint(
        "GET",
        "/api/masters",
        "Masters, their services and hours",
        answer=booking_answers.MasterList,
    ),
    Endpoint("GET", "/api/business", "The salon's settings", answer=booking_answers.BusinessView),
    Endpoint(
        "PATCH",
        "/api/business",
        "Change the salon's settings (owner/admin; audited)",
        booking_api.BusinessBody,
        booking_answers.BusinessView,
        refusals=(403,),
    ),
    Endpoint(
        "GET",
        "/api/slots",
        "Free times",
        answer=booking_answers.SlotList,
        params=(
            Param("service", ID, required=True),
            Param("master", ID),
            Param("from", DATE, "first day (the salon's), default today"),
            Param(
                "to",
                DATE,
                f"last day, default a week on; at most {booking_api.MAX_SLOT_DAYS} days",
            ),
            Param("window", ANY_TEXT, "client: only what a client would be offered"),
        ),
        refusals=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/appointments",
        "Appointments by start time",
        answer=booking_answers.AppointmentList,
        params=(
            Param("from", DATE, "first day, default today (all of a client's with `client`)"),
            Param("to", DATE, f"last day; at most {booking_api.MAX_LIST_DAYS} days"),
            Param("master", ID, "ignored for a master: always their own"),
            Param("client", ID),
            Param("status", listed(APPOINTMENT_STATUSES), "comma-separated"),
        ),
        refusals=(400,),
    ),
    Endpoint(
        "POST",
        "/api/appointments",
        "Book",
        booking_api.BookBody,
        booking_answers.AppointmentView,
        status=(201,),
        refusals=(403, 404, 409),
    ),
    Endpoint(
        "GET",
        "/api/appointments/unsettled",
        "Ended appointments still booked or confirmed: to mark done or no-show (masters: own)",
        answer=booking_answers.UnsettledList,
        params=(Param("master", ID, "ignored for a master: always their own"),),
        refusals=(400,),
    ),
    Endpoint(
        "GET",
        "/api/appointments/{id}",
        "One appointment",
        answer=booking_answers.AppointmentView,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "PATCH",
        "/api/appointments/{id}",
        "Move, confirm, cancel, done, no-show",
        booking_api.ChangeBody,
        booking_answers.AppointmentView,
        refusals=(403, 404, 409),
    ),
    # Broadcasts (owner/admin)
    Endpoint(
        "POST",
        "/api/broadcasts/preview",
        "How many clients a segment has (marketing consent always required)",
        broadcasts_api.PreviewBody,
        broadcasts_api.SegmentPreview,
        refusals=(403,),
    ),
    Endpoint(
        "GET",
        "/api/broadcasts",
        "Broadcasts, newest first, with counts",
        answer=broadcasts_api.BroadcastList,
        params=(LIMIT_50, OFFSET),
        refusals=(400, 403),
    ),
    Endpoint(
        "POST",
        "/api/broadcasts",
        "Write a draft",
        broadcasts_api.BroadcastBody,
        broadcasts_api.BroadcastProgress,
        status=(201,),
        refusals=(403,),
    ),
    Endpoint(
        "GET",
        "/api/broadcasts/{id}",
        "A broadcast with its progress",
        answer=broadcasts_api.BroadcastProgress,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "PATCH",
        "/api/broadcasts/{id}",
        "Change a draft (audited)",
        broadcasts_api.BroadcastChangeBody,
        broadcasts_api.BroadcastProgress,
        refusals=(403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/broadcasts/{id}/send",
        "Send now or at its time (audited; twice changes nothing)",
        answer=broadcasts_api.BroadcastProgress,
        refusals=(400, 403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/broadcasts/{id}/cancel",
        "Cancel: nothing more is sent (audited)",
        answer=broadcasts_api.BroadcastProgress,
        refusals=(400, 403, 404, 409),
    ),
    Endpoint(
        "GET",
        "/api/broadcasts/{id}/recipients",
        "Each recipient's status",
        answer=broadcasts_api.RecipientList,
        params=(Param("status", listed(ROW_STATUSES), "comma-separated"), LIMIT_50, OFFSET),
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "GET",
        "/api/broadcast-templates",
        "Ready texts in uk/en/ru",
        answer=broadcasts_api.TemplateList,
        params=(Param("lang", one_of(LANGUAGES)),),
        refusals=(400, 403),
    ),
    # Analytics (owner/admin; docs/metrics.md)
    Endpoint(
        "GET",
        "/api/analytics",
        "Every analytics table for a period",
        answer=analytics_api.Dashboard,
        params=PERIOD,
        refusals=(400, 403),
    ),
    Endpoint(
        "GET",
        "/api/analytics/{table}.csv",
        "One analytics table as CSV",
        answer=Raw(
            "text/csv",
            "UTF-8 with a BOM, the columns as the header row, the salon's local times",
            headers={
                "Content-Disposition": ('attachment; filename="analytics-<table>-…csv"', True),
                "Cache-Control": ("no-store", True),
            },
        ),
        params=PERIOD,
        refusals=(400, 403, 404),
    ),
    Endpoint(
        "GET",
        "/api/analytics/{table}",
        "One analytics table",
        answer=analytics_api.OneTable,
        params=PERIOD,
        refusals=(400, 403, 404),
    ),
    Endpoint("GET", "/api/openapi.json", "This document", answer=OpenApiDocument),
)
# A path parameter may be followed by more of its segment: /api/analytics/{table}.csv.
PATH_PARAM = re.compile(r"\{(\w+)\}")
PATH_TYPES: dict[str, dict[str, Any]] = {"id": ID, "table": {"type": "string", "enum": TABLES}}
REFUSED = {
    400: "invalid request: a body, path or query value it does not take (`details` name it)",
    401: "not signed in (or the account was switched off)",
    403: "not yours, not for this role, or no CSRF token",
    404: "no such thing",
    409: "not in a state that allows it",
    413: "a body over 1 MiB",
    415: "a body that is not application/json",
    429: "too many failed sign-ins: wait `retry_after` seconds",
    503: "the hub is stopping",
}


@cache
def document() -> dict[str, Any]:
    schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Salon hub staff API",
            "version": "1",
            "description": "See docs/api.md. Every route but POST /api/auth/login needs the "
            "hub_session cookie; state-changing ones the X-CSRF-Token header too. Every "
            "refusal is a JSON ErrorBody.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "hub_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
        "security": [{"session": []}],
    }


def _schemas() -> dict[str, Any]:
    """Every body and answer model, and the models they hold, under its own name."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorBody, "serialization"): None
    }
    for endpoint in ENDPOINTS:
        if endpoint.body is not None:
            wanted[(endpoint.body, "validation")] = None
        if isinstance(endpoint.answer, type):
            wanted[(endpoint.answer, "serialization")] = None
    refs, found = models_json_schema(list(wanted), ref_template=REF)
    for (model, _), ref in refs.items():
        # Each model under its own name (_ref): pydantic renames when two share one.
        assert ref["$ref"] == _ref(model)["$ref"], f"two models are named {model.__name__}"
    return found.get("$defs", {})


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": f"{endpoint.method.lower()}_{_slug(endpoint.path)}",
        "responses": {str(status): _success(endpoint, status) for status in endpoint.status},
    }
    for status in sorted(_refusals(endpoint)):
        operation["responses"][str(status)] = _refusal(status, endpoint)
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_TYPES.get(name, {"type": "string", "minLength": 1}),
        }
        for name in PATH_PARAM.findall(endpoint.path)
    ]
    params += [
        {
            "name": param.name,
            "in": param.where,
            "required": param.required,
            "schema": param.schema,
            **({"description": param.description} if param.description else {}),
            **({"allowEmptyValue": True} if param.where == "query" and not param.required else {}),
        }
        for param in endpoint.params
    ]
    if params:
        operation["parameters"] = params
    if endpoint.path == "/api/auth/login":
        operation["security"] = []
    elif endpoint.method != "GET":
        operation["security"] = [{"session": [], "csrf": []}]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    return operation


def _success(endpoint: Endpoint, status: int) -> dict[str, Any]:
    described = endpoint.answer
    assert described is not None, f"{endpoint.method} {endpoint.path} answers nothing listed"
    if isinstance(described, Raw):
        content = {described.media_type: {"schema": described.schema}}
        return {
            "description": described.description,
            "content": content,
            **_headers(described.headers),
        }
    return {
        "description": (described.__doc__ or HTTPStatus(status).phrase).split("\n\n")[0].strip(),
        "content": {"application/json": {"schema": _ref(described)}},
        **_headers(endpoint.headers),
    }


def _refusals(endpoint: Endpoint) -> set[int]:
    """The endpoint's own refusals, and those of every route of its kind."""
    codes = set(endpoint.refusals)
    if endpoint.path != "/api/auth/login":
        codes.add(401)
        if endpoint.method != "GET":
            codes.add(403)  # the CSRF token
    if endpoint.body is not None:
        codes |= {400, 413, 415}
    if "{id}" in endpoint.path:
        codes.add(400)
    return codes


def _refusal(status: int, endpoint: Endpoint) -> dict[str, Any]:
    headers = {"Retry-After": ("seconds to wait", True)} if status == 429 else {}
    if endpoint.path.startswith("/api/attachments/"):
        # Refusals of a client's file are sandboxed like the file (hub/web/client_files.py).
        headers |= {
            "Content-Security-Policy": (SANDBOX, True),
            "X-Content-Type-Options": ("nosniff", True),
        }
    return {
        "description": REFUSED[status],
        "content": {"application/json": {"schema": _ref(ErrorBody)}},
        **_headers(headers),
    }


def _headers(headers: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    if not headers:
        return {}
    return {
        "headers": {
            name: {"description": text, "required": always, "schema": {"type": "string"}}
            for name, (text, always) in headers.items()
        }
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _slug(path: str) -> str:
    parts = [p.replace("{", "").replace("}", "") for p in path.removeprefix("/api/").split("/")]
    return "_".join(p.replace(".", "_") for p in parts)


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    del request
    return answer(OpenApiDocument.model_validate(document()))
