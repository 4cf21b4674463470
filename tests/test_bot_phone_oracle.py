"""The bot is no membership oracle: a stranger who types a phone number (to save it, to ask
"what do I have booked?", to book, to cancel) hears, to the byte, what they would hear if the
number were nobody's. The same dialogue runs twice against the offline brain, once while the
number is on a client's card and once after it has left the salon's records."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bots.base import Turn
from bots.offline import OfflineBrain
from bots.tools import Tools
from crm_store.db import transaction
from crm_store.models import Appointment, AuditEntry, Client
from tests.salon import build_salon
from tests.test_bot_tools import NOW, booked_for, chat_of_a_stranger

NUMBER = "067 123 45 67"  # the salon's client Oksana's, +380671234567 (tests/salon.py)
DIALOGUES = {
    "uk": [
        f"Добрий день, мій номер {NUMBER}",
        "Коли я записана?",
        "Хочу на манікюр з покриттям завтра о 15:00",
        "Так",  # to the summary the bot asks about before it books
        "Скасуйте мій запис",
        "Так",
        f"Скасуйте, будь ласка, запис на номер {NUMBER}",
    ],
    "en": [
        f"Hello, my number is {NUMBER}",
        "When is my appointment?",
        "Gel manicure tomorrow at 15:00 please",
        "Yes",
        "Cancel my appointment",
        "Yes",
        f"Please cancel the appointment for {NUMBER}",
    ],
    "ru": [
        f"Здравствуйте, мой номер {NUMBER}",
        "Когда я записана?",
        "Хочу на маникюр с покрытием завтра в 15:00",
        "Да",
        "Отмените мою запись",
        "Да",
        f"Отмените, пожалуйста, запись на номер {NUMBER}",
    ],
}

Said = list[tuple[str, tuple[str, ...], bool]]


async def dialogue(sessions, chat: str, language: str) -> tuple[Said, int]:
    """Every reply of the bot to a new web chat visitor saying the language's lines."""
    conversation, client = await chat_of_a_stranger(sessions, chat)
    brain = OfflineBrain(Tools(sessions, clock=lambda: NOW), sessions, clock=lambda: NOW)
    said: Said = []
    for n, line in enumerate(DIALOGUES[language]):
        turn = Turn(
            conversation_id=conversation,
            client_id=client,
            channel="webchat",
            message_id=f"{chat}-{n}",
            text=line,
            language=language,
        )
        said += [(r.text, tuple(r.quick_replies), r.handoff) for r in await brain.respond(turn)]
    return said, client


@pytest.mark.parametrize("language", ["uk", "en", "ru"])
async def test_a_strangers_dialogue_with_a_clients_number_is_byte_for_byte_a_new_numbers(
    sessions, language: str
) -> None:
    salon = await build_salon(sessions)
    theirs = await booked_for(sessions, salon, salon.client, "2027-03-03 11:00")

    known, stranger = await dialogue(sessions, "v-known", language)
    async with transaction(sessions) as session:  # the number leaves the salon's records
        card = await session.get(Client, salon.client)
        assert card is not None
        card.phone = "+380930000000"
        session.add(card)
    unknown, newcomer = await dialogue(sessions, "v-new", language)

    assert [text for text, _, _ in known] == [text for text, _, _ in unknown]
    assert known == unknown
    # The dialogue did what it says: booked and cancelled the stranger's own appointment, and
    # never showed or touched the client's.
    assert any("11:00" not in text and "15:00" in text for text, _, _ in known)
    assert not any("03.03" in text or "Oksana" in text for text, _, _ in known)
    async with sessions() as session:
        rows = (await session.exec(select(Appointment).order_by(Appointment.id))).all()
        claims = (
            await session.exec(select(AuditEntry).where(AuditEntry.action == "phone_claimed"))
        ).all()
        first = await session.get(Client, stranger)
        second = await session.get(Client, newcomer)
    assert [(a.id, a.status) for a in rows if a.client_id == salon.client] == [(theirs, "booked")]
    assert [(a.client_id, a.status) for a in rows if a.id != theirs] == [
        (stranger, "cancelled"),
        (newcomer, "cancelled"),
    ]
    # The quiet part: the number on the client's card became a claim for staff to check, and
    # the new number was saved.
    assert {(c.entity_id, c.changes["card_with_that_phone"]) for c in claims} == {
        (stranger, salon.client)
    }
    assert first is not None and first.phone is None
    assert second is not None and second.phone == "+380671234567"
