"""A demo salon in Kyiv: price list, four masters with their hours, clients and a month of
appointments around today, so a fresh install has something real to show."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.appointments import Author, book, set_status
from crm_store.business import Rules, update_business
from crm_store.catalog import (
    DayHours,
    add_master,
    add_service,
    add_time_off,
    offers_for,
    set_master_services,
    set_working_hours,
)
from crm_store.conversations import record_hands
from crm_store.models import (
    Appointment,
    Client,
    Conversation,
    MasterService,
    Message,
    Service,
    Staff,
)
from crm_store.slots import find_slots
from crm_store.timeutil import as_utc, aware

DATA = Path(__file__).with_name("demo_salon.json")
CHATS = Path(__file__).with_name("demo_chats.json")
CHAT_DAYS = 45  # how far back the demo's past chats go
SYSTEM = Author("system")
DAYS_BEFORE, DAYS_AFTER = 21, 14
PAST_OUTCOMES = (("done", 85), ("no_show", 7), ("cancelled", 8))


@dataclass(frozen=True)
class DemoSummary:
    created: bool
    services: int
    masters: int
    clients: int
    appointments: int


async def load_demo_salon(
    session: AsyncSession,
    *,
    now: datetime,
    timezone: str = "Europe/Kyiv",
    currency: str = "UAH",
    seed: int = 7,
    history: bool = True,
    chats: bool = False,
) -> DemoSummary:
    """Fill an empty salon; a salon that already has services is left as it is. Without
    `history` only the salon itself is loaded (services, masters, hours): what the bot
    evaluation needs to start from a known, empty book. With `chats`, the clients' past web
    chats too (closed, answered by the bot or by staff): what the analytics page shows."""
    if (await session.exec(select(Service.id).limit(1))).first() is not None:
        return await _summary(session, created=False)
    data = json.loads(DATA.read_text(encoding="utf-8"))
    business = await update_business(
        session,
        {key: data["business"][key] for key in ("name", "phone", "address", "hours_text")}
        | {"timezone": timezone, "currency": currency},
        actor="system",
    )
    rules = Rules.of(business)
    services = await _services(session, data["services"])
    masters = [await _master(session, spec, services) for spec in data["masters"]]
    if not history:
        return await _summary(session, created=True)
    clients = await _clients(session, data["clients"], now)
    # One master is on holiday for a few days next month: the bot has to offer someone else.
    holiday = (now + timedelta(days=20)).astimezone(rules.tz).date()
    await add_time_off(
        session,
        masters[2],
        _local(holiday, "00:00", rules),
        _local(holiday + timedelta(days=4), "00:00", rules),
        "vacation",
    )
    await _appointments(session, masters, clients, rules, now, random.Random(seed))
    if chats:
        await _chats(session, clients, rules, now, random.Random(seed))
    return await _summary(session, created=True)


async def _services(session: AsyncSession, specs: list[dict[str, Any]]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for position, spec in enumerate(specs):
        service = await add_service(
            session,
            name_uk=spec["uk"],
            name_en=spec["en"],
            name_ru=spec["ru"],
            category=spec["category"],
            duration_min=spec["duration"],
            price_minor=spec["price"] * 100,
            buffer_min=spec["buffer"],
            position=position,
        )
        # How often clients come back for it: re-engagement (crm_store.reengage) after that.
        service.return_interval_days = spec.get("return_days")
        session.add(service)
        ids[spec["key"]] = service.id  # type: ignore[assignment]
    return ids


async def _master(session: AsyncSession, spec: dict[str, Any], services: dict[str, int]) -> int:
    staff = (await session.exec(select(Staff).where(Staff.email == spec["email"]))).first()
    if staff is None:
        staff = await add_master(session, email=spec["email"], name=spec["name"])
    own = {
        services[key]: (None, None) if terms is None else (terms["duration"], terms["price"] * 100)
        for key, terms in spec["services"].items()
    }
    await set_master_services(session, staff.id, own)  # type: ignore[arg-type]
    week = {
        int(day): DayHours(_minutes(start), _minutes(end), tuple(map(_span, breaks)))
        for day, (start, end, breaks) in spec["hours"].items()
    }
    await set_working_hours(session, staff.id, week)  # type: ignore[arg-type]
    return staff.id  # type: ignore[return-value]


async def _clients(session: AsyncSession, specs: list[dict[str, Any]], now: datetime) -> list[int]:
    clients = [
        Client(
            name=spec["name"],
            phone=spec["phone"],
            email=spec.get("email"),
            language=spec["language"],
            tags=spec["tags"],
            marketing_consent=spec["consent"],
            first_contact_at=now - timedelta(days=90 + 17 * n),
            last_contact_at=now - timedelta(days=3 + n),
        )
        for n, spec in enumerate(specs)
    ]
    session.add_all(clients)
    await session.flush()
    return [c.id for c in clients]  # type: ignore[misc]


async def _appointments(
    session: AsyncSession,
    masters: list[int],
    clients: list[int],
    rules: Rules,
    now: datetime,
    rng: random.Random,
) -> None:
    today = now.astimezone(rules.tz).date()
    for offset in range(-DAYS_BEFORE, DAYS_AFTER + 1):
        day = today + timedelta(days=offset)
        for master_id in masters:
            offers = await _offers_of(session, master_id)
            for _ in range(rng.randint(1, 4)):
                offer = rng.choice(offers)
                free = await find_slots(
                    session,
                    service_id=offer,
                    master_id=master_id,
                    rules=rules,
                    first_day=day,
                    last_day=day,
                    earliest=now + rules.lead if offset >= 0 else None,
                )
                if not free:
                    continue
                slot = rng.choice(free)
                client = rng.choice(clients)
                if slot.start < now:
                    await _past(session, client, offer, slot.master_id, slot.start, rng)
                    continue
                appt = await book(
                    session,
                    client_id=client,
                    service_id=offer,
                    master_id=master_id,
                    start=slot.start,
                    rules=rules,
                    now=now,
                    author=SYSTEM,
                    source=rng.choice(("staff", "bot", "bot", "webchat")),
                    client_window=False,
                )
                if offset <= 2 and rng.random() < 0.6:
                    await set_status(session, appt.id, "confirmed", now=now, author=SYSTEM)  # type: ignore[arg-type]


async def _offers_of(session: AsyncSession, master_id: int) -> list[int]:
    query = select(MasterService.service_id).where(MasterService.master_id == master_id)
    return sorted((await session.exec(query)).all())


async def _past(
    session: AsyncSession,
    client_id: int,
    service_id: int,
    master_id: int,
    start: datetime,
    rng: random.Random,
) -> None:
    """History is written as it would have been: booked days before, then closed."""
    [offer] = await offers_for(session, service_id, [master_id])
    status = rng.choices([s for s, _ in PAST_OUTCOMES], [w for _, w in PAST_OUTCOMES])[0]
    end = start + timedelta(minutes=offer.duration_min)
    appt = Appointment(
        client_id=client_id,
        master_id=master_id,
        service_id=service_id,
        start_at=start,
        end_at=end,
        block_end_at=end + timedelta(minutes=offer.buffer_min),
        status=status,
        source=rng.choice(("staff", "bot", "webchat")),
        price_minor=offer.price_minor,
        created_at=start - timedelta(days=rng.randint(1, 10)),
        updated_at=end,
    )
    session.add(appt)
    await session.flush()
    audit.record(
        session,
        actor="system",
        entity="appointment",
        entity_id=appt.id,  # type: ignore[arg-type]
        action="demo_history",
        changes={"status": status, "start_at": start},
    )
    if status == "done":
        client = await session.get(Client, client_id)
        last = aware(client.last_visit_at) if client is not None else None
        if client is not None and (last is None or last < start):
            client.last_visit_at = start
            session.add(client)


async def _chats(
    session: AsyncSession, clients: list[int], rules: Rules, now: datetime, rng: random.Random
) -> None:
    """One to three past web chats per client: a question and the bot's answer within seconds,
    or, one time in five, a hand-off and an administrator's answer within the hour."""
    texts = json.loads(CHATS.read_text(encoding="utf-8"))
    for client_id in clients:
        client = await session.get(Client, client_id)
        language = client.language if client and client.language in texts["asks"] else "uk"
        for _ in range(rng.randint(1, 3)):
            day = (now - timedelta(days=rng.randint(1, CHAT_DAYS))).astimezone(rules.tz).date()
            # UTC: SQLite keeps a time's wall clock and drops its offset.
            asked = as_utc(_local(day, f"{rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}", rules))
            question, answer = rng.choice(texts["asks"][language])
            by_staff = rng.random() < 0.2
            delay = timedelta(
                minutes=rng.randint(3, 50) if by_staff else 0, seconds=rng.randint(2, 20)
            )
            chat = Conversation(
                client_id=client_id,
                channel="webchat",
                inbox="main",
                chat_id=uuid.uuid4().hex,
                status="closed",
                opened_at=asked,
                closed_at=asked + delay + timedelta(minutes=5),
                last_message_at=asked + delay,
                first_inbound_at=asked,
                first_response_at=asked + delay,
            )
            session.add(chat)
            await session.flush()
            said = [("in", "client", asked, question)]
            if by_staff:
                said.append(("out", "staff", asked + delay, texts["staff"][language]))
                chat.status = "waiting"  # handed to staff, written as the hub writes it
                handed = record_hands(session, chat, "bot", actor="bot", reason="demo")
                handed.at = asked + timedelta(seconds=1)
                chat.status = "closed"
            else:
                said.append(("out", "bot", asked + delay, answer))
            for direction, author, at, text in said:
                session.add(
                    Message(
                        public_id=uuid.uuid4().hex,
                        conversation_id=chat.id,  # type: ignore[arg-type]
                        client_id=client_id,
                        channel="webchat",
                        inbox="main",
                        direction=direction,
                        author=author,
                        text=text,
                        status="received" if direction == "in" else "delivered",
                        created_at=at,
                        status_at=at,
                        sent_at=at,
                    )
                )


async def _summary(session: AsyncSession, *, created: bool) -> DemoSummary:
    async def count(query: Any) -> int:
        return int((await session.exec(query)).one())

    return DemoSummary(
        created=created,
        services=await count(select(func.count()).select_from(Service)),
        masters=await count(select(func.count()).select_from(Staff).where(Staff.role == "master")),
        clients=await count(select(func.count()).select_from(Client)),
        appointments=await count(select(func.count()).select_from(Appointment)),
    )


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _span(pair: list[str]) -> tuple[int, int]:
    return _minutes(pair[0]), _minutes(pair[1])


def _local(day: date, hhmm: str, rules: Rules) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), rules.tz)
