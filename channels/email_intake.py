"""One fetched mail becomes what the hub gets: an `InboundMessage` (proven to serialize), the
bounce report it carries, or the reason it is set aside. Pure: the channel runs it in a worker
thread, so even a slow mail never holds the event loop (the mailbox's lease, other channels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from channels.email_parse import ParsedMail, parse_mail
from hub.messages import (
    Attachment,
    ContactHints,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
)

CHANNEL = "email"
MAX_SENDER = 200  # chat_id's limit
MAX_STATE_KEY = 200  # the channel_state table's key column
# A Date further ahead of the server's receipt than any clock skew: a wrong clock, not a time.
FUTURE_SLACK = timedelta(days=1)


class Unusable(Exception):
    """The mail can't become a client's message (nobody to answer): it is set aside."""

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


@dataclass(frozen=True)
class Intake:
    parsed: ParsedMail
    inbound: InboundMessage
    bounce: DeliveryStatus | None  # a delivery failure of one of our messages, to report


@dataclass(frozen=True)
class Source:
    """Where a mail was read: the salon's inbox, address and zone, and the message's place."""

    inbox: str
    address: str  # ours, lower-cased: mail from it is our own copy
    zone: tzinfo
    uidvalidity: int
    uid: int
    received: datetime  # when the server took it (INTERNALDATE), else when we read it
    truncated: bool = False


def read_mail(raw: bytes, source: Source) -> Intake | None:
    """The hub's side of one mail; None for our own mail. Raises Unusable."""
    parsed = parse_mail(raw, zone=source.zone)
    if parsed.sender is None:
        raise Unusable(
            "no sender address (no From, Sender, Reply-To or Return-Path)", parsed.message_id
        )
    if len(parsed.sender) > MAX_SENDER:
        raise Unusable(f"a sender address over {MAX_SENDER} characters", parsed.message_id)
    if parsed.sender == source.address:
        return None  # our own mail (a copy kept in the folder): never a client's message
    inbound = inbound_message(parsed, source)
    inbound.to_json()  # proven here: a publish that fails later is the hub's, not the mail's
    bounce = None
    if parsed.bounce is not None:
        bounce = DeliveryStatus(
            channel=CHANNEL,
            provider_message_id=parsed.bounce.original_message_id,
            status=DeliveryState.failed,
            error=parsed.bounce.diagnostic[:1000],
        )
    return Intake(parsed, inbound, bounce)


def sent_time(parsed: ParsedMail, received: datetime) -> datetime:
    """The Date, or the time of receipt when there is none, it is unreadable, or it lies
    ahead of the receipt by more than any clock skew. In UTC: SQLite keeps a time's wall
    clock and drops its offset, so "10:00 +0200" would be stored as 10:00 UTC."""
    if parsed.sent_at is None or parsed.sent_at > received + FUTURE_SLACK:
        return received.astimezone(UTC)
    return parsed.sent_at.astimezone(UTC)


def attachment_kind(mime: str) -> str:
    major = mime.split("/", 1)[0].lower()
    return major if major in ("image", "video", "audio") else "file"


def inbound_message(parsed: ParsedMail, source: Source) -> InboundMessage:
    sender = parsed.sender or ""
    attachments = [
        Attachment(
            kind=attachment_kind(part.mime_type),  # type: ignore[arg-type]
            ref=f"{source.uidvalidity}.{source.uid}.{part.index}",
            mime_type=part.mime_type[:200],
            name=part.name[:200] if part.name else None,
            size=part.size,
        )
        for part in ([] if source.truncated else parsed.attachments)
    ]
    raw: dict[str, Any] = {
        "headers": parsed.headers,
        "full_text": parsed.full_text,
        "uid": source.uid,
        "uidvalidity": source.uidvalidity,
    }
    if parsed.automated:
        raw["automated"] = parsed.automated
    if source.truncated:
        raw["truncated"] = True
    if parsed.defect:
        raw["defect"] = parsed.defect
    return InboundMessage(
        channel=CHANNEL,
        inbox=source.inbox,
        chat_id=sender,
        sender_id=sender,
        provider_message_id=parsed.message_id,
        sent_at=sent_time(parsed, source.received),
        text=parsed.text or parsed.subject[:1000],
        attachments=attachments,
        contact=ContactHints(
            display_name=parsed.display_name[:200] if parsed.display_name else None,
            email=sender[:320],
        ),
        reply_to_id=parsed.in_reply_to,
        automated=parsed.automated is not None,
        raw=raw,
    )


def thread_key(address: str) -> str:
    """The state key of a client's thread headers; a key too long for the table (a long
    address) is the address's hash, the same on the way in and out."""
    key = f"thread:{address}"
    if len(key) <= MAX_STATE_KEY:
        return key
    return f"thread:#{hashlib.sha256(address.encode()).hexdigest()[:40]}"


def is_later(first: str, second: str) -> bool:
    """Whether ISO time `first` is after `second`. A time without a zone (written by an older
    version for a Date of "-0000") is UTC; an unreadable one is never later."""
    try:
        a, b = (_aware(datetime.fromisoformat(value)) for value in (first, second))
    except (TypeError, ValueError):
        return False
    return a > b


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
