"""Telegram groups, supergroups and channels (TELEGRAM_GROUPS).

By default every update from a chat that is not private is acknowledged to Telegram and
dropped: nothing stored or published, its text never logged; by webhook and by polling alike.
With `staff` a group's messages are stored (one conversation per group, each sender their own
card) and go straight to staff: the bot never speaks there, and neither do the hub's own
messages. Updates are built with aiogram's own types, serialised as Telegram sends them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram.types import (
    CallbackQuery,
    Chat,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)

from channels.telegram import GROUP_REFUSAL
from crm_store.models import ChannelIdentity, Client, Conversation
from crm_store.models import Message as Stored
from hub.config import Settings
from hub.messages import Author
from hub.pipeline.replies import send_reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support import RunningHub, eventually, rows, settled
from tests.test_channel_telegram import (
    DATE,
    TOKEN,
    _async,
    channel_of,
    inbound,
    staff_session,
    telegram_hub,
    webhook_ready,
)
from tests.test_channel_telegram import fake as fake  # the fixture
from tests.test_channel_telegram import no_tokens_in_logs as no_tokens_in_logs  # autouse

WHEN = datetime.fromtimestamp(DATE, UTC)
OLENA = User(
    id=111111111,
    is_bot=False,
    first_name="Olena",
    last_name="Koval",
    username="olena_k",
    language_code="uk",
)
IRYNA = User(id=222222222, is_bot=False, first_name="Iryna", language_code="uk")
BOT = User(id=7123456789, is_bot=True, first_name="Salon", username="salon_bot")
SUPERGROUP = Chat(id=-1001234567890, type="supergroup", title="Salon regulars")
GROUP = Chat(id=-4012345678, type="group", title="Friends of the salon")
CHANNEL = Chat(id=-1009876543210, type="channel", title="Salon news")
# Every group update carries one of these: none may be stored, published or logged.
SECRET = "group-secret"


def wire(update: Update) -> dict[str, Any]:
    """An update as Telegram sends it (what the channel's polling loop also rebuilds)."""
    return update.model_dump(mode="json", by_alias=True, exclude_none=True)


def private(person: User) -> Chat:
    return Chat(id=person.id, type="private", first_name=person.first_name)


def said(update_id: int, message_id: int, chat: Chat, sender: User, text: str) -> dict[str, Any]:
    message = Message(message_id=message_id, date=WHEN, chat=chat, from_user=sender, text=text)
    return wire(Update(update_id=update_id, message=message))


def group_updates(first: int) -> list[dict[str, Any]]:
    """One of each update a group, a supergroup or a channel sends a bot."""
    edited = Message(
        message_id=11,
        date=WHEN,
        edit_date=DATE + 60,
        chat=SUPERGROUP,
        from_user=OLENA,
        text=f"{SECRET} 3 (edited)",
    )
    post = Message(message_id=12, date=WHEN, chat=CHANNEL, sender_chat=CHANNEL, text=f"{SECRET} 4")
    buttons = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=f"{SECRET} 5", callback_data="yes")]]
    )
    pressed = CallbackQuery(
        id="5012345678901234567",
        from_user=OLENA,
        chat_instance="-8613571262436946",
        data="yes",
        message=Message(
            message_id=13, date=WHEN, chat=SUPERGROUP, from_user=BOT, text="?", reply_markup=buttons
        ),
    )
    added = ChatMemberUpdated(
        chat=SUPERGROUP,
        from_user=OLENA,
        date=WHEN,
        old_chat_member=ChatMemberLeft(user=BOT),
        new_chat_member=ChatMemberMember(user=BOT),
    )
    return [
        said(first, 10, SUPERGROUP, OLENA, f"{SECRET} 1: what do I have booked?"),
        said(first + 1, 20, GROUP, IRYNA, f"{SECRET} 2"),
        said(first + 2, 21, GROUP, IRYNA, f"/start@salon_bot {SECRET}"),
        wire(Update(update_id=first + 3, edited_message=edited)),
        wire(Update(update_id=first + 4, channel_post=post)),
        wire(Update(update_id=first + 5, edited_channel_post=post)),
        wire(Update(update_id=first + 6, callback_query=pressed)),
        wire(Update(update_id=first + 7, my_chat_member=added)),
    ]


async def published(running: RunningHub) -> int:
    """Entries on the inbound streams: what the channel handed the hub."""
    bus = running.hub.bus
    return sum([await running.hub.redis.xlen(stream) for stream in bus.inbound_streams()])


def logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter()
    return "\n".join(formatter.format(record) for record in caplog.get_records("call"))


# Ignored (the default) ---------------------------------------------------------------------


async def test_webhook_acknowledges_group_updates_and_keeps_nothing(
    settings: Settings, redis: Any, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    del redis
    async with telegram_hub(settings, fake) as running:
        hook = await webhook_ready(running, fake)
        updates = group_updates(5000)
        for update in updates:
            assert await hook.post(update) == 200  # or Telegram retries it forever
        # A chat whose type is missing is not taken for a private one.
        untyped = said(5100, 30, SUPERGROUP, OLENA, f"{SECRET} 6")
        del untyped["message"]["chat"]["type"]
        assert await hook.post(untyped) == 400

        assert await hook.post(said(5200, 40, private(OLENA), OLENA, "Привіт")) == 200
        await eventually(lambda: inbound(running, "111111111:40"))
        assert [m.text for m in await rows(running, Stored)] == ["Привіт"]
        assert [c.chat_id for c in await rows(running, Conversation)] == ["111111111"]
        assert [i.external_id for i in await rows(running, ChannelIdentity)] == ["111111111"]
        assert len(await rows(running, Client)) == 1
        assert await published(running) == 1
        # The button's spinner stops (answerCallbackQuery posts nothing in the group).
        (answered,) = fake.calls_of("answerCallbackQuery", ok=True)
        assert answered.params["callback_query_id"] == "5012345678901234567"
        assert fake.calls_of("sendMessage") == []

    text = logged(caplog)
    assert SECRET not in text
    for update in updates:
        assert f"update {update['update_id']} ignored" in text
    assert "the bot is now 'member' in supergroup chat -1001234567890" in text


async def test_polling_skips_group_updates_and_moves_past_them(
    settings: Settings, redis: Any, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    del redis
    async with telegram_hub(settings, fake, hub_public_url=None) as running:
        channel = channel_of(running)
        assert channel.mode == "polling"
        channel.poll_backoff = (0.01, 0.05)
        for update in group_updates(6000):
            fake.push_update(TOKEN, update)
        fake.push_update(TOKEN, said(6100, 50, private(OLENA), OLENA, "Добрий день"))
        await eventually(lambda: inbound(running, "111111111:50"))
        # Each one confirmed to Telegram (the next getUpdates' offset), none of them kept.
        await eventually(lambda: _async(not fake.bots[TOKEN].updates))
        assert [m.text for m in await rows(running, Stored)] == ["Добрий день"]
        assert len(await rows(running, Client)) == 1
        assert await published(running) == 1
    assert SECRET not in logged(caplog)


# Kept for staff ----------------------------------------------------------------------------


async def test_staff_mode_stores_a_group_for_staff_and_the_bot_never_speaks_there(
    settings: Settings, redis: Any, fake: FakeTelegram
) -> None:
    del redis
    async with telegram_hub(settings, fake, telegram_groups="staff", hub_bot="offline") as (
        running
    ):
        hook = await webhook_ready(running, fake)
        # Two people in one supergroup; one of them says "start", which in a private chat
        # would be a marketing opt-in with a confirmation.
        assert await hook.post(said(7000, 70, SUPERGROUP, OLENA, "Які в мене записи?")) == 200
        assert await hook.post(said(7001, 71, SUPERGROUP, IRYNA, "start")) == 200
        # The same person in a private chat: the bot is on, and answers there.
        assert await hook.post(said(7002, 5, private(OLENA), OLENA, "Привіт")) == 200

        def sent_to(chat: int) -> list[Any]:
            return [
                c for c in fake.calls_of("sendMessage", ok=True) if c.params["chat_id"] == str(chat)
            ]

        await eventually(lambda: _async(sent_to(OLENA.id)))
        group_id = str(SUPERGROUP.id)

        async def group_conversation() -> Conversation | None:
            found = await rows(running, Conversation, Conversation.chat_id == group_id)
            return found[0] if found and found[0].status == "waiting" else None

        group = await eventually(group_conversation)
        await eventually(lambda: inbound(running, f"{group_id}:71"))
        lines = await rows(running, Stored, Stored.conversation_id == group.id)
        assert [(m.direction, m.text) for m in lines] == [
            ("in", "Які в мене записи?"),
            ("in", "start"),
        ]
        identities = {
            i.external_id: i.client_id
            for i in await rows(running, ChannelIdentity, ChannelIdentity.channel == "telegram")
        }
        assert set(identities) == {"111111111", "222222222"}  # each sender their own card
        assert [m.client_id for m in lines] == [identities["111111111"], identities["222222222"]]
        iryna = (await rows(running, Client, Client.id == identities["222222222"]))[0]
        assert iryna.marketing_consent is False
        assert sent_to(SUPERGROUP.id) == []

        # Staff answer in the group.
        http = await staff_session(running)
        try:
            url = f"{running.base_url}/api/conversations/{group.id}/messages"
            async with http.post(url, json={"text": "Напишіть нам в особисті, будь ласка."}) as r:
                assert r.status == 201
        finally:
            await http.close()
        (staff_line,) = await eventually(lambda: _async(sent_to(SUPERGROUP.id)))
        assert staff_line.params["text"] == "Напишіть нам в особисті, будь ласка."

        # The hub's own message (a reminder, say) to the group is refused, never sent.
        queued = await send_reply(
            running.hub.sessions,
            running.hub.bus,
            conversation_id=group.id,  # type: ignore[arg-type]
            text="Нагадуємо: Olena, ваш запис завтра о 10:00",
            author=Author.system,
        )
        refused = await settled(running, queued.message.public_id, "failed")
        assert refused.error == GROUP_REFUSAL
        assert len(sent_to(SUPERGROUP.id)) == 1
        outbound = await rows(running, Stored, Stored.direction == "out")
        assert all(m.author != "bot" for m in outbound if m.conversation_id == group.id)
