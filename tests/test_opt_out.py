"""Opt-out keywords on every channel: a message that is just "stop" / "стоп" / "відписатися"
takes the client's marketing consent away (audited), the bot does not answer it, and the
client gets one short confirmation, also when the message is delivered again; "start" gives
the consent back. Through the real pipeline: web chat in, the router, the bot, the socket."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from sqlmodel import col, select

from crm_store.db import transaction
from crm_store.models import AuditEntry, Client, Conversation, Message
from hub.messages import InboundMessage
from hub.pipeline.router import consent_keyword
from prompts import load_json
from tests.salon import build_salon
from tests.support import RunningHub, client_session, eventually, next_frame
from tests.test_bot_pipeline import Visitor, bot_hub

TEXTS = load_json("consent.json")
OPTED_OUT_UK = (
    "Ви відписалися від розсилок. Нагадування про записи надходитимуть і далі. "
    "Щоб повернути — напишіть START"
)


async def conversation_of(running: RunningHub) -> Conversation:
    async with running.hub.sessions() as session:
        return (await session.exec(select(Conversation))).one()


async def set_consent(running: RunningHub, client_id: int, granted: bool) -> None:
    async with transaction(running.hub.sessions) as session:
        client = await session.get(Client, client_id)
        assert client is not None
        client.marketing_consent = granted
        session.add(client)


async def consent(running: RunningHub, client_id: int) -> bool:
    async with running.hub.sessions() as session:
        client = await session.get(Client, client_id)
    assert client is not None
    return client.marketing_consent


async def consent_entries(running: RunningHub, client_id: int) -> list[AuditEntry]:
    async with running.hub.sessions() as session:
        query = (
            select(AuditEntry)
            .where(
                AuditEntry.entity == "client",
                AuditEntry.entity_id == client_id,
                AuditEntry.action == "consent",
            )
            .order_by(col(AuditEntry.id))
        )
        return list((await session.exec(query)).all())


async def outbound(running: RunningHub, conversation_id: int) -> list[tuple[str, str]]:
    """(author, text) of what the hub said in the conversation, in order."""
    async with running.hub.sessions() as session:
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.direction == "out")
            .order_by(col(Message.id))
        )
        return [(m.author, m.text) for m in (await session.exec(query)).all()]


async def out_frames_until_bot_answers(
    ws: aiohttp.ClientWebSocketResponse, bot_text_part: str
) -> list[dict[str, Any]]:
    """Every outbound frame up to and including the bot's answer that contains the text."""
    frames = []
    while True:
        frame = await next_frame(ws)
        if frame["direction"] != "out":
            continue
        frames.append(frame)
        if bot_text_part in frame["text"]:
            return frames


async def test_stop_and_start_on_web_chat(settings, redis) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            (hello,) = await visitor.say("Привіт!")
            conv = await conversation_of(running)
            await set_consent(running, conv.client_id, True)  # agreed when booking, say

            (confirmation,) = await visitor.say("  Стоп! ")
            assert confirmation["text"] == OPTED_OUT_UK
            assert not await consent(running, conv.client_id)
            (entry,) = await consent_entries(running, conv.client_id)
            assert entry.actor == "client"
            assert entry.changes["marketing_consent"] == [True, False]
            assert entry.changes["via"].startswith("webchat")

            # The bot took "Стоп!" for no question: its next words answer the next message.
            (price,) = await visitor.say("Скільки коштує манікюр?")
            assert "800" in price["text"]

            (back,) = await visitor.say("START")
            assert back["text"] == TEXTS["opted_in"]["uk"]
            assert await consent(running, conv.client_id)
            assert [
                e.changes["marketing_consent"]
                for e in await consent_entries(running, conv.client_id)
            ] == [[True, False], [False, True]]

        said = await outbound(running, conv.id)  # type: ignore[arg-type]
        assert [author for author, _ in said] == ["bot", "system", "bot", "system"]
        assert said[0][1] == hello["text"] and said[1][1] == OPTED_OUT_UK
    finally:
        await running.stop()


async def test_the_confirmation_goes_once_however_often_the_keyword_arrives(
    settings, redis
) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            await visitor.say("Привіт!")
            conv = await conversation_of(running)
            await set_consent(running, conv.client_id, True)

            # The widget resends after a reconnect (same client_id: the same provider id)…
            for _ in range(2):
                frame = {"type": "message", "text": "відписатися", "client_id": "feedc0ffee12"}
                await visitor.ws.send_json(frame)
            # …and a stream entry is delivered twice (a router died before its ack).
            again = InboundMessage(
                channel="webchat",
                inbox=conv.inbox,
                chat_id=conv.chat_id,
                sender_id=conv.chat_id,
                provider_message_id=f"{conv.chat_id}:feedc0ffee12",
                text="відписатися",
            )
            await running.hub.bus.publish_inbound(again)
            await running.hub.bus.publish_inbound(again)
            # A question after them, answered by the bot: every copy was handled before it.
            await visitor.ws.send_json({"type": "message", "text": "Скільки коштує стрижка?"})
            frames = await out_frames_until_bot_answers(visitor.ws, "600")

        assert [f["text"] for f in frames].count(OPTED_OUT_UK) == 1
        assert not await consent(running, conv.client_id)
        assert len(await consent_entries(running, conv.client_id)) == 1
        said = await outbound(running, conv.id)  # type: ignore[arg-type]
        assert [author for author, _ in said] == ["bot", "system", "bot"]
        async with running.hub.sessions() as session:
            stored = (
                await session.exec(select(Message).where(Message.text == "відписатися"))
            ).all()
        assert len(stored) == 1
    finally:
        await running.stop()


async def test_a_keyword_inside_a_sentence_is_an_ordinary_message(settings, redis) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            await visitor.say("Привіт!")
            conv = await conversation_of(running)
            await set_consent(running, conv.client_id, True)
            (answer,) = await visitor.say("Стоп, а скільки коштує манікюр?")
            assert answer["text"] != OPTED_OUT_UK
        assert await consent(running, conv.client_id)
        assert await consent_entries(running, conv.client_id) == []
        said = await outbound(running, conv.id)  # type: ignore[arg-type]
        assert "system" not in [author for author, _ in said]
    finally:
        await running.stop()


async def test_a_keyword_the_channel_already_read_is_the_providers_to_answer(
    settings, redis
) -> None:
    """SMS START (or STOP): the channel sets `consent` and the provider answers it; the hub
    records the consent and says nothing itself."""
    del redis
    running = await bot_hub(settings)
    try:
        msg = InboundMessage(
            channel="sms",
            inbox="main",
            chat_id="+380501112233",
            sender_id="+380501112233",
            provider_message_id="SM-start-1",
            text="START",
            consent=True,
        )
        await running.hub.bus.publish_inbound(msg)

        async def stored() -> list[Message]:
            async with running.hub.sessions() as session:
                return list((await session.exec(select(Message))).all())

        (message,) = await eventually(stored)
        assert message.text == "START"
        (entry,) = await eventually(lambda: consent_entries(running, message.client_id))
        assert entry.changes["via"] == "sms: START"
        # A later message goes through the same shard: START's turn (if any) came before.
        later = msg.model_copy(
            update={
                "id": "later-1",
                "provider_message_id": "SM-2",
                "text": "Привіт",
                "consent": None,
            }
        )
        await running.hub.bus.publish_inbound(later)
        said = await eventually(lambda: outbound(running, message.conversation_id))
        assert [author for author, _ in said] == ["bot"]  # the greeting only
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("text", "granted", "language"),
    [
        ("stop", False, "uk"),
        ("STOP!", False, "uk"),
        ("  Стоп. ", False, "uk"),
        ("Відписатися", False, "uk"),
        ("відписка", False, "uk"),
        ("Отписаться!", False, "ru"),
        ("unsubscribe", False, "en"),
        ("Start", True, "uk"),
        ("старт", True, "uk"),
    ],
)
def test_keywords_are_whole_messages_in_any_case(text: str, granted: bool, language: str) -> None:
    found = consent_keyword(text)
    assert found is not None and (found.granted, found.language) == (granted, language)


@pytest.mark.parametrize(
    "text", ["/start", "/stop", "stop it", "не стоп", "стоп-кран", "", "start a booking"]
)
def test_commands_and_sentences_are_not_keywords(text: str) -> None:
    assert consent_keyword(text) is None
