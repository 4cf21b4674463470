"""SMS through Twilio, over plain aiohttp (the `twilio` package is only a test dependency).

Inbound: Twilio POSTs each message (form-encoded) to /webhooks/sms/<inbox>, signed with
`X-Twilio-Signature` (channels/twilio_signature.py) over the public URL it called; the
message is published, then answered with an empty TwiML <Response/> so Twilio sends nothing
itself. STOP/START keywords set the client's marketing consent (the bot leaves them alone).
Delivery receipts arrive at /webhooks/sms/<inbox>/status, signed the same way.

Outbound: POST /2010-04-01/Accounts/{sid}/Messages.json with HTTP basic auth. A 4xx is
permanent ("<code>: <message>"), a 429, a 5xx or a network error transient (raised, so the
dispatcher retries; a Retry-After is waited out first). The billed SMS parts are stored on the
message: Twilio's `num_segments`, else our own count (channels/sms_segments.py). A text over
1600 characters goes as several messages; when one fails midway, the dispatcher's retry sends
only the parts that did not go out (channels/parts.py).

The auth token is only ever used as an HMAC key and in the Authorization header: nothing here
logs it, and no URL carries it. docs/channels/sms.md has the settings and choices.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from channels.base import (
    AttachmentUnavailable,
    Channel,
    ChannelContext,
    FetchedFile,
    PermanentSendError,
    Route,
)
from channels.http_body import read_limited, read_stream
from channels.layout import split_text as split_parts
from channels.parts import PartsSent
from channels.sms_segments import count_segments
from channels.twilio_signature import is_valid
from channels.webhook import Rejected, check_inbox, clean_text
from hub.config import Settings
from hub.messages import (
    Attachment,
    ContactHints,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
MAX_BODY = 64 * 1024  # Twilio's own bodies are a few KB (1600 characters of text at most)
MAX_FIELDS = 200
MAX_MEDIA = 10  # Twilio sends at most 10 media per message
MAX_FILE = 20 * 1024 * 1024
MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (error 21617): longer texts go in parts
MAX_RETRY_AFTER = 60.0  # seconds; a longer wait is left to the dispatcher's backoff
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
FORM = "application/x-www-form-urlencoded"

E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
SID_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")
OUTBOUND_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# .../Messages/MMxxx/Media/MExxx: the media of an MMS, fetched with the account's credentials.
_MSG, _MEDIA = r"(?P<msg>(?:MM|SM)[0-9a-fA-F]{32})", r"(?P<media>ME[0-9a-fA-F]{32})"
MEDIA_PATH_RE = re.compile(rf"/Messages/{_MSG}/Media/{_MEDIA}$")
MEDIA_REF_RE = re.compile(rf"^{_MSG}:{_MEDIA}$")

# Twilio's default keywords (Messaging "opt-out keywords" / Advanced Opt-Out), matched on the
# whole trimmed message, case-insensitively. "YES" is one of Twilio's opt-in words, but it is
# also how clients answer "Tomorrow at 11:00?": it counts only when Twilio itself flags it
# (OptOutType=START, sent when Advanced Opt-Out is on), never by our own matching.
OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "OPTIN"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# Error codes meaning the recipient can't be messaged here until they write again.
# 30003 (handset off or out of coverage) is deliberately not one: Twilio calls it temporary.
UNREACHABLE_CODES = frozenset(
    {
        21610,  # attempt to send to unsubscribed recipient (they replied STOP)
        21614,  # 'To' number is not a valid mobile number
        21635,  # 'To' number cannot be a landline
        30004,  # message blocked (by the recipient or their carrier)
        30005,  # unknown destination handset (the number does not exist)
        30006,  # landline or unreachable carrier
    }
)
# Status callbacks carry an ErrorCode but rarely a text: the common ones, as Twilio words them.
ERROR_TEXTS = {
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21635: "'To' number cannot be a landline",
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}

STATUS_STATES = {
    "sent": DeliveryState.sent,
    "delivered": DeliveryState.delivered,
    "read": DeliveryState.read,
    "undelivered": DeliveryState.failed,
    "failed": DeliveryState.failed,
    "canceled": DeliveryState.failed,
}
# Steps before the carrier has it (and the inbound-only states): nothing to record.
STATUS_IGNORED = frozenset({"accepted", "scheduled", "queued", "sending", "receiving", "received"})

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class TwilioUnavailable(Exception):
    """A transient failure talking to Twilio (network, 429, 5xx): the dispatcher retries."""


# Provider payloads ------------------------------------------------------------------------


def _blank_is_none(value: Any) -> Any:
    # Twilio sends some fields empty ("ErrorCode=") rather than leaving them out.
    return None if isinstance(value, str) and not value.strip() else value


OptionalInt = Annotated[int | None, BeforeValidator(_blank_is_none)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=False)


class InboundSms(_Payload):
    """Twilio's incoming-message webhook (only what we use; Twilio adds fields freely)."""

    message_sid: str = Field(alias="MessageSid", pattern=SID_RE.pattern)
    account_sid: str | None = Field(default=None, alias="AccountSid", max_length=64)
    from_: str = Field(alias="From", min_length=1, max_length=64)
    to: str | None = Field(default=None, alias="To", max_length=64)
    body: str = Field(default="", alias="Body", max_length=20_000)
    num_media: OptionalInt = Field(default=None, alias="NumMedia", ge=0, le=100)
    opt_out_type: str | None = Field(default=None, alias="OptOutType", max_length=32)


class StatusCallback(_Payload):
    """Twilio's message status callback."""

    message_sid: str = Field(alias="MessageSid", pattern=SID_RE.pattern)
    message_status: str = Field(alias="MessageStatus", min_length=1, max_length=32)
    error_code: OptionalInt = Field(default=None, alias="ErrorCode")
    error_message: str | None = Field(default=None, alias="ErrorMessage", max_length=1000)


class TwilioMessage(_Payload):
    """The Message resource Twilio answers a create with."""

    sid: str
    status: str | None = None
    num_segments: str | int | None = None
    error_code: int | None = None
    error_message: str | None = None


class TwilioError(_Payload):
    """Twilio's REST error body: {"code", "message", "more_info", "status"}."""

    code: int | None = None
    message: str | None = None
    status: int | None = None


# Pure helpers -----------------------------------------------------------------------------


def consent_of(body: str, opt_out_type: str | None) -> bool | None:
    """False for an opt-out keyword, True for an opt-in one, None otherwise (HELP included:
    staff see it like any message)."""
    flagged = (opt_out_type or "").strip().upper()
    if flagged == "STOP":
        return False
    if flagged == "START":
        return True
    if flagged:  # HELP, or a type we don't know: a normal message
        return None
    word = body.strip().upper()
    if word in OPT_OUT_WORDS:
        return False
    if word in OPT_IN_WORDS:
        return True
    return None


def error_text(code: int | None, message: str | None) -> str:
    if code is None:
        return message or "failed"
    text = message or ERROR_TEXTS.get(code) or f"see https://www.twilio.com/docs/api/errors/{code}"
    return f"{code}: {text}"


def with_choices(text: str, choices: list[str]) -> str:
    """SMS has no buttons: the quick replies become a numbered list ("1) …"), one per line.

    A choice the text already lists as a bullet line ("• Fri 15:00") is numbered in place
    rather than listed twice (the bullet also isn't GSM-7, so it would make the whole text
    UCS-2 and cost more parts)."""
    if not choices:
        return text
    lines = text.split("\n")
    bullets: dict[str, int] = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped[:1] in ("•", "-", "*") and stripped[1:].strip() in choices:
            bullets.setdefault(stripped[1:].strip(), i)
    if all(choice in bullets for choice in choices):
        for n, choice in enumerate(choices, start=1):
            lines[bullets[choice]] = f"{n}) {choice}"
        return "\n".join(lines)
    listed = "\n".join(f"{n}) {choice}" for n, choice in enumerate(choices, start=1))
    return f"{text}\n{listed}" if text else listed


def split_body(text: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    """Twilio takes up to 1600 characters a message: longer texts go as several."""
    return split_parts(text, limit, unit="chars") or [""]


def attachment_kind(mime: str | None) -> str:
    major = (mime or "").split("/", 1)[0].lower()
    return major if major in ("image", "video", "audio") else "file"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """The form's (name, value) pairs in order, repeats kept; ValueError if it isn't one."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return parse_qsl(
        text,
        keep_blank_values=True,
        strict_parsing=bool(text),
        errors="strict",
        max_num_fields=MAX_FIELDS,
    )


# The channel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str
    auth_token: SecretStr
    from_number: str | None
    messaging_service_sid: str | None
    api_url: str = "https://api.twilio.com"
    public_url: str | None = None

    def __repr__(self) -> str:  # the token stays out of any repr that reaches a log
        return f"TwilioConfig(account_sid={self.account_sid!r}, api_url={self.api_url!r})"


class SmsChannel(Channel):
    name = "sms"

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str,
        config: TwilioConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        timeout: float = 30.0,
    ) -> None:
        check_inbox(inbox, "SMS_INBOX")
        super().__init__(ctx, inbox)
        self.config = config
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout
        self.api = config.api_url.rstrip("/")
        self.public_url = config.public_url.rstrip("/") if config.public_url else None
        self.path = f"/webhooks/sms/{inbox}"
        self.session: aiohttp.ClientSession | None = None
        # Parts of a long text already sent, so a retried send does not repeat them.
        self.parts = PartsSent()

    def __repr__(self) -> str:
        return f"SmsChannel(inbox={self.inbox!r}, account_sid={self.config.account_sid!r})"

    def routes(self) -> list[Route]:
        return [
            Route("POST", self.path, self.inbound, f"sms-{self.inbox}"),
            Route("POST", f"{self.path}/status", self.status_callback, f"sms-{self.inbox}-status"),
        ]

    async def start(self) -> None:
        self._client()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={
                    "Accept": "application/json",
                    # aiohttp drops it on a redirect to another host (media stored elsewhere).
                    "Authorization": aiohttp.encode_basic_auth(
                        self.config.account_sid, self.config.auth_token.get_secret_value()
                    ),
                },
            )
        return self.session

    def _account_url(self, tail: str) -> str:
        return f"{self.api}/2010-04-01/Accounts/{self.config.account_sid}/{tail}"

    # Webhooks --------------------------------------------------------------------------

    async def inbound(self, request: web.Request) -> web.Response:
        try:
            params = await self._verified(request)
            msg = self._to_inbound(_model(InboundSms, params), params)
        except Rejected as exc:
            return _refuse(request, exc)
        except ValidationError as exc:  # fine as a form, not as a message (From all blanks)
            fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
            return _refuse(request, Rejected(400, f"unusable {fields or 'message'}"))
        await self.ctx.publish(msg)
        return web.Response(text=TWIML_EMPTY, content_type="text/xml", charset="utf-8")

    # Not `status`: that is Channel.status(), the channel's health (/healthz, /api/channels).
    async def status_callback(self, request: web.Request) -> web.Response:
        try:
            params = await self._verified(request)
            payload = _model(StatusCallback, params)
        except Rejected as exc:
            return _refuse(request, exc)
        receipt = self._to_status(payload, request.query.get("id"))
        if receipt is not None:
            await self.ctx.report(receipt)
        return web.Response(text="", content_type="text/plain")

    async def _verified(self, request: web.Request) -> list[tuple[str, str]]:
        """The form's parameters, once the body's size and Twilio's signature are checked."""
        body = await read_limited(request, MAX_BODY)
        if body is None:
            raise Rejected(413, f"body over {MAX_BODY} bytes")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise Rejected(403, "no X-Twilio-Signature")
        if request.content_type != FORM:
            raise Rejected(400, f"expected {FORM}, got {request.content_type or 'nothing'}")
        try:
            params = parse_form(body)
        except ValueError as exc:
            raise Rejected(400, f"malformed form ({type(exc).__name__})") from None
        token = self.config.auth_token.get_secret_value()
        if not is_valid(token, self.signed_url(request), params, signature):
            raise Rejected(403, "bad X-Twilio-Signature")
        # Checked as signed, kept without NUL ("%00"): PostgreSQL refuses it in text.
        return [(clean_text(name), clean_text(value)) for name, value in params]

    def signed_url(self, request: web.Request) -> str:
        """The URL Twilio called: behind a proxy, HUB_PUBLIC_URL + the path and query string as
        received (still percent-encoded); without one, the request's own URL."""
        base = self.public_url or f"{request.scheme}://{request.host}"
        return base + request.raw_path

    def _to_inbound(self, payload: InboundSms, params: list[tuple[str, str]]) -> InboundMessage:
        fields = first_values(params)
        sender = payload.from_.strip()
        return InboundMessage(
            channel="sms",
            inbox=self.inbox,
            chat_id=sender,
            sender_id=sender,
            provider_message_id=payload.message_sid,
            text=payload.body,
            attachments=_media(fields, payload.num_media or 0),
            contact=ContactHints(phone=sender if E164_RE.match(sender) else None),
            consent=consent_of(payload.body, payload.opt_out_type),
            # One number writing to the salon's; the answer goes to that number alone.
            private=True,
            raw=fields,
        )

    def _to_status(self, payload: StatusCallback, outbound_id: str | None) -> DeliveryStatus | None:
        state_name = payload.message_status.strip().lower()
        if state_name in STATUS_IGNORED:
            return None
        state = STATUS_STATES.get(state_name)
        if state is None:
            log.info("sms status callback with an unknown status %r ignored", state_name[:32])
            return None
        error = None
        code = payload.error_code
        if state is DeliveryState.failed:
            error = error_text(code, payload.error_message) if code else state_name
        # Our id rides on the StatusCallback URL (signed with it), so a receipt that outruns
        # the answer to the create still finds its message.
        ours = outbound_id if outbound_id and OUTBOUND_ID_RE.match(outbound_id) else None
        return DeliveryStatus(
            outbound_id=ours,
            channel="sms",
            provider_message_id=payload.message_sid,
            status=state,
            error=error,
            unreachable=state is DeliveryState.failed and code in UNREACHABLE_CODES,
        )

    # Sending ---------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        text = with_choices(msg.text, [q.text for q in msg.quick_replies])
        media = [a.url for a in msg.attachments if a.url and a.url.startswith("https://")]
        if not text.strip() and not media:
            raise PermanentSendError("nothing to send: no text and no media URL")
        parts = split_body(text)

        async def send_one(n: int, part: str) -> str | DeliveryStatus:
            form = self._form(msg, part, media if n == len(parts) - 1 else [])
            outcome = await self._create(msg.id, form)
            if isinstance(outcome, DeliveryStatus):
                return outcome
            return _part_ref(outcome.sid, _segments_of(outcome, part))

        sent = await self.parts.send(msg.id, parts, send_one)
        if isinstance(sent, DeliveryStatus):
            return sent
        refs = [_from_part_ref(ref) for ref in sent]
        return DeliveryStatus(
            outbound_id=msg.id,
            channel="sms",
            status=DeliveryState.sent,
            provider_message_id=refs[-1][0],
            segments=max(sum(segments for _, segments in refs), 1),
        )

    def _form(self, msg: OutboundMessage, body: str, media: list[str]) -> list[tuple[str, str]]:
        form = [("To", msg.chat_id)]
        if self.config.messaging_service_sid:
            form.append(("MessagingServiceSid", self.config.messaging_service_sid))
        else:
            form.append(("From", self.config.from_number or ""))
        if body:
            form.append(("Body", body))
        form.extend(("MediaUrl", url) for url in media[:MAX_MEDIA])
        if self.public_url:
            form.append(("StatusCallback", f"{self.public_url}{self.path}/status?id={msg.id}"))
        return form

    async def _create(
        self, outbound_id: str, form: list[tuple[str, str]]
    ) -> TwilioMessage | DeliveryStatus:
        """One Messages.json create: the resource, a permanent `failed` status, or a raise."""
        try:
            async with self._client().post(self._account_url("Messages.json"), data=form) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TwilioUnavailable(f"Twilio unreachable: {type(exc).__name__}") from None
        data = _json(raw)
        if status in (200, 201):
            try:
                return TwilioMessage.model_validate(data)
            except ValidationError:
                raise TwilioUnavailable(f"Twilio answered {status} without a message") from None
        error = TwilioError.model_validate(data if isinstance(data, dict) else {})
        text = error_text(error.code, error.message or f"HTTP {status}")
        if status == 429 or status >= 500:
            wait = retry_after_seconds(headers.get("Retry-After"), self.clock())
            if wait:
                await self.sleep(min(wait, MAX_RETRY_AFTER))
            raise TwilioUnavailable(f"Twilio answered {status}: {text}"[:500])
        log.info("twilio refused a message (%s): %s", status, text[:200])
        return DeliveryStatus(
            outbound_id=outbound_id,
            channel="sms",
            status=DeliveryState.failed,
            error=text[:2000],
            retryable=False,
            unreachable=error.code in UNREACHABLE_CODES,
        )

    # Attachments -----------------------------------------------------------------------

    async def fetch_attachment(self, inbox: str, ref: str) -> FetchedFile:
        """The media of an inbound MMS (Twilio serves it only with the account's credentials
        when media auth is on); the reference is "<message sid>:<media sid>"."""
        match = MEDIA_REF_RE.match(ref)
        if inbox != self.inbox or not match:
            raise AttachmentUnavailable("unknown SMS media reference")
        url = self._account_url(f"Messages/{match['msg']}/Media/{match['media']}")
        try:
            async with self._client().get(url) as resp:
                if resp.status != 200:
                    raise AttachmentUnavailable(f"Twilio answered {resp.status} for the media")
                if (resp.content_length or 0) > MAX_FILE:
                    raise AttachmentUnavailable("the media is too large")
                content = await read_stream(resp.content, MAX_FILE + 1)
                mime = resp.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AttachmentUnavailable(f"Twilio unreachable: {type(exc).__name__}") from None
        if len(content) > MAX_FILE:
            raise AttachmentUnavailable("the media is too large")
        return FetchedFile(content=content, mime_type=mime)


# Helpers ----------------------------------------------------------------------------------


def from_settings(settings: Settings, ctx: ChannelContext) -> SmsChannel | None:
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    sender = settings.twilio_from_number or settings.twilio_messaging_service_sid
    if not (settings.twilio_account_sid and token and sender):
        if settings.twilio_account_sid or token:
            missing = [
                name
                for name, value in (
                    ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", token),
                    ("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID", sender),
                )
                if not value
            ]
            log.warning("SMS is off: %s not set", ", ".join(missing))
        return None
    config = TwilioConfig(
        account_sid=settings.twilio_account_sid.strip(),
        auth_token=SecretStr(token.strip()),
        from_number=(settings.twilio_from_number or "").strip() or None,
        messaging_service_sid=(settings.twilio_messaging_service_sid or "").strip() or None,
        api_url=settings.twilio_api_url,
        public_url=settings.hub_public_url,
    )
    return SmsChannel(ctx, settings.sms_inbox, config)


M = TypeVar("M", bound=BaseModel)


def first_values(params: list[tuple[str, str]]) -> dict[str, str]:
    """Each parameter's first value (Twilio never repeats the ones we read)."""
    return dict(reversed(params))


def _model(model: type[M], params: list[tuple[str, str]]) -> M:
    try:
        return model.model_validate(first_values(params))
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise Rejected(400, f"missing or invalid {fields or 'fields'}") from None


def _refuse(request: web.Request, exc: Rejected) -> web.Response:
    log.warning("sms webhook %s refused (%d): %s", request.path, exc.status, exc.reason)
    return web.Response(status=exc.status, text=exc.reason, content_type="text/plain")


def _media(fields: dict[str, str], declared: int) -> list[Attachment]:
    attachments = []
    for n in range(min(declared, MAX_MEDIA)):
        url = fields.get(f"MediaUrl{n}")
        if not url:
            continue
        mime = fields.get(f"MediaContentType{n}") or None
        match = MEDIA_PATH_RE.search(url.split("?", 1)[0])
        attachments.append(
            Attachment(
                kind=attachment_kind(mime),  # type: ignore[arg-type]
                ref=f"{match['msg']}:{match['media']}" if match else None,
                url=url,
                mime_type=mime,
            )
        )
    return attachments


def _part_ref(message_sid: str, segments: int) -> str:
    # What PartsSent keeps of a part sent: its sid and its billed segments, so a retry that
    # sends only the rest still bills the whole text.
    return f"{message_sid} {segments}"


def _from_part_ref(ref: str) -> tuple[str, int]:
    message_sid, _, segments = ref.rpartition(" ")
    return message_sid, int(segments)


def _segments_of(message: TwilioMessage, body: str) -> int:
    try:
        given = int(message.num_segments) if message.num_segments is not None else 0
    except ValueError:
        given = 0
    return given if given >= 1 else count_segments(body)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
