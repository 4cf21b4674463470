"""The staff inbox's API: the conversation list, taking and assigning, read marks, a client's
timeline across channels, private notes, replies to a client, merging cards, canned replies
and the staff list. See docs/api.md, "The inbox"; roles are hub/web/roles.py's. What it answers
is hub/web/inbox_answers.py."""

from __future__ import annotations

from datetime import datetime
from typing import get_args

from aiohttp import web
from pydantic import BaseModel, Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.clients import ClientError, ClientNotFound, merge_clients
from crm_store.conversations import STATUSES, open_conversation, take_over
from crm_store.db import transaction
from crm_store.inbox import (
    ConversationFilter,
    InboxError,
    add_note,
    conversation_row,
    delete_canned,
    list_canned,
    list_inbox,
    mark_read,
    move_notes,
    save_canned,
    staff_names,
    timeline,
)
from crm_store.models import (
    ChannelIdentity,
    Client,
    Conversation,
    Message,
    Staff,
)
from crm_store.timeutil import utcnow
from hub.messages import Author, ChannelName
from hub.pipeline.replies import send_reply
from hub.web import auth, roles
from hub.web.answers import Done, not_null
from hub.web.clients_api import card_view
from hub.web.http_json import (
    MAX_ID,
    answer,
    hub_of,
    positive_int,
    query_datetime,
    query_int,
    query_text,
    read_body,
    refuse,
)
from hub.web.inbox_answers import (
    CannedList,
    ConversationList,
    StaffList,
    StaffMember,
    StaffMemberWithEmail,
    TimelineMessage,
    TimelineNote,
    TimelinePage,
    canned_view,
    conversation_view,
    timeline_message,
    timeline_note,
)

routes = web.RouteTableDef()
MAX_PAGE = 200
CHANNELS: tuple[str, ...] = get_args(ChannelName)


class AssignBody(BaseModel):
    staff_id: int | None = Field(ge=1, le=MAX_ID)


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)
    conversation_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class ClientMessageBody(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    channel: str | None = Field(default=None, max_length=20)
    inbox: str | None = Field(default=None, max_length=100)
    idempotency_key: str | None = Field(default=None, min_length=8, max_length=64)


class MergeBody(BaseModel):
    other_id: int = Field(ge=1, le=MAX_ID)


class CannedBody(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=4000)
    language: str | None = Field(default=None, pattern="^(uk|en|ru)$")


class CannedChangeBody(BaseModel):
    """Only the fields sent are changed; null takes the language away."""

    title: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=not_null()
    )
    text: str | None = Field(
        default=None, min_length=1, max_length=4000, json_schema_extra=not_null()
    )
    language: str | None = Field(default=None, pattern="^(uk|en|ru)$")


# Staff ------------------------------------------------------------------------------------


@routes.get("/api/staff")
async def staff_list(request: web.Request) -> web.Response:
    """The active team. Emails only for owners and admins: a master has no use for them, and
    an email is half of a sign-in."""
    manager = roles.is_manager(await roles.staff_of(request))
    async with hub_of(request).sessions() as session:
        rows = await session.exec(
            select(Staff).where(col(Staff.active).is_(True)).order_by(col(Staff.name))
        )
        body = [
            StaffMemberWithEmail(id=s.id, name=s.name, role=s.role, email=s.email)  # type: ignore[arg-type]
            if manager
            else StaffMember(id=s.id, name=s.name, role=s.role)  # type: ignore[arg-type]
            for s in rows
        ]
    return answer(StaffList(body))


# Conversations ----------------------------------------------------------------------------


@routes.get("/api/conversations")
async def conversations(request: web.Request) -> web.Response:
    staff = await roles.staff_of(request)
    where = _conversation_filter(request)
    master = await roles.master_id_of(request)
    if master is not None:
        # A master sees only their own conversations, whatever the filter asks.
        if where.assignee_id not in (None, master):
            return answer(ConversationList(conversations=[]))
        where.assignee_id = master
    async with hub_of(request).sessions() as session:
        rows = await list_inbox(session, staff.id, where)  # type: ignore[arg-type]
    return answer(ConversationList(conversations=[conversation_view(r) for r in rows]))


def _conversation_filter(request: web.Request) -> ConversationFilter:
    query = request.query
    statuses = tuple(s for s in query.get("status", "").split(",") if s)
    if set(statuses) - set(STATUSES):
        raise refuse(web.HTTPBadRequest, f"status must be among {', '.join(STATUSES)}")
    channel = query.get("channel") or None
    if channel is not None and channel not in CHANNELS:
        raise refuse(web.HTTPBadRequest, f"channel must be one of {', '.join(CHANNELS)}")
    assignee: int | None = None
    wanted = query.get("assignee")
    if wanted == "me":
        assignee = request[auth.STAFF_KEY]
    elif wanted == "none":
        assignee = 0
    elif wanted:
        assignee = positive_int(wanted, "assignee")
    before = query.get("before")
    return ConversationFilter(
        statuses=statuses,
        channel=channel,
        assignee_id=assignee,
        unread_only=query.get("unread") in ("1", "true"),
        query=query_text(request, "q", limit=100),
        limit=query_int(request, "limit", 50, low=1, high=MAX_PAGE),
        before_id=positive_int(before, "before") if before else None,
    )


async def _conversation(request: web.Request) -> Conversation:
    """The conversation of the path, if the caller may touch it (404, 403 otherwise)."""
    conversation_id = positive_int(request.match_info["id"], "id")
    async with hub_of(request).sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise refuse(web.HTTPNotFound, "no such conversation")
    await roles.check_conversation(request, conversation)
    return conversation


@routes.post("/api/conversations/{id}/take")
async def take(request: web.Request) -> web.Response:
    """Staff take the conversation from the bot or the queue: `human`, the caller's."""
    found = await _conversation(request)
    return await _hand_to(request, found.id, request[auth.STAFF_KEY], "taken by staff")  # type: ignore[arg-type]


@routes.post("/api/conversations/{id}/assign")
async def assign(request: web.Request) -> web.Response:
    """To a staff member (`human`, theirs), or to nobody (`waiting`, back in the queue)."""
    await roles.require_manager(request)
    found = await _conversation(request)
    body = await read_body(request, AssignBody)
    if body.staff_id is not None:
        async with hub_of(request).sessions() as session:
            target = await session.get(Staff, body.staff_id)
        if target is None or not target.active:
            raise refuse(
                web.HTTPBadRequest,
                "invalid request",
                details=[{"field": "staff_id", "error": "no such active staff member"}],
            )
    return await _hand_to(request, found.id, body.staff_id, "assigned")  # type: ignore[arg-type]


async def _hand_to(
    request: web.Request, conversation_id: int, staff_id: int | None, reason: str
) -> web.Response:
    hub = hub_of(request)
    async with transaction(hub.sessions) as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise refuse(web.HTTPNotFound, "no such conversation")
        if conversation.status == "closed":
            raise refuse(web.HTTPConflict, "the conversation is closed")
        before_status, before_assignee = conversation.status, conversation.assignee_id
        if staff_id is None:
            conversation.assignee_id = None
            conversation.status = "waiting"
            session.add(conversation)
        else:
            await take_over(session, conversation, staff_id)
        changed = (before_status, before_assignee) != (conversation.status, staff_id)
    if changed:
        await hub.bus.publish_event(
            "conversation",
            conversation_id=conversation_id,
            client_id=conversation.client_id,
            status=conversation.status,
            previous=before_status,
            assignee_id=conversation.assignee_id,
            previous_assignee_id=before_assignee,
            reason=reason,
            staff_id=request[auth.STAFF_KEY],
        )
    return await _one(request, conversation_id)


@routes.post("/api/conversations/{id}/read")
async def read(request: web.Request) -> web.Response:
    found = await _conversation(request)
    async with transaction(hub_of(request).sessions) as session:
        await mark_read(session, request[auth.STAFF_KEY], found.id)  # type: ignore[arg-type]
    return await _one(request, found.id)  # type: ignore[arg-type]


async def _one(request: web.Request, conversation_id: int) -> web.Response:
    async with hub_of(request).sessions() as session:
        row = await conversation_row(session, request[auth.STAFF_KEY], conversation_id)
    if row is None:
        raise refuse(web.HTTPNotFound, "no such conversation")
    return answer(conversation_view(row))


# A client's timeline, notes and replies ----------------------------------------------------


async def _client_id(request: web.Request) -> int:
    client_id = positive_int(request.match_info["id"], "id")
    await roles.check_client(request, client_id)
    async with hub_of(request).sessions() as session:
        if await session.get(Client, client_id) is None:
            raise refuse(web.HTTPNotFound, f"no client with id {client_id}")
    return client_id


@routes.get("/api/clients/{id}/timeline")
async def client_timeline(request: web.Request) -> web.Response:
    """Oldest first; `before` (an item's `at`) pages back to earlier items."""
    client_id = await _client_id(request)
    limit = query_int(request, "limit", 100, low=1, high=MAX_PAGE)
    before = query_datetime(request, "before")
    async with hub_of(request).sessions() as session:
        found = await timeline(session, client_id, before=before, limit=limit)
    items: list[TimelineMessage | TimelineNote] = [
        timeline_message(m, found.staff_names) for m in found.messages
    ]
    items += [timeline_note(n, found.staff_names) for n in found.notes]
    items.sort(key=lambda item: (datetime.fromisoformat(item.at), item.kind == "note"))
    return answer(TimelinePage(items=items, more=found.more))


@routes.post("/api/clients/{id}/notes")
async def create_note(request: web.Request) -> web.Response:
    """A private note: stored and audited, never sent to the client."""
    client_id = await _client_id(request)
    body = await read_body(request, NoteBody)
    staff_id = request[auth.STAFF_KEY]
    try:
        async with transaction(hub_of(request).sessions) as session:
            note = await add_note(
                session,
                client_id,
                staff_id=staff_id,
                text=body.text,
                conversation_id=body.conversation_id,
            )
            names = await staff_names(session, {staff_id})
    except InboxError as exc:
        kind = web.HTTPNotFound if exc.status == 404 else web.HTTPBadRequest
        raise refuse(kind, str(exc)) from None
    return answer(timeline_note(note, names), 201)


@routes.post("/api/clients/{id}/messages")
async def client_message(request: web.Request) -> web.Response:
    """A staff reply to the client: on the channel of their latest message, or the chosen one
    among their identities. A closed conversation is not reopened: the chat gets a new one,
    as when the client writes again; the reply takes it."""
    client_id = await _client_id(request)
    body = await read_body(request, ClientMessageBody)
    hub = hub_of(request)
    staff_id = request[auth.STAFF_KEY]
    async with transaction(hub.sessions) as session:
        channel, inbox, chat_id = await _reply_chat(session, client_id, body)
        conversation, _ = await open_conversation(
            session,
            client_id=client_id,
            channel=channel,
            inbox=inbox,
            chat_id=chat_id,
            now=utcnow(),
        )
        # The staff row is loaded already (no second session while this one writes).
        await roles.check_conversation(request, conversation)
    queued = await send_reply(
        hub.sessions,
        hub.bus,
        conversation_id=conversation.id,  # type: ignore[arg-type]
        text=body.text,
        author=Author.staff,
        staff_id=staff_id,
        idempotency_key=f"staff:{body.idempotency_key}" if body.idempotency_key else None,
    )
    async with transaction(hub.sessions) as session:
        # Who answers has read what they answer.
        await mark_read(session, staff_id, conversation.id)  # type: ignore[arg-type]
        names = await staff_names(session, {staff_id})
    return answer(timeline_message(queued.message, names), 201 if queued.created else 200)


async def _reply_chat(
    session: AsyncSession, client_id: int, body: ClientMessageBody
) -> tuple[str, str, str]:
    """(channel, inbox, chat id) to answer the client on."""
    if body.channel is None:
        if body.inbox is not None:
            raise _field_error("inbox", "give the channel with the inbox")
        latest = (
            await session.exec(
                select(Conversation)
                .join(Message, col(Message.conversation_id) == Conversation.id)
                .where(Message.client_id == client_id, Message.direction == "in")
                .order_by(col(Message.id).desc())
                .limit(1)
            )
        ).first()
        if latest is None:
            raise _field_error("channel", "the client has not written yet: choose a channel")
        return latest.channel, latest.inbox, latest.chat_id
    identities = select(ChannelIdentity).where(
        ChannelIdentity.client_id == client_id, ChannelIdentity.channel == body.channel
    )
    if body.inbox is not None:
        identities = identities.where(ChannelIdentity.inbox == body.inbox)
    identity = (await session.exec(identities.order_by(col(ChannelIdentity.id).desc()))).first()
    if identity is None:
        raise _field_error("channel", "the client has no identity on that channel and inbox")
    # The chat of the client's latest conversation there (a group or thread id may differ
    # from the person's id); the person's id when they never had one.
    latest = (
        await session.exec(
            select(Conversation)
            .where(
                Conversation.client_id == client_id,
                Conversation.channel == identity.channel,
                Conversation.inbox == identity.inbox,
            )
            .order_by(col(Conversation.id).desc())
            .limit(1)
        )
    ).first()
    chat_id = latest.chat_id if latest is not None else identity.external_id
    return identity.channel, identity.inbox, chat_id


def _field_error(name: str, error: str) -> web.HTTPError:
    return refuse(web.HTTPBadRequest, "invalid request", details=[{"field": name, "error": error}])


@routes.post("/api/clients/{id}/merge")
async def merge(request: web.Request) -> web.Response:
    """The other card is folded into this one; both get an audit entry."""
    staff = await roles.require_manager(request)
    client_id = positive_int(request.match_info["id"], "id")
    body = await read_body(request, MergeBody)
    hub = hub_of(request)
    try:
        async with transaction(hub.sessions) as session:
            await merge_clients(session, body.other_id, client_id, actor="staff", staff_id=staff.id)
            await move_notes(session, body.other_id, client_id)
    except ClientNotFound as exc:
        raise refuse(web.HTTPNotFound, str(exc)) from None
    except ClientError as exc:
        raise refuse(web.HTTPBadRequest, str(exc)) from None
    async with hub.sessions() as session:
        card = await card_view(session, client_id, await hub.rules(session))
    return answer(card)


# Canned replies ----------------------------------------------------------------------------


@routes.get("/api/canned")
async def canned(request: web.Request) -> web.Response:
    async with hub_of(request).sessions() as session:
        rows = await list_canned(session)
    return answer(CannedList([canned_view(c) for c in rows]))


@routes.post("/api/canned")
async def create_canned(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    body = await read_body(request, CannedBody)
    async with transaction(hub_of(request).sessions) as session:
        saved = await save_canned(session, body.model_dump())
    return answer(canned_view(saved), 201)


@routes.patch("/api/canned/{id}")
async def change_canned(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    canned_id = positive_int(request.match_info["id"], "id")
    changes = (await read_body(request, CannedChangeBody)).model_dump(exclude_unset=True)
    for key in ("title", "text"):
        if key in changes and changes[key] is None:
            raise _field_error(key, "can't be null")
    try:
        async with transaction(hub_of(request).sessions) as session:
            saved = await save_canned(session, changes, canned_id)
    except InboxError as exc:
        raise refuse(web.HTTPNotFound, str(exc)) from None
    return answer(canned_view(saved))


@routes.delete("/api/canned/{id}")
async def remove_canned(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    canned_id = positive_int(request.match_info["id"], "id")
    try:
        async with transaction(hub_of(request).sessions) as session:
            await delete_canned(session, canned_id)
    except InboxError as exc:
        raise refuse(web.HTTPNotFound, str(exc)) from None
    return answer(Done())
