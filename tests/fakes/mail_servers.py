"""Real mail servers for tests: pymap (IMAP, its in-memory 'dict' backend, with IDLE) and
aiosmtpd (SMTP), on free ports of 127.0.0.1, with a self-signed certificate when TLS is asked.

    with tls_files(tmp_path) as (cert, key):          # openssl's self-signed certificate
    async with ImapServer("salon@x", "pw") as imap:   # pymap in a thread of its own
        uid = await imap.deliver(raw_bytes)            # APPEND over IMAP, as an MTA would
        imap.faults.broken_uids.add(uid)               # its FETCH answered NO, as Gmail can
        imap.logins                                    # successful logins so far
    async with SmtpServer() as smtp:
        smtp.refuse("gone@x", 550, "5.1.1 user unknown")
        smtp.messages                                  # what arrived: envelope + parsed mail

pymap runs on its own event loop in a thread, so it behaves as a separate server: the hub's
loop talks to it only over TCP. aiosmtpd's Controller is given a port found free beforehand
(`Controller(port=0)` fails: it then connects to port 0 to check it is up).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import threading
from argparse import Namespace
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import DictBackend, Login
from pymap.backend.dict.mailbox import MailboxData
from pymap.config import BackendCapability
from pymap.imap import IMAPServer
from pymap.imap.state import ConnectionState
from pymap.parsing.response import ResponseNo
from pysasl.hashing import Cleartext

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_context(cert: Path) -> ssl.SSLContext:
    """What the channel is given in tests: the default context, trusting our certificate."""
    return ssl.create_default_context(cafile=str(cert))


# IMAP -------------------------------------------------------------------------------------


_pymap_update_selected = MailboxData.update_selected


async def _update_selected_at_once(self: MailboxData, selected: Any, *, wait_on: Any = None) -> Any:
    """pymap's IDLE waits for the next change even when the mailbox already changed since the
    client's last command; Dovecot, Gmail and RFC 3501 §7 report such changes at once. Made
    to behave like them, or a mail arriving just before IDLE would wait for the next one."""
    if wait_on is not None and selected.mod_sequence != self._mod_sequences.highest:
        wait_on = None
    return await _pymap_update_selected(self, selected, wait_on=wait_on)


MailboxData.update_selected = _update_selected_at_once  # type: ignore[method-assign]
_pymap_get = MailboxData.get


async def _get_unless_expunged(self: MailboxData, uid: int, cached_msg: Any) -> Any:
    """pymap answers a FETCH of a message another session expunged with the copy this session
    still holds (RFC 2180 §4.1.3); Dovecot and Gmail answer it without the message (§4.1.2),
    which is what a client has to survive. Made to behave like them (the session layer skips
    a message it gets None for)."""
    async with self.messages_lock.read_lock():
        if uid not in self._messages:
            return None
    return await _pymap_get(self, uid, cached_msg)


MailboxData.get = _get_unless_expunged  # type: ignore[method-assign]


@dataclass
class Faults:
    """Failures real servers have, switched on by a test. `broken_uids`: a body FETCH of these
    messages is answered NO, as Gmail answers "Some messages could not be FETCHed" for a
    damaged message. `every_fetch`: every FETCH is answered NO, as Dovecot does with a damaged
    index ("NO [SERVERBUG] Internal error"): login and SELECT work, then the session fails."""

    broken_uids: set[int] = field(default_factory=set)
    every_fetch: bool = False


_pymap_do_fetch = ConnectionState.do_fetch
BODY_ITEMS = frozenset({b"BODY", b"BODY.PEEK", b"RFC822", b"BINARY", b"BINARY.PEEK"})


async def _do_fetch_with_faults(self: ConnectionState, cmd: Any) -> Any:
    faults: Faults | None = getattr(self.config, "faults", None)
    if faults is not None:
        if faults.every_fetch:
            return ResponseNo(cmd.tag, b"[SERVERBUG] Internal error occurred."), None
        uids = {n for n in cmd.sequence_set.value if isinstance(n, int)} if cmd.uid else set()
        wants_body = any(attr.value in BODY_ITEMS for attr in cmd.attributes)
        if wants_body and uids & faults.broken_uids:
            return ResponseNo(cmd.tag, b"Some messages could not be FETCHed (Failure)"), None
    return await _pymap_do_fetch(self, cmd)


ConnectionState.do_fetch = _do_fetch_with_faults  # type: ignore[method-assign]


class _NoIdleConfig(DictConfig):
    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=False, object_id=True, multi_append=True)


class _CountingLogin(Login):
    """The dict backend's login, counting the logins that succeed."""

    logins = 0

    async def authenticate(self, credentials: Any) -> Any:
        identity = await super().authenticate(credentials)
        self.logins += 1
        return identity


class ImapServer:
    """pymap with one user. `starttls` offers STARTTLS (and login only after it, as pymap does
    when TLS is on); `implicit_tls` serves TLS from the first byte (port 993 style).
    `faults` switches on failures (see Faults); `logins` counts successful logins, the test's
    own deliveries included."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        idle: bool = True,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.user = user
        self.password = password
        self.idle = idle
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._login: _CountingLogin | None = None
        self.faults = Faults()

    @property
    def logins(self) -> int:
        return self._login.logins if self._login is not None else 0

    async def __aenter__(self) -> ImapServer:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        caller = asyncio.get_running_loop()
        sock = socket.socket()
        sock.bind((HOST, 0))
        sock.listen(16)
        self.port = int(sock.getsockname()[1])

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                loop.run_until_complete(self._start(sock))
            except BaseException as exc:  # report a failed start to the test
                caller.call_soon_threadsafe(ready.set_exception, exc)
                return
            caller.call_soon_threadsafe(ready.set_result, None)
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self.thread = threading.Thread(target=run, name="pymap", daemon=True)
        self.thread.start()
        await ready
        return self

    async def _start(self, sock: socket.socket) -> None:
        args = Namespace(
            host=HOST,
            port=self.port,
            debug=False,
            cert=None,
            key=None,
            tls=self.starttls is not None,
            passlib_cfg=None,
            proxy_protocol=None,
            inherited_sockets=None,
            demo_data=False,
            demo_user=self.user,
            demo_password=self.password,
        )
        config_type = DictConfig if self.idle else _NoIdleConfig
        config = config_type.from_args(
            args,
            ssl_context=self.starttls,
            reject_dnsbl=False,
            invalid_user_sleep=0.0,
            hash_context=Cleartext(),  # pbkdf2's 500k rounds would cost each login ~0.4 s
        )
        config.apply_context()
        config.faults = self.faults  # type: ignore[attr-defined]  (read by the FETCH patch)
        login = self._login = _CountingLogin(config)
        await DictBackend._add_demo_user(config, login)
        imap = IMAPServer(login, config)
        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(imap)
        self._server = await asyncio.start_server(callback, sock=sock, ssl=self.implicit_tls)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aexit__(self, *exc: object) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 10)

    async def client(self) -> aioimaplib.IMAP4:
        """A logged-in IMAP client of the test's own (the "MTA" and the owner's mail app)."""
        if self.implicit_tls is not None:
            raise RuntimeError("use a plain or STARTTLS server to deliver")
        if self.starttls is not None:
            raise RuntimeError("deliver through a plain server")
        imap = aioimaplib.IMAP4(HOST, self.port, timeout=10)
        await imap.wait_hello_from_server()
        response = await imap.login(self.user, self.password)
        assert response.result == "OK", response
        return imap

    async def deliver(self, raw: bytes, folder: str = "INBOX") -> int:
        """A message arrives in the mailbox (IMAP APPEND, as a delivery agent would); its UID."""
        (uid,) = await self.deliver_all([raw], folder)
        return uid

    async def deliver_all(self, raws: list[bytes], folder: str = "INBOX") -> list[int]:
        """Messages arrive one after another, over one connection; their UIDs."""
        imap = await self.client()
        uids = []
        try:
            for raw in raws:
                response = await imap.append(raw, mailbox=folder)
                assert response.result == "OK", response
                lines = b" ".join(bytes(line) for line in response.lines)
                found = re.search(rb"APPENDUID \d+ (\d+)", lines)
                assert found, response
                uids.append(int(found.group(1)))
        finally:
            await imap.logout()
        return uids

    async def expunge(self, uid: int, folder: str = "INBOX") -> None:
        """Someone else (the owner's phone) deletes a message for good."""
        imap = await self.client()
        try:
            assert (await imap.select(folder)).result == "OK"
            stored = await imap.uid("store", str(uid), "+FLAGS.SILENT (\\Deleted)")
            assert stored.result == "OK", stored
            assert (await imap.expunge()).result == "OK"
        finally:
            await imap.logout()

    async def command(self, name: str, *args: str) -> None:
        """CREATE / DELETE a folder (to rebuild one: a new UIDVALIDITY)."""
        imap = await self.client()
        try:
            response = await imap.protocol.simple_command(name, *args)
            assert response.result == "OK", response
        finally:
            await imap.logout()


# SMTP -------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    messages: list[Received] = field(default_factory=list)
    refusals: dict[str, tuple[int, str]] = field(default_factory=dict)
    arrived: asyncio.Event | None = None
    caller: asyncio.AbstractEventLoop | None = None

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.refusals.get(address.lower())
        if refusal is not None:
            return f"{refusal[0]} {refusal[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login.decode() if session.auth_data else None
        self.messages.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content or b""),
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                login=login,
            )
        )
        if self.arrived is not None and self.caller is not None:
            self.caller.call_soon_threadsafe(self.arrived.set)
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd in its Controller's thread. With `credentials`, AUTH LOGIN/PLAIN is required;
    `starttls` requires STARTTLS first; `implicit_tls` serves TLS from the first byte."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = _Handler()
        self.credentials = credentials
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if credentials is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=starttls is not None,
            )
        if starttls is not None:
            kwargs.update(tls_context=starttls, require_starttls=True)
        self.controller = Controller(
            self.handler,
            hostname=HOST,
            port=self.port,
            ssl_context=implicit_tls,
            server_hostname="localhost",
            **kwargs,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.credentials is not None
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def refuse(self, address: str, code: int, text: str) -> None:
        self.handler.refusals[address.lower()] = (code, text)

    async def __aenter__(self) -> SmtpServer:
        self.handler.caller = asyncio.get_running_loop()
        self.handler.arrived = asyncio.Event()
        await asyncio.to_thread(self.controller.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.controller.stop)
