"""Viber: signatures and payloads, and a running hub against a fake Viber REST bot API."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from channels.base import PermanentSendError
from channels.viber import (
    MessageEvent,
    ViberChannel,
    ViberConfig,
    ViberUnavailable,
    e164,
    error_text,
    from_settings,
    inbound_of,
    is_signed,
    keyboard,
    language_of,
    source_of,
    split_text,
    web_url,
)
from crm_store.models import ChannelIdentity, Client, Message
from hub.config import Settings
from hub.messages import ContactHints, InboundMessage, OutboundMessage, QuickReply
from prompts import load_json
from tests.fakes.viber_server import (
    AUTH_TOKEN,
    FakeViber,
    contact_message,
    conversation_started,
    message_event,
    picture_message,
    post_callback,
    receipt,
    sign,
    subscribed,
    text_message,
    unsubscribed,
    user_id,
    viber_user,
    webhook_event,
)
from tests.support import RunningHub, eventually, reply, rows, settled, start_hub, stored_in

PUBLIC = "https://salon.example.com"
PATH = "/webhooks/viber/main"
EVENT_TYPES = ["delivered", "seen", "failed", "subscribed", "unsubscribed", "conversation_started"]

# The "message" callback of Viber's REST bot API documentation ("Receive message from user").
DOC_MESSAGE = {
    "event": "message",
    "timestamp": 1457764197627,
    "message_token": 4912661846655238145,
    "sender": {
        "id": "01234567890A=",
        "name": "John McClane",
        "avatar": "http://avatar.example.com",
        "country": "UK",
        "language": "en",
        "api_version": 1,
    },
    "message": {
        "type": "text",
        "text": "a message to the service",
        "media": "http://example.com",
        "location": {"lat": 50.76891, "lon": 6.11499},
        "tracking_data": "tracking data",
    },
}


# Pure helpers -----------------------------------------------------------------------------


def test_the_documented_message_callback() -> None:
    msg = inbound_of(MessageEvent.model_validate(DOC_MESSAGE), "main", DOC_MESSAGE)
    assert msg is not None
    assert (msg.channel, msg.inbox, msg.chat_id, msg.sender_id) == (
        "viber",
        "main",
        "01234567890A=",
        "01234567890A=",
    )
    # 4912661846655238145 is past 2^53: kept exact.
    assert msg.provider_message_id == "4912661846655238145"
    assert msg.text == "a message to the service" and msg.attachments == []
    assert msg.contact == ContactHints(display_name="John McClane", language="en")
    assert msg.sent_at == datetime(2016, 3, 12, 6, 29, 57, 627000, tzinfo=UTC)


def test_signatures_and_helpers() -> None:
    body = b'{"event":"webhook","timestamp":1457764197627,"message_token":241256543215}'
    good = sign(body, "token-a")
    assert is_signed("token-a", body, good)
    assert is_signed("token-a", body, good.upper())  # hex, whatever its case
    assert not is_signed("token-b", body, good)
    assert not is_signed("token-a", body + b" ", good)
    assert not is_signed("token-a", body, None) and not is_signed("token-a", body, "")
    assert not is_signed("token-a", body, good[:-1])

    assert error_text(6, "Not subscribed") == "6 receiverNotSubscribed: Not subscribed"
    assert error_text(2, "invalidAuthToken") == "2 invalidAuthToken"
    assert error_text(99, None) == "99 generalError"
    assert error_text(-1, "HTTP 404") == "HTTP 404"
    assert e164("+380 67 123 45 67", "UA") == "+380671234567"
    assert e164("0671234567", "UA") == "+380671234567"
    assert e164("380671234567", "UA") == "+380671234567"
    assert e164("00380671234567", "UA") == "+380671234567"
    assert e164("052947378493", "UA") is None and e164("", "UA") is None
    assert language_of("en-US") == "en" and language_of("uk") == "uk"
    assert language_of("de") is None and language_of(None) is None
    assert source_of("src:insta_ad") == "insta_ad"
    assert source_of("src:../x") is None and source_of("tracking data") is None
    assert web_url("https://dl-media.viber.com/5/a.jpg") == "https://dl-media.viber.com/5/a.jpg"
    assert web_url("javascript:alert(1)") is None and web_url("file:///etc/passwd") is None

    words = "слово " * 2500  # 15,000 characters
    parts = split_text(words)
    assert len(parts) == 3 and all(len(p) <= 7000 for p in parts)
    assert " ".join(parts).split() == ["слово"] * 2500
    assert split_text("😀" * 3600) == ["😀" * 3500, "😀" * 100]  # UTF-16 units, not characters
    assert split_text("  short ") == ["short"] and split_text("") == []

    board = keyboard([QuickReply(text="Так"), QuickReply(text="Ні"), QuickReply(text="A <b>")])
    assert board["Type"] == "keyboard"
    assert [(b["Columns"], b["ActionType"], b["ActionBody"]) for b in board["Buttons"]] == [
        (3, "reply", "Так"),
        (3, "reply", "Ні"),
        (6, "reply", "A <b>"),
    ]
    assert board["Buttons"][2]["Text"] == "A &lt;b&gt;"
    long = keyboard([QuickReply(text="Friday 15:00 with Olena"), QuickReply(text="Ok")])
    assert [b["Columns"] for b in long["Buttons"]] == [6, 6]


class _Ctx:
    """What a channel gets from the hub, recording what it is given."""

    def __init__(self) -> None:
        self.published: list[InboundMessage] = []
        self.reports: list[Any] = []
        self.unreachables: list[tuple[str, ...]] = []

    async def publish(self, msg: InboundMessage) -> None:
        self.published.append(msg)

    async def report(self, status: Any) -> None:
        self.reports.append(status)

    async def unreachable(self, channel: str, inbox: str, external_id: str, reason: str) -> None:
        self.unreachables.append((channel, inbox, external_id, reason))

    def on_fanout(self, topic: str, handler: Any) -> None: ...


def test_on_only_with_a_token() -> None:
    settings = Settings(_env_file=None, viber_bot_token=None)  # type: ignore[call-arg]
    assert from_settings(settings, _Ctx()) is None  # type: ignore[arg-type]
    blank = settings.model_copy(update={"viber_bot_token": SecretStr("  ")})
    assert from_settings(blank, _Ctx()) is None  # type: ignore[arg-type]
    on = from_settings(
        settings.model_copy(update={"viber_bot_token": SecretStr(AUTH_TOKEN)}),
        _Ctx(),  # type: ignore[arg-type]
    )
    assert isinstance(on, ViberChannel) and on.inbox == "main"
    assert on.api == "https://chatapi.viber.com/pa" and on.webhook_url is None
    assert AUTH_TOKEN not in repr(on) and AUTH_TOKEN not in repr(on.config)
    with pytest.raises(ValueError):
        ViberChannel(_Ctx(), "a/b", ViberConfig(token=SecretStr("x")))  # type: ignore[arg-type]


async def test_setup_retries_until_viber_accepts_the_webhook_and_a_bad_token_stops_it() -> None:
    async with FakeViber() as fake:
        ctx = _Ctx()
        config = ViberConfig(token=SecretStr(AUTH_TOKEN), api_url=fake.base_url, public_url=PUBLIC)
        slept: list[float] = []
        app = web.Application()
        runner = web.AppRunner(app, handle_signals=False)

        async def no_wait(seconds: float) -> None:
            slept.append(seconds)
            # The hub's HTTP server is up now: Viber's check call reaches it.
            fake.route_to(f"http://{runner.addresses[0][0]}:{runner.addresses[0][1]}")

        channel = ViberChannel(ctx, "main", config, sleep=no_wait)  # type: ignore[arg-type]
        for route in channel.routes():
            app.router.add_route(route.method, route.path, route.handler)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        fake.route_to("http://127.0.0.1:9")  # nothing listens there yet
        try:
            await channel.start()
            assert channel.setup_task is not None
            await channel.setup_task
        finally:
            await channel.stop()
            await runner.cleanup()
        assert [r.answer["status"] for r in fake.calls("set_webhook")] == [1, 0]  # type: ignore[index]
        assert len(slept) == 1 and 0.5 <= slept[0] <= 1.0
        assert fake.checks[-1] == (PUBLIC + PATH, 200)
        assert fake.webhook == PUBLIC + PATH and ctx.published == []

        wrong = ViberConfig(
            token=SecretStr("not-the-token"), api_url=fake.base_url, public_url=PUBLIC
        )
        refused = ViberChannel(ctx, "main", wrong, sleep=no_wait)  # type: ignore[arg-type]
        try:
            await refused.start()
            assert refused.setup_task is not None
            await refused.setup_task
            msg = OutboundMessage(
                conversation_id=1, channel="viber", inbox="main", chat_id="u1", text="Hi"
            )
            status = await refused.send(msg)
        finally:
            await refused.stop()
        assert len(fake.calls("set_webhook")) == 2 and len(slept) == 1  # no retry, no webhook
        assert status.status == "failed" and status.error == "2 invalidAuthToken"
        assert not status.retryable and not status.unreachable


async def test_network_errors_are_transient_and_empty_messages_permanent() -> None:
    config = ViberConfig(token=SecretStr(AUTH_TOKEN), api_url="http://127.0.0.1:9")
    channel = ViberChannel(_Ctx(), "main", config)  # type: ignore[arg-type]
    msg = OutboundMessage(conversation_id=1, channel="viber", inbox="main", chat_id="u1", text="Hi")
    try:
        with pytest.raises(ViberUnavailable) as raised:
            await channel.send(msg)
        assert AUTH_TOKEN not in str(raised.value)
        with pytest.raises(PermanentSendError):
            await channel.send(msg.model_copy(update={"text": "  "}))
        with pytest.raises(PermanentSendError):
            await channel.send(msg.model_copy(update={"inbox": "vip"}))
    finally:
        await channel.stop()
    async with FakeViber() as fake:  # a wrong API base: the fake's 404, permanent
        config = ViberConfig(token=SecretStr(AUTH_TOKEN), api_url=fake.base_url + "/v2")
        channel = ViberChannel(_Ctx(), "main", config)  # type: ignore[arg-type]
        try:
            status = await channel.send(msg)
        finally:
            await channel.stop()
    assert (status.status, status.error, status.retryable) == ("failed", "HTTP 404", False)
    assert status.outbound_id == msg.id


# A running hub against the fake -----------------------------------------------------------


@pytest.fixture
async def viber() -> Any:
    async with FakeViber() as fake:
        yield fake


def viber_settings(settings: Any, fake: FakeViber, **overrides: Any) -> Any:
    values = {
        "viber_bot_token": SecretStr(AUTH_TOKEN),
        "viber_api_url": fake.base_url,
        "viber_bot_name": "Салон Оксамит",
        "viber_bot_avatar": "https://salon.example.com/avatar.jpg",
        "hub_public_url": None,
        **overrides,
    }
    return settings.model_copy(update=values)


@pytest.fixture
async def viber_hub(settings: Any, redis: Any, viber: FakeViber) -> Any:
    del redis  # flushed before the hub starts
    running = await start_hub(viber_settings(settings, viber))
    try:
        yield running
    finally:
        await running.stop()


async def call(running: RunningHub, event: dict[str, Any] | bytes, **kw: Any) -> tuple[int, bytes]:
    return await post_callback(running.base_url, PATH, event, **kw)


async def test_a_text_retried_three_times_is_stored_once(viber_hub: RunningHub) -> None:
    client = user_id()
    event = text_message(viber_user(client, "Олена Коваль"), "Добрий день! Є час на манікюр?")
    for _ in range(3):  # Viber retrying the same callback
        assert await call(viber_hub, event) == (200, b"")
    assert await call(viber_hub, text_message(viber_user(client), "Завтра?")) == (200, b"")

    await stored_in(viber_hub, "Завтра?")  # in order: the three copies came first
    (first,) = await rows(viber_hub, Message, Message.text == "Добрий день! Є час на манікюр?")
    assert first.provider_message_id == str(event["message_token"])
    assert (first.channel, first.inbox, first.direction) == ("viber", "main", "in")
    (card,) = await rows(viber_hub, Client)
    assert (card.name, card.language, card.source_channel) == ("Олена Коваль", "uk", "viber")
    (identity,) = await rows(viber_hub, ChannelIdentity)
    assert (identity.channel, identity.external_id) == ("viber", client)
    assert identity.display_name == "Олена Коваль"


async def test_forged_malformed_unknown_and_oversized_callbacks(
    viber_hub: RunningHub, viber: FakeViber
) -> None:
    sender = viber_user(user_id())
    forged = text_message(sender, "forged")
    assert (await call(viber_hub, forged, token="not-the-token"))[0] == 403
    assert (await call(viber_hub, forged, signature=None))[0] == 403
    assert (await call(viber_hub, forged, signature=""))[0] == 403
    assert (await call(viber_hub, forged, signature="00" * 32))[0] == 403
    # A signature of the body is not one of another body.
    body = b'{"event": "message"}'
    assert (await call(viber_hub, b'{"event": "messages"}', signature=sign(body)))[0] == 403

    assert (await call(viber_hub, b"{not json"))[0] == 400
    assert (await call(viber_hub, b"[1, 2]"))[0] == 400
    assert (await call(viber_hub, {"timestamp": 1}))[0] == 400
    no_sender = {k: v for k, v in text_message(sender, "x").items() if k != "sender"}
    assert (await call(viber_hub, no_sender))[0] == 400
    no_token = {k: v for k, v in text_message(sender, "x").items() if k != "message_token"}
    assert (await call(viber_hub, no_token))[0] == 400
    assert (await call(viber_hub, {"event": "unsubscribed"}))[0] == 400
    assert (await call(viber_hub, {"event": "delivered", "message_token": "abc"}))[0] == 400

    # Not ours to understand, but acknowledged, so Viber does not send it again and again.
    assert await call(viber_hub, {"event": "client_status", "timestamp": 1}) == (200, b"")
    assert await call(viber_hub, webhook_event()) == (200, b"")
    empty = message_event(sender, {"type": "text", "text": "  "})
    assert (await call(viber_hub, empty))[0] == 200

    async with aiohttp.ClientSession() as http:
        huge = b'{"event": "message", "pad": "' + b"a" * (1024 * 1024) + b'"}'
        headers = {"Content-Type": "application/json", "X-Viber-Content-Signature": sign(huge)}
        async with http.post(viber_hub.base_url + PATH, data=huge, headers=headers) as resp:
            assert resp.status == 413
        async with http.post(viber_hub.base_url + "/webhooks/viber/vip", data=b"{}") as resp:
            assert resp.status == 404

    assert (await call(viber_hub, text_message(sender, "genuine")))[0] == 200
    await stored_in(viber_hub, "genuine")
    assert [m.text for m in await rows(viber_hub, Message)] == ["genuine"]
    assert viber.calls("send_message") == []


async def test_pictures_contacts_and_other_kinds_are_attachments(viber_hub: RunningHub) -> None:
    # A client known by phone from another channel.
    await viber_hub.hub.bus.publish_inbound(
        InboundMessage(
            channel="sms",
            inbox="main",
            chat_id="+380671234567",
            sender_id="+380671234567",
            provider_message_id="SM1",
            text="Hello",
            contact=ContactHints(phone="+380671234567"),
        )
    )
    await stored_in(viber_hub, "Hello")
    sender = viber_user(user_id(), "Ira", language="ru")
    media = "https://dl-media.viber.com/5/share/2/long/vibermsg/photo.jpg?token=abc"
    shared = [
        picture_message(sender, media, caption="Ось такий дизайн"),
        contact_message(sender, "Мама", "+380 67 123 45 67"),
        message_event(sender, {"type": "sticker", "sticker_id": 46105, "media": media}),
        message_event(sender, {"type": "location", "location": {"lat": 50.45, "lon": 30.5234}}),
        message_event(
            sender,
            {
                "type": "video",
                "media": "https://dl-media.viber.com/v.mp4",
                "file_size": 1024,
                "duration": 12,
            },
        ),
        message_event(
            sender,
            {
                "type": "file",
                "media": "https://dl-media.viber.com/f",
                "file_name": "prices.pdf",
                "file_size": 5000,
            },
        ),
        message_event(sender, {"type": "url", "media": "https://instagram.com/p/xyz"}),
        message_event(sender, {"type": "picture", "media": "javascript:alert(1)"}),
    ]
    for event in shared:
        assert (await call(viber_hub, event))[0] == 200
    await stored_in(viber_hub, "https://instagram.com/p/xyz")
    inbound = await eventually(
        lambda: _at_least(rows(viber_hub, Message, Message.channel == "viber"), len(shared))
    )
    by_kind: dict[str, Message] = {}
    for message in inbound:
        if message.attachments:
            by_kind.setdefault(message.attachments[0]["kind"], message)
    picture = by_kind["image"]
    assert picture.text == "Ось такий дизайн"
    assert picture.attachments == [
        {
            "kind": "image",
            "url": media,
            "mime_type": "image/jpeg",
            "name": "IMG_20261105.jpg",
            "size": 245_760,
        }
    ]
    (card_attachment,) = by_kind["contact"].attachments
    assert (card_attachment["ref"], card_attachment["name"]) == ("+380671234567", "Мама")
    assert by_kind["sticker"].attachments[0]["ref"] == "46105"
    assert by_kind["location"].attachments[0]["ref"] == "50.450000,30.523400"
    assert by_kind["location"].attachments[0]["url"].startswith("https://www.openstreetmap.org/")
    assert by_kind["video"].attachments[0]["mime_type"] == "video/mp4"
    assert by_kind["file"].attachments[0]["name"] == "prices.pdf"
    assert by_kind["file"].attachments[0]["mime_type"] == "application/pdf"
    # A link that isn't http(s) never reaches the staff inbox.
    (unsafe,) = [
        m for m in inbound if m.attachments == [{"kind": "image", "mime_type": "image/jpeg"}]
    ]
    assert unsafe.provider_message_id == str(shared[-1]["message_token"])  # the javascript: one

    # Whose number a shared contact is, Viber doesn't say: it doesn't link this chat to the
    # card that has that number.
    (viber_identity,) = await rows(viber_hub, ChannelIdentity, ChannelIdentity.channel == "viber")
    (sms_card,) = await rows(viber_hub, Client, Client.phone == "+380671234567")
    assert viber_identity.client_id != sms_card.id
    (ira,) = await rows(viber_hub, Client, Client.id == viber_identity.client_id)
    assert (ira.name, ira.phone, ira.language) == ("Ira", None, "ru")


async def _at_least(probe: Any, n: int) -> list[Any] | None:
    found = await probe
    return found if len(found) >= n else None


async def test_the_webhook_is_set_on_start_when_the_hub_has_a_public_url(
    settings: Any, redis: Any, viber: FakeViber
) -> None:
    del redis
    running = await start_hub(viber_settings(settings, viber, hub_public_url=PUBLIC + "/"))
    try:
        viber.route_to(running.base_url)  # where the public name leads
        channel = running.hub.channels["viber"]
        assert isinstance(channel, ViberChannel) and channel.setup_task is not None
        await channel.setup_task
        (request,) = viber.calls("set_webhook")
        assert request.token == AUTH_TOKEN
        assert request.body == {"url": PUBLIC + PATH, "event_types": EVENT_TYPES, "send_name": True}
        assert request.answer == {
            "status": 0,
            "status_message": "ok",
            "event_types": EVENT_TYPES,
            "chat_hostname": "SN-CHAT-05_",
        }
        # Viber called the webhook with a signed "webhook" event, and the hub answered 200.
        assert viber.checks == [(PUBLIC + PATH, 200)]
        assert channel.bot == "Salon (salon-test)"
        assert await rows(running, Message) == []
    finally:
        await running.stop()


async def test_no_webhook_without_a_public_url(viber_hub: RunningHub, viber: FakeViber) -> None:
    channel = viber_hub.hub.channels["viber"]
    assert isinstance(channel, ViberChannel) and channel.setup_task is not None
    await channel.setup_task
    assert [r.method for r in viber.requests] == ["get_account_info"]
    assert viber.checks == []


async def test_replies_go_out_with_a_keyboard_and_receipts_follow(
    viber_hub: RunningHub, viber: FakeViber
) -> None:
    client = user_id()
    assert (await call(viber_hub, text_message(viber_user(client), "Можна записатися?")))[0] == 200
    conversation_id = (await stored_in(viber_hub, "Можна записатися?")).conversation_id

    first = await reply(
        viber_hub,
        conversation_id,
        "Так! Завтра о 15:00 у майстрині Олени. Записати вас?",
        quick_replies=[QuickReply(text="Так"), QuickReply(text="Інший час")],
    )
    sent = await settled(viber_hub, first, "sent")
    (request,) = viber.calls("send_message")
    assert request.token == AUTH_TOKEN
    assert request.body == {
        "receiver": client,
        "sender": {"name": "Салон Оксамит", "avatar": "https://salon.example.com/avatar.jpg"},
        "type": "text",
        "text": "Так! Завтра о 15:00 у майстрині Олени. Записати вас?",
        "keyboard": {
            "Type": "keyboard",
            "DefaultHeight": False,
            "Buttons": [
                {
                    "Columns": 3,
                    "Rows": 1,
                    "ActionType": "reply",
                    "ActionBody": label,
                    "Text": label,
                    "TextSize": "regular",
                }
                for label in ("Так", "Інший час")
            ],
        },
        "min_api_version": 1,
    }
    token = viber.sent[0]["message_token"]
    assert sent.provider_message_id == str(token) and sent.attempts == 1

    # A tap on a button is the client's message with the label as its text.
    await call(viber_hub, text_message(viber_user(client), "Так"))
    await stored_in(viber_hub, "Так")

    second = await reply(viber_hub, conversation_id, "Записали! До зустрічі.")
    await settled(viber_hub, second, "sent")
    assert "keyboard" not in viber.sent[1] and "min_api_version" not in viber.sent[1]
    second_token = viber.sent[1]["message_token"]

    assert await call(viber_hub, receipt("delivered", token, client)) == (200, b"")
    await settled(viber_hub, first, "delivered")
    assert (await call(viber_hub, receipt("seen", token, client)))[0] == 200
    await settled(viber_hub, first, "read")
    # A late "delivered" after "seen" changes nothing; a token we never sent is ignored.
    assert (await call(viber_hub, receipt("delivered", token, client)))[0] == 200
    assert (await call(viber_hub, receipt("seen", 1234567890, client)))[0] == 200
    failed = receipt("failed", second_token, client, "Failed to deliver the message")
    assert (await call(viber_hub, failed))[0] == 200
    undelivered = await settled(viber_hub, second, "failed")
    assert undelivered.error == "Failed to deliver the message"
    (read,) = await rows(viber_hub, Message, Message.public_id == first)
    assert read.status == "read"
    (identity,) = await rows(viber_hub, ChannelIdentity)
    assert identity.unreachable_at is None


async def test_unsubscribed_users_are_unreachable(viber_hub: RunningHub, viber: FakeViber) -> None:
    leaving, gone = user_id(), user_id()
    await call(viber_hub, text_message(viber_user(leaving, "Ira"), "Hi"))
    await call(viber_hub, text_message(viber_user(gone, "Oksana"), "Hello"))
    await stored_in(viber_hub, "Hi")
    hello = await stored_in(viber_hub, "Hello")

    assert await call(viber_hub, unsubscribed(leaving)) == (200, b"")
    (identity,) = await rows(viber_hub, ChannelIdentity, ChannelIdentity.external_id == leaving)
    assert identity.unreachable_at is not None and identity.unreachable_reason == "unsubscribed"
    # Writing again (Viber subscribes them back) clears it.
    assert (await call(viber_hub, subscribed(viber_user(leaving))))[0] == 200
    await call(viber_hub, text_message(viber_user(leaving), "I'm back"))
    await stored_in(viber_hub, "I'm back")
    (identity,) = await rows(viber_hub, ChannelIdentity, ChannelIdentity.external_id == leaving)
    assert identity.unreachable_at is None

    # Unsubscribed at Viber without us hearing of it: the send fails for good, once.
    viber.not_subscribed.add(gone)
    public_id = await reply(viber_hub, hello.conversation_id, "A reminder for tomorrow")
    refused = await settled(viber_hub, public_id, "failed")
    assert refused.error == "6 receiverNotSubscribed: Not subscribed" and refused.attempts == 1
    assert len(viber.calls("send_message")) == 1 and viber.sent == []
    (identity,) = await rows(viber_hub, ChannelIdentity, ChannelIdentity.external_id == gone)
    assert identity.unreachable_at is not None
    assert identity.unreachable_reason == "6 receiverNotSubscribed: Not subscribed"


async def test_rate_limits_server_errors_long_texts_and_a_token_that_never_reaches_the_logs(
    viber_hub: RunningHub, viber: FakeViber, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = user_id()
    await call(viber_hub, text_message(viber_user(client), "Hello"))
    conversation_id = (await stored_in(viber_hub, "Hello")).conversation_id

    # Too many requests, then fine: sent once, after the dispatcher's backoff.
    viber.fail(status=12)
    first = await reply(viber_hub, conversation_id, "Hi! How can we help?")
    sent = await settled(viber_hub, first, "sent")
    answers = [r.answer["status"] for r in viber.calls("send_message")]  # type: ignore[index]
    assert answers == [12, 0] and len(viber.sent) == 1 and sent.attempts == 2

    # Viber down for longer than the dispatcher's patience.
    viber.fail(http=500, times=10)
    second = await reply(viber_hub, conversation_id, "Are you there?")
    gave_up = await settled(viber_hub, second, "failed")
    assert gave_up.error.startswith("gave up after 5 attempts") and "HTTP 500" in gave_up.error
    viber.failures.clear()

    # A refusal of another kind: failed at once with Viber's own words.
    viber.fail(status=3, message="Invalid receiver")
    third = await reply(viber_hub, conversation_id, "Hm")
    refused = await settled(viber_hub, third, "failed")
    assert refused.error == "3 badData: Invalid receiver" and refused.attempts == 1
    (identity,) = await rows(viber_hub, ChannelIdentity)
    assert identity.unreachable_at is None

    # Over 7000 characters: two messages, the keyboard on the last; a rate limit between
    # them does not send the first part twice.
    sent_before = len(viber.sent)
    long_text = ("Прайс: манікюр 500 грн, педикюр 700 грн. " * 200).strip()
    calls_before = len(viber.calls("send_message"))
    viber.fail(status=12, after=1)
    fourth = await reply(
        viber_hub, conversation_id, long_text, quick_replies=[QuickReply(text="Записатися")]
    )
    long_sent = await settled(viber_hub, fourth, "sent")
    parts = viber.sent[sent_before:]
    assert len(parts) == 2 and all(len(p["text"]) <= 7000 for p in parts)
    assert " ".join(p["text"] for p in parts).split() == long_text.split()
    assert "keyboard" not in parts[0] and parts[1]["keyboard"]["Buttons"][0]["ActionBody"] == (
        "Записатися"
    )
    assert long_sent.provider_message_id == str(parts[1]["message_token"])
    statuses = [r.answer["status"] for r in viber.calls("send_message")[calls_before:]]  # type: ignore[index]
    assert statuses == [0, 12, 0] and long_sent.attempts == 2

    assert "Viber refused a message" in caplog.text  # the logs were captured at all
    assert AUTH_TOKEN not in caplog.text
    assert all(AUTH_TOKEN not in (m.error or "") for m in await rows(viber_hub, Message))


async def test_an_opened_chat_gets_a_welcome_and_the_deep_link_becomes_the_source(
    viber_hub: RunningHub, viber: FakeViber
) -> None:
    client = user_id()
    opened = conversation_started(viber_user(client, "Kate", language="en"), context="insta_ad")
    status, body = await call(viber_hub, opened)
    assert status == 200
    assert json.loads(body) == {
        "sender": {"name": "Салон Оксамит", "avatar": "https://salon.example.com/avatar.jpg"},
        "type": "text",
        "text": load_json("channels/greetings.json")["en"],
        "tracking_data": "src:insta_ad",
    }
    # In a language the hub doesn't speak: the salon's default (uk); a bad context is dropped.
    other = conversation_started(viber_user(user_id(), language="de"), context="a b<script>")
    assert json.loads((await call(viber_hub, other))[1]) == {
        "sender": {"name": "Салон Оксамит", "avatar": "https://salon.example.com/avatar.jpg"},
        "type": "text",
        "text": load_json("channels/greetings.json")["uk"],
    }
    # A subscriber knows the salon already: no welcome.
    assert await call(viber_hub, conversation_started(viber_user(client), subscribed=True)) == (
        200,
        b"",
    )
    assert (await call(viber_hub, subscribed(viber_user(client))))[0] == 200

    # Their reply carries the welcome's tracking_data back: the card knows the ad.
    first = text_message(
        viber_user(client, "Kate", language="en"), "Hi!", tracking_data="src:insta_ad"
    )
    assert (await call(viber_hub, first))[0] == 200
    await stored_in(viber_hub, "Hi!")
    (card,) = await rows(viber_hub, Client)
    assert (card.name, card.source_channel, card.source_ref) == ("Kate", "viber", "insta_ad")
    assert [m.text for m in await rows(viber_hub, Message)] == ["Hi!"]  # nothing else stored
    assert viber.calls("send_message") == []
