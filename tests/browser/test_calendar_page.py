"""The calendar page in Chromium: the owner books, moves and cancels an appointment of a demo
client through the page, each step checked on the page and in the API; a time taken meanwhile
is refused with the reason and alternatives; a master sees only their own day; a phone works."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlmodel import select

from crm_store.models import Conversation
from hub.messages import ContactHints, InboundMessage
from tests.browser.conftest import Inbox, shot, sign_in
from tests.support import client_session, eventually, login

PX_PER_MIN = 1.2  # as in calendar.js
STATIC = Path(__file__).resolve().parents[2] / "hub" / "ui" / "static"


@dataclass
class Plan:
    """A future working day of a demo master, a service they do and its free times then."""

    master: dict[str, Any]
    service_id: int
    day: date
    slots: list[dict[str, Any]]


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, (url, response.status, await response.text())
        return await response.json()


async def plan_day(http: aiohttp.ClientSession, base: str, master_name: str) -> Plan:
    """A working day of the master (from their hours) at least two days ahead: past any lead
    time, with free times for their first service."""
    business = await get(http, f"{base}/api/business")
    today = datetime.now(ZoneInfo(business["timezone"])).date()
    masters = (await get(http, f"{base}/api/masters"))["masters"]
    master = next(m for m in masters if m["name"] == master_name)
    service_id = master["services"][0]["service_id"]
    for ahead in range(2, 30):
        day = today + timedelta(days=ahead)
        if str(day.weekday()) not in master["hours"]:
            continue
        query = f"service={service_id}&master={master['id']}&from={day}&to={day}"
        slots = (await get(http, f"{base}/api/slots?{query}"))["slots"]
        if len(slots) >= 6:
            return Plan(master, service_id, day, slots)
    raise AssertionError(f"no free working day for {master_name} in four weeks")


async def client_named(http: aiohttp.ClientSession, base: str, q: str) -> dict[str, Any]:
    (card, *_) = (await get(http, f"{base}/api/clients?q={q}"))["clients"]
    return card


async def appointment(http: aiohttp.ClientSession, base: str, appointment_id: int) -> Any:
    return await get(http, f"{base}/api/appointments/{appointment_id}")


def later_slot(slots: list[dict[str, Any]], after: dict[str, Any]) -> dict[str, Any]:
    """A free start that does not overlap `after` (so it stays free once `after` is booked)."""
    return next(s for s in slots if s["start"] >= after["end"])


async def open_day(page: Any, inbox: Inbox, plan: Plan) -> None:
    query = f"date={plan.day}&view=day&master={plan.master['id']}"
    await page.goto(f"{inbox.url}/inbox/calendar?{query}")
    column = f'.cal-col[data-master="{plan.master["id"]}"][data-date="{plan.day}"]'
    await page.locator(column).wait_for()


async def fill_booking(page: Any, client: dict[str, Any], plan: Plan, start: str) -> None:
    await page.click("#cal-book")
    await page.fill("#book-client-q", client["name"][:6])
    await page.click(f'.client-option[data-id="{client["id"]}"]')
    await page.locator("#book-client-chosen").filter(has_text=client["name"]).wait_for()
    await page.select_option("#book-service", str(plan.service_id))
    await page.select_option("#book-time", start)  # waits for the free times to load


async def test_book_move_and_cancel_from_the_calendar(inbox: Inbox, page: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        plan = await plan_day(http, base, "Олена Коваль")
        client = await client_named(http, base, "Оксана")
        first = plan.slots[0]
        second = later_slot(plan.slots, first)

        await sign_in(page, inbox, inbox.owner)
        await open_day(page, inbox, plan)
        await fill_booking(page, client, plan, first["start"])
        await page.fill("#book-notes", "booked in the calendar test")
        await page.click("#book-submit")

        # On the page: a block at that time with the client's name.
        block = page.locator(f'.appt[data-start="{first["start"]}"]').filter(
            has_text=client["name"]
        )
        await block.wait_for()
        assert not await page.locator("#cal-dialog").is_visible()
        appointment_id = int(await block.get_attribute("data-id"))
        # In the API: the appointment, and in the client's card data.
        booked = await appointment(http, base, appointment_id)
        assert (booked["status"], booked["start"]) == ("booked", first["start"])
        assert booked["master"]["id"] == plan.master["id"]
        assert booked["notes"] == "booked in the calendar test"
        card = await get(http, f"{base}/api/clients/{client['id']}")
        assert appointment_id in [a["id"] for a in card["appointments"]]
        await see_it_in_the_card(page, inbox, client, appointment_id)
        await open_day(page, inbox, plan)

        # Move through the form: details → move → a later free time.
        await page.click(f'.appt[data-id="{appointment_id}"]')
        await page.click("#appt-move")
        await page.select_option("#move-time", second["start"])
        await page.click("#move-submit")
        await page.locator(
            f'.appt[data-id="{appointment_id}"][data-start="{second["start"]}"]'
        ).wait_for()
        assert await page.locator(f'.appt[data-start="{first["start"]}"]').count() == 0
        assert (await appointment(http, base, appointment_id))["start"] == second["start"]

        # Cancel with a reason: the block goes (cancelled ones are hidden by default) ...
        await page.click(f'.appt[data-id="{appointment_id}"]')
        await page.click("#appt-cancel-open")
        await page.fill("#appt-cancel-reason", "the client is ill")
        await page.click("#appt-cancel-submit")
        await page.locator(f'.appt[data-id="{appointment_id}"]').wait_for(state="detached")
        assert (await appointment(http, base, appointment_id))["status"] == "cancelled"
        card = await get(http, f"{base}/api/clients/{client['id']}")
        reasons = [
            e["changes"].get("reason") for e in card["audit"] if e["entity_id"] == appointment_id
        ]
        assert "the client is ill" in reasons
        # ... and comes back, marked cancelled, with the toggle.
        await page.check("#cal-cancelled")
        await page.locator(f'.appt.status-cancelled[data-id="{appointment_id}"]').wait_for()
        assert "cancelled=1" in page.url


async def conversation_of(inbox: Inbox, client: dict[str, Any]) -> int:
    """A conversation of the client: a Telegram message sharing their phone links their card."""
    phone = client["phone"]
    await inbox.hub.bus.publish_inbound(
        InboundMessage(
            channel="telegram",
            inbox="main",
            chat_id=f"tg-{phone}",
            sender_id=f"tg-{phone}",
            provider_message_id=f"calendar-test-{phone}",
            text="Hello, is my appointment still on?",
            contact=ContactHints(phone=phone),
        )
    )

    async def found() -> int | None:
        async with inbox.hub.sessions() as session:
            query = select(Conversation.id).where(Conversation.client_id == client["id"])
            return (await session.exec(query)).first()

    return await eventually(found)


async def see_it_in_the_card(
    page: Any, inbox: Inbox, client: dict[str, Any], appointment_id: int
) -> None:
    """The inbox's client card (the other page of issue 7) lists the new appointment."""
    conversation_id = await conversation_of(inbox, client)
    await page.goto(f"{inbox.url}/inbox?c={conversation_id}")
    await page.locator(f'#appts-upcoming [data-id="{appointment_id}"]').wait_for()


async def test_a_time_taken_meanwhile_is_refused_with_alternatives(inbox: Inbox, page: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        plan = await plan_day(http, base, "Олена Коваль")
        client = await client_named(http, base, "Оксана")
        rival = await client_named(http, base, "Наталія")
        wanted = plan.slots[2]

        await sign_in(page, inbox, inbox.owner)
        await open_day(page, inbox, plan)
        await fill_booking(page, client, plan, wanted["start"])
        # Someone else takes that time while the form is open.
        async with http.post(
            f"{base}/api/appointments",
            json={
                "client_id": rival["id"],
                "service_id": plan.service_id,
                "master_id": plan.master["id"],
                "start": wanted["start"],
            },
        ) as response:
            assert response.status == 201
        await page.click("#book-submit")

        refusal = page.locator("#book-error .refusal")
        await refusal.wait_for()
        assert await refusal.inner_text() == "Not done: that time is already taken."
        alternatives = page.locator("#book-error .alt")
        assert await alternatives.count() >= 1
        alternative = await alternatives.first.get_attribute("data-start")
        assert alternative != wanted["start"]
        # What took the time now shows behind the form.
        taken = page.locator(f'.appt[data-start="{wanted["start"]}"]').filter(
            has_text=rival["name"]
        )
        await taken.wait_for()
        await shot(page, "calendar-refused")
        mine = await get(http, f"{base}/api/appointments?client={client['id']}")
        assert wanted["start"] not in [a["start"] for a in mine["appointments"]]

        # Taking the first alternative books it.
        await alternatives.first.click()
        block = page.locator(f'.appt[data-start="{alternative}"]').filter(has_text=client["name"])
        await block.wait_for()
        mine = await get(http, f"{base}/api/appointments?client={client['id']}")
        assert alternative in [a["start"] for a in mine["appointments"] if a["status"] == "booked"]


async def test_drag_an_appointment_to_another_free_time(inbox: Inbox, page: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        plan = await plan_day(http, base, "Олена Коваль")
        client = await client_named(http, base, "Оксана")
        first = plan.slots[0]
        target = later_slot(plan.slots, first)
        body = {
            "client_id": client["id"],
            "service_id": plan.service_id,
            "master_id": plan.master["id"],
            "start": first["start"],
        }
        async with http.post(f"{base}/api/appointments", json=body) as response:
            assert response.status == 201
            appointment_id = (await response.json())["id"]

        await sign_in(page, inbox, inbox.owner)
        await open_day(page, inbox, plan)
        block = page.locator(f'.appt[data-id="{appointment_id}"]')
        column = page.locator(f'.cal-col[data-master="{plan.master["id"]}"]')
        top = int(await column.get_attribute("data-first"))
        minute = int(target["start"][11:13]) * 60 + int(target["start"][14:16])
        # Grabbed 5 px below its top, dropped so that its top is at the target time.
        await block.drag_to(
            column,
            source_position={"x": 10, "y": 5},
            target_position={"x": 20, "y": (minute - top) * PX_PER_MIN + 5},
        )
        await page.locator(
            f'.appt[data-id="{appointment_id}"][data-start="{target["start"]}"]'
        ).wait_for()
        assert (await appointment(http, base, appointment_id))["start"] == target["start"]


async def test_master_sees_only_their_own_day(inbox: Inbox, page: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        plan = await plan_day(http, base, "Олена Коваль")
        masters = (await get(http, f"{base}/api/masters"))["masters"]
    other = next(m for m in masters if m["id"] != plan.master["id"])

    await sign_in(page, inbox, inbox.master)
    # Even a link to everyone's day, or to another master's, shows only their own column.
    for chosen in ("all", other["id"]):
        await page.goto(f"{base}/inbox/calendar?date={plan.day}&view=day&master={chosen}")
        await page.locator(f'.cal-col[data-master="{plan.master["id"]}"]').wait_for()
        assert await page.locator(".cal-col").count() == 1
        assert await page.locator("#cal-master-label").is_hidden()
        blocks = await page.locator(".appt").evaluate_all("els => els.map(e => e.title)")
        masters_shown = await page.locator(".cal-col").evaluate_all(
            "els => els.map(e => e.dataset.master)"
        )
        assert masters_shown == [str(plan.master["id"])], blocks
    await page.click("#cal-view-week")
    await page.locator(".cal-grid[data-view=week]").wait_for()
    assert set(
        await page.locator(".cal-col").evaluate_all("els => els.map(e => e.dataset.master)")
    ) == {str(plan.master["id"])}
    assert await page.locator(".cal-col").count() == 7


async def busiest_day(http: aiohttp.ClientSession, base: str) -> tuple[str, int]:
    """The coming day with the most demo appointments, for a screenshot worth looking at, and
    the busiest master that day."""
    listed = (await get(http, f"{base}/api/appointments"))["appointments"]
    live = [a for a in listed if a["status"] != "cancelled"]
    day = Counter(a["start"][:10] for a in live).most_common(1)[0][0]
    busy = Counter(a["master"]["id"] for a in live if a["start"].startswith(day))
    return day, busy.most_common(1)[0][0]


async def test_screenshots_on_a_desktop_and_a_phone(inbox: Inbox, page: Any, browser: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        day, busiest = await busiest_day(http, base)
        masters = (await get(http, f"{base}/api/masters"))["masters"]

    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{base}/inbox/calendar?date={day}&view=day&master=all")
    await page.locator(".appt").first.wait_for()
    # Everyone side by side on a desktop, with the picker; week view is one master's week.
    assert await page.locator(".cal-col").count() == len(masters)
    assert await page.locator("#cal-master-label").is_visible()
    await shot(page, "calendar")
    await page.click("#cal-view-week")
    await page.locator(".cal-grid[data-view=week]").wait_for()
    assert await page.locator(".cal-col").count() == 7
    assert "view=week" in page.url

    phone = await browser.new_context(viewport={"width": 375, "height": 740}, locale="en-US")
    try:
        small = await phone.new_page()
        await sign_in(small, inbox, inbox.owner)
        await small.goto(f"{base}/inbox/calendar?date={day}&view=day&master=all")
        await small.locator(".cal-col").first.wait_for()
        # One master's day on a phone; the page itself never scrolls sideways.
        assert await small.locator(".cal-col").count() == 1
        width = await small.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, width
        await small.select_option("#cal-master", str(busiest))
        await small.locator(f'.cal-col[data-master="{busiest}"] .appt').first.wait_for()
        await shot(small, "calendar-phone")
    finally:
        await phone.close()
