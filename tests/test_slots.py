"""Free-slot search: hours, breaks, time off, buffers, lead time, horizon, DST, any master."""

from __future__ import annotations

from datetime import date, timedelta

from crm_store.appointments import Author, book
from crm_store.catalog import DayHours, add_time_off, set_working_hours
from crm_store.db import transaction
from crm_store.slots import find_slots
from tests.salon import KYIV, RULES, Salon, build_salon, kyiv

STAFF = Author("staff")
WEDNESDAY = date(2027, 3, 10)


def hhmm(slots) -> list[str]:
    return [s.start.astimezone(KYIV).strftime("%H:%M") for s in slots]


def grid(first: str, last: str, step: int = 15) -> list[str]:
    start, end = kyiv(f"2027-03-10 {first}"), kyiv(f"2027-03-10 {last}")
    times = []
    while start <= end:
        times.append(start.strftime("%H:%M"))
        start += timedelta(minutes=step)
    return times


async def slots(sessions, salon: Salon, day: date = WEDNESDAY, last: date | None = None, **kwargs):
    kwargs.setdefault("master_id", salon.olena)
    kwargs.setdefault("service_id", salon.manicure)
    async with sessions() as session:
        return await find_slots(session, rules=RULES, first_day=day, last_day=last or day, **kwargs)


async def book_at(sessions, salon: Salon, when: str, master: int, service: int | None = None):
    async with transaction(sessions) as session:
        return await book(
            session,
            client_id=salon.client,
            service_id=service or salon.manicure,
            master_id=master,
            start=kyiv(when),
            rules=RULES,
            now=kyiv("2027-03-01 09:00"),
            author=STAFF,
        )


async def test_working_hours_and_lunch_break(sessions) -> None:
    salon = await build_salon(sessions)
    # A 60-minute manicure fits 10:00-12:00 before lunch (its buffer may run into lunch)
    # and 14:00-18:00 after.
    assert hhmm(await slots(sessions, salon)) == grid("10:00", "12:00") + grid("14:00", "18:00")


async def test_days_off_have_no_slots(sessions) -> None:
    salon = await build_salon(sessions)
    assert await slots(sessions, salon, day=date(2027, 3, 13)) == []  # Olena's Saturday
    assert await slots(sessions, salon, day=date(2027, 3, 13), master_id=salon.iryna)


async def test_appointments_and_their_buffers_block_time(sessions) -> None:
    salon = await build_salon(sessions)
    await book_at(sessions, salon, "2027-03-10 15:00", salon.olena)  # holds 15:00-16:15
    # 14:00 would end at 15:00 but its buffer runs to 15:15: taken. After: from 16:15.
    assert hhmm(await slots(sessions, salon)) == grid("10:00", "12:00") + grid("16:15", "18:00")
    # A 45-minute haircut without buffer fits 14:00-14:45 and 14:15-15:00.
    haircut = await slots(sessions, salon, service_id=salon.haircut)
    assert hhmm(haircut) == [*grid("10:00", "12:15"), "14:00", "14:15", *grid("16:15", "18:15")]


async def test_time_off_blocks_its_hours(sessions) -> None:
    salon = await build_salon(sessions)
    async with transaction(sessions) as session:
        await add_time_off(
            session, salon.olena, kyiv("2027-03-10 11:00"), kyiv("2027-03-10 16:30"), "dentist"
        )
    assert hhmm(await slots(sessions, salon)) == ["10:00", *grid("16:30", "18:00")]


async def test_lead_time_and_horizon_bound_the_starts(sessions) -> None:
    salon = await build_salon(sessions)
    now = kyiv("2027-03-10 11:20")
    earliest, latest = RULES.window(now)  # 60 minutes lead, 60 days horizon
    found = await slots(sessions, salon, earliest=earliest, latest=latest)
    assert all(s.start >= earliest for s in found)
    assert hhmm(found) == grid("14:00", "18:00")  # 12:30 would overlap lunch
    far = await slots(
        sessions,
        salon,
        date(2027, 5, 7),
        date(2027, 5, 12),
        master_id=salon.iryna,
        earliest=earliest,
        latest=latest,
    )
    assert far and max(s.start for s in far) < latest
    assert {s.start.astimezone(KYIV).date() for s in far} == {
        date(2027, 5, 7),
        date(2027, 5, 8),
        date(2027, 5, 9),
    }


async def test_masters_own_duration(sessions) -> None:
    salon = await build_salon(sessions)
    found = await slots(sessions, salon, master_id=salon.iryna)
    # Iryna's manicure takes 90 minutes: the last start is 17:30 and each slot ends 90 min on.
    assert hhmm(found) == grid("10:00", "17:30")
    assert all(s.end - s.start == timedelta(minutes=90) for s in found)


async def test_working_hours_keep_wall_clock_time_across_dst(sessions) -> None:
    salon = await build_salon(sessions)
    spring = await slots(
        sessions, salon, date(2027, 3, 27), date(2027, 3, 28), master_id=salon.iryna
    )
    autumn = await slots(
        sessions, salon, date(2027, 10, 30), date(2027, 10, 31), master_id=salon.iryna
    )
    firsts = lambda found: sorted(  # noqa: E731
        {s.start.astimezone(KYIV).date(): s.start for s in reversed(found)}.items()
    )
    # 10:00 in Kyiv is 08:00 UTC in winter (UTC+2) and 07:00 UTC in summer (UTC+3).
    assert [t.strftime("%H:%M") for _, t in firsts(spring)] == ["08:00", "07:00"]
    assert [t.strftime("%H:%M") for _, t in firsts(autumn)] == ["07:00", "08:00"]
    assert hhmm(spring[:1]) == hhmm(autumn[:1]) == ["10:00"]


async def test_no_slot_in_the_skipped_hour(sessions) -> None:
    salon = await build_salon(sessions)
    async with transaction(sessions) as session:
        # A night shift on the Sunday the clocks jump from 03:00 to 04:00: 02:00-06:00 local
        # is three real hours.
        await set_working_hours(session, salon.iryna, {6: DayHours(120, 360)})
    found = await slots(sessions, salon, day=date(2027, 3, 28), master_id=salon.iryna)
    assert hhmm(found) == ["02:00", "02:15", "02:30", "02:45", "04:00", "04:15", "04:30"]
    assert len({s.start for s in found}) == len(found)
    assert all(s.end <= kyiv("2027-03-28 06:00") for s in found)


async def test_any_master_picks_the_least_loaded_free_one(sessions) -> None:
    salon = await build_salon(sessions)
    await book_at(sessions, salon, "2027-03-10 16:00", salon.iryna)  # Iryna: 90 min that day
    found = await slots(sessions, salon, master_id=None)
    by_time = {s.start.astimezone(KYIV).strftime("%H:%M"): s.master_id for s in found}
    assert len(by_time) == len(found)  # each time once
    # Olena has nothing booked that day, so she gets every time she is free...
    assert by_time["10:00"] == by_time["14:00"] == salon.olena
    # ...and Iryna the times only she can do: over lunch and in the evening.
    assert by_time["12:30"] == by_time["13:00"] == salon.iryna
    assert by_time["16:00"] == salon.olena
    assert by_time["18:00"] == salon.olena
    # Nobody does brows.
    assert await slots(sessions, salon, master_id=None, service_id=salon.brows) == []
