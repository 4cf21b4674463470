"""Re-engagement: who is due a "time for your next visit" message, once per visit; what the
message says (real free times); when it is not sent; and the client's tap booking through
the offline brain."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from bots.base import Turn
from bots.offline import OfflineBrain
from bots.state import recall
from bots.tools import Tools
from crm_store.appointments import Author, book
from crm_store.business import Rules, get_business
from crm_store.catalog import add_service, add_time_off, list_masters, list_services
from crm_store.db import transaction
from crm_store.demo import load_demo_salon
from crm_store.models import (
    Appointment,
    ChannelIdentity,
    Client,
    Conversation,
    ScheduledMessage,
    Service,
)
from crm_store.reengage import plan_reengagement
from hub.jobs.notices import RENDERERS, Notice, RenderContext, Skip
from hub.jobs.reengage import button, render_reengage, since
from tests.salon import KYIV, RULES, Salon, build_salon, kyiv

NOW = kyiv("2027-03-01 09:00")  # a Monday morning
DAY = timedelta(days=1)
INTERVALS = {"manicure": 21, "haircut": 35}


# Setting up --------------------------------------------------------------------------------


async def salon_with_intervals(sessions) -> tuple[Salon, int]:
    """The test salon with manicure every 21 days and haircut every 35 (brows: none), and an
    inactive pedicure with an interval (never planned). Answers (salon, pedicure id)."""
    salon = await build_salon(sessions)
    async with transaction(sessions) as session:
        for service_id, days in ((salon.manicure, 21), (salon.haircut, 35)):
            service = await session.get(Service, service_id)
            assert service is not None
            service.return_interval_days = days
            session.add(service)
        pedicure = await add_service(
            session, name_uk="Педикюр", name_en="Pedicure", duration_min=60, price_minor=1
        )
        pedicure.return_interval_days = 28
        pedicure.active = False
        session.add(pedicure)
        await session.flush()
        return salon, pedicure.id  # type: ignore[return-value]


async def new_client(sessions, **fields) -> int:
    fields.setdefault("name", "Maria Koval")
    fields.setdefault("marketing_consent", True)
    async with transaction(sessions) as session:
        client = Client(**fields)
        session.add(client)
        await session.flush()
        return client.id  # type: ignore[return-value]


def visit(
    client_id: int, service_id: int, master_id: int, start: datetime, status: str = "done"
) -> Appointment:
    """A past (or future) appointment written directly, as history is."""
    start = start.astimezone(UTC)
    return Appointment(
        client_id=client_id,
        master_id=master_id,
        service_id=service_id,
        start_at=start,
        end_at=start + timedelta(minutes=60),
        block_end_at=start + timedelta(minutes=60),
        status=status,
        source="staff",
        price_minor=50_000,
    )


async def add(sessions, *rows) -> None:
    async with transaction(sessions) as session:
        session.add_all(rows)


async def plan(sessions, now: datetime = NOW, limit: int = 500) -> int:
    async with transaction(sessions) as session:
        return await plan_reengagement(session, rules=RULES, now=now, limit=limit)


async def planned(sessions) -> list[ScheduledMessage]:
    async with sessions() as session:
        query = (
            select(ScheduledMessage)
            .where(ScheduledMessage.kind == "reengage")
            .order_by(col(ScheduledMessage.id))
        )
        return list((await session.exec(query)).all())


async def mark_sent(sessions, row_id: int, at: datetime) -> None:
    async with transaction(sessions) as session:
        await session.exec(  # type: ignore[call-overload]
            update(ScheduledMessage)
            .where(col(ScheduledMessage.id) == row_id)
            .values(status="sent", sent_at=at.astimezone(UTC))
        )


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


# Planning on a generated dataset ------------------------------------------------------------


@dataclass
class Person:
    consent: bool
    merged: bool
    # service → start of each done visit
    done: dict[int, list[datetime]] = field(default_factory=dict)
    blocking_booking: bool = False  # a live appointment ahead, or just past and not closed
    recent_nudge: bool = False  # a re-engagement row open, or sent within 7 days
    planned_keys: set[str] = field(default_factory=set)  # rows that already exist


class Times:
    """Distinct start times two hours apart, so no two appointments overlap."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[tuple[bool, int]] = set()

    def past(self, days_ago: int) -> datetime:
        return NOW - timedelta(hours=2 * self._index(days_ago * 12))

    def future(self, days_ahead: int) -> datetime:
        return NOW + timedelta(hours=2 * self._index(days_ahead * 12, ahead=True))

    def _index(self, around: int, *, ahead: bool = False) -> int:
        index = around + self.rng.randint(1, 11)
        while (ahead, index) in self.used:
            index += 1
        self.used.add((ahead, index))
        return index


async def test_planning_finds_exactly_the_due_clients(sessions) -> None:
    salon, pedicure = await salon_with_intervals(sessions)
    interval = {salon.manicure: 21, salon.haircut: 35, pedicure: None, salon.brows: None}
    rng = random.Random(8)
    times = Times(rng)
    times.used.add((False, 21 * 12))  # kept free for the two clients at the edge, below
    people: dict[int, Person] = {}
    rows: list[object] = []
    for n in range(90):
        person = Person(consent=rng.random() < 0.8, merged=rng.random() < 0.1)
        cid = await new_client(
            sessions,
            name=f"Client {n}",
            marketing_consent=person.consent,
            merged_into_id=salon.client if person.merged else None,
        )
        people[cid] = person
        for service in (salon.manicure, salon.haircut, salon.brows, pedicure):
            starts = [times.past(rng.randint(1, 90)) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
            if starts:
                person.done[service] = starts
            rows += [visit(cid, service, salon.olena, s) for s in starts]
        # A later no-show or cancellation is no visit; it changes nothing.
        if rng.random() < 0.3:
            status = rng.choice(["no_show", "cancelled"])
            recent = times.past(rng.randint(1, 10))
            rows.append(visit(cid, salon.manicure, salon.iryna, recent, status))
        roll = rng.random()
        if roll < 0.12:
            status = rng.choice(["booked", "confirmed"])
            rows.append(
                visit(cid, salon.haircut, salon.iryna, times.future(rng.randint(0, 30)), status)
            )
            person.blocking_booking = True
        elif roll < 0.17:  # started yesterday, not closed yet: most likely a visit
            started = times.past(0)
            assert started > NOW - 2 * DAY
            rows.append(visit(cid, salon.brows, salon.olena, started, "booked"))
            person.blocking_booking = True
        elif roll < 0.22:  # a booking long past and never closed: stale, no longer blocks
            rows.append(visit(cid, salon.brows, salon.iryna, times.past(10), "booked"))
        elif roll < 0.27:  # a cancelled appointment ahead holds nothing
            rows.append(visit(cid, salon.haircut, salon.iryna, times.future(3), "cancelled"))
        roll = rng.random()
        nudge = {"kind": "reengage", "client_id": cid, "due_at": NOW, "payload": {}}
        if roll < 0.08:
            at = NOW - timedelta(days=3)
            rows.append(ScheduledMessage(key=f"old-{cid}-a", status="sent", sent_at=at, **nudge))
            person.recent_nudge = True
        elif roll < 0.12:
            rows.append(ScheduledMessage(key=f"old-{cid}-b", status="pending", **nudge))
            person.recent_nudge = True
        elif roll < 0.2:  # sent ten days ago: spacing over
            at = NOW - timedelta(days=10)
            rows.append(ScheduledMessage(key=f"old-{cid}-c", status="sent", sent_at=at, **nudge))
        elif roll < 0.35 and salon.manicure in person.done:
            # The manicure's last visit was already asked about (and ignored).
            key = f"reengage:{cid}:{salon.manicure}:{epoch(max(person.done[salon.manicure]))}"
            at = NOW - timedelta(days=30)
            rows.append(ScheduledMessage(key=key, status="sent", sent_at=at, **nudge))
            person.planned_keys.add(key)
    # The edge: exactly at the interval is due, a minute short is not.
    exact = await new_client(sessions, name="Exact")
    short = await new_client(sessions, name="Short")
    people[exact] = Person(True, False, {salon.manicure: [NOW - 21 * DAY]})
    people[short] = Person(True, False, {salon.manicure: [NOW - 21 * DAY + timedelta(minutes=1)]})
    rows.append(visit(exact, salon.manicure, salon.iryna, NOW - 21 * DAY))
    rows.append(visit(short, salon.manicure, salon.olena, NOW - 21 * DAY + timedelta(minutes=1)))
    # Asked about the manicure (and ignored it); the haircut is due too: that one goes now.
    asked_before = await new_client(sessions, name="Asked")
    manicure_at, haircut_at = times.past(40), times.past(60)
    asked_key = f"reengage:{asked_before}:{salon.manicure}:{epoch(manicure_at)}"
    people[asked_before] = Person(
        True,
        False,
        {salon.manicure: [manicure_at], salon.haircut: [haircut_at]},
        planned_keys={asked_key},
    )
    rows += [
        visit(asked_before, salon.manicure, salon.olena, manicure_at),
        visit(asked_before, salon.haircut, salon.olena, haircut_at),
        ScheduledMessage(
            key=asked_key,
            kind="reengage",
            client_id=asked_before,
            due_at=NOW - 19 * DAY,
            status="sent",
            sent_at=NOW - 19 * DAY,
        ),
    ]
    await add(sessions, *rows)

    def due_services(cid: int, person: Person) -> list[tuple[datetime, int, str]]:
        """(due, service, key) of each service past its interval, not yet asked about."""
        due = []
        for service, starts in person.done.items():
            days = interval[service]
            last = max(starts).astimezone(UTC)
            key = f"reengage:{cid}:{service}:{epoch(last)}"
            if days is not None and last + timedelta(days=days) <= NOW:
                if key not in person.planned_keys:
                    due.append((last + timedelta(days=days), service, key))
        return sorted(due)

    def excluded(person: Person) -> list[str]:
        reasons = {
            "no consent": not person.consent,
            "merged": person.merged,
            "booked": person.blocking_booking,
            "nudged lately": person.recent_nudge,
        }
        return [reason for reason, applies in reasons.items() if applies]

    expected: dict[int, tuple[int, str]] = {}
    for cid, person in people.items():
        due = due_services(cid, person)
        if due and not excluded(person):
            _, service, key = due[0]
            expected[cid] = (service, key)
    assert exact in expected and short not in expected
    # The dataset exercises every rule: clients due but for one reason each, clients due
    # for several services, clients whose last visit was already asked about.
    assert len(expected) > 15
    for reason in ("no consent", "merged", "booked", "nudged lately"):
        assert any(excluded(p) == [reason] and due_services(c, p) for c, p in people.items()), (
            reason
        )
    assert any(len(due_services(c, people[c])) > 1 for c in expected)
    asked = [c for c, p in people.items() if p.planned_keys and not excluded(p)]
    assert any(
        max(people[c].done[salon.manicure]) + 21 * DAY <= NOW and c not in expected for c in asked
    )
    assert expected[asked_before][0] == salon.haircut

    assert await plan(sessions) == len(expected)
    rows_now = [r for r in await planned(sessions) if r.key.startswith("reengage:")]
    fresh = [r for r in rows_now if r.status == "pending"]
    assert {r.client_id: (r.service_id, r.key) for r in fresh} == expected
    for row in fresh:
        assert row.urgent is False
        assert row.due_at is not None
        last = datetime.fromisoformat(row.payload["last_visit"])
        assert row.key.endswith(f":{epoch(last)}")

    # Planning again: nothing new.
    assert await plan(sessions) == 0
    again = [r.id for r in await planned(sessions) if r.key.startswith("reengage:")]
    assert again == [r.id for r in rows_now]


async def test_limit_takes_the_most_overdue_first(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    first = await new_client(sessions)
    second = await new_client(sessions)
    await add(
        sessions,
        visit(first, salon.manicure, salon.olena, NOW - 40 * DAY),
        visit(second, salon.manicure, salon.olena, NOW - 60 * DAY),
    )
    assert await plan(sessions, limit=1) == 1
    assert [r.client_id for r in await planned(sessions)] == [second]
    assert await plan(sessions, limit=1) == 1
    assert [r.client_id for r in await planned(sessions)] == [second, first]


async def test_once_per_visit_and_again_after_a_new_one(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions)
    first_visit = NOW - 22 * DAY
    await add(sessions, visit(cid, salon.manicure, salon.olena, first_visit))

    assert await plan(sessions) == 1
    assert await plan(sessions) == 0  # still pending: the same row
    [row] = await planned(sessions)
    assert row.key == f"reengage:{cid}:{salon.manicure}:{epoch(first_visit)}"
    assert row.payload == {"last_visit": first_visit.astimezone(UTC).isoformat()}
    await mark_sent(sessions, row.id, NOW)  # type: ignore[arg-type]

    # Ignored: no second message about the same visit, a week, a month, a year later.
    for later in (DAY, 8 * DAY, 30 * DAY, 365 * DAY):
        assert await plan(sessions, NOW + later) == 0

    # A new visit, and another interval after it: a new message.
    second_visit = kyiv("2027-03-10 10:00")
    await add(sessions, visit(cid, salon.manicure, salon.olena, second_visit))
    assert await plan(sessions, second_visit + 20 * DAY) == 0
    assert await plan(sessions, second_visit + 22 * DAY) == 1
    rows = await planned(sessions)
    assert [r.key for r in rows] == [
        row.key,
        f"reengage:{cid}:{salon.manicure}:{epoch(second_visit)}",
    ]


async def test_several_services_one_nudge_at_a_time(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions)
    await add(
        sessions,
        visit(cid, salon.manicure, salon.olena, NOW - 30 * DAY),  # 9 days overdue
        visit(cid, salon.haircut, salon.olena, NOW - 50 * DAY),  # 15 days overdue
    )
    assert await plan(sessions) == 1
    [row] = await planned(sessions)
    assert row.service_id == salon.haircut  # the most overdue first
    assert await plan(sessions, NOW + DAY) == 0  # one is still to go

    await mark_sent(sessions, row.id, NOW + DAY)  # type: ignore[arg-type]
    assert await plan(sessions, NOW + 7 * DAY) == 0  # a week's spacing
    assert await plan(sessions, NOW + 8 * DAY + timedelta(minutes=1)) == 1
    assert [r.service_id for r in await planned(sessions)] == [salon.haircut, salon.manicure]


async def test_planned_in_quiet_hours_is_due_when_they_end(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions)
    await add(sessions, visit(cid, salon.manicure, salon.olena, NOW - 30 * DAY))
    assert await plan(sessions, kyiv("2027-03-01 23:00")) == 1
    [row] = await planned(sessions)
    assert row.due_at.replace(tzinfo=row.due_at.tzinfo or UTC) == kyiv("2027-03-02 09:00")


# The message -------------------------------------------------------------------------------


async def render(sessions, now: datetime = NOW) -> Notice:
    """Render the one planned re-engagement row as the scheduler would, at `now`."""
    [row] = [r for r in await planned(sessions) if r.status == "pending"]
    async with sessions() as session:
        client = await session.get(Client, row.client_id)
        business = await get_business(session)
        assert client is not None
        language = client.language if client.language in ("uk", "en", "ru") else "uk"
        ctx = RenderContext(
            session=session,
            row=row,
            client=client,
            rules=Rules.of(business),
            business=business,
            now=now,
            language=language,  # type: ignore[arg-type]
        )
        return await RENDERERS["reengage"](ctx)


async def test_the_message_offers_real_free_times(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions, name="Oksana Melnyk", language="uk")
    await add(sessions, visit(cid, salon.manicure, salon.olena, NOW - 23 * DAY))
    # Monday 10:00 is taken with both manicure masters: the first free time that day is later.
    async with transaction(sessions) as session:
        for master in (salon.olena, salon.iryna):
            await book(
                session,
                client_id=salon.client,
                service_id=salon.manicure,
                master_id=master,
                start=kyiv("2027-03-01 10:00"),
                rules=RULES,
                now=NOW,
                author=Author("staff"),
            )
    assert RENDERERS["reengage"] is render_reengage
    await plan(sessions)
    notice = await render(sessions)
    assert notice.text.startswith(
        "Oksana, від вашого останнього візиту на «Манікюр з покриттям» минуло вже 3 тижні."
    )
    # Olena's manicure ends 11:00 plus a 15 minute buffer; Iryna's (90 min) 11:30 plus 15.
    assert "• понеділок, 1 березня, 11:15\n• вівторок, 2 березня, 10:00\n" in notice.text
    assert "• середа, 3 березня, 10:00\n" in notice.text
    assert notice.quick_replies == [
        "Манікюр з покриттям: Пн 01.03 о 11:15",
        "Манікюр з покриттям: Вт 02.03 о 10:00",
        "Манікюр з покриттям: Ср 03.03 о 10:00",
        "Інший час: Манікюр з покриттям",
    ]


@pytest.mark.parametrize(
    ("language", "opening", "buttons"),
    [
        (
            "en",
            "Oksana, it has been 5 weeks since your last Women's haircut.",
            ["Women's haircut: Mon 1 Mar at 10:00", "Women's haircut: Tue 2 Mar at 10:00"],
        ),
        (
            "ru",
            "Oksana, с вашего последнего визита на «Жіноча стрижка» прошло уже 5 недель.",
            ["Жіноча стрижка: Пн 01.03 в 10:00", "Жіноча стрижка: Вт 02.03 в 10:00"],
        ),
    ],
)
async def test_the_message_speaks_the_clients_language(
    sessions, language: str, opening: str, buttons: list[str]
) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions, name="Oksana", language=language)
    await add(sessions, visit(cid, salon.haircut, salon.olena, NOW - 36 * DAY))
    await plan(sessions)
    notice = await render(sessions)
    assert notice.text.startswith(opening)
    assert notice.quick_replies[:2] == buttons
    assert len(notice.quick_replies) == 4


async def test_no_free_time_in_two_weeks_means_no_times(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions, name=None, language="uk")
    await add(sessions, visit(cid, salon.haircut, salon.olena, NOW - 40 * DAY))
    async with transaction(sessions) as session:  # only Olena cuts hair: away three weeks
        await add_time_off(session, salon.olena, NOW, NOW + 21 * DAY, "vacation")
    await plan(sessions)
    notice = await render(sessions)
    assert notice.text == (
        "Вітаємо! Від вашого останнього візиту на «Жіноча стрижка» минуло вже 5 тижнів. "
        "Час записатися знову? Напишіть, коли вам зручно, і ми підберемо час."
    )
    assert notice.quick_replies == ["Записатися: Жіноча стрижка"]


async def _due_manicure_client(sessions, **fields) -> tuple[Salon, int]:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions, **fields)
    await add(sessions, visit(cid, salon.manicure, salon.olena, NOW - 25 * DAY))
    assert await plan(sessions) == 1
    return salon, cid


async def test_skipped_when_the_client_booked_meanwhile(sessions) -> None:
    salon, cid = await _due_manicure_client(sessions)
    await add(sessions, visit(cid, salon.haircut, salon.olena, NOW + 5 * DAY, "booked"))
    with pytest.raises(Skip, match="booked"):
        await render(sessions)


async def test_skipped_when_consent_was_withdrawn(sessions) -> None:
    _, cid = await _due_manicure_client(sessions)
    async with transaction(sessions) as session:
        client = await session.get(Client, cid)
        client.marketing_consent = False  # type: ignore[union-attr]
        session.add(client)
    with pytest.raises(Skip, match="marketing"):
        await render(sessions)


@pytest.mark.parametrize("change", ["inactive", "no_interval"])
async def test_skipped_when_the_service_is_no_longer_offered(sessions, change: str) -> None:
    salon, _ = await _due_manicure_client(sessions)
    async with transaction(sessions) as session:
        service = await session.get(Service, salon.manicure)
        assert service is not None
        if change == "inactive":
            service.active = False
        else:
            service.return_interval_days = None
        session.add(service)
    with pytest.raises(Skip, match="no longer offered"):
        await render(sessions)


async def test_skipped_when_the_client_visited_since(sessions) -> None:
    salon, cid = await _due_manicure_client(sessions)
    await add(sessions, visit(cid, salon.manicure, salon.iryna, NOW + timedelta(hours=3)))
    with pytest.raises(Skip, match="visited since"):
        await render(sessions, NOW + timedelta(hours=5))


async def test_skipped_when_the_card_was_merged(sessions) -> None:
    salon, cid = await _due_manicure_client(sessions)
    async with transaction(sessions) as session:
        client = await session.get(Client, cid)
        client.merged_into_id = salon.client  # type: ignore[union-attr]
        session.add(client)
    with pytest.raises(Skip, match="merged"):
        await render(sessions)


# The client's answer, through the offline brain ------------------------------------------------


async def chat_of(sessions, client_id: int, chat: str = "c1") -> int:
    async with transaction(sessions) as session:
        session.add(
            ChannelIdentity(client_id=client_id, channel="webchat", inbox="site", external_id=chat)
        )
        conversation = Conversation(
            client_id=client_id, channel="webchat", inbox="site", chat_id=chat
        )
        session.add(conversation)
        await session.flush()
        return conversation.id  # type: ignore[return-value]


def brain(sessions) -> OfflineBrain:
    return OfflineBrain(Tools(sessions, clock=lambda: NOW), sessions, clock=lambda: NOW)


YES = {"uk": "так", "en": "yes", "ru": "да"}


async def say(sessions, conversation_id: int, client_id: int, text: str, language: str):
    return await brain(sessions).respond(
        Turn(
            conversation_id=conversation_id,
            client_id=client_id,
            channel="telegram",  # where a notice goes: a channel that knows the client
            message_id=f"m-{text}",
            text=text,
            language=language,
        )
    )


async def appointments_of(sessions, client_id: int) -> list[Appointment]:
    async with sessions() as session:
        query = select(Appointment).where(
            Appointment.client_id == client_id, col(Appointment.status).in_(("booked",))
        )
        return list((await session.exec(query)).all())


@pytest.mark.parametrize(
    ("language", "pick", "booked_reply"),
    [("uk", 1, "Готово"), ("en", 0, "Done"), ("ru", 2, "Готово")],
)
async def test_tapping_a_time_books_it(
    sessions, language: str, pick: int, booked_reply: str
) -> None:
    salon, cid = await _due_manicure_client(
        sessions, name="Oksana", language=language, phone="+380501112233"
    )
    conversation = await chat_of(sessions, cid)
    notice = await render(sessions)
    label = notice.quick_replies[pick]
    [summary] = await say(sessions, conversation, cid, label, language)
    # A tap is said back with the price and asked about; nothing is written until the yes.
    assert summary.quick_replies and await appointments_of(sessions, cid) == []
    replies = await say(sessions, conversation, cid, YES[language], language)

    [appointment] = await appointments_of(sessions, cid)
    assert appointment.service_id == salon.manicure
    expected = [kyiv("2027-03-01 10:00"), kyiv("2027-03-02 10:00"), kyiv("2027-03-03 10:00")]
    start = appointment.start_at.replace(tzinfo=appointment.start_at.tzinfo or UTC)
    assert start == expected[pick]
    assert appointment.source == "bot"
    assert replies and replies[0].text.startswith(booked_reply), replies


async def test_asking_for_another_time_offers_more_and_books_the_pick(sessions) -> None:
    salon, cid = await _due_manicure_client(sessions, name="Oksana", language="uk")
    conversation = await chat_of(sessions, cid)
    notice = await render(sessions)
    assert notice.quick_replies[-1] == "Інший час: Манікюр з покриттям"

    [offer] = await say(sessions, conversation, cid, notice.quick_replies[-1], "uk")
    assert "Манікюр з покриттям" in offer.text and len(offer.quick_replies) >= 3
    assert (await recall(sessions, conversation)).state["awaiting"] == "slot"
    choice = offer.quick_replies[2]
    await say(sessions, conversation, cid, choice, "uk")
    await say(sessions, conversation, cid, YES["uk"], "uk")
    [appointment] = await appointments_of(sessions, cid)
    assert appointment.service_id == salon.manicure
    local = appointment.start_at.replace(tzinfo=appointment.start_at.tzinfo or UTC)
    assert local.astimezone(KYIV).strftime("%H:%M") in choice


async def test_the_no_times_button_hands_the_client_to_staff(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    cid = await new_client(sessions, name="Oksana", language="en")
    await add(sessions, visit(cid, salon.haircut, salon.olena, NOW - 40 * DAY))
    async with transaction(sessions) as session:
        await add_time_off(session, salon.olena, NOW, NOW + 15 * DAY, "vacation")
    await plan(sessions)
    notice = await render(sessions)
    assert notice.quick_replies == ["Book: Women's haircut"]
    conversation = await chat_of(sessions, cid)
    [reply] = await say(sessions, conversation, cid, notice.quick_replies[0], "en")
    # The brain looks as far as the message did, finds nothing either, and gives the
    # conversation to the administrator, who can find a time further ahead.
    assert reply.handoff and reply.handoff_reason == "no free time"
    assert "Women's haircut" in reply.text


async def test_every_demo_service_books_from_its_button(sessions) -> None:
    """The real price list has look-alike names (two manicures, two laminations, two
    haircuts): each button still books its own service, in each language."""
    async with transaction(sessions) as session:
        await load_demo_salon(session, now=NOW, history=False)
        services = [s for s in await list_services(session) if s.return_interval_days]
        masters = await list_masters(session)
    master_of = {o.service_id: card.staff.id for card in masters for o in card.offers}
    clients: dict[int, tuple[int, str]] = {}
    visits = []
    for n, service in enumerate(services):
        language = ("uk", "en", "ru")[n % 3]
        cid = await new_client(sessions, name=f"Client {n}", language=language, phone=None)
        clients[cid] = (service.id, language)  # type: ignore[assignment]
        last = NOW - timedelta(days=service.return_interval_days + 1, hours=2 * n)  # type: ignore[operator]
        visits.append(visit(cid, service.id, master_of[service.id], last))  # type: ignore[arg-type]
    await add(sessions, *visits)
    assert await plan(sessions) == len(services)

    for row in await planned(sessions):
        service_id, language = clients[row.client_id]
        async with sessions() as session:
            client = await session.get(Client, row.client_id)
            business = await get_business(session)
            ctx = RenderContext(session, row, client, Rules.of(business), business, NOW, language)  # type: ignore[arg-type]
            notice = await render_reengage(ctx)
        conversation = await chat_of(sessions, row.client_id, chat=f"c{row.client_id}")
        await say(sessions, conversation, row.client_id, notice.quick_replies[0], language)
        await say(sessions, conversation, row.client_id, YES[language], language)
        [appointment] = await appointments_of(sessions, row.client_id)
        assert appointment.service_id == service_id, notice.quick_replies[0]
        start = appointment.start_at.replace(tzinfo=appointment.start_at.tzinfo or UTC)
        local = start.astimezone(KYIV)
        assert local.strftime("%H:%M") in notice.quick_replies[0]


async def test_skipped_when_nobody_does_the_service(sessions) -> None:
    salon, _ = await salon_with_intervals(sessions)
    async with transaction(sessions) as session:
        brows = await session.get(Service, salon.brows)
        brows.return_interval_days = 28  # type: ignore[union-attr]
        session.add(brows)
    cid = await new_client(sessions)
    await add(sessions, visit(cid, salon.brows, salon.olena, NOW - 30 * DAY))
    assert await plan(sessions) == 1
    with pytest.raises(Skip, match="no master"):
        await render(sessions)


def test_a_long_service_name_is_cut_to_fit_a_button() -> None:
    name = "Комплексний догляд за волоссям з ламінуванням і полірування кінчиків"
    template = "{service}: {weekday} {day:02d}.{month:02d} о {time}"
    label = button(template, name, weekday="Пн", day=1, month=3, time="10:00")
    assert len(label) <= 64
    assert label.startswith("Комплексний догляд за волоссям") and "…: Пн 01.03 о 10:00" in label


def test_time_since_the_visit_in_days_then_weeks() -> None:
    forms = {"days": ["{n} d1", "{n} d2", "{n} d5"], "weeks": ["{n} w1", "{n} w2", "{n} w5"]}
    assert since(timedelta(days=10), forms) == "10 d5"
    assert since(timedelta(days=23), forms) == "3 w2"
    assert since(timedelta(days=21 * 7 + 3), forms) == "21 w1"
    assert since(timedelta(days=12 * 7), forms) == "12 w5"
