"""What every provider channel relies on in the hub: receipts found by the provider's id,
unreachable identities, opt-out keywords, the client's source, SMS segments."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlmodel import col, select

from crm_store.db import transaction
from crm_store.models import AuditEntry, ChannelIdentity, Client, Conversation, Message
from crm_store.staff import staff_by_email
from hub.messages import (
    Attachment,
    Author,
    ContactHints,
    DeliveryState,
    DeliveryStatus,
    InboundMessage,
)
from hub.pipeline.replies import send_reply
from tests.support import RunningHub, client_session, eventually, rows, start_hub
from tests.test_webchat import add_owner


def sms(n: int, text: str, **fields: Any) -> InboundMessage:
    return InboundMessage(
        channel="sms",
        inbox="main",
        chat_id="+380671234567",
        sender_id="+380671234567",
        provider_message_id=f"SM{n}",
        text=text,
        contact=ContactHints(phone="+380671234567"),
        **fields,
    )


async def test_receipts_keywords_unreachable_and_source(settings, redis) -> None:
    del redis
    running = await start_hub(settings.model_copy(update={"hub_bot": "offline"}))
    try:
        hub = running.hub
        await hub.bus.publish_inbound(sms(1, "Hello, I saw your ad"))
        await hub.bus.publish_inbound(
            InboundMessage(
                channel="telegram",
                inbox="main",
                chat_id="42",
                sender_id="42",
                provider_message_id="42:1",
                text="/start",
                contact=ContactHints(display_name="Ira", source="instagram_ad"),
            )
        )
        (conversation,) = await eventually(
            lambda: rows(running, Conversation, Conversation.channel == "sms")
        )
        (ira,) = await eventually(lambda: rows(running, Client, Client.name == "Ira"))
        assert ira.source_channel == "telegram" and ira.source_ref == "instagram_ad"

        # An opt-in then an opt-out keyword: consent follows, and the bot leaves them alone.
        await hub.bus.publish_inbound(sms(2, "START", consent=True))
        await hub.bus.publish_inbound(sms(3, "STOP", consent=False))
        entries = await eventually(
            lambda: rows(running, AuditEntry, AuditEntry.action == "consent"), timeout=10
        )
        await eventually(lambda: _count(running, AuditEntry, AuditEntry.action == "consent", 2))
        (card,) = await rows(running, Client, Client.phone == "+380671234567")
        assert card.marketing_consent is False
        assert [e.changes["marketing_consent"] for e in entries] in (
            [[False, True]],
            [[False, True], [True, False]],
        )
        texts = [m.text for m in await rows(running, Message, Message.direction == "in")]
        assert {"START", "STOP"} <= set(texts)

        # A staff reply goes out; the provider's receipts find it by the provider's id.
        email, _ = await add_owner(running)
        async with running.hub.sessions() as session:
            staff = await staff_by_email(session, email)
        queued = await send_reply(
            hub.sessions,
            hub.bus,
            conversation_id=conversation.id,
            text="Hi!",
            author=Author.staff,
            staff_id=staff.id,  # type: ignore[union-attr]
        )
        outbound_id = queued.message.public_id
        await hub.dispatcher.record(
            DeliveryStatus(
                outbound_id=outbound_id,
                status=DeliveryState.sent,
                provider_message_id="SMout1",
                segments=2,
            )
        )
        await hub.ctx.report(
            DeliveryStatus(
                channel="sms", provider_message_id="SMout1", status=DeliveryState.delivered
            )
        )
        (sent,) = await rows(running, Message, Message.public_id == outbound_id)
        assert sent.status == "delivered" and sent.segments == 2
        # A late "sent" never hides "delivered"; an unknown id is ignored.
        await hub.ctx.report(
            DeliveryStatus(channel="sms", provider_message_id="SMout1", status=DeliveryState.sent)
        )
        await hub.ctx.report(
            DeliveryStatus(channel="sms", provider_message_id="nope", status=DeliveryState.read)
        )
        (sent,) = await rows(running, Message, Message.public_id == outbound_id)
        assert sent.status == "delivered"

        # A blocked recipient: the identity is marked, and writing again clears it.
        await hub.ctx.report(
            DeliveryStatus(
                outbound_id=outbound_id,
                status=DeliveryState.failed,
                error="Forbidden: bot was blocked by the user",
                unreachable=True,
            )
        )
        (identity,) = await rows(running, ChannelIdentity, ChannelIdentity.channel == "sms")
        assert identity.unreachable_at is not None
        assert identity.unreachable_reason == "Forbidden: bot was blocked by the user"
        await hub.ctx.unreachable("telegram", "main", "42", "the user blocked the bot")
        (tg,) = await rows(running, ChannelIdentity, ChannelIdentity.channel == "telegram")
        assert tg.unreachable_reason == "the user blocked the bot"
        await hub.bus.publish_inbound(sms(4, "Are you open on Sunday?"))

        async def cleared() -> bool:
            (again,) = await rows(running, ChannelIdentity, ChannelIdentity.channel == "sms")
            return again.unreachable_at is None

        await eventually(cleared)
        async with client_session() as staff_browser:
            async with staff_browser.get(
                f"{running.base_url}/api/attachments/webchat/site/abc"
            ) as response:
                assert response.status == 401
    finally:
        await running.stop()


async def _count(running: RunningHub, model: Any, where: Any, n: int) -> bool:
    async with running.hub.sessions() as session:
        found = (await session.exec(select(model).where(where).order_by(col(model.id)))).all()
    return len(found) >= n


async def test_the_bot_never_answers_a_machine(settings, redis) -> None:
    """An auto-reply or bounce is stored and shown, but the bot stays quiet, so two robots
    can't answer each other forever; a person's identical message is answered."""
    del redis
    running = await start_hub(settings.model_copy(update={"hub_bot": "offline"}))
    try:
        robot = sms(1, "What are your prices?", automated=True)
        person = sms(2, "What are your prices?").model_copy(
            update={
                "chat_id": "+380501112233",
                "sender_id": "+380501112233",
                "contact": ContactHints(),
            }
        )
        # The robot's message is stored (and its event out) before the person writes, so by the
        # time the bot has answered the person it has seen the robot's message too.
        await running.hub.bus.publish_inbound(robot)
        await eventually(lambda: rows(running, Message, Message.provider_message_id == "SM1"))
        await running.hub.bus.publish_inbound(person)

        async def answered(chat_id: str) -> list[Message]:
            return await rows(
                running,
                Message,
                Message.direction == "out",
                Message.conversation_id == Conversation.id,
                Conversation.chat_id == chat_id,
            )

        await eventually(lambda: answered("+380501112233"), timeout=30)
        stored = await rows(running, Message, Message.provider_message_id == "SM1")
        assert [m.text for m in stored] == ["What are your prices?"]
        assert await answered("+380671234567") == []
    finally:
        await running.stop()


async def test_channel_state_survives_and_is_replaced(hub: RunningHub) -> None:
    ctx = hub.hub.ctx
    assert await ctx.load_state("email", "main", "cursor:INBOX") is None
    await ctx.save_state("email", "main", "cursor:INBOX", {"uidvalidity": 7, "last_uid": 41})
    await ctx.save_state("email", "main", "cursor:INBOX", {"uidvalidity": 7, "last_uid": 42})
    await ctx.save_state("email", "other", "cursor:INBOX", {"uidvalidity": 1, "last_uid": 1})
    assert await ctx.load_state("email", "main", "cursor:INBOX") == {
        "uidvalidity": 7,
        "last_uid": 42,
    }
    assert await ctx.load_state("instagram", "main", "cursor:INBOX") is None


async def test_a_reply_from_the_providers_app_is_staff_taking_the_chat(settings, redis) -> None:
    """The owner answers from the Instagram app: the hub shows it as a staff reply and the bot
    steps back; the echoes of the hub's own sends are not stored twice."""
    del redis
    running = await start_hub(settings.model_copy(update={"hub_bot": "offline"}))
    hub = running.hub

    def ig(mid: str, text: str, **fields: Any) -> InboundMessage:
        return InboundMessage(
            channel="instagram",
            inbox="main",
            chat_id="1784",
            sender_id="1784",
            provider_message_id=mid,
            text=text,
            **fields,
        )

    async def outbound() -> list[Message]:
        return await rows(running, Message, Message.direction == "out")

    try:
        await hub.bus.publish_inbound(ig("m1", "Hi! What are your prices?"))
        (bot_reply,) = await eventually(outbound)
        assert bot_reply.author == "bot" and bot_reply.provider_message_id is None
        # The echo of the bot's reply outran the send's answer: known by its text, also as
        # a channel without buttons renders it (choices and a link on lines of their own).
        await hub.bus.publish_inbound(ig("e1", bot_reply.text, own=True))
        rendered = f"{bot_reply.text[-30:]}\n1) Book\n2) Prices\nhttps://salon.example/p"
        await hub.bus.publish_inbound(ig("e0", rendered, own=True))
        # The send's answer came; a later echo is known by its id.
        await hub.dispatcher.record(
            DeliveryStatus(
                outbound_id=bot_reply.public_id, status=DeliveryState.sent, provider_message_id="e2"
            )
        )
        await hub.bus.publish_inbound(ig("e2", "(the same reply, as Meta echoes it)", own=True))
        # The owner writes from the phone, and Meta retries that webhook.
        for _ in range(2):
            await hub.bus.publish_inbound(ig("o1", "Олена на зв'язку, зараз підкажу!", own=True))

        async def by_staff() -> list[Message]:
            return [m for m in await outbound() if m.author == "staff"]

        (own,) = await eventually(by_staff)
        assert own.text == "Олена на зв'язку, зараз підкажу!" and own.status == "sent"
        assert own.provider_message_id == "o1"
        (conversation,) = await rows(running, Conversation, Conversation.chat_id == "1784")
        assert conversation.status == "human"
        # Everything up to the owner's message is handled in order: nothing else was stored.
        assert [m.provider_message_id for m in await outbound()] == ["e2", "o1"]
        # A picture's echo has no text to know it by and is stored as the owner's; when the
        # send's answer then names that id, the send keeps it and the copy goes.
        photo = Attachment(kind="image", url="https://cdn.example/p9.jpg")
        await hub.bus.publish_inbound(ig("p9", "", own=True, attachments=[photo]))
        await eventually(lambda: _count(running, Message, Message.author == "staff", 2))
        delivered = DeliveryStatus(
            outbound_id=bot_reply.public_id,
            status=DeliveryState.delivered,
            provider_message_id="p9",
        )
        await hub.dispatcher.record(delivered)
        assert [(m.provider_message_id, m.author) for m in await outbound()] == [
            ("p9", "bot"),
            ("o1", "staff"),
        ]
        (card,) = await rows(running, Client, Client.id == conversation.client_id)
        assert (await rows(running, ChannelIdentity, ChannelIdentity.client_id == card.id))[
            0
        ].external_id == "1784"
    finally:
        await running.stop()


async def test_answers_to_sends_at_the_same_moment_are_stored_together(hub: RunningHub) -> None:
    """The dispatcher's answers share one transaction and one SELECT; each still moves only
    its own message, and an "unreachable" answer marks its chat."""
    sessions = hub.hub.sessions
    async with transaction(sessions) as session:
        ids = []
        for n in range(6):
            client = Client(name=f"Guest {n}")
            session.add(client)
            await session.flush()
            session.add(
                ChannelIdentity(
                    client_id=client.id, channel="sms", inbox="main", external_id=f"+38050000{n}"
                )
            )
            conversation = Conversation(
                client_id=client.id, channel="sms", inbox="main", chat_id=f"+38050000{n}"
            )
            session.add(conversation)
            await session.flush()
            ids.append(conversation.id)
    queued = [
        await send_reply(sessions, hub.hub.bus, conversation_id=i, text="Hi", author=Author.system)
        for i in ids
    ]
    answers = [
        DeliveryStatus(
            outbound_id=q.message.public_id,
            status=DeliveryState.sent,
            provider_message_id=f"SM{n}",
            segments=1,
        )
        for n, q in enumerate(queued)
    ]
    answers[5] = DeliveryStatus(
        outbound_id=queued[5].message.public_id,
        status=DeliveryState.failed,
        error="the number is unreachable",
        unreachable=True,
    )
    seen: list[str] = []

    def note(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    engine = hub.hub.engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        await asyncio.gather(*(hub.hub.dispatcher.record(a, 1) for a in answers))
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert len([s for s in seen if "JOIN conversations" in s]) == 1, seen
    stored = await rows(hub, Message, Message.direction == "out")
    assert [(m.status, m.provider_message_id, m.attempts) for m in stored] == [
        *(("sent", f"SM{n}", 1) for n in range(5)),
        ("failed", None, 1),
    ]
    (gone,) = await rows(hub, ChannelIdentity, ChannelIdentity.external_id == "+380500005")
    assert gone.unreachable_at is not None
