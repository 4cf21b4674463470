"""Helpers for tests: a hub running on a free port, waiting on conditions, publishing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import create_engine, session_factory, transaction
from crm_store.models import Conversation, Message
from crm_store.timeutil import as_utc
from hub.config import Settings
from hub.messages import Author
from hub.pipeline.replies import send_reply
from hub.state import Hub
from hub.web.app import AccessLogger, create_app

T = TypeVar("T")


@dataclass
class RunningHub:
    hub: Hub
    runner: web.AppRunner
    base_url: str

    async def stop(self) -> None:
        await self.hub.stop()
        await self.runner.cleanup()
        await self.hub.close()

    def ws_url(self, path: str) -> str:
        return self.base_url.replace("http://", "ws://") + path


async def start_hub(settings: Settings, **hub_kwargs: Any) -> RunningHub:
    hub = Hub(settings, **hub_kwargs)
    await hub.open()
    await hub.start()
    runner = web.AppRunner(create_app(hub), handle_signals=False, access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return RunningHub(hub, runner, f"http://{host}:{port}")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll until probe() returns something truthy; the pipeline is asynchronous by design."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


async def login(session: aiohttp.ClientSession, base_url: str, email: str, password: str) -> int:
    """Sign in; on success the session sends the CSRF token with every later request, as the
    inbox's pages do."""
    async with session.post(
        f"{base_url}/api/auth/login", json={"email": email, "password": password}
    ) as response:
        if response.status == 200:
            session.headers["X-CSRF-Token"] = (await response.json())["csrf_token"]
        return response.status


async def status_of(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with session.request(method, url, **kwargs) as response:
        return response.status


async def next_frame(
    ws: aiohttp.ClientWebSocketResponse, kind: str = "message", timeout: float = 10.0
) -> dict[str, Any]:
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), timeout)
        if frame.get("type") == kind:
            return frame


def client_session() -> aiohttp.ClientSession:
    """A browser-like session: keeps cookies set by 127.0.0.1 (aiohttp refuses IP cookies)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


# Reading what a running hub stored -------------------------------------------------------


async def rows(running: RunningHub, model: Any, *where: Any) -> list[Any]:
    """Rows of a table matching `where`, in insertion order."""
    async with running.hub.sessions() as session:
        query = select(model).where(*where).order_by(col(model.id))
        return list((await session.exec(query)).all())


async def stored_in(running: RunningHub, text: str) -> Message:
    """The one inbound message with this text, once the pipeline has stored it."""
    (message,) = await eventually(
        lambda: rows(running, Message, Message.direction == "in", Message.text == text)
    )
    return message


async def reply(
    running: RunningHub,
    conversation_id: int,
    text: str,
    author: Author = Author.staff,
    **kw: Any,
) -> str:
    """Queue a reply as staff (or `author`) would; its public id."""
    queued = await send_reply(
        running.hub.sessions,
        running.hub.bus,
        conversation_id=conversation_id,
        text=text,
        author=author,
        **kw,
    )
    return queued.message.public_id


async def settled(running: RunningHub, public_id: str, *states: str) -> Message:
    """The outbound message once its delivery status is one of `states`."""

    async def probe() -> Message | None:
        (message,) = await rows(running, Message, Message.public_id == public_id)
        return message if message.status in states else None

    return await eventually(probe)


def on_db(db: str, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `action` in a transaction of its own, outside any running event loop (beside a
    command under test that runs its own)."""

    async def run() -> T:
        engine = create_engine(db)
        try:
            async with transaction(session_factory(engine)) as session:
                return await action(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def message_row(
    conversation: Conversation, at: datetime, direction: str, author: str, text: str, n: int
) -> Message:
    """A stored message of a conversation at a chosen time (analytics test data)."""
    return Message(
        public_id=f"m{conversation.id}x{n}",
        conversation_id=conversation.id,  # type: ignore[arg-type]
        client_id=conversation.client_id,
        channel=conversation.channel,
        inbox="main",
        direction=direction,
        author=author,
        text=text,
        status="received" if direction == "in" else "delivered",
        created_at=as_utc(at),
        sent_at=as_utc(at),
    )


class FakeTime:
    """A channel's clock and sleep: sleeping moves the clock, nobody waits (so a Retry-After
    or Telegram's one-message-a-second spacing costs a test nothing)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
