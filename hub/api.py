"""The staff JSON API under /api/ (session cookie from /api/auth/login)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, Field

from channels.base import AttachmentUnavailable
from crm_store.conversations import conversation_messages
from crm_store.db import transaction
from crm_store.inbox import mark_read, master_sees_attachment
from crm_store.models import Conversation, Staff
from crm_store.staff import authenticate
from hub import auth, roles
from hub.events import message_frame
from hub.handoff import HandoffError, close, give_back
from hub.http_json import hub_of, positive_int, read_body, refuse
from hub.messages import Author
from hub.replies import send_reply

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


class LoginBody(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1000)


class ReplyBody(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    idempotency_key: str | None = Field(default=None, min_length=8, max_length=64)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    hub = hub_of(request)
    address = request.remote or "unknown"
    wait = await auth.login_blocked(hub.redis, body.email, address)
    if wait:
        log.info("login refused: too many failed attempts")
        return web.json_response(
            {"error": "too many failed attempts; try again later", "retry_after": wait},
            status=429,
            headers={"Retry-After": str(wait)},
        )
    async with transaction(hub.sessions) as session:
        staff = await authenticate(session, body.email, body.password)
    if staff is None:
        await auth.login_failed(hub.redis, body.email, address)
        log.info("failed staff login")
        return web.json_response({"error": "wrong email or password"}, status=401)
    await auth.login_succeeded(hub.redis, body.email, address)
    settings = hub.settings
    max_age = settings.hub_session_days * 86400
    token, csrf = await auth.open_session(hub.redis, staff.id, max_age)  # type: ignore[arg-type]
    response = web.json_response({**_staff_json(staff), "csrf_token": csrf})
    for name, value, httponly in ((auth.COOKIE, token, True), (auth.CSRF_COOKIE, csrf, False)):
        # The CSRF cookie is readable by the inbox's scripts, which send it back as a header.
        response.set_cookie(
            name,
            value,
            httponly=httponly,
            samesite="Strict",
            secure=settings.cookie_secure,
            max_age=max_age,
            path="/",
        )
    return response


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    await auth.close_session(hub_of(request).redis, request.cookies.get(auth.COOKIE))
    response = web.json_response({"ok": True})
    response.del_cookie(auth.COOKIE, path="/")
    response.del_cookie(auth.CSRF_COOKIE, path="/")
    return response


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    async with hub_of(request).sessions() as session:
        staff = await session.get(Staff, request[auth.STAFF_KEY])
    if staff is None or not staff.active:
        raise refuse(web.HTTPUnauthorized, "not signed in")
    return web.json_response({**_staff_json(staff), "csrf_token": request[auth.CSRF_KEY]})


@routes.get("/api/channels")
async def channels(request: web.Request) -> web.Response:
    """The channels that are on, each with its state (ok, paused with a reason, error)."""
    hub = hub_of(request)
    return web.json_response(
        [{"channel": name, **ch.status().as_json()} for name, ch in sorted(hub.channels.items())]
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
            return web.json_response({"error": "no such conversation"}, status=404)
        await roles.check_conversation(request, conversation)
        rows = await conversation_messages(session, conversation_id)
    return web.json_response({"messages": [message_frame(m) for m in rows]})


@routes.post("/api/conversations/{id}/messages")
async def reply(request: web.Request) -> web.Response:
    conversation_id = positive_int(request.match_info["id"], "id")
    body = await read_body(request, ReplyBody)
    hub = hub_of(request)
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return web.json_response({"error": "no such conversation"}, status=404)
    await roles.check_conversation(request, conversation)
    if conversation.status == "closed":
        return web.json_response({"error": "the conversation is closed"}, status=409)
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
    return web.json_response(message_frame(queued.message), status=201 if queued.created else 200)


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
    return web.json_response(
        {"id": conversation.id, "status": conversation.status, "assignee_id": None}
    )


@routes.get("/api/attachments/{channel}/{inbox}/{ref}")
async def attachment(request: web.Request) -> web.StreamResponse:
    """A client's file (photo, document, voice) fetched from the provider for staff."""
    hub = hub_of(request)
    channel = hub.channels.get(request.match_info["channel"])
    if channel is None:
        raise refuse(web.HTTPNotFound, "no such channel")
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
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if fetched.name:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(fetched.name)}"
    return web.Response(
        body=fetched.content,
        content_type=fetched.mime_type or "application/octet-stream",
        headers=headers,
    )


def _staff_json(staff: Staff) -> dict[str, Any]:
    return {"id": staff.id, "email": staff.email, "name": staff.name, "role": staff.role}
