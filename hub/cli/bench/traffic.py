"""What `hub bench pipeline` feeds the hub and where the hub's answers end up.

- `synthetic_messages`: many clients on several channels, each writing a question the
  offline brain answers in one turn (hub/cli/bench/clients.json), in the salon's languages.
- `SinkChannel`: stands in for a provider. It takes every reply at once and notes when it
  was handed over, so the figures are the hub's own, not a provider's.
- `TimedResponder` notes how long the brain took per message, so the hub's overhead can be
  told apart from the model's time; `DelayedModel` is a model that answers after a fixed
  delay, as a remote LLM would.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from bots.base import Reply, Responder, Turn
from channels.base import Channel, ChannelContext
from hub.messages import (
    ContactHints,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
)

CHANNELS = ("telegram", "viber", "sms", "instagram", "webchat")
INBOX = "bench"


def client_texts() -> dict[str, list[str]]:
    raw = json.loads((Path(__file__).with_name("clients.json")).read_text(encoding="utf-8"))
    return {lang: texts for lang, texts in raw.items() if not lang.startswith("_")}


def synthetic_messages(
    count: int, clients: int, seed: int = 1, prefix: str = "bench"
) -> list[InboundMessage]:
    """`count` messages from `clients` clients, round robin: a client's next message comes
    `clients` messages after its last one. Each client keeps one channel and language."""
    rng = random.Random(seed)
    texts = client_texts()
    languages = sorted(texts)
    profiles = [
        (CHANNELS[rng.randrange(len(CHANNELS))], languages[rng.randrange(len(languages))])
        for _ in range(clients)
    ]
    out = []
    for n in range(count):
        who = n % clients
        channel, language = profiles[who]
        chat = f"{prefix}-{who}"
        contact = ContactHints(display_name=f"Client {who}", language=language)
        if channel == "sms":
            contact = ContactHints(phone=f"+38067{who:07d}", language=language)
        out.append(
            InboundMessage(
                channel=channel,
                inbox=INBOX,
                chat_id=chat,
                sender_id=chat,
                provider_message_id=f"{prefix}-{n}",
                text=rng.choice(texts[language]),
                contact=contact,
            )
        )
    return out


@dataclass
class Deliveries:
    """When each reply reached a channel, by the client message it answers."""

    first: dict[str, float] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    count: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, msg: OutboundMessage) -> None:
        self.count += 1
        self.keys.add(msg.idempotency_key)
        # Bot replies carry "bot:<client message id>:<n>" (hub.pipeline.bot_worker).
        parts = msg.idempotency_key.split(":")
        if len(parts) == 3 and parts[0] == "bot":
            self.first.setdefault(parts[1], time.perf_counter())
        self.changed.set()


class SinkChannel(Channel):
    """A provider that takes every message at once."""

    def __init__(self, ctx: ChannelContext, name: str, deliveries: Deliveries) -> None:
        super().__init__(ctx, INBOX)
        self.name = name
        self.deliveries = deliveries

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        self.deliveries.note(msg)
        return DeliveryStatus(
            outbound_id=msg.id,
            channel=self.name,  # type: ignore[arg-type]
            status=DeliveryState.sent,
            provider_message_id=f"sink-{msg.id}",
        )


class TimedResponder:
    """Any responder, with the time each turn spent inside it."""

    def __init__(self, inner: Responder) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}

    async def respond(self, turn: Turn) -> list[Reply]:
        started = time.perf_counter()
        try:
            return await self.inner.respond(turn)
        finally:
            self.seconds[turn.message_id] = time.perf_counter() - started


class DelayedModel:
    """A remote model that answers every message after a fixed delay."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def respond(self, turn: Turn) -> list[Reply]:
        await asyncio.sleep(self.delay_s)
        return [Reply(text=f"Thank you! ({turn.text[:40]})")]
