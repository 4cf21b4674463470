"""Telegram: one or several bots (one inbox each), by webhook or long polling, through aiogram.

Inbound: a webhook at /webhooks/telegram/<inbox> (checked with the secret Telegram echoes in
`X-Telegram-Bot-Api-Secret-Token`) or a getUpdates loop; either way an update becomes an
`InboundMessage` (channels/telegram_updates.py), published before Telegram is told "got it".
Outbound: sendMessage (long texts split, quick replies as an inline keyboard on the last
part), sendPhoto/sendDocument for attachments with a URL, spaced by Telegram's limits
(channels/telegram_limits.py) and retried after a 429's `retry_after`.

Groups, supergroups and channels are ignored unless TELEGRAM_GROUPS=staff keeps them for staff
(channels/telegram_updates.py); either way only staff ever write to a group: the bot's replies
and the hub's own messages (reminders, confirmations) to one are refused here.

Bot tokens are part of every Bot API URL: nothing here logs a URL or an aiohttp error text
without `redact`. docs/channels/telegram.md has the settings and choices.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mimetypes
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from pathlib import PurePosixPath
from typing import Any, Literal

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiohttp import ClientError, web
from pydantic import ValidationError

from channels.base import (
    AttachmentUnavailable,
    Channel,
    ChannelContext,
    FetchedFile,
    PermanentSendError,
    Route,
)
from channels.http_body import read_limited
from channels.layout import button_rows
from channels.parts import PartsSent
from channels.telegram_limits import SendLimits
from channels.telegram_updates import (
    ALLOWED_UPDATES,
    Event,
    GroupPolicy,
    TgUpdate,
    callback_data,
    interpret,
    split_text,
)
from channels.webhook import INBOX_RE, parse_json
from hub.config import Settings
from hub.messages import (
    Attachment,
    Author,
    DeliveryState,
    DeliveryStatus,
    OutboundMessage,
    QuickReply,
)

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024
MAX_FILE = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB
TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
FILE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Anything shaped like a bot token, wherever it hides (an aiohttp error quoting a URL).
TOKEN_SHAPE = re.compile(r"\d{3,20}:[A-Za-z0-9_-]{20,100}")
DERIVE_LABEL = b"salon-hub telegram webhook secret"

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Mode = Literal["webhook", "polling"]
GROUP_REFUSAL = "only staff write to a group chat: no bot reply or message of the hub's goes there"


class TelegramUnavailable(Exception):
    """A transient failure talking to Telegram (network, 5xx, flood wait too long): retry."""


class _Refused(Exception):
    """Telegram refused for good; `unreachable` when the person blocked the bot."""

    def __init__(self, description: str, *, unreachable: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.unreachable = unreachable


# Settings ---------------------------------------------------------------------------------


def parse_tokens(raw: str) -> dict[str, str]:
    """One bare token is inbox "main"; "main=T1,vip=T2" is one inbox per bot.

    The errors name the item, never quote it: it is a secret."""
    tokens: dict[str, str] = {}
    for n, item in enumerate((i.strip() for i in raw.split(",")), start=1):
        if not item:
            continue
        inbox, sep, token = item.partition("=")
        if not sep:
            inbox, token = "main", item
        inbox, token = inbox.strip(), token.strip()
        if not INBOX_RE.match(inbox):
            raise ValueError(f"TELEGRAM_BOT_TOKENS: item {n} has an invalid inbox name")
        if not TOKEN_RE.match(token):
            raise ValueError(f"TELEGRAM_BOT_TOKENS: item {n} is not a bot token (123456:ABC…)")
        if inbox in tokens:
            raise ValueError(f"TELEGRAM_BOT_TOKENS: inbox {inbox!r} is given twice")
        tokens[inbox] = token
    if not tokens:
        raise ValueError("TELEGRAM_BOT_TOKENS is set but holds no token")
    return tokens


def webhook_secret(
    inbox: str, token: str, *, configured: str | None, hub_key: str | None, mode: Mode
) -> str:
    """The secret Telegram sends back on every webhook call (1-256 of A-Za-z0-9_-).

    Every hub process must compute the same one, so it is derived, not random: from
    TELEGRAM_WEBHOOK_SECRET, else HUB_SECRET_KEY (per inbox), else the bot token (which
    only Telegram and we know). Polling needs none: a random one keeps the route shut."""
    if configured:
        if not SECRET_RE.match(configured):
            raise ValueError("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Za-z0-9_-")
        return configured
    if hub_key:
        message = f"telegram-webhook:{inbox}".encode()
        return hmac.new(hub_key.encode(), message, hashlib.sha256).hexdigest()
    if mode == "webhook":
        return hmac.new(token.encode(), DERIVE_LABEL, hashlib.sha256).hexdigest()
    return secrets.token_urlsafe(32)


def from_settings(settings: Settings, ctx: ChannelContext) -> TelegramChannel | None:
    if settings.telegram_bot_tokens is None:
        return None
    raw = settings.telegram_bot_tokens.get_secret_value().strip()
    if not raw:
        return None
    tokens = parse_tokens(raw)
    mode: Mode
    if settings.telegram_mode == "auto":
        mode = "webhook" if settings.hub_public_url else "polling"
    else:
        mode = settings.telegram_mode
    if mode == "webhook" and not settings.hub_public_url:
        raise ValueError("TELEGRAM_MODE=webhook needs HUB_PUBLIC_URL (or use polling)")
    configured = settings.telegram_webhook_secret
    hub_key = settings.hub_secret_key
    hooks = {
        inbox: webhook_secret(
            inbox,
            token,
            configured=configured.get_secret_value() if configured else None,
            hub_key=hub_key.get_secret_value() if hub_key else None,
            mode=mode,
        )
        for inbox, token in tokens.items()
    }
    return TelegramChannel(
        ctx,
        tokens,
        api_url=settings.telegram_api_url,
        mode=mode,
        public_url=settings.hub_public_url,
        webhook_secrets=hooks,
        groups=settings.telegram_groups,
    )


def redact(text: str, tokens: list[str] | tuple[str, ...] = ()) -> str:
    for token in tokens:
        text = text.replace(token, "<token>")
    return TOKEN_SHAPE.sub("<token>", text)


# One bot ----------------------------------------------------------------------------------


class TelegramInbox:
    """One bot: its inbox name, aiogram Bot, webhook secret and sending limits."""

    def __init__(self, inbox: str, token: str, session: AiohttpSession, secret: str) -> None:
        self.inbox = inbox
        self.bot = Bot(token, session=session)
        self.secret = secret
        self.limits = SendLimits()
        self.username: str | None = None

    def __repr__(self) -> str:  # never the token
        return f"TelegramInbox({self.inbox!r}, @{self.username or '?'})"


# The channel ------------------------------------------------------------------------------


class TelegramChannel(Channel):
    name = "telegram"

    def __init__(
        self,
        ctx: ChannelContext,
        tokens: Mapping[str, str],
        *,
        api_url: str = "https://api.telegram.org",
        mode: Mode = "polling",
        public_url: str | None = None,
        webhook_secrets: Mapping[str, str] | None = None,
        groups: GroupPolicy = "ignore",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        poll_timeout: int = 30,
        poll_backoff: tuple[float, float] = (1.0, 60.0),
        flood_retries: int = 3,
        # Longer waits are left to the dispatcher: an entry held much longer than
        # HUB_CLAIM_IDLE_MS (30 s by default) may be claimed and sent by another process.
        max_flood_wait: float = 25.0,
    ) -> None:
        if not tokens:
            raise ValueError("a Telegram channel needs at least one bot token")
        super().__init__(ctx, next(iter(tokens)))
        self.mode = mode
        self.public_url = (public_url or "").rstrip("/")
        self.groups = groups
        # The outbound path's time: tests swap these to check spacing without waiting.
        self.clock = clock
        self.sleep = sleep
        self.poll_timeout = poll_timeout
        self.poll_backoff = poll_backoff
        self.flood_retries = flood_retries
        self.max_flood_wait = max_flood_wait
        self.session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
        given = webhook_secrets or {}
        self.inboxes = {
            inbox: TelegramInbox(inbox, token, self.session, given.get(inbox) or _random())
            for inbox, token in tokens.items()
        }
        self._tokens = tuple(tokens.values())
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Parts of a long message already sent, so a retried send does not repeat them.
        self.parts = PartsSent()
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"TelegramChannel({self.mode}, inboxes={sorted(self.inboxes)})"

    def routes(self) -> list[Route]:
        return [Route("POST", "/webhooks/telegram/{inbox}", self.webhook, "telegram-webhook")]

    async def start(self) -> None:
        self._stopping.clear()
        for box in self.inboxes.values():
            run = self._register if self.mode == "webhook" else self._poll
            self._tasks.append(asyncio.create_task(run(box), name=f"telegram-{box.inbox}"))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.session.close()

    # Webhook ---------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        box = self.inboxes.get(request.match_info["inbox"])
        if box is None:
            log.info("telegram webhook for an unknown inbox")
            return web.Response(status=404, text="unknown inbox")
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, box.secret.encode()):
            log.info("telegram webhook %s: wrong or missing secret token", box.inbox)
            return web.Response(status=403, text="forbidden")
        body = await read_limited(request, MAX_BODY)
        if body is None:
            log.info("telegram webhook %s: body over %d bytes", box.inbox, MAX_BODY)
            return web.Response(status=413, text="too large")
        try:
            raw = parse_json(body)
        except (ValueError, RecursionError):
            log.info("telegram webhook %s: the body is not JSON", box.inbox)
            return web.Response(status=400, text="not JSON")
        if not isinstance(raw, dict):
            log.info("telegram webhook %s: the body is not a JSON object", box.inbox)
            return web.Response(status=400, text="not an update")
        try:
            update = TgUpdate.model_validate(raw)
            # What it means, before anything is published: an update our models take but the
            # hub's message can't hold is refused whole, not a 500 halfway.
            event = interpret(update, box.inbox, raw, groups=self.groups)
        except ValidationError as exc:
            log.info("telegram webhook %s: malformed update: %s", box.inbox, _short(exc))
            return web.Response(status=400, text="malformed update")
        await self._act(box, update, event)
        return web.Response(status=200)

    async def _register(self, box: TelegramInbox) -> None:
        url = f"{self.public_url}/webhooks/telegram/{box.inbox}"

        async def register() -> None:
            await self._whoami(box)
            await box.bot.set_webhook(
                url=url,
                secret_token=box.secret,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=False,
            )

        if await self._until_done(box, "setWebhook", register):
            log.info("telegram %s: webhook set to %s", box.inbox, url)

    # Polling ---------------------------------------------------------------------------

    async def _poll(self, box: TelegramInbox) -> None:
        async def prepare() -> None:
            await self._whoami(box)
            # getUpdates refuses to work while a webhook is set (409).
            await box.bot.delete_webhook(drop_pending_updates=False)

        if not await self._until_done(box, "deleteWebhook", prepare):
            return
        log.info("telegram %s: polling for updates", box.inbox)
        offset: int | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                updates = await box.bot.get_updates(
                    offset=offset,
                    timeout=self.poll_timeout,
                    allowed_updates=ALLOWED_UPDATES,
                    request_timeout=self.poll_timeout + 15,
                )
            except TelegramUnauthorizedError:
                log.error("telegram %s: the bot token was refused; polling stopped", box.inbox)
                return
            except TelegramRetryAfter as exc:
                await self._pause(float(exc.retry_after))
                continue
            except (TelegramAPIError, ClientDecodeError, ClientError, OSError) as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "telegram %s: getUpdates failed (%s); retrying in %.1fs",
                    box.inbox,
                    self._safe(exc),
                    delay,
                )
                await self._pause(delay)
                continue
            failures = 0
            for update in updates:
                raw = update.model_dump(mode="json", by_alias=True, exclude_none=True)
                try:
                    await self._handle(box, TgUpdate.model_validate(raw), raw)
                except ValidationError as exc:
                    log.info("telegram %s: skipped a malformed update: %s", box.inbox, _short(exc))
                except Exception as exc:
                    # Not confirmed to Telegram: the next getUpdates brings it back.
                    failures += 1
                    log.warning(
                        "telegram %s: update %d not handled (%s)",
                        box.inbox,
                        update.update_id,
                        self._safe(exc),
                    )
                    await self._pause(self._backoff(failures))
                    break
                offset = update.update_id + 1

    async def _whoami(self, box: TelegramInbox) -> None:
        me = await box.bot.get_me()
        box.username = me.username

    async def _until_done(
        self, box: TelegramInbox, what: str, step: Callable[[], Awaitable[None]]
    ) -> bool:
        """Run a start-up call until it works; a refused token is final (logged, not raised,
        so one bad bot does not stop the hub)."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await step()
                return True
            except TelegramUnauthorizedError:
                log.error("telegram %s: the bot token was refused by Telegram", box.inbox)
                return False
            except TelegramRetryAfter as exc:
                await self._pause(float(exc.retry_after))
            except (TelegramAPIError, ClientDecodeError, ClientError, OSError) as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "telegram %s: %s failed (%s); retrying in %.1fs",
                    box.inbox,
                    what,
                    self._safe(exc),
                    delay,
                )
                await self._pause(delay)
        return False

    def _backoff(self, failures: int) -> float:
        base, cap = self.poll_backoff
        return min(cap, base * 2 ** min(failures - 1, 16)) * self._rng.uniform(0.5, 1.0)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    # Updates ---------------------------------------------------------------------------

    async def _handle(self, box: TelegramInbox, update: TgUpdate, raw: dict[str, Any]) -> None:
        await self._act(box, update, interpret(update, box.inbox, raw, groups=self.groups))

    async def _act(self, box: TelegramInbox, update: TgUpdate, event: Event) -> None:
        if event.message is not None:
            await self.ctx.publish(event.message)
        if event.answer_callback is not None:
            await self._answer_callback(box, event.answer_callback)
        if event.blocked_by is not None:
            await self.ctx.unreachable(
                "telegram", box.inbox, str(event.blocked_by), "blocked the bot"
            )
        if event.ignored is not None:
            log.log(
                logging.INFO if event.notice else logging.DEBUG,
                "telegram %s: update %d ignored: %s",
                box.inbox,
                update.update_id,
                event.ignored,
            )

    async def _answer_callback(self, box: TelegramInbox, query_id: str) -> None:
        # Stops the spinner on the button; a retried webhook answers again and is refused.
        try:
            await box.bot.answer_callback_query(query_id)
        except (TelegramAPIError, ClientDecodeError, ClientError, OSError) as exc:
            log.debug("telegram %s: answerCallbackQuery failed: %s", box.inbox, self._safe(exc))

    # Sending ---------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        box = self.inboxes.get(msg.inbox)
        if box is None:
            raise PermanentSendError(f"no Telegram bot for inbox {msg.inbox!r}")
        chat = _chat_ref(msg.chat_id)
        if _is_group(chat) and msg.author != Author.staff:
            # Everyone in a group reads it: a reminder or a bot reply there would tell them a
            # client's appointments. The hub's router and bot worker never send one; this is
            # the last word (a conversation stored before groups were ignored, say).
            log.info("telegram %s: refused a %s message to a group", box.inbox, msg.author)
            return DeliveryStatus(
                outbound_id=msg.id,
                status=DeliveryState.failed,
                error=GROUP_REFUSAL,
                retryable=False,
            )
        steps: list[str | Attachment] = [*split_text(msg.text), *_sendable(msg.attachments)]
        if not steps:
            raise PermanentSendError("nothing to send: no text and no attachment with a URL")
        markup = keyboard(msg.quick_replies) if msg.quick_replies else None

        async def send_one(n: int, step: str | Attachment) -> str | DeliveryStatus:
            last = n == len(steps) - 1
            try:
                message = await self._deliver(box, chat, step, markup if last else None)
            except _Refused as refused:
                return DeliveryStatus(
                    outbound_id=msg.id,
                    status=DeliveryState.failed,
                    error=refused.description,
                    retryable=False,
                    unreachable=refused.unreachable,
                )
            return f"{message.chat.id}:{message.message_id}"

        sent = await self.parts.send(msg.id, steps, send_one)
        if isinstance(sent, DeliveryStatus):
            return sent
        return DeliveryStatus(
            outbound_id=msg.id, status=DeliveryState.sent, provider_message_id=sent[0]
        )

    async def _deliver(
        self,
        box: TelegramInbox,
        chat: int | str,
        step: str | Attachment,
        markup: InlineKeyboardMarkup | None,
    ) -> Message:
        def call() -> Awaitable[Message]:
            if isinstance(step, str):
                return box.bot.send_message(chat, step, reply_markup=markup)
            source = step.url or step.ref or ""
            if step.kind == "image":
                return box.bot.send_photo(chat, source, reply_markup=markup)
            return box.bot.send_document(chat, source, reply_markup=markup)

        key = str(chat)
        group = _is_group(chat)
        wait = box.limits.chat_slot(key, group=group, now=self.clock())
        if wait > 0:
            await self.sleep(wait)
        wait = box.limits.bot_slot(self.clock())
        if wait > 0:
            await self.sleep(wait)
        box.limits.sending(key, at=self.clock())
        for attempt in range(self.flood_retries + 1):
            try:
                return await call()
            except TelegramRetryAfter as exc:
                retry_after = float(exc.retry_after)
                if attempt >= self.flood_retries or retry_after > self.max_flood_wait:
                    raise TelegramUnavailable(
                        f"Telegram flood control: retry after {exc.retry_after}s"
                    ) from None
                log.info(
                    "telegram %s: flood control on chat %s, waiting %ss",
                    box.inbox,
                    key,
                    exc.retry_after,
                )
                box.limits.defer(
                    key, group=group, until=self.clock() + retry_after, now=self.clock()
                )
                await self.sleep(retry_after)
            except TelegramForbiddenError as exc:
                # Blocked by the user, user deactivated, kicked from the group.
                raise _Refused(exc.message, unreachable=True) from None
            except (
                TelegramBadRequest,
                TelegramNotFound,
                TelegramMigrateToChat,
                TelegramEntityTooLarge,
            ) as exc:
                raise _Refused(exc.message) from None
            except TelegramUnauthorizedError:
                raise _Refused("Unauthorized: Telegram refused the bot token") from None
            except (TelegramAPIError, ClientDecodeError, ClientError, OSError) as exc:
                raise TelegramUnavailable(self._safe(exc)) from None
        raise AssertionError("unreachable")

    # Files -----------------------------------------------------------------------------

    async def fetch_attachment(self, inbox: str, ref: str) -> FetchedFile:
        box = self.inboxes.get(inbox)
        if box is None:
            raise AttachmentUnavailable("no Telegram bot for that inbox")
        if not FILE_ID_RE.match(ref):
            raise AttachmentUnavailable("not a Telegram file id")
        try:
            file = await box.bot.get_file(ref)
        except (TelegramBadRequest, TelegramNotFound) as exc:
            raise AttachmentUnavailable(f"Telegram has no such file ({exc.message})") from None
        except (TelegramAPIError, ClientDecodeError, ClientError, OSError) as exc:
            raise AttachmentUnavailable(f"Telegram is unavailable: {self._safe(exc)}") from None
        if file.file_size is not None and file.file_size > MAX_FILE:
            raise AttachmentUnavailable("the file is larger than the Bot API's 20 MB")
        if not file.file_path:
            raise AttachmentUnavailable("Telegram gave no path for that file")
        url = self.session.api.file_url(box.bot.token, file.file_path)
        content = await self._download(url)
        name = PurePosixPath(file.file_path).name or None
        return FetchedFile(content=content, mime_type=_mime_of(file.file_path), name=name)

    async def _download(self, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with aclosing(self.session.stream_content(url, timeout=60)) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > MAX_FILE:
                        raise AttachmentUnavailable("the file is larger than the Bot API's 20 MB")
                    chunks.append(chunk)
        except AttachmentUnavailable:
            raise
        except (ClientError, OSError, TimeoutError) as exc:
            # aiohttp quotes the URL (and so the token) in its errors: never pass them on.
            status = getattr(exc, "status", None)
            reason = f"HTTP {status}" if status else type(exc).__name__
            raise AttachmentUnavailable(f"the file could not be downloaded ({reason})") from None
        return b"".join(chunks)

    def _safe(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._tokens)[:500]


# Helpers ----------------------------------------------------------------------------------


def keyboard(replies: list[QuickReply]) -> InlineKeyboardMarkup:
    labels = [q.text for q in replies]
    data = callback_data(labels)
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=labels[i], callback_data=data[i]) for i in row]
            for row in button_rows(labels)
        ]
    )


def _sendable(attachments: list[Attachment]) -> list[Attachment]:
    # A location or a contact card has nothing to upload; other kinds go by URL (or by a
    # Telegram file id, valid for the bot that received it).
    return [a for a in attachments if a.kind not in ("location", "contact") and (a.url or a.ref)]


# Telegram's own file types that `mimetypes` does not know.
MIME_BY_SUFFIX = {
    ".oga": "audio/ogg",
    ".ogg": "audio/ogg",
    ".tgs": "application/x-tgsticker",
    ".webp": "image/webp",
    ".webm": "video/webm",
}


def _mime_of(path: str) -> str | None:
    suffix = PurePosixPath(path).suffix.lower()
    return MIME_BY_SUFFIX.get(suffix) or mimetypes.guess_type(path)[0]


def _chat_ref(chat_id: str) -> int | str:
    return int(chat_id) if re.fullmatch(r"-?\d{1,20}", chat_id) else chat_id


def _is_group(chat: int | str) -> bool:
    # Users have positive ids; groups, supergroups and channels negative (or an @name).
    return isinstance(chat, str) or chat < 0


def _random() -> str:
    return secrets.token_urlsafe(32)


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )[:300]
