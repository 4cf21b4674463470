"""The dispatcher: hub:out:<channel> → the channel's `send` → the delivery status in the store.

Transient failures (an exception, a `failed` status marked retryable) are retried with
exponential backoff and full jitter; permanent ones are stored `failed` with the provider's
error. A message that is no longer `queued` is not sent again, so a redelivered entry or a
replayed dead letter does not message the client twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker

from channels.base import Channel, PermanentSendError
from crm_store.conversations import message_by_public_id, set_delivery
from crm_store.db import transaction
from crm_store.identity import mark_unreachable
from crm_store.models import Conversation
from hub import metrics
from hub.bus import Bus, Entry, PermanentError, outbound_stream
from hub.consumer import StreamConsumer
from hub.events import message_event
from hub.messages import DeliveryState, DeliveryStatus, OutboundMessage

log = logging.getLogger(__name__)

GROUP = "dispatch"
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    cap: float = 60.0
    attempts: int = 5

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base·2^attempt)]."""
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))


class Dispatcher:
    def __init__(
        self,
        bus: Bus,
        sessions: async_sessionmaker,
        channels: Mapping[str, Channel],
        *,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.channels = channels
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.rng = rng or random.Random()

    def consumer(self, name: str, *, claim_idle_ms: int, max_deliveries: int) -> StreamConsumer:
        return StreamConsumer(
            self.bus,
            group=GROUP,
            name=name,
            handler=self.handle,
            streams=[outbound_stream(ch) for ch in sorted(self.channels)],
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
            lane=chat_lane,
        )

    async def handle(self, entry: Entry) -> None:
        try:
            msg = OutboundMessage.model_validate_json(entry.data)
        except ValidationError as exc:
            raise PermanentError(
                f"malformed outbound message: {exc.error_count()} errors"
            ) from None
        async with self.sessions() as session:
            stored = await message_by_public_id(session, msg.id)
        if stored is not None and stored.status != DeliveryState.queued:
            return  # already sent (a redelivery); never message the client twice
        status, attempts = await self.deliver(msg)
        await self.record(status, attempts)
        metrics.MESSAGES_OUT.labels(msg.channel, status.status.value).inc()

    async def deliver(self, msg: OutboundMessage) -> tuple[DeliveryStatus, int]:
        """The final status and how many attempts it took."""
        channel = self.channels.get(msg.channel)
        if channel is None:
            return _failed(msg, f"the {msg.channel} channel is not enabled"), 0
        last_error = ""
        for attempt in range(self.backoff.attempts):
            try:
                status = await channel.send(msg)
            except PermanentSendError as exc:
                return _failed(msg, str(exc) or type(exc).__name__), attempt + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "send %s via %s failed (attempt %d): %s",
                    msg.id,
                    msg.channel,
                    attempt + 1,
                    last_error,
                )
            else:
                if status.status != DeliveryState.failed or not status.retryable:
                    return status.model_copy(update={"outbound_id": msg.id}), attempt + 1
                last_error = status.error or "failed"
            if attempt + 1 < self.backoff.attempts:
                await self.sleep(self.backoff.delay(attempt, self.rng))
        error = f"gave up after {self.backoff.attempts} attempts: {last_error}"
        return _failed(msg, error), self.backoff.attempts

    async def record(self, status: DeliveryStatus, attempts: int | None = None) -> None:
        """Store a status: the answer to a send, or a provider's later receipt."""
        async with transaction(self.sessions) as session:
            message = await set_delivery(
                session,
                public_id=status.outbound_id,
                channel=status.channel,
                status=status.status.value,
                provider_message_id=status.provider_message_id,
                error=status.error,
                attempts=attempts,
                segments=status.segments,
            )
            conversation = (
                await session.get(Conversation, message.conversation_id) if message else None
            )
            if status.unreachable and conversation is not None:
                await mark_unreachable(
                    session,
                    channel=conversation.channel,
                    inbox=conversation.inbox,
                    external_id=conversation.chat_id,
                    reason=status.error or "unreachable",
                    at=status.at,
                )
        if message is None:
            log.info("a %s receipt for an unknown message was ignored", status.channel)
            return
        if conversation is not None:
            await self.bus.publish_event(**message_event(message, conversation))


def _failed(msg: OutboundMessage, error: str) -> DeliveryStatus:
    return DeliveryStatus(outbound_id=msg.id, status=DeliveryState.failed, error=error)


def chat_lane(entry: Entry) -> str:
    """One chat's replies go out in order; different chats' at the same time."""
    data = json.loads(entry.data)
    return f"{data.get('inbox')}\x1f{data.get('chat_id')}"
