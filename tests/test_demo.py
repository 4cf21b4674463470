"""The demo salon: a realistic Kyiv price list, four masters, history and bookings ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from crm_store.business import Rules, get_business
from crm_store.catalog import list_masters, list_services
from crm_store.db import transaction
from crm_store.demo import load_demo_salon
from crm_store.models import Appointment, Client
from crm_store.slots import find_slots
from hub.cli.main import main

NOW = datetime(2027, 3, 10, 9, 30, tzinfo=UTC)


async def test_demo_salon_is_complete_and_loads_once(sessions) -> None:
    async with transaction(sessions) as session:
        summary = await load_demo_salon(session, now=NOW)
    assert summary.created
    assert (summary.services, summary.masters, summary.clients) == (14, 4, 12)
    async with sessions() as session:
        services = await list_services(session)
        masters = await list_masters(session)
        appointments = (await session.exec(select(Appointment))).all()
        business = await get_business(session)
        categories = {s.category for s in services}
        assert {"nails", "hair", "brows", "lashes"} <= categories
        assert all(s.price_minor >= 30_000 and s.price_minor % 100 == 0 for s in services)
        assert all(s.name_uk and s.name_en and s.name_ru for s in services)
        # Four masters with different services and different weeks.
        assert len({frozenset(o.service_id for o in m.offers) for m in masters}) == 4
        assert len({frozenset(m.hours) for m in masters}) == 4
        assert business.timezone == "Europe/Kyiv" and business.currency == "UAH"
        assert set(business.address) == set(business.hours_text) == {"uk", "en", "ru"}
        past = [a for a in appointments if a.start_at.replace(tzinfo=UTC) < NOW]
        ahead = [a for a in appointments if a.start_at.replace(tzinfo=UTC) >= NOW]
        assert {a.status for a in past} >= {"done", "cancelled"}
        assert {a.status for a in past} <= {"done", "cancelled", "no_show"}
        assert ahead and {a.status for a in ahead} <= {"booked", "confirmed"}
        assert {a.source for a in appointments} >= {"bot", "staff", "webchat"}
        visited = (
            await session.exec(select(Client).where(Client.last_visit_at.is_not(None)))
        ).all()
        assert visited
        # There is still room to book: the bot will have something to offer tomorrow.
        rules = Rules.of(business)
        tomorrow = (NOW + timedelta(days=1)).astimezone(rules.tz).date()
        free = await find_slots(
            session,
            service_id=services[1].id,
            rules=rules,
            first_day=tomorrow,
            last_day=tomorrow + timedelta(days=6),
            earliest=NOW,
        )
        assert free

    async with transaction(sessions) as session:
        again = await load_demo_salon(session, now=NOW)
    assert not again.created
    assert again.appointments == summary.appointments


def test_demo_data_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "data"))
    assert main(["demo-data"]) == 0
    first = capsys.readouterr().out
    assert "14 services, 4 masters, 12 clients" in first
    assert main(["demo-data"]) == 0
    assert "nothing was added" in capsys.readouterr().out
    assert (tmp_path / "data" / "hub.sqlite3").exists()


async def test_the_demo_chats_give_the_analytics_page_figures(sessions) -> None:
    """`hub serve --demo` loads past web chats too: closed, every question answered (by the bot
    in seconds, or after a hand-off by staff), so the owner's page is not empty."""
    from crm_store.analytics import Query, dashboard
    from crm_store.models import AuditEntry, Conversation, Message

    async with transaction(sessions) as session:
        await load_demo_salon(session, now=NOW, chats=True)
    async with sessions() as session:
        chats = (await session.exec(select(Conversation))).all()
        messages = (await session.exec(select(Message))).all()
        hand_offs = (
            await session.exec(select(AuditEntry).where(AuditEntry.action == "hand_off"))
        ).all()
        rules = Rules.of(await get_business(session))
        today = NOW.astimezone(rules.tz).date()
        tables = await dashboard(
            session, Query(first=today - timedelta(days=59), last=today, tz=rules.tz, now=NOW)
        )
    assert chats and {c.status for c in chats} == {"closed"}
    assert {c.channel for c in chats} == {"webchat"}
    assert len(messages) == 2 * len(chats)  # a question and its answer
    staff_answers = [m for m in messages if m.author == "staff"]
    assert len(hand_offs) == len(staff_answers) > 0
    overall = tables["responses"].rows[0]
    assert overall["inquiries"] == overall["answered"] == len(chats)
    responders = {r["key"]: r for r in tables["responses"].rows if r["dimension"] == "responder"}
    assert responders["bot"]["p90_s"] <= 20 < responders["staff"]["median_s"]
