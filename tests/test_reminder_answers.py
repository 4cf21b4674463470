"""Answers to reminders through the whole pipeline: a reminder was sent into the client's web
chat (a `sent` ScheduledMessage and the message itself), the client taps a button, and the
bot acts on that appointment at once: confirms it, cancels it (the time is free again and
staff get an `appointment` event) or starts moving it. Without a recent reminder a "Cancel"
is an ordinary request, and no reminder row can point the bot at another client's booking."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select

from bots import tokens
from bots.llm import REMINDER_MARKER
from bots.tools import ToolContext, Tools
from crm_store.appointments import Author, book
from crm_store.db import transaction
from crm_store.models import Appointment, AuditEntry, Conversation, ScheduledMessage
from hub.messages import Author as MessageAuthor
from hub.messages import QuickReply
from tests.fakes.openai_server import FakeOpenAI
from tests.salon import RULES, Salon, build_salon, kyiv
from tests.support import RunningHub, client_session, eventually, next_frame, reply
from tests.test_bot_pipeline import NOW, Visitor, bot_hub

TOMORROW_11 = kyiv("2027-03-02 11:00")
BUTTONS = ["Підтверджую", "Скасувати", "Перенести"]


async def chat(running: RunningHub, visitor: Visitor) -> Conversation:
    """The visitor's conversation, opened by a first message."""
    (hello,) = await visitor.say("Привіт!")
    assert hello["text"]
    async with running.hub.sessions() as session:
        return (await session.exec(select(Conversation))).one()


async def booked(
    running: RunningHub, salon: Salon, client_id: int, start: datetime = TOMORROW_11
) -> int:
    async with transaction(running.hub.sessions) as session:
        appointment = await book(
            session,
            client_id=client_id,
            service_id=salon.manicure,
            master_id=salon.olena,
            start=start,
            rules=RULES,
            now=NOW,
            author=Author("staff"),
        )
    return appointment.id  # type: ignore[return-value]


async def remind(
    running: RunningHub,
    visitor: Visitor,
    conversation: Conversation,
    appointment_id: int,
    *,
    sent_at: datetime = NOW - timedelta(hours=1),
    client_id: int | None = None,
) -> str:
    """What the scheduler leaves behind after a reminder: the message in the chat (read by the
    visitor) and its row, `sent`. Times in UTC, as the store keeps them (SQLite compares the
    stored wall time)."""
    sent_at = sent_at.astimezone(UTC)
    public_id = await reply(
        running,
        conversation.id,  # type: ignore[arg-type]
        "Нагадуємо про ваш запис: вівторок, 2 березня, о 11:00.\nМанікюр з покриттям, Olena.",
        author=MessageAuthor.system,
        quick_replies=[QuickReply(text=b) for b in BUTTONS],
    )
    frame = await next_frame(visitor.ws)
    assert frame["direction"] == "out" and frame["text"].startswith("Нагадуємо")
    async with transaction(running.hub.sessions) as session:
        session.add(
            ScheduledMessage(
                key=f"test-reminder:{appointment_id}:{public_id}",
                kind="reminder",
                client_id=client_id or conversation.client_id,
                appointment_id=appointment_id,
                due_at=sent_at,
                urgent=True,
                status="sent",
                channel="webchat",
                conversation_id=conversation.id,
                message_id=public_id,
                sent_at=sent_at,
                payload={"offset_min": 1440},
            )
        )
    return public_id


async def appointment(running: RunningHub, appointment_id: int) -> Appointment:
    async with running.hub.sessions() as session:
        found = await session.get(Appointment, appointment_id)
    assert found is not None
    return found


async def bot_audit(running: RunningHub) -> list[AuditEntry]:
    async with running.hub.sessions() as session:
        query = select(AuditEntry).where(AuditEntry.actor == "bot").order_by(col(AuditEntry.id))
        return list((await session.exec(query)).all())


async def appointment_events(running: RunningHub) -> list[dict[str, Any]]:
    entries = await running.hub.redis.xrange("hub:events", min="-", max="+")
    bodies = [json.loads(fields["data"]) for _, fields in entries]
    return [b for b in bodies if b["type"] == "appointment"]


async def test_one_tap_confirms_the_reminded_appointment(settings, redis) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        salon = await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            conversation = await chat(running, visitor)
            appointment_id = await booked(running, salon, conversation.client_id)
            await remind(running, visitor, conversation, appointment_id)

            (thanks,) = await visitor.say("Підтверджую")
        assert thanks["text"].startswith("Дякуємо, запис підтверджено")
        assert "02.03 о 11:00" in thanks["text"] and "Olena" in thanks["text"]
        assert (await appointment(running, appointment_id)).status == "confirmed"
        (entry,) = await bot_audit(running)
        assert (entry.entity, entry.entity_id, entry.action) == (
            "appointment",
            appointment_id,
            "confirmed",
        )
        (event,) = await appointment_events(running)
        assert event["action"] == "confirmed" and event["status"] == "confirmed"
        assert event["by"] == "client" and event["appointment_id"] == appointment_id
    finally:
        await running.stop()


async def test_cancel_in_answer_to_a_reminder_cancels_at_once_and_tells_staff(
    settings, redis
) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        salon = await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            conversation = await chat(running, visitor)
            appointment_id = await booked(running, salon, conversation.client_id)
            later = await booked(running, salon, conversation.client_id, kyiv("2027-03-05 15:00"))
            await remind(running, visitor, conversation, appointment_id)

            # The English button in a Ukrainian chat: one tap, no "are you sure?".
            (done,) = await visitor.say("Cancel")
        assert done["text"].startswith("Запис скасовано: Вт 02.03 о 11:00")
        assert "іншим разом" not in done["text"] and "інший час" in done["text"]
        assert done["quick_replies"] == ["Записатися", "Ні, дякую"]

        cancelled = await appointment(running, appointment_id)
        assert cancelled.status == "cancelled"
        assert (await appointment(running, later)).status == "booked"  # only the reminded one
        (entry,) = await bot_audit(running)
        assert entry.action == "cancelled" and "reminder" in entry.changes["reason"]
        # The time is free again: another client gets it.
        assert await booked(running, salon, salon.client)
        # Staff hear of it: one event, for the inbox's notice and the calendar.
        (event,) = await appointment_events(running)
        assert {
            "type": "appointment",
            "appointment_id": appointment_id,
            "action": "cancelled",
            "status": "cancelled",
            "client_id": conversation.client_id,
            "master_id": salon.olena,
            "conversation_id": conversation.id,
            "by": "client",
        }.items() <= event.items()
        assert datetime.fromisoformat(event["start"]) == TOMORROW_11
        # The reminders still planned for it are dropped with it.
        async with running.hub.sessions() as session:
            left = (
                await session.exec(
                    select(ScheduledMessage).where(
                        ScheduledMessage.appointment_id == appointment_id,
                        col(ScheduledMessage.status).in_(("pending", "sending")),
                    )
                )
            ).all()
        assert left == []
    finally:
        await running.stop()


async def test_reschedule_answer_moves_that_appointment(settings, redis) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        salon = await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            conversation = await chat(running, visitor)
            other = await booked(running, salon, conversation.client_id, kyiv("2027-03-04 12:00"))
            appointment_id = await booked(running, salon, conversation.client_id)
            await remind(running, visitor, conversation, appointment_id)

            (ask,) = await visitor.say("Перенести")
            # Two appointments, but the reminder said which: no "which one?".
            assert "Манікюр з покриттям" in ask["text"] and "перенести" in ask["text"]
            (offer,) = await visitor.say("У п'ятницю")
            labels = offer["quick_replies"]
            assert labels and all(label.startswith("Пт 05.03") for label in labels)
            (summary,) = await visitor.say(labels[0])
            assert summary["text"].startswith("Перенести") and summary["quick_replies"]
            (moved,) = await visitor.say("Так")
        assert moved["text"].startswith("Готово! Запис перенесено")
        start = (await appointment(running, appointment_id)).start_at
        assert start.astimezone(RULES.tz).strftime("%d.%m %H:%M") == f"05.03 {labels[0][-5:]}"
        other_start = (await appointment(running, other)).start_at
        assert other_start.astimezone(RULES.tz) == kyiv("2027-03-04 12:00")
        assert [e["action"] for e in await appointment_events(running)] == ["reschedule"]
    finally:
        await running.stop()


async def test_without_a_recent_reminder_cancel_is_an_ordinary_request(settings, redis) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        salon = await build_salon(running.hub.sessions)
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            conversation = await chat(running, visitor)
            appointment_id = await booked(running, salon, conversation.client_id)
            # A reminder four days old answers nothing any more.
            await remind(
                running, visitor, conversation, appointment_id, sent_at=NOW - timedelta(days=4)
            )

            (question,) = await visitor.say("Cancel")
            assert question["text"].startswith("Скасувати запис: Вт 02.03 11:00")
            assert question["quick_replies"] == ["Так", "Ні"]
            assert (await appointment(running, appointment_id)).status == "booked"
            (confirmed,) = await visitor.say("Підтверджую")  # not an answer to a reminder
            assert (await appointment(running, appointment_id)).status == "booked"
            assert confirmed["text"]
        assert await bot_audit(running) == []
        assert await appointment_events(running) == []
    finally:
        await running.stop()


async def test_no_reminder_row_lets_the_bot_touch_another_clients_appointment(
    settings, redis
) -> None:
    del redis
    running = await bot_hub(settings)
    try:
        salon = await build_salon(running.hub.sessions)
        others = await booked(running, salon, salon.client)  # Oksana's, not the visitor's
        async with client_session() as browser:
            visitor = await Visitor(running, browser).open()
            conversation = await chat(running, visitor)
            # Oksana's reminder written into this chat, and one that names the visitor but
            # Oksana's appointment: neither is the visitor's reminder of their own booking.
            await remind(running, visitor, conversation, others, client_id=salon.client)
            await remind(running, visitor, conversation, others)

            (answer,) = await visitor.say("Скасувати")
            assert "немає майбутніх записів" in answer["text"]
            (again,) = await visitor.say("Підтверджую")
            assert again["text"]
        assert (await appointment(running, others)).status == "booked"
        assert await bot_audit(running) == []
        assert await appointment_events(running) == []

        # The tools themselves refuse it too, whatever the id.
        tools = Tools(running.hub.sessions, clock=lambda: NOW)
        ctx = ToolContext(conversation.id)  # type: ignore[arg-type]
        refused = await tools.call("confirm", {"appointment_id": others}, ctx)
        assert not refused.ok and "no upcoming appointment" in (refused.error or "")
        reminded = await tools.call("reminded_appointment", {}, ctx)
        assert reminded.ok and reminded.data == {"appointment": None}
        assert (await appointment(running, others)).status == "booked"
    finally:
        await running.stop()


async def test_the_llm_reads_the_reminder_and_confirms_through_the_tool(settings, redis) -> None:
    """The model gets the reminder in the history, marked with its appointment, and the
    `confirm` tool; the hub's own reminder is not passed off as the model's words."""
    del redis
    tokens.set_encoding(None)  # no tiktoken download attempt
    async with FakeOpenAI() as fake:
        running = await bot_hub(
            settings, hub_bot="llm", openai_api_key="test-key", openai_base_url=fake.base_url
        )
        try:
            salon = await build_salon(running.hub.sessions)
            fake.reply("Вітаю! Чим можу допомогти?")
            async with client_session() as browser:
                visitor = await Visitor(running, browser).open()
                conversation = await chat(running, visitor)
                appointment_id = await booked(running, salon, conversation.client_id)
                await remind(running, visitor, conversation, appointment_id)
                fake.call_tool("confirm", {"appointment_id": appointment_id}).reply(
                    "Дякуємо, чекаємо на вас завтра об 11:00!"
                )
                (thanks,) = await visitor.say("Підтверджую")
            assert thanks["text"].startswith("Дякуємо")
            assert (await appointment(running, appointment_id)).status == "confirmed"
            request = fake.requests[1]
            assert "confirm" in [t["function"]["name"] for t in request["tools"]]
            assert "reminded_appointment" not in [t["function"]["name"] for t in request["tools"]]
            marker = REMINDER_MARKER.replace("{id}", str(appointment_id))
            history = [m for m in request["messages"] if m["role"] == "assistant"]
            assert history[-1]["content"].startswith(f"{marker} Нагадуємо про ваш запис")
            assert "[reminder of appointment N]" in request["messages"][0]["content"]
            result = next(m for m in fake.requests[2]["messages"] if m["role"] == "tool")
            assert json.loads(result["content"])["confirmed"]["status"] == "confirmed"
            (event,) = await eventually(lambda: appointment_events(running))
            assert event["action"] == "confirmed" and event["by"] == "client"
        finally:
            await running.stop()
            tokens.reset_encoding()
