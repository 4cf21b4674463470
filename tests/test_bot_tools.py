"""The bot's tools: typed, acting only for the conversation's client, refusing with results."""

from __future__ import annotations

import json

from sqlmodel import select

from bots.tools import ToolContext, Tools
from crm_store.appointments import Author, book
from crm_store.db import transaction
from crm_store.models import (
    Appointment,
    AuditEntry,
    ChannelIdentity,
    Client,
    Conversation,
    Message,
)
from tests.salon import RULES, Salon, build_salon, kyiv

NOW = kyiv("2027-03-01 09:00")


async def chat_of_a_stranger(sessions, chat: str = "v1", name: str = "Visitor") -> tuple[int, int]:
    """A web chat visitor the salon doesn't know yet: (conversation id, client id)."""
    async with transaction(sessions) as session:
        stranger = Client(name=name)
        session.add(stranger)
        await session.flush()
        session.add(
            ChannelIdentity(
                client_id=stranger.id, channel="webchat", inbox="site", external_id=chat
            )
        )
        conversation = Conversation(
            client_id=stranger.id, channel="webchat", inbox="site", chat_id=chat
        )
        session.add(conversation)
        await session.flush()
        session.add(
            Message(
                public_id=f"m-{chat}",
                conversation_id=conversation.id,
                client_id=stranger.id,
                channel="webchat",
                inbox="site",
                direction="in",
                author="client",
                text="hi",
            )
        )
        return conversation.id, stranger.id  # type: ignore[return-value]


async def booked_for(sessions, salon: Salon, client_id: int, when: str) -> int:
    async with transaction(sessions) as session:
        appointment = await book(
            session,
            client_id=client_id,
            service_id=salon.manicure,
            master_id=salon.olena,
            start=kyiv(when),
            rules=RULES,
            now=NOW,
            author=Author("staff"),
        )
        return appointment.id  # type: ignore[return-value]


async def test_specs_are_openai_functions_without_noise(sessions) -> None:
    specs = Tools(sessions, clock=lambda: NOW).for_model().specs()
    names = [s["function"]["name"] for s in specs]
    assert names == [
        "list_services",
        "find_slots",
        "book",
        "my_appointments",
        "reschedule",
        "cancel",
        "confirm",
        "update_contact",
        "handoff",
    ]
    find = next(s["function"] for s in specs if s["function"]["name"] == "find_slots")
    assert find["parameters"]["required"] == ["service_id"]
    assert "title" not in find["parameters"]["properties"]["service_id"]
    assert find["description"].startswith("Free start times")


async def test_bad_arguments_and_unknown_tools_are_results_not_exceptions(sessions) -> None:
    salon = await build_salon(sessions)
    conversation, _ = await chat_of_a_stranger(sessions)
    tools, ctx = Tools(sessions, clock=lambda: NOW), ToolContext(conversation, "en")
    cases = [
        ("teleport", {}, "unknown tool"),
        ("book", "{not json", "not JSON"),
        ("book", {"service_id": "many", "start": "2027-03-02T15:00"}, "service_id"),
        ("book", {"service_id": salon.manicure}, "start"),
        ("book", {"service_id": salon.manicure, "start": "soon", "x": 1}, "invalid arguments"),
        ("find_slots", {"service_id": 9999}, "no service with id 9999"),
        ("find_slots", {"service_id": salon.manicure, "master_id": 9999}, "no master"),
        ("update_contact", {}, "give a name or a phone"),
        ("update_contact", {"phone": "12345"}, "not a valid phone number"),
        ("cancel", {"appointment_id": 9999}, "no upcoming appointment 9999"),
    ]
    for name, args, error in cases:
        result = await tools.call(name, args, ctx)
        assert not result.ok and error in (result.error or ""), (name, args, result)
        assert '"ok": false' in result.to_json()
    refused = await tools.call(
        "book", {"service_id": salon.manicure, "start": "2027-03-01T09:30"}, ctx
    )
    assert refused.data["reason"] == "too_soon"  # within the 60-minute lead
    assert refused.data["alternatives"][0]["start"] == "2027-03-01T10:00"
    async with sessions() as session:
        assert (await session.exec(select(Appointment))).all() == []


async def test_another_clients_appointment_is_out_of_reach(sessions) -> None:
    salon = await build_salon(sessions)
    conversation, stranger = await chat_of_a_stranger(sessions)
    theirs = await booked_for(sessions, salon, salon.client, "2027-03-03 11:00")
    mine = await booked_for(sessions, salon, stranger, "2027-03-04 11:00")
    tools, ctx = Tools(sessions, clock=lambda: NOW), ToolContext(conversation, "uk")

    listed = await tools.call("my_appointments", {}, ctx)
    assert [a["id"] for a in listed.data["appointments"]] == [mine]
    for name, args in (
        ("cancel", {"appointment_id": theirs}),
        ("reschedule", {"appointment_id": theirs, "start": "2027-03-05T12:00"}),
    ):
        result = await tools.call(name, args, ctx)
        assert not result.ok and f"no upcoming appointment {theirs}" in (result.error or "")
    moved = await tools.call(
        "reschedule", {"appointment_id": mine, "start": "2027-03-05T12:00"}, ctx
    )
    assert moved.ok and moved.data["moved"]["time"] == "12:00"
    cancelled = await tools.call("cancel", {"appointment_id": mine}, ctx)
    assert cancelled.ok
    async with sessions() as session:
        their_row = await session.get(Appointment, theirs)
        my_row = await session.get(Appointment, mine)
        entries = (await session.exec(select(AuditEntry).where(AuditEntry.actor == "bot"))).all()
    assert their_row is not None and their_row.status == "booked"
    assert my_row is not None and my_row.status == "cancelled"
    assert [(e.entity_id, e.action) for e in entries] == [(mine, "reschedule"), (mine, "cancelled")]


async def test_a_typed_phone_of_another_card_is_a_claim_for_staff_not_a_link(sessions) -> None:
    """Anyone can type a neighbour's number: linking on it would show and let them cancel the
    neighbour's appointments. The claim goes to the audit log for staff to check."""
    salon = await build_salon(sessions)  # its client has +380671234567
    conversation, stranger = await chat_of_a_stranger(sessions)
    await booked_for(sessions, salon, salon.client, "2027-03-03 11:00")
    tools, ctx = Tools(sessions, clock=lambda: NOW), ToolContext(conversation, "uk")

    result = await tools.call("update_contact", {"name": "Оксана", "phone": "067 123 45 67"}, ctx)
    assert result.ok and result.data == {"name": "Оксана", "phone": "+380671234567"}
    listed = await tools.call("my_appointments", {}, ctx)
    assert listed.data["appointments"] == []
    async with sessions() as session:
        conv = await session.get(Conversation, conversation)
        visitor = await session.get(Client, stranger)
        card = await session.get(Client, salon.client)
        claims = (
            await session.exec(select(AuditEntry).where(AuditEntry.action == "phone_claimed"))
        ).all()
    assert conv is not None and conv.client_id == stranger
    assert visitor is not None and visitor.merged_into_id is None and visitor.phone is None
    assert card is not None and card.name == "Oksana" and card.merged_into_id is None
    assert [(c.entity_id, c.actor, c.changes) for c in claims] == [
        (stranger, "bot", {"phone": "+380671234567", "card_with_that_phone": salon.client})
    ]

    # A new number for a card of its own is simply saved.
    conversation2, _ = await chat_of_a_stranger(sessions, "v2", "Visitor 2")
    saved = await tools.call(
        "update_contact", {"phone": "+380 50 999 88 77"}, ToolContext(conversation2)
    )
    assert saved.ok and saved.data == {
        "name": "Visitor 2",
        "phone": "+380509998877",
    }


async def test_update_contact_answers_the_same_whether_the_number_is_known(sessions) -> None:
    """What the model (or the offline brain) hears back must not tell a stranger whether a
    number is a client's: the same bytes for a number on a card and for a new one, then and
    when booking afterwards (no "the client has no phone" that asks for it again)."""
    salon = await build_salon(sessions)  # its client Oksana has +380671234567
    tools = Tools(sessions, clock=lambda: NOW)
    said = {"name": "Оксана", "phone": "067 123 45 67"}

    async def stranger_gives_the_number(chat: str) -> tuple[str, bool, int]:
        conversation, client = await chat_of_a_stranger(sessions, chat)
        ctx = ToolContext(conversation, "uk")
        answer = await tools.call("update_contact", said, ctx)
        start = "2027-03-02T15:00"
        booked = await tools.call(
            "book", {"service_id": salon.manicure, "master_id": salon.olena, "start": start}, ctx
        )
        assert booked.ok
        # The next stranger finds the same free time: this booking is not theirs to see.
        await tools.call("cancel", {"appointment_id": booked.data["booked"]["id"]}, ctx)
        return answer.to_json(), booked.data["client_has_phone"], client

    known_answer, known_phone, known_client = await stranger_gives_the_number("v-known")
    async with transaction(sessions) as session:  # the number leaves the salon's records
        card = await session.get(Client, salon.client)
        assert card is not None
        card.phone = "+380930000000"
        session.add(card)
    new_answer, new_phone, new_client = await stranger_gives_the_number("v-new")

    assert known_answer == new_answer == '{"ok": true, "name": "Оксана", "phone": "+380671234567"}'
    assert known_phone is new_phone is True
    async with sessions() as session:
        first = await session.get(Client, known_client)
        second = await session.get(Client, new_client)
    assert first is not None and first.phone is None  # a claim for staff, not a link
    assert second is not None and second.phone == "+380671234567"


async def test_the_model_cannot_call_a_tool_it_is_not_shown(sessions) -> None:
    """The offline brain's own tools are refused to the model as if they did not exist."""
    salon = await build_salon(sessions)
    conversation, stranger = await chat_of_a_stranger(sessions)
    await booked_for(sessions, salon, stranger, "2027-03-04 11:00")
    tools, ctx = Tools(sessions, clock=lambda: NOW), ToolContext(conversation, "en")
    model = tools.for_model()

    hidden = await model.call("reminded_appointment", {}, ctx)
    nowhere = await model.call("teleport", {}, ctx)
    assert hidden.to_json() == nowhere.to_json().replace("teleport", "reminded_appointment")
    assert hidden.to_json() == '{"ok": false, "error": "unknown tool \'reminded_appointment\'"}'
    assert "reminded_appointment" not in json.dumps(model.specs())
    # The offline brain's surface still has it.
    assert (await tools.call("reminded_appointment", {}, ctx)).ok
    # What the model may call runs as before.
    mine = await model.call("my_appointments", {}, ctx)
    assert mine.ok and len(mine.data["appointments"]) == 1


async def test_find_slots_keeps_to_the_client_window_and_the_times_asked(sessions) -> None:
    salon = await build_salon(sessions)
    conversation, _ = await chat_of_a_stranger(sessions)
    tools, ctx = Tools(sessions, clock=lambda: NOW), ToolContext(conversation, "en")
    result = await tools.call(
        "find_slots",
        {"service_id": salon.manicure, "master_id": salon.olena, "limit": 3},
        ctx,
    )
    assert [s["start"] for s in result.data["slots"]] == [
        "2027-03-01T10:00",
        "2027-03-01T10:15",
        "2027-03-01T10:30",
    ]
    assert result.data["service"] == "Gel manicure" and result.data["more"] > 0
    evening = await tools.call(
        "find_slots",
        {
            "service_id": salon.manicure,
            "master_id": salon.olena,
            "date_from": "2027-03-02",
            "date_to": "2027-03-02",
            "after": "17:00",
            "before": "17:30",
        },
        ctx,
    )
    assert [s["time"] for s in evening.data["slots"]] == ["17:00", "17:15", "17:30"]
    far = await tools.call(
        "find_slots", {"service_id": salon.manicure, "date_from": "2027-06-01"}, ctx
    )
    assert far.ok and far.data["slots"] == []  # beyond the 60-day horizon
    handed = await tools.call("handoff", {"reason": "asks about allergies"}, ctx)
    assert handed.ok and handed.handoff == "asks about allergies"
