"""The Telegram channel against a fake Bot API server, driven by the real aiogram client.

Updates are written from the shapes in the Bot API reference (Update, Message, PhotoSize,
Document, Voice, Location, Contact, CallbackQuery, ChatMemberUpdated); the hub runs for real
(Redis, the database, the router and the dispatcher), and the tests look at rows in the
database and at the requests the fake received.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pytest
from pydantic import SecretStr

from channels.layout import button_rows
from channels.telegram import (
    TelegramChannel,
    TelegramUnavailable,
    from_settings,
    parse_tokens,
    redact,
    webhook_secret,
)
from channels.telegram_limits import SendLimits
from channels.telegram_updates import callback_data, language_of, split_text
from crm_store.db import transaction
from crm_store.models import ChannelIdentity, Client, Conversation, Message
from hub.config import Settings
from hub.messages import Attachment, Author, DeliveryState, OutboundMessage, QuickReply
from hub.pipeline.replies import send_reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support import FakeTime, RunningHub, client_session, eventually, login, rows, start_hub
from tests.test_webchat import add_owner

TOKEN = "7123456789:AAHk3xZpQv9mN2bRt5Yw8cLd4Fg6Hj1KsEo"
VIP_TOKEN = "7987654321:AAFq2wErTy5uIo8pAsDf3gHj6kLz9xCvBnM"
PUBLIC = "http://hub.example.test"
HOOK = "/webhooks/telegram/main"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DATE = 1767261600  # 2026-01-01 10:00 UTC


# Payloads, from the Bot API reference's shapes ----------------------------------------------


def user(uid: int = 111111111, **fields: Any) -> dict[str, Any]:
    base = {
        "id": uid,
        "is_bot": False,
        "first_name": "Olena",
        "last_name": "Koval",
        "username": "olena_k",
        "language_code": "uk",
    }
    return {**base, **fields}


def private_chat(sender: dict[str, Any]) -> dict[str, Any]:
    chat = {"id": sender["id"], "first_name": sender["first_name"], "type": "private"}
    if sender.get("username"):
        chat["username"] = sender["username"]
    return chat


def message_update(
    update_id: int, message_id: int, sender: dict[str, Any] | None = None, **content: Any
) -> dict[str, Any]:
    sender = sender or user()
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "from": sender,
            "chat": private_chat(sender),
            "date": DATE,
            **content,
        },
    }


PHOTO_SIZES = [
    {
        "file_id": "AgACAgIAAxkBAAMFaVs_s",
        "file_unique_id": "AQADs1",
        "file_size": 1_415,
        "width": 90,
        "height": 67,
    },
    {
        "file_id": "AgACAgIAAxkBAAMFaVs_m",
        "file_unique_id": "AQADm1",
        "file_size": 21_067,
        "width": 320,
        "height": 240,
    },
    {
        "file_id": "AgACAgIAAxkBAAMFaVs_x",
        "file_unique_id": "AQADx1",
        "file_size": 94_810,
        "width": 1280,
        "height": 960,
    },
]


# Running a hub with Telegram ---------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(max_poll_wait=0.2) as server:
        server.add_bot(TOKEN, "salon_bot")
        server.add_bot(VIP_TOKEN, "salon_vip_bot")
        yield server


@pytest.fixture(autouse=True)
def no_tokens_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with the channel's, aiogram's and aiohttp's debug logs on; no line (or
    traceback) of any phase may hold a bot token."""
    caplog.set_level(logging.INFO)
    for name in ("channels", "hub", "aiogram", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    formatter = logging.Formatter()
    logged = "\n".join(
        formatter.format(record)
        for phase in ("setup", "call", "teardown")
        for record in caplog.get_records(phase)  # type: ignore[arg-type]
    )
    for secret in (TOKEN, VIP_TOKEN, TOKEN.split(":")[1], VIP_TOKEN.split(":")[1]):
        assert secret not in logged


def telegram_settings(settings: Settings, fake: FakeTelegram, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_tokens": SecretStr(TOKEN),
        "telegram_api_url": fake.base_url,
        "hub_public_url": PUBLIC,
    }
    values.update(extra)
    return settings.model_copy(update=values)


@asynccontextmanager
async def telegram_hub(
    settings: Settings, fake: FakeTelegram, **extra: Any
) -> AsyncIterator[RunningHub]:
    running = await start_hub(telegram_settings(settings, fake, **extra))
    try:
        yield running
    finally:
        await running.stop()


def channel_of(running: RunningHub) -> TelegramChannel:
    channel = running.hub.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    return channel


@dataclass
class Hook:
    """Posts updates to the hub's webhook as Telegram would (and tells the fake about them, so
    the bot's replies in a chat get later message ids, as in Telegram)."""

    running: RunningHub
    fake: FakeTelegram
    secret: str
    token: str = TOKEN
    path: str = HOOK

    async def post(
        self,
        body: Any,
        *,
        secret: str | bool | None = True,
        raw: bytes | None = None,
        path: str | None = None,
    ) -> int:
        if isinstance(body, dict) and "update_id" in body:
            self.fake.saw(self.token, body)
        headers = {"Content-Type": "application/json"}
        if secret is True:
            headers[SECRET_HEADER] = self.secret
        elif isinstance(secret, str):
            headers[SECRET_HEADER] = secret
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        url = self.running.base_url + (path or self.path)
        async with client_session() as http, http.post(url, headers=headers, **kwargs) as answer:
            return answer.status


async def webhook_ready(running: RunningHub, fake: FakeTelegram, token: str = TOKEN) -> Hook:
    """Once the channel has called setWebhook: a Hook with the secret it registered."""
    (call,) = await eventually(lambda: _async(fake.calls_of("setWebhook", ok=True, token=token)))
    return Hook(running, fake, str(call.params["secret_token"]), token)


async def inbound(running: RunningHub, provider_id: str) -> Message | None:
    found = await rows(running, Message, Message.provider_message_id == provider_id)
    return found[0] if found else None


async def _async(value: Any) -> Any:
    return value


async def staff_session(running: RunningHub) -> Any:
    email, password = await add_owner(running)
    http = client_session()
    assert await login(http, running.base_url, email, password) == 200
    return http


# Inbound over the webhook ------------------------------------------------------------------


async def test_webhook_stores_each_update_once_and_refuses_bad_input(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    async with telegram_hub(settings, fake) as running:
        hook = await webhook_ready(running, fake)
        (registered,) = fake.calls_of("setWebhook", ok=True)
        assert registered.params["url"] == PUBLIC + HOOK
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", hook.secret)
        assert fake.bots[TOKEN].allowed_updates == ["message", "callback_query", "my_chat_member"]
        assert fake.calls_of("getMe", ok=True)

        first = message_update(10000, 1365, text="Добрий день! Чи є час на манікюр у п'ятницю?")
        for _ in range(3):  # Telegram retries a webhook it thinks failed
            assert await hook.post(first) == 200

        forged = message_update(10001, 1366, text="forged")
        assert await hook.post(forged, secret="not-the-secret") == 403
        assert await hook.post(forged, secret=None) == 403
        assert await hook.post(forged, path="/webhooks/telegram/nope") == 404
        assert await hook.post(None, raw=b"{not json") == 400
        assert await hook.post([1, 2, 3]) == 400
        assert await hook.post({"update_id": "soon"}) == 400
        no_chat = {"update_id": 10002, "message": {"message_id": 1367, "date": DATE}}
        assert await hook.post(no_chat) == 400
        big = b'{"update_id": 10003, "pad": "' + b"x" * (1024 * 1024) + b'"}'
        assert await hook.post(None, raw=big) == 413

        # Update types the channel does not handle are acknowledged (or Telegram retries them
        # forever) and dropped: a reaction, an edit, a channel post, a service message.
        reaction = {
            "update_id": 10004,
            "message_reaction": {
                "chat": private_chat(user()),
                "message_id": 1365,
                "user": user(),
                "date": DATE,
                "old_reaction": [],
                "new_reaction": [{"type": "emoji", "emoji": "👍"}],
            },
        }
        assert await hook.post(reaction) == 200
        edited = message_update(10005, 1365, text="edited", edit_date=DATE + 60)
        edited["edited_message"] = edited.pop("message")
        assert await hook.post(edited) == 200
        joined = message_update(10006, 1368, new_chat_members=[user(5)])
        assert await hook.post(joined) == 200

        # A body sent in chunks (no Content-Length) is read whole.
        english = user(language_code="en-GB")
        body = json.dumps(message_update(10007, 1369, english, text="Hi")).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 50):
                yield body[start : start + 50]

        async with client_session() as http:
            headers = {SECRET_HEADER: hook.secret, "Content-Type": "application/json"}
            async with http.post(running.base_url + HOOK, data=chunks(), headers=headers) as sent:
                assert sent.status == 200
        # A later message of the same chat: once it is stored, everything before it was seen.
        await eventually(lambda: inbound(running, "111111111:1369"))
        messages = await rows(running, Message)
        assert [(m.provider_message_id, m.text) for m in messages] == [
            ("111111111:1365", "Добрий день! Чи є час на манікюр у п'ятницю?"),
            ("111111111:1369", "Hi"),
        ]
        (client,) = await rows(running, Client)
        assert client.name == "Olena Koval" and client.language == "uk"
        assert client.source_channel == "telegram"
        (identity,) = await rows(running, ChannelIdentity)
        assert (identity.inbox, identity.external_id, identity.username) == (
            "main",
            "111111111",
            "olena_k",
        )
        (conversation,) = await rows(running, Conversation)
        assert conversation.chat_id == "111111111"


async def test_attachments_are_stored_and_downloadable(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    photo_bytes = b"\xff\xd8\xff\xe0 a jpeg of nails"
    fake.add_file(PHOTO_SIZES[-1]["file_id"], photo_bytes, "photos/file_7.jpg")
    fake.add_file("BQACAgIAAxkBAAMGaVs_pdf", b"%PDF-1.7 price list", "documents/file_8.pdf")
    fake.add_file("AwACAgIAAxkBAAMHaVs_oga", b"OggS voice", "voice/file_9.oga")
    fake.add_file("BQACAgIAAxkBAAMIaVs_big", b"", "documents/big.mov", size=25 * 1024 * 1024)
    fake.add_file("BQACAgIAAxkBAAMJaVs_gone", b"x", "documents/gone.txt", servable=False)
    async with telegram_hub(settings, fake) as running:
        hook = await webhook_ready(running, fake)
        updates = [
            message_update(20000, 10, photo=PHOTO_SIZES, caption="Хочу такий дизайн"),
            message_update(
                20001,
                11,
                document={
                    "file_name": "price.pdf",
                    "mime_type": "application/pdf",
                    "file_id": "BQACAgIAAxkBAAMGaVs_pdf",
                    "file_unique_id": "AgADpdf",
                    "file_size": 19,
                },
            ),
            message_update(
                20002,
                12,
                voice={
                    "duration": 3,
                    "mime_type": "audio/ogg",
                    "file_id": "AwACAgIAAxkBAAMHaVs_oga",
                    "file_unique_id": "AgADoga",
                    "file_size": 10,
                },
            ),
            message_update(20003, 13, location={"latitude": 50.450100, "longitude": 30.523400}),
            message_update(
                20004,
                14,
                sticker={
                    "file_id": "CAACAgIAAxkBAAMKaVs_stk",
                    "file_unique_id": "AgADstk",
                    "type": "regular",
                    "width": 512,
                    "height": 512,
                    "is_animated": False,
                    "is_video": False,
                    "emoji": "💅",
                },
            ),
        ]
        for update in updates:
            assert await hook.post(update) == 200
        await eventually(lambda: inbound(running, "111111111:14"))
        by_id = {m.provider_message_id: m for m in await rows(running, Message)}
        photo = by_id["111111111:10"]
        assert photo.text == "Хочу такий дизайн"
        assert photo.attachments == [
            {
                "kind": "image",
                "ref": "AgACAgIAAxkBAAMFaVs_x",
                "mime_type": "image/jpeg",
                "size": 94_810,
            }
        ]
        assert by_id["111111111:11"].attachments == [
            {
                "kind": "file",
                "ref": "BQACAgIAAxkBAAMGaVs_pdf",
                "mime_type": "application/pdf",
                "name": "price.pdf",
                "size": 19,
            }
        ]
        assert by_id["111111111:12"].attachments == [
            {
                "kind": "voice",
                "ref": "AwACAgIAAxkBAAMHaVs_oga",
                "mime_type": "audio/ogg",
                "size": 10,
            }
        ]
        (place,) = by_id["111111111:13"].attachments
        assert place["kind"] == "location" and place["ref"] == "50.450100,30.523400"
        assert "mlat=50.450100" in place["url"]
        (sticker,) = by_id["111111111:14"].attachments
        assert sticker["kind"] == "sticker" and sticker["mime_type"] == "image/webp"

        base = running.base_url + "/api/attachments/telegram/main/"
        http = await staff_session(running)
        try:
            async with http.get(base + "AgACAgIAAxkBAAMFaVs_x") as response:
                assert response.status == 200
                assert await response.read() == photo_bytes
                assert response.content_type == "image/jpeg"
            async with http.get(base + "BQACAgIAAxkBAAMGaVs_pdf") as response:
                assert response.status == 200
                assert await response.read() == b"%PDF-1.7 price list"
                assert "file_8.pdf" in response.headers["Content-Disposition"]
            async with http.get(base + "AwACAgIAAxkBAAMHaVs_oga") as response:
                assert response.status == 200 and await response.read() == b"OggS voice"
                assert response.content_type == "audio/ogg"
            for missing in ("AgACAgIAAxkBAAMunknown", "BQACAgIAAxkBAAMIaVs_big", "a.b"):
                async with http.get(base + missing) as response:
                    assert response.status == 404, missing
            async with http.get(base + "BQACAgIAAxkBAAMJaVs_gone") as response:
                assert response.status == 404
                assert TOKEN not in await response.text()
            other = running.base_url + "/api/attachments/telegram/nope/AgACAgIAAxkBAAMFaVs_x"
            async with http.get(other) as response:
                assert response.status == 404
        finally:
            await http.close()
        assert fake.downloads.count("photos/file_7.jpg") == 1


async def test_contact_share_links_the_card_and_start_payload_is_the_source(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    async with telegram_hub(settings, fake) as running:
        async with transaction(running.hub.sessions) as session:
            card = Client(name="Iryna Shevchenko", phone="+380671234567")
            session.add(card)
            await session.flush()
            card_id = card.id
        hook = await webhook_ready(running, fake)

        iryna = user(222222222, first_name="Ira", last_name=None, username=None)
        own = {"phone_number": "380671234567", "first_name": "Ira", "user_id": 222222222}
        assert await hook.post(message_update(30000, 1, iryna, contact=own)) == 200

        # Someone else's card, forwarded: an attachment, not the sender's phone.
        taras = user(333333333, first_name="Taras", last_name=None, username="taras")
        card_of_friend = {
            "phone_number": "+380501112233",
            "first_name": "Oksana",
            "last_name": "Bondar",
            "user_id": 999999999,
        }
        shared = message_update(30001, 1, taras, contact=card_of_friend)
        assert await hook.post(shared) == 200

        ad = user(444444444, first_name="Marta", last_name=None, username="marta")
        started = message_update(30002, 1, ad, text="/start instagram_ad")
        assert await hook.post(started) == 200
        odd = user(555555555, first_name="Nazar", last_name=None, username=None)
        assert await hook.post(message_update(30003, 1, odd, text="/start <script>")) == 200

        for chat in ("222222222", "333333333", "444444444", "555555555"):
            await eventually(lambda chat=chat: inbound(running, f"{chat}:1"))

        (ira,) = await rows(running, ChannelIdentity, ChannelIdentity.external_id == "222222222")
        assert ira.client_id == card_id
        (linked,) = await rows(running, Client, Client.id == card_id)
        assert linked.name == "Iryna Shevchenko"
        shared_msg = await inbound(running, "333333333:1")
        assert shared_msg is not None
        assert shared_msg.attachments == [
            {"kind": "contact", "ref": "+380501112233", "name": "Oksana Bondar"}
        ]
        (taras_id,) = await rows(
            running, ChannelIdentity, ChannelIdentity.external_id == "333333333"
        )
        (taras_card,) = await rows(running, Client, Client.id == taras_id.client_id)
        assert taras_card.phone is None and taras_card.id != card_id

        start_msg = await inbound(running, "444444444:1")
        assert start_msg is not None and start_msg.text == "/start"
        (marta,) = await rows(running, Client, Client.name == "Marta")
        assert marta.source_ref == "instagram_ad" and marta.source_channel == "telegram"
        (nazar,) = await rows(running, Client, Client.name == "Nazar")
        assert nazar.source_ref is None


# Outbound ---------------------------------------------------------------------------------


async def test_staff_reply_quick_replies_and_a_button_press(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    async with telegram_hub(settings, fake) as running:
        hook = await webhook_ready(running, fake)
        hello = message_update(40000, 50, text="Можна записатися на стрижку?")
        assert await hook.post(hello) == 200
        await eventually(lambda: inbound(running, "111111111:50"))
        (conversation,) = await rows(running, Conversation)

        http = await staff_session(running)
        try:
            url = f"{running.base_url}/api/conversations/{conversation.id}/messages"
            async with http.post(url, json={"text": "Так, завтра о 10:00 вільно."}) as response:
                assert response.status == 201
                public_id = (await response.json())["id"]
        finally:
            await http.close()
        (sent,) = await eventually(lambda: _async(fake.calls_of("sendMessage", ok=True)))
        assert sent.params["chat_id"] == "111111111"
        assert sent.params["text"] == "Так, завтра о 10:00 вільно."

        async def status_of(public: str) -> Message | None:
            found = await rows(running, Message, Message.public_id == public)
            return found[0] if found and found[0].status not in ("queued", "sending") else None

        stored = await eventually(lambda: status_of(public_id))
        # Telegram numbers a chat's messages in one sequence: the reply follows the client's 50.
        assert stored.status == "sent" and stored.provider_message_id == "111111111:51"

        labels = ["Завтра 10:00", "Завтра 12:30", "Інший час, будь ласка, підберіть мені"]
        queued = await send_reply(
            running.hub.sessions,
            running.hub.bus,
            conversation_id=conversation.id,  # type: ignore[arg-type]
            text="Оберіть час:",
            author=Author.staff,
            quick_replies=[QuickReply(text=label) for label in labels],
        )
        await eventually(lambda: _async(len(fake.calls_of("sendMessage", ok=True)) == 2))
        keyboard_call = fake.calls_of("sendMessage", ok=True)[1]
        markup = keyboard_call.params["reply_markup"]
        assert '"inline_keyboard"' in markup
        rows_ = json.loads(markup)["inline_keyboard"]
        assert [[b["text"] for b in row] for row in rows_] == [labels[:2], labels[2:]]
        assert all(len(b["callback_data"].encode()) <= 64 for row in rows_ for b in row)
        with_buttons = await eventually(lambda: status_of(queued.message.public_id))
        assert with_buttons.provider_message_id == "111111111:52"

        # The client presses the second button of that message.
        pressed = rows_[0][1]
        callback = {
            "update_id": 40001,
            "callback_query": {
                "id": "4382bfdwdsb323b2d9",
                "from": user(),
                "message": {
                    "message_id": 52,
                    "from": fake.bots[TOKEN].user(),
                    "chat": private_chat(user()),
                    "date": DATE + 5,
                    "text": "Оберіть час:",
                    "reply_markup": {"inline_keyboard": rows_},
                },
                "chat_instance": "-8613571262436946",
                "data": pressed["callback_data"],
            },
        }
        assert await hook.post(callback) == 200
        assert await hook.post(callback) == 200  # retried: stored once
        press = await eventually(lambda: inbound(running, "cb:4382bfdwdsb323b2d9"))
        assert press.text == "Завтра 12:30" and press.reply_to_id == "111111111:52"
        answers = fake.calls_of("answerCallbackQuery")
        assert answers[0].params["callback_query_id"] == "4382bfdwdsb323b2d9"
        assert answers[0].status == 200
        assert len(await rows(running, Message, Message.direction == "in")) == 2


async def test_flood_wait_blocked_user_and_refusals(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    clock = FakeTime()
    async with telegram_hub(settings, fake) as running:
        channel = channel_of(running)
        channel.clock, channel.sleep = clock.clock, clock.sleep
        hook = await webhook_ready(running, fake)
        assert await hook.post(message_update(50000, 1, text="Привіт")) == 200
        other = user(222222222, first_name="Ira", last_name=None, username=None)
        assert await hook.post(message_update(50001, 1, other, text="Hi")) == 200
        await eventually(lambda: inbound(running, "222222222:1"))
        await eventually(lambda: inbound(running, "111111111:1"))
        (conversation,) = await rows(running, Conversation, Conversation.chat_id == "111111111")

        async def reply(text: str) -> str:
            queued = await send_reply(
                running.hub.sessions,
                running.hub.bus,
                conversation_id=conversation.id,  # type: ignore[arg-type]
                text=text,
                author=Author.bot,
            )
            return queued.message.public_id

        async def settled(public: str) -> Message | None:
            found = await rows(running, Message, Message.public_id == public)
            return found[0] if found and found[0].status not in ("queued", "sending") else None

        # 429: the channel waits retry_after (on its own clock) and sends once.
        fake.fail("sendMessage", 429, retry_after=7)
        first = await reply("Запис підтверджено")
        stored = await eventually(lambda: settled(first))
        assert stored.status == "sent"
        assert 7 in clock.sleeps
        outcomes = [c.status for c in fake.calls_of("sendMessage")]
        assert outcomes.count(429) == 1
        texts = [c.params["text"] for c in fake.calls_of("sendMessage", ok=True)]
        assert texts.count("Запис підтверджено") == 1

        # The client blocked the bot: failed for good, and the identity is unreachable.
        fake.blocked.add(111111111)
        blocked = await reply("Нагадування про візит")
        stored = await eventually(lambda: settled(blocked))
        assert stored.status == "failed"
        assert stored.error == "Forbidden: bot was blocked by the user"
        (identity,) = await rows(
            running, ChannelIdentity, ChannelIdentity.external_id == "111111111"
        )
        assert identity.unreachable_at is not None
        assert identity.unreachable_reason == "Forbidden: bot was blocked by the user"

        # my_chat_member: another client blocks the bot in their private chat.
        kicked = {
            "update_id": 50002,
            "my_chat_member": {
                "chat": private_chat(other),
                "from": other,
                "date": DATE,
                "old_chat_member": {"status": "member", "user": fake.bots[TOKEN].user()},
                "new_chat_member": {
                    "status": "kicked",
                    "user": fake.bots[TOKEN].user(),
                    "until_date": 0,
                },
            },
        }
        assert await hook.post(kicked) == 200
        (ira,) = await rows(running, ChannelIdentity, ChannelIdentity.external_id == "222222222")
        assert ira.unreachable_at is not None and ira.unreachable_reason == "blocked the bot"

        # Chat not found: failed, not retried, not "unreachable".
        fake.missing_chats.add(404404404)
        gone = await channel.send(_out("404404404", "hello"))
        assert gone.status == DeliveryState.failed and gone.error == "Bad Request: chat not found"
        assert not gone.retryable and not gone.unreachable

        # 5xx: transient, raised for the dispatcher to retry; persistent 429: raised too.
        fake.fail("sendMessage", 500)
        with pytest.raises(TelegramUnavailable):
            await channel.send(_out("333", "hello"))
        fake.fail("sendMessage", 429, retry_after=1, times=4)
        with pytest.raises(TelegramUnavailable):
            await channel.send(_out("333", "hello"))
        assert len(fake.calls_of("sendMessage", token=TOKEN)) >= 5


def _out(chat: str, text: str, **fields: Any) -> OutboundMessage:
    return OutboundMessage(
        conversation_id=1, channel="telegram", inbox="main", chat_id=chat, text=text, **fields
    )


async def test_limits_spacing_long_texts_and_attachments(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    clock = FakeTime()
    fake.clock = clock.clock
    async with telegram_hub(settings, fake) as running:
        channel = channel_of(running)
        channel.clock, channel.sleep = clock.clock, clock.sleep

        # Five messages to one chat, one after another as the dispatcher sends: a second apart.
        for i in range(5):
            assert (await channel.send(_out("111", f"n{i}"))).status == DeliveryState.sent
        stamps = [c.at for c in fake.calls_of("sendMessage", ok=True)]
        assert len(stamps) == 5
        assert all(b - a >= 1.0 - 1e-9 for a, b in pairwise(stamps))

        # A group (only staff write there): never more than 20 in any minute.
        before = len(fake.calls)
        for i in range(22):
            await channel.send(_out("-1001234567890", f"g{i}", author=Author.staff))
        at = [c.at for c in fake.calls[before:] if c.method == "sendMessage"]
        assert len(at) == 22
        assert all(sum(1 for t in at if s <= t < s + 60 - 1e-6) <= 20 for s in at)

        # Forty chats: about 30 a second for the bot.
        before = len(fake.calls)
        for i in range(40):
            await channel.send(_out(str(1000 + i), "hi"))
        at = [c.at for c in fake.calls[before:] if c.method == "sendMessage"]
        assert len(at) == 40 and at[-1] - at[0] >= 39 / 30 - 1e-6
        assert all(sum(1 for t in at if s <= t < s + 1 - 1e-6) <= 30 for s in at)

        # A long text: split under 4096, the keyboard on the last part only.
        paragraph = "Ми працюємо щодня з 9:00 до 21:00. " * 60
        text = "\n\n".join([paragraph.strip()] * 4)
        before = len(fake.calls)
        status = await channel.send(_out("777", text, quick_replies=[QuickReply(text="Так")]))
        parts = [c for c in fake.calls[before:] if c.method == "sendMessage"]
        assert len(parts) >= 3 and all(len(p.params["text"]) <= 4096 for p in parts)
        assert "reply_markup" in parts[-1].params
        assert all("reply_markup" not in p.params for p in parts[:-1])
        assert " ".join(p.params["text"] for p in parts).split() == text.split()
        assert status.provider_message_id == "777:1"

        # Attachments with a URL: a photo and a document after the text.
        before = len(fake.calls)
        await channel.send(
            _out(
                "778",
                "Наш прайс і фото салону",
                attachments=[
                    Attachment(kind="image", url="https://salon.example/photo.jpg"),
                    Attachment(kind="file", url="https://salon.example/price.pdf"),
                    Attachment(kind="location", ref="50.45,30.52"),
                ],
            )
        )
        calls = fake.calls[before:]
        assert [c.method for c in calls] == ["sendMessage", "sendPhoto", "sendDocument"]
        assert calls[1].params["photo"] == "https://salon.example/photo.jpg"
        assert calls[2].params["document"] == "https://salon.example/price.pdf"


# Polling and several bots -----------------------------------------------------------------


async def test_polling_two_bots_at_once(settings: Settings, redis: Any, fake: FakeTelegram) -> None:
    del redis
    fake.bots[TOKEN].webhook_url = "https://old.example/hook"  # left over from a deployment
    tokens = SecretStr(f"main={TOKEN},vip={VIP_TOKEN}")
    async with telegram_hub(settings, fake, hub_public_url=None, telegram_bot_tokens=tokens) as (
        running
    ):
        channel = channel_of(running)
        assert channel.mode == "polling" and set(channel.inboxes) == {"main", "vip"}
        channel.poll_backoff = (0.01, 0.05)
        fake.push_update(TOKEN, message_update(60000, 1, text="Через основного бота"))
        vip_client = user(666666666, first_name="Sofia", last_name=None, username="sofia")
        fake.push_update(VIP_TOKEN, message_update(70000, 1, vip_client, text="VIP запис"))
        await eventually(lambda: inbound(running, "111111111:1"))
        await eventually(lambda: inbound(running, "666666666:1"))
        assert fake.calls_of("deleteWebhook", ok=True, token=TOKEN)
        assert fake.calls_of("deleteWebhook", ok=True, token=VIP_TOKEN)
        assert fake.bots[TOKEN].webhook_url == ""

        # A failing getUpdates is waited out, not a crash.
        fake.fail("getUpdates", 502, times=2)
        fake.push_update(TOKEN, message_update(60001, 2, text="Ще одне"))
        await eventually(lambda: inbound(running, "111111111:2"))

        by_inbox = {m.provider_message_id: m.inbox for m in await rows(running, Message)}
        assert by_inbox == {"111111111:1": "main", "666666666:1": "vip", "111111111:2": "main"}

        # A reply in the vip inbox goes out through the vip bot.
        (vip,) = await rows(running, Conversation, Conversation.inbox == "vip")
        await send_reply(
            running.hub.sessions,
            running.hub.bus,
            conversation_id=vip.id,  # type: ignore[arg-type]
            text="Чекаємо вас!",
            author=Author.bot,
        )
        (sent,) = await eventually(
            lambda: _async(fake.calls_of("sendMessage", ok=True, token=VIP_TOKEN))
        )
        assert sent.params["chat_id"] == "666666666"
        assert not fake.calls_of("sendMessage", token=TOKEN)
        # Confirmed updates are not served again.
        assert len(await rows(running, Message, Message.direction == "in")) == 3


# Pure parts -------------------------------------------------------------------------------


def test_tokens_settings_and_secrets() -> None:
    assert parse_tokens(TOKEN) == {"main": TOKEN}
    assert parse_tokens(f" main={TOKEN} , vip={VIP_TOKEN} ") == {"main": TOKEN, "vip": VIP_TOKEN}
    for bad in ("nonsense", f"main={TOKEN},main={VIP_TOKEN}", f"bad inbox={TOKEN}", " , "):
        with pytest.raises(ValueError) as info:
            parse_tokens(bad)
        assert TOKEN not in str(info.value)

    derived = webhook_secret("main", TOKEN, configured=None, hub_key=None, mode="webhook")
    assert derived == webhook_secret("main", TOKEN, configured=None, hub_key=None, mode="webhook")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", derived) and TOKEN not in derived
    keyed = [
        webhook_secret(inbox, TOKEN, configured=None, hub_key="k", mode="webhook")
        for inbox in ("main", "vip")
    ]
    assert keyed[0] != keyed[1] and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keyed)
    assert webhook_secret("main", TOKEN, configured="s3cret_-X", hub_key="k", mode="polling") == (
        "s3cret_-X"
    )
    with pytest.raises(ValueError):
        webhook_secret("main", TOKEN, configured="no spaces", hub_key=None, mode="webhook")

    base = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_settings(base, _NoCtx()) is None
    with pytest.raises(ValueError):
        from_settings(
            base.model_copy(
                update={"telegram_bot_tokens": SecretStr(TOKEN), "telegram_mode": "webhook"}
            ),
            _NoCtx(),
        )
    polling = from_settings(
        base.model_copy(update={"telegram_bot_tokens": SecretStr(TOKEN)}), _NoCtx()
    )
    assert polling is not None and polling.mode == "polling"
    assert TOKEN not in repr(polling) and TOKEN not in repr(polling.inboxes)

    url = f"http://127.0.0.1:1/file/bot{TOKEN}/photos/a.jpg"
    assert TOKEN not in redact(f"404, url={url!r}") and TOKEN not in redact(url, [TOKEN])


class _NoCtx:
    def on_fanout(self, topic: str, handler: Any) -> None:
        del topic, handler


def test_text_buttons_languages_and_limits() -> None:
    long = ("слово " * 2000).strip()
    parts = split_text(long)
    assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)
    assert " ".join(parts) == long
    emoji = "💅" * 3000  # two UTF-16 units each: Telegram counts 6000
    assert [len(p) for p in split_text(emoji)] == [2048, 952]
    assert split_text("  ") == []

    labels = ["Так", "Ні", "а" * 40, "а" * 40 + "б", "Завтра 10:00"]
    data = callback_data(labels)
    assert all(len(d.encode()) <= 64 for d in data) and len(set(data)) == len(data)
    assert data[0] == "Так" and data[3].startswith("3|")
    assert button_rows(labels) == [[0, 1], [2], [3], [4]]

    assert [language_of(c) for c in ("uk", "en-GB", "ru", "de", None, "UK_ua")] == [
        "uk",
        "en",
        "ru",
        None,
        None,
        "uk",
    ]

    # Three senders asking at once get consecutive slots; other chats are not held up.
    limits = SendLimits()
    assert [limits.chat_slot("1", group=False, now=0.0) for _ in range(3)] == [0.0, 1.0, 2.0]
    assert limits.chat_slot("2", group=False, now=0.0) == 0.0
    assert [limits.bot_slot(0.0) for _ in range(3)] == pytest.approx([0.0, 1 / 30, 2 / 30])
    limits.defer("2", group=False, until=10.0, now=0.0)
    assert limits.chat_slot("2", group=False, now=0.0) == 11.0
    group = [limits.chat_slot("-5", group=True, now=100.0) for _ in range(3)]
    assert group == [0.0, 3.0, 6.0]
