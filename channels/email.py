"""Email: the salon's own mailbox, read over IMAP and answered over SMTP.

Inbound: one hub process at a time (`ctx.run_exclusive(f"email:{inbox}")`) keeps an IMAP
connection with the folder selected, takes every message with a UID above its cursor, and then
waits in IDLE (or sleeps the poll interval when the server has no IDLE). Each message is
published first and the cursor (UIDVALIDITY + last UID, in `ctx.save_state`) advanced after, so
a crash re-takes at most one message, which the store drops by its Message-ID. A UIDVALIDITY
change (the folder was rebuilt) re-scans the recent days the same way. The first start takes
the last FIRST_SYNC_DAYS days only: an old mailbox is not answered years later.

No single message stops the mailbox. Each is read as well as it can be (channels/email_parse.py
never raises; channels/email_intake.py runs in a worker thread); one that can't be a client's
message (no sender, nothing returned by the server, refused MAX_FETCH_TRIES times) is set
aside: a log line with its UID and the reason, never its contents, and a dead letter with the
ids to find it by (`hub dead list`); the cursor moves on. Only the hub's own failures (Redis,
the database, the connection) end a session, and sessions restart after a backoff that resets
only once a session has stayed healthy (channels/email_imap.py, SessionBackoff).

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
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any
from zoneinfo import ZoneInfo

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
from channels.email_imap import (
    ImapConfig,
    ImapError,
    ImapMailbox,
    ImapMessageError,
    Listed,
    Security,
    SessionBackoff,
)
from channels.email_intake import Source, Unusable, is_later, read_mail, thread_key
from channels.email_parse import ParsedMail, find_leaf, leaf_bytes, reply_subject
from channels.webhook import check_inbox
from hub.config import Settings
from hub.messages import DeliveryState, DeliveryStatus, OutboundMessage

log = logging.getLogger(__name__)

CHANNEL = "email"
REF_RE = re.compile(r"^(\d{1,10})\.(\d{1,10})\.(\d{1,4})$")  # uidvalidity.uid.part
FIRST_SYNC_DAYS = 3
IDLE_MAX_S = 25 * 60  # RFC 2177: re-issue IDLE before the server's 30-minute timeout
MAX_MESSAGE = 25 * 1024 * 1024  # larger ones are read as their headers and first text only
PARTIAL_TEXT = 256 * 1024
MAX_REFERENCES = 20
MAX_FETCH_TRIES = 3  # a message the server refuses this many times in a row is set aside
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
    zone: tzinfo = UTC  # the salon's: a Date without a zone is read in it

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
        zone=ZoneInfo(s.hub_timezone),
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


class EmailChannel(Channel):
    name = CHANNEL

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str,
        config: EmailConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`sleep`, `clock` and `jitter` (uniform in [0, 1)) drive the pauses between IMAP
        sessions and polls; tests give their own."""
        check_inbox(inbox, "EMAIL_INBOX")
        super().__init__(ctx, inbox)
        self.config = config
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter
        self.task: asyncio.Task[None] | None = None
        self._status = ChannelStatus()
        self.taken = 0  # messages read since start (a figure for tests and debugging)
        self.cursor_key = f"cursor:{config.imap.folder}"
        self.failures_key = f"fetch_failures:{config.imap.folder}"

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
        backoff = SessionBackoff(self.jitter)
        while True:
            opened: float | None = None
            reason = "IMAP: the session ended"
            try:
                async with ImapMailbox(self.config.imap) as box:
                    opened = self.clock()
                    self._status = ChannelStatus()
                    await self._follow(box)
            except asyncio.CancelledError:
                raise
            except ImapError as exc:
                reason = f"IMAP: {exc}"
            except Exception as exc:  # Redis or the database away: never a crash loop
                log.exception("email %s: reading the mailbox failed", self.inbox)
                reason = f"IMAP: {type(exc).__name__}"
            delay = backoff.after(None if opened is None else self.clock() - opened)
            self._pause(reason, delay)
            await self.sleep(delay)

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
            last = todo[-1].uid if todo else 0
        else:
            if cursor:
                log.warning("email %s: UIDVALIDITY changed: re-scanning", self.inbox)
            everything = await box.new_uids(0)
            since = datetime.now(UTC).date() - timedelta(days=FIRST_SYNC_DAYS)
            recent = set(await box.uids_since(since))
            todo = [item for item in everything if item.uid in recent]
            last = everything[-1].uid if everything else 0
        for item in todo:
            self.taken += 1  # before storing: a test that sees the message sees the count
            await self._take(box, item)
            await self._save_cursor(box.uidvalidity, item.uid)
        same = cursor.get("uidvalidity") == box.uidvalidity
        before = int(cursor.get("last_uid", 0)) if same else -1
        if last > before and (not todo or todo[-1].uid < last):
            # The first run skipped older mail: the cursor still moves past it.
            await self._save_cursor(box.uidvalidity, last)
        return max(last, before, 0)

    async def _save_cursor(self, uidvalidity: int, uid: int) -> None:
        await self.ctx.save_state(
            CHANNEL, self.inbox, self.cursor_key, {"uidvalidity": uidvalidity, "last_uid": uid}
        )

    async def _take(self, box: ImapMailbox, item: Listed) -> None:
        """Publish one message, or set it aside with the reason; the cursor moves on after
        either. Only the hub's own failures (Redis, the database, the connection) raise, and
        a message the server refuses, until it has refused MAX_FETCH_TRIES times."""
        try:
            raw, truncated = await self._read(box, item)
        except ImapMessageError as exc:
            tries = await self._count_failure(box.uidvalidity, item.uid)
            if tries < MAX_FETCH_TRIES:
                raise  # a new session after a pause: a server's hiccup passes
            await self._set_aside(
                box.uidvalidity, item.uid, f"the server failed to give it {tries} times: {exc}"
            )
            return
        if not raw:
            reason = "the server returned nothing for it (deleted before it was read?)"
            await self._set_aside(box.uidvalidity, item.uid, reason)
            return
        source = Source(
            inbox=self.inbox,
            address=self.config.address.lower(),
            zone=self.config.zone,
            uidvalidity=box.uidvalidity,
            uid=item.uid,
            received=item.received or datetime.now(UTC),
            truncated=truncated,
        )
        try:
            intake = await asyncio.to_thread(read_mail, raw, source)
        except Unusable as exc:
            await self._set_aside(box.uidvalidity, item.uid, exc.reason, exc.message_id)
            return
        except Exception as exc:  # a bug met by one mail: never a reason to stop the rest
            # The type only: an exception's text may quote the mail (pydantic's does).
            reason = f"unreadable ({type(exc).__name__})"
            await self._set_aside(box.uidvalidity, item.uid, reason)
            return
        if intake is None:
            return
        if not intake.inbound.automated:
            # Before publishing: the bot may answer before this coroutine goes on.
            await self._remember_thread(intake.parsed, intake.inbound.sent_at)
        await self.ctx.publish(intake.inbound)
        if intake.bounce is not None:
            await self.ctx.report(intake.bounce)

    async def _read(self, box: ImapMailbox, item: Listed) -> tuple[bytes | None, bool]:
        if item.size > MAX_MESSAGE:
            head = await box.fetch(item.uid, "HEADER")
            text = await box.fetch(item.uid, "TEXT", partial=PARTIAL_TEXT) or b""
            return (head + text if head else None), True
        return await box.fetch(item.uid), False

    async def _count_failure(self, uidvalidity: int, uid: int) -> int:
        """How many times in a row the server has failed to give this message (kept in the
        state, so a restart or another hub process counts on)."""
        known = await self.ctx.load_state(CHANNEL, self.inbox, self.failures_key) or {}
        same = (known.get("uidvalidity"), known.get("uid")) == (uidvalidity, uid)
        tries = int(known.get("tries", 0)) + 1 if same else 1
        await self.ctx.save_state(
            CHANNEL,
            self.inbox,
            self.failures_key,
            {"uidvalidity": uidvalidity, "uid": uid, "tries": tries},
        )
        return tries

    async def _set_aside(
        self, uidvalidity: int, uid: int, reason: str, message_id: str | None = None
    ) -> None:
        """Record a message that can't be a client's message, for the operator: in the log
        (its UID and our reason, never its contents) and on the hub's dead letters
        (`hub dead list`), with the ids to find it by in the mailbox, where it stays."""
        log.warning("email %s: message %d set aside: %s", self.inbox, uid, reason)
        await self.ctx.set_aside(
            CHANNEL,
            self.inbox,
            reason,
            {
                "folder": self.config.imap.folder,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "message_id": message_id,
            },
        )

    async def _remember_thread(self, parsed: ParsedMail, sent_at: datetime) -> None:
        key = thread_key(parsed.sender or "")
        known = await self.ctx.load_state(CHANNEL, self.inbox, key) or {}
        at = sent_at.isoformat()
        if known.get("at") and is_later(known["at"], at):
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
        thread = await self.ctx.load_state(CHANNEL, self.inbox, thread_key(to)) or {}
        message_id = our_message_id(msg.id, self.config.domain)
        mail = self._compose(msg, to, thread, message_id)
        await self._submit(mail)
        if thread:
            references = [*thread.get("references", []), message_id][-MAX_REFERENCES:]
            await self.ctx.save_state(
                CHANNEL, self.inbox, thread_key(to), {**thread, "references": references}
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
                sizes = {item.uid: item.size for item in await box.new_uids(uid - 1)}
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
