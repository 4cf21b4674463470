"""The calendar's "To settle" list in Chromium: visits that have ended but still say booked are
listed with a count; Done and No-show mark them through the API and they leave the list; a
master sees only their own; the client's card shows the no-shows. And a cancellation a client
makes through the bot shows at once: a notice in the inbox, the calendar redrawn."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from playwright.async_api import expect
from sqlmodel import col, select

from crm_store.appointments import Author, book, set_status
from crm_store.conversations import open_conversation
from crm_store.db import transaction
from crm_store.models import Appointment, Client, MasterService, Staff
from crm_store.slots import find_slots
from crm_store.timeutil import aware, iso, utcnow
from tests.browser.conftest import MASTER, OTHER_MASTER, Inbox, sign_in
from tests.support import client_session, login

STAFF = Author("staff")


@dataclass
class Visit:
    id: int
    client_id: int
    client_name: str
    start: datetime


async def _master(session: Any, email: str) -> tuple[int, int]:
    """A demo master's id and the first service they do."""
    staff = (await session.exec(select(Staff).where(Staff.email == email))).one()
    query = select(MasterService.service_id).where(MasterService.master_id == staff.id)
    return staff.id, (await session.exec(query.order_by(col(MasterService.service_id)))).first()


async def past_visit(inbox: Inbox, email: str, client_name: str, days_back: int = 1) -> Visit:
    """A visit with the master on a past working day, booked then and never closed."""
    hub = inbox.hub
    async with transaction(hub.sessions) as session:
        rules = await hub.rules(session)
        master_id, service_id = await _master(session, email)
        client = Client(name=client_name, phone=None)
        session.add(client)
        await session.flush()
        today = utcnow().astimezone(rules.tz).date()
        for back in range(days_back, days_back + 14):
            day = today - timedelta(days=back)
            common = {"service_id": service_id, "rules": rules, "master_id": master_id}
            free = await find_slots(session, first_day=day, last_day=day, **common)
            if free:
                slot = free[len(free) // 2]
                appointment = await book(
                    session,
                    client_id=client.id,  # type: ignore[arg-type]
                    start=slot.start,
                    now=slot.start - timedelta(days=1),
                    author=STAFF,
                    client_window=False,
                    **common,
                )
                return Visit(appointment.id, client.id, client_name, slot.start)  # type: ignore[arg-type]
    raise AssertionError(f"no free past time for {email}")


async def status_of(inbox: Inbox, appointment_id: int) -> str:
    async with inbox.hub.sessions() as session:
        found = await session.get(Appointment, appointment_id)
    assert found is not None
    return found.status


async def open_calendar(page: Any, inbox: Inbox, query: str = "") -> None:
    await page.goto(f"{inbox.url}/inbox/calendar{query}")
    await page.locator("body[data-ready=true]").wait_for(state="attached")
    await page.locator("body[data-live=on]").wait_for(state="attached")


async def test_settle_visits_from_the_calendar(inbox: Inbox, page: Any) -> None:
    first = await past_visit(inbox, MASTER[0], "Settle Done", days_back=2)
    second = await past_visit(inbox, MASTER[0], "Settle Missed", days_back=1)
    async with client_session() as http:
        assert await login(http, inbox.url, *inbox.owner) == 200
        async with http.get(f"{inbox.url}/api/appointments/unsettled") as response:
            listed = await response.json()
    total = listed["count"]
    assert {first.id, second.id} <= {a["id"] for a in listed["appointments"]}

    await sign_in(page, inbox, inbox.owner)
    await open_calendar(page, inbox)
    box = page.locator("#cal-settle")
    await expect(box).to_be_visible()
    await expect(page.locator("#cal-settle-count")).to_have_text(str(total))
    done_row = page.locator(f'.cal-settle-item[data-id="{first.id}"]')
    await expect(done_row).to_contain_text("Settle Done")
    await page.locator("#cal-settle summary").click()  # open the list

    await done_row.locator(".settle-done").click()
    await expect(done_row).to_have_count(0)
    await expect(page.locator("#cal-settle-count")).to_have_text(str(total - 1))
    assert await status_of(inbox, first.id) == "done"

    missed_row = page.locator(f'.cal-settle-item[data-id="{second.id}"]')
    await missed_row.locator(".settle-no-show").click()
    await expect(missed_row).to_have_count(0)
    assert await status_of(inbox, second.id) == "no_show"
    if total == 2:
        await expect(box).to_be_hidden()
    else:
        await expect(page.locator("#cal-settle-count")).to_have_text(str(total - 2))

    # The client's card in the inbox shows the missed visit.
    async with transaction(inbox.hub.sessions) as session:
        conversation, _ = await open_conversation(
            session,
            client_id=second.client_id,
            channel="webchat",
            inbox="main",
            chat_id="settle-missed",
            now=utcnow(),
        )
    await page.goto(f"{inbox.url}/inbox?c={conversation.id}")
    record = page.locator("#card-record")
    await expect(record).to_have_attribute("data-no-shows", "1")
    await expect(record).to_contain_text("No-shows: 1")
    await expect(record).to_contain_text("Visits: 0")


async def test_a_master_settles_only_their_own(inbox: Inbox, page: Any) -> None:
    mine = await past_visit(inbox, MASTER[0], "Olena's Client")
    theirs = await past_visit(inbox, OTHER_MASTER[0], "Iryna's Client")
    await sign_in(page, inbox, inbox.master)
    await open_calendar(page, inbox)
    await page.locator("#cal-settle summary").click()
    await expect(page.locator(f'.cal-settle-item[data-id="{mine.id}"]')).to_be_visible()
    await expect(page.locator(f'.cal-settle-item[data-id="{theirs.id}"]')).to_have_count(0)
    await page.locator(f'.cal-settle-item[data-id="{mine.id}"] .settle-done').click()
    await expect(page.locator(f'.cal-settle-item[data-id="{mine.id}"]')).to_have_count(0)
    assert await status_of(inbox, mine.id) == "done"
    assert await status_of(inbox, theirs.id) == "booked"


async def _upcoming(inbox: Inbox) -> Appointment:
    """A live appointment of the demo's master Olena, days ahead."""
    async with inbox.hub.sessions() as session:
        master_id, _ = await _master(session, MASTER[0])
        query = (
            select(Appointment)
            .where(
                Appointment.master_id == master_id,
                col(Appointment.status).in_(("booked", "confirmed")),
                col(Appointment.start_at) > utcnow() + timedelta(days=1),
            )
            .order_by(col(Appointment.start_at))
        )
        return (await session.exec(query)).first()


async def _cancelled_by_the_client(
    inbox: Inbox, appointment: Appointment, conversation_id: int | None = None
) -> None:
    """What the bot worker does after a client cancels through the bot: the change in the
    store, then the `appointment` event."""
    async with transaction(inbox.hub.sessions) as session:
        await set_status(session, appointment.id, "cancelled", now=utcnow(), author=Author("bot"))  # type: ignore[arg-type]
        client = await session.get(Client, appointment.client_id)
        assert client is not None
    await inbox.hub.bus.publish_event(
        "appointment",
        appointment_id=appointment.id,
        action="cancelled",
        status="cancelled",
        start=iso(appointment.start_at),
        master_id=appointment.master_id,
        client_id=appointment.client_id,
        client_name=client.name,
        conversation_id=conversation_id,
        by="client",
    )


async def test_a_cancellation_through_the_bot_shows_at_once(inbox: Inbox, page: Any) -> None:
    appointment = await _upcoming(inbox)
    assert appointment is not None
    async with inbox.hub.sessions() as session:
        client = await session.get(Client, appointment.client_id)
    assert client is not None and client.name

    # The calendar on that day: the block goes, without a reload.
    await sign_in(page, inbox, inbox.owner)
    async with inbox.hub.sessions() as session:
        rules = await inbox.hub.rules(session)
    day = aware(appointment.start_at).astimezone(rules.tz).date()  # type: ignore[union-attr]
    await open_calendar(page, inbox, f"?date={day}&view=day&master={appointment.master_id}")
    block = page.locator(f'.appt[data-id="{appointment.id}"]')
    await expect(block).to_be_visible()

    inbox_page = await page.context.new_page()
    await inbox_page.goto(f"{inbox.url}/inbox")
    await inbox_page.locator("body[data-live=on]").wait_for(state="attached")

    async with transaction(inbox.hub.sessions) as session:
        conversation, _ = await open_conversation(
            session,
            client_id=appointment.client_id,
            channel="webchat",
            inbox="main",
            chat_id="cancelled-through-the-bot",
            now=utcnow(),
        )
    await _cancelled_by_the_client(inbox, appointment, conversation.id)
    await expect(block).to_have_count(0)
    await expect(page.locator(".cal-toast").filter(has_text=client.name)).to_have_count(1)
    notice = inbox_page.locator("#inbox-notice")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text(client.name)
    await expect(notice).to_contain_text("cancelled")
    await expect(notice).not_to_contain_text("null")
    # From the notice to the conversation, where the card shows the cancelled visit.
    await notice.locator(".notice-open").click()
    await expect(notice).to_be_hidden()
    await inbox_page.wait_for_url(f"**/inbox?c={conversation.id}")
    cancelled = inbox_page.locator(f'#appts-past .appt[data-id="{appointment.id}"]')
    await expect(cancelled).to_have_class("appt appt-cancelled")

    # Another one, dismissed.
    await _cancelled_by_the_client(inbox, appointment, None)
    await expect(notice).to_be_visible()
    await notice.locator(".notice-close").click()
    await expect(notice).to_be_hidden()
