"""The web chat: a page at /chat and a WebSocket at /ws/chat.

A visitor is known by an unguessable id in a cookie; their messages travel the same pipeline
as any channel's. Replies reach every open tab of the visitor, in whichever hub process holds
the socket, through the hub's fan-out. A reload shows the history.

Frames from the visitor: {"type": "message", "text": ..., "client_id": optional}
Frames to the visitor:   {"type": "message", "direction": "in"|"out", "text", "id", "at"}
                         {"type": "ready"} after the history; {"type": "error", ...}
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from channels.base import Channel, ChannelContext, Route
from channels.webhook import parse_json
from hub.messages import (
    ContactHints,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
)
from prompts import pick_language, ui_strings

log = logging.getLogger(__name__)

COOKIE = "hub_visitor"
COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_TEXT = 4000
_VISITOR_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
PAGE = Path(__file__).with_name("static") / "webchat.html"


@cache
def _page_template() -> str:
    return PAGE.read_text(encoding="utf-8")


class RateLimit:
    """A token bucket per socket: a burst of `burst`, then one message per `per` seconds."""

    def __init__(self, burst: int = 8, per: float = 1.0) -> None:
        self.burst = burst
        self.per = per
        self.tokens = float(burst)
        self.at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) / self.per)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class WebChatChannel(Channel):
    name = "webchat"

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str = "site",
        *,
        secure_cookie: Callable[[web.Request], bool] = lambda request: False,
    ):
        super().__init__(ctx, inbox)
        # Per request: behind a TLS proxy the hub learns it from the request (hub/forwarded.py).
        self.secure_cookie = secure_cookie
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.topic = f"webchat:{inbox}"
        ctx.on_fanout(self.topic, self._on_fanout)

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/chat", self.page, "webchat-page"),
            Route("GET", "/ws/chat", self.socket, "webchat-socket"),
        ]

    async def stop(self) -> None:
        for sockets in list(self.sockets.values()):
            for ws in list(sockets):
                await ws.close(code=1001, message=b"server shutdown")
        self.sockets.clear()

    # The page --------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        language = pick_language(request.query.get("lang"), request.headers.get("Accept-Language"))
        strings = ui_strings("webchat", language)
        html = (
            _page_template()
            .replace("__LANG__", language)
            .replace("__TITLE__", _escape(strings["title"]))
            .replace("__STRINGS__", json.dumps(strings, ensure_ascii=False).replace("</", "<\\/"))
            .replace("__WS_PATH__", f"/ws/chat?lang={language}")
        )
        response = web.Response(text=html, content_type="text/html")
        self._ensure_cookie(request, response)
        return response

    def _visitor(self, request: web.Request) -> str | None:
        value = request.cookies.get(COOKIE, "")
        return value if _VISITOR_RE.match(value) else None

    def _ensure_cookie(self, request: web.Request, response: web.StreamResponse) -> str:
        visitor = self._visitor(request)
        if visitor is None:
            visitor = secrets.token_urlsafe(18)
        response.set_cookie(
            COOKIE,
            visitor,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=self.secure_cookie(request),
            path="/",
        )
        return visitor

    # The socket ------------------------------------------------------------------------

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
        visitor = self._ensure_cookie(request, ws)
        language = pick_language(request.query.get("lang"), request.headers.get("Accept-Language"))
        await ws.prepare(request)
        self.sockets[visitor].add(ws)
        try:
            for frame in await self.ctx.history(self.name, self.inbox, visitor):
                await ws.send_json({"type": "message", **_public(frame)})
            await ws.send_json({"type": "ready", "visitor": visitor[:6]})
            limiter = RateLimit()
            async for raw in ws:
                if raw.type == WSMsgType.TEXT:
                    await self._on_frame(ws, visitor, language, raw.data, limiter)
                elif raw.type == WSMsgType.BINARY:
                    # Answered like any other bad frame, so a client is never left waiting.
                    await _error(ws, "bad_frame", "frames are JSON text")
                elif raw.type == WSMsgType.ERROR:
                    log.info("web chat socket error: %s", ws.exception())
        finally:
            self.sockets[visitor].discard(ws)
            if not self.sockets[visitor]:
                self.sockets.pop(visitor, None)
        return ws

    async def _on_frame(
        self,
        ws: web.WebSocketResponse,
        visitor: str,
        language: str,
        data: str,
        limiter: RateLimit,
    ) -> None:
        try:
            # NUL and lone surrogates (as \u escapes) made harmless, or the message could not
            # be published (surrogates) or stored (NUL, on PostgreSQL).
            frame = parse_json(data)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            frame = None
        if not isinstance(frame, dict) or frame.get("type") != "message":
            log.info("web chat: malformed frame from %s…", visitor[:6])
            await _error(ws, "bad_frame", 'expected {"type": "message", "text": "..."}')
            return
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            await _error(ws, "bad_frame", "text must be a non-empty string")
            return
        if len(text) > MAX_TEXT:
            await _error(ws, "too_long", f"text is longer than {MAX_TEXT} characters")
            return
        if not limiter.allow():
            await _error(ws, "too_fast", "too many messages, slow down")
            return
        client_id = frame.get("client_id")
        if not (isinstance(client_id, str) and _CLIENT_ID_RE.match(client_id)):
            client_id = secrets.token_hex(12)
        msg = InboundMessage(
            channel="webchat",
            inbox=self.inbox,
            chat_id=visitor,
            sender_id=visitor,
            # Scoped to the visitor so nobody can collide with another visitor's message ids.
            provider_message_id=f"{visitor}:{client_id}",
            text=text.strip(),
            contact=ContactHints(language=language),
            private=True,  # one visitor's own page
        )
        await self.ctx.publish(msg)
        echo = {
            "type": "message",
            "direction": "in",
            "text": msg.text,
            "id": msg.id,
            "at": msg.received_at.isoformat(),
        }
        await self.ctx.fanout(self.topic, {"chat_id": visitor, "frame": echo})

    # Outbound --------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        frame = {
            "type": "message",
            "direction": "out",
            "text": msg.text,
            "id": msg.id,
            "at": msg.created_at.isoformat(),
        }
        if msg.quick_replies:
            frame["quick_replies"] = [q.text for q in msg.quick_replies]
        await self.ctx.fanout(self.topic, {"chat_id": msg.chat_id, "frame": frame})
        # Offline visitors see it in the history on their next visit: stored is sent.
        return DeliveryStatus(
            outbound_id=msg.id, status=DeliveryState.sent, provider_message_id=msg.id
        )

    async def _on_fanout(self, payload: dict[str, Any]) -> None:
        sockets = self.sockets.get(str(payload.get("chat_id")), ())
        for ws in list(sockets):
            if not ws.closed:
                try:
                    await ws.send_json(payload["frame"])
                except ConnectionError:
                    log.debug("web chat socket went away mid-send")


def _public(frame: dict[str, Any]) -> dict[str, Any]:
    return {k: frame[k] for k in ("direction", "text", "id", "at") if k in frame}


async def _error(ws: web.WebSocketResponse, code: str, error: str) -> None:
    await ws.send_json({"type": "error", "code": code, "error": error})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
