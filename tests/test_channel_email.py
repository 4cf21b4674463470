"""Email against real servers: aiosmtpd (SMTP, plain, STARTTLS and TLS with a self-signed
certificate) and pymap (IMAP with IDLE, or without it), then a running hub end to end."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

import channels.email as email_channel
from channels.base import AttachmentUnavailable, PermanentSendError
from channels.email import (
    EmailChannel,
    EmailConfig,
    EmailUnavailable,
    SmtpConfig,
    from_settings,
    our_message_id,
)
from channels.email_imap import RECONNECT_MAX_S, ImapConfig, ImapError, ImapMailbox
from channels.email_parse import parse_mail
from crm_store.models import Client, Conversation, Message
from crm_store.timeutil import as_utc
from hub.messages import Author, DeliveryStatus, InboundMessage, OutboundMessage, QuickReply, utcnow
from hub.pipeline.bus import NotReplayable
from hub.pipeline.replies import send_reply
from tests.fakes.mail_servers import (
    HOST,
    ImapServer,
    Received,
    SmtpServer,
    client_context,
    free_port,
    make_certificate,
    server_context,
)
from tests.support import FakeTime, RunningHub, eventually, rows, start_hub, stored_in

ADDRESS = "hello@salon.example"
PASSWORD = "imap-secret-5d1f"  # a test password: the logs must never show it
CLIENT = "olena.k@gmail.example"
MAIL = Path(__file__).parent / "fixtures" / "mail"
KYIV = ZoneInfo("Europe/Kyiv")
DSN_TEXT = (
    "This is the mail system at host mx.salon.example.\n\n"
    "I'm sorry to have to inform you that your message could not\n"
    "be delivered to one or more recipients.\n\n"
    "<nobody@gone.example>: host mx.gone.example[203.0.113.5] said: 550 5.1.1\n"
    "    <nobody@gone.example>: Recipient address rejected: User unknown"
)


class MemoryContext:
    """The hub's side of a channel, in memory, for tests without a hub."""

    def __init__(self) -> None:
        self.published: list[InboundMessage] = []
        self.reports: list[DeliveryStatus] = []
        self.state: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.aside: list[dict[str, Any]] = []

    async def publish(self, msg: InboundMessage) -> None:
        self.published.append(msg)

    async def report(self, status: DeliveryStatus) -> None:
        self.reports.append(status)

    async def load_state(self, channel: str, inbox: str, key: str) -> dict[str, Any] | None:
        return self.state.get((channel, inbox, key))

    async def set_aside(
        self, channel: str, inbox: str, reason: str, details: dict[str, Any]
    ) -> None:
        self.aside.append({"channel": channel, "inbox": inbox, "reason": reason, **details})

    async def save_state(self, channel: str, inbox: str, key: str, value: dict[str, Any]) -> None:
        self.state[(channel, inbox, key)] = value

    async def run_exclusive(self, name: str, job: Callable[[], Awaitable[None]]) -> None:
        await job()


def client_mail(
    text: str,
    *,
    sender: str = CLIENT,
    subject: str = "Запис на манікюр",
    reply_to: str | None = None,
    date: str | None = None,
    **headers: str,
) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"Олена Коваль <{sender}>"
    mail["To"] = ADDRESS
    mail["Subject"] = subject
    mail["Date"] = format_datetime(utcnow())
    mail["Message-ID"] = make_msgid(domain="mail.gmail.example")
    if reply_to:
        mail["In-Reply-To"] = reply_to
        mail["References"] = reply_to
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(text)
    raw = mail.as_bytes()
    if date is not None:  # as written, where EmailMessage would rewrite a zone-less one
        raw = re.sub(rb"(?m)^Date: [^\r\n]*", b"Date: " + date.encode(), raw, count=1)
    return raw


def imap_config(server: ImapServer, **kw: Any) -> ImapConfig:
    return ImapConfig(
        host=HOST,
        port=server.port,
        security=kw.pop("security", "none"),
        username=ADDRESS,
        password=SecretStr(PASSWORD),
        timeout=10,
        **kw,
    )


def smtp_config(server: SmtpServer | None, **kw: Any) -> SmtpConfig:
    return SmtpConfig(
        host=HOST,
        port=server.port if server else free_port(),
        security=kw.pop("security", "none"),
        username=kw.pop("username", None),
        password=kw.pop("password", None),
        timeout=10,
        **kw,
    )


def channel_for(
    ctx: Any, imap: ImapServer | None, smtp: SmtpServer | None, **kw: Any
) -> EmailChannel:
    imap_cfg = (
        imap_config(imap, folder=kw.pop("folder", "INBOX"))
        if imap
        else ImapConfig(HOST, free_port(), "none", ADDRESS, SecretStr(PASSWORD))
    )
    config = EmailConfig(
        address=ADDRESS,
        from_name="Салон Белла",
        imap=imap_cfg,
        smtp=kw.pop("smtp_config", None) or smtp_config(smtp),
        poll_interval=kw.pop("poll_interval", 0.05),
        zone=kw.pop("zone", KYIV),
    )
    return EmailChannel(ctx, "main", config, **kw)


def outbound(text: str, chat_id: str = CLIENT, **kw: Any) -> OutboundMessage:
    return OutboundMessage(
        conversation_id=1, channel="email", inbox="main", chat_id=chat_id, text=text, **kw
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


# Settings ---------------------------------------------------------------------------------


def test_on_only_with_both_hosts_and_credentials(settings: Any) -> None:
    ctx = MemoryContext()
    assert from_settings(settings, ctx) is None
    base = {
        "email_address": ADDRESS,
        "email_password": SecretStr(PASSWORD),
        "email_imap_host": "imap.example.com",
    }
    assert from_settings(settings.model_copy(update=base), ctx) is None
    on = from_settings(settings.model_copy(update={**base, "email_smtp_host": "smtp.x"}), ctx)
    assert isinstance(on, EmailChannel) and on.name == "email" and on.inbox == "main"
    assert (on.config.imap.port, on.config.imap.security) == (993, "ssl")
    assert (on.config.smtp.port, on.config.smtp.security) == (587, "starttls")
    assert on.config.imap.username == ADDRESS and on.config.smtp.username == ADDRESS
    for text in (repr(on), repr(on.config), repr(on.config.imap), repr(on.config.smtp)):
        assert PASSWORD not in text
    apart = settings.model_copy(
        update={
            **base,
            "email_smtp_host": "smtp.x",
            "email_smtp_security": "ssl",
            "email_smtp_username": "apikey",
            "email_smtp_password": SecretStr("other"),
            "email_imap_security": "starttls",
        }
    )
    channel = from_settings(apart, ctx)
    assert channel is not None
    assert (channel.config.smtp.port, channel.config.smtp.username) == (465, "apikey")
    assert channel.config.imap.port == 143
    no_password = settings.model_copy(
        update={**base, "email_password": None, "email_smtp_host": "smtp.x"}
    )
    assert from_settings(no_password, ctx) is None


# SMTP -------------------------------------------------------------------------------------


async def test_a_reply_is_threaded_and_errors_are_sorted() -> None:
    ctx = MemoryContext()
    async with SmtpServer() as smtp:
        channel = channel_for(ctx, None, smtp)
        await ctx.save_state(
            "email",
            "main",
            f"thread:{CLIENT}",
            {
                "subject": "Re: Запис на манікюр",
                "last_id": "<c2@mail.gmail.example>",
                "references": ["<c1@mail.gmail.example>", "<c2@mail.gmail.example>"],
                "at": "2026-11-30T10:00:00+00:00",
            },
        )
        msg = outbound(
            "Є вільне вікно в суботу.",
            author=Author.bot,
            quick_replies=[QuickReply(text="Сб 11:00"), QuickReply(text="Сб 15:00")],
        )
        status = await channel.send(msg)
        assert status.status == "sent" and status.outbound_id == msg.id
        assert status.provider_message_id == our_message_id(msg.id, "salon.example")
        (received,) = smtp.messages
        mail = received.message
        assert received.rcpt_tos == [CLIENT] and received.mail_from == ADDRESS
        assert mail["Message-ID"] == status.provider_message_id
        assert mail["Subject"] == "Re: Запис на манікюр"  # never "Re: Re:"
        assert mail["In-Reply-To"] == "<c2@mail.gmail.example>"
        assert mail["References"] == "<c1@mail.gmail.example> <c2@mail.gmail.example>"
        assert mail["Auto-Submitted"] == "auto-replied"  # a bot's answer (RFC 3834)
        assert mail["From"].addresses[0].display_name == "Салон Белла"
        assert mail.get_content().replace("\r\n", "\n") == (
            "Є вільне вікно в суботу.\n\n- Сб 11:00\n- Сб 15:00\n"
        )
        # The thread now also references our message, for the next one.
        thread = await ctx.load_state("email", "main", f"thread:{CLIENT}")
        assert thread is not None and thread["references"][-1] == status.provider_message_id

        # Staff writing first to someone without a thread: no In-Reply-To, no robot mark.
        await channel.send(outbound("Вітаємо!", chat_id="New@Client.example", author=Author.staff))
        fresh = smtp.messages[-1].message
        assert fresh["To"] == "new@client.example" and fresh["In-Reply-To"] is None
        assert fresh["Subject"] == "Салон Белла" and fresh["Auto-Submitted"] is None

        smtp.refuse("gone@x.example", 550, "5.1.1 <gone@x.example>: Recipient address rejected")
        with pytest.raises(PermanentSendError) as refused:
            await channel.send(outbound("x", chat_id="gone@x.example"))
        assert str(refused.value) == ("550 5.1.1 <gone@x.example>: Recipient address rejected")
        smtp.refuse("busy@x.example", 451, "4.7.1 Try again later")
        with pytest.raises(EmailUnavailable, match=r"451 4\.7\.1 Try again later"):
            await channel.send(outbound("x", chat_id="busy@x.example"))
        with pytest.raises(PermanentSendError):
            await channel.send(outbound("x", chat_id="not an address"))
        assert len(smtp.messages) == 2

    # The server is gone: a transient error, retried by the dispatcher.
    with pytest.raises(EmailUnavailable):
        await channel.send(outbound("x"))


async def test_starttls_and_tls_with_a_login(
    certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    watch_client_logs(caplog)
    cert, key = certificate
    trusted = client_context(cert)
    login = ("hello@salon.example", PASSWORD)
    async with SmtpServer(credentials=login, starttls=server_context(cert, key)) as smtp:
        config = smtp_config(
            smtp,
            security="starttls",
            username=login[0],
            password=SecretStr(PASSWORD),
            ssl_context=trusted,
        )
        channel = channel_for(MemoryContext(), None, None, smtp_config=config)
        await channel.send(outbound("over STARTTLS"))
        (received,) = smtp.messages
        assert received.tls and received.login == login[0]
        # Without STARTTLS the server refuses the mail (530 must issue STARTTLS first).
        plain = channel_for(
            MemoryContext(), None, None, smtp_config=smtp_config(smtp, security="none")
        )
        with pytest.raises(EmailUnavailable):
            await plain.send(outbound("in the clear"))
        # A wrong password: a transient error (the owner fixes it), the password unquoted.
        wrong = smtp_config(
            smtp, security="starttls", username=login[0], password=SecretStr("nope"),
            ssl_context=trusted,
        )  # fmt: skip
        with pytest.raises(EmailUnavailable) as refused:
            await channel_for(MemoryContext(), None, None, smtp_config=wrong).send(outbound("x"))
        assert str(refused.value).startswith("535")
    async with SmtpServer(implicit_tls=server_context(cert, key)) as smtp:
        config = smtp_config(smtp, security="ssl", ssl_context=trusted)
        await channel_for(MemoryContext(), None, None, smtp_config=config).send(outbound("TLS"))
        assert smtp.messages[0].tls
        # Our certificate isn't trusted by default: the handshake fails, nothing is sent.
        untrusted = smtp_config(smtp, security="ssl")
        with pytest.raises(EmailUnavailable):
            await channel_for(MemoryContext(), None, None, smtp_config=untrusted).send(
                outbound("x")
            )
        assert len(smtp.messages) == 1
    assert PASSWORD not in client_side_logs(caplog)


# IMAP -------------------------------------------------------------------------------------


async def test_imap_over_starttls_and_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    trusted = client_context(cert)
    async with ImapServer(ADDRESS, PASSWORD, starttls=server_context(cert, key)) as server:
        async with ImapMailbox(
            imap_config(server, security="starttls", ssl_context=trusted)
        ) as box:
            assert box.uidvalidity > 0 and await box.new_uids(0) == []
            assert box.client is not None
            assert box.client.protocol.transport.get_extra_info("ssl_object") is not None
        async with ImapMailbox(imap_config(server, security="none")) as box:
            assert box.client is not None
            assert box.client.protocol.transport.get_extra_info("ssl_object") is None
    async with ImapServer(ADDRESS, PASSWORD, implicit_tls=server_context(cert, key)) as server:
        async with ImapMailbox(imap_config(server, security="ssl", ssl_context=trusted)) as box:
            assert box.uidvalidity > 0
        with pytest.raises(ImapError):
            async with ImapMailbox(imap_config(server, security="ssl")):  # untrusted cert
                pass
    async with ImapServer(ADDRESS, PASSWORD) as server:
        with pytest.raises(ImapError, match="does not offer STARTTLS"):
            async with ImapMailbox(imap_config(server, security="starttls")):
                pass
        bad = ImapConfig(HOST, server.port, "none", ADDRESS, SecretStr("wrong"), timeout=10)
        with pytest.raises(ImapError, match="login refused") as refused:
            async with ImapMailbox(bad):
                pass
        assert "wrong" not in str(refused.value)


async def test_polling_without_idle_takes_each_message_once() -> None:
    ctx = MemoryContext()
    async with ImapServer(ADDRESS, PASSWORD, idle=False) as server:
        channel = channel_for(ctx, server, None, poll_interval=0.05)
        await server.deliver(client_mail("Перший лист"))
        await channel.start()
        try:
            await eventually(lambda: _count(ctx.published, 1))
            await server.deliver((MAIL / "06_attachments.eml").read_bytes())
            await eventually(lambda: _count(ctx.published, 2))
            assert channel.status().state == "ok"
        finally:
            await channel.stop()
        first, photo = ctx.published
        assert first.text == "Перший лист" and first.chat_id == CLIENT == first.sender_id
        assert first.contact.display_name == "Олена Коваль" and first.contact.email == CLIENT
        assert first.raw is not None and first.raw["headers"]["Subject"] == "Запис на манікюр"
        assert not first.automated

        # The attachments come back from the mailbox by their reference.
        jpeg, pdf = photo.attachments
        assert (jpeg.kind, jpeg.name, jpeg.mime_type) == ("image", "nails.jpg", "image/jpeg")
        assert (pdf.kind, pdf.name) == ("file", "прайс.pdf")
        fetched = await channel.fetch_attachment("main", pdf.ref or "")
        assert fetched.content == b"%PDF-1.4 price list\n%%EOF\n"
        assert (fetched.mime_type, fetched.name) == ("application/pdf", "прайс.pdf")
        assert (await channel.fetch_attachment("main", jpeg.ref or "")).content.startswith(
            b"\xff\xd8"
        )
        validity, uid, index = (jpeg.ref or "").split(".")
        for ref in ("../etc", f"{int(validity) + 1}.{uid}.{index}", f"{validity}.999.2", "1.2"):
            with pytest.raises(AttachmentUnavailable):
                await channel.fetch_attachment("main", ref)
        with pytest.raises(AttachmentUnavailable):
            await channel.fetch_attachment("other", jpeg.ref or "")

        # A restart: the cursor says both were taken.
        again = channel_for(ctx, server, None)
        async with ImapMailbox(again.config.imap) as box:
            assert await took(again, box) == 0
            await server.deliver(client_mail("Третій"))
            assert await took(again, box) == 1
        assert [m.text for m in ctx.published][-1] == "Третій"


async def test_a_rebuilt_folder_is_rescanned_without_losing_or_doubling() -> None:
    ctx = MemoryContext()
    async with ImapServer(ADDRESS, PASSWORD) as server:
        await server.command("CREATE", "Salon")
        mails = [client_mail(f"Лист {n}") for n in range(3)]
        for raw in mails[:2]:
            await server.deliver(raw, folder="Salon")
        channel = channel_for(ctx, server, None, folder="Salon")
        async with ImapMailbox(channel.config.imap) as box:
            assert await took(channel, box) == 2
            first_validity = box.uidvalidity
        # The folder is rebuilt (a server migration): new UIDVALIDITY, same messages + one.
        await server.command("DELETE", "Salon")
        await server.command("CREATE", "Salon")
        for raw in mails:
            await server.deliver(raw, folder="Salon")
        async with ImapMailbox(channel.config.imap) as box:
            assert box.uidvalidity != first_validity
            assert await took(channel, box) == 3
            assert await took(channel, box) == 0
    ids = [m.provider_message_id for m in ctx.published]
    # Re-published with the same Message-IDs, which the store keeps once.
    assert ids[2:4] == ids[:2] and len(set(ids)) == 3
    cursor = ctx.state[("email", "main", "cursor:Salon")]
    assert cursor["uidvalidity"] != first_validity


async def test_a_huge_message_is_read_as_its_headers_and_first_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(email_channel, "MAX_MESSAGE", 500)
    monkeypatch.setattr(email_channel, "PARTIAL_TEXT", 200)
    ctx = MemoryContext()
    async with ImapServer(ADDRESS, PASSWORD) as server:
        await server.deliver((MAIL / "06_attachments.eml").read_bytes())
        await server.deliver(client_mail("Короткий лист"))
        channel = channel_for(ctx, server, None)
        async with ImapMailbox(channel.config.imap) as box:
            assert await took(channel, box) == 2
    huge, small = ctx.published
    assert huge.provider_message_id == "<attach-1@example.net>"
    assert huge.text == "Can you do this design? Photo attached."
    assert huge.attachments == [] and huge.raw is not None and huge.raw["truncated"]
    assert small.text == "Короткий лист" and small.raw is not None and "truncated" not in small.raw


async def test_a_dead_server_is_an_error_status_and_retried() -> None:
    sleeps: list[float] = []
    stop = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 3:
            stop.set()
            await asyncio.Event().wait()  # parked until the channel stops

    channel = channel_for(MemoryContext(), None, None, sleep=sleep, jitter=lambda: 0.0)
    await channel.start()
    try:
        await asyncio.wait_for(stop.wait(), 10)
        assert sleeps == [1.0, 2.0, 4.0]  # backing off
        status = channel.status()
        assert status.state == "error" and status.reason.startswith("IMAP: can't connect")
        assert status.until is not None
    finally:
        await channel.stop()


# One mail never stops the mailbox ---------------------------------------------------------


def set_aside(ctx: MemoryContext, folder: str = "INBOX") -> list[dict[str, Any]]:
    return [entry for entry in ctx.aside if entry["folder"] == folder]


async def test_a_date_without_a_zone_does_not_stall_the_mailbox() -> None:
    # Issue 18: "-0000" (what email.utils.formatdate() writes) gave a time without a zone;
    # comparing it with the client's earlier mail raised, and the cursor never moved on.
    ctx = MemoryContext()
    # A thread as an older version left it after such a mail: its time has no zone.
    ctx.state[("email", "main", f"thread:{CLIENT}")] = {
        "subject": "Запис",
        "last_id": "<old@mail.gmail.example>",
        "references": [],
        "at": "2026-11-30T09:15:00",
    }
    async with ImapServer(ADDRESS, PASSWORD) as server:
        await server.deliver(client_mail("Перший"))
        await server.deliver(client_mail("Другий", date=formatdate()))
        await server.deliver(client_mail("Третій", date="Mon, 30 Nov 2026 14:20:00"))
        await server.deliver(client_mail("Четвертий"))
        channel = channel_for(ctx, server, None)
        async with ImapMailbox(channel.config.imap) as box:
            assert await took(channel, box) == 4
    first, second, third, fourth = ctx.published
    assert [m.text for m in ctx.published] == ["Перший", "Другий", "Третій", "Четвертий"]
    assert abs(second.sent_at - first.sent_at) < timedelta(minutes=1)  # -0000 is UTC
    assert third.sent_at == datetime(2026, 11, 30, 12, 20, tzinfo=UTC)  # the salon's 14:20
    thread = ctx.state[("email", "main", f"thread:{CLIENT}")]
    assert thread["last_id"] == fourth.provider_message_id  # the newest, the older one passed
    assert datetime.fromisoformat(thread["at"]).utcoffset() is not None


async def test_a_message_deleted_before_it_is_read_is_recorded_and_passed() -> None:
    ctx = MemoryContext()
    async with ImapServer(ADDRESS, PASSWORD) as server:
        await server.deliver(client_mail("Перший"))
        gone = await server.deliver(client_mail("Видалений"))
        await server.deliver(client_mail("Третій"))

        class OwnerDeletes(ImapMailbox):
            """The owner's phone deletes a message between our listing and our FETCH."""

            async def fetch(
                self, uid: int, section: str = "", partial: int | None = None
            ) -> bytes | None:
                if uid == gone:
                    await server.expunge(uid)
                return await super().fetch(uid, section, partial)

        channel = channel_for(ctx, server, None)
        async with OwnerDeletes(channel.config.imap) as box:
            assert await took(channel, box) == 3
            validity = box.uidvalidity
    assert [m.text for m in ctx.published] == ["Перший", "Третій"]
    (record,) = set_aside(ctx)
    assert (record["uidvalidity"], record["uid"]) == (validity, gone)
    assert record["reason"].startswith("the server returned nothing for it")
    assert ctx.state[("email", "main", "cursor:INBOX")]["last_uid"] == gone + 1


async def test_a_message_the_server_cannot_give_is_set_aside_after_a_few_tries() -> None:
    ctx = MemoryContext()
    time = FakeTime()
    async with ImapServer(ADDRESS, PASSWORD) as server:
        await server.deliver(client_mail("Перший"))
        broken = await server.deliver(client_mail("Пошкоджений"))
        await server.deliver(client_mail("Третій"))
        server.faults.broken_uids.add(broken)  # Gmail: "Some messages could not be FETCHed"
        channel = channel_for(ctx, server, None, sleep=time.sleep, clock=time.clock)
        await channel.start()
        try:
            await eventually(lambda: _count(ctx.published, 2))
            assert channel.status().state == "ok"
        finally:
            await channel.stop()
        logins = server.logins - 3  # the deliveries' own
    assert [m.text for m in ctx.published] == ["Перший", "Третій"]
    (record,) = set_aside(ctx)
    assert record["uid"] == broken
    assert record["reason"] == (
        f"the server failed to give it {email_channel.MAX_FETCH_TRIES} times: "
        f"UID FETCH {broken} refused: Some messages could not be FETCHed (Failure)"
    )
    # Each failure was a new session after a pause; the third set it aside.
    assert logins == email_channel.MAX_FETCH_TRIES == len(time.sleeps) + 1


async def test_sessions_that_fail_right_after_login_back_off_instead_of_hammering() -> None:
    # Issue 18: an error after login retried every second (23 logins in 23 s on Dovecot).
    time = FakeTime()
    start = time.now
    parked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await time.sleep(seconds)
        if time.now - start >= 600 or len(time.sleeps) >= 40:
            parked.set()
            await asyncio.Event().wait()  # until the channel stops

    async with ImapServer(ADDRESS, PASSWORD) as server:
        server.faults.every_fetch = True  # login and SELECT work, then the first FETCH fails
        channel = channel_for(
            MemoryContext(),
            server,
            None,
            sleep=sleep,
            clock=time.clock,
            jitter=random.Random(18).random,
        )
        await channel.start()
        try:
            await asyncio.wait_for(parked.wait(), 30)
            logins = server.logins
            status = channel.status()
        finally:
            await channel.stop()
    assert status.state == "error" and "SERVERBUG" in status.reason
    # Ten minutes of a broken server: about a dozen logins, not one a second.
    assert logins == len(time.sleeps) <= 12
    for n, delay in enumerate(time.sleeps):
        ceiling = min(RECONNECT_MAX_S, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling  # doubling, less a random part of up to half


async def test_the_backoff_starts_again_only_after_a_session_stayed_healthy() -> None:
    time = FakeTime()
    parked = asyncio.Event()
    async with ImapServer(ADDRESS, PASSWORD, idle=False) as server:
        server.faults.every_fetch = True
        # After the nth sleep of the channel: the server heals, breaks, or the test ends.
        script = {3: "heal", 9: "break", 10: "heal", 11: "break", 12: "park"}

        async def sleep(seconds: float) -> None:
            await time.sleep(seconds)
            action = script.get(len(time.sleeps) - 1)
            if action in ("heal", "break"):
                server.faults.every_fetch = action == "break"
            elif action == "park":
                parked.set()
                await asyncio.Event().wait()

        channel = channel_for(
            MemoryContext(),
            server,
            None,
            poll_interval=60.0,
            sleep=sleep,
            clock=time.clock,
            jitter=lambda: 0.0,
        )
        await channel.start()
        try:
            await asyncio.wait_for(parked.wait(), 30)
        finally:
            await channel.stop()
    assert time.sleeps == [
        *(1.0, 2.0, 4.0, 8.0),  # failing sessions: doubling
        *[60.0] * 6,  # six minutes of polling: a healthy session
        1.0,  # it failed: starting again from one second
        60.0,  # one minute only
        2.0,  # not healthy long enough: doubling goes on
    ]


async def took(channel: EmailChannel, box: ImapMailbox) -> int:
    """How many messages one sync took."""
    before = channel.taken
    await channel.sync(box)
    return channel.taken - before


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n


# A running hub ----------------------------------------------------------------------------


async def email_settings(
    settings: Any, imap: ImapServer, smtp: SmtpServer, **overrides: Any
) -> Any:
    values = {
        "email_address": ADDRESS,
        "email_from_name": "Салон Белла",
        "email_username": ADDRESS,
        "email_password": SecretStr(PASSWORD),
        "email_imap_host": HOST,
        "email_imap_port": imap.port,
        "email_imap_security": "none",
        "email_smtp_host": HOST,
        "email_smtp_port": smtp.port,
        "email_smtp_security": "none",
        "email_poll_interval_s": 3600.0,  # IDLE must bring mail long before a poll would
        "hub_bot": "offline",
        **overrides,
    }
    return settings.model_copy(update=values)


async def replies_to(smtp: SmtpServer, message_id: str | None) -> list[Received]:
    return [m for m in smtp.messages if m.message["In-Reply-To"] == message_id]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_conversation_by_email_end_to_end(
    settings: Any, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    del redis
    watch_client_logs(caplog)
    login = (ADDRESS, PASSWORD)  # the hub logs in to SMTP with the mailbox's own password
    async with ImapServer(ADDRESS, PASSWORD) as imap, SmtpServer(credentials=login) as smtp:
        first = client_mail("Добрий день! Скільки коштує манікюр з покриттям?")
        await imap.deliver(first)  # waiting before the hub starts: taken on the first sync
        running = await start_hub(await email_settings(settings, imap, smtp))
        try:
            question = await stored_in(running, "Добрий день! Скільки коштує манікюр з покриттям?")
            (card,) = await rows(running, Client)
            assert card.email == CLIENT and card.name == "Олена Коваль"
            assert question.provider_message_id is not None
            assert question.client_id == card.id

            # The bot's answer goes out by SMTP, threaded under the client's mail.
            sent = await eventually(lambda: replies_to(smtp, question.provider_message_id))
            answer = sent[0].message
            assert sent[0].rcpt_tos == [CLIENT] and sent[0].mail_from == ADDRESS
            assert answer["Subject"] == "Re: Запис на манікюр"
            assert answer["References"] == question.provider_message_id
            assert answer["Auto-Submitted"] == "auto-replied"
            await eventually(
                lambda: rows(
                    running,
                    Message,
                    Message.direction == "out",
                    Message.status == "sent",
                    Message.provider_message_id == answer["Message-ID"],
                )
            )

            # The client answers (IDLE brings it at once: the poll interval is an hour).
            quoted = f"пн, 30 лист. 2026 р. о 10:15 Салон Белла <{ADDRESS}> пише:"
            second = client_mail(
                f"Дякую, запишіть мене на суботу.\n\n{quoted}\n> {answer.get_content()}",
                subject=f"Re: {answer['Subject']}",
                reply_to=answer["Message-ID"],
            )
            await imap.deliver(second)
            follow_up = await stored_in(running, "Дякую, запишіть мене на суботу.")
            assert follow_up.conversation_id == question.conversation_id
            assert follow_up.reply_to_id == answer["Message-ID"]
            assert len(await rows(running, Conversation)) == 1
            again = (await eventually(lambda: replies_to(smtp, follow_up.provider_message_id)))[0]
            assert again.message["Subject"] == "Re: Запис на манікюр"  # not "Re: Re:"
            assert again.message["References"].split() == [
                answer["Message-ID"],
                follow_up.provider_message_id,
            ]

            # An out-of-office answer is stored, never answered: the client's next mail is
            # answered, and the bot (in order per chat) has passed the robot's by then.
            auto = client_mail(
                "I am out of the office until Monday.",
                subject="Automatic reply: Re: Запис на манікюр",
                Auto_Submitted="auto-replied",
            )
            await imap.deliver(auto)
            await imap.deliver(client_mail("А педикюр теж робите?"))
            robot = await stored_in(running, "I am out of the office until Monday.")
            person = await stored_in(running, "А педикюр теж робите?")
            await eventually(lambda: _answered(running, person.public_id))
            assert not await _answered(running, robot.public_id)

            # Staff write to an address that does not exist: the bounce marks it failed.
            public_id = (
                await send_reply(
                    running.hub.sessions,
                    running.hub.bus,
                    conversation_id=question.conversation_id,
                    text="Підтверджуємо запис на суботу 11:00.",
                    author=Author.staff,
                )
            ).message.public_id

            async def staff_sent() -> str | None:
                (row,) = await rows(running, Message, Message.public_id == public_id)
                return row.provider_message_id if row.status == "sent" else None

            ours = await eventually(staff_sent)
            (by_staff,) = [m for m in smtp.messages if m.message["Message-ID"] == ours]
            assert by_staff.message["Auto-Submitted"] is None  # a person wrote it
            dsn = (MAIL / "16_bounce_dsn.eml").read_bytes()
            dsn = dsn.replace(
                b"<0123456789abcdef0123456789abcdef.hub@salon.example>", ours.encode()
            )
            await imap.deliver(dsn)

            async def failed() -> Message | None:
                (row,) = await rows(running, Message, Message.public_id == public_id)
                return row if row.status == "failed" else None

            bounced = await eventually(failed)
            assert bounced.error == (
                "550 5.1.1 <nobody@gone.example>: Recipient address rejected: User unknown"
            )
            # The bounce itself is stored (on the mailer-daemon's card), never answered.
            bounce = await stored_in(running, DSN_TEXT)
            assert bounce.conversation_id != question.conversation_id
            assert not await _answered(running, bounce.public_id)
            assert running.hub.channels["email"].status().state == "ok"
        finally:
            await running.stop()
    assert PASSWORD not in client_side_logs(caplog)


def watch_client_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything the channel and the mail client libraries log, DEBUG included."""
    for name in ("channels", "hub", "aioimaplib", "aiosmtplib"):
        caplog.set_level(logging.DEBUG, logger=name)


def client_side_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the hub and the client libraries logged (the test servers log logins in full)."""
    servers = ("pymap", "mail.log")
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(servers))


async def _answered(running: RunningHub, public_id: str) -> bool:
    prefix = f"bot:{public_id}:"
    return any(
        (m.outbound_key or "").startswith(prefix)
        for m in await rows(running, Message, Message.direction == "out")
    )


async def test_a_restart_does_not_take_mail_twice(settings: Any, redis: Any) -> None:
    del redis
    async with ImapServer(ADDRESS, PASSWORD) as imap, SmtpServer() as smtp:
        config = await email_settings(settings, imap, smtp, hub_bot="off")
        running = await start_hub(config)
        try:
            await imap.deliver(client_mail("Перший"))
            await imap.deliver(client_mail("Другий"))
            await stored_in(running, "Другий")
        finally:
            await running.stop()
        await imap.deliver(client_mail("Поки хаб спав"))
        running = await start_hub(config)
        try:
            await stored_in(running, "Поки хаб спав")
            await imap.deliver(client_mail("Після рестарту"))
            await stored_in(running, "Після рестарту")
            texts = [m.text for m in await rows(running, Message, Message.direction == "in")]
            assert texts == ["Перший", "Другий", "Поки хаб спав", "Після рестарту"]
        finally:
            await running.stop()


async def test_two_hub_processes_read_the_mailbox_once(settings: Any, redis: Any) -> None:
    del redis
    async with ImapServer(ADDRESS, PASSWORD) as imap, SmtpServer() as smtp:
        config = await email_settings(settings, imap, smtp, hub_bot="off")
        first = await start_hub(config)
        second = await start_hub(config)
        try:
            for n in range(3):
                await imap.deliver(client_mail(f"Лист {n}"))
            await stored_in(first, "Лист 2")
            channels = [first.hub.channels["email"], second.hub.channels["email"]]
            # Only the lease holder reads: each message was taken by one process only.
            assert sum(c.taken for c in channels) == 3  # type: ignore[attr-defined]
            assert sorted(c.taken for c in channels) == [0, 3]  # type: ignore[attr-defined]
            texts = [m.text for m in await rows(first, Message, Message.direction == "in")]
            assert texts == ["Лист 0", "Лист 1", "Лист 2"]
        finally:
            await second.stop()
            await first.stop()


# Careless mail through a running hub -------------------------------------------------------

# Good mail interleaved with mail as careless senders write it (see tests/fixtures/mail/):
# the same clients write twice, so a zone-less date meets the client's earlier thread.
CORPUS_ORDER = (
    "02_alternative_uk.eml",
    "22_date_minus_zero.eml",  # the same client, "-0000"
    "01_plain_en.eml",
    "25_obsolete_zone.eml",  # EST
    "04_koi8u.eml",
    "23_no_date.eml",
    "05_cp1251_base64.eml",
    "24_garbage_date.eml",
    "13_iphone_uk.eml",
    "26_no_zone.eml",
    "03_html_only.eml",
    "27_wrong_charset.eml",
    "12_outlook_reply_ru.eml",
    "28_broken_boundary.eml",
    "14_iphone_ru.eml",
    "29_no_from.eml",  # Return-Path only: salvaged
    "30_no_sender.eml",  # nobody to answer: set aside
    "15_forwarded.eml",
    "31_unfolded_boundary.eml",
)
LONG_ADDRESS = f"olga@{'a' * 60}.{'b' * 60}.{'c' * 60}.example"  # 196 characters, valid


def written_here() -> list[tuple[str, bytes]]:
    """Careless mail that is easier written than kept as a file."""
    nul = (
        b"From: =?utf-8?q?=D0=9C=D0=B0=D1=80=D0=BA=D0=BE?= <marko@x.example>\r\n"
        b"Subject: =?utf-8?q?=D0=A6=D1=96=D0=BD=D0=B0=00?=\r\nMessage-ID: <nul-1@x.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\n=D0=A1=D0=BA=D1=96=D0=BB=D1=8C=D0=BA=D0=B8?=00\r\n"
    )
    long_sender = client_mail("Лист з довгої адреси", sender=LONG_ADDRESS)
    huge = (
        b"From: Huge <huge@x.example>\r\nSubject: "
        + b" ".join(b"=?utf-8?q?slow?=" for _ in range(2_500))
        + b"\r\nMessage-ID: <huge-1@x.example>\r\n\r\nA subject of 42 KB.\r\n"
    )
    return [("nul", nul), ("long sender", long_sender), ("huge header", huge)]


async def test_careless_mail_is_stored_once_in_order_and_reading_goes_on(
    settings: Any, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    del redis
    caplog.set_level(logging.DEBUG, logger="channels")
    mails = [(name, (MAIL / name).read_bytes()) for name in CORPUS_ORDER] + written_here()
    expected = [parse_mail(raw).message_id for name, raw in mails if name != "30_no_sender.eml"]
    uids: dict[str, int] = {}
    before = datetime.now(UTC)
    async with ImapServer(ADDRESS, PASSWORD) as imap, SmtpServer() as smtp:
        half = len(mails) // 2
        names = [name for name, _ in mails]
        # Half waits before the hub starts (the first sync), half comes later (IDLE).
        raws = [raw for _, raw in mails]
        uids.update(zip(names[:half], await imap.deliver_all(raws[:half]), strict=True))
        # One shard: the store keeps the order the channel published in.
        config = await email_settings(settings, imap, smtp, hub_bot="off", hub_inbound_shards=1)
        running = await start_hub(config)
        try:
            uids.update(zip(names[half:], await imap.deliver_all(raws[half:]), strict=True))

            async def stored() -> list[Message]:
                found = await rows(running, Message, Message.direction == "in")
                return found if len(found) >= len(expected) else []

            found = await eventually(stored, timeout=30)
            assert [m.provider_message_id for m in found] == expected  # once each, in order
            await imap.deliver(client_mail("А ще питання: чи є парковка?"))
            await stored_in(running, "А ще питання: чи є парковка?")  # reading goes on
            assert running.hub.channels["email"].status().state == "ok"
            (dead,) = await running.hub.bus.dead_letters()
            with pytest.raises(NotReplayable):
                await running.hub.bus.replay(dead["id"])
        finally:
            await running.stop()
    assert dead["stream"] == "set-aside:email/main"
    record = {**dead["fields"], "reason": dead["error"]}
    assert record["uid"] == uids["30_no_sender.eml"]
    assert record["message_id"] == "<import-0001@migration.invalid>"
    assert record["reason"] == "no sender address (no From, Sender, Reply-To or Return-Path)"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("channels"))
    assert f"message {record['uid']} set aside: no sender address" in ours
    assert "Перевірка" not in ours and "import-0001" not in ours  # never the mail itself
    by_file = dict(zip([n for n, _ in mails if n != "30_no_sender.eml"], found, strict=True))
    sent = {name: as_utc(m.sent_at) for name, m in by_file.items()}
    assert sent["22_date_minus_zero.eml"] == datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    assert sent["26_no_zone.eml"] == datetime(2026, 11, 30, 12, 20, tzinfo=UTC)  # Kyiv
    assert sent["25_obsolete_zone.eml"] == datetime(2026, 11, 30, 12, 55, tzinfo=UTC)
    for name in ("23_no_date.eml", "24_garbage_date.eml"):  # the time the server took it
        assert before - timedelta(minutes=1) <= sent[name] <= datetime.now(UTC)
    assert by_file["27_wrong_charset.eml"].text == "Скільки коштує нарощування вій?\nДякую, Ірина"
    assert by_file["28_broken_boundary.eml"].text.startswith("Добрый день!\nПодтверждаю")
    assert by_file["nul"].text == "Скільки?"
    assert by_file["long sender"].text == "Лист з довгої адреси"
