"""The salon's mailbox over IMAP (aioimaplib): connect with TLS, STARTTLS or plain, read new
messages by UID, wait with IDLE.

aioimaplib has no STARTTLS of its own: after the server's OK to STARTTLS the connection is
upgraded in place with `loop.start_tls` (the IMAP protocol object stays, its transport becomes
the TLS one) and the capabilities are asked again, as RFC 3501 §6.2.1 requires.

Messages are fetched with BODY.PEEK[] so reading them does not mark them \\Seen: the owner may
still read the same mailbox in their mail client. The password goes only into LOGIN, which
aioimaplib scrubs from its debug log.

A FETCH of one message that the server refuses (Gmail: "NO Some messages could not be
FETCHed", Dovecot: "NO [SERVERBUG]") or does not answer in time raises `ImapMessageError`, so
the channel can tell a message it cannot get from a connection that failed.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Literal, NamedTuple

import aioimaplib
from pydantic import SecretStr

Security = Literal["ssl", "starttls", "none"]
FETCH_RE = re.compile(rb"^\d+ FETCH \(")
UID_RE = re.compile(rb"UID (\d+)")
SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
UIDVALIDITY_RE = re.compile(rb"\[UIDVALIDITY (\d+)\]")
INTERNALDATE_RE = re.compile(
    rb'INTERNALDATE " ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 300.0
# A session that worked this long earns a fresh start of the backoff. A shorter one (a server
# that fails each session right after login) does not: Gmail and Microsoft 365 throttle or
# lock an account that logs in every second.
HEALTHY_SESSION_S = 300.0


class ImapError(Exception):
    """The server refused or the connection failed: the poller reconnects after a pause."""


class ImapMessageError(ImapError):
    """The server could not give one message (it refused the FETCH or did not answer it),
    while the connection stands."""


class Listed(NamedTuple):
    """A message above the cursor: its UID, size, and when the server took it."""

    uid: int
    size: int
    received: datetime | None = None  # INTERNALDATE


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    security: Security
    username: str
    password: SecretStr
    folder: str = "INBOX"
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None  # tests trust their own certificate

    def __repr__(self) -> str:  # the password stays out of any repr that reaches a log
        return f"ImapConfig(host={self.host!r}, port={self.port}, security={self.security!r})"

    def context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()


@dataclass
class SessionBackoff:
    """The pause before the next IMAP session: doubling from RECONNECT_MIN_S to
    RECONNECT_MAX_S, less a random part of up to half (hubs that failed together don't log in
    together); back to the start only after a session that stayed healthy HEALTHY_SESSION_S."""

    jitter: Callable[[], float]  # uniform in [0, 1): random.random
    failures: int = 0

    def after(self, session_s: float | None) -> float:
        """The pause after a session that lasted `session_s` (None: it never opened)."""
        if session_s is not None and session_s >= HEALTHY_SESSION_S:
            self.failures = 0
        delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** min(self.failures, 16))
        self.failures += 1
        return delay * (1 - self.jitter() / 2)


def imap_date(day: date) -> str:
    return f"{day.day}-{MONTHS[day.month - 1]}-{day.year}"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """One connection with the folder selected. Use `async with ImapMailbox(config) as box`."""

    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self.client: aioimaplib.IMAP4 | None = None
        self.uidvalidity = 0
        self.lost = asyncio.Event()

    async def __aenter__(self) -> ImapMailbox:
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def can_idle(self) -> bool:
        return self.client is not None and self.client.has_capability("IDLE")

    def _on_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        if self.client is not None:  # wake an IDLE wait: the connection is gone
            self.client.protocol.idle_queue.put_nowait(aioimaplib.STOP_WAIT_SERVER_PUSH)

    async def _open(self) -> None:
        c = self.config
        if c.security == "ssl":
            self.client = aioimaplib.IMAP4_SSL(
                c.host, c.port, timeout=c.timeout, ssl_context=c.context()
            )
            self.client.protocol.conn_lost_cb = self._on_lost
        else:
            self.client = aioimaplib.IMAP4(
                c.host, c.port, timeout=c.timeout, conn_lost_cb=self._on_lost
            )
        try:
            await self.client.wait_hello_from_server()
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"can't connect to {c.host}:{c.port}: {exc}") from None
        if c.security == "starttls":
            await self._starttls()
        response = await self.client.login(c.username, c.password.get_secret_value())
        if response.result != "OK":
            raise ImapError(f"login refused: {_text(response.lines)}")
        response = await self.client.select(_quote(c.folder))
        if response.result != "OK":
            raise ImapError(f"can't open folder {c.folder!r}: {_text(response.lines)}")
        for line in response.lines:
            match = UIDVALIDITY_RE.search(bytes(line))
            if match:
                self.uidvalidity = int(match.group(1))
        if not self.uidvalidity:
            raise ImapError("the server gave no UIDVALIDITY")

    async def _starttls(self) -> None:
        assert self.client is not None
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError("the server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(protocol.execute(command), self.config.timeout)
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {_text(response.lines)}")
        loop = asyncio.get_running_loop()
        try:
            protocol.transport = await loop.start_tls(
                protocol.transport,
                protocol,
                self.config.context(),
                server_hostname=self.config.host,
                ssl_handshake_timeout=self.config.timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise ImapError(f"TLS handshake failed: {exc}") from None
        await asyncio.wait_for(protocol.capability(), self.config.timeout)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if client.has_pending_idle():
                client.idle_done()
            if client.get_state() in ("AUTH", "SELECTED", "NONAUTH"):
                await asyncio.wait_for(client.logout(), 5)
        except (OSError, TimeoutError, aioimaplib.AioImapException, asyncio.InvalidStateError):
            pass
        finally:
            transport = client.protocol.transport
            if transport is not None:
                transport.close()

    # Reading -----------------------------------------------------------------------------

    def _client(self) -> aioimaplib.IMAP4:
        if self.client is None or self.lost.is_set():
            raise ImapError("the connection was lost")
        return self.client

    async def new_uids(self, after: int) -> list[Listed]:
        """The messages with a UID above `after`, in UID order."""
        items = "(UID RFC822.SIZE INTERNALDATE)"
        response = await self._client().uid("fetch", f"{after + 1}:*", items)
        _check(response, "UID FETCH")
        found = []
        for line in response.lines:
            raw = bytes(line)
            if not FETCH_RE.match(raw):
                continue
            uid, size = UID_RE.search(raw), SIZE_RE.search(raw)
            # "n:*" always includes the last message, even when its UID is below n.
            if uid and int(uid.group(1)) > after:
                size_n = int(size.group(1)) if size else 0
                found.append(Listed(int(uid.group(1)), size_n, internal_date(raw)))
        return sorted(found)

    async def uids_since(self, day: date) -> list[int]:
        response = await self._client().uid_search("SINCE", imap_date(day), charset=None)
        _check(response, "UID SEARCH")
        uids: list[int] = []
        for line in response.lines:
            raw = bytes(line)
            if raw.startswith(b"SEARCH") or (raw and raw.split()[0].isdigit()):
                uids.extend(int(n) for n in raw.split() if n.isdigit())
        return sorted(uids)

    async def last_uid(self) -> int:
        uids = await self.new_uids(0)
        return uids[-1].uid if uids else 0

    async def fetch(self, uid: int, section: str = "", partial: int | None = None) -> bytes | None:
        """The message (or a section of it: "HEADER", or the first `partial` bytes of "TEXT")
        by UID, or None if it is gone."""
        item = f"BODY.PEEK[{section}]" + (f"<0.{partial}>" if partial else "")
        client = self._client()
        try:
            response = await client.uid("fetch", str(uid), f"({item})")
        except (TimeoutError, aioimaplib.AioImapException) as exc:
            if self.lost.is_set():
                raise ImapError("the connection was lost") from None
            raise ImapMessageError(f"UID FETCH {uid}: {exc or type(exc).__name__}") from None
        if response.result != "OK":
            raise ImapMessageError(f"UID FETCH {uid} refused: {_text(response.lines)}")
        lines = response.lines
        for i, line in enumerate(lines):
            if isinstance(line, bytearray) and i > 0 and FETCH_RE.match(bytes(lines[i - 1])):
                return bytes(line)
        return None

    async def wait_for_news(self, seconds: float) -> bool:
        """IDLE until the server reports a change or `seconds` pass; True on a change."""
        client = self._client()
        try:
            idle = await client.idle_start(timeout=seconds)
            try:
                pushed = await client.wait_server_push(timeout=seconds + 5)
            finally:
                if not self.lost.is_set():
                    if client.has_pending_idle():
                        client.idle_done()
                    await asyncio.wait_for(idle, self.config.timeout)
        except (TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IDLE failed: {exc or type(exc).__name__}") from None
        if self.lost.is_set():
            raise ImapError("the connection was lost")
        return pushed != aioimaplib.STOP_WAIT_SERVER_PUSH


def internal_date(line: bytes) -> datetime | None:
    """The INTERNALDATE of a FETCH response line, in UTC (month names are English whatever
    the locale, so no strptime)."""
    match = INTERNALDATE_RE.search(line)
    if match is None:
        return None
    day, month, year, hh, mm, ss, sign, oh, om = (g.decode() for g in match.groups())
    if month.title() not in MONTHS:
        return None
    offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
    try:
        local = datetime(
            int(year), MONTHS.index(month.title()) + 1, int(day), int(hh), int(mm), int(ss),
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError:  # a day, an hour or an offset out of range
        return None
    return local.astimezone(UTC)


def _text(lines: list[bytes | bytearray]) -> str:
    return " ".join(bytes(line).decode("utf-8", "replace") for line in lines)[:300]


def _check(response: aioimaplib.Response, what: str) -> None:
    if response.result != "OK":
        raise ImapError(f"{what} failed: {_text(response.lines)}")
