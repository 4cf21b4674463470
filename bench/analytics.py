"""The owner's analytics page over a year of a busy salon.

    python -m bench.analytics [--messages 200000] [--appointments 20000] [--runs 7]
                              [--postgres postgresql://user@host/db] [--sqlite] [--seed 1]

A database of the benchmark's own (PostgreSQL with --postgres: created on that server and
dropped afterwards; SQLite with --sqlite, or when no server is named; both with both) is
migrated and filled with 12 months of a salon ending at a fixed "now" (2026-11-30 12:00 UTC,
Europe/Kyiv): 8 masters with working hours, breaks and time off, 15 services, a client card
per 20 messages, conversations on Telegram, Instagram, Viber, SMS, email and the web chat,
messages in exchanges (a client's question, the bot's answer within seconds, a hand-off and a
staff answer minutes or hours later, reminders before visits, some questions nobody answered,
questions about price and time in uk/en/ru), the hand-off audit entries, and appointments
booked days after the questions (done, no-show, cancelled, booked, confirmed; a master's live
ones never overlap: both databases refuse that). Rows go in by COPY (PostgreSQL) or
executemany (SQLite) with ids of our own; PostgreSQL then gets ANALYZE, as autovacuum would,
while SQLite is left without statistics, as the hub leaves it.

Prints, per database:

- what was loaded (rows of the big tables), how long building the rows, loading them and
  ANALYZE took, and the server (PostgreSQL's version, jit, work_mem, shared_buffers);
- for the page of the last 30 days, a whole year (365 days) and the 30 days narrowed to
  Telegram (the queries the API makes of those parameters, hub.analytics_api): the median,
  min and max of `dashboard()` (every table, what the page shows) over --runs runs after one
  warm-up, and the rows each table returned;
- for the year, the median per table (`table()` for each name, once per run): where the time
  goes, the slowest table marked. Each table alone does its own groundwork (the five built
  on inquiries each find the period's inquiries first), so the sum exceeds the page.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Table, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics import TABLES, Query, dashboard, table
from crm_store.db import create_engine, session_factory
from crm_store.models import (
    Appointment,
    AuditEntry,
    Business,
    ChannelIdentity,
    Client,
    Conversation,
    MasterService,
    Message,
    Service,
    Staff,
    TimeOff,
    WorkingHours,
)
from hub.cli.bench.databases import fresh_database, label
from hub.web.analytics_api import read_query

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Kyiv")
YEAR = timedelta(days=365)
MESSAGES_PER_CLIENT = 20
HORIZON_DAYS = 21  # appointments are booked up to three weeks ahead of now
INBOX = "main"

CHANNELS = {"telegram": 34, "instagram": 24, "viber": 14, "sms": 7, "email": 7, "webchat": 14}
LANGUAGES = {"uk": 62, "ru": 23, "en": 15}
SOURCES = {
    "telegram": ("ig_ad_spring", "google_maps", "flyer_2026", "tiktok_bio"),
    "instagram": ("ad_120211", "ad_120388", "story_link"),
}
# How many clients' local hours (0..23) begin an exchange: quiet at night, busy at lunch and
# after work.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 4, 8, 11, 12, 12, 11, 10, 10, 10, 11, 12, 13, 13, 11, 8, 5, 2)
LEAD_DAYS = tuple(range(1, 15))
LEAD_WEIGHTS = (12, 11, 10, 9, 8, 7, 7, 5, 4, 3, 3, 2, 2, 2)
GAPS_MIN = (0, 0, 0, 0, 0, 0, 15, 15, 30, 60)

# (uk, en, ru names, category, minutes, price in kopiykas, buffer minutes, popularity)
SERVICES = (
    ("Жіноча стрижка", "Women's haircut", "Женская стрижка", "hair", 60, 70_000, 10, 8),
    ("Чоловіча стрижка", "Men's haircut", "Мужская стрижка", "hair", 45, 45_000, 5, 12),
    ("Фарбування", "Colour", "Окрашивание", "hair", 120, 220_000, 15, 3),
    ("Укладка", "Styling", "Укладка", "hair", 45, 50_000, 5, 4),
    ("Борода", "Beard trim", "Борода", "hair", 30, 35_000, 5, 6),
    ("Манікюр з покриттям", "Gel manicure", "Маникюр с покрытием", "nails", 90, 65_000, 10, 8),
    ("Манікюр класичний", "Classic manicure", "Маникюр классический", "nails", 45, 40_000, 5, 5),
    ("Педикюр", "Pedicure", "Педикюр", "nails", 75, 80_000, 10, 4),
    ("Ламінування брів", "Brow lamination", "Ламинирование бровей", "brows", 45, 60_000, 5, 6),
    ("Корекція брів", "Brow shaping", "Коррекция бровей", "brows", 30, 30_000, 0, 10),
    ("Нарощування вій", "Lash extensions", "Наращивание ресниц", "brows", 120, 120_000, 15, 2),
    ("Чистка обличчя", "Facial cleansing", "Чистка лица", "face", 60, 110_000, 15, 2),
    ("Пілінг", "Peel", "Пилинг", "face", 45, 90_000, 15, 1),
    ("Масаж спини", "Back massage", "Массаж спины", "massage", 30, 50_000, 10, 5),
    ("Загальний масаж", "Full body massage", "Общий массаж", "massage", 60, 90_000, 10, 5),
)
# (name, categories, weekdays, start, end (minutes of the local day), breaks)
MASTERS = (
    ("Олена", ("hair",), (0, 1, 2, 3, 4, 5), 9 * 60, 21 * 60, ((13 * 60, 14 * 60),)),
    ("Ірина", ("hair",), (1, 2, 3, 4, 5, 6), 10 * 60, 21 * 60, ((14 * 60, 14 * 60 + 45),)),
    ("Андрій", ("hair",), (0, 2, 3, 4, 5, 6), 10 * 60, 21 * 60, ((14 * 60, 14 * 60 + 30),)),
    ("Марія", ("nails",), (0, 1, 2, 3, 4, 5), 9 * 60, 20 * 60, ((13 * 60, 13 * 60 + 45),)),
    ("Світлана", ("nails",), (1, 2, 3, 4, 5, 6), 10 * 60, 21 * 60, ((15 * 60, 15 * 60 + 45),)),
    ("Катерина", ("brows",), (0, 1, 2, 3, 4, 5), 9 * 60, 20 * 60, ((13 * 60, 14 * 60),)),
    ("Наталія", ("face", "brows"), (0, 1, 3, 4, 5), 10 * 60, 20 * 60, ((14 * 60, 15 * 60),)),
    ("Дмитро", ("massage",), (0, 1, 2, 3, 5, 6), 11 * 60, 21 * 60, ((15 * 60, 15 * 60 + 30),)),
)
ADMINS = ("Марина", "Оксана")

# What clients, the bot, staff and reminders write. The questions carry words of
# prompts/analytics/interest.json; the small talk carries none of them.
QUESTIONS = {
    "uk": (
        "Скільки коштує манікюр з покриттям?",
        "Добрий день, яка ціна на жіночу стрижку?",
        "Чи є вільний час на суботу після обіду?",
        "Коли можна записатися на фарбування?",
        "Хочу записатися до Олени, на коли є місця?",
        "Підкажіть вартість ламінування брів, будь ласка",
        "Можна прайс на масаж?",
    ),
    "en": (
        "How much is a gel manicure?",
        "Hi, what's the price of a women's haircut?",
        "Do you have availability on Saturday afternoon?",
        "When can I come in for a colour?",
        "Could I book a massage for tomorrow evening?",
    ),
    "ru": (
        "Сколько стоит маникюр с покрытием?",
        "Здравствуйте, какая цена на стрижку?",
        "Есть свободное окно на субботу?",
        "Когда можно записаться на окрашивание?",
        "Подскажите стоимость ламинирования бровей",
    ),
}
SMALL_TALK = {
    "uk": (
        "Добрий день!",
        "Дякую!",
        "Добре, домовились",
        "А де ви знаходитесь?",
        "Я трохи запізнюсь, вибачте",
        "Чи можна оплатити карткою?",
        "👍",
        "Дякую, все дуже сподобалось!",
        "Ок",
    ),
    "en": (
        "Hello!",
        "Thank you!",
        "Great, see you then",
        "Where are you located?",
        "I'll be ten minutes late, sorry",
        "Can I pay by card?",
        "👍",
        "Ok",
    ),
    "ru": (
        "Здравствуйте!",
        "Спасибо!",
        "Хорошо, договорились",
        "А где вы находитесь?",
        "Я немного опоздаю, извините",
        "Можно оплатить картой?",
        "👍",
        "Ок",
    ),
}
BOT = {
    "uk": (
        "Добрий день! Манікюр з покриттям коштує від 650 грн і триває близько півтори "
        "години. Записати вас? Найближчий вільний час: завтра о 12:00 або о 15:30.",
        "Ми на вул. Саксаганського, 12, вхід з двору. Працюємо щодня з 9:00 до 21:00.",
        "Записала вас на суботу о 14:00 до Олени. Нагадаю за день. До зустрічі!",
        "Так, можна оплатити карткою або готівкою на рецепції.",
        "Дякуємо, що написали! Чим можу допомогти?",
    ),
    "en": (
        "Hello! A gel manicure is from 650 UAH and takes about an hour and a half. Shall I "
        "book you? The nearest free times are tomorrow at 12:00 or 15:30.",
        "We are at 12 Saksahanskoho St, entrance from the yard. Open daily 9:00-21:00.",
        "You're booked for Saturday at 14:00 with Olena. I'll remind you a day before.",
        "Yes, you can pay by card or in cash at the front desk.",
    ),
    "ru": (
        "Здравствуйте! Маникюр с покрытием стоит от 650 грн и длится около полутора часов. "
        "Записать вас? Ближайшее свободное время: завтра в 12:00 или в 15:30.",
        "Мы на ул. Саксаганского, 12, вход со двора. Работаем ежедневно с 9:00 до 21:00.",
        "Записала вас на субботу в 14:00 к Олене. Напомню за день. До встречи!",
        "Да, можно оплатить картой или наличными на ресепшене.",
    ),
}
STAFF = {
    "uk": (
        "Добрий день, це адміністратор. Так, можемо прийняти вас у четвер о 16:00, підходить?",
        "Вибачте за очікування! Майстер уточнив: фарбування займе близько 2,5 годин.",
        "Перенесла ваш запис, чекаємо вас!",
    ),
    "en": (
        "Hi, this is the front desk. We can see you on Thursday at 16:00, does that work?",
        "Sorry for the wait! The colour will take about two and a half hours.",
    ),
    "ru": (
        "Здравствуйте, это администратор. Можем принять вас в четверг в 16:00, подходит?",
        "Извините за ожидание! Окрашивание займёт около 2,5 часов.",
    ),
}
REMINDER = {
    "uk": "Нагадуємо: завтра о {time} у вас {service}. Підтвердити / Скасувати / Перенести",
    "en": "A reminder: tomorrow at {time} you have {service}. Confirm / Cancel / Reschedule",
    "ru": "Напоминаем: завтра в {time} у вас {service}. Подтвердить / Отменить / Перенести",
}
CONFIRM = {"uk": "Підтверджую", "en": "Confirm", "ru": "Подтверждаю"}
ACK = {
    "uk": "Дякуємо, чекаємо вас!",
    "en": "Thank you, see you tomorrow!",
    "ru": "Спасибо, ждём вас!",
}
EMAIL_SIGNATURE = (
    "\n\n--\nЗ повагою,\n{name}\nНадіслано з мого iPhone\n\n"
    "> Ви отримали цей лист, тому що підписані на новини салону. "
    "Щоб відписатися, відповідайте «стоп»."
)


@dataclass(frozen=True)
class Spec:
    """What to generate."""

    messages: int = 200_000
    appointments: int = 20_000
    now: datetime = NOW
    tz: ZoneInfo = TZ
    seed: int = 1


@dataclass
class Loaded:
    counts: dict[str, int]
    build_s: float
    load_s: float
    analyze_s: float
    server: str = ""

    @property
    def total_s(self) -> float:
        return self.build_s + self.load_s + self.analyze_s


# One message before ids: (at, conversation index, direction, author, staff id, text).
Draft = tuple[datetime, int, str, str, int | None, str]
# A change of hands: (at, actor, staff id, conversation index, action, changes).
_Audit = tuple[datetime, str, int | None, int, str, dict[str, Any]]


@dataclass
class _Conversation:
    index: int
    client: int  # index into the salon's clients
    channel: str
    external_id: str
    # The first day (counted from the data's first) the client may write: a new client's
    # chat begins when they arrive.
    since_day: int = 0
    # Exchanges already placed, as (first, last) message times, sorted: a new one may not
    # interleave with them.
    spans: list[tuple[datetime, datetime]] = field(default_factory=list)


@dataclass
class _Client:
    index: int
    language: str
    name: str
    phone: str | None
    email: str | None
    created_at: datetime
    conversations: list[int] = field(default_factory=list)


@dataclass
class _Day:
    """One master's day while booking: live appointments are laid from the morning on."""

    cursor: int
    end: int
    blocked: list[tuple[int, int]]

    def take(self, minutes: int, gap: int) -> int | None:
        start = -(-(self.cursor + gap) // 15) * 15
        for block_start, block_end in self.blocked:
            if start < block_end and block_start < start + minutes:
                start = -(-block_end // 15) * 15
        if start + minutes > self.end:
            return None
        self.cursor = start + minutes
        self.blocked = [b for b in self.blocked if b[1] > self.cursor]
        return start


class _Salon:
    """Builds every row in memory with ids of its own, in the order the tables are loaded."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.now = spec.now
        self.tz = spec.tz
        self.first_day = (spec.now - YEAR).astimezone(spec.tz).date()
        self.last_day = spec.now.astimezone(spec.tz).date()
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.clients: list[_Client] = []
        self.conversations: list[_Conversation] = []
        # Cumulative weights of the conversations: how often each one's client writes.
        self.chat_weights: list[float] = []
        self.drafts: list[Draft] = []
        self.audits: list[_Audit] = []
        # Inquiries as (at, client index, wants price or time).
        self.inquiries: list[tuple[datetime, int, bool]] = []
        self.staff_ids: list[int] = []
        self.masters: list[int] = []
        self.hours: dict[int, dict[int, tuple[int, int, tuple[tuple[int, int], ...]]]] = {}
        self.vacation: dict[int, set[date]] = defaultdict(set)
        self.short_off: dict[tuple[int, date], list[tuple[int, int]]] = defaultdict(list)
        self.services: list[dict[str, Any]] = []
        # Per service, who does it at what price: (master, price).
        self.offers: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self.days: dict[tuple[int, date], _Day | None] = {}
        self.appointments: list[dict[str, Any]] = []

    # The salon ----------------------------------------------------------------------------

    def catalog(self) -> None:
        rng, created = self.rng, self.now - YEAR - timedelta(days=400)
        self.rows["business"].append(
            {"id": 1, "name": "Bench salon", "timezone": self.tz.key, "currency": "UAH"}
        )
        staff_id = 0

        def staff(name: str, role: str) -> int:
            nonlocal staff_id
            staff_id += 1
            self.rows["staff"].append(
                {
                    "id": staff_id,
                    "email": f"staff{staff_id}@bench.test",
                    "name": name,
                    "role": role,
                    # Not an argon2 hash: nobody signs in as these.
                    "password_hash": "!",
                    "active": True,
                    "language": "uk",
                    "created_at": created,
                }
            )
            return staff_id

        staff("Власниця", "owner")
        self.staff_ids = [staff(name, "admin") for name in ADMINS]
        for position, (uk, en, ru, category, minutes, price, buffer, _) in enumerate(SERVICES):
            row = {
                "id": position + 1,
                "name_uk": uk,
                "name_en": en,
                "name_ru": ru,
                "category": category,
                "duration_min": minutes,
                "price_minor": price,
                "buffer_min": buffer,
                "active": True,
                "position": position,
                "return_interval_days": 30 if category in ("hair", "nails") else None,
                "created_at": created,
            }
            self.rows["services"].append(row)
            self.services.append(row)
        for number, (name, categories, weekdays, start, end, breaks) in enumerate(MASTERS):
            master = staff(name, "master")
            self.masters.append(master)
            senior = number % 3 == 0
            for service in self.services:
                if service["category"] not in categories:
                    continue
                own = service["price_minor"] * 6 // 5 if senior else None
                self.rows["master_services"].append(
                    {
                        "master_id": master,
                        "service_id": service["id"],
                        "duration_min": None,
                        "price_minor": own,
                    }
                )
                self.offers[service["id"]].append((master, own or service["price_minor"]))
            self.hours[master] = {}
            for weekday in weekdays:
                self.hours[master][weekday] = (start, end, breaks)
                self.rows["working_hours"].append(
                    {
                        "master_id": master,
                        "weekday": weekday,
                        "start_min": start,
                        "end_min": end,
                        "breaks": [list(b) for b in breaks],
                    }
                )
            self._time_off(master, rng)
        for row_id, row in enumerate(self.rows["working_hours"], 1):
            row["id"] = row_id
        for row_id, row in enumerate(self.rows["time_off"], 1):
            row["id"] = row_id

    def _time_off(self, master: int, rng: random.Random) -> None:
        """A vacation of one or two weeks, and a few hours off here and there."""
        first = self.first_day + timedelta(days=rng.randrange(20, 330))
        length = rng.choice((7, 10, 14))
        self.vacation[master].update(first + timedelta(days=n) for n in range(length))
        self.rows["time_off"].append(
            {
                "master_id": master,
                "start_at": self.local(first, 0),
                "end_at": self.local(first + timedelta(days=length), 0),
                "reason": "відпустка",
            }
        )
        for _ in range(rng.randint(2, 5)):
            day = self.first_day + timedelta(days=rng.randrange(0, 365 + HORIZON_DAYS))
            start = rng.choice((10, 12, 14, 16)) * 60
            self.short_off[(master, day)].append((start, start + 120))
            self.rows["time_off"].append(
                {
                    "master_id": master,
                    "start_at": self.local(day, start),
                    "end_at": self.local(day, start + 120),
                    "reason": "лікар",
                }
            )

    def local(self, day: date, minute: int) -> datetime:
        """A local wall time as UTC (the salon's hours never fall into a DST gap)."""
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        return (midnight + timedelta(minutes=minute)).astimezone(UTC)

    def people(self) -> None:
        """Clients, one to three chats each, the chats' identities."""
        rng = self.rng
        count = max(1, self.spec.messages // MESSAGES_PER_CLIENT)
        languages = rng.choices(list(LANGUAGES), weights=list(LANGUAGES.values()), k=count)
        channel_names, channel_weights = list(CHANNELS), list(CHANNELS.values())
        for index in range(count):
            # Most were clients before the year the data covers; the rest arrive through it
            # (so the salon grows, by two thirds over the year).
            if rng.random() < 0.6:
                created = self.now - YEAR - timedelta(days=rng.uniform(1, 900))
            else:
                created = self.now - YEAR + timedelta(days=rng.uniform(0, 360))
            client = _Client(
                index=index,
                language=languages[index],
                name=f"Клієнт {index + 1}",
                phone=f"+38067{index:07d}" if rng.random() < 0.8 else None,
                email=f"client{index + 1}@mail.test" if rng.random() < 0.3 else None,
                created_at=created,
            )
            self.clients.append(client)
            chats = rng.choices((1, 2, 3), weights=(80, 17, 3))[0]
            for channel in dict.fromkeys(
                rng.choices(channel_names, weights=channel_weights, k=chats)
            ):
                conversation = _Conversation(
                    index=len(self.conversations),
                    client=index,
                    channel=channel,
                    external_id=f"{channel}-{len(self.conversations) + 1:08d}",
                    since_day=max(0, (created.astimezone(self.tz).date() - self.first_day).days),
                )
                self.conversations.append(conversation)
                client.conversations.append(conversation.index)
        # Some clients write all the time, most now and then; a newcomer for the part of the
        # year they have been with the salon.
        weights = [rng.lognormvariate(0, 1) * (366 - c.since_day) / 366 for c in self.conversations]
        self.chat_weights = list(accumulate(weights))

    # Messages -----------------------------------------------------------------------------

    def exchanges(self, budget: int) -> None:
        """Exchanges until `budget` messages are drafted (the last one cut to fit)."""
        rng = self.rng
        total = self.chat_weights[-1]
        hours = list(range(24))
        drafted = len(self.drafts)
        while drafted < budget:
            conversation = self.conversations[
                bisect.bisect(self.chat_weights, rng.random() * total)
            ]
            day = self.first_day + timedelta(days=rng.randrange(conversation.since_day, 366))
            hour = rng.choices(hours, weights=HOUR_WEIGHTS)[0]
            at = self.local(day, hour * 60) + timedelta(seconds=rng.uniform(0, 3600))
            if at >= self.now - timedelta(minutes=5) or at < self.now - YEAR:
                continue
            drafts, audits, wants = self._exchange(conversation, at)
            drafts = [d for d in drafts if d[0] <= self.now]
            span = (drafts[0][0], drafts[-1][0])
            place = bisect.bisect(conversation.spans, span)
            before = conversation.spans[place - 1] if place else None
            after = conversation.spans[place] if place < len(conversation.spans) else None
            if (before and before[1] >= span[0]) or (after and span[1] >= after[0]):
                continue  # would interleave with another exchange of the chat
            conversation.spans.insert(place, span)
            whole = len(drafts) <= budget - drafted
            drafts = drafts[: budget - drafted]
            self.drafts.extend(drafts)
            drafted += len(drafts)
            self.inquiries.append((at, conversation.client, wants))
            cutoff = self.now if whole else drafts[-1][0]
            self.audits.extend(a for a in audits if a[0] <= cutoff)

    def _exchange(
        self, conversation: _Conversation, at: datetime
    ) -> tuple[list[Draft], list[_Audit], bool]:
        """One exchange from the client's first message on, the changes of hands in it, and
        whether the first message asks about price or time."""
        rng = self.rng
        client = self.clients[conversation.client]
        language, index = client.language, conversation.index
        wants = rng.random() < 0.35
        question = rng.choice(QUESTIONS[language] if wants else SMALL_TALK[language])
        if conversation.channel == "email":
            question += EMAIL_SIGNATURE.format(name=client.name)
        drafts: list[Draft] = [(at, index, "in", "client", None, question)]
        audits: list[_Audit] = []
        t = at
        fate = rng.random()
        if fate < 0.06:  # nobody answers; sometimes the client asks again
            if rng.random() < 0.4:
                t += timedelta(minutes=rng.uniform(2, 180))
                drafts.append((t, index, "in", "client", None, rng.choice(SMALL_TALK[language])))
            return drafts, audits, wants
        if fate < 0.16:  # the bot is off for this chat: staff answer first
            admin = rng.choice(self.staff_ids)
            t = self._staff_time(t)
            drafts.append((t, index, "out", "staff", admin, rng.choice(STAFF[language])))
            return drafts, audits, wants
        t += timedelta(seconds=rng.uniform(1, 8))
        drafts.append((t, index, "out", "bot", None, rng.choice(BOT[language])))
        for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 2, 3))):
            t += timedelta(seconds=rng.uniform(20, 600))
            asks = rng.random() < 0.2
            drafts.append(
                (
                    t,
                    index,
                    "in",
                    "client",
                    None,
                    rng.choice(QUESTIONS[language] if asks else SMALL_TALK[language]),
                )
            )
            t += timedelta(seconds=rng.uniform(1, 8))
            drafts.append((t, index, "out", "bot", None, rng.choice(BOT[language])))
        fate = rng.random()
        if fate < 0.18:  # the bot hands the client to staff
            t += timedelta(seconds=rng.uniform(0.5, 3))
            change = {"status": ["bot", "waiting"], "reason": "the client asked for a person"}
            audits.append((t, "bot", None, index, "hand_off", change))
            if rng.random() < 0.85:
                admin = rng.choice(self.staff_ids)
                t = self._staff_time(t)
                change = {"status": ["waiting", "human"], "reason": "taken"}
                audits.append((t - timedelta(seconds=20), "staff", admin, index, "take", change))
                drafts.append((t, index, "out", "staff", admin, rng.choice(STAFF[language])))
                if rng.random() < 0.5:
                    t += timedelta(minutes=rng.uniform(1, 30))
                    drafts.append(
                        (t, index, "in", "client", None, rng.choice(SMALL_TALK[language]))
                    )
                    t += timedelta(minutes=rng.uniform(1, 20))
                    drafts.append((t, index, "out", "staff", admin, rng.choice(STAFF[language])))
                t += timedelta(minutes=rng.uniform(5, 60))
                change = {"status": ["human", "bot"], "reason": "given back to the bot"}
                audits.append((t, "staff", admin, index, "give_back", change))
        elif fate < 0.23:  # staff step in without being called
            admin = rng.choice(self.staff_ids)
            t = self._staff_time(t)
            change = {"status": ["bot", "human"], "reason": "taken"}
            audits.append((t - timedelta(seconds=20), "staff", admin, index, "take", change))
            drafts.append((t, index, "out", "staff", admin, rng.choice(STAFF[language])))
        return drafts, audits, wants

    def _staff_time(self, after: datetime) -> datetime:
        """When a person answers: minutes to hours in the day, the next morning at night."""
        local = after.astimezone(self.tz)
        if 9 <= local.hour < 20:
            return after + timedelta(minutes=1 + min(self.rng.expovariate(1 / 25), 300))
        day = local.date() if local.hour < 9 else local.date() + timedelta(days=1)
        return self.local(day, 9 * 60) + timedelta(minutes=self.rng.uniform(0, 90))

    def reminders(self, budget: int) -> None:
        """A reminder a day before each live appointment; some clients confirm, the bot thanks."""
        rng = self.rng
        used = 0
        for appointment in self.appointments:
            if appointment["status"] == "cancelled":
                continue
            at = appointment["start_at"] - timedelta(days=1)
            client = self.clients[appointment["client_id"] - 1]
            if at > self.now or at < self.now - YEAR or not client.conversations:
                continue
            index = client.conversations[0]
            local = appointment["start_at"].astimezone(self.tz)
            service = self.services[appointment["service_id"] - 1]
            name = service.get(f"name_{client.language}") or service["name_uk"]
            drafts: list[Draft] = [
                (
                    at,
                    index,
                    "out",
                    "system",
                    None,
                    REMINDER[client.language].format(time=f"{local:%H:%M}", service=name),
                )
            ]
            if rng.random() < 0.45:
                reply = at + timedelta(minutes=rng.uniform(5, 180))
                if reply <= self.now:
                    drafts.append((reply, index, "in", "client", None, CONFIRM[client.language]))
                    drafts.append(
                        (reply + timedelta(seconds=2), index, "out", "bot", None,
                         ACK[client.language])
                    )  # fmt: skip
            drafts = drafts[: budget - used]
            self.drafts.extend(drafts)
            used += len(drafts)
            if used >= budget:
                return

    # Appointments -------------------------------------------------------------------------

    def book(self, count: int) -> None:
        """`count` appointments: most booked days after a client's question, some walk-ins."""
        rng = self.rng
        asked = [i for i in self.inquiries if i[2]] or self.inquiries
        popularity = [s[7] for s in SERVICES]
        while len(self.appointments) < count:
            service = rng.choices(self.services, weights=popularity)[0]
            if self.inquiries and rng.random() < 0.85:
                at, client, _ = rng.choice(asked if rng.random() < 0.7 else self.inquiries)
                delay = rng.choices(
                    (
                        timedelta(minutes=rng.uniform(1, 60)),
                        timedelta(hours=rng.uniform(1, 72)),
                        timedelta(days=rng.uniform(3, 7)),
                        timedelta(days=rng.uniform(7, 20)),
                    ),
                    weights=(40, 35, 15, 10),
                )[0]
                created, source, by = at + delay, rng.choice(("bot", "bot", "webchat")), None
                if created > self.now:
                    continue
            else:
                # A call or a walk-in, from a client the salon already knows.
                client = rng.randrange(len(self.clients))
                known = max(self.clients[client].created_at, self.now - YEAR)
                created = known + (self.now - known) * rng.random()
                source, by = "staff", rng.choice(self.staff_ids)
            self._book_one(client, service, created, source, by)

    def _book_one(
        self, client: int, service: dict[str, Any], created: datetime, source: str, by: int | None
    ) -> None:
        rng = self.rng
        minutes, buffer = service["duration_min"], service["buffer_min"]
        offers = self.offers[service["id"]]
        created_day = created.astimezone(self.tz).date()
        lead = rng.choices(LEAD_DAYS, weights=LEAD_WEIGHTS)[0]
        cancelled = rng.random() < 0.08
        placed: tuple[int, int, date, int] | None = None
        for extra in range(21):
            day = created_day + timedelta(days=lead + extra)
            if day > self.last_day + timedelta(days=HORIZON_DAYS):
                break
            for master, price in rng.sample(offers, len(offers)):
                slot = self._day(master, day)
                if slot is None:
                    continue
                if cancelled:  # a cancelled one holds no time: anywhere in the day
                    start = slot.end - minutes - 15 * rng.randrange(0, 20)
                    if start >= self.hours[master][day.weekday()][0]:
                        placed = (master, price, day, start)
                        break
                    continue
                start = slot.take(minutes + buffer, rng.choice(GAPS_MIN))
                if start is not None:
                    placed = (master, price, day, start)
                    break
            if placed:
                break
        if placed is None:
            if cancelled:
                return
            # Fully booked for three weeks: the client gave up and cancelled.
            cancelled = True
            master, price = rng.choice(offers)
            day = created_day + timedelta(days=lead)
            placed = (master, price, day, 12 * 60)
        master, price, day, minute = placed
        start = self.local(day, minute)
        end = start + timedelta(minutes=minutes)
        if cancelled:
            status = "cancelled"
        elif start >= self.now:
            status = rng.choices(("booked", "confirmed"), weights=(60, 40))[0]
        else:
            status = rng.choices(("done", "no_show", "booked", "confirmed"), weights=(86, 8, 3, 3))[
                0
            ]
        settled = end + timedelta(minutes=rng.uniform(5, 600))
        updated = min(settled, self.now) if status in ("done", "no_show") else created
        self.appointments.append(
            {
                "id": len(self.appointments) + 1,
                "client_id": client + 1,
                "master_id": master,
                "service_id": service["id"],
                "start_at": start,
                "end_at": end,
                "block_end_at": end + timedelta(minutes=service["buffer_min"]),
                "status": status,
                "source": source,
                "price_minor": price,
                "notes": "",
                "created_by_staff_id": by,
                "created_at": created,
                "updated_at": updated,
            }
        )

    def _day(self, master: int, day: date) -> _Day | None:
        key = (master, day)
        if key not in self.days:
            hours = self.hours[master].get(day.weekday())
            if hours is None or day in self.vacation[master]:
                self.days[key] = None
            else:
                start, end, breaks = hours
                blocked = sorted([*breaks, *self.short_off.get(key, [])])
                self.days[key] = _Day(start + 15 * self.rng.randrange(0, 3), end, blocked)
        return self.days[key]

    # Rows ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Messages in time order with their ids; the cards and chats as they would stand."""
        rng = self.rng
        self.drafts.sort(key=lambda d: d[0])
        first: dict[int, datetime] = {}
        last: dict[int, datetime] = {}
        first_in: dict[int, datetime] = {}
        first_out: dict[int, datetime] = {}
        client_last_in: dict[int, datetime] = {}
        client_first: dict[int, datetime] = {}
        messages = self.rows["messages"]
        out_status = ("delivered", "read", "read", "sent")
        for number, (at, index, direction, author, staff_id, body) in enumerate(self.drafts, 1):
            conversation = self.conversations[index]
            client = conversation.client
            channel = conversation.channel
            first.setdefault(index, at)
            last[index] = at
            client_first.setdefault(client, at)
            inbound = direction == "in"
            if inbound:
                first_in.setdefault(index, at)
                client_last_in[client] = at
            elif author != "system":
                first_out.setdefault(index, at)
            messages.append(
                {
                    "id": number,
                    "public_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "conversation_id": index + 1,
                    "client_id": client + 1,
                    "channel": channel,
                    "inbox": INBOX,
                    "direction": direction,
                    "author": author,
                    "staff_id": staff_id,
                    "text": body,
                    "attachments": [],
                    "provider_message_id": f"{channel}-{direction}-{number}",
                    "outbound_key": None if inbound else f"bench-{number}",
                    "reply_to_id": None,
                    "status": "received" if inbound else rng.choice(out_status),
                    "error": None,
                    "attempts": 0 if inbound else 1,
                    "segments": rng.choice((1, 1, 2)) if channel == "sms" and not inbound else None,
                    "sent_at": at - timedelta(seconds=1) if inbound else at + timedelta(seconds=1),
                    "created_at": at,
                    "status_at": at if inbound else at + timedelta(seconds=rng.uniform(1, 60)),
                }
            )
        # The last change of hands says who has each chat now.
        holder: dict[int, tuple[str, int | None]] = {}
        self.audits.sort(key=lambda a: a[0])
        for at, actor, staff_id, index, action, change in self.audits:
            holder[index] = (change["status"][1], staff_id)
            self.rows["audit_log"].append(
                {
                    "at": at,
                    "actor": actor,
                    "staff_id": staff_id,
                    "entity": "conversation",
                    "entity_id": index + 1,
                    "action": action,
                    "changes": change,
                }
            )
        for appointment in self.appointments:
            self.rows["audit_log"].append(
                {
                    "at": appointment["created_at"],
                    "actor": "staff" if appointment["created_by_staff_id"] else "bot",
                    "staff_id": appointment["created_by_staff_id"],
                    "entity": "appointment",
                    "entity_id": appointment["id"],
                    "action": "create",
                    "changes": {"status": [None, "booked"]},
                }
            )
        self.rows["audit_log"].sort(key=lambda a: a["at"])
        for number, row in enumerate(self.rows["audit_log"], 1):
            row["id"] = number
        visits: dict[int, datetime] = {}
        for appointment in self.appointments:
            if appointment["status"] == "done":
                client = appointment["client_id"] - 1
                visits[client] = max(visits.get(client, appointment["start_at"]),
                                     appointment["start_at"])  # fmt: skip
        for client in self.clients:
            # A card is made by the first message, unless the client is older than the data
            # (or was imported and never wrote).
            seen = client_first.get(client.index)
            before = client.created_at < self.now - YEAR
            created = client.created_at if before or seen is None else seen
            source = None
            channel = (
                self.conversations[client.conversations[0]].channel
                if client.conversations
                else None
            )
            if channel in SOURCES and rng.random() < 0.3:
                source = rng.choice(SOURCES[channel])
            self.rows["clients"].append(
                {
                    "id": client.index + 1,
                    "name": client.name,
                    "phone": client.phone,
                    "email": client.email,
                    "language": client.language,
                    "source_channel": channel,
                    "first_contact_at": created if before or seen else None,
                    "last_contact_at": client_last_in.get(client.index),
                    "tags": rng.choice(([], [], ["regular"], ["vip"], ["new"])),
                    "notes": "",
                    "marketing_consent": rng.random() < 0.6,
                    "last_visit_at": visits.get(client.index),
                    "source_ref": source,
                    "created_at": created,
                }
            )
        for conversation in self.conversations:
            index = conversation.index
            status, assignee = holder.get(index, ("bot", None))
            opened = first.get(index, self.clients[conversation.client].created_at)
            self.rows["channel_identities"].append(
                {
                    "id": index + 1,
                    "client_id": conversation.client + 1,
                    "channel": conversation.channel,
                    "inbox": INBOX,
                    "external_id": conversation.external_id,
                    "created_at": opened,
                }
            )
            self.rows["conversations"].append(
                {
                    "id": index + 1,
                    "client_id": conversation.client + 1,
                    "channel": conversation.channel,
                    "inbox": INBOX,
                    "chat_id": conversation.external_id,
                    "status": status,
                    "assignee_id": assignee if status == "human" else None,
                    "opened_at": opened,
                    "last_message_at": last.get(index),
                    "first_inbound_at": first_in.get(index),
                    "first_response_at": first_out.get(index),
                }
            )
        self.rows["appointments"] = self.appointments


def build(spec: Spec) -> dict[str, list[dict[str, Any]]]:
    """Every row of the salon, keyed by table name, in an order that satisfies the keys."""
    salon = _Salon(spec)
    salon.catalog()
    salon.people()
    # Reminders are drafted after the appointments, which follow the questions: keep room.
    reserve = min(int(spec.appointments * 1.9), int(spec.messages * 0.3))
    salon.exchanges(spec.messages - reserve)
    salon.book(spec.appointments)
    salon.reminders(reserve)
    salon.exchanges(spec.messages)
    salon.finish()
    order = (
        "business", "staff", "services", "master_services", "working_hours", "time_off",
        "clients", "channel_identities", "conversations", "messages", "appointments",
        "audit_log",
    )  # fmt: skip
    return {name: salon.rows[name] for name in order}


TABLE_MODELS: dict[str, type[SQLModel]] = {
    model.__tablename__: model  # type: ignore[misc]
    for model in (
        Business, Staff, Service, MasterService, WorkingHours, TimeOff, Client,
        ChannelIdentity, Conversation, Message, Appointment, AuditEntry,
    )
}  # fmt: skip


async def generate(sessions: async_sessionmaker[AsyncSession], spec: Spec) -> Loaded:
    """Build the salon and load it into the (empty, migrated) database behind `sessions`."""
    began = time.perf_counter()
    rows = {name: _complete(name, batch) for name, batch in build(spec).items()}
    built = time.perf_counter()
    async with sessions() as session:
        conn = await session.connection()
        postgres = conn.dialect.name == "postgresql"
        if postgres and await _superuser(conn):
            # The rows are consistent by construction: skipping the foreign-key triggers
            # halves the loading (the unique and exclusion constraints still hold).
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for name, batch in rows.items():
            sa_table: Table = TABLE_MODELS[name].__table__  # type: ignore[attr-defined]
            if postgres:
                await _copy(conn, sa_table, batch)
            else:
                for start in range(0, len(batch), 20_000):
                    await conn.execute(insert(sa_table), batch[start : start + 20_000])
        if postgres:
            # The rows came with ids of our own: the sequences go on after them.
            for name in rows:
                if "id" not in TABLE_MODELS[name].__table__.c:  # type: ignore[attr-defined]
                    continue
                await conn.execute(
                    text(
                        f"SELECT setval(seq, (SELECT coalesce(max(id), 0) + 1 FROM {name}), false) "
                        f"FROM pg_get_serial_sequence('{name}', 'id') AS seq "
                        "WHERE seq IS NOT NULL"
                    )
                )
        await session.commit()
    loaded = time.perf_counter()
    server = ""
    async with sessions() as session:
        conn = await session.connection()
        if postgres:
            await conn.execute(text("ANALYZE"))
            # What the figures depend on beyond the data: JIT compiles big plans, work_mem
            # decides whether sorts spill to disk.
            settings = []
            for name in ("server_version", "jit", "work_mem", "shared_buffers"):
                value = (await conn.execute(text(f"SHOW {name}"))).scalar()
                settings.append(f"{name} {value}")
            server = "PostgreSQL: " + ", ".join(settings)
            await session.commit()
        else:
            version = (await conn.execute(text("SELECT sqlite_version()"))).scalar()
            server = f"SQLite {version}"
    analyzed = time.perf_counter()
    return Loaded(
        counts={name: len(batch) for name, batch in rows.items()},
        build_s=built - began,
        load_s=loaded - built,
        analyze_s=analyzed - loaded,
        server=server,
    )


async def _superuser(conn: AsyncConnection) -> bool:
    query = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    return bool((await conn.execute(query)).scalar())


def _complete(name: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every column (COPY leaves an unnamed column NULL): the columns the builder
    leaves out take the model's defaults, from one model object (one per row would take
    longer than the loading)."""
    if not batch:
        return batch
    model = TABLE_MODELS[name]
    columns = list(model.__table__.c.keys())  # type: ignore[attr-defined]
    missing = [column for column in columns if column not in batch[0]]
    if not missing:
        return batch
    sample = model(**batch[0])
    defaults = {column: getattr(sample, column) for column in missing}
    return [{**defaults, **row} for row in batch]


async def _copy(conn: AsyncConnection, sa_table: Table, batch: list[dict[str, Any]]) -> None:
    """COPY the rows in through asyncpg, inside the session's transaction."""
    if not batch:
        return
    columns = list(batch[0])
    documents = {c.name for c in sa_table.columns if isinstance(c.type, JSON)}
    records = [
        tuple(json.dumps(row[c]) if c in documents else row[c] for c in columns) for row in batch
    ]
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        sa_table.name, records=records, columns=columns
    )


# Measuring --------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    query: Query
    samples_ms: list[float] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    tables_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)


def scenarios(spec: Spec) -> list[Scenario]:
    """The page as it opens (the last 30 days), a whole year, and 30 days of one channel: the
    queries the API makes of these parameters."""
    today = spec.now.astimezone(spec.tz).date()

    def query(**params: str) -> Query:
        return read_query(params, tz=spec.tz, now=spec.now, language="uk")

    return [
        Scenario("30 days", query()),
        Scenario("365 days", query(**{"from": (today - timedelta(days=364)).isoformat()})),
        Scenario("30 days, telegram", query(channel="telegram")),
    ]


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await call()
    return (time.perf_counter() - began) * 1000, result


async def measure(
    sessions: async_sessionmaker[AsyncSession], spec: Spec, runs: int
) -> list[Scenario]:
    """Time dashboard() per scenario (a session per call, as a request has), and each table
    alone over the year."""
    measured = scenarios(spec)
    for scenario in measured:

        async def page(q: Query = scenario.query) -> dict[str, Any]:
            async with sessions() as session:
                return await dashboard(session, q)

        result = await page()  # warms the pool, the caches and the plans
        for _ in range(runs):
            elapsed, result = await _timed(page)
            scenario.samples_ms.append(elapsed)
        scenario.rows = {name: len(result[name].rows) for name in result}
    year = measured[1]
    for _ in range(runs):
        for name in TABLES:

            async def one(name: str = name, q: Query = year.query) -> Any:
                async with sessions() as session:
                    return await table(session, name, q)

            elapsed, _ = await _timed(one)
            year.tables_ms.setdefault(name, []).append(elapsed)
    return measured


async def run(url: str, spec: Spec, runs: int) -> tuple[Loaded, list[Scenario]]:
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        loaded = await generate(sessions, spec)
        return loaded, await measure(sessions, spec, runs)
    finally:
        await engine.dispose()


def report(backend: str, loaded: Loaded, measured: list[Scenario], runs: int) -> list[str]:
    counts = loaded.counts
    lines = [
        f"{backend}: {counts['messages']:,} messages, {counts['appointments']:,} appointments, "
        f"{counts['clients']:,} clients, {counts['conversations']:,} conversations, "
        f"{counts['audit_log']:,} audit entries, {counts['staff']} staff, "
        f"{counts['services']} services",
        f"  generated in {loaded.total_s:.1f} s (build {loaded.build_s:.1f} s, "
        f"load {loaded.load_s:.1f} s, analyze {loaded.analyze_s:.1f} s)",
        f"  {loaded.server}",
        f"  dashboard(), {runs} runs after a warm-up:",
    ]
    for scenario in measured:
        lines.append(
            f"    {scenario.name:<18} median {scenario.median_ms:8.1f} ms   "
            f"min {min(scenario.samples_ms):8.1f}   max {max(scenario.samples_ms):8.1f}"
        )
        lines.append("      rows: " + ", ".join(f"{name} {n}" for name, n in scenario.rows.items()))
    year = measured[1]
    if year.tables_ms:
        medians = {name: statistics.median(s) for name, s in year.tables_ms.items()}
        slowest = max(medians, key=lambda name: medians[name])
        lines.append(f"  per table, {year.name} (median of {runs}, each table alone):")
        for name, median in medians.items():
            mark = "   <- slowest" if name == slowest else ""
            lines.append(f"    {name:<18} {median:8.1f} ms{mark}")
        lines.append(f"    {'sum':<18} {sum(medians.values()):8.1f} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=Spec.messages)
    parser.add_argument("--appointments", type=int, default=Spec.appointments)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=Spec.seed)
    parser.add_argument("--postgres", help="an admin URL: a fresh database is made and dropped")
    parser.add_argument(
        "--sqlite", action="store_true", help="SQLite too (alone without --postgres)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    spec = Spec(messages=args.messages, appointments=args.appointments, seed=args.seed)
    admins: list[str | None] = []
    if args.postgres:
        admins.append(args.postgres)
    if args.sqlite or not args.postgres:
        admins.append(None)
    medians: dict[str, list[float]] = {}

    async def go(admin: str | None) -> None:
        async with fresh_database(admin) as url:
            print(f"{label(url)}: generating, then measuring …", flush=True)
            loaded, measured = await run(url, spec, args.runs)
            for line in report(label(url), loaded, measured, args.runs):
                print(line, flush=True)
            medians[label(url)] = [s.median_ms for s in measured]

    for admin in admins:
        asyncio.run(go(admin))
    if len(medians) == 2:
        names = [s.name for s in scenarios(spec)]
        for name, pg, lite in zip(names, medians["postgresql"], medians["sqlite"], strict=True):
            print(f"  postgresql/sqlite median ratio, {name}: {pg / lite:.2f}")


if __name__ == "__main__":
    main()
