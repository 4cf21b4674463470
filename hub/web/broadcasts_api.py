"""The broadcasts API (owners and admins only; a master gets 403): preview a segment, write a
draft, send it now or at its time, watch its progress and recipients, cancel it. The rules
are crm_store.broadcasts' and crm_store.segments'; see docs/broadcasts.md."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crm_store import broadcasts as store
from crm_store import segments
from crm_store.business import Rules
from crm_store.db import transaction
from crm_store.models import Broadcast
from crm_store.scheduled import OPEN
from crm_store.segments import Segment
from hub.jobs.broadcasts import templates
from hub.web import roles
from hub.web.booking_api import local_iso
from hub.web.http_json import hub_of, positive_int, query_int, read_body, refuse
from prompts import LANGUAGES

routes = web.RouteTableDef()
MAX_PAGE = 200
SAMPLE = 10


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: Segment = Field(default_factory=Segment)


class BroadcastBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=store.MAX_TITLE)
    text: str = Field(min_length=1, max_length=store.MAX_TEXT)
    segment: Segment = Field(default_factory=Segment)
    # None: sent at once when launched.
    scheduled_at: AwareDatetime | None = None


class BroadcastChangeBody(BaseModel):
    """Only the fields sent are changed; `scheduled_at: null` means "at once"."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=store.MAX_TITLE)
    text: str | None = Field(default=None, min_length=1, max_length=store.MAX_TEXT)
    segment: Segment | None = None
    scheduled_at: AwareDatetime | None = None


# Segments and templates ---------------------------------------------------------------------


@routes.post("/api/broadcasts/preview")
async def preview(request: web.Request) -> web.Response:
    """How many clients a segment has (consent always required) and the first names."""
    await roles.require_manager(request)
    body = await read_body(request, PreviewBody)
    hub = hub_of(request)
    now = hub.clock()
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        try:
            segment = await store.check_segment(session, body.segment)
        except store.BroadcastError as exc:
            raise _refusal(exc) from None
        found = await segments.count(session, segment, now=now, tz=rules.tz)
        sample = await segments.sample_names(session, segment, now=now, tz=rules.tz, limit=SAMPLE)
    return web.json_response({"count": found, "sample": sample})


@routes.get("/api/broadcast-templates")
async def broadcast_templates(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    language = request.query.get("lang") or None
    if language is not None and language not in LANGUAGES:
        raise refuse(web.HTTPBadRequest, f"lang must be one of {', '.join(LANGUAGES)}")
    return web.json_response({"templates": templates(language)})


# Broadcasts -----------------------------------------------------------------------------------


@routes.get("/api/broadcasts")
async def broadcast_list(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    limit = query_int(request, "limit", 50, low=1, high=MAX_PAGE)
    offset = query_int(request, "offset", 0, low=0, high=10**9)
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        found = await store.list_broadcasts(session, limit=limit, offset=offset)
        counts = await store.counts_of(session, [b.id for b in found if b.id is not None])
    body = [
        broadcast_json(b, rules) | _counts_json(counts.get(b.id, {}))  # type: ignore[arg-type]
        for b in found
    ]
    return web.json_response({"broadcasts": body})


@routes.post("/api/broadcasts")
async def create(request: web.Request) -> web.Response:
    """A draft; nothing is sent until POST /api/broadcasts/{id}/send."""
    staff = await roles.require_manager(request)
    body = await read_body(request, BroadcastBody)
    hub = hub_of(request)
    try:
        async with transaction(hub.sessions) as session:
            saved = await store.create_draft(
                session,
                title=body.title,
                text=body.text,
                segment=body.segment,
                scheduled_at=body.scheduled_at,
                now=hub.clock(),
                staff_id=staff.id,
            )
    except store.BroadcastError as exc:
        raise _refusal(exc) from None
    return await _answer(request, saved.id, status=201)  # type: ignore[arg-type]


@routes.get("/api/broadcasts/{id}")
async def one(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    return await _answer(request, positive_int(request.match_info["id"], "id"))


@routes.patch("/api/broadcasts/{id}")
async def change(request: web.Request) -> web.Response:
    """A draft's title, text, segment or time; a launched broadcast is a 409."""
    staff = await roles.require_manager(request)
    broadcast_id = positive_int(request.match_info["id"], "id")
    body = await read_body(request, BroadcastChangeBody)
    changes = body.model_dump(exclude_unset=True)
    for key in ("title", "text", "segment"):
        if key in changes and changes[key] is None:
            raise refuse(
                web.HTTPBadRequest,
                "invalid request",
                details=[{"field": key, "error": "can't be null"}],
            )
    if "segment" in changes:
        changes["segment"] = body.segment
    hub = hub_of(request)
    try:
        async with transaction(hub.sessions) as session:
            await store.update_draft(
                session, broadcast_id, changes, now=hub.clock(), staff_id=staff.id
            )
    except store.BroadcastError as exc:
        raise _refusal(exc) from None
    return await _answer(request, broadcast_id)


@routes.post("/api/broadcasts/{id}/send")
async def send(request: web.Request) -> web.Response:
    """Launch: every client of the segment gets a row, due at the broadcast's time or now.
    Sending a launched broadcast again changes nothing."""
    staff = await roles.require_manager(request)
    broadcast_id = positive_int(request.match_info["id"], "id")
    hub = hub_of(request)
    try:
        async with transaction(hub.sessions) as session:
            rules = await hub.rules(session)
            await store.launch(
                session, broadcast_id, now=hub.clock(), staff_id=staff.id, tz=rules.tz
            )
    except store.BroadcastError as exc:
        raise _refusal(exc) from None
    return await _answer(request, broadcast_id)


@routes.post("/api/broadcasts/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """What has not gone yet is not sent; what went, went."""
    staff = await roles.require_manager(request)
    broadcast_id = positive_int(request.match_info["id"], "id")
    hub = hub_of(request)
    try:
        async with transaction(hub.sessions) as session:
            await store.cancel(session, broadcast_id, now=hub.clock(), staff_id=staff.id)
    except store.BroadcastError as exc:
        raise _refusal(exc) from None
    return await _answer(request, broadcast_id)


@routes.get("/api/broadcasts/{id}/recipients")
async def recipient_list(request: web.Request) -> web.Response:
    """One row per client, in planning order; `status` filters (comma-separated)."""
    await roles.require_manager(request)
    broadcast_id = positive_int(request.match_info["id"], "id")
    statuses = tuple(s for s in request.query.get("status", "").split(",") if s)
    limit = query_int(request, "limit", 50, low=1, high=MAX_PAGE)
    offset = query_int(request, "offset", 0, low=0, high=10**9)
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        try:
            found = await store.recipients(
                session, broadcast_id, statuses=statuses, limit=limit + 1, offset=offset
            )
        except store.BroadcastError as exc:
            raise _refusal(exc) from None
    rows = [
        {
            "client_id": r.client_id,
            "name": r.name,
            "channel": r.channel,
            "status": r.status,
            "last_error": r.last_error,
            "due_at": local_iso(r.due_at, rules),
            "sent_at": local_iso(r.sent_at, rules),
        }
        for r in found[:limit]
    ]
    return web.json_response({"recipients": rows, "more": len(found) > limit})


# Answers --------------------------------------------------------------------------------------


async def _answer(request: web.Request, broadcast_id: int, *, status: int = 200) -> web.Response:
    """The broadcast with its progress."""
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        try:
            broadcast = await store.get_broadcast(session, broadcast_id)
            progress = await store.progress(session, broadcast_id)
        except store.BroadcastError as exc:
            raise _refusal(exc) from None
    body = broadcast_json(broadcast, rules) | progress.as_json()
    return web.json_response(body, status=status)


def broadcast_json(broadcast: Broadcast, rules: Rules) -> dict[str, Any]:
    return {
        "id": broadcast.id,
        "title": broadcast.title,
        "text": broadcast.text,
        "segment": broadcast.segment,
        "status": broadcast.status,
        "scheduled_at": local_iso(broadcast.scheduled_at, rules),
        "total": broadcast.total,
        "created_by_staff_id": broadcast.created_by_staff_id,
        "created_at": local_iso(broadcast.created_at, rules),
        "started_at": local_iso(broadcast.started_at, rules),
        "finished_at": local_iso(broadcast.finished_at, rules),
    }


def _counts_json(counts: dict[str, int]) -> dict[str, Any]:
    return {"counts": counts, "pending": sum(counts.get(s, 0) for s in OPEN)}


def _refusal(exc: store.BroadcastError) -> web.HTTPError:
    kind: type[web.HTTPError] = {
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
    }.get(exc.status, web.HTTPBadRequest)
    if exc.field is None:
        return refuse(kind, str(exc))
    return refuse(kind, str(exc), details=[{"field": exc.field, "error": str(exc)}])
