"""Email: the salon's own mailbox, read over IMAP and answered over SMTP.

Inbound: one hub process at a time (`ctx.run_exclusive(f"email:{inbox}")`) keeps an IMAP
connection with the folder selected, takes every message with a UID above its cursor, and then
waits in IDLE (or sleeps the poll interval when the server has no IDLE). Each message is
published first and the cursor (UIDVALIDITY + last UID, in `ctx.save_state`) advanced after, so
a crash re-takes at most one message, which the store drops by its Message-ID. A UIDVALIDITY
change (the folder was rebuilt) re-scans the recent days the same way. The first start takes
the last FIRST_SYNC_DAYS days only: an old mailbox is not answered years later.

chat_id and sender_id are the sender's address, lower-cased, so a client's replies land in one
conversation whatever their subject. Robots (auto-replies, list mail, bounces) are published
with `automated=True`; a bounce of one of our messages also marks it failed (`ctx.report`).

Outbound: aiosmtplib over TLS, STARTTLS or plain. A reply carries our own Message-ID (the
provider message id) and In-Reply-To/References of the client's last message, under
"Re: <subject>"; the thread's headers are kept per chat in `ctx.save_state`. 4xx answers and
network errors are raised (the dispatcher retries); a 5xx is a PermanentSendError with the
server's words. Passwords go only to LOGIN/AUTH: never into a log line or a repr.

Parsing lives in channels/email_parse.py, the IMAP client in channels/email_imap.py;
docs/channels/email.md has the settings and choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

import aiosmtplib
from pydantic import SecretStr

from channels.base import (
    AttachmentUnavailable,
    Channel,
    ChannelContext,
    ChannelStatus,
    FetchedFile,
    PermanentSendError,
)
from channels.email_imap import ImapConfig, ImapError, ImapMailbox, Security
from channels.email_parse import (
    ParsedMail,
    find_leaf,
    leaf_bytes,
    parse_mail,
    reply_subject,
)
from channels.webhook import check_inbox
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

CHANNEL = "email"
REF_RE = re.compile(r"^(\d{1,10})\.(\d{1,10})\.(\d{1,4})$")  # uidvalidity.uid.part
FIRST_SYNC_DAYS = 3
IDLE_MAX_S = 25 * 60  # RFC 2177: re-issue IDLE before the server's 30-minute timeout
MAX_MESSAGE = 25 * 1024 * 1024  # larger ones are read as their headers and first text only
PARTIAL_TEXT = 256 * 1024
MAX_REFERENCES = 20
RECONNECT_MAX_S = 300.0
AUTH_CODES = frozenset({530, 534, 535, 538})

Sleep = Callable[[float], Awaitable[None]]


class EmailUnavailable(Exception):
    """A transient SMTP failure (a 4xx, a dropped connection): the dispatcher retries."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Security
    username: str | None
    password: SecretStr | None
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None  # tests trust their own certificate

    def __repr__(self) -> str:
        return f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r})"


@dataclass(frozen=True)
class EmailConfig:
    address: str
    from_name: str | None
    imap: ImapConfig
    smtp: SmtpConfig
    poll_interval: float = 60.0

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[-1] or "localhost"


def default_port(kind: str, security: Security) -> int:
    if kind == "imap":
        return 993 if security == "ssl" else 143
    return {"ssl": 465, "starttls": 587, "none": 25}[security]


def from_settings(settings: Settings, ctx: ChannelContext) -> EmailChannel | None:
    s = settings
    if not (s.email_imap_host and s.email_smtp_host):
        return None
    username = s.email_username or s.email_address
    if not (s.email_address and username and s.email_password):
        log.warning("email is off: EMAIL_ADDRESS and EMAIL_PASSWORD are needed with the hosts")
        return None
    imap = ImapConfig(
        host=s.email_imap_host,
        port=s.email_imap_port or default_port("imap", s.email_imap_security),
        security=s.email_imap_security,
        username=username,
        password=s.email_password,
        folder=s.email_imap_folder,
    )
    smtp = SmtpConfig(
        host=s.email_smtp_host,
        port=s.email_smtp_port or default_port("smtp", s.email_smtp_security),
        security=s.email_smtp_security,
        username=s.email_smtp_username or username,
        password=s.email_smtp_password or s.email_password,
    )
    config = EmailConfig(
        address=s.email_address.strip(),
        from_name=s.email_from_name,
        imap=imap,
        smtp=smtp,
        poll_interval=s.email_poll_interval_s,
    )
    return EmailChannel(ctx, s.email_inbox, config)


def our_message_id(outbound_id: str, domain: str) -> str:
    """Our Message-ID for an outbound message: the same for a retry of the same message, so
    a mail client that got the first attempt shows the second as the same mail."""
    token = (
        outbound_id
        if re.fullmatch(r"[0-9a-f]{32}", outbound_id)
        else hashlib.sha256(outbound_id.encode()).hexdigest()[:32]
    )
    return f"<{token}.hub@{domain}>"


def attachment_kind(mime: str) -> str:
    major = mime.split("/", 1)[0].lower()
    return major if major in ("image", "video", "audio") else "file"


class EmailChannel(Channel):
    name = CHANNEL

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str,
        config: EmailConfig,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        check_inbox(inbox, "EMAIL_INBOX")
        super().__init__(ctx, inbox)
        self.config = config
        self.sleep = sleep
        self.task: asyncio.Task[None] | None = None
        self._status = ChannelStatus()
        self.taken = 0  # messages read since start (a figure for tests and debugging)
        self.cursor_key = f"cursor:{config.imap.folder}"

    def __repr__(self) -> str:
        return f"EmailChannel(inbox={self.inbox!r}, address={self.config.address!r})"

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(
                self.ctx.run_exclusive(f"email:{self.inbox}", self._poll_forever),
                name=f"email:{self.inbox}",
            )

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> ChannelStatus:
        return self._status

    # Inbound -----------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                async with ImapMailbox(self.config.imap) as box:
                    self._status = ChannelStatus()
                    delay = 1.0
                    await self._follow(box)
            except asyncio.CancelledError:
                raise
            except ImapError as exc:
                self._pause(f"IMAP: {exc}", delay)
            except Exception as exc:  # Redis or the database away: never a crash loop
                log.exception("email %s: reading the mailbox failed", self.inbox)
                self._pause(f"IMAP: {type(exc).__name__}", delay)
            await self.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _pause(self, reason: str, delay: float) -> None:
        log.warning("email %s: %s; trying again in %.0fs", self.inbox, reason, delay)
        until = datetime.now(UTC) + timedelta(seconds=delay)
        self._status = ChannelStatus("error", reason, until)

    async def _follow(self, box: ImapMailbox) -> None:
        while True:
            last = await self.sync(box)
            if not box.can_idle:
                await self.sleep(self.config.poll_interval)
            elif not await box.new_uids(last):
                # Checked again right before IDLE: storing took a while, and some servers
                # (pymap) report in IDLE only what changes after it began.
                await box.wait_for_news(min(self.config.poll_interval, IDLE_MAX_S))

    async def sync(self, box: ImapMailbox) -> int:
        """Take every message above the cursor; returns the cursor's last UID."""
        cursor = await self.ctx.load_state(CHANNEL, self.inbox, self.cursor_key) or {}
        if cursor.get("uidvalidity") == box.uidvalidity:
            todo = await box.new_uids(int(cursor.get("last_uid", 0)))
            last = todo[-1][0] if todo else 0
        else:
            if cursor:
                log.warning("email %s: UIDVALIDITY changed: re-scanning", self.inbox)
            everything = await box.new_uids(0)
            since = datetime.now(UTC).date() - timedelta(days=FIRST_SYNC_DAYS)
            recent = set(await box.uids_since(since))
            todo = [(uid, size) for uid, size in everything if uid in recent]
            last = everything[-1][0] if everything else 0
        for uid, size in todo:
            self.taken += 1  # before storing: a test that sees the message sees the count
            await self._take(box, uid, size)
            await self._save_cursor(box.uidvalidity, uid)
        same = cursor.get("uidvalidity") == box.uidvalidity
        before = int(cursor.get("last_uid", 0)) if same else -1
        if last > before and (not todo or todo[-1][0] < last):
            # The first run skipped older mail: the cursor still moves past it.
            await self._save_cursor(box.uidvalidity, last)
        return max(last, before, 0)

    async def _save_cursor(self, uidvalidity: int, uid: int) -> None:
        await self.ctx.save_state(
            CHANNEL, self.inbox, self.cursor_key, {"uidvalidity": uidvalidity, "last_uid": uid}
        )

    async def _take(self, box: ImapMailbox, uid: int, size: int) -> None:
        if size > MAX_MESSAGE:
            head = await box.fetch(uid, "HEADER") or b""
            text = await box.fetch(uid, "TEXT", partial=PARTIAL_TEXT) or b""
            raw, truncated = head + text, True
        else:
            raw, truncated = await box.fetch(uid) or b"", False
        if not raw:
            log.info("email %s: message %d vanished before it was read", self.inbox, uid)
            return
        try:
            parsed = parse_mail(raw)
        except Exception as exc:  # the email package is lenient; this is a last resort
            log.warning("email %s: message %d unreadable (%s): skipped", self.inbox, uid, exc)
            return
        if parsed.sender is None or len(parsed.sender) > 200:
            log.warning("email %s: message %d has no usable sender: skipped", self.inbox, uid)
            return
        if parsed.sender == self.config.address.lower():
            return  # our own mail (a copy kept in the folder): never a client's message
        msg = self._to_inbound(parsed, box.uidvalidity, uid, truncated)
        if not msg.automated:
            # Before publishing: the bot may answer before this coroutine goes on.
            await self._remember_thread(parsed)
        await self.ctx.publish(msg)
        if parsed.bounce is not None:
            await self.ctx.report(
                DeliveryStatus(
                    channel=CHANNEL,
                    provider_message_id=parsed.bounce.original_message_id,
                    status=DeliveryState.failed,
                    error=parsed.bounce.diagnostic[:1000],
                )
            )

    def _to_inbound(
        self, parsed: ParsedMail, uidvalidity: int, uid: int, truncated: bool
    ) -> InboundMessage:
        sender = parsed.sender or ""
        attachments = [
            Attachment(
                kind=attachment_kind(part.mime_type),  # type: ignore[arg-type]
                ref=f"{uidvalidity}.{uid}.{part.index}",
                mime_type=part.mime_type,
                name=part.name[:200] if part.name else None,
                size=part.size,
            )
            for part in ([] if truncated else parsed.attachments)
        ]
        raw: dict[str, Any] = {
            "headers": parsed.headers,
            "full_text": parsed.full_text,
            "uid": uid,
            "uidvalidity": uidvalidity,
        }
        if parsed.automated:
            raw["automated"] = parsed.automated
        if truncated:
            raw["truncated"] = True
        return InboundMessage(
            channel=CHANNEL,
            inbox=self.inbox,
            chat_id=sender,
            sender_id=sender,
            provider_message_id=parsed.message_id,
            sent_at=parsed.sent_at or datetime.now(UTC),
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

    async def _remember_thread(self, parsed: ParsedMail) -> None:
        key = f"thread:{parsed.sender}"
        known = await self.ctx.load_state(CHANNEL, self.inbox, key) or {}
        at = (parsed.sent_at or datetime.now(UTC)).isoformat()
        if known.get("at") and _later(known["at"], at):
            return  # a re-scan met an older message: the thread stays on the newest
        references = [*parsed.references, parsed.message_id][-MAX_REFERENCES:]
        await self.ctx.save_state(
            CHANNEL,
            self.inbox,
            key,
            {
                "subject": parsed.subject,
                "last_id": parsed.message_id,
                "references": references,
                "at": at,
            },
        )

    # Outbound ----------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        to = msg.chat_id.strip().lower()
        if "@" not in to or any(ch in to for ch in "\r\n<>,;"):
            raise PermanentSendError(f"not an email address: {msg.chat_id!r}")
        thread = await self.ctx.load_state(CHANNEL, self.inbox, f"thread:{to}") or {}
        message_id = our_message_id(msg.id, self.config.domain)
        mail = self._compose(msg, to, thread, message_id)
        await self._submit(mail)
        if thread:
            references = [*thread.get("references", []), message_id][-MAX_REFERENCES:]
            await self.ctx.save_state(
                CHANNEL, self.inbox, f"thread:{to}", {**thread, "references": references}
            )
        return DeliveryStatus(
            outbound_id=msg.id,
            channel=CHANNEL,
            status=DeliveryState.sent,
            provider_message_id=message_id,
        )

    def _compose(
        self, msg: OutboundMessage, to: str, thread: dict[str, Any], message_id: str
    ) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = formataddr((self.config.from_name or "", self.config.address))
        mail["To"] = to
        subject = thread.get("subject") or ""
        mail["Subject"] = reply_subject(subject) if subject else (self.config.from_name or "")
        mail["Date"] = format_datetime(msg.created_at.astimezone(UTC))
        mail["Message-ID"] = message_id
        if thread.get("last_id"):
            mail["In-Reply-To"] = thread["last_id"]
            mail["References"] = " ".join(thread.get("references") or [thread["last_id"]])
        if msg.author != "staff":
            # RFC 3834: tells the client's own auto-responder not to answer a robot.
            mail["Auto-Submitted"] = "auto-replied"
        body = msg.text
        if msg.quick_replies:  # email has no buttons: the choices become lines to copy
            body += "\n\n" + "\n".join(f"- {q.text}" for q in msg.quick_replies)
        links = [a.url for a in msg.attachments if a.url]
        if links:
            body += "\n\n" + "\n".join(links)
        mail.set_content(body or " ")
        return mail

    async def _submit(self, mail: EmailMessage) -> None:
        c = self.config.smtp
        context = c.ssl_context or ssl.create_default_context()
        try:
            await aiosmtplib.send(
                mail,
                sender=self.config.address,
                hostname=c.host,
                port=c.port,
                username=c.username if c.password else None,
                password=c.password.get_secret_value() if c.password else None,
                use_tls=c.security == "ssl",
                start_tls=c.security == "starttls",
                tls_context=context,
                timeout=c.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code, text = (refused.code, refused.message) if refused else (0, str(exc))
            raise _smtp_failure(code, text) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_failure(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # aiosmtplib's texts are the server's words or the socket's: never the password.
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise EmailUnavailable(f"SMTP {c.host}:{c.port}: {reason}") from None

    # Attachments -------------------------------------------------------------------------

    async def fetch_attachment(self, inbox: str, ref: str) -> FetchedFile:
        match = REF_RE.match(ref)
        if inbox != self.inbox or match is None:
            raise AttachmentUnavailable("unknown attachment")
        uidvalidity, uid, index = (int(g) for g in match.groups())
        try:
            async with ImapMailbox(self.config.imap) as box:
                if box.uidvalidity != uidvalidity:
                    raise AttachmentUnavailable("the mailbox was rebuilt since")
                sizes = dict(await box.new_uids(uid - 1))
                if uid not in sizes:
                    raise AttachmentUnavailable("the message is no longer in the mailbox")
                if sizes[uid] > MAX_MESSAGE:
                    raise AttachmentUnavailable("the message is too large")
                raw = await box.fetch(uid)
        except ImapError as exc:
            raise AttachmentUnavailable(f"IMAP: {exc}") from None
        part = find_leaf(raw, index) if raw else None
        if part is None:
            raise AttachmentUnavailable("no such part")
        try:
            name = part.get_filename()
        except (ValueError, TypeError):
            name = None
        return FetchedFile(leaf_bytes(part), part.get_content_type(), name)


def _smtp_failure(code: int, text: str) -> Exception:
    words = f"{code} {' '.join(str(text).split())}".strip()[:1000]
    if 500 <= code < 600 and code not in AUTH_CODES:
        return PermanentSendError(words)
    return EmailUnavailable(words)


def _later(first: str, second: str) -> bool:
    try:
        return datetime.fromisoformat(first) > datetime.fromisoformat(second)
    except ValueError:
        return False
