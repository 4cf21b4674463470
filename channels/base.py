"""The interface every channel implements, and what the hub hands each channel.

A channel turns provider payloads into `InboundMessage` (given to `ctx.publish`), turns an
`OutboundMessage` into a provider call in `send`, and reports later delivery receipts with
`ctx.report`. Anything it needs from the CRM (the web chat's history) it asks `ctx` for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from hub.messages import DeliveryStatus, InboundMessage, OutboundMessage

FanoutHandler = Callable[[dict[str, Any]], Awaitable[None]]


class ChannelContext(Protocol):
    async def publish(self, msg: InboundMessage) -> None:
        """Hand an inbound message to the hub; once this returns it will not be lost."""

    async def report(self, status: DeliveryStatus) -> None:
        """A delivery receipt (delivered, read, failed) that arrived after `send`."""

    async def unreachable(self, channel: str, inbox: str, external_id: str, reason: str) -> None:
        """The person blocked the bot or unsubscribed (known outside a send: an event)."""

    async def history(self, channel: str, inbox: str, chat_id: str) -> list[dict[str, Any]]:
        """The latest messages of a chat as frames (id, direction, text, at), oldest first."""

    async def fanout(self, topic: str, payload: dict[str, Any]) -> None:
        """Deliver a payload to every hub process listening on a topic."""

    def on_fanout(self, topic: str, handler: FanoutHandler) -> None:
        """Listen on a topic in this process."""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    name: str | None = None


class AttachmentUnavailable(Exception):
    """The channel can't fetch that file (unknown reference, expired, too large)."""


@dataclass(frozen=True)
class FetchedFile:
    content: bytes
    mime_type: str | None = None
    name: str | None = None


class PermanentSendError(Exception):
    """The provider refused for good (unknown chat, blocked bot): no retry will help."""


class Channel(ABC):
    name: str

    def __init__(self, ctx: ChannelContext, inbox: str) -> None:
        self.ctx = ctx
        self.inbox = inbox

    async def start(self) -> None:  # noqa: B027  (optional hook)
        """Connect, start polling, register webhooks."""

    async def stop(self) -> None:  # noqa: B027  (optional hook)
        """Stop polling and close connections."""

    def routes(self) -> list[Route]:
        """HTTP routes the channel serves (webhooks under /webhooks/<channel>/<inbox>)."""
        return []

    async def fetch_attachment(self, inbox: str, ref: str) -> FetchedFile:
        """The file behind an inbound attachment's provider reference (a Telegram file id),
        for staff to download through the hub."""
        raise AttachmentUnavailable(f"{self.name} attachments can't be fetched")

    @abstractmethod
    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        """Deliver one message. Raise for a transient failure (it is retried with backoff),
        `PermanentSendError` for a permanent one, or return a `failed` status."""
