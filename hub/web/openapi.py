"""The OpenAPI 3.1 document of the staff API, served at GET /api/openapi.json.

It is generated from the registry below: one line per route (method, path, summary, the
pydantic model of its body, what it answers). Request schemas come from the handlers' own
models (`model_json_schema`), and tests/test_openapi.py checks both ways that the registry and
the app's routes agree and that each handler reads the body model listed here, so the
document can't drift from the code silently. Like the rest of /api/, it needs a session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from hub.web import api, booking_api, broadcasts_api, clients_api, inbox_api

routes = web.RouteTableDef()


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    answer: str = "OK"
    query: tuple[str, ...] = ()
    status: int = 200


ENDPOINTS: tuple[Endpoint, ...] = (
    # Auth
    Endpoint(
        "POST",
        "/api/auth/login",
        "Sign in",
        api.LoginBody,
        "the staff member with csrf_token; sets the session cookies",
    ),
    Endpoint("POST", "/api/auth/logout", "Sign out", answer="{ok: true}"),
    Endpoint(
        "GET", "/api/me", "The signed-in staff member", answer="id, email, name, role, csrf_token"
    ),
    Endpoint("GET", "/api/channels", "The channels that are on, with their state"),
    Endpoint(
        "GET",
        "/api/staff",
        "Active staff (for assigning)",
        answer="[{id, name, role, email}]; email for owners and admins only",
    ),
    Endpoint(
        "POST",
        "/api/staff/{id}/deactivate",
        "Switch an account off (owner): every session of it ends at once",
        answer="{id, name, role, active}",
    ),
    Endpoint(
        "POST",
        "/api/staff/{id}/activate",
        "Switch an account back on (owner)",
        answer="{id, name, role, active}",
    ),
    # Conversations
    Endpoint(
        "GET",
        "/api/conversations",
        "The conversation list: waiting first, then newest",
        answer="{conversations: [...]}",
        query=("status", "channel", "assignee", "unread", "q", "limit", "before"),
    ),
    Endpoint(
        "GET",
        "/api/conversations/{id}/messages",
        "A conversation's messages",
        answer="{messages: [message frame]}",
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/messages",
        "A staff reply (takes the conversation)",
        api.ReplyBody,
        "the message frame",
        status=201,
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/take",
        "Take it: human, assigned to the caller",
        answer="the conversation",
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/assign",
        "Assign to staff or to nobody (owner/admin)",
        inbox_api.AssignBody,
        "the conversation",
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/read",
        "Mark read for the caller",
        answer="the conversation",
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/release",
        "Give it back to the bot",
        answer="{id, status, assignee_id}",
    ),
    Endpoint(
        "POST", "/api/conversations/{id}/close", "Close it", answer="{id, status, assignee_id}"
    ),
    Endpoint(
        "GET",
        "/api/attachments/{channel}/{inbox}/{ref}",
        "A client's file, from the provider",
        answer="the file",
    ),
    Endpoint(
        "GET",
        "/api/events",
        "Server-Sent Events: message, conversation",
        answer="text/event-stream",
    ),
    # Clients
    Endpoint(
        "GET",
        "/api/clients",
        "Client cards, most recently in touch first",
        answer="{clients: [...]}",
        query=("q", "limit", "offset"),
    ),
    Endpoint("GET", "/api/clients/{id}", "The whole card: identities, appointments, audit"),
    Endpoint(
        "PATCH", "/api/clients/{id}", "Edit the card (audited)", clients_api.ClientBody, "the card"
    ),
    Endpoint(
        "GET",
        "/api/clients/{id}/timeline",
        "The client's history across channels, with notes",
        answer="{items: [...], more}",
        query=("before", "limit"),
    ),
    Endpoint(
        "POST",
        "/api/clients/{id}/notes",
        "A private note (never sent; audited)",
        inbox_api.NoteBody,
        "the note",
        status=201,
    ),
    Endpoint(
        "POST",
        "/api/clients/{id}/messages",
        "Reply to the client on their channel",
        inbox_api.ClientMessageBody,
        "the message frame",
        status=201,
    ),
    Endpoint(
        "POST",
        "/api/clients/{id}/merge",
        "Merge another card into this one (owner/admin)",
        inbox_api.MergeBody,
        "the card",
    ),
    # Canned replies
    Endpoint("GET", "/api/canned", "Canned replies", answer="[{id, title, text, language}]"),
    Endpoint(
        "POST",
        "/api/canned",
        "Add a canned reply (owner/admin)",
        inbox_api.CannedBody,
        "the canned reply",
        status=201,
    ),
    Endpoint(
        "PATCH",
        "/api/canned/{id}",
        "Change a canned reply (owner/admin)",
        inbox_api.CannedChangeBody,
        "the canned reply",
    ),
    Endpoint(
        "DELETE", "/api/canned/{id}", "Delete a canned reply (owner/admin)", answer="{ok: true}"
    ),
    # The salon and booking
    Endpoint("GET", "/api/services", "The price list", query=("all",)),
    Endpoint("GET", "/api/masters", "Masters, their services and hours"),
    Endpoint("GET", "/api/business", "The salon's settings"),
    Endpoint(
        "PATCH",
        "/api/business",
        "Change the salon's settings (owner/admin; audited)",
        booking_api.BusinessBody,
        "the settings",
    ),
    Endpoint(
        "GET", "/api/slots", "Free times", query=("service", "master", "from", "to", "window")
    ),
    Endpoint(
        "GET",
        "/api/appointments",
        "Appointments by start time",
        query=("from", "to", "master", "client", "status"),
    ),
    Endpoint(
        "POST", "/api/appointments", "Book", booking_api.BookBody, "the appointment", status=201
    ),
    Endpoint(
        "GET",
        "/api/appointments/unsettled",
        "Ended appointments still booked or confirmed: to mark done or no-show (masters: own)",
        answer="{appointments: [...], count}",
        query=("master",),
    ),
    Endpoint("GET", "/api/appointments/{id}", "One appointment"),
    Endpoint(
        "PATCH",
        "/api/appointments/{id}",
        "Move, confirm, cancel, done, no-show",
        booking_api.ChangeBody,
        "the appointment",
    ),
    # Broadcasts (owner/admin)
    Endpoint(
        "POST",
        "/api/broadcasts/preview",
        "How many clients a segment has (marketing consent always required)",
        broadcasts_api.PreviewBody,
        "{count, sample: [first names]}",
    ),
    Endpoint(
        "GET",
        "/api/broadcasts",
        "Broadcasts, newest first, with counts",
        answer="{broadcasts: [...]}",
        query=("limit", "offset"),
    ),
    Endpoint(
        "POST",
        "/api/broadcasts",
        "Write a draft",
        broadcasts_api.BroadcastBody,
        "the broadcast",
        status=201,
    ),
    Endpoint("GET", "/api/broadcasts/{id}", "A broadcast with its progress"),
    Endpoint(
        "PATCH",
        "/api/broadcasts/{id}",
        "Change a draft (audited)",
        broadcasts_api.BroadcastChangeBody,
        "the broadcast",
    ),
    Endpoint(
        "POST",
        "/api/broadcasts/{id}/send",
        "Send now or at its time (audited; twice changes nothing)",
        answer="the broadcast with its progress",
    ),
    Endpoint(
        "POST",
        "/api/broadcasts/{id}/cancel",
        "Cancel: nothing more is sent (audited)",
        answer="the broadcast with its progress",
    ),
    Endpoint(
        "GET",
        "/api/broadcasts/{id}/recipients",
        "Each recipient's status",
        answer="{recipients: [{client_id, name, channel, status, last_error, sent_at}], more}",
        query=("status", "limit", "offset"),
    ),
    Endpoint(
        "GET",
        "/api/broadcast-templates",
        "Ready texts in uk/en/ru",
        answer="{templates: [{id, language, title, text}]}",
        query=("lang",),
    ),
    # Analytics (owner/admin; docs/metrics.md)
    Endpoint(
        "GET",
        "/api/analytics",
        "Every analytics table for a period",
        answer="{period: {from, to, timezone}, channel, days, currency, "
        "tables: {name: {columns, rows}}}",
        query=("from", "to", "channel", "days"),
    ),
    Endpoint(
        "GET",
        "/api/analytics/{table}.csv",
        "One analytics table as CSV (UTF-8 with a BOM, the salon's local times)",
        answer="text/csv, an attachment",
        query=("from", "to", "channel", "days"),
    ),
    Endpoint(
        "GET",
        "/api/analytics/{table}",
        "One analytics table",
        answer="{table, columns, rows, period}",
        query=("from", "to", "channel", "days"),
    ),
    Endpoint("GET", "/api/openapi.json", "This document"),
)
# A path parameter may be followed by more of its segment: /api/analytics/{table}.csv.
PATH_PARAM = re.compile(r"\{(\w+)\}")

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "error": {"type": "string"}},
            },
        },
    },
}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Salon hub staff API",
            "version": "1",
            "description": "See docs/api.md. Every route but POST /api/auth/login needs the "
            "hub_session cookie; state-changing ones the X-CSRF-Token header too.",
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


def _operation(endpoint: Endpoint, schemas: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": f"{endpoint.method.lower()}_{_slug(endpoint.path)}",
        "responses": {
            str(endpoint.status): {"description": endpoint.answer},
            "400": {"description": "invalid request", **error},
            "401": {"description": "not signed in", **error},
            "403": {"description": "not yours, or missing CSRF token", **error},
            "404": {"description": "unknown id", **error},
        },
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAM.findall(endpoint.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in endpoint.query
    ]
    if params:
        operation["parameters"] = params
    if endpoint.path == "/api/auth/login":
        operation["security"] = []
    elif endpoint.method != "GET":
        operation["security"] = [{"session": [], "csrf": []}]
    if endpoint.body is not None:
        name = endpoint.body.__name__
        schema = endpoint.body.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub, definition in schema.pop("$defs", {}).items():
            schemas[sub] = definition
        schemas[name] = schema
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    return operation


def _slug(path: str) -> str:
    parts = [p.replace("{", "").replace("}", "") for p in path.removeprefix("/api/").split("/")]
    return "_".join(p.replace(".", "_") for p in parts)


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    del request
    return web.json_response(document())
