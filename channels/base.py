"""The interface every channel implements, and what the hub hands each channel.

A channel turns provider payloads into `InboundMessage` (given to `ctx.publish`), turns an
`OutboundMessage` into a provider call in `send`, and reports later delivery receipts with
`ctx.report`. Anything it needs from the CRM (the web chat's history) it asks `ctx` for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

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

    async def set_aside(
        self, channel: str, inbox: str, reason: str, details: dict[str, Any]
    ) -> None:
        """A provider's message the channel could not make a client's message of (no sender,
        refused by the server): recorded on the hub's dead-letter stream with its reason, for
        `hub dead list` and the dead-letter metric. `details` says how to find it at the
        provider (ids, never the contents); it can't be replayed: it stays with the provider."""

    async def load_state(self, channel: str, inbox: str, key: str) -> dict[str, Any] | None:
        """A document the channel saved before (None if never): kept in the database, so it
        survives restarts and is shared by every hub process."""

    async def save_state(self, channel: str, inbox: str, key: str, value: dict[str, Any]) -> None:
        """Keep a small JSON document (a mail cursor, a thread's headers) under `key`."""

    async def run_exclusive(self, name: str, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` in one hub process at a time (a Redis lease named `name`): a poller that
        must not run twice (IMAP, Instagram's private API). The other processes wait and take
        over when the holder dies; a holder that loses its lease has its job cancelled.
        Returns when the job returns; cancel it to stop (the lease is released)."""

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
class ChannelStatus:
    """How a channel is doing, for /healthz and the inbox. `paused` means the channel stopped
    itself on purpose (a login challenge, a rate limit) and tries again at `until`, if set."""

    state: Literal["ok", "paused", "error"] = "ok"
    reason: str = ""
    until: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "until": self.until.isoformat() if self.until else None,
        }


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

    def status(self) -> ChannelStatus:
        """Override where the channel can pause or fail on its own (polling, logins)."""
        return ChannelStatus()

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
