"""The contract between channels and the hub.

Each model travels as one JSON field (`data`) of a Redis stream entry. Channels build
`InboundMessage`, consume `OutboundMessage` and answer with `DeliveryStatus`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ChannelName = Literal["telegram", "instagram", "viber", "sms", "email", "webchat"]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> _Model:
        return cls.model_validate_json(raw)


class Attachment(_Model):
    kind: Literal["image", "video", "audio", "voice", "file", "sticker", "location", "contact"]
    ref: str | None = Field(default=None, description="provider file id or reference")
    url: str | None = None
    mime_type: str | None = None
    name: str | None = None
    size: int | None = Field(default=None, ge=0)


class ContactHints(_Model):
    display_name: str | None = Field(default=None, max_length=200)
    username: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40, description="E.164 when known")
    email: str | None = Field(default=None, max_length=320)
    language: str | None = Field(default=None, max_length=16)
    # Where the client came from, as the channel tells it (Telegram's /start payload).
    source: str | None = Field(default=None, max_length=64)


class InboundMessage(_Model):
    id: str = Field(default_factory=new_id)
    channel: ChannelName
    inbox: str = Field(min_length=1, max_length=100)
    chat_id: str = Field(min_length=1, max_length=200)
    sender_id: str = Field(min_length=1, max_length=200)
    provider_message_id: str = Field(min_length=1, max_length=200)
    sent_at: datetime = Field(default_factory=utcnow)
    received_at: datetime = Field(default_factory=utcnow)
    text: str = Field(default="", max_length=20_000)
    attachments: list[Attachment] = Field(default_factory=list)
    contact: ContactHints = Field(default_factory=ContactHints)
    reply_to_id: str | None = None
    # An opt-out or opt-in keyword (SMS STOP / START): the client's marketing consent is set
    # to this, and the bot does not answer the message.
    consent: bool | None = None
    # Written by a machine (an auto-reply, a bounce, list mail): stored and shown, never
    # answered by the bot, so two robots can't answer each other forever.
    automated: bool = False
    # Written by the business itself outside the hub (the owner answering from the Instagram
    # app): stored as a staff reply and staff take the chat, so the bot keeps quiet. Here
    # `sender_id` is the client's id (the other side of the chat), not the business's.
    own: bool = False
    # A one-to-one chat between the client and the salon. False in a group (a Telegram group,
    # an Instagram group thread): others read whatever is sent there, so the bot never
    # answers it (its answers can be personal: appointments, a phone) and staff get it. The
    # default suits the channels whose chats are all one to one.
    private: bool = True
    raw: dict[str, Any] | None = None

    @field_validator("sent_at", "received_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # Always UTC: SQLite keeps a timestamp's wall time and drops its offset, so a channel's
        # "10:00+02:00" would be stored as 10:00 UTC.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def shard_key(self) -> str:
        return f"{self.channel}\x1f{self.inbox}\x1f{self.chat_id}"


class Author(StrEnum):
    bot = "bot"
    staff = "staff"
    system = "system"


class QuickReply(_Model):
    text: str = Field(min_length=1, max_length=64)
    payload: str | None = Field(default=None, max_length=256)


class OutboundMessage(_Model):
    id: str = Field(default_factory=new_id)
    conversation_id: int
    channel: ChannelName
    inbox: str
    chat_id: str
    text: str = Field(default="", max_length=20_000)
    attachments: list[Attachment] = Field(default_factory=list)
    quick_replies: list[QuickReply] = Field(default_factory=list)
    author: Author = Author.system
    staff_id: int | None = None
    idempotency_key: str = Field(default_factory=new_id)
    created_at: datetime = Field(default_factory=utcnow)


class DeliveryState(StrEnum):
    queued = "queued"
    sent = "sent"
    delivered = "delivered"
    read = "read"
    failed = "failed"


class DeliveryStatus(_Model):
    """What became of an outbound message: the answer to `send`, or a receipt that came later.

    A receipt from a provider often knows only the provider's message id: then `outbound_id`
    is None and `channel` with `provider_message_id` find the message."""

    outbound_id: str | None = None
    channel: ChannelName | None = None
    status: DeliveryState
    provider_message_id: str | None = None
    error: str | None = None
    # A transient failure may be retried; a permanent one (bad chat id, blocked bot) may not.
    retryable: bool = False
    # The recipient blocked the bot or unsubscribed: the channel identity is unreachable.
    unreachable: bool = False
    # Billed parts of an SMS (GSM-7: 160/153 characters a part, UCS-2: 70/67).
    segments: int | None = Field(default=None, ge=1)
    at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _findable(self) -> DeliveryStatus:
        if self.outbound_id is None and not (self.channel and self.provider_message_id):
            raise ValueError("a status needs outbound_id, or channel and provider_message_id")
        return self
