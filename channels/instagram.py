"""Instagram: picks the mode (`from_settings`), and the official mode, Meta's Instagram
Messaging API for professional (business/creator) accounts, spoken over aiohttp.

Modes (INSTAGRAM_MODE): "off"; "official" (this module); "private" (instagrapi logs in as the
account: channels/instagram_private.py, imported only when chosen, so instagrapi is loaded only
then); "auto": official when INSTAGRAM_ACCESS_TOKEN is set, else private when
INSTAGRAM_USERNAME is set, else off.

Inbound: Meta calls /webhooks/instagram/<inbox>. GET is the subscription handshake
(hub.mode=subscribe, hub.verify_token compared in constant time, hub.challenge echoed). POST
carries events, signed with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body keyed
with the app secret>`, checked before anything is parsed. Messages and postbacks become
`InboundMessage`s (mid = the dedupe key, chat = the sender's IGSID); `read` marks our message
read; echoes (the account's own messages) go to the hub as `own` (it drops those it sent
itself and shows the owner's replies from the app as staff replies); deletions, reactions and
edits are acknowledged and ignored
(channels/instagram_graph.py has the payloads). Anything Meta might send that we don't use is
answered 200: Meta retries a non-200 for hours.

Outbound: POST {api}/{version}/{account or "me"}/messages with `Authorization: Bearer`. The
reply window is enforced here, before Meta is asked: the time of the client's last message is
kept per chat (ctx state "window:<chat>"); within 24 hours anything goes; staff may answer
within 7 days with the HUMAN_AGENT tag; otherwise the send is refused with the reason.
Graph errors: rate limits (4, 17, 32, 613, HTTP 429), 1/2, 5xx and network errors are transient
(raised, Retry-After waited out first); 190 (bad token) is permanent and puts the channel in
`error`; everything else (10, 551, 2018278: outside the window, user unavailable; 100: bad
recipient) is permanent with Meta's own message.

The access token, app secret and verify token are never logged, put in a URL or a repr.
docs/channels/instagram.md has the settings and choices.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr, ValidationError

from channels.base import Channel, ChannelContext, ChannelStatus, PermanentSendError, Route
from channels.http_body import read_limited
from channels.instagram_graph import (
    SENDABLE_KINDS,
    SIGNATURE_HEADER,
    MessagingEvent,
    Parsed,
    SendAnswer,
    WebhookPayload,
    graph_error,
    is_signed,
    parse_event,
    quick_replies,
    split_text,
    token_matches,
    web_url,
)
from channels.parts import PartsSent
from channels.webhook import Rejected, check_inbox, parse_json
from hub.config import Settings
from hub.messages import (
    Author,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
)

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_RETRY_AFTER = 60.0  # seconds; a longer wait is left to the dispatcher's backoff
MAX_CHALLENGE = 256
STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
WINDOW_KEY = "window:{chat}"
MAX_STATE_KEY = 200  # the channel_state table's key column
BAD_TOKEN_REASON = "access token expired or invalid"
WINDOW_RULES = (
    "Instagram allows replies within 24 hours (7 days for a person, with the HUMAN_AGENT tag)"
)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class InstagramUnavailable(Exception):
    """A transient failure talking to Meta (network, rate limit, 5xx): retried."""


@dataclass(frozen=True)
class InstagramConfig:
    access_token: SecretStr
    app_secret: SecretStr
    verify_token: SecretStr
    account_id: str | None = None
    api_url: str = "https://graph.instagram.com"
    api_version: str = "v21.0"

    def __repr__(self) -> str:  # the secrets stay out of any repr that reaches a log
        return (
            f"InstagramConfig(account_id={self.account_id!r}, api_url={self.api_url!r}, "
            f"api_version={self.api_version!r})"
        )


@dataclass(frozen=True)
class WindowDecision:
    """How a message may go out: as a RESPONSE, with the HUMAN_AGENT tag, or not at all."""

    tag: str | None = None
    refused: str | None = None


def window_decision(last_inbound: datetime | None, now: datetime, author: Author) -> WindowDecision:
    """Instagram's reply window for a message by `author`, the client's last message at
    `last_inbound` (None: not known here, so Meta decides)."""
    if last_inbound is None:
        return WindowDecision()
    age = now - last_inbound
    if age <= STANDARD_WINDOW:
        return WindowDecision()
    if author is Author.staff and age <= HUMAN_AGENT_WINDOW:
        return WindowDecision(tag="HUMAN_AGENT")
    limit = "7 days" if author is Author.staff else "24 hours"
    return WindowDecision(refused=f"the client last wrote more than {limit} ago; {WINDOW_RULES}")


def window_key(chat_id: str) -> str:
    """Where a chat's reply window is kept. An IGSID is some 16 digits; an id too long for
    the key column (the webhook takes up to 200 characters) is kept under its digest."""
    key = WINDOW_KEY.format(chat=chat_id)
    if len(key) <= MAX_STATE_KEY:
        return key
    return WINDOW_KEY.format(chat="#" + hashlib.sha256(chat_id.encode()).hexdigest())


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


class InstagramChannel(Channel):
    name = "instagram"

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str,
        config: InstagramConfig,
        *,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        timeout: float = 30.0,
        check_token: bool = True,
    ) -> None:
        check_inbox(inbox, "INSTAGRAM_INBOX")
        super().__init__(ctx, inbox)
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.timeout = timeout
        self.check_token = check_token
        self.api = f"{config.api_url.rstrip('/')}/{config.api_version.strip('/')}"
        self.path = f"/webhooks/instagram/{inbox}"
        self.session: aiohttp.ClientSession | None = None
        self.check_task: asyncio.Task[None] | None = None
        self.username: str | None = None  # the account's, as Meta knows it
        self._status = ChannelStatus()
        # Parts of a long message already sent, so a retried send does not repeat them.
        self.parts = PartsSent()

    def __repr__(self) -> str:
        return f"InstagramChannel(inbox={self.inbox!r}, account_id={self.config.account_id!r})"

    def routes(self) -> list[Route]:
        return [
            Route("GET", self.path, self.handshake, f"instagram-{self.inbox}-verify"),
            Route("POST", self.path, self.webhook, f"instagram-{self.inbox}"),
        ]

    def status(self) -> ChannelStatus:
        return self._status

    async def start(self) -> None:
        self._client()
        if self.check_token:
            # In the background: a hub whose Meta is unreachable still starts.
            self.check_task = asyncio.create_task(
                self._check_token(), name=f"instagram-{self.inbox}-check"
            )

    async def stop(self) -> None:
        if self.check_task is not None:
            self.check_task.cancel()
            await asyncio.gather(self.check_task, return_exceptions=True)
            self.check_task = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Authorization": f"Bearer {self.config.access_token.get_secret_value()}"},
            )
        return self.session

    async def _check_token(self) -> None:
        """GET /me once at start: a bad token shows in /healthz before the first reply."""
        try:
            async with self._client().get(
                f"{self.api}/me", params={"fields": "user_id,username"}
            ) as resp:
                status, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "instagram %s: Meta unreachable at start (%s)", self.inbox, type(exc).__name__
            )
            return
        if status == 200:
            try:
                self.username = str(json.loads(body).get("username") or "") or None
            except (ValueError, AttributeError):
                self.username = None
            log.info("instagram %s: connected as %s", self.inbox, self.username or "?")
            return
        error = graph_error(status, body)
        if error.bad_token:
            self._token_refused()
        else:
            log.warning("instagram %s: the token check answered %s", self.inbox, error.text())

    def _token_refused(self) -> None:
        if self._status.state != "error":
            log.error("instagram %s: Meta refused the access token", self.inbox)
        self._status = ChannelStatus(state="error", reason=BAD_TOKEN_REASON)

    # Webhook ---------------------------------------------------------------------------

    async def handshake(self, request: web.Request) -> web.StreamResponse:
        """Meta's subscription check: echo hub.challenge when the verify token matches."""
        query = request.query
        mode, challenge = query.get("hub.mode"), query.get("hub.challenge")
        if mode != "subscribe" or not challenge or len(challenge) > MAX_CHALLENGE:
            log.warning("instagram webhook %s: a malformed verification request", self.inbox)
            return web.Response(status=400, text="not a subscription request")
        expected = self.config.verify_token.get_secret_value()
        if not token_matches(expected, query.get("hub.verify_token")):
            log.warning("instagram webhook %s: verification with a wrong token", self.inbox)
            return web.Response(status=403, text="wrong verify token")
        log.info("instagram webhook %s: Meta verified the webhook", self.inbox)
        return web.Response(status=200, text=challenge, content_type="text/plain")

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        try:
            payload, events = await self._verified(request)
        except Rejected as exc:
            log.warning("instagram webhook %s refused (%d): %s", self.inbox, exc.status, exc.reason)
            return web.Response(status=exc.status, text=exc.reason)
        if payload.object != "instagram":
            log.info("instagram %s: a %r notification ignored", self.inbox, payload.object[:40])
            return web.Response(status=200)
        for entry in payload.entry:
            if entry.changes or entry.standby:
                log.info("instagram %s: comment/standby notifications ignored", self.inbox)
        try:
            # Every event read before any is published: a bad one refuses the whole call.
            parsed = [self._parse(event, raw) for event, raw in events]
        except ValidationError as exc:
            reason = f"malformed event: {_fields(exc)}"
            log.warning("instagram webhook %s refused (400): %s", self.inbox, reason)
            return web.Response(status=400, text=reason)
        for item in parsed:
            await self._handle(item)
        return web.Response(status=200)

    async def _verified(
        self, request: web.Request
    ) -> tuple[WebhookPayload, list[tuple[MessagingEvent, dict[str, Any]]]]:
        """The notification, once its size and signature are checked and its shape is valid
        (all of it before anything is published, so a bad one stores nothing)."""
        body = await read_limited(request, MAX_BODY)
        if body is None:
            raise Rejected(413, f"body over {MAX_BODY} bytes")
        secret = self.config.app_secret.get_secret_value()
        if not is_signed(secret, body, request.headers.get(SIGNATURE_HEADER)):
            raise Rejected(403, f"missing or wrong {SIGNATURE_HEADER}")
        try:
            raw = parse_json(body)
        except (ValueError, RecursionError):
            raise Rejected(400, "the body is not JSON") from None
        if not isinstance(raw, dict):
            raise Rejected(400, "not a webhook notification (not an object)")
        try:
            payload = WebhookPayload.model_validate(raw)
        except ValidationError as exc:
            raise Rejected(400, f"malformed notification: {_fields(exc)}") from None
        events: list[tuple[MessagingEvent, dict[str, Any]]] = []
        for n, entry in enumerate(raw.get("entry") or []):
            for m, item in enumerate((entry or {}).get("messaging") or []):
                events.append((payload.entry[n].messaging[m], item))
        return payload, events

    def _parse(self, event: MessagingEvent, raw: dict[str, Any]) -> Parsed:
        return parse_event(
            event, self.inbox, raw, account_id=self.config.account_id, clock=self.clock
        )

    async def _handle(self, parsed: Parsed) -> None:
        if parsed.inbound is not None:
            # The window first: the bot's answer to this message must find it open. Only the
            # client's own messages open it.
            if not parsed.inbound.own:
                await self._opened(parsed.inbound)
            await self.ctx.publish(parsed.inbound)
        elif parsed.read_mid is not None:
            await self.ctx.report(
                DeliveryStatus(
                    channel="instagram",
                    provider_message_id=parsed.read_mid,
                    status=DeliveryState.read,
                    at=self.clock(),
                )
            )
        else:
            log.info("instagram %s: %s ignored", self.inbox, parsed.ignored)

    async def _opened(self, msg: InboundMessage) -> None:
        """The client wrote: their reply window starts at this message (the latest wins)."""
        key = window_key(msg.chat_id)
        known = await self.last_inbound(msg.chat_id)
        if known is not None and known >= msg.sent_at:
            return
        await self.ctx.save_state(
            "instagram", self.inbox, key, {"last_inbound": msg.sent_at.isoformat()}
        )

    async def last_inbound(self, chat_id: str) -> datetime | None:
        state = await self.ctx.load_state("instagram", self.inbox, window_key(chat_id))
        value = (state or {}).get("last_inbound")
        if not isinstance(value, str):
            return None
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    # Sending ---------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        if msg.inbox != self.inbox:
            raise PermanentSendError(f"no Instagram account for inbox {msg.inbox!r}")
        steps = self._steps(msg)
        if not steps:
            raise PermanentSendError("nothing to send: no text and no attachment with a URL")
        decision = window_decision(await self.last_inbound(msg.chat_id), self.clock(), msg.author)
        if decision.refused:
            log.info("instagram %s: a reply outside the window refused", self.inbox)
            raise PermanentSendError(decision.refused)
        sent = await self.parts.send(
            msg.id, steps, lambda _, step: self._send_one(msg, step, decision.tag)
        )
        if isinstance(sent, DeliveryStatus):
            return sent
        # The last part's id: a "read" of it means the whole message was read.
        return DeliveryStatus(
            outbound_id=msg.id,
            channel="instagram",
            status=DeliveryState.sent,
            provider_message_id=sent[-1],
        )

    def _steps(self, msg: OutboundMessage) -> list[dict[str, Any]]:
        """The messages to send: attachments first, then the text (quick replies ride on the
        last message, as Instagram shows them only under the latest one)."""
        steps: list[dict[str, Any]] = []
        links: list[str] = []
        for item in msg.attachments:
            url = web_url(item.url)
            if url is None:
                continue  # a provider reference from another channel means nothing here
            kind = SENDABLE_KINDS.get(item.kind)
            if kind is None:
                links.append(url)
            else:
                steps.append({"attachment": {"type": kind, "payload": {"url": url}}})
        text = "\n".join([msg.text.strip(), *links]).strip()
        steps.extend({"text": part} for part in split_text(text))
        buttons = quick_replies(msg.quick_replies)
        if steps and buttons:
            steps[-1]["quick_replies"] = buttons
        return steps

    async def _send_one(
        self, msg: OutboundMessage, message: dict[str, Any], tag: str | None
    ) -> str | DeliveryStatus:
        """One Send API call: Meta's message id, or a permanent `failed`; raises when it is
        worth trying again."""
        body: dict[str, Any] = {"recipient": {"id": msg.chat_id}, "message": message}
        if tag:
            body["messaging_type"] = "MESSAGE_TAG"
            body["tag"] = tag
        else:
            body["messaging_type"] = "RESPONSE"
        account = self.config.account_id or "me"
        status, raw, retry_after = await self._post(f"{self.api}/{account}/messages", body)
        if status == 200:
            try:
                answer = SendAnswer.model_validate_json(raw)
            except ValidationError:
                raise InstagramUnavailable(
                    "the Send API answered 200 without a message_id"
                ) from None
            if self._status.state == "error":
                self._status = ChannelStatus()
            return answer.message_id
        error = graph_error(status, raw)
        if error.transient:
            wait = retry_after_seconds(retry_after)
            if wait:
                await self.sleep(min(wait, MAX_RETRY_AFTER))
            raise InstagramUnavailable(f"Meta answered {error.text()}")
        if error.bad_token:
            self._token_refused()
        else:
            log.info("instagram %s: Meta refused a message: %s", self.inbox, error.text())
        return DeliveryStatus(
            outbound_id=msg.id,
            channel="instagram",
            status=DeliveryState.failed,
            error=error.text(),
            retryable=False,
            unreachable=error.unreachable,
        )

    async def _post(self, url: str, body: dict[str, Any]) -> tuple[int, bytes, str | None]:
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            async with self._client().post(
                url, data=data, headers={"Content-Type": "application/json"}
            ) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InstagramUnavailable(f"Meta unreachable: {type(exc).__name__}") from None


def _fields(exc: ValidationError) -> str:
    return ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))[:300]


# Choosing the mode ------------------------------------------------------------------------


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


def official_from_settings(
    settings: Settings, ctx: ChannelContext, *, clock: Clock = utcnow
) -> InstagramChannel | None:
    token = _secret(settings.instagram_access_token)
    secret = _secret(settings.instagram_app_secret)
    verify = _secret(settings.instagram_verify_token)
    missing = [
        name
        for name, value in (
            ("INSTAGRAM_ACCESS_TOKEN", token),
            ("INSTAGRAM_APP_SECRET", secret),
            ("INSTAGRAM_VERIFY_TOKEN", verify),
        )
        if not value
    ]
    if missing:
        log.warning("instagram (official) is off: %s not set", ", ".join(missing))
        return None
    config = InstagramConfig(
        access_token=SecretStr(token),
        app_secret=SecretStr(secret),
        verify_token=SecretStr(verify),
        account_id=(settings.instagram_account_id or "").strip() or None,
        api_url=settings.instagram_api_url,
        api_version=settings.instagram_api_version,
    )
    return InstagramChannel(ctx, settings.instagram_inbox, config, clock=clock)


def from_settings(settings: Settings, ctx: ChannelContext) -> Channel | None:
    mode = settings.instagram_mode
    if mode == "auto":
        if _secret(settings.instagram_access_token):
            mode = "official"
        elif (settings.instagram_username or "").strip():
            mode = "private"
        else:
            return None
    if mode == "official":
        return official_from_settings(settings, ctx)
    if mode == "private":
        # Imported here: instagrapi is loaded only by a hub that uses the private mode.
        try:
            from channels.instagram_private import from_settings as private_from_settings
        except ModuleNotFoundError as exc:
            if exc.name not in ("channels.instagram_private", "instagrapi"):
                raise
            log.error("instagram (private) is off: %s is not installed", exc.name)
            return None
        return private_from_settings(settings, ctx)
    return None
