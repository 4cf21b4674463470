"""Property-based fuzzing of the web chat (issue 10): its page, its socket's handshake, and
the frames a visitor's socket may send (tests/fuzz_strategies.py `chat_frames`).

Every frame gets one answer: the echo of a message the hub took, an error frame, or (only
for a frame over the size limit, or text that is not UTF-8) a clean close; never a crashed
socket. An error hands nothing to the hub, an echo exactly one message. Afterwards the
pipeline has stored what it took (nothing dead or pending), /healthz answers 200, and a new
visitor's message is still taken and stored.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import WSMsgType
from hypothesis import strategies as st

from channels.webchat import MAX_TEXT
from channels.webhook import parse_json
from hub.config import Settings
from tests.fuzz_strategies import (
    Call,
    Frame,
    chat_frames,
    header_bytes,
    texts,
)
from tests.support import RunningHub, client_session, next_frame, start_hub, stored_in
from tests.test_fuzz_ingress import Ingress, on_own_loop

# Codes of a clean close: the frame was too big (1009) or its text not UTF-8 (1007).
CLOSE_CODES = {"huge": {1009}, "not UTF-8": {1007}}


async def plain_hub(settings: Settings, stack: AsyncExitStack) -> RunningHub:
    running = await start_hub(settings)
    stack.push_async_callback(running.stop)
    return running


@pytest.fixture
def chat(settings: Settings, redis: Any) -> Iterator[Ingress]:
    del redis  # flushed before the hub starts
    yield from on_own_loop(settings, plain_hub)


class Visitor:
    """One browser: a cookie, and a socket opened again whenever the last one closed or the
    rate limit answered (a new socket has a new allowance)."""

    def __init__(self, chat: Ingress) -> None:
        self.chat = chat
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.echoes = 0

    async def socket(self) -> aiohttp.ClientWebSocketResponse:
        if self.http is None:
            self.http = client_session()
        if self.ws is None or self.ws.closed:
            ws = await self.http.ws_connect(self.chat.hub.ws_url("/ws/chat"), max_msg_size=0)
            await next_frame(ws, "ready")  # after the history
            self.ws = ws
        return self.ws

    async def reopen(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.ws = None

    async def close(self) -> None:
        await self.reopen()
        if self.http is not None:
            await self.http.close()

    async def exchange(self, frame: Frame) -> None:
        ws = await self.socket()
        before = await self.chat.inbound_total()
        if frame.binary:
            await ws.send_bytes(frame.data)
        else:
            await ws.send_frame(frame.data, WSMsgType.TEXT)
        answer = await ws.receive(timeout=10)
        taken = await self.chat.inbound_total() - before
        self.chat.published += taken
        if answer.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            assert ws.close_code in CLOSE_CODES.get(frame.what, set()), (
                f"{frame.what}: closed with {ws.close_code}"
            )
            assert taken == 0
            await self.reopen()
            return
        assert answer.type == WSMsgType.TEXT, f"{frame.what}: {answer.type} {answer.data!r}"
        reply = json.loads(answer.data)
        if reply["type"] == "message":
            assert reply["direction"] == "in" and _could_be_a_message(frame)
            assert taken == 1, f"{frame.what}: echoed, {taken} taken"
            self.echoes += 1
            return
        assert reply["type"] == "error", reply
        assert reply["code"] in ("bad_frame", "too_long", "too_fast"), reply
        assert taken == 0, f"{frame.what}: refused ({reply['code']}) but {taken} taken"
        if reply["code"] == "too_fast":
            await self.reopen()


def _could_be_a_message(frame: Frame) -> bool:
    """Only a JSON object of type "message" with a text may be taken (read as the channel
    reads it: NUL dropped, so "\u0000message" is "message")."""
    try:
        doc = parse_json(frame.data)
    except (ValueError, RecursionError):
        return False
    text = doc.get("text") if isinstance(doc, dict) else None
    return doc.get("type") == "message" and isinstance(text, str) and 0 < len(text) <= MAX_TEXT


def test_webchat_socket(chat: Ingress) -> None:
    visitor = Visitor(chat)
    pinned = (
        Frame("found", b'{"type": "message", "text": "a\\u0000b"}'),  # NUL: dead on PostgreSQL
        Frame("found", b'{"type": "message", "text": "\\ud800 hi"}'),  # no UTF-8: socket crashed
        Frame("deep", b"[" * 5000 + b"]" * 5000),  # RecursionError: socket crashed
        Frame("binary", b"\x00\x01", binary=True),  # was never answered
    )
    try:
        chat.fuzz(chat_frames, visitor.exchange, pinned=pinned)
        assert visitor.echoes >= 1  # the pinned messages at least went all the way
        chat.settled()
        assert chat.published == visitor.echoes
        chat.run(_a_new_visitor_still_writes(chat))
    finally:
        chat.run(visitor.close())


async def _a_new_visitor_still_writes(chat: Ingress) -> None:
    text = f"still here {secrets.token_hex(4)}"
    async with client_session() as http:
        ws = await http.ws_connect(chat.hub.ws_url("/ws/chat"))
        await next_frame(ws, "ready")
        await ws.send_json({"type": "message", "text": text})
        assert (await next_frame(ws))["text"] == text
        await ws.close()
    await stored_in(chat.hub, text)


@st.composite
def page_requests(draw: st.DrawFn) -> Call:
    """The page and the socket's URL as anything may ask for them: any language, any
    Accept-Language and Cookie bytes, a socket request that is no WebSocket handshake."""
    path = draw(st.sampled_from(("/chat", "/ws/chat")))
    lang = draw(
        st.one_of(st.none(), texts, st.binary(max_size=10).map(lambda b: b.decode("latin-1")))
    )
    target = path if lang is None else f"{path}?lang={quote(lang.encode('utf-8', 'surrogatepass'))}"
    headers = tuple(
        (name, draw(header_bytes))
        for name in (b"Accept-Language", b"Cookie")
        if draw(st.booleans())
    )
    if path == "/ws/chat" and draw(st.booleans()):
        headers += ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"))  # no key: refused
    # A header the HTTP parser refuses is a 400 before the hub sees it.
    answers = {200, 400} if path == "/chat" else {400}
    return Call("page", "GET", target, headers, b"", frozenset(answers))


def test_webchat_page_and_handshake(chat: Ingress) -> None:
    chat.fuzz(page_requests())
    assert chat.published == 0
    chat.settled()
    chat.run(_a_new_visitor_still_writes(chat))
