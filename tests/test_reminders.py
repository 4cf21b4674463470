"""Reminder planning: local times across daylight saving, quiet hours, and keeping the planned
reminders in step with booking, moving and cancelling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.appointments import Author, book, cancel, reschedule, set_status
from crm_store.business import BusinessError, Rules, get_business, update_business
from crm_store.conversations import InboundData, record_inbound
from crm_store.db import transaction
from crm_store.models import ScheduledMessage, Service
from crm_store.reach import ReachRules, routes
from crm_store.reminders import (
    in_quiet_hours,
    quiet_end_after,
    quiet_start_before,
    reminder_times,
)
from tests.salon import KYIV, RULES, build_salon, kyiv

STAFF = Author("staff", None)


def local(moment: datetime) -> str:
    return moment.astimezone(KYIV).strftime("%Y-%m-%d %H:%M")


def planned(start: str, now: str, rules: Rules = RULES) -> list[tuple[int, str]]:
    return [
        (o, local(due)) for o, due in reminder_times(kyiv(start), (1440, 120), rules, kyiv(now))
    ]


# When ------------------------------------------------------------------------------------


def test_a_day_before_is_the_same_wall_time_across_the_spring_change() -> None:
    # Kyiv moves its clocks forward at 03:00 on Sunday 28 March 2027.
    assert planned("2027-03-28 12:00", "2027-03-20 10:00") == [
        (1440, "2027-03-27 12:00"),
        (120, "2027-03-28 10:00"),
    ]
    due = reminder_times(kyiv("2027-03-28 12:00"), (1440,), RULES, kyiv("2027-03-20 10:00"))
    # Only 23 hours of real time: the night was an hour short.
    assert kyiv("2027-03-28 12:00") - due[0][1] == timedelta(hours=23)


def test_a_day_before_is_the_same_wall_time_across_the_autumn_change() -> None:
    # ...and back at 04:00 on Sunday 25 October 2026.
    assert planned("2026-10-25 14:00", "2026-10-20 10:00") == [
        (1440, "2026-10-24 14:00"),
        (120, "2026-10-25 12:00"),
    ]
    due = reminder_times(kyiv("2026-10-25 14:00"), (1440,), RULES, kyiv("2026-10-20 10:00"))
    assert kyiv("2026-10-25 14:00") - due[0][1] == timedelta(hours=25)


def test_a_reminder_due_in_quiet_hours_goes_the_evening_before() -> None:
    # 2 h before 10:00 is 08:00, inside 21:00-09:00: it goes at 20:30 the day before.
    assert planned("2026-12-09 10:00", "2026-12-01 12:00") == [
        (1440, "2026-12-08 10:00"),
        (120, "2026-12-08 20:30"),
    ]
    # A day before a 22:00 slot would be in quiet hours too.
    assert planned("2026-12-09 22:30", "2026-12-01 12:00") == [
        (1440, "2026-12-08 20:30"),
        (120, "2026-12-09 20:30"),
    ]


def test_close_reminders_collapse_into_the_later_one() -> None:
    # 09:00: a day before is 09:00; 2 h before is 07:00 (quiet) → 20:30 the evening before;
    # with offsets 1440 and 720 (12 h → 21:00, quiet → 20:30) both land at 20:30: one stays.
    due = reminder_times(
        kyiv("2026-12-09 09:00"), (1440, 720, 120), RULES, kyiv("2026-12-01 12:00")
    )
    assert [(o, local(d)) for o, d in due] == [
        (1440, "2026-12-08 09:00"),
        (120, "2026-12-08 20:30"),
    ]


def test_reminders_already_past_are_not_planned() -> None:
    # Booked at 18:00 for 10:00 tomorrow: the day-before one has passed, the 2 h one moves
    # to 20:30 today and still comes.
    assert planned("2026-12-09 10:00", "2026-12-08 18:00") == [(120, "2026-12-08 20:30")]
    # Booked at 20:45: too late for both.
    assert planned("2026-12-09 10:00", "2026-12-08 20:45") == []
    # Booked an hour ahead: nothing to remind of.
    assert planned("2026-12-09 15:00", "2026-12-09 14:00") == []


def test_quiet_hours_edges() -> None:
    assert in_quiet_hours(kyiv("2026-12-08 21:00"), RULES)
    assert in_quiet_hours(kyiv("2026-12-09 08:59"), RULES)
    assert not in_quiet_hours(kyiv("2026-12-09 09:00"), RULES)
    assert not in_quiet_hours(kyiv("2026-12-08 20:59"), RULES)
    assert local(quiet_end_after(kyiv("2026-12-08 23:10"), RULES)) == "2026-12-09 09:00"
    assert local(quiet_end_after(kyiv("2026-12-09 02:10"), RULES)) == "2026-12-09 09:00"
    assert local(quiet_start_before(kyiv("2026-12-09 02:10"), RULES)) == "2026-12-08 21:00"
    daytime = Rules(tz=KYIV, quiet_start_min=13 * 60, quiet_end_min=14 * 60)
    assert in_quiet_hours(kyiv("2026-12-09 13:30"), daytime)
    assert not in_quiet_hours(kyiv("2026-12-09 22:00"), daytime)
    none = Rules(tz=KYIV, quiet_start_min=0, quiet_end_min=0)
    assert not in_quiet_hours(kyiv("2026-12-09 03:00"), none)


# Kept in step with the appointment ---------------------------------------------------------


async def reminders_of(
    sessions: async_sessionmaker[AsyncSession], appointment_id: int
) -> list[ScheduledMessage]:
    async with sessions() as session:
        query = (
            select(ScheduledMessage)
            .where(ScheduledMessage.appointment_id == appointment_id)
            .order_by(col(ScheduledMessage.id))
        )
        return list((await session.exec(query)).all())


async def test_booking_moving_and_cancelling_keep_reminders_in_step(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    salon = await build_salon(sessions)
    now = kyiv("2026-12-01 12:00")
    async with transaction(sessions) as session:
        booked = await book(
            session,
            client_id=salon.client,
            service_id=salon.manicure,
            master_id=salon.olena,
            start=kyiv("2026-12-09 15:00"),
            rules=RULES,
            now=now,
            author=STAFF,
        )
    first = await reminders_of(sessions, booked.id)  # type: ignore[arg-type]
    assert [(r.kind, r.status, local(r.due_at), r.urgent) for r in first] == [
        ("reminder", "pending", "2026-12-08 15:00", True),
        ("reminder", "pending", "2026-12-09 13:00", True),
    ]
    assert {r.payload["start_at"] for r in first} == {
        kyiv("2026-12-09 15:00").astimezone(UTC).isoformat()
    }

    async with transaction(sessions) as session:
        await reschedule(
            session,
            booked.id,  # type: ignore[arg-type]
            start=kyiv("2026-12-10 11:00"),
            rules=RULES,
            now=now + timedelta(minutes=5),
            author=STAFF,
        )
    moved = await reminders_of(sessions, booked.id)  # type: ignore[arg-type]
    assert [r.status for r in moved[:2]] == ["cancelled", "cancelled"]
    assert [(r.status, local(r.due_at)) for r in moved[2:]] == [
        ("pending", "2026-12-09 11:00"),
        ("pending", "2026-12-10 09:00"),
    ]

    # Moving it back plans again (the first rows stay cancelled).
    async with transaction(sessions) as session:
        await reschedule(
            session,
            booked.id,  # type: ignore[arg-type]
            start=kyiv("2026-12-09 15:00"),
            rules=RULES,
            now=now + timedelta(minutes=10),
            author=STAFF,
        )
    back = await reminders_of(sessions, booked.id)  # type: ignore[arg-type]
    assert [r.status for r in back].count("pending") == 2
    assert len(back) == 6

    # Confirming keeps what is ahead; cancelling drops it.
    async with transaction(sessions) as session:
        await set_status(
            session,
            booked.id,
            "confirmed",
            now=now + timedelta(minutes=11),
            author=STAFF,  # type: ignore[arg-type]
        )
    assert [r.status for r in await reminders_of(sessions, booked.id)].count("pending") == 2  # type: ignore[arg-type]
    async with transaction(sessions) as session:
        await cancel(session, booked.id, now=now + timedelta(minutes=12), author=STAFF)  # type: ignore[arg-type]
    after = await reminders_of(sessions, booked.id)  # type: ignore[arg-type]
    assert {r.status for r in after} == {"cancelled"}
    assert after[-1].last_error == "appointment cancelled"


async def test_a_service_may_have_its_own_reminders_or_none(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    salon = await build_salon(sessions)
    now = kyiv("2026-12-01 12:00")
    async with transaction(sessions) as session:
        haircut = await session.get(Service, salon.haircut)
        assert haircut is not None
        haircut.reminder_offsets_min = [2880]
        brows = await session.get(Service, salon.manicure)
        assert brows is not None
        brows.reminder_offsets_min = []
        session.add_all([haircut, brows])
    async with transaction(sessions) as session:
        cut = await book(
            session,
            client_id=salon.client,
            service_id=salon.haircut,
            master_id=salon.olena,
            start=kyiv("2026-12-09 15:00"),
            rules=RULES,
            now=now,
            author=STAFF,
        )
        nails = await book(
            session,
            client_id=salon.client,
            service_id=salon.manicure,
            master_id=salon.iryna,
            start=kyiv("2026-12-09 15:00"),
            rules=RULES,
            now=now,
            author=STAFF,
        )
    assert [local(r.due_at) for r in await reminders_of(sessions, cut.id)] == [  # type: ignore[arg-type]
        "2026-12-07 15:00"
    ]
    assert await reminders_of(sessions, nails.id) == []  # type: ignore[arg-type]


async def test_the_salon_sets_its_reminders_and_quiet_hours(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        saved = await update_business(
            session,
            {"reminder_offsets_min": [2880, 60], "quiet_start_min": 22 * 60, "quiet_end_min": 480},
            actor="staff",
        )
        rules = Rules.of(saved)
    assert (rules.reminder_offsets_min, rules.quiet_start_min, rules.quiet_end_min) == (
        (2880, 60),
        1320,
        480,
    )
    for bad in (
        {"reminder_offsets_min": [5]},
        {"reminder_offsets_min": [60, 60, 60, 60, 60, 60]},
        {"reminder_offsets_min": "1440"},
        {"quiet_start_min": 1440},
        {"quiet_end_min": -1},
    ):
        async with transaction(sessions) as session:
            with pytest.raises(BusinessError):
                await update_business(session, bad, actor="staff")
    async with sessions() as session:
        kept = await get_business(session)
    assert kept.reminder_offsets_min == [2880, 60]


async def test_a_group_the_client_wrote_in_is_never_a_route(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A reminder is personal: it goes to the client's own chat, never into a Telegram group
    or an Instagram group thread they also wrote in, even when the group is their latest."""
    now = kyiv("2027-03-01 10:00")
    said = [("7007", True, 30), ("-100555", False, 5), ("-100777", False, 1)]
    async with transaction(sessions) as session:
        for chat, private, minutes_ago in said:
            record = await record_inbound(
                session,
                InboundData(
                    channel="telegram", inbox="main", chat_id=chat, sender_id="7007",
                    provider_message_id=f"{chat}-1", sent_at=now, text="hi", private=private,
                ),
                now=now - timedelta(minutes=minutes_ago),
            )  # fmt: skip
        found = await routes(
            session,
            record.client,
            rules=ReachRules(enabled={"telegram": ("main",)}),
            now=now,
        )
    assert [(r.channel, r.chat_id) for r in found] == [("telegram", "7007")]
