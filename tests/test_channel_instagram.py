"""Instagram (official mode): payloads, signatures, the reply window, the Graph errors, the
mode choice, and a running hub against a fake Graph API with Meta's signed webhooks."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from channels.base import PermanentSendError
from channels.instagram import (
    BAD_TOKEN_REASON,
    InstagramChannel,
    InstagramConfig,
    InstagramUnavailable,
    from_settings,
    window_decision,
)
from channels.instagram_graph import (
    MessagingEvent,
    Parsed,
    graph_error,
    is_signed,
    parse_event,
    quick_replies,
    split_text,
    token_matches,
)
from crm_store.models import ChannelIdentity, Client, Conversation, Message
from hub.config import Settings
from hub.messages import Attachment, Author, InboundMessage, OutboundMessage, QuickReply
from tests.fakes.instagram_graph_server import (
    ACCESS_TOKEN,
    ACCOUNT_ID,
    APP_SECRET,
    VERIFY_TOKEN,
    VERSION,
    FakeGraph,
    echo_event,
    event,
    igsid,
    new_mid,
    notification,
    post_webhook,
    read_event,
    sign,
    text_event,
    verify,
)
from tests.support import RunningHub, eventually, reply, rows, settled, start_hub, stored_in

PATH = "/webhooks/instagram/main"
T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
WINDOW_REASON = (
    "the client last wrote more than 24 hours ago; Instagram allows replies within 24 hours "
    "(7 days for a person, with the HUMAN_AGENT tag)"
)

# The messages notification of Meta's "Webhooks for Instagram Messaging" page.
DOC_TEXT = {
    "object": "instagram",
    "entry": [
        {
            "id": "IGID",
            "time": 1569262486134,
            "messaging": [
                {
                    "sender": {"id": "IGSID"},
                    "recipient": {"id": "IGID"},
                    "timestamp": 1569262485349,
                    "message": {"mid": "MESSAGE-ID", "text": "MESSAGE-TEXT"},
                }
            ],
        }
    ],
}


def _doc_event(**body: Any) -> dict[str, Any]:
    return {
        "sender": {"id": "IGSID"},
        "recipient": {"id": "IGID"},
        "timestamp": 1569262485349,
        **body,
    }


def parse(raw: dict[str, Any], account_id: str | None = "IGID") -> Parsed:
    return parse_event(
        MessagingEvent.model_validate(raw), "main", raw, account_id=account_id, clock=lambda: T0
    )


# Pure helpers -----------------------------------------------------------------------------


def test_the_documented_notifications() -> None:
    text = parse(DOC_TEXT["entry"][0]["messaging"][0]).inbound
    assert text is not None
    assert (text.channel, text.inbox, text.chat_id, text.sender_id) == (
        "instagram",
        "main",
        "IGSID",
        "IGSID",
    )
    assert (text.provider_message_id, text.text) == ("MESSAGE-ID", "MESSAGE-TEXT")
    assert text.sent_at == datetime(2019, 9, 23, 18, 14, 45, 349000, tzinfo=UTC)

    media = parse(
        _doc_event(
            message={
                "mid": "M2",
                "attachments": [
                    {"type": "image", "payload": {"url": "https://lookaside.fbsbx.com/a.jpg"}},
                    {"type": "audio", "payload": {"url": "https://cdn.fbsbx.com/v/voice.mp4"}},
                    {"type": "share", "payload": {"url": "https://scontent.cdninstagram.com/p"}},
                    {"type": "story_mention", "payload": {"url": "https://lookaside.fbsbx.com/s"}},
                    {
                        "type": "ig_reel",
                        "payload": {
                            "reel_video_id": "17900000000000001",
                            "title": "Nails",
                            "url": "https://lookaside.fbsbx.com/reel",
                        },
                    },
                    {"type": "file", "payload": {"url": "javascript:alert(1)"}},
                ],
            }
        )
    ).inbound
    assert media is not None and media.text == ""
    assert [(a.kind, a.name) for a in media.attachments] == [
        ("image", None),
        ("audio", None),
        ("image", "instagram-share"),
        ("file", "instagram-story-mention"),
        ("video", "instagram-reel: Nails"),
        ("file", None),
    ]
    assert media.attachments[0] == Attachment(
        kind="image", url="https://lookaside.fbsbx.com/a.jpg", mime_type="image/jpeg"
    )
    assert media.attachments[4].ref == "reel:17900000000000001"
    assert media.attachments[5].url is None  # not an http(s) link: never shown

    story = parse(
        _doc_event(
            message={
                "mid": "M3",
                "text": "Скільки коштує такий манікюр?",
                "reply_to": {"story": {"url": "https://lookaside.fbsbx.com/st", "id": "1790"}},
            }
        )
    ).inbound
    assert story is not None and story.text == "Скільки коштує такий манікюр?"
    assert story.attachments == [
        Attachment(
            kind="file",
            ref="story:1790",
            url="https://lookaside.fbsbx.com/st",
            name="instagram-story-reply",
        )
    ]
    assert story.reply_to_id == "story:1790"
    reply = parse(_doc_event(message={"mid": "M4", "text": "так", "reply_to": {"mid": "M1"}}))
    assert reply.inbound is not None and reply.inbound.reply_to_id == "M1"

    tapped = parse(
        _doc_event(
            message={
                "mid": "M5",
                "text": "Вт 02.03 о 15:0…",
                "quick_reply": {"payload": "label:Вт 02.03 о 15:00 з Оленою"},
            }
        )
    ).inbound
    assert tapped is not None and tapped.text == "Вт 02.03 о 15:00 з Оленою"
    theirs = parse(
        _doc_event(message={"mid": "M6", "text": "Red", "quick_reply": {"payload": "COLOR_RED"}})
    ).inbound
    assert theirs is not None and theirs.text == "Red"
    assert theirs.raw is not None and theirs.raw["message"]["quick_reply"]["payload"] == "COLOR_RED"
    postback = parse(
        _doc_event(postback={"mid": "M7", "title": "Записатися", "payload": "BOOK"})
    ).inbound
    assert postback is not None and (postback.text, postback.provider_message_id) == (
        "Записатися",
        "M7",
    )
    old_postback = parse(_doc_event(postback={"title": "Ціни", "payload": "PRICES"})).inbound
    assert old_postback is not None
    assert old_postback.provider_message_id == "postback:IGSID:1569262485349"
    ad = parse(
        _doc_event(
            message={"mid": "M8", "text": "Hi", "referral": {"ref": "insta_ad", "source": "ADS"}}
        )
    ).inbound
    assert ad is not None and ad.contact.source == "insta_ad"
    unsupported = parse(_doc_event(message={"mid": "M9", "is_unsupported": True})).inbound
    assert unsupported is not None
    assert unsupported.attachments[0].name == "instagram-unsupported"

    assert parse(_doc_event(read={"mid": "M1"})).read_mid == "M1"
    ignored = [
        _doc_event(message={"mid": "M1", "is_deleted": True}),
        _doc_event(reaction={"mid": "M1", "action": "react", "reaction": "love", "emoji": "❤"}),
        _doc_event(message_edit={"mid": "M1", "text": "new", "num_edit": 1}),
        _doc_event(referral={"ref": "x", "source": "IGME", "type": "OPEN_THREAD"}),
        _doc_event(read={}),
        _doc_event(message={"mid": "M11", "text": "  "}),
    ]
    for raw in ignored:
        outcome = parse(raw)
        assert outcome.inbound is None and outcome.read_mid is None and outcome.ignored, raw
    # The account's own messages (flagged, or sent from the account without the flag) go to
    # the hub as `own`, in the chat of the person they were sent to.
    echoes = [
        {
            **_doc_event(message={"mid": "M1", "text": "echo", "is_echo": True}),
            "sender": {"id": "IGID"},
            "recipient": {"id": "IGSID"},
        },
        {
            **_doc_event(message={"mid": "M10", "text": "ours"}),
            "sender": {"id": "IGID"},
            "recipient": {"id": "IGSID"},
        },
    ]
    for raw in echoes:
        own = parse(raw).inbound
        assert own is not None and own.own, raw
        assert own.chat_id == own.sender_id == "IGSID"


def test_signatures_window_and_helpers() -> None:
    body = b'{"object":"instagram","entry":[]}'
    good = sign(body, "secret-a")
    assert good.startswith("sha256=") and is_signed("secret-a", body, good)
    assert is_signed("secret-a", body, "SHA256=" + good[7:].upper())
    assert not is_signed("secret-b", body, good)
    assert not is_signed("secret-a", body + b" ", good)
    assert not is_signed("secret-a", body, good[7:])  # no "sha256=" prefix
    assert not is_signed("secret-a", body, None) and not is_signed("secret-a", body, "")
    assert token_matches("tok", "tok") and not token_matches("tok", "tok2")
    assert not token_matches("tok", None)

    staff, bot = Author.staff, Author.bot
    assert window_decision(None, T0, bot).refused is None
    assert window_decision(T0 - timedelta(hours=23), T0, bot).tag is None
    assert window_decision(T0 - timedelta(hours=25), T0, bot).refused == WINDOW_REASON
    assert window_decision(T0 - timedelta(hours=25), T0, Author.system).refused == WINDOW_REASON
    assert window_decision(T0 - timedelta(days=3), T0, staff).tag == "HUMAN_AGENT"
    late = window_decision(T0 - timedelta(days=8), T0, staff).refused
    assert late is not None and late.startswith("the client last wrote more than 7 days ago")

    parts = split_text("слово " * 400)  # 2,400 characters, 4,400 bytes
    assert len(parts) == 5 and all(len(p.encode()) <= 1000 for p in parts)
    assert " ".join(parts).split() == ["слово"] * 400
    assert split_text("  hi ") == ["hi"] and split_text("") == []

    buttons = quick_replies([QuickReply(text=f"Option {n}") for n in range(15)])
    assert len(buttons) == 13
    long = quick_replies(
        [QuickReply(text="Вт 02.03 о 15:00 з Оленою"), QuickReply(text="Так", payload="YES")]
    )
    assert long == [
        {
            "content_type": "text",
            "title": "Вт 02.03 о 15:00 з…",
            "payload": "label:Вт 02.03 о 15:00 з Оленою",
        },
        {"content_type": "text", "title": "Так", "payload": "YES"},
    ]
    assert len(long[0]["title"]) <= 20

    limit = graph_error(400, b'{"error":{"message":"Too many calls","code":4}}')
    assert limit.transient and limit.rate_limited and limit.text() == "4: Too many calls"
    assert graph_error(429, b"").transient and graph_error(503, b"<html>").transient
    window = graph_error(
        400,
        b'{"error":{"message":"(#10) outside of allowed window",'
        b'"code":10,"error_subcode":2018278}}',
    )
    assert not window.transient and window.text() == "10/2018278: (#10) outside of allowed window"
    gone = graph_error(400, b'{"error":{"message":"Not available","code":551}}')
    assert gone.unreachable and not gone.transient
    token = graph_error(400, b'{"error":{"message":"Invalid OAuth","code":190}}')
    assert token.bad_token and not token.transient


class _Ctx:
    """What a channel gets from the hub, recording what it is given."""

    def __init__(self) -> None:
        self.published: list[InboundMessage] = []
        self.reports: list[Any] = []
        self.state: dict[tuple[str, str, str], dict[str, Any]] = {}

    async def publish(self, msg: InboundMessage) -> None:
        self.published.append(msg)

    async def report(self, status: Any) -> None:
        self.reports.append(status)

    async def load_state(self, channel: str, inbox: str, key: str) -> dict[str, Any] | None:
        return self.state.get((channel, inbox, key))

    async def save_state(self, channel: str, inbox: str, key: str, value: dict[str, Any]) -> None:
        self.state[(channel, inbox, key)] = value


def _base_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_from_settings_picks_the_mode(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ctx: Any = _Ctx()
    official = {
        "instagram_access_token": SecretStr(ACCESS_TOKEN),
        "instagram_app_secret": SecretStr(APP_SECRET),
        "instagram_verify_token": SecretStr(VERIFY_TOKEN),
    }
    assert from_settings(_base_settings(), ctx) is None  # auto, nothing set
    assert from_settings(_base_settings(instagram_mode="off", **official), ctx) is None
    for mode in ("auto", "official"):
        channel = from_settings(_base_settings(instagram_mode=mode, **official), ctx)
        assert isinstance(channel, InstagramChannel) and channel.inbox == "main"
        assert channel.api == f"https://graph.instagram.com/{VERSION}"
        assert ACCESS_TOKEN not in repr(channel) and APP_SECRET not in repr(channel.config)
    caplog.set_level(logging.WARNING)
    partial = {**official, "instagram_app_secret": None}
    assert from_settings(_base_settings(instagram_mode="official", **partial), ctx) is None
    assert "INSTAGRAM_APP_SECRET not set" in caplog.text

    # The private mode is another module's: it is asked, lazily, and its answer returned.
    asked: list[Settings] = []
    marker = object()

    def private_from_settings(settings: Settings, given_ctx: Any) -> Any:
        assert given_ctx is ctx
        asked.append(settings)
        return marker

    fake = types.ModuleType("channels.instagram_private")
    fake.from_settings = private_from_settings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "channels.instagram_private", fake)
    private = _base_settings(instagram_mode="auto", instagram_username="oksamyt.salon")
    assert from_settings(private, ctx) is marker
    assert from_settings(_base_settings(instagram_mode="private"), ctx) is marker
    # A token wins over a username in auto; "official" never asks the private module.
    both = _base_settings(instagram_mode="auto", instagram_username="x", **official)
    assert isinstance(from_settings(both, ctx), InstagramChannel)
    assert len(asked) == 2
    # The official mode never loads instagrapi (a fresh interpreter tells).
    probe = (
        "import sys; from hub.config import Settings; from channels.instagram import from_settings;"
        "s = Settings(_env_file=None, instagram_access_token='t', instagram_app_secret='s',"
        " instagram_verify_token='v'); assert from_settings(s, None) is not None;"
        "print(sorted(m for m in sys.modules if 'instagrapi' in m or 'instagram_private' in m))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert loaded.stdout.strip() == "[]"
    # Chosen but not installed: off, with a log line, rather than a hub that can't start.
    monkeypatch.setitem(sys.modules, "channels.instagram_private", None)
    assert from_settings(private, ctx) is None
    assert "instagram (private) is off" in caplog.text


def _channel(fake: FakeGraph, ctx: Any, **kw: Any) -> InstagramChannel:
    config = InstagramConfig(
        access_token=SecretStr(kw.pop("token", ACCESS_TOKEN)),
        app_secret=SecretStr(APP_SECRET),
        verify_token=SecretStr(VERIFY_TOKEN),
        account_id=kw.pop("account_id", ACCOUNT_ID),
        api_url=fake.base_url,
        api_version=VERSION,
    )
    return InstagramChannel(ctx, "main", config, check_token=False, **kw)


def _out(text: str = "Hi", **kw: Any) -> OutboundMessage:
    return OutboundMessage(
        conversation_id=1, channel="instagram", inbox="main", chat_id="C1", text=text, **kw
    )


async def test_graph_errors_are_classified() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with FakeGraph() as fake:
        ctx = _Ctx()
        channel = _channel(fake, ctx, sleep=sleep)
        try:
            fake.fail(
                http=429, code=4, message="Application request limit reached", retry_after="7"
            )
            with pytest.raises(InstagramUnavailable, match="4: Application request limit"):
                await channel.send(_out())
            assert slept == [7.0]
            for code in (17, 32, 613, 2):
                fake.fail(code=code, message="slow down")
                with pytest.raises(InstagramUnavailable):
                    await channel.send(_out())
            fake.fail(http=502)
            with pytest.raises(InstagramUnavailable, match="HTTP 502"):
                await channel.send(_out())

            fake.fail(
                code=10,
                subcode=2018278,
                message="(#10) This message is sent outside of allowed window.",
            )
            refused = await channel.send(_out())
            assert (refused.status, refused.retryable, refused.unreachable) == (
                "failed",
                False,
                False,
            )
            assert (
                refused.error == "10/2018278: (#10) This message is sent outside of allowed window."
            )
            fake.unavailable.add("C1")
            gone = await channel.send(_out())
            assert (
                gone.unreachable
                and gone.error == "551/1545041: This person isn't available right now."
            )
            fake.unavailable.clear()
            fake.fail(code=100, subcode=2018001, message="(#100) No matching user found")
            nobody = await channel.send(_out())
            assert (
                nobody.unreachable and nobody.error == "100/2018001: (#100) No matching user found"
            )
            fake.fail(code=100, message="(#100) Invalid parameter")
            bad = await channel.send(_out())
            assert not bad.unreachable and bad.error == "100: (#100) Invalid parameter"

            # A long text goes as parts; a rate limit between them sends none twice; the
            # quick replies ride on the last part; an image goes first, by URL.
            image = Attachment(kind="image", url="https://salon.example.com/works/1.jpg")
            long_text = ("Манікюр з покриттям 800 грн. " * 60).strip()
            fake.fail(code=4, after=2)
            msg = _out(
                long_text, attachments=[image], quick_replies=[QuickReply(text="Записатися")]
            )
            with pytest.raises(InstagramUnavailable):
                await channel.send(msg)
            status = await channel.send(msg)
            parts = fake.sent[-4:]
            assert parts[0]["message"] == {
                "attachment": {"type": "image", "payload": {"url": image.url}}
            }
            texts = [p["message"]["text"] for p in parts[1:]]
            assert " ".join(texts).split() == long_text.split()
            assert [("quick_replies" in p["message"]) for p in parts] == [False, False, False, True]
            assert status.provider_message_id == parts[-1]["message_id"]
            assert all(p["messaging_type"] == "RESPONSE" and "tag" not in p for p in parts)
            with pytest.raises(PermanentSendError):
                await channel.send(_out("  "))
        finally:
            await channel.stop()

        wrong = _channel(fake, ctx, token="expired-token")
        try:
            failed = await wrong.send(_out())
        finally:
            await wrong.stop()
        assert failed.error == "190: Invalid OAuth access token - Cannot parse access token"
        assert wrong.status().state == "error" and wrong.status().reason == BAD_TOKEN_REASON
        # Authorization is a header, never a query parameter.
        assert all("access_token" not in r.path for r in fake.requests)
        assert fake.requests[-1].authorization == "Bearer expired-token"

    unreachable = InstagramChannel(
        _Ctx(),  # type: ignore[arg-type]
        "main",
        InstagramConfig(
            access_token=SecretStr(ACCESS_TOKEN),
            app_secret=SecretStr(APP_SECRET),
            verify_token=SecretStr(VERIFY_TOKEN),
            api_url="http://127.0.0.1:9",
        ),
        check_token=False,
    )
    try:
        with pytest.raises(InstagramUnavailable) as raised:
            await unreachable.send(_out())
        assert ACCESS_TOKEN not in str(raised.value)
    finally:
        await unreachable.stop()


# A running hub against the fake -----------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def graph() -> Any:
    async with FakeGraph() as fake:
        yield fake


def instagram_settings(settings: Any, fake: FakeGraph, **overrides: Any) -> Any:
    values = {
        "instagram_mode": "official",
        "instagram_access_token": SecretStr(ACCESS_TOKEN),
        "instagram_app_secret": SecretStr(APP_SECRET),
        "instagram_verify_token": SecretStr(VERIFY_TOKEN),
        "instagram_account_id": ACCOUNT_ID,
        "instagram_api_url": fake.base_url,
        "instagram_api_version": VERSION,
        **overrides,
    }
    return settings.model_copy(update=values)


async def running_hub(settings: Any, fake: FakeGraph, **overrides: Any) -> RunningHub:
    return await start_hub(instagram_settings(settings, fake, **overrides))


@pytest.fixture
async def ig_hub(settings: Any, redis: Any, graph: FakeGraph) -> Any:
    del redis  # flushed before the hub starts
    running = await running_hub(settings, graph)
    try:
        yield running
    finally:
        await running.stop()


def channel_of(running: RunningHub) -> InstagramChannel:
    channel = running.hub.channels["instagram"]
    assert isinstance(channel, InstagramChannel)
    return channel


async def call(running: RunningHub, payload: dict[str, Any] | bytes, **kw: Any) -> tuple[int, str]:
    return await post_webhook(running.base_url, PATH, payload, **kw)


async def test_the_bot_answers_a_message_retried_three_times_stored_once(
    settings: Any, redis: Any, graph: FakeGraph
) -> None:
    del redis
    running = await running_hub(settings, graph, hub_bot="offline")
    try:
        client = igsid()
        first = text_event(client, "Привіт! Є вільний час на манікюр?")
        for _ in range(3):  # Meta retrying the same notification
            assert await call(running, notification(first)) == (200, "")
        message = await stored_in(running, "Привіт! Є вільний час на манікюр?")
        assert message.provider_message_id == first["message"]["mid"]
        assert (message.channel, message.inbox) == ("instagram", "main")
        (identity,) = await rows(running, ChannelIdentity)
        assert (identity.channel, identity.external_id) == ("instagram", client)
        (card,) = await rows(running, Client)
        assert card.source_channel == "instagram"

        # The offline bot answered; the answer reached the fake, as a RESPONSE.
        answers = await eventually(
            lambda: _sent_rows(running, Message.direction == "out", Message.status == "sent")
        )
        assert graph.sent and all(s["recipient"] == {"id": client} for s in graph.sent)
        assert all(s["messaging_type"] == "RESPONSE" for s in graph.sent)
        assert {a.provider_message_id for a in answers} <= {s["message_id"] for s in graph.sent}
        assert all(r.authorization == f"Bearer {ACCESS_TOKEN}" for r in graph.sends())
        assert graph.sends()[0].path == f"/{VERSION}/{ACCOUNT_ID}/messages"

        # Meta echoes our answer back: not an inbound message. The client reads it.
        last = answers[-1]
        echo = echo_event(client, last.text, mid=last.provider_message_id)
        assert await call(running, notification(echo)) == (200, "")
        assert await call(running, notification(read_event(client, last.provider_message_id))) == (
            200,
            "",
        )
        await settled(running, last.public_id, "read")
        assert len(await rows(running, Message, Message.direction == "in")) == 1
        assert await stored_in(running, "Привіт! Є вільний час на манікюр?")

        # The owner answers from the Instagram app: a staff reply, and the bot steps back.
        owner = echo_event(client, "Вітаю! Це Олена, підкажу особисто.", mid="OWNER-1")
        assert await call(running, notification(owner)) == (200, "")
        (by_staff,) = await eventually(
            lambda: _sent_rows(running, Message.direction == "out", Message.author == "staff")
        )
        assert by_staff.provider_message_id == "OWNER-1"
        (conversation,) = await rows(running, Conversation)
        assert conversation.status == "human"
    finally:
        await running.stop()


async def _sent_rows(running: RunningHub, *where: Any) -> list[Message]:
    return await rows(running, Message, *where)


async def test_forged_malformed_unknown_oversized_and_the_handshake(
    ig_hub: RunningHub, graph: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = igsid()
    forged = notification(text_event(client, "forged"))
    assert (await call(ig_hub, forged, secret="not-the-secret"))[0] == 403
    assert (await call(ig_hub, forged, signature=None))[0] == 403
    assert (await call(ig_hub, forged, signature=""))[0] == 403
    assert (await call(ig_hub, forged, signature="sha256=" + "0" * 64))[0] == 403
    body = b'{"object": "instagram", "entry": []}'
    assert (await call(ig_hub, b'{"object": "page", "entry": []}', signature=sign(body)))[0] == 403

    assert (await call(ig_hub, b"{not json"))[0] == 400
    assert (await call(ig_hub, b"[1, 2]"))[0] == 400
    assert (await call(ig_hub, {"object": "instagram"}))[0] == 400
    no_mid = notification(event(client, message={"text": "x"}))
    assert (await call(ig_hub, no_mid))[0] == 400
    no_sender = notification(
        {"recipient": {"id": ACCOUNT_ID}, "message": {"mid": "m", "text": "x"}}
    )
    assert (await call(ig_hub, no_sender))[0] == 400
    assert "malformed notification" in caplog.text

    # Valid, but nothing to store: acknowledged so Meta does not retry for hours.
    reaction = event(client, reaction={"mid": "m1", "action": "react", "reaction": "love"})
    for harmless in (
        {"object": "page", "entry": [{"id": "1", "time": 1, "messaging": []}]},
        {
            "object": "instagram",
            "entry": [
                {"id": ACCOUNT_ID, "time": 1, "changes": [{"field": "comments", "value": {}}]}
            ],
        },
        notification(reaction),
        notification(event(client, message={"mid": new_mid(), "is_deleted": True})),
        notification(event(client, something_new={"a": 1})),
        notification(read_event(client, "a-mid-we-never-sent")),
    ):
        assert await call(ig_hub, harmless) == (200, ""), harmless
    assert "reaction (not recorded) ignored" in caplog.text

    async with aiohttp.ClientSession() as http:
        huge = b'{"object": "instagram", "pad": "' + b"a" * (1024 * 1024) + b'"}'
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(huge)}
        async with http.post(ig_hub.base_url + PATH, data=huge, headers=headers) as resp:
            assert resp.status == 413
        async with http.post(ig_hub.base_url + "/webhooks/instagram/vip", data=b"{}") as resp:
            assert resp.status == 404

    status, text, challenge = await verify(ig_hub.base_url, PATH)
    assert (status, text) == (200, challenge)
    assert (await verify(ig_hub.base_url, PATH, token="guess"))[0] == 403
    assert (await verify(ig_hub.base_url, PATH, token=""))[0] == 403
    assert (await verify(ig_hub.base_url, PATH, mode="unsubscribe"))[0] == 400

    assert (await call(ig_hub, notification(text_event(client, "genuine"))))[0] == 200
    await stored_in(ig_hub, "genuine")
    assert [m.text for m in await rows(ig_hub, Message)] == ["genuine"]
    assert graph.sends() == []
    for secret in (APP_SECRET, VERIFY_TOKEN, ACCESS_TOKEN):
        assert secret not in caplog.text


async def test_stories_shares_and_postbacks_reach_the_inbox(ig_hub: RunningHub) -> None:
    client = igsid()
    story = event(
        client,
        message={
            "mid": new_mid(),
            "text": "Хочу такі нігті",
            "reply_to": {"story": {"url": "https://lookaside.fbsbx.com/story", "id": "1790"}},
        },
    )
    mention = event(
        client,
        message={
            "mid": new_mid(),
            "attachments": [
                {"type": "story_mention", "payload": {"url": "https://lookaside.fbsbx.com/m"}}
            ],
        },
    )
    postback = event(client, postback={"mid": new_mid(), "title": "Ціни", "payload": "PRICES"})
    # Two events in one notification, as Meta batches them.
    assert (await call(ig_hub, notification(story, mention)))[0] == 200
    assert (await call(ig_hub, notification(postback)))[0] == 200
    replied = await stored_in(ig_hub, "Хочу такі нігті")
    assert replied.reply_to_id == "story:1790"
    assert replied.attachments == [
        {
            "kind": "file",
            "ref": "story:1790",
            "url": "https://lookaside.fbsbx.com/story",
            "name": "instagram-story-reply",
        }
    ]
    await stored_in(ig_hub, "Ціни")
    (mentioned,) = await eventually(
        lambda: rows(ig_hub, Message, Message.provider_message_id == mention["message"]["mid"])
    )
    assert mentioned.attachments[0]["name"] == "instagram-story-mention"


async def test_rate_limits_are_waited_out_and_retried(ig_hub: RunningHub, graph: FakeGraph) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    channel_of(ig_hub).sleep = sleep
    client = igsid()
    await call(ig_hub, notification(text_event(client, "Можна на завтра?")))
    conversation_id = (await stored_in(ig_hub, "Можна на завтра?")).conversation_id

    graph.fail(http=429, code=4, message="Application request limit reached", retry_after="3")
    graph.fail(code=613, message="Calls to this api have exceeded the rate limit.")
    public_id = await reply(ig_hub, conversation_id, "Так, о 15:00.", Author.staff)
    sent = await settled(ig_hub, public_id, "sent")
    assert sent.attempts == 3 and slept == [3.0]
    assert [r.http_status for r in graph.sends()] == [429, 400, 200]
    assert sent.provider_message_id == graph.sent[0]["message_id"]


async def test_the_reply_window(ig_hub: RunningHub, graph: FakeGraph) -> None:
    clock = Clock(T0)
    channel_of(ig_hub).clock = clock
    client = igsid()
    written = int(T0.timestamp() * 1000)
    await call(ig_hub, notification(text_event(client, "Добрий день", timestamp=written)))
    conversation_id = (await stored_in(ig_hub, "Добрий день")).conversation_id
    window = await channel_of(ig_hub).last_inbound(client)
    assert window == T0

    # 25 hours later: the bot may not write; staff may, with the HUMAN_AGENT tag.
    clock.now = T0 + timedelta(hours=25)
    late = await reply(ig_hub, conversation_id, "Нагадуємо про запис", Author.bot)
    refused = await settled(ig_hub, late, "failed")
    assert refused.error == WINDOW_REASON and refused.attempts == 1
    assert graph.sends() == []

    clock.now = T0 + timedelta(days=3)
    staff = await reply(ig_hub, conversation_id, "Вибачте за затримку!", Author.staff)
    await settled(ig_hub, staff, "sent")
    (request,) = graph.sends()
    assert request.body["messaging_type"] == "MESSAGE_TAG" and request.body["tag"] == "HUMAN_AGENT"

    clock.now = T0 + timedelta(days=8)
    too_late = await reply(ig_hub, conversation_id, "Ви ще тут?", Author.staff)
    gone = await settled(ig_hub, too_late, "failed")
    assert gone.error is not None and gone.error.startswith(
        "the client last wrote more than 7 days"
    )
    assert len(graph.sends()) == 1

    # The client writes again: the window opens anew, and an old retried message does not
    # move it back.
    again = int((T0 + timedelta(days=8)).timestamp() * 1000)
    await call(ig_hub, notification(text_event(client, "Так", timestamp=again)))
    await call(ig_hub, notification(text_event(client, "Старе", timestamp=written + 1)))
    await stored_in(ig_hub, "Старе")
    assert await channel_of(ig_hub).last_inbound(client) == T0 + timedelta(days=8)
    answer = await reply(ig_hub, conversation_id, "Чекаємо вас!", Author.bot)
    await settled(ig_hub, answer, "sent")
    assert graph.sends()[-1].body["messaging_type"] == "RESPONSE"


async def test_a_bad_token_shows_in_healthz(
    settings: Any, redis: Any, graph: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    del redis
    caplog.set_level(logging.DEBUG)
    expired = "IGQWR-expired-token"
    running = await running_hub(settings, graph, instagram_access_token=SecretStr(expired))
    try:
        async with aiohttp.ClientSession() as http:

            async def health() -> dict[str, Any] | None:
                async with http.get(running.base_url + "/healthz") as resp:
                    state = await resp.json()
                return state if state["channels"]["instagram"]["state"] == "error" else None

            state = await eventually(health)
        assert state["channels"]["instagram"]["reason"] == "access token expired or invalid"
        assert state["ok"] is True  # the hub itself is up
        (check,) = [r for r in graph.requests if r.method == "GET"]
        assert check.path == f"/{VERSION}/me" and check.http_status == 400

        client = igsid()
        await call(running, notification(text_event(client, "Hello")))
        conversation_id = (await stored_in(running, "Hello")).conversation_id
        public_id = await reply(running, conversation_id, "Hi!", Author.staff)
        failed = await settled(running, public_id, "failed")
        assert failed.error == "190: Invalid OAuth access token - Cannot parse access token"
        assert failed.attempts == 1
        assert expired not in caplog.text and APP_SECRET not in caplog.text
    finally:
        await running.stop()
