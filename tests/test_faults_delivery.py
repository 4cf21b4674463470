"""Faults on the way out and floods on the way in, through the real hub.

1. A provider that answers 500, 500, 429, 429 and then OK (Telegram through aiogram, Viber,
   Twilio, each against its fake over real HTTP): every reply is accepted exactly once, ends
   `sent` with its attempts counted, and each chat's replies arrive in the order they were
   written. A long reply cut in parts, failing after its first part, sends no part twice.
2. One client sending a hundred messages at once does not starve the others: with a model
   that takes a while per turn, every other client is answered within a few turns, and the
   flood client gets an answer to its newest line, not one per line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bots.base import Reply, Turn
from channels.sms_segments import count_segments
from crm_store.conversations import open_conversation
from crm_store.db import transaction
from crm_store.models import Client, Conversation, Message
from crm_store.timeutil import utcnow
from hub.config import Settings
from hub.messages import Author, InboundMessage
from tests.fakes import twilio_server, viber_server
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.twilio_server import FakeTwilio
from tests.fakes.viber_server import FakeViber, user_id
from tests.support import FakeTime, RunningHub, eventually, reply, rows, start_hub

TELEGRAM_TOKEN = "7123456789:AAHk3xZpQv9mN2bRt5Yw8cLd4Fg6Hj1KsEo"
CHATS = 3
REPLIES_PER_CHAT = 3


@dataclass
class Sent:
    """One send a fake provider saw: to whom, what, and whether it accepted it."""

    chat: str
    text: str
    accepted: bool


async def open_chats(running: RunningHub, channel: str, inbox: str, chats: list[str]) -> list[int]:
    ids = []
    async with transaction(running.hub.sessions) as session:
        for chat in chats:
            client = Client(name=f"Client {chat[-4:]}")
            session.add(client)
            await session.flush()
            conversation, _ = await open_conversation(
                session,
                client_id=client.id,  # type: ignore[arg-type]
                channel=channel,
                inbox=inbox,
                chat_id=chat,
                now=utcnow(),
            )
            ids.append(conversation.id)
    return ids


async def all_settled(running: RunningHub, public_ids: list[str]) -> list[Message] | None:
    found = await rows(running, Message, Message.direction == "out")
    mine = [m for m in found if m.public_id in public_ids]
    if len(mine) < len(public_ids) or any(m.status in ("queued", "sending") for m in mine):
        return None
    return mine


async def replies_through_faults(
    running: RunningHub,
    channel: str,
    inbox: str,
    chats: list[str],
    wire: Callable[[], list[Sent]],
    *,
    failures: int,
    failed_attempts: int,
) -> None:
    """Staff write several replies to several chats while the provider fails its first
    `failures` sends (scripted by the caller); `failed_attempts` of those fail a dispatcher
    attempt (the rest the channel waits out itself)."""
    conversations = await open_chats(running, channel, inbox, chats)
    written: dict[str, list[str]] = {chat: [] for chat in chats}
    public_ids = []
    for n in range(REPLIES_PER_CHAT):
        for chat, conversation in zip(chats, conversations, strict=True):
            text = f"Reply {n} to {chat}"
            written[chat].append(text)
            public_ids.append(await reply(running, conversation, text, author=Author.staff))
    stored = await eventually(lambda: all_settled(running, public_ids), timeout=30)

    total = CHATS * REPLIES_PER_CHAT
    assert [m.status for m in stored] == ["sent"] * total
    seen = wire()
    accepted = [s for s in seen if s.accepted]
    # Every reply accepted once, no doubles; each failure cost one call and nothing else.
    assert sorted(s.text for s in accepted) == sorted(
        t for texts in written.values() for t in texts
    )
    assert len(seen) == total + failures
    # Each chat's replies arrived in the order staff wrote them.
    for chat in chats:
        assert [s.text for s in accepted if s.chat == chat] == written[chat]
    # Attempts are counted: one each, plus one per failure the dispatcher retried.
    assert all(m.attempts >= 1 for m in stored)
    assert sum(m.attempts for m in stored) == total + failed_attempts


async def long_reply_failing_midway(
    running: RunningHub,
    conversation_id: int,
    text: str,
    wire: Callable[[], list[Sent]],
    fail_after_first_part: Callable[[], None],
) -> tuple[Message, list[Sent]]:
    """A reply cut in parts whose second part fails once: each part goes out once."""
    before = len(wire())
    fail_after_first_part()
    public_id = await reply(running, conversation_id, text, author=Author.staff)
    (stored,) = await eventually(lambda: all_settled(running, [public_id]), timeout=30)
    seen = wire()[before:]
    parts = [s for s in seen if s.accepted]
    assert stored.status == "sent" and stored.attempts == 2
    assert len(parts) >= 2 and len(seen) == len(parts) + 1
    assert len({s.text for s in parts}) == len(parts)  # no part twice
    assert " ".join(s.text for s in parts).split() == text.split()
    return stored, parts


def long_text(chars: int) -> str:
    sentence = "Манікюр з покриттям 800 грн, педикюр 900 грн, стрижка 600 грн. "
    return (sentence * (chars // len(sentence) + 1)).strip()


# 1. Provider faults ------------------------------------------------------------------------


async def test_telegram_500s_then_429s_then_ok(settings: Settings, redis: Any) -> None:
    del redis
    async with FakeTelegram(max_poll_wait=0.2) as fake:
        fake.add_bot(TELEGRAM_TOKEN, "salon_bot")
        values = {
            "telegram_bot_tokens": SecretStr(TELEGRAM_TOKEN),
            "telegram_api_url": fake.base_url,
            "hub_public_url": "http://hub.example.test",
        }
        running = await start_hub(settings.model_copy(update=values))
        try:
            channel = running.hub.channels["telegram"]
            time_ = FakeTime()
            channel.clock, channel.sleep = time_.clock, time_.sleep  # type: ignore[attr-defined]

            def wire() -> list[Sent]:
                return [
                    Sent(str(c.params.get("chat_id")), str(c.params.get("text")), c.status == 200)
                    for c in fake.calls_of("sendMessage")
                ]

            fake.fail("sendMessage", 500, times=2)
            fake.fail("sendMessage", 429, retry_after=1, times=2)
            chats = [str(1_000_001 + n) for n in range(CHATS)]
            # A 500 fails a dispatcher attempt; a 429 is waited out inside the channel.
            await replies_through_faults(
                running, "telegram", "main", chats, wire, failures=4, failed_attempts=2
            )
            assert time_.sleeps.count(1) >= 2  # retry_after honoured, on the channel's clock

            (conversation, *_) = await rows(running, Conversation)
            await long_reply_failing_midway(
                running,
                conversation.id,  # type: ignore[arg-type]
                long_text(6_000),
                wire,
                lambda: fake.fail("sendMessage", 500, after=1),
            )
        finally:
            await running.stop()


async def test_viber_500s_then_rate_limits_then_ok(settings: Settings, redis: Any) -> None:
    del redis
    async with FakeViber() as fake:
        values = {
            "viber_bot_token": SecretStr(viber_server.AUTH_TOKEN),
            "viber_api_url": fake.base_url,
            "hub_public_url": None,
        }
        running = await start_hub(settings.model_copy(update=values))
        try:
            channel = running.hub.channels["viber"]
            time_ = FakeTime()
            channel.sleep = time_.sleep  # type: ignore[attr-defined]

            def wire() -> list[Sent]:
                return [
                    Sent(
                        str(r.body["receiver"]),
                        str(r.body["text"]),
                        r.http_status == 200 and (r.answer or {}).get("status") == 0,
                    )
                    for r in fake.calls("send_message")
                ]

            fake.fail(http=500, times=2)
            # Viber's two ways of saying "too many requests": status 12 in a 200, and a 429.
            fake.fail(status=12)
            fake.fail(http=429, retry_after="1")
            chats = [user_id() for _ in range(CHATS)]
            await replies_through_faults(
                running, "viber", "main", chats, wire, failures=4, failed_attempts=4
            )
            assert 1.0 in time_.sleeps  # the 429's Retry-After was waited out

            (conversation, *_) = await rows(running, Conversation)
            await long_reply_failing_midway(
                running,
                conversation.id,  # type: ignore[arg-type]
                long_text(9_000),
                wire,
                lambda: fake.fail(http=500, after=1),
            )
        finally:
            await running.stop()


async def test_twilio_500s_then_429s_then_ok(settings: Settings, redis: Any) -> None:
    del redis
    async with FakeTwilio() as fake:
        values = {
            "twilio_account_sid": twilio_server.ACCOUNT_SID,
            "twilio_auth_token": SecretStr(twilio_server.AUTH_TOKEN),
            "twilio_from_number": twilio_server.FROM_NUMBER,
            "twilio_api_url": fake.base_url,
            "hub_public_url": None,
            "sms_inbox": "main",
        }
        running = await start_hub(settings.model_copy(update=values))
        try:
            channel = running.hub.channels["sms"]
            time_ = FakeTime()
            channel.sleep = time_.sleep  # type: ignore[attr-defined]

            def wire() -> list[Sent]:
                return [
                    Sent(str(r.get("To")), str(r.get("Body")), r.status == 201)
                    for r in fake.creates()
                ]

            fake.fail(500, times=2)
            fake.fail(429, retry_after=1, times=2)
            chats = [f"+38067123450{n}" for n in range(CHATS)]
            await replies_through_faults(
                running, "sms", "main", chats, wire, failures=4, failed_attempts=4
            )
            assert time_.sleeps == [1.0, 1.0]  # each 429's Retry-After, waited out once

            (conversation, *_) = await rows(running, Conversation)
            stored, parts = await long_reply_failing_midway(
                running,
                conversation.id,  # type: ignore[arg-type]
                long_text(2_500),
                wire,
                lambda: fake.fail(500, after=1),
            )
            # The billed parts count those sent on the first attempt too, each once.
            assert stored.segments == sum(count_segments(p.text) for p in parts)
        finally:
            await running.stop()


# 2. A flood does not starve the other clients ---------------------------------------------

TURN_S = 0.05  # the model's time per turn
FLOOD = 100
OTHERS = 5
# Each other client is answered within this many turns of its message being stored: a read
# that waits for the turns in hand, its own turn, and slack for a busy test machine. The
# old worker took one turn per flood line ahead of it (some 80 here).
TURNS_BOUND = 20


class SlowModel:
    """A responder that takes TURN_S per turn, as a model over the network does."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.running = 0
        self.most_at_once = 0

    async def respond(self, turn: Turn) -> list[Reply]:
        self.turns.append(turn)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(TURN_S)
        finally:
            self.running -= 1
        return [Reply(text=f"re: {turn.text}")]


def webchat(chat: str, n: int, text: str) -> InboundMessage:
    return InboundMessage(
        channel="webchat",
        inbox="site",
        chat_id=chat,
        sender_id=chat,
        provider_message_id=f"{chat}:{n}",
        text=text,
    )


async def answers_to(running: RunningHub, chat: str) -> list[tuple[Message, Message]]:
    """(client message, the bot's reply to it) for each answered message of a chat."""
    found = await rows(running, Conversation, Conversation.chat_id == chat)
    if not found:
        return []  # not stored yet
    said = await rows(running, Message, Message.conversation_id == found[0].id)
    by_id = {m.public_id: m for m in said if m.direction == "in"}
    pairs = []
    for m in said:
        if m.direction == "out" and m.author == "bot" and m.outbound_key:
            answered = by_id[m.outbound_key.split(":")[1]]
            pairs.append((answered, m))
    return pairs


async def stored_count(running: RunningHub, chat: str) -> int:
    found = await rows(running, Conversation, Conversation.chat_id == chat)
    if not found:
        return 0
    return len(await rows(running, Message, Message.conversation_id == found[0].id))


async def test_a_flood_from_one_client_does_not_starve_the_others(
    settings: Settings, redis: Any
) -> None:
    del redis
    model = SlowModel()
    running = await start_hub(settings, responder=model)
    try:
        bus = running.hub.bus
        started = time.monotonic()
        for n in range(FLOOD):
            await bus.publish_inbound(webchat("flood", n, f"line {n}"))
        assert time.monotonic() - started < 1.0  # a hundred messages within a second

        async def flood_stored() -> bool:
            return await stored_count(running, "flood") >= FLOOD

        # The whole flood is in before the others write, so they queue behind all of it.
        await eventually(flood_stored, timeout=30)
        others = [f"other-{n}" for n in range(OTHERS)]
        for chat in others:
            await bus.publish_inbound(webchat(chat, 0, "Скільки коштує манікюр?"))

        async def all_answered() -> list[tuple[Message, Message]] | None:
            pairs = []
            for chat in others:
                sent = [p for p in await answers_to(running, chat) if p[1].status == "sent"]
                if not sent:
                    return None
                pairs.extend(sent)
            return pairs

        answered = await eventually(all_answered, timeout=30)
        # Each one answered (stored and handed to the channel) within a few turns.
        for question, answer in answered:
            waited = (answer.created_at - question.created_at).total_seconds()
            assert waited < TURNS_BOUND * TURN_S, (question.conversation_id, waited)

        async def newest_answered() -> list[tuple[Message, Message]] | None:
            pairs = await answers_to(running, "flood")
            return pairs if pairs and pairs[-1][0].text == f"line {FLOOD - 1}" else None

        flood = await eventually(newest_answered, timeout=30)
        # The flood got far fewer answers than lines, its newest line answered, in order.
        assert len(flood) <= FLOOD // 4, len(flood)
        lines = [int(question.text.split()[1]) for question, _ in flood]
        assert lines == sorted(lines)
        # Different clients' turns overlapped: the slow model was waited on together.
        assert model.most_at_once > 1
    finally:
        await running.stop()
