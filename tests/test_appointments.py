"""Booking, moving, cancelling, closing; clear refusals; no double booking under concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from crm_store.appointments import (
    AppointmentError,
    Author,
    SlotUnavailable,
    book,
    cancel,
    reschedule,
    set_status,
)
from crm_store.catalog import add_time_off
from crm_store.db import transaction
from crm_store.models import Appointment, AuditEntry, Client
from crm_store.slots import find_slots
from tests.salon import KYIV, RULES, Salon, build_salon, kyiv

NOW = kyiv("2027-03-01 09:00")
ADMIN = Author("staff", None)
BOT = Author("bot")
ROOT = Path(__file__).resolve().parent.parent
# Twenty starts, each overlapping every other (a manicure holds 75 minutes).
CLASHING = [kyiv("2027-03-10 10:00") + timedelta(minutes=15 * (i % 5)) for i in range(20)]


async def book_one(sessions, salon: Salon, when: datetime, **kwargs) -> Appointment:
    kwargs.setdefault("master_id", salon.olena)
    kwargs.setdefault("service_id", salon.manicure)
    kwargs.setdefault("author", ADMIN)
    kwargs.setdefault("now", NOW)
    async with transaction(sessions) as session:
        return await book(session, client_id=salon.client, start=when, rules=RULES, **kwargs)


async def free_at(sessions, salon: Salon, when: datetime, master: int) -> bool:
    async with sessions() as session:
        found = await find_slots(
            session,
            service_id=salon.manicure,
            master_id=master,
            rules=RULES,
            first_day=when.astimezone(KYIV).date(),
            last_day=when.astimezone(KYIV).date(),
        )
    return any(s.start == when for s in found)


async def audit_of(sessions, appointment_id: int) -> list[AuditEntry]:
    async with sessions() as session:
        rows = await session.exec(
            select(AuditEntry)
            .where(AuditEntry.entity == "appointment", AuditEntry.entity_id == appointment_id)
            .order_by(col(AuditEntry.id))
        )
        return list(rows.all())


async def live_count(sessions) -> int:
    async with sessions() as session:
        rows = await session.exec(select(Appointment).where(Appointment.status != "cancelled"))
        return len(rows.all())


async def test_booking_records_price_times_and_audit(sessions) -> None:
    salon = await build_salon(sessions)
    appt = await book_one(
        sessions, salon, kyiv("2027-03-10 10:00"), master_id=salon.iryna, source="bot", author=BOT
    )
    assert (appt.status, appt.source, appt.price_minor) == ("booked", "bot", 90_000)
    assert appt.end_at - appt.start_at == timedelta(minutes=90)  # Iryna's own duration
    assert appt.block_end_at - appt.end_at == timedelta(minutes=15)
    [entry] = await audit_of(sessions, appt.id)
    assert (entry.actor, entry.action) == ("bot", "book")
    assert entry.changes["start_at"] == "2027-03-10T08:00:00+00:00"
    assert not await free_at(sessions, salon, kyiv("2027-03-10 10:00"), salon.iryna)


async def test_taken_time_is_refused_with_nearest_alternatives(sessions) -> None:
    salon = await build_salon(sessions)
    await book_one(sessions, salon, kyiv("2027-03-10 15:00"))
    with pytest.raises(SlotUnavailable) as refused:
        await book_one(sessions, salon, kyiv("2027-03-10 15:30"))
    assert refused.value.reason == "taken"
    assert "already booked" in str(refused.value)
    near = [s.start.astimezone(KYIV).strftime("%d %H:%M") for s in refused.value.alternatives]
    # Olena is busy 15:00-16:15; a manicure at 14:00 would run its buffer into 15:00, so the
    # nearest free starts are after the busy hour (12:00, before lunch, is further away).
    assert near == ["10 16:15", "10 16:30", "10 16:45", "10 17:00", "10 17:15"]
    assert all(s.master_id == salon.olena for s in refused.value.alternatives)
    assert await live_count(sessions) == 1


@pytest.mark.parametrize(
    ("when", "kwargs", "reason"),
    [
        ("2027-03-01 09:30", {"client_window": True}, "too_soon"),
        ("2027-02-28 12:00", {"client_window": False}, "past"),
        ("2027-06-01 12:00", {"client_window": True}, "too_far"),
        ("2027-03-10 13:00", {}, "not_working"),  # lunch
        ("2027-03-13 12:00", {}, "not_working"),  # Saturday
        ("2027-03-10 10:05", {}, "off_grid"),
        ("2027-03-10 12:00", {"master_id": "iryna", "service_id": "haircut"}, "not_offered"),
    ],
)
async def test_refusals_say_why(sessions, when: str, kwargs: dict, reason: str) -> None:
    salon = await build_salon(sessions)
    kwargs = {k: getattr(salon, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(SlotUnavailable) as refused:
        await book_one(sessions, salon, kyiv(when), **kwargs)
    assert refused.value.reason == reason
    assert await live_count(sessions) == 0


async def test_time_off_refuses_and_offers_alternatives(sessions) -> None:
    salon = await build_salon(sessions)
    async with transaction(sessions) as session:
        await add_time_off(
            session, salon.olena, kyiv("2027-03-10 00:00"), kyiv("2027-03-11 00:00"), "sick"
        )
    with pytest.raises(SlotUnavailable) as refused:
        await book_one(sessions, salon, kyiv("2027-03-10 12:00"))
    assert refused.value.reason == "not_working"
    days = {s.start.astimezone(KYIV).date() for s in refused.value.alternatives}
    assert date(2027, 3, 10) not in days and days


async def test_any_master_books_the_least_loaded(sessions) -> None:
    salon = await build_salon(sessions)
    await book_one(sessions, salon, kyiv("2027-03-10 16:00"), master_id=salon.iryna)
    appt = await book_one(sessions, salon, kyiv("2027-03-10 10:00"), master_id=None)
    assert appt.master_id == salon.olena
    lunch = await book_one(sessions, salon, kyiv("2027-03-10 13:00"), master_id=None)
    assert lunch.master_id == salon.iryna  # Olena is at lunch


async def test_reschedule_frees_the_old_time(sessions) -> None:
    salon = await build_salon(sessions)
    old, new = kyiv("2027-03-10 10:00"), kyiv("2027-03-11 15:00")
    appt = await book_one(sessions, salon, old)
    async with transaction(sessions) as session:
        await set_status(session, appt.id, "confirmed", now=NOW, author=ADMIN)
    async with transaction(sessions) as session:
        moved = await reschedule(session, appt.id, start=new, rules=RULES, now=NOW, author=BOT)
    assert moved.status == "booked"  # the confirmation was for the old time
    assert await free_at(sessions, salon, old, salon.olena)
    assert not await free_at(sessions, salon, new, salon.olena)
    entry = (await audit_of(sessions, appt.id))[-1]
    assert (entry.actor, entry.action) == ("bot", "reschedule")
    assert entry.changes["start_at"] == ["2027-03-10T08:00:00+00:00", "2027-03-11T13:00:00+00:00"]
    assert entry.changes["status"] == ["confirmed", "booked"]


async def test_reschedule_within_its_own_time_and_to_another_master(sessions) -> None:
    salon = await build_salon(sessions)
    appt = await book_one(sessions, salon, kyiv("2027-03-10 10:00"))
    async with transaction(sessions) as session:
        # 10:30 overlaps the appointment's own old time: that is no obstacle.
        moved = await reschedule(
            session, appt.id, start=kyiv("2027-03-10 10:30"), rules=RULES, now=NOW, author=ADMIN
        )
    assert moved.start_at.astimezone(KYIV).strftime("%H:%M") == "10:30"
    async with transaction(sessions) as session:
        moved = await reschedule(
            session,
            appt.id,
            start=kyiv("2027-03-10 13:00"),
            master_id=salon.iryna,
            rules=RULES,
            now=NOW,
            author=ADMIN,
        )
    assert (moved.master_id, moved.end_at - moved.start_at) == (salon.iryna, timedelta(minutes=90))
    assert await free_at(sessions, salon, kyiv("2027-03-10 10:30"), salon.olena)


async def test_moving_onto_a_taken_time_changes_nothing(sessions) -> None:
    salon = await build_salon(sessions)
    first = await book_one(sessions, salon, kyiv("2027-03-10 10:00"))
    await book_one(sessions, salon, kyiv("2027-03-10 15:00"))
    with pytest.raises(SlotUnavailable):
        async with transaction(sessions) as session:
            await reschedule(
                session,
                first.id,
                start=kyiv("2027-03-10 15:15"),
                rules=RULES,
                now=NOW,
                author=ADMIN,
            )
    async with sessions() as session:
        kept = await session.get(Appointment, first.id)
    assert kept.start_at.replace(tzinfo=None) == datetime(2027, 3, 10, 8, 0)
    assert len(await audit_of(sessions, first.id)) == 1


async def test_cancel_frees_the_time_and_closed_ones_stay_closed(sessions) -> None:
    salon = await build_salon(sessions)
    when = kyiv("2027-03-10 10:00")
    appt = await book_one(sessions, salon, when)
    async with transaction(sessions) as session:
        await cancel(session, appt.id, now=NOW, author=ADMIN, reason="client called")
    assert await free_at(sessions, salon, when, salon.olena)
    again = await book_one(sessions, salon, when)  # the time can be booked again
    assert again.id != appt.id
    entry = (await audit_of(sessions, appt.id))[-1]
    assert entry.changes == {"status": ["booked", "cancelled"], "reason": "client called"}
    with pytest.raises(AppointmentError, match="cancelled appointment can't move"):
        async with transaction(sessions) as session:
            await reschedule(session, appt.id, start=when, rules=RULES, now=NOW, author=ADMIN)


async def test_done_and_no_show(sessions) -> None:
    salon = await build_salon(sessions)
    appt = await book_one(sessions, salon, kyiv("2027-03-10 10:00"))
    with pytest.raises(AppointmentError, match="has not started"):
        async with transaction(sessions) as session:
            await set_status(session, appt.id, "done", now=NOW, author=ADMIN)
    later = kyiv("2027-03-10 12:00")
    async with transaction(sessions) as session:
        await set_status(session, appt.id, "no_show", now=later, author=ADMIN)
    async with transaction(sessions) as session:
        await set_status(session, appt.id, "done", now=later, author=ADMIN)  # a correction
        client = await session.get(Client, salon.client)
        assert client.last_visit_at is not None
    with pytest.raises(AppointmentError, match="done appointment can't become cancelled"):
        async with transaction(sessions) as session:
            await cancel(session, appt.id, now=later, author=ADMIN)
    actions = [e.action for e in await audit_of(sessions, appt.id)]
    assert actions == ["book", "no_show", "done"]


async def test_the_database_itself_refuses_overlaps(sessions) -> None:
    """A writer that skips the booking functions still can't double-book."""
    salon = await build_salon(sessions)
    appt = await book_one(sessions, salon, kyiv("2027-03-10 10:00"))
    clash = Appointment(
        client_id=salon.client,
        master_id=salon.olena,
        service_id=salon.manicure,
        start_at=appt.start_at + timedelta(minutes=30),
        end_at=appt.start_at + timedelta(minutes=90),
        block_end_at=appt.start_at + timedelta(minutes=105),
    )
    with pytest.raises(IntegrityError, match="overlap"):
        async with transaction(sessions) as session:
            session.add(clash)
    second = await book_one(sessions, salon, kyiv("2027-03-10 15:00"))
    with pytest.raises(IntegrityError, match="overlap"):
        async with transaction(sessions) as session:
            moved = await session.get(Appointment, second.id)
            moved.start_at, moved.end_at, moved.block_end_at = (
                clash.start_at,
                clash.end_at,
                clash.block_end_at,
            )
    # Cancelled appointments hold nothing, so a cancelled clash is allowed.
    clash.id, clash.status = None, "cancelled"
    async with transaction(sessions) as session:
        session.add(clash)
    assert await live_count(sessions) == 2


async def test_twenty_concurrent_bookings_one_process(sessions) -> None:
    salon = await build_salon(sessions)

    async def attempt(when: datetime) -> str:
        try:
            await book_one(sessions, salon, when)
            return "booked"
        except SlotUnavailable as exc:
            return exc.reason

    outcomes = await asyncio.gather(*(attempt(when) for when in CLASHING))
    assert outcomes.count("booked") == 1
    assert set(outcomes) == {"booked", "taken"}
    assert await live_count(sessions) == 1


async def test_twenty_concurrent_bookings_two_processes(sessions, db: str) -> None:
    salon = await build_salon(sessions)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(salon.client), str(salon.manicure), str(salon.olena)]
    halves = [CLASHING[0::2], CLASHING[1::2]]
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.booking_worker",
            db,
            *args,
            *(when.isoformat() for when in half),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        for half in halves
    ]
    try:
        for worker in workers:  # both connected before either starts
            assert (await asyncio.wait_for(worker.stdout.readline(), 60)).strip() == b"ready"
        for worker in workers:
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        results = [await asyncio.wait_for(w.communicate(), 120) for w in workers]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
    outcomes = [o for out, _ in results for o in json.loads(out.decode().strip().splitlines()[-1])]
    assert [w.returncode for w in workers] == [0, 0]
    assert len(outcomes) == 20
    assert outcomes.count("booked") == 1
    assert set(outcomes) == {"booked", "taken"}
    assert await live_count(sessions) == 1
