"""Instagram's official Messaging API: webhook payloads, signatures, Graph errors, and turning
a messaging event into the hub's `InboundMessage`. Pure code, no I/O (channels/instagram.py
does the talking).

Webhook shape (Instagram Messaging, "messages" and related fields):
{"object": "instagram", "entry": [{"id": IGID, "time": ms, "messaging": [event, ...]}]}, each
event with sender.id / recipient.id / timestamp (ms) and one of `message`, `postback`, `read`,
`reaction`, `message_edit`, `referral`, ... A `message` has `mid`, `text`, `attachments`
(type + payload.url), `quick_reply.payload`, `reply_to` ({mid} or {story: {url, id}}),
`referral`, and the flags `is_echo`, `is_deleted`, `is_unsupported`.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from channels.layout import split_text as split_parts
from hub.messages import Attachment, ContactHints, InboundMessage, QuickReply

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
MAX_INBOUND_TEXT = 20_000
MAX_URL = 2000
MAX_TEXT_BYTES = 1000  # Instagram's limit on a text message, in UTF-8 bytes
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
MAX_QUICK_REPLY_PAYLOAD = 1000
# Our own quick replies carry the whole label in their payload (the title Instagram shows is
# cut to 20 characters), so a tap brings the whole label back as the client's text.
LABEL_PAYLOAD_PREFIX = "label:"
SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Graph API error codes (the "Error codes" tables of the Graph and Messaging APIs).
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
TEMPORARY_CODES = frozenset({1, 2})  # "unknown error" / "service temporarily unavailable"
INVALID_TOKEN_CODE = 190
# The person can't be messaged here (deactivated, blocked the account, no such user).
UNREACHABLE = frozenset({(551, None), (100, 2018001)})

Clock = Callable[[], datetime]


# Signatures -------------------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value Meta sends: sha256=<hex HMAC-SHA256 of the raw body>."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def is_signed(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    given = given.strip()
    if not given.lower().startswith(SIGNATURE_PREFIX):
        return False
    digest = given[len(SIGNATURE_PREFIX) :].lower()
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # "replace": a header of bytes that are not UTF-8 reaches us holding surrogates.
    return hmac.compare_digest(digest.encode("utf-8", "replace"), expected.encode())


def token_matches(expected: str, given: str | None) -> bool:
    """The webhook handshake's verify token, compared in constant time."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


# Payload models ---------------------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Party(_Payload):
    id: str = Field(min_length=1, max_length=200)


class AttachmentPayload(_Payload):
    url: str | None = None
    title: str | None = None
    reel_video_id: str | int | None = None


class IgAttachment(_Payload):
    type: str = Field(min_length=1, max_length=64)
    payload: AttachmentPayload | None = None


class StoryRef(_Payload):
    id: str | int | None = None
    url: str | None = None


class ReplyTo(_Payload):
    mid: str | None = Field(default=None, max_length=200)
    story: StoryRef | None = None


class QuickReplyPayload(_Payload):
    payload: str | None = None


class Referral(_Payload):
    ref: str | None = None
    source: str | None = None
    type: str | None = None


class IgMessage(_Payload):
    mid: str = Field(min_length=1, max_length=200)
    text: str | None = None
    attachments: list[IgAttachment] = Field(default_factory=list, max_length=100)
    quick_reply: QuickReplyPayload | None = None
    reply_to: ReplyTo | None = None
    referral: Referral | None = None
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False


class Postback(_Payload):
    mid: str | None = Field(default=None, max_length=200)
    title: str | None = None
    payload: str | None = None


class Read(_Payload):
    mid: str | None = Field(default=None, max_length=200)
    watermark: int | None = None


class MessagingEvent(_Payload):
    sender: Party
    recipient: Party | None = None
    timestamp: int | None = None
    message: IgMessage | None = None
    postback: Postback | None = None
    read: Read | None = None
    # Anything else (reaction, message_edit, referral, optin, ...) is kept as raw JSON: the
    # channel ignores those kinds (see docs/channels/instagram.md).
    reaction: dict[str, Any] | None = None
    message_edit: dict[str, Any] | None = None

    def kind(self) -> str:
        for name in ("message", "postback", "read", "reaction", "message_edit"):
            if getattr(self, name) is not None:
                return name
        return "unknown"


class Entry(_Payload):
    id: str | None = None
    time: int | None = None
    messaging: list[MessagingEvent] = Field(default_factory=list, max_length=1000)
    # Comments, mentions, standby (another app holds the conversation): acknowledged only.
    changes: list[dict[str, Any]] = Field(default_factory=list)
    standby: list[dict[str, Any]] = Field(default_factory=list)


class WebhookPayload(_Payload):
    object: str = Field(min_length=1, max_length=64)
    entry: list[Entry] = Field(max_length=1000)


class SendAnswer(_Payload):
    """What the Send API answers on success."""

    recipient_id: str | None = None
    message_id: str = Field(min_length=1, max_length=200)


class GraphErrorBody(_Payload):
    message: str | None = None
    type: str | None = None
    code: int | None = None
    error_subcode: int | None = None
    fbtrace_id: str | None = None


class GraphErrorAnswer(_Payload):
    error: GraphErrorBody


# Errors of the Send API -------------------------------------------------------------------


@dataclass(frozen=True)
class GraphError:
    """A refusal by the Graph API, classified."""

    http_status: int
    code: int | None
    subcode: int | None
    message: str

    @property
    def rate_limited(self) -> bool:
        return self.http_status == 429 or self.code in RATE_LIMIT_CODES

    @property
    def transient(self) -> bool:
        return self.rate_limited or self.http_status >= 500 or self.code in TEMPORARY_CODES

    @property
    def bad_token(self) -> bool:
        return self.code == INVALID_TOKEN_CODE or self.http_status == 401

    @property
    def unreachable(self) -> bool:
        return (self.code, None) in UNREACHABLE or (self.code, self.subcode) in UNREACHABLE

    def text(self) -> str:
        """The provider's own words with its codes, for the message's error."""
        codes = f"{self.code}" if self.code is not None else f"HTTP {self.http_status}"
        if self.subcode is not None:
            codes += f"/{self.subcode}"
        message = self.message.strip() or "refused"
        return f"{codes}: {message}"[:2000]


def graph_error(http_status: int, body: bytes) -> GraphError:
    """The error in a non-200 answer (Graph error JSON, or whatever came)."""
    try:
        answer = GraphErrorAnswer.model_validate_json(body)
    except ValueError:
        return GraphError(http_status, None, None, f"HTTP {http_status}")
    err = answer.error
    return GraphError(http_status, err.code, err.error_subcode, (err.message or "")[:1500])


# Inbound ----------------------------------------------------------------------------------


def web_url(value: str | None) -> str | None:
    """Only http(s) links reach the staff inbox (it renders them)."""
    if not value:
        return None
    value = value.strip()
    if len(value) > MAX_URL:
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def when(timestamp: int | None, clock: Clock) -> datetime:
    """A webhook time (milliseconds; seconds in some older payloads), never in the future."""
    now = clock()
    if not timestamp or timestamp <= 0:
        return now
    try:
        # Inside: an int past a float's range overflows already here.
        seconds = timestamp / 1000 if timestamp > 10**11 else float(timestamp)
        at = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return now
    return min(at, now)


def _mime(url: str | None, default: str | None) -> str | None:
    if url:
        guessed, _ = mimetypes.guess_type(urlsplit(url).path)
        if guessed:
            return guessed
    return default


HubKind = Literal["image", "video", "audio", "voice", "file", "sticker", "location", "contact"]

# Instagram attachment type -> (the hub's kind, a label staff see as the attachment's name
# where the type itself says something the kind doesn't, the default MIME type).
ATTACHMENT_KINDS: dict[str, tuple[HubKind, str | None, str | None]] = {
    "image": ("image", None, "image/jpeg"),
    "video": ("video", None, "video/mp4"),
    "audio": ("audio", None, "audio/mp4"),
    "file": ("file", None, None),
    # A shared post: only its media URL comes (the post's first image).
    "share": ("image", "instagram-share", "image/jpeg"),
    # The client mentioned the salon in their story: the story's media, photo or video.
    "story_mention": ("file", "instagram-story-mention", None),
    "ig_reel": ("video", "instagram-reel", "video/mp4"),
    "reel": ("video", "instagram-reel", "video/mp4"),
    "animated_image": ("image", None, "image/gif"),
}


def attachment_of(item: IgAttachment) -> Attachment:
    payload = item.payload or AttachmentPayload()
    url = web_url(payload.url)
    kind_name = item.type.strip().lower()
    kind, label, mime = ATTACHMENT_KINDS.get(
        kind_name, ("file", f"instagram-{kind_name[:40]}", None)
    )
    ref = None
    if payload.reel_video_id is not None:
        ref = f"reel:{payload.reel_video_id}"[:200]
    if kind_name in ("ig_reel", "reel") and payload.title and payload.title.strip():
        label = f"instagram-reel: {payload.title.strip()}"[:200]
    return Attachment(kind=kind, ref=ref, url=url, mime_type=_mime(url, mime), name=label)


def story_reply_attachment(story: StoryRef) -> Attachment:
    """The story a client answered: shown beside their text as the story they replied to."""
    story_id = str(story.id)[:190] if story.id is not None else None
    url = web_url(story.url)
    return Attachment(
        kind="file",
        ref=f"story:{story_id}" if story_id else None,
        url=url,
        mime_type=_mime(url, None),
        name="instagram-story-reply",
    )


def quick_reply_text(text: str | None, payload: str | None) -> str:
    """A tapped quick reply: our own buttons bring their whole label back in the payload."""
    if payload and payload.startswith(LABEL_PAYLOAD_PREFIX):
        label = payload[len(LABEL_PAYLOAD_PREFIX) :].strip()
        if label:
            return label
    return (text or "").strip() or (payload or "").strip()


def source_of(referral: Referral | None) -> str | None:
    if referral is None or not referral.ref:
        return None
    ref = referral.ref.strip()
    return ref if SOURCE_RE.match(ref) else None


@dataclass(frozen=True)
class Parsed:
    """What one messaging event means to the hub."""

    inbound: InboundMessage | None = None
    read_mid: str | None = None
    ignored: str | None = None  # why nothing is done, for the log


def parse_event(
    event: MessagingEvent,
    inbox: str,
    raw: dict[str, Any],
    *,
    account_id: str | None,
    clock: Clock,
) -> Parsed:
    kind = event.kind()
    if kind == "message" and event.message is not None:
        return _message(event, event.message, inbox, raw, account_id=account_id, clock=clock)
    if kind == "postback" and event.postback is not None:
        return _postback(event, event.postback, inbox, raw, clock=clock)
    if kind == "read" and event.read is not None:
        if event.read.mid:
            return Parsed(read_mid=event.read.mid)
        return Parsed(ignored="a read receipt without a message id")
    if kind in ("reaction", "message_edit"):
        return Parsed(ignored=f"a {kind} (not recorded)")
    keys = sorted(k for k in raw if k not in ("sender", "recipient", "timestamp"))
    return Parsed(ignored=f"an unknown messaging event ({', '.join(keys)[:80] or 'empty'})")


def _message(
    event: MessagingEvent,
    m: IgMessage,
    inbox: str,
    raw: dict[str, Any],
    *,
    account_id: str | None,
    clock: Clock,
) -> Parsed:
    # The account's own message: a send of the hub's coming back (the hub drops it) or the
    # owner answering in the Instagram app (a staff reply; the bot steps back).
    own = m.is_echo or (account_id is not None and event.sender.id == account_id)
    if own and event.recipient is None:
        return Parsed(ignored="the account's own message without a recipient")
    client_id = event.recipient.id if own and event.recipient else event.sender.id
    if m.is_deleted:
        return Parsed(ignored="a deleted message (the stored copy stays)")
    attachments = [attachment_of(a) for a in m.attachments]
    text = m.text or ""
    if m.quick_reply is not None:
        text = quick_reply_text(m.text, m.quick_reply.payload)
    reply_to_id = None
    if m.reply_to is not None:
        if m.reply_to.story is not None:
            story = story_reply_attachment(m.reply_to.story)
            attachments.insert(0, story)
            reply_to_id = story.ref
        elif m.reply_to.mid:
            reply_to_id = m.reply_to.mid
    if m.is_unsupported and not attachments:
        # Something Instagram can't pass on (a GIF, a sticker): staff should know it came.
        attachments.append(Attachment(kind="file", ref="unsupported", name="instagram-unsupported"))
    if not text.strip() and not attachments:
        return Parsed(ignored="an empty message")
    return Parsed(
        inbound=InboundMessage(
            channel="instagram",
            inbox=inbox,
            chat_id=client_id,
            sender_id=client_id,
            provider_message_id=m.mid,
            sent_at=when(event.timestamp, clock),
            text=text[:MAX_INBOUND_TEXT],
            attachments=attachments,
            contact=ContactHints() if own else ContactHints(source=source_of(m.referral)),
            reply_to_id=reply_to_id,
            own=own,
            private=True,  # the Instagram messaging API has one-to-one threads only
            raw=raw,
        )
    )


def _postback(
    event: MessagingEvent,
    p: Postback,
    inbox: str,
    raw: dict[str, Any],
    *,
    clock: Clock,
) -> Parsed:
    text = quick_reply_text(p.title, p.payload)
    if not text:
        return Parsed(ignored="an empty postback")
    # Before Graph v11 a postback had no mid: the time and sender identify it (a retried
    # webhook carries the same ones).
    mid = p.mid or f"postback:{event.sender.id}:{event.timestamp or 0}"
    return Parsed(
        inbound=InboundMessage(
            channel="instagram",
            inbox=inbox,
            chat_id=event.sender.id,
            sender_id=event.sender.id,
            provider_message_id=mid[:200],
            sent_at=when(event.timestamp, clock),
            text=text[:MAX_INBOUND_TEXT],
            private=True,  # as above: one to one
            raw=raw,
        )
    )


# Outbound ---------------------------------------------------------------------------------


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    return split_parts(text, limit, unit="utf8")


def quick_replies(replies: list[QuickReply]) -> list[dict[str, str]]:
    """Instagram's quick replies: at most 13, titles of at most 20 characters (a longer label
    is cut, and its whole text rides in the payload)."""
    found: list[dict[str, str]] = []
    for q in replies[:MAX_QUICK_REPLIES]:
        label = q.text.strip()
        if not label:
            continue
        title = label
        if len(title) > MAX_QUICK_REPLY_TITLE:
            title = title[: MAX_QUICK_REPLY_TITLE - 1].rstrip() + "…"
        payload = q.payload or f"{LABEL_PAYLOAD_PREFIX}{label}"
        found.append(
            {"content_type": "text", "title": title, "payload": payload[:MAX_QUICK_REPLY_PAYLOAD]}
        )
    return found


# Outbound attachment kinds Instagram takes by URL; anything else goes as a link in a text.
SENDABLE_KINDS = {"image": "image", "video": "video", "audio": "audio", "voice": "audio"}
