"""A salon's history for the analytics tests, and its figures computed in plain Python.

The history is a set of plain records (`World`): the reference below reads them directly, one
definition of docs/metrics.md at a time, with no SQL and nothing from crm_store.analytics but
the Query it is asked; `store()` writes the same records with the CRM's models, and the tests
compare what crm_store.analytics computes from the database with `expected()`.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics import TABLES, Query
from crm_store.db import transaction
from crm_store.models import (
    Appointment,
    AuditEntry,
    Client,
    Conversation,
    Message,
    Service,
    Staff,
    TimeOff,
    WorkingHours,
)
from prompts import LANGUAGES, load_json

KYIV = ZoneInfo("Europe/Kyiv")
CHANNELS = ("telegram", "instagram", "viber", "sms", "email")
INQUIRY_GAP = timedelta(hours=24)
REPLY_HORIZON = timedelta(days=7)
CONVERSION_WINDOW = timedelta(hours=168)
RETURN_WINDOW = timedelta(days=60)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def interest_words() -> tuple[str, ...]:
    table = load_json("analytics/interest.json")
    return tuple(word for language in LANGUAGES for word in table[language])


def kyiv(text: str) -> datetime:
    """'2026-10-25 10:00' on the salon's wall clock, as UTC (a repeated hour: its first pass)."""
    return datetime.fromisoformat(text).replace(tzinfo=KYIV).astimezone(UTC)


def wall(day: date, minute: int, tz: ZoneInfo = KYIV) -> datetime:
    """Minute `minute` of the local day `day`, as UTC."""
    naive = datetime.combine(day, time()) + timedelta(minutes=minute)
    return naive.replace(tzinfo=tz).astimezone(UTC)


# The records ---------------------------------------------------------------------------------


@dataclass(eq=False)
class StaffRow:
    name: str
    role: str = "master"
    active: bool = True
    id: int = 0


@dataclass(eq=False)
class ServiceRow:
    name_uk: str
    name_en: str
    name_ru: str | None
    duration_min: int
    price_minor: int
    buffer_min: int = 0
    id: int = 0


@dataclass(eq=False)
class HoursRow:
    master: StaffRow
    weekday: int
    start_min: int
    end_min: int
    breaks: tuple[tuple[int, int], ...] = ()


@dataclass(eq=False)
class TimeOffRow:
    master: StaffRow
    start_at: datetime
    end_at: datetime


@dataclass(eq=False)
class ClientRow:
    name: str
    phone: str | None = None
    email: str | None = None
    source_ref: str | None = None
    first_contact_at: datetime | None = None
    id: int = 0


@dataclass(eq=False)
class ConversationRow:
    client: ClientRow
    channel: str
    id: int = 0


@dataclass(eq=False)
class MessageRow:
    conversation: ConversationRow
    at: datetime
    direction: str  # in | out
    author: str  # client | bot | staff | system
    text: str = ""
    id: int = 0

    @property
    def client(self) -> ClientRow:
        return self.conversation.client

    @property
    def channel(self) -> str:
        return self.conversation.channel


@dataclass(eq=False)
class AppointmentRow:
    client: ClientRow
    master: StaffRow
    service: ServiceRow
    start_at: datetime
    end_at: datetime
    block_end_at: datetime
    status: str
    price_minor: int
    created_at: datetime
    id: int = 0


@dataclass(eq=False)
class AuditRow:
    """An audit entry about a conversation (`entity_id` is the conversation's id)."""

    conversation: ConversationRow
    at: datetime
    action: str = "hand_off"
    entity: str = "conversation"


@dataclass
class World:
    staff: list[StaffRow] = field(default_factory=list)
    services: list[ServiceRow] = field(default_factory=list)
    hours: list[HoursRow] = field(default_factory=list)
    time_off: list[TimeOffRow] = field(default_factory=list)
    clients: list[ClientRow] = field(default_factory=list)
    conversations: list[ConversationRow] = field(default_factory=list)
    messages: list[MessageRow] = field(default_factory=list)
    appointments: list[AppointmentRow] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)

    def add_staff(self, name: str, role: str = "master", active: bool = True) -> StaffRow:
        row = StaffRow(name, role, active)
        self.staff.append(row)
        return row

    def add_hours(
        self,
        master: StaffRow,
        weekdays: Iterable[int],
        start: str,
        end: str,
        breaks: Sequence[tuple[str, str]] = (),
    ) -> None:
        for weekday in weekdays:
            self.hours.append(
                HoursRow(
                    master,
                    weekday,
                    _minutes(start),
                    _minutes(end),
                    tuple((_minutes(a), _minutes(b)) for a, b in breaks),
                )
            )

    def add_time_off(self, master: StaffRow, start_at: datetime, end_at: datetime) -> None:
        self.time_off.append(TimeOffRow(master, start_at, end_at))

    def add_service(
        self,
        name_uk: str,
        name_en: str,
        name_ru: str | None,
        duration_min: int,
        price_minor: int,
        buffer_min: int = 0,
    ) -> ServiceRow:
        row = ServiceRow(name_uk, name_en, name_ru, duration_min, price_minor, buffer_min)
        self.services.append(row)
        return row

    def add_client(self, name: str, **values: Any) -> ClientRow:
        row = ClientRow(name, **values)
        self.clients.append(row)
        return row

    def chat(self, client: ClientRow, channel: str) -> ConversationRow:
        row = ConversationRow(client, channel)
        self.conversations.append(row)
        return row

    def say(
        self, conversation: ConversationRow, at: datetime, author: str, text: str = ""
    ) -> MessageRow:
        direction = "in" if author == "client" else "out"
        row = MessageRow(conversation, at, direction, author, text or _default_text(author))
        self.messages.append(row)
        return row

    def hand_off(self, conversation: ConversationRow, at: datetime) -> None:
        self.audit.append(AuditRow(conversation, at))

    def note(self, conversation: ConversationRow, at: datetime, action: str, entity: str) -> None:
        """An audit entry that is not a hand-off of this conversation (noise for the filter)."""
        self.audit.append(AuditRow(conversation, at, action, entity))

    def book(
        self,
        client: ClientRow,
        master: StaffRow,
        service: ServiceRow,
        start_at: datetime,
        *,
        status: str,
        created_at: datetime,
        minutes: int | None = None,
        price_minor: int | None = None,
    ) -> AppointmentRow:
        end_at = start_at + timedelta(minutes=minutes or service.duration_min)
        row = AppointmentRow(
            client,
            master,
            service,
            start_at,
            end_at,
            end_at + timedelta(minutes=service.buffer_min),
            status,
            service.price_minor if price_minor is None else price_minor,
            created_at,
        )
        self.appointments.append(row)
        return row


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _default_text(author: str) -> str:
    return {
        "client": "Добрий день",
        "bot": "Вітаю! Я бот салону, чим допомогти?",
        "staff": "Доброго дня, це адміністратор.",
        "system": "Нагадуємо про ваш запис.",
    }[author]


# Writing the records ---------------------------------------------------------------------------


async def store(sessions: async_sessionmaker[AsyncSession], world: World) -> None:
    """Write the world with the CRM's models; each record learns its id."""
    async with transaction(sessions) as session:
        staff = [
            Staff(
                email=f"staff{n}@salon.test",
                name=row.name,
                role=row.role,
                password_hash="-",
                active=row.active,
            )
            for n, row in enumerate(world.staff)
        ]
        services = [
            Service(
                name_uk=row.name_uk,
                name_en=row.name_en,
                name_ru=row.name_ru,
                duration_min=row.duration_min,
                price_minor=row.price_minor,
                buffer_min=row.buffer_min,
            )
            for row in world.services
        ]
        clients = [
            Client(
                name=row.name,
                phone=row.phone,
                email=row.email,
                source_ref=row.source_ref,
                first_contact_at=row.first_contact_at,
                created_at=row.first_contact_at or kyiv("2026-01-01 00:00"),
            )
            for row in world.clients
        ]
        session.add_all([*staff, *services, *clients])
        await session.flush()
        for models, rows in ((staff, world.staff), (services, world.services)):
            for model, row in zip(models, rows, strict=True):
                row.id = model.id  # type: ignore[assignment]
        for model, row in zip(clients, world.clients, strict=True):
            row.id = model.id  # type: ignore[assignment]

        session.add_all(
            WorkingHours(
                master_id=row.master.id,
                weekday=row.weekday,
                start_min=row.start_min,
                end_min=row.end_min,
                breaks=[list(pair) for pair in row.breaks],
            )
            for row in world.hours
        )
        session.add_all(
            TimeOff(master_id=row.master.id, start_at=row.start_at, end_at=row.end_at)
            for row in world.time_off
        )
        first_message: dict[ConversationRow, datetime] = {}
        for message in world.messages:
            known = first_message.get(message.conversation)
            if known is None or message.at < known:
                first_message[message.conversation] = message.at
        conversations = [
            Conversation(
                client_id=row.client.id,
                channel=row.channel,
                inbox="main",
                chat_id=f"chat-{n}",
                opened_at=first_message.get(row, kyiv("2026-01-01 00:00")),
            )
            for n, row in enumerate(world.conversations)
        ]
        session.add_all(conversations)
        await session.flush()
        for model, row in zip(conversations, world.conversations, strict=True):
            row.id = model.id  # type: ignore[assignment]

        # In time order, as the hub stores them: ids follow created_at.
        ordered = sorted(world.messages, key=lambda m: m.at)
        messages = [
            Message(
                public_id=f"m{n:06d}",
                conversation_id=row.conversation.id,
                client_id=row.client.id,
                channel=row.channel,
                inbox="main",
                direction=row.direction,
                author=row.author,
                text=row.text,
                provider_message_id=f"p{n}" if row.direction == "in" else None,
                status="received" if row.direction == "in" else "delivered",
                sent_at=row.at if row.direction == "out" else None,
                created_at=row.at,
            )
            for n, row in enumerate(ordered)
        ]
        appointments = [
            Appointment(
                client_id=row.client.id,
                master_id=row.master.id,
                service_id=row.service.id,
                start_at=row.start_at,
                end_at=row.end_at,
                block_end_at=row.block_end_at,
                status=row.status,
                source="bot",
                price_minor=row.price_minor,
                created_at=row.created_at,
                updated_at=row.created_at,
            )
            for row in sorted(world.appointments, key=lambda a: a.created_at)
        ]
        audit = [
            AuditEntry(
                at=row.at,
                actor="bot",
                entity=row.entity,
                entity_id=row.conversation.id,
                action=row.action,
            )
            for row in world.audit
        ]
        session.add_all([*messages, *appointments, *audit])
        await session.flush()
        for model, row in zip(messages, ordered, strict=True):
            row.id = model.id  # type: ignore[assignment]
        by_created = sorted(world.appointments, key=lambda a: a.created_at)
        for model, row in zip(appointments, by_created, strict=True):
            row.id = model.id  # type: ignore[assignment]


# The reference: docs/metrics.md in plain Python ------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between the closest ranks (percentile_cont)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * p
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(eq=False)
class Inquiry:
    message: MessageRow
    next_at: datetime | None  # the conversation's next inquiry: the end of this exchange

    @property
    def at(self) -> datetime:
        return self.message.at

    @property
    def conversation(self) -> ConversationRow:
        return self.message.conversation

    @property
    def channel(self) -> str:
        return self.message.channel

    @property
    def client(self) -> ClientRow:
        return self.message.client

    def in_exchange(self, at: datetime) -> bool:
        return self.at <= at and (self.next_at is None or at < self.next_at)


def conversation_messages(world: World) -> dict[ConversationRow, list[MessageRow]]:
    threads: dict[ConversationRow, list[MessageRow]] = defaultdict(list)
    for message in world.messages:
        threads[message.conversation].append(message)
    for thread in threads.values():
        thread.sort(key=lambda m: m.at)
    return threads


def all_inquiries(world: World) -> list[Inquiry]:
    """Every inquiry ever: a client's message first in its conversation or > 24 h after the
    conversation's previous message."""
    found: list[Inquiry] = []
    for thread in conversation_messages(world).values():
        starts: list[MessageRow] = []
        previous: MessageRow | None = None
        for message in thread:
            if message.direction == "in" and message.author == "client":
                if previous is None or message.at - previous.at > INQUIRY_GAP:
                    starts.append(message)
            previous = message
        for n, message in enumerate(starts):
            following = starts[n + 1].at if n + 1 < len(starts) else None
            found.append(Inquiry(message, following))
    return found


class Reference:
    """The tables of one query, computed from the records."""

    def __init__(self, world: World, query: Query) -> None:
        self.world = world
        self.q = query
        self.tz = query.tz
        self.start = wall(query.first, 0, query.tz)
        self.end = wall(query.last + DAY, 0, query.tz)
        self.days = [
            query.first + timedelta(days=n) for n in range((query.last - query.first).days + 1)
        ]
        self.threads = conversation_messages(world)
        self.inquiries = sorted(
            (
                i
                for i in all_inquiries(world)
                if self.start <= i.at < self.end
                and (query.channel is None or i.channel == query.channel)
            ),
            key=lambda i: i.at,
        )
        self.responses = {i: self.first_response(i) for i in self.inquiries}

    # Inquiries ---------------------------------------------------------------------------

    def first_response(self, inquiry: Inquiry) -> MessageRow | None:
        horizon = self.end + REPLY_HORIZON
        for message in self.threads[inquiry.conversation]:
            if (
                message.at > inquiry.at
                and message.direction == "out"
                and message.author in ("bot", "staff")
                and message.at <= horizon
            ):
                return message
        return None

    def opening_hours(self, weekday: int) -> tuple[int, int] | None:
        spans = [
            (h.start_min, h.end_min)
            for h in self.world.hours
            if h.weekday == weekday and h.master.active
        ]
        if not spans:
            return None
        return min(s for s, _ in spans), max(e for _, e in spans)

    def in_working_hours(self, at: datetime) -> bool:
        moment = at.astimezone(self.tz)
        hours = self.opening_hours(moment.weekday())
        if hours is None:
            return False
        minute = moment.hour * 60 + moment.minute + moment.second / 60
        return hours[0] <= minute < hours[1]

    def converted(self, inquiry: Inquiry) -> bool:
        return any(
            a.client is inquiry.client
            and inquiry.at <= a.created_at <= inquiry.at + CONVERSION_WINDOW
            for a in self.world.appointments
        )

    def local_date(self, at: datetime) -> date:
        return at.astimezone(self.tz).date()

    def response_row(self, dimension: str, key: str, items: list[Inquiry]) -> dict[str, Any]:
        times = [
            (response.at - i.at).total_seconds()
            for i in items
            if (response := self.responses[i]) is not None
        ]
        return {
            "dimension": dimension,
            "key": key,
            "inquiries": len(items),
            "answered": len(times),
            "unanswered": len(items) - len(times),
            "median_s": round(percentile(times, 0.5), 3) if times else None,
            "p90_s": round(percentile(times, 0.9), 3) if times else None,
        }

    def table_responses(self) -> list[dict[str, Any]]:
        groups: list[tuple[str, str, list[Inquiry]]] = [("all", "all", self.inquiries)]
        for channel in sorted({i.channel for i in self.inquiries}):
            groups.append(("channel", channel, [i for i in self.inquiries if i.channel == channel]))
        for responder in ("bot", "staff"):
            answered = [
                i
                for i in self.inquiries
                if (r := self.responses[i]) is not None and r.author == responder
            ]
            groups.append(("responder", responder, answered))
        for key in ("in", "out"):
            inside = key == "in"
            items = [i for i in self.inquiries if self.in_working_hours(i.at) == inside]
            groups.append(("hours", key, items))
        return [self.response_row(d, k, items) for d, k, items in groups if items]

    def table_volume(self) -> list[dict[str, Any]]:
        counts = Counter((self.local_date(i.at), i.channel) for i in self.inquiries)
        return [
            {"date": day, "channel": channel, "inquiries": n}
            for (day, channel), n in sorted(counts.items())
        ]

    def table_sources(self) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str | None], list[Inquiry]] = defaultdict(list)
        for i in self.inquiries:
            groups[(i.channel, i.client.source_ref)].append(i)
        rows = []
        for (channel, source), items in groups.items():
            clients = {i.client for i in items}
            new = [
                c
                for c in clients
                if c.first_contact_at is not None and self.start <= c.first_contact_at < self.end
            ]
            rows.append(
                {
                    "channel": channel,
                    "source": source,
                    "inquiries": len(items),
                    "clients": len(clients),
                    "new_clients": len(new),
                    "converted": sum(self.converted(i) for i in items),
                }
            )
        rows.sort(
            key=lambda r: (
                -r["inquiries"],
                r["channel"],
                r["source"] is not None,
                r["source"] or "",
            )
        )
        return rows

    def per_channel(
        self, row: Callable[[str, list[Inquiry]], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        rows = [row("all", self.inquiries)]
        for channel in sorted({i.channel for i in self.inquiries}):
            rows.append(row(channel, [i for i in self.inquiries if i.channel == channel]))
        return rows

    def table_conversion(self) -> list[dict[str, Any]]:
        def row(channel: str, items: list[Inquiry]) -> dict[str, Any]:
            converted = sum(self.converted(i) for i in items)
            return {
                "channel": channel,
                "inquiries": len(items),
                "converted": converted,
                "rate": ratio(converted, len(items)),
            }

        return self.per_channel(row)

    def handed_off(self, inquiry: Inquiry) -> bool:
        return any(
            a.conversation is inquiry.conversation
            and a.entity == "conversation"
            and a.action == "hand_off"
            and inquiry.in_exchange(a.at)
            for a in self.world.audit
        )

    def staff_wrote(self, inquiry: Inquiry) -> bool:
        return any(
            m.direction == "out" and m.author == "staff" and inquiry.in_exchange(m.at)
            for m in self.threads[inquiry.conversation]
        )

    def bot_answered(self, inquiry: Inquiry) -> bool:
        response = self.responses[inquiry]
        return response is not None and response.author == "bot"

    def table_containment(self) -> list[dict[str, Any]]:
        def row(channel: str, items: list[Inquiry]) -> dict[str, Any]:
            by_bot = [i for i in items if self.bot_answered(i)]
            handed = [i for i in by_bot if self.handed_off(i)]
            contained = [i for i in by_bot if not self.handed_off(i) and not self.staff_wrote(i)]
            return {
                "channel": channel,
                "inquiries": len(items),
                "bot_answered": len(by_bot),
                "contained": len(contained),
                "handed_off": len(handed),
                "containment_rate": ratio(len(contained), len(by_bot)),
                "handoff_rate": ratio(len(handed), len(by_bot)),
            }

        return self.per_channel(row)

    # Appointments --------------------------------------------------------------------------

    def in_period(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def table_no_shows(self) -> list[dict[str, Any]]:
        counted = [
            a
            for a in self.world.appointments
            if self.in_period(a.start_at) and a.start_at < self.q.now and a.status != "cancelled"
        ]

        def row(master: StaffRow | None, items: list[AppointmentRow]) -> dict[str, Any]:
            done = sum(a.status == "done" for a in items)
            no_shows = sum(a.status == "no_show" for a in items)
            return {
                "master_id": master.id if master else None,
                "master": master.name if master else None,
                "done": done,
                "no_shows": no_shows,
                "unsettled": sum(a.status in ("booked", "confirmed") for a in items),
                "rate": ratio(no_shows, done + no_shows),
            }

        masters = sorted({a.master for a in counted}, key=lambda m: m.id)
        return [row(None, counted)] + [
            row(m, [a for a in counted if a.master is m]) for m in masters
        ]

    def occupancy_masters(self) -> list[StaffRow]:
        masters = {s for s in self.world.staff if s.active and s.role == "master"}
        masters |= {a.master for a in self.world.appointments if self.in_period(a.start_at)}
        return sorted(masters, key=lambda m: m.id)

    def working_minutes(self, master: StaffRow, day: date) -> int:
        hours = [h for h in self.world.hours if h.master is master and h.weekday == day.weekday()]
        if not hours:
            return 0
        (h,) = hours
        spans: list[tuple[int, int]] = []
        cursor = h.start_min
        for b_start, b_end in sorted(h.breaks):
            spans.append((cursor, b_start))
            cursor = b_end
        spans.append((cursor, h.end_min))
        away = merged((t.start_at, t.end_at) for t in self.world.time_off if t.master is master)
        seconds = 0.0
        for s, e in spans:
            if e <= s:
                continue
            start, end = wall(day, s, self.tz), wall(day, e, self.tz)
            seconds += (end - start).total_seconds() - sum(
                overlap(start, end, a, b) for a, b in away
            )
        return round(seconds / 60)

    def booked_minutes(self, master: StaffRow, day: date) -> int:
        seconds = sum(
            (a.end_at - a.start_at).total_seconds()
            for a in self.world.appointments
            if a.master is master and a.status != "cancelled" and self.local_date(a.start_at) == day
        )
        return round(seconds / 60)

    def table_occupancy_days(self) -> list[dict[str, Any]]:
        rows = []
        for day in self.days:
            for master in self.occupancy_masters():
                working = self.working_minutes(master, day)
                booked = self.booked_minutes(master, day)
                rows.append(
                    {
                        "date": day,
                        "master_id": master.id,
                        "master": master.name,
                        "working_min": working,
                        "booked_min": booked,
                        "rate": ratio(booked, working),
                    }
                )
        return rows

    def table_occupancy_weeks(self) -> list[dict[str, Any]]:
        sums: dict[tuple[date, int], list[Any]] = {}
        for row in self.table_occupancy_days():
            monday = row["date"] - timedelta(days=row["date"].weekday())
            entry = sums.setdefault((monday, row["master_id"]), [row["master"], 0, 0])
            entry[1] += row["working_min"]
            entry[2] += row["booked_min"]
        return [
            {
                "week": week_key(monday),
                "master_id": master_id,
                "master": name,
                "working_min": working,
                "booked_min": booked,
                "rate": ratio(booked, working),
            }
            for (monday, master_id), (name, working, booked) in sorted(sums.items())
        ]

    def table_returns(self) -> list[dict[str, Any]]:
        visits: dict[ClientRow, list[datetime]] = defaultdict(list)
        for a in self.world.appointments:
            if a.status == "done":
                visits[a.client].append(a.start_at)
        first_visits = returned = still_open = 0
        for starts in visits.values():
            first = min(starts)
            if not self.in_period(first):
                continue
            first_visits += 1
            if any(first < s <= first + RETURN_WINDOW for s in starts):
                returned += 1
            elif self.q.now - first < RETURN_WINDOW:
                still_open += 1
        return [
            {
                "first_visits": first_visits,
                "returned": returned,
                "still_open": still_open,
                "rate": ratio(returned, first_visits - still_open),
            }
        ]

    def service_name(self, service: ServiceRow) -> str:
        if self.q.language == "en":
            return service.name_en
        if self.q.language == "ru":
            return service.name_ru or service.name_uk
        return service.name_uk

    def done_in_period(self) -> list[AppointmentRow]:
        return [
            a for a in self.world.appointments if a.status == "done" and self.in_period(a.start_at)
        ]

    def table_revenue_services(self) -> list[dict[str, Any]]:
        rows = []
        for service in self.world.services:
            items = [a for a in self.done_in_period() if a.service is service]
            if items:
                rows.append(
                    {
                        "service_id": service.id,
                        "service": self.service_name(service),
                        "visits": len(items),
                        "revenue_minor": sum(a.price_minor for a in items),
                    }
                )
        rows.sort(key=lambda r: (-r["revenue_minor"], r["service_id"]))
        return rows

    def table_revenue_masters(self) -> list[dict[str, Any]]:
        rows = []
        for master in self.world.staff:
            items = [a for a in self.done_in_period() if a.master is master]
            if items:
                rows.append(
                    {
                        "master_id": master.id,
                        "master": master.name,
                        "visits": len(items),
                        "revenue_minor": sum(a.price_minor for a in items),
                    }
                )
        rows.sort(key=lambda r: (-r["revenue_minor"], r["master_id"]))
        return rows

    # Lost leads ----------------------------------------------------------------------------

    def asks(self, message: MessageRow) -> bool:
        text = message.text.lower()
        return any(word.lower() in text for word in self.q.interest_words)

    def table_lost_leads(self) -> list[dict[str, Any]]:
        asking: dict[ClientRow, list[MessageRow]] = defaultdict(list)
        for m in self.world.messages:
            if (
                m.direction == "in"
                and self.in_period(m.at)
                and (self.q.channel is None or m.channel == self.q.channel)
                and self.asks(m)
            ):
                asking[m.client].append(m)
        since = self.q.now - timedelta(days=self.q.lost_days)
        rows = []
        for client, messages in asking.items():
            first = min(m.at for m in messages)
            last = max(messages, key=lambda m: m.at)
            if any(
                a.client is client
                and (
                    a.created_at >= first
                    or (a.status in ("booked", "confirmed") and a.start_at > self.q.now)
                )
                for a in self.world.appointments
            ):
                continue
            replies = [
                m.at
                for m in self.world.messages
                if m.client is client and m.direction == "out" and m.author in ("bot", "staff")
            ]
            if any(at >= since for at in replies):
                continue
            rows.append(
                {
                    "client_id": client.id,
                    "name": client.name,
                    "phone": client.phone,
                    "email": client.email,
                    "channel": last.channel,
                    "conversation_id": last.conversation.id,
                    "asked_at": last.at,
                    "text": last.text[:200],
                    "last_reply_at": max(replies) if replies else None,
                }
            )
        rows.sort(key=lambda r: (-r["asked_at"].timestamp(), r["client_id"]))
        return rows[:500]

    def table(self, name: str) -> list[dict[str, Any]]:
        method: Callable[[], list[dict[str, Any]]] = getattr(self, f"table_{name}")
        return method()


def week_key(monday: date) -> Any:
    """How an ISO week is named in occupancy_weeks: the date of its Monday."""
    return monday


def expected(world: World, query: Query) -> dict[str, list[dict[str, Any]]]:
    reference = Reference(world, query)
    return {name: reference.table(name) for name in TABLES}


def merged(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlap(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> float:
    return max(0.0, (min(a_end, b_end) - max(a_start, b_start)).total_seconds())


def ambiguities(world: World, query: Query) -> list[str]:
    """Corners docs/metrics.md leaves open; a dataset for exact comparisons stays out of them."""
    reference = Reference(world, query)
    found = []
    window = [a for a in world.appointments if reference.in_period(a.start_at)]
    for master in {a.master for a in window}:
        mine = [a for a in window if a.master is master]
        if all(a.status == "cancelled" for a in mine):
            found.append(f"{master.name}: only cancelled appointments in the period")
        counted = [a for a in mine if a.start_at < query.now]
        if counted and all(a.status == "cancelled" for a in counted):
            found.append(f"{master.name}: only cancelled appointments before now")
    horizon = reference.end + REPLY_HORIZON
    for i in reference.inquiries:
        if not reference.bot_answered(i):
            continue
        late = [m.at for m in reference.threads[i.conversation] if m.author == "staff"]
        late += [a.at for a in world.audit if a.conversation is i.conversation]
        if any(i.in_exchange(at) and at > horizon for at in late):
            found.append(f"inquiry at {i.at}: staff or hand-off after the reply horizon")
    return found


# The generated salon -----------------------------------------------------------------------------

NOW = kyiv("2026-11-12 16:30")  # a Thursday afternoon
SEED = 20261025

ASKING = (
    "Скільки коштує манікюр?",
    "СКІЛЬКИ КОШТУЄ фарбування?",
    "Яка ЦІНА стрижки?",
    "Чи є вільні вікна на суботу?",
    "Хочу записатися на п'ятницю",
    "What is the price of a haircut?",
    "Do you have any AVAILABILITY tomorrow?",
    "How much for brows?",
    "Сколько стоит маникюр?",
    "Есть СВОБОДНОЕ окно в среду?",
    "Прайс пришлите пожалуйста",
    "Can I Book for Friday?",
    "Коли можна прийти?",
)
PLAIN = ("Добрий день", "Дякую!", "Hello", "ok", "Спасибо", "Добре, до зустрічі", "Hi there", "👍")
LONG_ASK = "Доброго дня! " * 18 + "Скільки коштує фарбування волосся середньої довжини?"


@dataclass
class Salon:
    owner: StaffRow
    admin: StaffRow
    olena: StaffRow  # Mon-Fri 10-19, lunch 13-14
    iryna: StaffRow  # Tue-Sat 09-18, breaks 12:00-12:30 and 15:00-15:15
    maksym: StaffRow  # Wed-Sun 11-21
    sofia: StaffRow  # Sat-Sun 10-16, break 12:00-12:20
    taras: StaffRow  # left the salon: inactive, his old hours every day 07-23
    services: list[ServiceRow]


def salon(world: World) -> Salon:
    """The staff, hours, time off and services every generated world has."""
    w = world
    owner = w.add_staff("Ольга Власенко", role="owner")
    admin = w.add_staff("Марта (адміністратор)", role="admin")
    olena = w.add_staff("Олена")
    iryna = w.add_staff("Ірина")
    maksym = w.add_staff("Максим")
    sofia = w.add_staff("Софія")
    taras = w.add_staff("Тарас", active=False)
    # The admin opens the front desk on Mondays at 08:00: working hours, though no master.
    w.add_hours(admin, [0], "08:00", "12:00")
    w.add_hours(olena, range(5), "10:00", "19:00", [("13:00", "14:00")])
    w.add_hours(iryna, range(1, 6), "09:00", "18:00", [("12:00", "12:30"), ("15:00", "15:15")])
    w.add_hours(maksym, range(2, 7), "11:00", "21:00")
    w.add_hours(sofia, (5, 6), "10:00", "16:00", [("12:00", "12:20")])
    w.add_hours(taras, range(7), "07:00", "23:00")
    w.add_time_off(olena, kyiv("2026-10-21 14:00"), kyiv("2026-10-21 16:00"))  # the dentist
    w.add_time_off(olena, kyiv("2026-10-21 15:00"), kyiv("2026-10-21 17:00"))  # overlaps it
    w.add_time_off(olena, kyiv("2026-10-22 20:00"), kyiv("2026-10-22 22:00"))  # after hours
    w.add_time_off(iryna, kyiv("2026-10-28 11:30"), kyiv("2026-10-28 13:00"))  # over a break
    w.add_time_off(iryna, kyiv("2026-10-05 00:00"), kyiv("2026-10-08 00:00"))  # across the start
    w.add_time_off(maksym, kyiv("2026-11-03 18:00"), kyiv("2026-11-05 13:00"))  # two days
    w.add_time_off(maksym, kyiv("2026-10-25 02:30"), kyiv("2026-10-25 12:00"))  # the long day
    w.add_time_off(sofia, kyiv("2026-10-24 00:00"), kyiv("2026-11-01 00:00"))  # a vacation
    services = [
        w.add_service("Манікюр з покриттям", "Gel manicure", "Маникюр с покрытием", 60, 80_000, 15),
        w.add_service("Жіноча стрижка", "Women's haircut", "Женская стрижка", 45, 60_000),
        w.add_service("Корекція брів", "Brow shaping", None, 30, 30_000, 10),
        w.add_service("Фарбування", "Colouring", "Окрашивание", 120, 150_000, 15),
    ]
    return Salon(owner, admin, olena, iryna, maksym, sofia, taras, services)


class Diary:
    """Places appointments where the master is free (the database refuses overlaps)."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.busy: dict[StaffRow, list[tuple[datetime, datetime]]] = defaultdict(list)

    def free(self, master: StaffRow, start: datetime, end: datetime) -> bool:
        clash = any(s < end and start < e for s, e in self.busy[master])
        away = any(
            t.start_at < end and start < t.end_at for t in self.world.time_off if t.master is master
        )
        return not clash and not away

    def put(
        self,
        client: ClientRow,
        master: StaffRow,
        service: ServiceRow,
        start: datetime,
        *,
        status: str,
        created_at: datetime,
        price_minor: int | None = None,
    ) -> AppointmentRow:
        row = self.world.book(
            client,
            master,
            service,
            start,
            status=status,
            created_at=created_at,
            price_minor=price_minor,
        )
        if status != "cancelled":
            assert self.free(master, row.start_at, row.block_end_at), (master.name, start)
            self.busy[master].append((row.start_at, row.block_end_at))
        return row

    def find(
        self,
        client: ClientRow,
        day: date,
        masters: Sequence[StaffRow],
        *,
        created_at: datetime | None = None,
    ) -> AppointmentRow | None:
        rng = self.rng
        service = rng.choice(self.world.services)
        for _ in range(40):
            master = rng.choice(masters)
            hours = [
                h for h in self.world.hours if h.master is master and h.weekday == day.weekday()
            ]
            if not hours or hours[0].end_min - hours[0].start_min < service.duration_min:
                continue
            h = hours[0]
            minute = rng.randrange(h.start_min, h.end_min - service.duration_min + 1, 15)
            start = wall(day, minute)
            block_end = start + timedelta(minutes=service.duration_min + service.buffer_min)
            status = _status(rng, start)
            if status != "cancelled" and not self.free(master, start, block_end):
                continue
            if created_at is None:
                created = start - timedelta(seconds=rng.randrange(3600, 12 * 86400))
                created = min(created, NOW - timedelta(seconds=rng.randrange(60, 5 * 86400)))
            else:
                created = created_at
            if created >= start:
                continue
            price = rng.choice([None, None, service.price_minor + 10_000, 45_000])
            return self.put(
                client, master, service, start, status=status, created_at=created, price_minor=price
            )
        return None


def _status(rng: random.Random, start: datetime) -> str:
    if start < NOW:
        return rng.choices(
            ["done", "no_show", "cancelled", "booked", "confirmed"], [70, 10, 10, 6, 4]
        )[0]
    return rng.choices(["booked", "confirmed", "cancelled"], [60, 25, 15])[0]


def bookable(s: Salon, day: date) -> list[StaffRow]:
    masters = [s.olena, s.iryna, s.maksym, s.sofia]
    if day < date(2026, 10, 16):  # Taras left on the 16th
        masters.append(s.taras)
    return masters


def seconds(low: float, high: float, rng: random.Random) -> timedelta:
    return timedelta(seconds=rng.randint(int(low), int(high)))


class History:
    """Random conversations of one client's chat: exchanges, gaps and what came of them."""

    def __init__(self, world: World, s: Salon, diary: Diary, rng: random.Random) -> None:
        self.w = world
        self.s = s
        self.diary = diary
        self.rng = rng

    def conversation(self, chat: ConversationRow, start: datetime) -> None:
        rng = self.rng
        at = start
        for _ in range(rng.randint(1, 6)):
            if at >= NOW - timedelta(hours=2):
                return
            at = self.exchange(chat, at)
            gap = rng.choices(
                [
                    seconds(1800, 20 * 3600, rng),  # the same exchange goes on
                    seconds(20 * 3600, 24 * 3600 - 60, rng),  # just under a day
                    seconds(24 * 3600 + 60, 30 * 3600, rng),  # just over: a new inquiry
                    seconds(2 * 86400, 6 * 86400, rng),
                    seconds(7 * 86400, 20 * 86400, rng),
                ],
                [30, 10, 10, 30, 20],
            )[0]
            at += gap

    def exchange(self, chat: ConversationRow, at: datetime) -> datetime:
        """One round from `at`; the time of its last message."""
        w, rng = self.w, self.rng
        kind = rng.choices(
            ["bot", "handoff", "bot_staff", "staff", "none", "reminder", "late"],
            [35, 15, 7, 18, 12, 8, 5],
        )[0]
        if kind == "reminder":  # a reminder first; the client answers it within a day
            w.say(chat, at, "system")
            at += seconds(300, 20 * 3600, rng)
            kind = rng.choice(["bot", "none"])
        text = rng.choice(ASKING) if rng.random() < 0.45 else rng.choice(PLAIN)
        if rng.random() < 0.03:
            text = LONG_ASK
        asked = w.say(chat, at, "client", text)
        if kind in ("bot", "handoff", "bot_staff"):
            at += rng.choice([seconds(1, 20, rng), seconds(20, 120, rng), seconds(120, 900, rng)])
            w.say(chat, at, "bot")
            if rng.random() < 0.5:  # the client goes on, the bot answers again
                at += seconds(60, 2400, rng)
                w.say(chat, at, "client", rng.choice(PLAIN + ASKING))
                at += seconds(2, 30, rng)
                w.say(chat, at, "bot")
            if kind == "handoff":
                at += seconds(2, 20, rng)
                w.hand_off(chat, at)
                if rng.random() < 0.8:
                    at += seconds(180, 8 * 3600, rng)
                    w.say(chat, at, "staff")
                    w.note(chat, at, "take", "conversation")
            elif kind == "bot_staff":  # staff step in unasked
                at += seconds(600, 6 * 3600, rng)
                w.say(chat, at, "staff")
        elif kind == "staff":
            at += seconds(60, 20 * 3600, rng)
            w.say(chat, at, "staff")
        elif kind == "none":
            if rng.random() < 0.4:
                at += seconds(3600, 10 * 3600, rng)
                w.say(chat, at, "client", rng.choice(PLAIN))
        elif kind == "late":
            at += seconds(2 * 86400, 10 * 86400, rng)
            w.say(chat, at, "staff")
        if rng.random() < 0.3:
            self.booking_after(chat.client, asked.at)
        return at

    def booking_after(self, client: ClientRow, asked_at: datetime) -> None:
        rng = self.rng
        delay = rng.choices(
            [
                seconds(30, 7200, rng),
                seconds(7200, 3 * 86400, rng),
                seconds(5 * 86400, 7 * 86400 - 600, rng),  # inside the week
                seconds(7 * 86400 + 600, 12 * 86400, rng),  # beyond it
                -seconds(3600, 3 * 86400, rng),  # booked before asking
            ],
            [30, 25, 15, 15, 15],
        )[0]
        created = asked_at + delay
        if created > NOW:
            return
        day = created.astimezone(KYIV).date() + timedelta(days=rng.randint(1, 12))
        self.diary.find(client, day, bookable(self.s, day), created_at=created)


def generated_world(seed: int = SEED) -> World:
    """About six weeks of a salon's messages and appointments around the autumn clock change."""
    rng = random.Random(seed)
    w = World()
    s = salon(w)
    diary = Diary(w, rng)
    fixed_appointments(w, s, diary)
    edge_inquiries(w, rng)
    lost_lead_cases(w, s, diary)
    history = History(w, s, diary, rng)
    sources = {
        "telegram": [None, None, "tg_promo", "flyer_oct"],
        "instagram": [None, "ig_ad_autumn", "ig_ad_autumn", "ig_bio"],
    }
    first_names = ("Оксана", "Анна", "Марія", "Ivan", "Ольга", "Юлія", "Kate", "Наталія", "Дарина")
    for n in range(40):
        channels = rng.sample(CHANNELS, rng.choices([1, 2, 3], [55, 35, 10])[0])
        client = w.add_client(
            f"{rng.choice(first_names)} {n}",
            phone=f"+38067{rng.randrange(10**7):07d}" if rng.random() < 0.8 else None,
            email=f"client{n}@mail.test" if rng.random() < 0.4 else None,
            source_ref=rng.choice(sources.get(channels[0], [None, None, None, "flyer_oct"])),
        )
        for channel in channels:
            day = date(2026, 9, 1) + timedelta(days=rng.randrange(72))
            minute = rng.choices([rng.randrange(0, 480), rng.randrange(480, 1320)], [15, 85])[0]
            start = wall(day, minute) + timedelta(seconds=rng.randrange(60))
            history.conversation(w.chat(client, channel), start)
        if rng.random() < 0.75:
            visits(w, s, diary, rng, client)
    for n in range(25):  # clients who phone or walk in: visits, no messages
        walk_in = w.add_client(f"Гість {n}", phone=f"+38050{rng.randrange(10**7):07d}")
        visits(w, s, diary, rng, walk_in)
    # Only the past is on record.
    w.messages = [m for m in w.messages if m.at < NOW]
    w.audit = [a for a in w.audit if a.at < NOW]
    w.appointments = [a for a in w.appointments if a.created_at < NOW]
    first_contacts(w, rng)
    return w


def visits(w: World, s: Salon, diary: Diary, rng: random.Random, client: ClientRow) -> None:
    """A client's visits: the first somewhere from August on, the next ones weeks apart."""
    day = date(2026, 8, 1) + timedelta(days=rng.randrange(112))
    for _ in range(rng.randint(1, 6)):
        if day > date(2026, 11, 30):
            return
        diary.find(client, day, bookable(s, day))
        day += timedelta(
            days=rng.choice([rng.randint(10, 40), rng.randint(50, 59), rng.randint(61, 90)])
        )


def first_contacts(w: World, rng: random.Random) -> None:
    earliest: dict[ClientRow, datetime] = {}
    for m in w.messages:
        if m.client not in earliest or m.at < earliest[m.client]:
            earliest[m.client] = m.at
    for client in w.clients:
        if client.first_contact_at is not None:
            continue
        roll = rng.random()
        if roll < 0.08:
            continue  # an imported card: no first contact recorded
        if roll < 0.14:
            client.first_contact_at = kyiv("2025-05-01 12:00")  # a client from long ago
        else:
            client.first_contact_at = earliest.get(client)


def fixed_appointments(w: World, s: Salon, diary: Diary) -> None:
    """Visits whose figures are easy to see (returns at 60 days, midnight, the owner's)."""
    manicure, haircut, brows, colouring = s.services
    exact = w.add_client("Повернулась рівно за 60 днів", phone="+380500000001")
    diary.put(exact, s.olena, manicure, kyiv("2026-08-03 10:00"), status="done",
              created_at=kyiv("2026-08-01 09:00"))  # fmt: skip
    diary.put(exact, s.olena, manicure, kyiv("2026-10-02 10:00"), status="done",
              created_at=kyiv("2026-09-30 09:00"))  # fmt: skip
    late = w.add_client("Повернулась за 60 днів і 15 хвилин", phone="+380500000002")
    diary.put(late, s.iryna, haircut, kyiv("2026-08-04 11:00"), status="done",
              created_at=kyiv("2026-08-01 09:00"))  # fmt: skip
    diary.put(late, s.iryna, haircut, kyiv("2026-10-03 11:15"), status="done",
              created_at=kyiv("2026-09-30 09:00"))  # fmt: skip
    missed = w.add_client("Спершу не прийшла", phone="+380500000003")
    diary.put(missed, s.olena, brows, kyiv("2026-10-08 10:00"), status="no_show",
              created_at=kyiv("2026-10-01 09:00"))  # fmt: skip
    diary.put(missed, s.olena, brows, kyiv("2026-10-15 10:00"), status="done",
              created_at=kyiv("2026-10-09 09:00"))  # fmt: skip
    diary.put(missed, s.olena, brows, kyiv("2026-11-06 10:00"), status="done",
              created_at=kyiv("2026-10-15 11:00"))  # fmt: skip
    # The owner's own work, at hours nobody keeps: local dates differ from UTC dates here.
    bride = w.add_client("Наречена", phone="+380500000004")
    diary.put(bride, s.owner, colouring, kyiv("2026-10-25 01:30"), status="done",
              created_at=kyiv("2026-10-01 12:00"), price_minor=300_000)  # fmt: skip
    diary.put(bride, s.owner, haircut, kyiv("2026-11-02 00:30"), status="done",
              created_at=kyiv("2026-10-26 12:00"))  # fmt: skip
    # Taras's last days (he is inactive now but worked in the period).
    regular = w.add_client("Постійний клієнт Тараса", phone="+380500000005")
    diary.put(regular, s.taras, haircut, kyiv("2026-09-23 18:00"), status="done",
              created_at=kyiv("2026-09-20 12:00"))  # fmt: skip
    diary.put(regular, s.taras, haircut, kyiv("2026-10-08 22:00"), status="done",
              created_at=kyiv("2026-10-02 12:00"))  # fmt: skip
    diary.put(regular, s.taras, colouring, kyiv("2026-10-14 07:00"), status="no_show",
              created_at=kyiv("2026-10-09 12:00"))  # fmt: skip


def edge_inquiries(w: World, rng: random.Random) -> None:
    """Single inquiries at the instants the definitions turn on: midnights, the clock change,
    opening and closing times, the edges of the periods the tests ask about."""
    cases: list[tuple[datetime, str, str | None, int]] = [
        (kyiv("2026-10-06 23:59:59"), "telegram", "bot", 5),  # the day before MAIN
        (kyiv("2026-10-07 00:00:00"), "instagram", "bot", 40),  # MAIN's first instant
        (kyiv("2026-10-12 07:59:30"), "viber", "bot", 12),  # Monday: the desk opens at 08:00
        (kyiv("2026-10-12 08:00:00"), "viber", "staff", 600),
        (kyiv("2026-10-12 18:59:59"), "sms", "staff", 90),  # Olena leaves at 19:00
        (kyiv("2026-10-12 19:00:30"), "sms", "bot", 3),
        (kyiv("2026-10-13 08:59:59"), "email", "staff", 7200),  # Tuesday: Iryna from 09:00
        (kyiv("2026-10-13 09:00:00"), "email", "bot", 61),
        (kyiv("2026-10-17 20:59:59"), "telegram", "bot", 2),  # Saturday: Maksym until 21:00
        (kyiv("2026-10-17 21:00:01"), "telegram", "bot", 2),
        (kyiv("2026-10-18 09:59:59"), "instagram", "bot", 8),  # Sunday: Sofia from 10:00
        (kyiv("2026-10-18 10:00:00"), "instagram", None, 0),
        (kyiv("2026-10-19 00:00:00"), "viber", "bot", 15),  # PAST's first instant
        (kyiv("2026-10-19 22:00:00"), "telegram", "bot", 20),  # only inactive Taras "works"
        (kyiv("2026-10-24 23:59:30"), "telegram", "bot", 25),  # a day's last minute
        (kyiv("2026-10-25 00:00:30"), "telegram", "bot", 25),  # the long day's first
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "instagram", "bot", 30),  # 03:30 EEST
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "instagram", "staff", 300),  # 03:30 EET
        (kyiv("2026-10-25 10:00:00"), "viber", "bot", 4),
        (kyiv("2026-10-28 23:59:59"), "sms", "bot", 9),  # PAST's last second
        (kyiv("2026-10-29 00:00:00"), "sms", "bot", 9),  # PAST's end: after it
        (kyiv("2026-11-01 00:10:00"), "email", "staff", 3600),  # local Nov 1, UTC Oct 31
        (kyiv("2026-11-02 00:05:00"), "telegram", "bot", 6),
    ]
    for n, (at, channel, responder, after) in enumerate(cases):
        chat = w.chat(w.add_client(f"Межа {n}", source_ref="edge" if n % 3 == 0 else None), channel)
        chat.client.first_contact_at = at
        w.say(chat, at, "client", rng.choice(PLAIN))
        if responder:
            w.say(chat, at + timedelta(seconds=after), responder)
    # Answered after the horizon of a period ending on the 28th (7 days after its end).
    slow = w.chat(w.add_client("Повільна відповідь", email="slow@mail.test"), "email")
    w.say(slow, kyiv("2026-10-28 20:00"), "client", "Добрий день, є питання")
    w.say(slow, kyiv("2026-11-06 10:00"), "staff")
    # Answered 6 days 10 hours after that period: inside its horizon.
    slow = w.chat(w.add_client("Відповідь за шість днів"), "email")
    w.say(slow, kyiv("2026-10-28 21:00"), "client", "Питання щодо сертифіката")
    w.say(slow, kyiv("2026-11-04 10:00"), "staff")
    # The bot alone; the conversation's next inquiry (handed off) comes after that period's
    # horizon: it belongs to another exchange.
    later = w.chat(w.add_client("Повернулась через два тижні"), "telegram")
    w.say(later, kyiv("2026-10-27 10:00"), "client", "Hello")
    w.say(later, kyiv("2026-10-27 10:00:06"), "bot")
    w.say(later, kyiv("2026-11-09 10:00"), "client", "Хочу поговорити з адміністратором")
    w.say(later, kyiv("2026-11-09 10:00:04"), "bot")
    w.hand_off(later, kyiv("2026-11-09 10:00:05"))
    w.say(later, kyiv("2026-11-09 10:20"), "staff")
    # Unanswered, then asked again two days later: the bot's answer is the first response
    # after both (docs/metrics.md: the earliest message after it in the conversation).
    twice = w.chat(w.add_client("Написала двічі"), "telegram")
    w.say(twice, kyiv("2026-10-20 10:00"), "client", "Hello")
    w.say(twice, kyiv("2026-10-22 12:00"), "client", "Hello again")
    w.say(twice, kyiv("2026-10-22 12:00:20"), "bot")


def lost_lead_cases(w: World, s: Salon, diary: Diary) -> None:
    manicure, haircut, _, colouring = s.services
    # Asked, never answered: a lost lead with no reply at all.
    silent = w.add_client("Ніхто не відповів", phone="+380631111111")
    w.say(w.chat(silent, "viber"), kyiv("2026-11-10 11:00"), "client", "СКІЛЬКИ КОШТУЄ фарбування?")
    # Answered by the bot nine days ago, nothing since.
    old = w.add_client("Old reply", email="old@mail.test")
    chat = w.chat(old, "instagram")
    w.say(chat, kyiv("2026-11-03 09:00"), "client", "What's the PRICE of gel nails?")
    w.say(chat, kyiv("2026-11-03 09:00:40"), "bot")
    # Staff wrote a day and a half ago: not lost with 3 days, lost with 1.
    recent = w.add_client("Недавно відповіли", phone="+380632222222")
    chat = w.chat(recent, "telegram")
    w.say(chat, kyiv("2026-11-08 13:00"), "client", "Сколько стоит окрашивание?")
    w.say(chat, kyiv("2026-11-11 04:00"), "staff")
    # Booked after asking: no lead.
    booked = w.add_client("Записалась", phone="+380633333333")
    w.say(w.chat(booked, "sms"), kyiv("2026-11-04 10:00"), "client", "ціна манікюру?")
    diary.put(booked, s.olena, manicure, kyiv("2026-11-16 10:00"), status="cancelled",
              created_at=kyiv("2026-11-05 10:00"))  # fmt: skip
    # An upcoming visit booked long before asking: no lead.
    upcoming = w.add_client("Вже має запис", phone="+380634444444")
    w.say(w.chat(upcoming, "telegram"), kyiv("2026-11-09 18:00"), "client", "На коли я записана?")
    diary.put(upcoming, s.iryna, haircut, kyiv("2026-11-14 09:00"), status="confirmed",
              created_at=kyiv("2026-10-01 10:00"))  # fmt: skip
    # Only a cancelled upcoming visit, booked before asking, and a long question: a lead.
    wordy = w.add_client("Багато слів", phone="+380635555555", email="wordy@mail.test")
    w.say(w.chat(wordy, "email"), kyiv("2026-11-11 21:00"), "client", LONG_ASK)
    diary.put(wordy, s.maksym, colouring, kyiv("2026-11-20 11:00"), status="cancelled",
              created_at=kyiv("2026-10-02 10:00"))  # fmt: skip
    # Asked on two channels; booked between the two questions (after the first): no lead.
    two = w.add_client("Два канали", phone="+380636666666")
    w.say(w.chat(two, "telegram"), kyiv("2026-10-20 12:00"), "client", "Яка ціна брів?")
    diary.put(two, s.olena, haircut, kyiv("2026-10-23 12:00"), status="done",
              created_at=kyiv("2026-10-21 10:00"))  # fmt: skip
    w.say(w.chat(two, "instagram"), kyiv("2026-11-05 12:00"), "client", "How much is a haircut?")
    # Asked only before the main period.
    early = w.add_client("Питала раніше", phone="+380637777777")
    w.say(w.chat(early, "sms"), kyiv("2026-10-01 12:00"), "client", "Ціна стрижки?")
    # Replies an hour inside and an hour outside the default 3 days.
    for name, reply in (
        ("Три дні без години", "2026-11-09 17:30"),
        ("Три дні і година", "2026-11-09 15:30"),
    ):
        client = w.add_client(name, phone="+380639999999")
        chat = w.chat(client, "instagram")
        w.say(chat, kyiv("2026-11-09 15:00"), "client", "Скільки коштує педикюр?")
        w.say(chat, kyiv(reply), "staff")
    # Asked in two chats; the reply went to the other chat, two days ago.
    elsewhere = w.add_client("Відповіли в іншому чаті", phone="+380638888888")
    w.say(w.chat(elsewhere, "sms"), kyiv("2026-11-06 12:00"), "client", "Вартість манікюру?")
    other = w.chat(elsewhere, "viber")
    w.say(other, kyiv("2026-11-10 12:00"), "client", "Добрий день")
    w.say(other, kyiv("2026-11-10 12:01"), "bot")
