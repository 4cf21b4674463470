"""Broadcasts: segments checked against an independent count on a generated client base
(consent always required, merged cards never in), drafts and their checks, launching (twice
is once), scheduling, finishing, cancelling, progress; the renderer; the API with its roles
and refusals (a refused request stores nothing); the `hub broadcast` command."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import pytest
from pydantic import ValidationError
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import broadcasts as store
from crm_store.business import Rules, get_business
from crm_store.db import transaction
from crm_store.models import (
    Appointment,
    AuditEntry,
    Broadcast,
    ChannelIdentity,
    Client,
    ScheduledMessage,
)
from crm_store.segments import Segment, count, segment_client_ids
from crm_store.staff import add_staff
from crm_store.timeutil import aware
from hub.cli.main import main
from hub.jobs.broadcasts import personal_text, render_broadcast, templates
from hub.jobs.notices import RENDERERS, RenderContext, Skip
from tests.salon import KYIV, Salon, build_salon, kyiv
from tests.support import RunningHub, client_session, login, on_db

T = TypeVar("T")
NOW = kyiv("2026-07-01 12:00")
CHANNELS = ("telegram", "instagram", "viber", "sms", "email", "webchat")
# Spellings differ on purpose: a tag is one tag whatever its case.
TAG_POOL = ("vip", "VIP", "colour", "Nails", "брови", "Брови", "new client")
FILTER_DAYS = (date(2026, 2, 1), date(2026, 3, 10), date(2026, 5, 1))
PASSWORD = "s3cret-pass"
API_NOW = datetime.now(UTC).replace(microsecond=0)
IN_TWO_DAYS = (API_NOW + timedelta(days=2)).astimezone(KYIV).replace(hour=10, minute=0).isoformat()


# A generated client base, and the right answers computed here -------------------------------


@dataclass
class Card:
    """What the test knows about a generated client, to compute segments on its own."""

    id: int
    consent: bool
    merged: bool = False
    tags: list[str] = field(default_factory=list)
    last_visit: datetime | None = None
    reachable: set[str] = field(default_factory=set)
    email: bool = False
    phone: bool = False
    done_services: set[int] = field(default_factory=set)


def expected(cards: list[Card], segment: Segment) -> list[int]:
    """The segment by its definition, in plain Python over local days."""
    wanted_tags = {t.lower() for t in segment.tags}
    found = []
    for card in cards:
        if not card.consent or card.merged:
            continue
        if wanted_tags and not wanted_tags & {t.lower() for t in card.tags}:
            continue
        visit_day = card.last_visit.astimezone(KYIV).date() if card.last_visit else None
        if segment.visited_before and (visit_day is None or visit_day >= segment.visited_before):
            continue
        if segment.visited_after and (visit_day is None or visit_day <= segment.visited_after):
            continue
        if segment.service_id and segment.service_id not in card.done_services:
            continue
        if segment.channel:
            on_card = (segment.channel == "email" and card.email) or (
                segment.channel == "sms" and card.phone
            )
            if segment.channel not in card.reachable and not on_card:
                continue
        found.append(card.id)
    return sorted(found)


def visit_times(rng: random.Random) -> list[datetime | None]:
    """Random visits, plus the edges of the days the filters use (local midnight ± a bit)."""
    times: list[datetime | None] = [None] * 12
    for day in FILTER_DAYS:
        midnight = datetime.combine(day, datetime.min.time(), tzinfo=KYIV)
        times += [midnight, midnight - timedelta(seconds=1), midnight + timedelta(days=1)]
        times.append(midnight + timedelta(days=1) - timedelta(seconds=1))
    start = kyiv("2026-01-01 08:00")
    times += [start + timedelta(minutes=rng.randrange(0, 180 * 24 * 60)) for _ in range(40)]
    # Stored in UTC, as the hub stores every time (SQLite keeps no offset).
    return [t.astimezone(UTC) if t else None for t in times]


async def generate(sessions: async_sessionmaker[AsyncSession], salon: Salon) -> list[Card]:
    rng = random.Random(8)
    services = (salon.manicure, salon.haircut, salon.brows)
    visits = visit_times(rng)
    cards = [Card(id=salon.client, consent=False)]  # the salon's own client: no consent
    slot = 0
    async with transaction(sessions) as session:
        for n in range(90):
            tags = rng.sample(TAG_POOL, rng.choice((0, 0, 1, 1, 2, 3)))
            client = Client(
                name=rng.choice((None, f"Client{n} Surname", f"Клієнт{n}")),
                tags=tags,
                marketing_consent=rng.random() < 0.7,
                last_visit_at=rng.choice(visits),
                email=f"c{n}@example.com" if rng.random() < 0.4 else None,
                phone=f"+38067{n:07d}" if rng.random() < 0.5 else None,
            )
            session.add(client)
            await session.flush()
            assert client.id is not None
            card = Card(
                id=client.id,
                consent=client.marketing_consent,
                tags=tags,
                last_visit=client.last_visit_at,
                email=client.email is not None,
                phone=client.phone is not None,
            )
            for channel in CHANNELS:
                if rng.random() < 0.3:
                    blocked = rng.random() < 0.25
                    session.add(
                        ChannelIdentity(
                            client_id=client.id,
                            channel=channel,
                            inbox="main",
                            external_id=f"{channel}-{n}",
                            unreachable_at=NOW if blocked else None,
                        )
                    )
                    if not blocked:
                        card.reachable.add(channel)
            for _ in range(rng.choice((0, 1, 1, 2, 3))):
                service = rng.choice(services)
                status = rng.choice(("done", "done", "cancelled", "booked", "no_show"))
                # One hour apart, so no two overlap whoever the master.
                start = kyiv("2026-01-05 10:00") + timedelta(hours=slot)
                slot += 1
                session.add(
                    Appointment(
                        client_id=client.id,
                        master_id=rng.choice((salon.olena, salon.iryna)),
                        service_id=service,
                        start_at=start.astimezone(UTC),
                        end_at=(start + timedelta(minutes=30)).astimezone(UTC),
                        block_end_at=(start + timedelta(minutes=30)).astimezone(UTC),
                        status=status,
                    )
                )
                if status == "done":
                    card.done_services.add(service)
            cards.append(card)
        await session.flush()
        # Some cards were merged into others: never in a segment, whatever they match.
        for card in rng.sample(cards[2:], 10):
            merged = await session.get(Client, card.id)
            assert merged is not None
            merged.merged_into_id = cards[1].id
            card.merged = True
    return cards


def segments_to_check(salon: Salon) -> list[Segment]:
    rng = random.Random(3)
    fixed = [
        Segment(),
        Segment(tags=["vip"]),
        Segment(tags=["БРОВИ"]),
        Segment(tags=["nails", "colour"]),
        Segment(tags=["new client"]),
        Segment(tags=["nobody has this"]),
        Segment(service_id=salon.manicure),
        Segment(service_id=salon.brows),
        *(Segment(channel=c) for c in CHANNELS),
        *(Segment(visited_before=d) for d in FILTER_DAYS),
        *(Segment(visited_after=d) for d in FILTER_DAYS),
        Segment(visited_after=date(2026, 2, 1), visited_before=date(2026, 5, 1)),
        Segment(tags=["vip", "Nails"], channel="sms", visited_after=date(2026, 2, 1)),
    ]
    randomised = []
    for _ in range(40):
        after, before = sorted(rng.sample(FILTER_DAYS, 2))
        randomised.append(
            Segment(
                tags=rng.sample(TAG_POOL, rng.choice((0, 1, 2))),
                visited_after=after if rng.random() < 0.3 else None,
                visited_before=before if rng.random() < 0.3 else None,
                service_id=rng.choice((None, None, salon.manicure, salon.haircut, salon.brows)),
                channel=rng.choice((None, None, *CHANNELS)),
            )
        )
    return fixed + randomised


async def test_segments_match_an_independent_count(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    salon = await build_salon(sessions)
    cards = await generate(sessions, salon)
    checked = 0
    async with sessions() as session:
        for segment in segments_to_check(salon):
            want = expected(cards, segment)
            assert await segment_client_ids(session, segment, now=NOW, tz=KYIV) == want, segment
            assert await count(session, segment, now=NOW, tz=KYIV) == len(want), segment
            checked += bool(want)
        # The time zone is the salon's own when not given (Kyiv is the default).
        edge = Segment(visited_before=date(2026, 3, 10))
        assert await segment_client_ids(session, edge, now=NOW) == expected(cards, edge)
    assert checked > 30  # most segments found someone: the comparison means something


async def test_consent_is_always_required_and_merged_cards_never_count(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        target = Client(name="Target", tags=["vip"], marketing_consent=True)
        refused = Client(name="No consent", tags=["vip"], marketing_consent=False)
        session.add_all([target, refused])
        await session.flush()
        merged = Client(
            name="Merged", tags=["vip"], marketing_consent=True, merged_into_id=target.id
        )
        session.add(merged)
    async with sessions() as session:
        for segment in (Segment(), Segment(tags=["vip"])):
            assert await segment_client_ids(session, segment, now=NOW) == [target.id]
    # There is no way to ask for clients without consent.
    for wrong in ({"marketing_consent": False}, {"consent": "any"}):
        with pytest.raises(ValidationError):
            Segment.model_validate(wrong)


def test_segment_checks_its_filters() -> None:
    assert Segment(tags=["  vip ", "VIP", "a  b"]).tags == ["vip", "a b"]
    for wrong in (
        {"tags": [""]},
        {"tags": ["x" * 101]},
        {"channel": "fax"},
        {"service_id": 0},
        {"visited_after": "2026-03-10", "visited_before": "2026-03-10"},
        {"visited_after": "2026-03-10", "visited_before": "2026-03-11"},
        {"visited_before": "10.03.2026"},
    ):
        with pytest.raises(ValidationError):
            Segment.model_validate(wrong)
    # A day between them is the narrowest window that can hold a visit.
    Segment(visited_after=date(2026, 3, 10), visited_before=date(2026, 3, 12))


# Drafts, launch, finish, cancel ------------------------------------------------------------


async def consenting(sessions: async_sessionmaker[AsyncSession], n: int, **extra: Any) -> list[int]:
    async with transaction(sessions) as session:
        clients = [
            Client(name=f"Client{i} Surname", marketing_consent=True, **extra) for i in range(n)
        ]
        session.add_all(clients)
        await session.flush()
        return [c.id for c in clients]  # type: ignore[misc]


async def draft(sessions: async_sessionmaker[AsyncSession], **values: Any) -> Broadcast:
    async with transaction(sessions) as session:
        return await store.create_draft(
            session,
            title=values.pop("title", "Spring offer"),
            text=values.pop("text", "{name}, 15% off this week!"),
            segment=values.pop("segment", Segment()),
            now=values.pop("now", NOW),
            **values,
        )


async def launch(sessions: async_sessionmaker[AsyncSession], broadcast_id: int, **kw: Any):
    async with transaction(sessions) as session:
        return await store.launch(session, broadcast_id, now=kw.pop("now", NOW), **kw)


async def rows_of(sessions: async_sessionmaker[AsyncSession], broadcast_id: int) -> list[Any]:
    async with sessions() as session:
        query = (
            select(ScheduledMessage)
            .where(ScheduledMessage.broadcast_id == broadcast_id)
            .order_by(col(ScheduledMessage.id))
        )
        return list((await session.exec(query)).all())


async def audit_of(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[int, str, dict]]:
    async with sessions() as session:
        query = (
            select(AuditEntry).where(AuditEntry.entity == "broadcast").order_by(col(AuditEntry.id))
        )
        return [(e.entity_id, e.action, e.changes) for e in (await session.exec(query)).all()]


async def set_rows(
    sessions: async_sessionmaker[AsyncSession],
    broadcast_id: int,
    statuses: list[str],
    channels: list[str | None] | None = None,
) -> None:
    """What the scheduler would have done: statuses (and channels) set row by row."""
    rows = await rows_of(sessions, broadcast_id)
    async with transaction(sessions) as session:
        for n, (row, status) in enumerate(zip(rows, statuses, strict=False)):
            values: dict[str, Any] = {"status": status, "claimed_by": None}
            if channels is not None:
                values["channel"] = channels[n]
            if status == "sent":
                values["sent_at"] = NOW.astimezone(UTC)
            if status == "failed":
                values["last_error"] = "telegram: bot was blocked"
            await session.exec(  # type: ignore[call-overload]
                update(ScheduledMessage).where(col(ScheduledMessage.id) == row.id).values(**values)
            )


async def test_launch_plans_one_row_per_client_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ids = await consenting(sessions, 5)
    ids += await consenting(sessions, 2, tags=["other"])
    target = await draft(sessions, segment=Segment(tags=[]))
    assert target.status == "draft" and target.total == 0
    assert await rows_of(sessions, target.id) == []  # a draft plans nothing

    first = await launch(sessions, target.id)
    assert (first.status, first.total) == ("sending", 7)
    assert aware(first.started_at) == NOW
    rows = await rows_of(sessions, target.id)
    assert sorted(r.client_id for r in rows) == sorted(ids)
    assert {r.key for r in rows} == {f"broadcast:{target.id}:{r.client_id}" for r in rows}
    assert {(r.kind, r.status, r.urgent, aware(r.due_at)) for r in rows} == {
        ("broadcast", "pending", False, NOW)
    }

    # Launching again, even later and after new clients came, plans nothing more.
    await consenting(sessions, 3)
    again = await launch(sessions, target.id, now=NOW + timedelta(hours=1))
    assert (again.status, again.total) == ("sending", 7)
    assert len(await rows_of(sessions, target.id)) == 7
    actions = [(a, c.get("total")) for _, a, c in await audit_of(sessions)]
    assert actions == [("create", None), ("launch", 7)]


async def test_a_scheduled_broadcast_starts_at_its_time_and_finishes_when_all_went(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await consenting(sessions, 4)
    at = kyiv("2026-07-02 10:00")
    target = await draft(sessions, scheduled_at=at)
    launched = await launch(sessions, target.id)
    assert (launched.status, launched.started_at) == ("scheduled", None)
    assert {aware(r.due_at) for r in await rows_of(sessions, target.id)} == {at}

    async def finish(now: datetime) -> tuple[int, Broadcast]:
        async with transaction(sessions) as session:
            done = await store.finish_done(session, now=now)
        async with sessions() as session:
            return done, await store.get_broadcast(session, target.id)

    done, state = await finish(at - timedelta(minutes=1))
    assert (done, state.status) == (0, "scheduled")
    done, state = await finish(at + timedelta(minutes=1))
    assert (done, state.status, aware(state.started_at)) == (0, "sending", at)
    await set_rows(sessions, target.id, ["sent", "sent", "failed", "sending"])
    done, state = await finish(at + timedelta(minutes=2))
    assert (done, state.status) == (0, "sending")  # one row is still being sent
    await set_rows(sessions, target.id, ["sent", "sent", "failed", "skipped"])
    done, state = await finish(at + timedelta(minutes=3))
    assert (done, state.status, aware(state.finished_at)) == (
        1,
        "done",
        at + timedelta(minutes=3),
    )
    # Done is done: not again, and it can't be cancelled.
    assert (await finish(at + timedelta(minutes=4)))[0] == 0
    with pytest.raises(store.BroadcastConflict):
        async with transaction(sessions) as session:
            await store.cancel(session, target.id, now=at + timedelta(minutes=5))


async def test_cancel_drops_what_has_not_gone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await consenting(sessions, 5)
    target = await draft(sessions)
    await launch(sessions, target.id)
    await set_rows(sessions, target.id, ["sent", "sent", "sending"])
    later = NOW + timedelta(minutes=5)
    for _ in range(2):  # cancelling twice is cancelling once
        async with transaction(sessions) as session:
            cancelled = await store.cancel(session, target.id, now=later, staff_id=None)
    assert (cancelled.status, aware(cancelled.finished_at)) == ("cancelled", later)
    assert [r.status for r in await rows_of(sessions, target.id)] == [
        "sent",
        "sent",
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    async with sessions() as session:
        progress = await store.progress(session, target.id)
    assert progress.counts == {
        "pending": 0,
        "sending": 0,
        "sent": 2,
        "failed": 0,
        "skipped": 0,
        "cancelled": 3,
    }
    assert [(a, c) for _, a, c in await audit_of(sessions)][-1] == (
        "cancel",
        {"status": ["sending", "cancelled"], "dropped": 3},
    )
    # A cancelled broadcast is not launched again, and a cancelled draft sends nothing.
    with pytest.raises(store.BroadcastConflict):
        await launch(sessions, target.id)
    other = await draft(sessions)
    async with transaction(sessions) as session:
        await store.cancel(session, other.id, now=NOW)
    assert await rows_of(sessions, other.id) == []


async def test_progress_counts_by_status_and_channel(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await consenting(sessions, 6)
    target = await draft(sessions)
    await launch(sessions, target.id)
    await set_rows(
        sessions,
        target.id,
        ["sent", "sent", "failed", "skipped", "sending", "pending"],
        ["telegram", "viber", "telegram", None, "sms", None],
    )
    async with sessions() as session:
        progress = await store.progress(session, target.id)
        failed = await store.recipients(session, target.id, statuses=["failed"])
        waiting = await store.recipients(session, target.id, statuses=["pending", "sending"])
        page = await store.recipients(session, target.id, limit=2, offset=1)
        with pytest.raises(store.BroadcastError):
            await store.recipients(session, target.id, statuses=["lost"])
        with pytest.raises(store.BroadcastNotFound):
            await store.progress(session, target.id + 1)
    assert progress.counts == {
        "pending": 1,
        "sending": 1,
        "sent": 2,
        "failed": 1,
        "skipped": 1,
        "cancelled": 0,
    }
    assert progress.open == 2
    assert progress.channels == {
        "telegram": {"sent": 1, "failed": 1},
        "viber": {"sent": 1},
        "sms": {"sending": 1},
        "": {"skipped": 1, "pending": 1},
    }
    assert [(r.channel, r.last_error) for r in failed] == [
        ("telegram", "telegram: bot was blocked")
    ]
    assert sorted(r.status for r in waiting) == ["pending", "sending"]
    assert [r.status for r in page] == ["sent", "failed"]
    assert page[0].name == "Client1 Surname"


async def test_drafts_are_checked_and_a_refusal_changes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    salon = await build_salon(sessions)
    bad: list[dict[str, Any]] = [
        {"text": ""},
        {"text": "   \n "},
        {"text": "x" * 2001},
        {"text": "{name}, take {discount} off"},
        {"text": "a lone { brace"},
        {"text": "{name!r}"},
        {"title": "  "},
        {"title": "t" * 201},
        {"segment": {"channel": "fax"}},
        {"segment": {"service_id": salon.brows + 100}},
        {"scheduled_at": NOW - timedelta(minutes=1)},
        {"scheduled_at": NOW + timedelta(days=400)},
        {"scheduled_at": datetime(2026, 8, 1, 10, 0)},
    ]
    for values in bad:
        with pytest.raises(store.BroadcastError) as refused:
            await draft(sessions, **values)
        assert refused.value.field is not None, values
    ok = await draft(sessions, text="x" * 2000 + "  ", title="  Two   words ")
    assert (len(ok.text), ok.title) == (2000, "Two words")
    # Braces written double are braces.
    assert store.check_text("{{not a placeholder}} {name}") == "{{not a placeholder}} {name}"

    # Only a draft changes; the launch refuses an empty segment and leaves the draft as it was.
    async with transaction(sessions) as session:
        changed = await store.update_draft(
            session, ok.id, {"segment": {"tags": ["vip"]}, "title": "VIP"}, now=NOW, staff_id=None
        )
    assert (changed.segment["tags"], changed.title) == (["vip"], "VIP")
    with pytest.raises(store.BroadcastError, match="nobody to send to"):
        await launch(sessions, ok.id)
    async with sessions() as session:
        assert (await store.get_broadcast(session, ok.id)).status == "draft"
    assert await rows_of(sessions, ok.id) == []
    await consenting(sessions, 1, tags=["VIP"])
    await launch(sessions, ok.id)
    with pytest.raises(store.BroadcastConflict):
        async with transaction(sessions) as session:
            await store.update_draft(session, ok.id, {"title": "late"}, now=NOW)
    async with sessions() as session:
        assert (await session.exec(select(func.count()).select_from(Broadcast))).one() == 1
    assert [a for _, a, _ in await audit_of(sessions)] == ["create", "update", "launch"]


# The renderer --------------------------------------------------------------------------------


async def test_the_renderer_fills_the_name_and_skips_what_must_not_go(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert RENDERERS["broadcast"] is render_broadcast
    (named,) = await consenting(sessions, 1)
    async with transaction(sessions) as session:
        nameless = Client(name=None, marketing_consent=True)
        session.add(nameless)
    target = await draft(sessions, text="Привіт, {name}! Знижка {{15%}}.")
    await launch(sessions, target.id)

    async def render(client_id: int) -> str:
        async with sessions() as session:
            row = (
                await session.exec(
                    select(ScheduledMessage).where(ScheduledMessage.client_id == client_id)
                )
            ).one()
            client = await session.get(Client, client_id)
            business = await get_business(session)
            assert client is not None
            notice = await render_broadcast(
                RenderContext(session, row, client, Rules.of(business), business, NOW, "uk")
            )
            return notice.text

    assert await render(named) == "Привіт, Client0! Знижка {15%}."
    assert await render(nameless.id) == "Привіт! Знижка {15%}."  # type: ignore[arg-type]
    assert personal_text("{name}, hello", "") == "Hello"
    async with transaction(sessions) as session:
        client = await session.get(Client, named)
        assert client is not None
        client.marketing_consent = False
    with pytest.raises(Skip, match="consent"):
        await render(named)
    async with transaction(sessions) as session:
        await store.cancel(session, target.id, now=NOW)
    with pytest.raises(Skip, match="cancelled"):
        await render(nameless.id)  # type: ignore[arg-type]


def test_templates_exist_in_every_language() -> None:
    by_language: dict[str, set[str]] = {}
    for template in templates():
        by_language.setdefault(template["language"], set()).add(template["id"])
        store.check_text(template["text"])  # each one could be sent as it is
        assert "{name}" in template["text"]
    assert set(by_language) == {"uk", "en", "ru"}
    assert by_language["uk"] == by_language["en"] == by_language["ru"]
    assert {"promotion", "new_master", "holiday_hours"} <= by_language["uk"]


# The API --------------------------------------------------------------------------------------


@dataclass
class Api:
    running: RunningHub
    owner: aiohttp.ClientSession
    admin: aiohttp.ClientSession
    master: aiohttp.ClientSession
    salon: Salon

    @property
    def url(self) -> str:
        return f"{self.running.base_url}/api"

    async def close(self) -> None:
        for http in (self.owner, self.admin, self.master):
            await http.close()


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json()


async def api_setup(hub: RunningHub) -> Api:
    # The hub's clock stands still at the real time: whatever runs in the hub (the scheduler)
    # sees the same "now" as the API, and a broadcast scheduled two days ahead waits.
    hub.hub.clock = lambda: API_NOW
    salon = await build_salon(hub.hub.sessions)
    sessions = []
    async with transaction(hub.hub.sessions) as session:
        for email, role in (
            ("owner@salon.test", "owner"),
            ("admin@salon.test", "admin"),
            ("master@salon.test", "master"),
        ):
            await add_staff(session, email=email, password=PASSWORD, role=role, name=role)
        session.add_all(
            [
                Client(name="Anna Shevchenko", tags=["vip"], marketing_consent=True),
                Client(name="Bohdan", tags=["VIP", "colour"], marketing_consent=True),
                Client(name="Kateryna", tags=["colour"], marketing_consent=True),
                Client(name="Refused", tags=["vip"], marketing_consent=False),
            ]
        )
    for email in ("owner@salon.test", "admin@salon.test", "master@salon.test"):
        http = client_session()
        assert await login(http, hub.base_url, email, PASSWORD) == 200
        sessions.append(http)
    return Api(hub, *sessions, salon=salon)


async def stored(running: RunningHub) -> tuple[int, int, int]:
    """Broadcasts, scheduled rows, broadcast audit entries."""
    async with running.hub.sessions() as session:
        return (
            (await session.exec(select(func.count()).select_from(Broadcast))).one(),
            (await session.exec(select(func.count()).select_from(ScheduledMessage))).one(),
            (
                await session.exec(
                    select(func.count())
                    .select_from(AuditEntry)
                    .where(AuditEntry.entity == "broadcast")
                )
            ).one(),
        )


async def test_api_preview_create_send_progress_and_cancel(hub: RunningHub) -> None:
    api = await api_setup(hub)
    try:
        status, body = await call(
            api.owner, "POST", f"{api.url}/broadcasts/preview", json={"segment": {"tags": ["vip"]}}
        )
        assert (status, body) == (200, {"count": 2, "sample": ["Anna Shevchenko", "Bohdan"]})
        status, body = await call(api.owner, "POST", f"{api.url}/broadcasts/preview", json={})
        assert (status, body["count"]) == (200, 3)  # everyone with consent

        status, created = await call(
            api.admin,
            "POST",
            f"{api.url}/broadcasts",
            json={"title": "VIP evening", "text": "{name}, join us!", "segment": {"tags": ["vip"]}},
        )
        assert status == 201, created
        assert (created["status"], created["total"], created["pending"]) == ("draft", 0, 0)
        bid = created["id"]
        status, changed = await call(
            api.owner,
            "PATCH",
            f"{api.url}/broadcasts/{bid}",
            json={"text": "{name}, join us on Friday!", "scheduled_at": None},
        )
        assert (status, changed["text"]) == (200, "{name}, join us on Friday!")

        status, sent = await call(api.owner, "POST", f"{api.url}/broadcasts/{bid}/send")
        assert status == 200, sent
        assert (sent["status"], sent["total"], sent["pending"]) == ("sending", 2, 2)
        assert sent["started_at"] == API_NOW.astimezone(KYIV).isoformat()  # salon's clock
        assert (await stored(hub))[1] == 2
        # Again: the same broadcast, nothing new planned.
        status, again = await call(api.owner, "POST", f"{api.url}/broadcasts/{bid}/send")
        assert (status, again["total"]) == (200, 2)
        assert (await stored(hub))[1] == 2

        await set_rows(hub.hub.sessions, bid, ["sent", "failed"], ["telegram", "telegram"])
        status, detail = await call(api.owner, "GET", f"{api.url}/broadcasts/{bid}")
        assert status == 200
        assert detail["counts"]["sent"] == 1 and detail["counts"]["failed"] == 1
        assert (detail["pending"], detail["channels"]) == (
            0,
            {"telegram": {"sent": 1, "failed": 1}},
        )
        status, listed = await call(api.owner, "GET", f"{api.url}/broadcasts/{bid}/recipients")
        assert status == 200 and listed["more"] is False
        assert [(r["name"], r["status"], r["channel"]) for r in listed["recipients"]] == [
            ("Anna Shevchenko", "sent", "telegram"),
            ("Bohdan", "failed", "telegram"),
        ]
        assert listed["recipients"][1]["last_error"] == "telegram: bot was blocked"
        assert listed["recipients"][0]["sent_at"] == NOW.isoformat()
        status, failed = await call(
            api.owner, "GET", f"{api.url}/broadcasts/{bid}/recipients?status=failed&limit=1"
        )
        assert [r["name"] for r in failed["recipients"]] == ["Bohdan"]
        status, page = await call(
            api.owner, "GET", f"{api.url}/broadcasts/{bid}/recipients?limit=1"
        )
        assert (len(page["recipients"]), page["more"]) == (1, True)

        status, listing = await call(api.owner, "GET", f"{api.url}/broadcasts")
        assert status == 200
        (item,) = listing["broadcasts"]
        assert (item["id"], item["counts"]["sent"], item["pending"]) == (bid, 1, 0)

        # A launched broadcast is not edited; one with nothing left can still be cancelled
        # until the scheduler marks it done.
        status, body = await call(
            api.owner, "PATCH", f"{api.url}/broadcasts/{bid}", json={"title": "x"}
        )
        assert status == 409, body
        status, cancelled = await call(api.owner, "POST", f"{api.url}/broadcasts/{bid}/cancel")
        assert (status, cancelled["status"]) == (200, "cancelled")
        status, body = await call(api.owner, "POST", f"{api.url}/broadcasts/{bid}/send")
        assert status == 409 and "cancelled" in body["error"]

        # A scheduled one: its rows wait for their time; cancelling drops them all.
        status, later = await call(
            api.owner,
            "POST",
            f"{api.url}/broadcasts",
            json={
                "title": "Colour week",
                "text": "Colour week!",
                "segment": {"tags": ["colour"]},
                "scheduled_at": IN_TWO_DAYS,
            },
        )
        assert later["scheduled_at"] == IN_TWO_DAYS
        status, sent = await call(api.owner, "POST", f"{api.url}/broadcasts/{later['id']}/send")
        assert (sent["status"], sent["counts"]["pending"]) == ("scheduled", 2)
        status, cancelled = await call(
            api.owner, "POST", f"{api.url}/broadcasts/{later['id']}/cancel"
        )
        assert (cancelled["status"], cancelled["counts"]["cancelled"]) == ("cancelled", 2)
        audit = await audit_of(hub.hub.sessions)
        assert [a for _, a, _ in audit] == [
            "create",
            "update",
            "launch",
            "cancel",
            "create",
            "launch",
            "cancel",
        ]
        async with hub.hub.sessions() as session:
            staff_ids = (
                await session.exec(
                    select(AuditEntry.staff_id).where(AuditEntry.entity == "broadcast")
                )
            ).all()
        assert None not in staff_ids  # every step has the staff member who took it
    finally:
        await api.close()


async def test_api_is_for_owners_and_admins_only(hub: RunningHub) -> None:
    api = await api_setup(hub)
    try:
        status, created = await call(
            api.owner, "POST", f"{api.url}/broadcasts", json={"title": "t", "text": "hi"}
        )
        assert status == 201
        bid = created["id"]
        routes = [
            ("POST", "/broadcasts/preview", {"segment": {}}),
            ("GET", "/broadcasts", None),
            ("POST", "/broadcasts", {"title": "t", "text": "hi"}),
            ("GET", f"/broadcasts/{bid}", None),
            ("PATCH", f"/broadcasts/{bid}", {"title": "mine"}),
            ("POST", f"/broadcasts/{bid}/send", None),
            ("POST", f"/broadcasts/{bid}/cancel", None),
            ("GET", f"/broadcasts/{bid}/recipients", None),
            ("GET", "/broadcast-templates", None),
        ]
        before = await stored(hub)
        async with client_session() as anonymous:
            for method, path, body in routes:
                status, answer = await call(api.master, method, f"{api.url}{path}", json=body)
                assert status == 403, (method, path, answer)
                status, _ = await call(anonymous, method, f"{api.url}{path}", json=body)
                assert status == 401, (method, path)
        assert await stored(hub) == before
        async with hub.hub.sessions() as session:
            untouched = await session.get(Broadcast, bid)
        assert untouched is not None and (untouched.title, untouched.status) == ("t", "draft")
        status, _ = await call(api.admin, "GET", f"{api.url}/broadcasts/{bid}")
        assert status == 200
    finally:
        await api.close()


async def test_api_refuses_bad_input_and_stores_nothing(hub: RunningHub) -> None:
    api = await api_setup(hub)
    try:
        good = {"title": "Offer", "text": "{name}, hello", "segment": {"tags": ["vip"]}}
        bad_bodies: list[Any] = [
            {},
            {"title": "Offer"},
            {**good, "text": ""},
            {**good, "text": "   "},
            {**good, "text": "x" * 2001},
            {**good, "text": "{name} gets {gift}"},
            {**good, "title": "t" * 201},
            {**good, "segment": {"channel": "fax"}},
            {**good, "segment": {"tags": "vip"}},
            {**good, "segment": {"service_id": api.salon.brows + 50}},
            {**good, "segment": {"marketing_consent": False}},
            {**good, "segment": {"visited_before": "yesterday"}},
            {**good, "scheduled_at": IN_TWO_DAYS[:19]},  # no offset
            {**good, "scheduled_at": (API_NOW - timedelta(hours=1)).isoformat()},  # past
            {**good, "urgent": True},
        ]
        for body in bad_bodies:
            status, answer = await call(api.owner, "POST", f"{api.url}/broadcasts", json=body)
            assert status == 400, (body, answer)
            assert answer["error"], body
        status, answer = await call(
            api.owner, "POST", f"{api.url}/broadcasts", data="not json",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 400
        status, _ = await call(api.owner, "POST", f"{api.url}/broadcasts", data="title=x")
        assert status == 415
        assert await stored(hub) == (0, 0, 0)

        status, created = await call(api.owner, "POST", f"{api.url}/broadcasts", json=good)
        bid = created["id"]
        for body in ({"title": None}, {"segment": {"channel": "fax"}}, {"text": "{oops"}):
            status, answer = await call(
                api.owner, "PATCH", f"{api.url}/broadcasts/{bid}", json=body
            )
            assert status == 400, (body, answer)
        status, answer = await call(
            api.owner, "POST", f"{api.url}/broadcasts/preview", json={"segment": {"tags": [""]}}
        )
        assert status == 400 and answer["details"][0]["field"] == "segment.tags"
        for path in ("/broadcasts/999999", "/broadcasts/999999/recipients"):
            status, _ = await call(api.owner, "GET", f"{api.url}{path}")
            assert status == 404
        for path in ("/broadcasts/999999/send", "/broadcasts/999999/cancel"):
            status, _ = await call(api.owner, "POST", f"{api.url}{path}")
            assert status == 404
        for path in (
            "/broadcasts/abc",
            f"/broadcasts/{bid}/recipients?status=lost",
            f"/broadcasts/{bid}/recipients?limit=0",
            "/broadcasts?offset=-1",
            "/broadcast-templates?lang=de",
        ):
            status, _ = await call(api.owner, "GET", f"{api.url}{path}")
            assert status == 400, path
        # Nobody in the segment: the send is refused and the draft stays a draft.
        status, _ = await call(
            api.owner,
            "PATCH",
            f"{api.url}/broadcasts/{bid}",
            json={"segment": {"tags": ["nobody"]}},
        )
        assert status == 200
        status, answer = await call(api.owner, "POST", f"{api.url}/broadcasts/{bid}/send")
        assert status == 400 and "nobody" in answer["error"]
        status, detail = await call(api.owner, "GET", f"{api.url}/broadcasts/{bid}")
        assert (detail["status"], detail["segment"]["tags"]) == ("draft", ["nobody"])
        assert (await stored(hub))[:2] == (1, 0)
        # A state-changing call without the CSRF token is refused.
        del api.owner.headers["X-CSRF-Token"]
        status, _ = await call(api.owner, "POST", f"{api.url}/broadcasts/{bid}/cancel")
        assert status == 403
        status, detail = await call(api.owner, "GET", f"{api.url}/broadcasts/{bid}")
        assert detail["status"] == "draft"
    finally:
        await api.close()


async def test_api_templates(hub: RunningHub) -> None:
    api = await api_setup(hub)
    try:
        status, body = await call(api.owner, "GET", f"{api.url}/broadcast-templates")
        assert status == 200
        assert len(body["templates"]) == len(templates())
        status, body = await call(api.owner, "GET", f"{api.url}/broadcast-templates?lang=en")
        assert {t["language"] for t in body["templates"]} == {"en"}
        assert "promotion" in {t["id"] for t in body["templates"]}
    finally:
        await api.close()


# The command ----------------------------------------------------------------------------------


def run_cli(monkeypatch: pytest.MonkeyPatch, db: str, tmp_path: Any, *args: str) -> int:
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "hub-data"))
    monkeypatch.setenv("HUB_TIMEZONE", "Europe/Kyiv")
    return main(["broadcast", *args])


def test_the_command_previews_creates_sends_watches_and_cancels(
    db: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed(session: AsyncSession) -> None:
        session.add_all(
            [
                Client(name="Олена Коваль", tags=["vip"], marketing_consent=True),
                Client(name="Ірина", tags=["VIP"], marketing_consent=True),
                Client(name="Refused", tags=["vip"], marketing_consent=False),
            ]
        )

    on_db(db, seed)
    cli = lambda *args: run_cli(monkeypatch, db, tmp_path, *args)  # noqa: E731

    assert cli("preview", "--tag", "vip") == 0
    out = capsys.readouterr().out
    assert "2 clients (with marketing consent)" in out and "Олена Коваль, Ірина" in out

    assert cli("list") == 0
    assert capsys.readouterr().out.strip() == "no broadcasts yet"
    # A refusal is the command's error, and nothing is saved.
    assert cli("create", "--text", "{name}, {oops}", "--tag", "vip") == 2
    assert "only the {name} placeholder" in capsys.readouterr().err
    assert cli("create", "--text", "hi", "--at", "2030-01-01T10:00") == 2
    assert cli("create", "--template", "nope") == 2
    assert cli("create", "--text", "hi", "--tag", "nobody", "--send") == 2
    assert "nobody to send to" in capsys.readouterr().err
    count = on_db(db, lambda s: _count(s, Broadcast))
    assert count == 0

    assert cli("create", "--template", "promotion", "--lang", "en", "--tag", "vip", "--send") == 0
    out = capsys.readouterr().out
    assert "is sending to 2 recipients" in out
    (broadcast,) = on_db(db, lambda s: _all(s, Broadcast))
    assert (broadcast.title, broadcast.status, broadcast.total) == ("Special offer", "sending", 2)
    assert broadcast.text.startswith("{name}, until the end of the month")

    assert cli("status", str(broadcast.id)) == 0
    out = capsys.readouterr().out
    assert "status:    sending" in out and "pending 2" in out

    async def all_went(session: AsyncSession) -> None:
        await session.exec(  # type: ignore[call-overload]
            update(ScheduledMessage).values(status="sent", channel="telegram")
        )

    on_db(db, all_went)
    assert cli("status", str(broadcast.id), "--watch", "--interval", "0.05") == 0
    out = capsys.readouterr().out
    assert "[##############################] 100%  sent 2" in out
    assert "telegram: sent 2" in out

    later_args = ("create", "--text", "Later", "--tag", "vip", "--send", "--at")
    assert cli(*later_args, "2099-01-01 10:00") == 2
    assert "more than a year ahead" in capsys.readouterr().err
    tomorrow = (datetime.now(KYIV) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    assert cli(*later_args, tomorrow) == 0
    out = capsys.readouterr().out
    assert f"scheduled for {tomorrow}: 2 recipients" in out
    later = max(on_db(db, lambda s: _all(s, Broadcast)), key=lambda b: b.id)
    assert cli("cancel", str(later.id)) == 0
    assert "cancelled: 2 not sent, 0 sent before" in capsys.readouterr().out
    assert cli("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["cancelled", "sending"]


async def _count(session: AsyncSession, model: Any) -> int:
    return (await session.exec(select(func.count()).select_from(model))).one()


async def _all(session: AsyncSession, model: Any) -> list[Any]:
    return list((await session.exec(select(model))).all())


# Through the scheduler ------------------------------------------------------------------------


async def test_a_broadcast_goes_out_through_the_scheduler_with_names_filled(
    settings: Any, redis: Any
) -> None:
    """The whole way: launched, sent by the scheduler's tick to a fake Telegram with each
    client's first name (not to the one without consent), counted, done; a cancelled one
    sends nothing."""
    from tests.fakes.telegram_server import FakeTelegram
    from tests.test_scheduler import TOKEN, Clock, hub_settings, running_hub

    clock = Clock(kyiv("2026-12-01 12:00"))
    async with FakeTelegram(max_poll_wait=0.2) as telegram:
        telegram.add_bot(TOKEN, "salon_bot")
        config = hub_settings(settings, telegram, _NoTwilio())  # type: ignore[arg-type]
        async with running_hub(config, clock) as running:
            await _through_the_scheduler(running, telegram, clock)


async def _through_the_scheduler(running: RunningHub, telegram: Any, clock: Any) -> None:
    from tests.test_scheduler import sent_texts, telegram_client, wait_sent

    await build_salon(running.hub.sessions)
    oksana = await telegram_client(running, 6001, name="Oksana Petrenko")
    anna = await telegram_client(running, 6002, name="Anna Smith", language="en")
    refused = await telegram_client(running, 6003, name="Refused")
    async with transaction(running.hub.sessions) as session:
        for client_id in (oksana, anna, refused):
            card = await session.get(Client, client_id)
            assert card is not None
            card.tags = ["vip"]
            card.marketing_consent = client_id != refused
            session.add(card)
    sessions = running.hub.sessions
    text = "{name}, VIP evening on Friday!"
    first = await draft(sessions, text=text, segment=Segment(tags=["vip"]), now=clock.now)
    assert (await launch(sessions, first.id, now=clock.now)).total == 2

    report = await running.hub.scheduler.tick()
    assert report.sent == 2
    assert sorted(await wait_sent(telegram, 2)) == [
        (6001, "Oksana, VIP evening on Friday!"),
        (6002, "Anna, VIP evening on Friday!"),
    ]
    await running.hub.scheduler.tick()  # nothing left: marked done
    async with sessions() as session:
        done = await store.get_broadcast(session, first.id)
        progress = await store.progress(session, first.id)
    assert (done.status, progress.counts["sent"], progress.open) == ("done", 2, 0)
    assert progress.channels == {"telegram": {"sent": 2}}

    # Cancelled before its tick: nothing goes.
    second = await draft(sessions, text=text, segment=Segment(tags=["vip"]), now=clock.now)
    await launch(sessions, second.id, now=clock.now)
    async with transaction(sessions) as session:
        await store.cancel(session, second.id, now=clock.now)
    clock.now += timedelta(minutes=1)
    assert (await running.hub.scheduler.tick()).sent == 0
    await asyncio.sleep(0.3)  # anything sent would have reached the fake by now
    assert len(sent_texts(telegram)) == 2


class _NoTwilio:
    """hub_settings wants an SMS provider's address; SMS is not used here."""

    base_url = "http://127.0.0.1:9"
