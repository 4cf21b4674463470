"""The broadcasts API (owners and admins only; a master gets 403): preview a segment, write a
draft, send it now or at its time, watch its progress and recipients, cancel it. The rules
are crm_store.broadcasts' and crm_store.segments'; see docs/broadcasts.md."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from crm_store import broadcasts as store
from crm_store import segments
from crm_store.business import Rules
from crm_store.db import transaction
from crm_store.models import Broadcast
from crm_store.scheduled import OPEN
from crm_store.segments import CHANNELS, Segment
from hub.jobs.broadcasts import templates
from hub.web import roles
from hub.web.answers import Time, not_null
from hub.web.booking_answers import local_iso
from hub.web.http_json import (
    MAX_ID,
    CalendarDay,
    CalendarTime,
    answer,
    hub_of,
    positive_int,
    query_int,
    read_body,
    refuse,
)
from prompts import LANGUAGES

routes = web.RouteTableDef()
MAX_PAGE = 200
SAMPLE = 10


class SegmentBody(Segment):
    """The filters, all of which must hold (docs/broadcasts.md); marketing consent always
    does. A tag is matched ignoring case; `visited_*` are the salon's days."""

    # crm_store.segments.Segment, with what its validators check stated for the document
    # (they keep their messages), and dates and ids the API can take.
    visited_before: CalendarDay | None = None
    visited_after: CalendarDay | None = None
    service_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    channel: Annotated[str, Field(json_schema_extra={"enum": list(CHANNELS)})] | None = None


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: SegmentBody = Field(default_factory=SegmentBody)


class BroadcastBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=store.MAX_TITLE)
    text: str = Field(min_length=1, max_length=store.MAX_TEXT)
    segment: SegmentBody = Field(default_factory=SegmentBody)
    # None: sent at once when launched.
    scheduled_at: CalendarTime | None = None


class BroadcastChangeBody(BaseModel):
    """Only the fields sent are changed; `scheduled_at: null` means "at once"."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(
        default=None, min_length=1, max_length=store.MAX_TITLE, json_schema_extra=not_null()
    )
    text: str | None = Field(
        default=None, min_length=1, max_length=store.MAX_TEXT, json_schema_extra=not_null()
    )
    segment: SegmentBody | None = Field(default=None, json_schema_extra=not_null())
    scheduled_at: CalendarTime | None = None


# Answers --------------------------------------------------------------------------------------


class SegmentPreview(BaseModel):
    """How many clients the segment has, and the first names of a few."""

    count: int
    sample: list[str]


class Template(BaseModel):
    id: str
    language: str
    title: str
    text: str


class TemplateList(BaseModel):
    templates: list[Template]


class BroadcastSummary(BaseModel):
    """A broadcast as it was written (`segment`: the filters of a SegmentBody, each one given),
    its rows by status and how many are not sent yet (`pending`)."""

    id: int
    title: str
    text: str
    segment: dict[str, Any]
    status: str
    scheduled_at: Time | None
    total: int
    created_by_staff_id: int | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    counts: dict[str, int]
    pending: int


class BroadcastProgress(BroadcastSummary):
    """One broadcast: its rows by status, and by channel and status."""

    channels: dict[str, dict[str, int]]


class BroadcastList(BaseModel):
    broadcasts: list[BroadcastSummary]


class RecipientView(BaseModel):
    client_id: int
    name: str | None
    channel: str | None
    status: str
    last_error: str | None
    due_at: Time | None
    sent_at: Time | None


class RecipientList(BaseModel):
    """`more`: there are further rows (ask with `offset`)."""

    recipients: list[RecipientView]
    more: bool


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
    return answer(SegmentPreview(count=found, sample=sample))


@routes.get("/api/broadcast-templates")
async def broadcast_templates(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    language = request.query.get("lang") or None
    if language is not None and language not in LANGUAGES:
        raise refuse(web.HTTPBadRequest, f"lang must be one of {', '.join(LANGUAGES)}")
    return answer(TemplateList(templates=[Template(**t) for t in templates(language)]))


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
    body = [_summary(b, rules, counts.get(b.id, {})) for b in found]  # type: ignore[arg-type]
    return answer(BroadcastList(broadcasts=body))


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
        RecipientView(
            client_id=r.client_id,
            name=r.name,
            channel=r.channel,
            status=r.status,
            last_error=r.last_error,
            due_at=local_iso(r.due_at, rules),
            sent_at=local_iso(r.sent_at, rules),
        )
        for r in found[:limit]
    ]
    return answer(RecipientList(recipients=rows, more=len(found) > limit))


# Building the answers -------------------------------------------------------------------------


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
    body = BroadcastProgress(**_fields(broadcast, rules), **progress.as_json())
    return answer(body, status)


def _summary(broadcast: Broadcast, rules: Rules, counts: dict[str, int]) -> BroadcastSummary:
    pending = sum(counts.get(s, 0) for s in OPEN)
    return BroadcastSummary(**_fields(broadcast, rules), counts=counts, pending=pending)


def _fields(broadcast: Broadcast, rules: Rules) -> dict[str, Any]:
    """The broadcast's own fields (the list and one broadcast add their counts to them)."""
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


def _refusal(exc: store.BroadcastError) -> web.HTTPError:
    kind: type[web.HTTPError] = {
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
    }.get(exc.status, web.HTTPBadRequest)
    if exc.field is None:
        return refuse(kind, str(exc))
    return refuse(kind, str(exc), details=[{"field": exc.field, "error": str(exc)}])
