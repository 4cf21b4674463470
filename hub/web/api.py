"""The staff JSON API under /api/ (session cookie from /api/auth/login)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, RootModel

from channels.base import AttachmentUnavailable
from crm_store.conversations import conversation_messages
from crm_store.db import transaction
from crm_store.inbox import mark_read, master_sees_attachment
from crm_store.models import Conversation, Staff
from crm_store.staff import authenticate
from hub.forwarded import client_address, secure_cookies
from hub.messages import Author
from hub.pipeline.events import message_frame
from hub.pipeline.handoff import HandoffError, close, give_back
from hub.pipeline.replies import send_reply
from hub.web import auth, roles
from hub.web.answers import Done, MessageFrame, Time
from hub.web.client_files import file_headers
from hub.web.http_json import answer, hub_of, positive_int, read_body, refuse
from hub.web.login_throttle import DEVICE_COOKIE, DEVICE_COOKIE_PATH, DEVICE_TTL_S, LoginThrottle

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


class LoginBody(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1000)


class ReplyBody(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    idempotency_key: str | None = Field(default=None, min_length=8, max_length=64)


class SignedIn(BaseModel):
    """The signed-in staff member, with the CSRF token their session's changes must carry."""

    id: int
    email: str
    name: str
    role: str
    csrf_token: str


class ChannelHealth(BaseModel):
    channel: str
    state: Literal["ok", "paused", "error"]
    reason: str
    until: Time | None


class ChannelList(RootModel[list[ChannelHealth]]):
    pass


class MessageList(BaseModel):
    messages: list[MessageFrame]


class Moved(BaseModel):
    """A conversation given back to the bot or closed: nobody's any more."""

    id: int
    status: str
    assignee_id: None


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    hub = hub_of(request)
    throttle = LoginThrottle(hub.redis)
    device = request.cookies.get(DEVICE_COOKIE)
    attempt = await throttle.attempt(body.email, client_address(request), device)
    if isinstance(attempt, int):
        log.info("login refused: too many failed attempts (wait %ss)", attempt)
        refused = refuse(
            web.HTTPTooManyRequests,
            "too many failed attempts; try again later",
            retry_after=attempt,
        )
        refused.headers["Retry-After"] = str(attempt)
        raise refused
    async with transaction(hub.sessions) as session:
        staff = await authenticate(session, body.email, body.password)
    if staff is None:
        await throttle.failed(attempt)
        log.info("failed staff login")
        raise refuse(web.HTTPUnauthorized, "wrong email or password")
    device = await throttle.succeeded(attempt, device)
    settings = hub.settings
    max_age = settings.hub_session_days * 86400
    token, csrf = await auth.open_session(hub.redis, staff.id, max_age)  # type: ignore[arg-type]
    response = answer(_signed_in(staff, csrf))
    secure = secure_cookies(request, settings.cookie_secure)
    for name, value, httponly in ((auth.COOKIE, token, True), (auth.CSRF_COOKIE, csrf, False)):
        # The CSRF cookie is readable by the inbox's scripts, which send it back as a header.
        response.set_cookie(
            name,
            value,
            httponly=httponly,
            samesite="Strict",
            secure=secure,
            max_age=max_age,
            path="/",
        )
    response.set_cookie(
        DEVICE_COOKIE,
        device,
        httponly=True,
        samesite="Strict",
        secure=secure,
        max_age=DEVICE_TTL_S,
        path=DEVICE_COOKIE_PATH,
    )
    return response


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    await auth.close_session(hub_of(request).redis, request.cookies.get(auth.COOKIE))
    response = answer(Done())
    response.del_cookie(auth.COOKIE, path="/")
    response.del_cookie(auth.CSRF_COOKIE, path="/")
    return response


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    staff = await roles.staff_of(request)
    return answer(_signed_in(staff, request[auth.CSRF_KEY]))


@routes.get("/api/channels")
async def channels(request: web.Request) -> web.Response:
    """The channels that are on, each with its state (ok, paused with a reason, error)."""
    hub = hub_of(request)
    return answer(
        ChannelList(
            [
                ChannelHealth(channel=name, **ch.status().as_json())
                for name, ch in sorted(hub.channels.items())
            ]
        )
    )


@routes.get("/api/conversations/{id}/messages")
async def messages(request: web.Request) -> web.Response:
    conversation_id = positive_int(request.match_info["id"], "id")
    # The caller is looked up first: a second session inside this one would wait for
    # SQLite's write lock that this one holds.
    await roles.staff_of(request)
    async with hub_of(request).sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise refuse(web.HTTPNotFound, "no such conversation")
        await roles.check_conversation(request, conversation)
        rows = await conversation_messages(session, conversation_id)
    return answer(MessageList(messages=[MessageFrame(**message_frame(m)) for m in rows]))


@routes.post("/api/conversations/{id}/messages")
async def reply(request: web.Request) -> web.Response:
    conversation_id = positive_int(request.match_info["id"], "id")
    body = await read_body(request, ReplyBody)
    hub = hub_of(request)
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise refuse(web.HTTPNotFound, "no such conversation")
    await roles.check_conversation(request, conversation)
    if conversation.status == "closed":
        raise refuse(web.HTTPConflict, "the conversation is closed")
    queued = await send_reply(
        hub.sessions,
        hub.bus,
        conversation_id=conversation_id,
        text=body.text,
        author=Author.staff,
        staff_id=request[auth.STAFF_KEY],
        idempotency_key=f"staff:{body.idempotency_key}" if body.idempotency_key else None,
    )
    async with transaction(hub.sessions) as session:
        # Who answers has read what they answer.
        await mark_read(session, request[auth.STAFF_KEY], conversation_id)
    frame = MessageFrame(**message_frame(queued.message))
    return answer(frame, 201 if queued.created else 200)


@routes.post("/api/conversations/{id}/release")
async def release(request: web.Request) -> web.Response:
    """Give the conversation back to the bot."""
    return await _move(request, give_back)


@routes.post("/api/conversations/{id}/close")
async def close_conversation(request: web.Request) -> web.Response:
    return await _move(request, close)


async def _move(request: web.Request, action: Any) -> web.Response:
    conversation_id = positive_int(request.match_info["id"], "id")
    hub = hub_of(request)
    async with hub.sessions() as session:
        found = await session.get(Conversation, conversation_id)
    if found is None:
        raise refuse(web.HTTPNotFound, "no such conversation")
    await roles.check_conversation(request, found)
    try:
        conversation = await action(
            hub.sessions, hub.bus, conversation_id, staff_id=request[auth.STAFF_KEY]
        )
    except HandoffError as exc:
        missing = "no conversation" in str(exc)
        raise refuse(web.HTTPNotFound if missing else web.HTTPConflict, str(exc)) from None
    return answer(Moved(id=conversation.id, status=conversation.status, assignee_id=None))


@routes.get("/api/attachments/{channel}/{inbox}/{ref}")
async def attachment(request: web.Request) -> web.StreamResponse:
    """A client's file (photo, document, voice) fetched from the provider for staff, served
    so that nothing in it can run (hub/web/client_files.py)."""
    hub = hub_of(request)
    channel = hub.channels.get(request.match_info["channel"])
    if channel is None:
        raise refuse(web.HTTPNotFound, "no such channel")
    if any("\x00" in request.match_info[k] for k in ("inbox", "ref")):
        # No file is named so; and PostgreSQL can't even compare such a name.
        raise refuse(web.HTTPNotFound, "no such file")
    master = await roles.master_id_of(request)
    if master is not None:
        async with hub.sessions() as session:
            if not await master_sees_attachment(
                session, master, *(request.match_info[k] for k in ("channel", "inbox", "ref"))
            ):
                raise refuse(web.HTTPForbidden, roles.NOT_YOURS)
    try:
        fetched = await channel.fetch_attachment(
            request.match_info["inbox"], request.match_info["ref"]
        )
    except AttachmentUnavailable as exc:
        raise refuse(web.HTTPNotFound, str(exc)) from None
    content_type, headers = file_headers(fetched)
    return web.Response(body=fetched.content, content_type=content_type, headers=headers)


def _signed_in(staff: Staff, csrf: str) -> SignedIn:
    return SignedIn(
        id=staff.id,  # type: ignore[arg-type]
        email=staff.email,
        name=staff.name,
        role=staff.role,
        csrf_token=csrf,
    )
