"""Viber: the REST bot API (chatapi.viber.com/pa), spoken over aiohttp.

Inbound: Viber POSTs every callback to /webhooks/viber/<inbox>, signed with
`X-Viber-Content-Signature` (the hex HMAC-SHA256 of the raw body keyed with the bot token).
`message` becomes an `InboundMessage` (published before Viber is answered 200);
`delivered`/`seen`/`failed` are receipts found by the message token; `unsubscribed` marks the
identity unreachable; `conversation_started` is answered with a short welcome message in the
response body (the only message Viber lets a bot send to someone who has not subscribed);
`webhook` (Viber checking the URL after set_webhook) and `subscribed` are acknowledged.

Outbound: POST {api}/send_message with `X-Viber-Auth-Token`. Texts over 7000 characters go as
several messages; quick replies become a keyboard of "reply" buttons on the last one. Status 0
is sent; 5/6 (not registered, not subscribed) are permanent and the identity unreachable;
12 (too many requests), 10 (no webhook yet), HTTP 429/5xx and network errors are transient
(raised, so the dispatcher retries with backoff); any other status is permanent, with Viber's
own status_message.

At start (in the background): get_account_info, then set_webhook to
HUB_PUBLIC_URL/webhooks/viber/<inbox> when a public URL is set, retried until Viber accepts it
(its check call fails while the hub's HTTP server is still starting).

The token is only an HMAC key and a request header: nothing here logs it, no URL carries it,
and no repr shows it. docs/channels/viber.md has the settings and choices.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import mimetypes
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aiohttp
import phonenumbers
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from channels.base import Channel, ChannelContext, PermanentSendError, Route
from channels.http_body import read_limited
from channels.layout import button_rows
from channels.layout import split_text as split_parts
from channels.parts import PartsSent
from channels.webhook import Rejected, check_inbox, parse_json
from hub.config import Settings
from hub.messages import (
    Attachment,
    ContactHints,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
    QuickReply,
)
from prompts import LANGUAGES, load_json

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Viber-Content-Signature"
AUTH_HEADER = "X-Viber-Auth-Token"
MAX_BODY = 1024 * 1024
MAX_TEXT = 7000  # Viber's limit on a text message
MAX_INBOUND_TEXT = 20_000
MAX_SENDER_NAME = 28
MAX_BUTTONS = 24
MAX_CAPTION = 512
MAX_URL = 2000
MAX_RETRY_AFTER = 60.0  # seconds; a longer wait is left to the dispatcher's backoff
# Reply buttons are API level 1; Viber's example keyboard says so explicitly, and a higher
# level would only refuse older clients (status 13) for nothing.
KEYBOARD_API_VERSION = 1
# set_webhook's possible filters ("message" and "webhook" always come).
EVENT_TYPES = ["delivered", "seen", "failed", "subscribed", "unsubscribed", "conversation_started"]
# The welcome message carries "src:<deep link context>" as tracking_data; Viber echoes it with
# the client's reply, so the first message knows where the client came from.
SOURCE_PREFIX = "src:"
SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Viber's error codes (the REST bot API's "Error codes" table).
STATUS_NAMES = {
    0: "ok",
    1: "invalidUrl",
    2: "invalidAuthToken",
    3: "badData",
    4: "missingData",
    5: "receiverNotRegistered",
    6: "receiverNotSubscribed",
    7: "publicAccountBlocked",
    8: "publicAccountNotFound",
    9: "publicAccountSuspended",
    10: "webhookNotSet",
    11: "receiverNoSuitableDevice",
    12: "tooManyRequests",
    13: "apiVersionNotSupported",
    14: "incompatibleWithVersion",
    15: "publicAccountNotAuthorized",
    16: "inchatReplyMessageNotAllowed",
    17: "publicAccountIsNotInline",
    18: "noPublicChat",
    19: "cannotSendBroadcast",
    20: "broadcastNotAllowed",
    21: "unsupportedCountry",
    22: "paymentUnsupported",
    23: "freeMessagesExceeded",
    24: "noBalance",
}
INVALID_TOKEN = 2
# The person can't get messages here until they write (or subscribe) again.
UNREACHABLE_STATUSES = frozenset({5, 6, 11})
# Worth another try later: the rate limit (also "100 messages an hour without a reply"), and a
# webhook that this or another process is still setting.
TRANSIENT_STATUSES = frozenset({10, 12})

RECEIPT_STATES = {
    "delivered": DeliveryState.delivered,
    "seen": DeliveryState.read,
    "failed": DeliveryState.failed,
}

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]


class ViberUnavailable(Exception):
    """A transient failure talking to Viber (network, HTTP 429/5xx, rate limit): retried."""


class _TokenRefused(Exception):
    """Viber refused the bot token (status 2): retrying won't help."""


# Provider payloads ------------------------------------------------------------------------


def _token_text(value: Any) -> Any:
    # Message tokens are 64-bit integers (past JSON's safe 2^53): kept exact, as text.
    if isinstance(value, bool):
        raise ValueError("a message token is a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    raise ValueError("a message token is a number")


MessageToken = Annotated[str, BeforeValidator(_token_text)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ViberUser(_Payload):
    """Viber's user object (`sender` of a message, `user` of subscribed/conversation_started)."""

    id: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=1000)
    avatar: str | None = None
    country: str | None = None
    language: str | None = Field(default=None, max_length=64)
    api_version: int | None = None


class ViberLocation(_Payload):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ViberContact(_Payload):
    name: str | None = Field(default=None, max_length=1000)
    phone_number: str | None = Field(default=None, max_length=100)
    avatar: str | None = None


class ViberMessage(_Payload):
    type: str = Field(min_length=1, max_length=32)
    text: str | None = None
    media: str | None = None
    thumbnail: str | None = None
    file_name: str | None = Field(default=None, max_length=1000)
    file_size: int | None = Field(default=None, ge=0)
    duration: int | None = None
    sticker_id: int | str | None = None
    location: ViberLocation | None = None
    contact: ViberContact | None = None
    tracking_data: str | None = None


class MessageEvent(_Payload):
    event: Literal["message"]
    timestamp: int | None = None
    message_token: MessageToken
    sender: ViberUser
    message: ViberMessage


class ConversationStarted(_Payload):
    event: Literal["conversation_started"]
    timestamp: int | None = None
    message_token: MessageToken | None = None
    type: str | None = None
    context: str | None = None
    user: ViberUser
    subscribed: bool = False


class Subscribed(_Payload):
    event: Literal["subscribed"]
    user: ViberUser


class Unsubscribed(_Payload):
    event: Literal["unsubscribed"]
    user_id: str = Field(min_length=1, max_length=200)


class Receipt(_Payload):
    event: Literal["delivered", "seen", "failed"]
    timestamp: int | None = None
    message_token: MessageToken
    user_id: str | None = None
    desc: str | None = None


class ApiAnswer(_Payload):
    """What every API method answers (HTTP 200 even on errors: `status` says)."""

    status: int
    status_message: str | None = None
    message_token: MessageToken | None = None
    name: str | None = None
    uri: str | None = None


# Pure helpers -----------------------------------------------------------------------------


def signature(token: str, body: bytes) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def is_signed(token: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    expected = signature(token, body)
    # "replace": a header of bytes that are not UTF-8 reaches us holding surrogates.
    return hmac.compare_digest(given.strip().lower().encode("utf-8", "replace"), expected.encode())


def error_text(status: int, message: str | None) -> str:
    if status < 0:  # not an answer of the API (an HTTP error): the message says it all
        return (message or "failed")[:2000]
    name = STATUS_NAMES.get(status, "generalError")
    if message and message.strip() and message.strip() != name:
        return f"{status} {name}: {message.strip()}"[:2000]
    return f"{status} {name}"


def language_of(code: str | None) -> str | None:
    """The hub's language for Viber's device language ("uk", "en-US"), if it speaks it."""
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else None


def e164(raw: str | None, region: str) -> str | None:
    """A shared contact's number in E.164, if it is a valid one (phone books hold national
    numbers, "+380…" and "380…" alike)."""
    if not raw or not raw.strip():
        return None
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    digits = re.sub(r"\D", "", text)
    candidates = [text] if text.startswith("+") else [text, "+" + digits]
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, None if candidate.startswith("+") else region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def web_url(value: str | None) -> str | None:
    """Only http(s) links reach the staff inbox (it renders them)."""
    if not value:
        return None
    value = value.strip()
    if len(value) > MAX_URL:
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def _mime_of(name: str | None, url: str | None, default: str | None) -> str | None:
    for candidate in (name, urlsplit(url).path if url else None):
        if candidate:
            guessed, _ = mimetypes.guess_type(candidate)
            if guessed:
                return guessed
    return default


def _when(timestamp: int | None, clock: Clock) -> datetime:
    if timestamp and timestamp > 0:
        try:
            return datetime.fromtimestamp(timestamp / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return clock()


def media_attachment(kind: Literal["image", "video", "file"], m: ViberMessage) -> Attachment:
    url = web_url(m.media)
    defaults = {"image": "image/jpeg", "video": "video/mp4", "file": None}
    return Attachment(
        kind=kind,
        url=url,
        mime_type=_mime_of(m.file_name, url, defaults[kind]),
        name=m.file_name[:200] if m.file_name else None,
        size=m.file_size,
    )


def location_attachment(place: ViberLocation) -> Attachment:
    lat, lon = f"{place.lat:.6f}", f"{place.lon:.6f}"
    return Attachment(
        kind="location",
        ref=f"{lat},{lon}",
        url=f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}",
    )


def contact_attachment(card: ViberContact, region: str) -> Attachment:
    phone = e164(card.phone_number, region)
    raw = (card.phone_number or "").strip()[:40] or None
    return Attachment(
        kind="contact", ref=phone or raw, name=(card.name or "").strip()[:200] or None
    )


def attachments_and_text(m: ViberMessage, region: str) -> tuple[list[Attachment], str]:
    """What a Viber message carries, as hub attachments and a text."""
    text = m.text or ""
    kind = m.type.lower()
    found: list[Attachment] = []
    if kind == "picture":
        found.append(media_attachment("image", m))
    elif kind == "video":
        found.append(media_attachment("video", m))
    elif kind == "file":
        found.append(media_attachment("file", m))
    elif kind == "sticker":
        url = web_url(m.media)
        found.append(
            Attachment(
                kind="sticker",
                ref=str(m.sticker_id) if m.sticker_id is not None else None,
                url=url,
                mime_type=_mime_of(None, url, "image/png"),
            )
        )
    elif kind == "location" and m.location is not None:
        found.append(location_attachment(m.location))
    elif kind == "contact" and m.contact is not None:
        found.append(contact_attachment(m.contact, region))
    elif kind == "url":
        # A shared link is something the client wrote, not a file: it is the text.
        link = web_url(m.media)
        if link and link not in text:
            text = f"{text}\n{link}" if text.strip() else link
    return found, text


def source_of(tracking_data: str | None) -> str | None:
    if not tracking_data or not tracking_data.startswith(SOURCE_PREFIX):
        return None
    source = tracking_data[len(SOURCE_PREFIX) :]
    return source if SOURCE_RE.match(source) else None


def sender_hints(user: ViberUser) -> ContactHints:
    name = (user.name or "").strip()
    return ContactHints(display_name=name[:200] or None, language=language_of(user.language))


def inbound_of(
    event: MessageEvent,
    inbox: str,
    raw: dict[str, Any],
    *,
    region: str = "UA",
    clock: Clock = lambda: datetime.now(UTC),
) -> InboundMessage | None:
    """The hub's message for a Viber `message` callback; None when it carries nothing."""
    attachments, text = attachments_and_text(event.message, region)
    if not text.strip() and not attachments:
        return None
    hints = sender_hints(event.sender)
    source = source_of(event.message.tracking_data)
    if source:
        hints = hints.model_copy(update={"source": source})
    return InboundMessage(
        channel="viber",
        inbox=inbox,
        chat_id=event.sender.id,
        sender_id=event.sender.id,
        # Unique per message across Viber, so a retried callback is stored once.
        provider_message_id=event.message_token,
        sent_at=_when(event.timestamp, clock),
        text=text[:MAX_INBOUND_TEXT],
        attachments=attachments,
        contact=hints,
        private=True,  # a Viber bot talks one to one: bots can't be added to Viber groups
        raw=raw,
    )


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    return split_parts(text, limit)


def keyboard(replies: list[QuickReply]) -> dict[str, Any]:
    """A keyboard of "reply" buttons: a tap sends the label as the client's message. Two short
    labels share a row (3 of the 6 columns each); longer ones take a row of their own."""
    labels = [q.text for q in replies][:MAX_BUTTONS]
    buttons = []
    for row in button_rows(labels):
        for i in row:
            buttons.append(
                {
                    "Columns": 6 // len(row),
                    "Rows": 1,
                    "ActionType": "reply",
                    "ActionBody": labels[i],
                    # Button texts are rendered as HTML-like markup.
                    "Text": _escape(labels[i]),
                    "TextSize": "regular",
                }
            )
    return {"Type": "keyboard", "DefaultHeight": False, "Buttons": buttons}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


# The channel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViberConfig:
    token: SecretStr
    bot_name: str = "Salon"
    avatar: str | None = None
    api_url: str = "https://chatapi.viber.com/pa"
    public_url: str | None = None
    region: str = "UA"
    default_language: str = "uk"
    # Welcome message per language (uk/en/ru); empty: none is sent.
    greetings: Mapping[str, str] | None = None

    def __repr__(self) -> str:  # the token stays out of any repr that reaches a log
        return f"ViberConfig(bot_name={self.bot_name!r}, api_url={self.api_url!r})"


class ViberChannel(Channel):
    name = "viber"

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str,
        config: ViberConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = lambda: datetime.now(UTC),
        timeout: float = 30.0,
        setup_backoff: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        check_inbox(inbox, "VIBER_INBOX")
        super().__init__(ctx, inbox)
        self.config = config
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout
        self.setup_backoff = setup_backoff
        self.api = config.api_url.rstrip("/")
        self.path = f"/webhooks/viber/{inbox}"
        public = config.public_url.rstrip("/") if config.public_url else None
        self.webhook_url = f"{public}{self.path}" if public else None
        self.session: aiohttp.ClientSession | None = None
        self.setup_task: asyncio.Task[None] | None = None
        self.bot: str | None = None  # the bot's name and URI, as Viber knows them
        # Parts of a long message already sent, so a retried send does not repeat them.
        self.parts = PartsSent()
        self._rng = random.Random()
        self._events = {
            "message": self._on_message,
            "conversation_started": self._on_conversation_started,
            "subscribed": self._on_subscribed,
            "unsubscribed": self._on_unsubscribed,
            "delivered": self._on_receipt,
            "seen": self._on_receipt,
            "failed": self._on_receipt,
            "webhook": self._on_webhook_check,
        }

    def __repr__(self) -> str:
        return f"ViberChannel(inbox={self.inbox!r}, bot_name={self.config.bot_name!r})"

    def routes(self) -> list[Route]:
        return [Route("POST", self.path, self.webhook, f"viber-{self.inbox}")]

    async def start(self) -> None:
        self._client()
        # In the background: Viber's check of the webhook needs the hub's HTTP server, which
        # starts after the channels.
        self.setup_task = asyncio.create_task(self._setup(), name=f"viber-{self.inbox}-setup")

    async def stop(self) -> None:
        if self.setup_task is not None:
            self.setup_task.cancel()
            await asyncio.gather(self.setup_task, return_exceptions=True)
            self.setup_task = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={AUTH_HEADER: self.config.token.get_secret_value()},
            )
        return self.session

    # Start-up --------------------------------------------------------------------------

    async def _setup(self) -> None:
        if not await self._until_done("get_account_info", self._whoami):
            return
        if self.webhook_url is None:
            log.info("viber %s: no HUB_PUBLIC_URL, so no webhook is set", self.inbox)
            return
        if not self.webhook_url.startswith("https://"):
            log.warning("viber %s: Viber accepts only https webhooks", self.inbox)
        if await self._until_done("set_webhook", self._set_webhook):
            log.info("viber %s: webhook set to %s", self.inbox, self.webhook_url)

    async def _whoami(self) -> None:
        answer = await self._call("get_account_info", {})
        self._check(answer, "get_account_info")
        self.bot = f"{answer.name or '?'} ({answer.uri or '?'})"
        log.info("viber %s: bot %s", self.inbox, self.bot)

    async def _set_webhook(self) -> None:
        answer = await self._call(
            "set_webhook",
            # send_name: Viber leaves the user's name out of callbacks unless asked.
            {"url": self.webhook_url, "event_types": EVENT_TYPES, "send_name": True},
        )
        self._check(answer, "set_webhook")

    def _check(self, answer: ApiAnswer, method: str) -> None:
        if answer.status == INVALID_TOKEN:
            raise _TokenRefused()
        if answer.status != 0:
            raise ViberUnavailable(
                f"{method} answered {error_text(answer.status, answer.status_message)}"
            )

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> bool:
        """Run a start-up call until it works; a refused token is final (logged, not raised,
        so a bad token does not stop the hub)."""
        failures = 0
        while True:
            try:
                await step()
                return True
            except _TokenRefused:
                log.error("viber %s: Viber refused the bot token (%s)", self.inbox, what)
                return False
            except ViberUnavailable as exc:
                failures += 1
                base, cap = self.setup_backoff
                delay = min(cap, base * 2 ** min(failures - 1, 16)) * self._rng.uniform(0.5, 1)
                log.warning(
                    "viber %s: %s failed (%s); retrying in %.1fs", self.inbox, what, exc, delay
                )
                await self.sleep(delay)

    # Webhook ---------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await self._verified(request)
            handler = self._events.get(raw["event"])
            if handler is None:
                # A new event type: acknowledged, or Viber would keep sending it.
                log.debug("viber %s: %r event ignored", self.inbox, raw["event"][:40])
                return web.Response(status=200)
            try:
                return await handler(raw)
            except ValidationError as exc:
                fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
                raise Rejected(
                    400, f"malformed {raw['event']} event: {', '.join(fields)}"
                ) from None
        except Rejected as exc:
            log.warning("viber webhook %s refused (%d): %s", self.inbox, exc.status, exc.reason)
            return web.Response(status=exc.status, text=exc.reason)

    async def _verified(self, request: web.Request) -> dict[str, Any]:
        """The callback as JSON, once its size and signature are checked."""
        body = await read_limited(request, MAX_BODY)
        if body is None:
            raise Rejected(413, f"body over {MAX_BODY} bytes")
        token = self.config.token.get_secret_value()
        if not is_signed(token, body, request.headers.get(SIGNATURE_HEADER)):
            raise Rejected(403, f"missing or wrong {SIGNATURE_HEADER}")
        try:
            raw = parse_json(body)
        except (ValueError, RecursionError):
            raise Rejected(400, "the body is not JSON") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
            raise Rejected(400, "not a Viber callback (no event)")
        return raw

    async def _on_message(self, raw: dict[str, Any]) -> web.Response:
        event = MessageEvent.model_validate(raw)
        msg = inbound_of(event, self.inbox, raw, region=self.config.region, clock=self.clock)
        if msg is None:
            log.debug("viber %s: an empty %r message ignored", self.inbox, event.message.type[:32])
        else:
            await self.ctx.publish(msg)
        return web.Response(status=200)

    async def _on_conversation_started(self, raw: dict[str, Any]) -> web.Response:
        event = ConversationStarted.model_validate(raw)
        welcome = self.welcome(event)
        if welcome is None:
            return web.Response(status=200)
        return web.json_response(welcome, dumps=partial(json.dumps, ensure_ascii=False))

    def welcome(self, event: ConversationStarted) -> dict[str, Any] | None:
        """The welcome message for someone who opened the chat (the body of our answer: the
        only way to write to a person who has not subscribed), or None."""
        if event.subscribed:
            return None  # they know the salon already, and the hub can write to them
        greetings = self.config.greetings
        if greetings is None:
            greetings = load_json("channels/greetings.json")
        language = language_of(event.user.language) or self.config.default_language
        text = greetings.get(language) or greetings.get(self.config.default_language)
        if not text:
            return None
        welcome: dict[str, Any] = {
            "sender": self._sender(),
            "type": "text",
            "text": text.strip()[:MAX_TEXT],
        }
        context = (event.context or "").strip()
        if SOURCE_RE.match(context):
            welcome["tracking_data"] = SOURCE_PREFIX + context
        return welcome

    async def _on_subscribed(self, raw: dict[str, Any]) -> web.Response:
        event = Subscribed.model_validate(raw)
        # Nothing to store: their first message (if any) creates the card, and clears a
        # previous "unsubscribed" on the identity.
        log.info("viber %s: a user subscribed (%s…)", self.inbox, event.user.id[:6])
        return web.Response(status=200)

    async def _on_unsubscribed(self, raw: dict[str, Any]) -> web.Response:
        event = Unsubscribed.model_validate(raw)
        await self.ctx.unreachable("viber", self.inbox, event.user_id, "unsubscribed")
        return web.Response(status=200)

    async def _on_receipt(self, raw: dict[str, Any]) -> web.Response:
        event = Receipt.model_validate(raw)
        state = RECEIPT_STATES[event.event]
        error = None
        if state is DeliveryState.failed:
            error = (event.desc or "").strip()[:2000] or "Viber could not deliver the message"
        await self.ctx.report(
            DeliveryStatus(
                channel="viber",
                provider_message_id=event.message_token,
                status=state,
                error=error,
            )
        )
        return web.Response(status=200)

    async def _on_webhook_check(self, raw: dict[str, Any]) -> web.Response:
        del raw
        log.info("viber %s: Viber checked the webhook", self.inbox)
        return web.Response(status=200)

    # Sending ---------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        if msg.inbox != self.inbox:
            raise PermanentSendError(f"no Viber bot for inbox {msg.inbox!r}")
        steps = self._steps(msg)
        if not steps:
            raise PermanentSendError("nothing to send: no text and no attachment with a URL")
        if msg.quick_replies:
            steps[-1]["keyboard"] = keyboard(msg.quick_replies)
            steps[-1]["min_api_version"] = KEYBOARD_API_VERSION
        sent = await self.parts.send(msg.id, steps, lambda _, step: self._send_one(msg, step))
        if isinstance(sent, DeliveryStatus):
            return sent
        # The last part's token: its "seen" means the whole message was read.
        return DeliveryStatus(
            outbound_id=msg.id,
            channel="viber",
            status=DeliveryState.sent,
            provider_message_id=sent[-1],
        )

    def _steps(self, msg: OutboundMessage) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = [{"type": "text", "text": t} for t in split_text(msg.text)]
        for item in msg.attachments:
            url = web_url(item.url)
            if url is None:
                continue  # a provider reference from another channel means nothing here
            if item.kind == "image":
                steps.append({"type": "picture", "media": url, "text": ""})
            else:
                steps.append({"type": "url", "media": url})
        return steps

    def _sender(self) -> dict[str, str]:
        sender = {"name": self.config.bot_name.strip()[:MAX_SENDER_NAME] or "Salon"}
        if self.config.avatar:
            sender["avatar"] = self.config.avatar
        return sender

    async def _send_one(self, msg: OutboundMessage, step: dict[str, Any]) -> str | DeliveryStatus:
        """One send_message: Viber's message token, or a permanent `failed`; raises when it is
        worth trying again."""
        answer = await self._call(
            "send_message", {"receiver": msg.chat_id, "sender": self._sender(), **step}
        )
        if answer.status == 0:
            if answer.message_token is None:
                raise ViberUnavailable("send_message answered ok without a message_token")
            return answer.message_token
        error = error_text(answer.status, answer.status_message)
        if answer.status in TRANSIENT_STATUSES:
            raise ViberUnavailable(f"Viber answered {error}")
        if answer.status == INVALID_TOKEN:
            log.error("viber %s: Viber refused the bot token", self.inbox)
        else:
            log.info("viber %s: Viber refused a message: %s", self.inbox, error)
        return DeliveryStatus(
            outbound_id=msg.id,
            channel="viber",
            status=DeliveryState.failed,
            error=error,
            retryable=False,
            unreachable=answer.status in UNREACHABLE_STATUSES,
        )

    async def _call(self, method: str, payload: dict[str, Any]) -> ApiAnswer:
        """POST one API method; Viber's answer, or a raise for what is worth retrying."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        try:
            async with self._client().post(
                f"{self.api}/{method}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                raw = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ViberUnavailable(f"Viber unreachable: {type(exc).__name__}") from None
        if status == 429 or status >= 500:
            wait = retry_after_seconds(retry_after)
            if wait:
                await self.sleep(min(wait, MAX_RETRY_AFTER))
            raise ViberUnavailable(f"{method}: Viber answered HTTP {status}")
        if status != 200:
            return ApiAnswer(status=-1, status_message=f"HTTP {status}")
        try:
            return ApiAnswer.model_validate_json(raw)
        except ValidationError:
            raise ViberUnavailable(f"{method}: Viber answered without a status") from None


# Helpers ----------------------------------------------------------------------------------


def from_settings(settings: Settings, ctx: ChannelContext) -> ViberChannel | None:
    token = settings.viber_bot_token.get_secret_value().strip() if settings.viber_bot_token else ""
    if not token:
        return None
    greeting = settings.viber_greeting
    config = ViberConfig(
        token=SecretStr(token),
        bot_name=settings.viber_bot_name,
        avatar=settings.viber_bot_avatar or None,
        api_url=settings.viber_api_url,
        public_url=settings.hub_public_url,
        region=settings.hub_default_region,
        default_language=language_of(settings.hub_default_language) or "uk",
        greetings=None if greeting is None else dict.fromkeys(LANGUAGES, greeting.strip()),
    )
    return ViberChannel(ctx, settings.viber_inbox, config)
