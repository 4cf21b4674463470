"""The analytics page in Chromium, on the demo salon (a month of appointments) with a few
inquiries added: the owner opens it from the menu and sees the figures, charts and tables;
narrows it by period and channel with the form; downloads a table as CSV; opens a lost lead's
conversation. A master gets the notice and no link; the language switch changes every label."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crm_store.db import transaction
from crm_store.models import Client, Conversation
from tests.browser.conftest import Inbox, shot, sign_in
from tests.support import message_row


@dataclass
class Asked:
    lead_conversation: int
    today: str
    week_ago: str


async def inquiries(inbox: Inbox) -> Asked:
    """Two Telegram inquiries the bot answered in 30 s and 90 s (two and ten days ago), and a
    web chat one staff answered in 10 min four days ago: a price question nobody followed up."""
    now = datetime.now(UTC).replace(microsecond=0)
    async with transaction(inbox.hub.sessions) as session:
        business_tz = (await inbox.hub.rules(session)).tz
        clients = [
            Client(name="Марія Telegram", phone="+380671110001"),
            Client(name="Ірина Telegram", phone="+380671110002"),
            Client(name="Lead <Webchat>", phone="+380671110003"),
        ]
        session.add_all(clients)
        await session.flush()
        made = []
        for client, channel, ago, answer, author, text in (
            (clients[0], "telegram", 2, 30, "bot", "Скільки коштує стрижка?"),
            (clients[1], "telegram", 10, 90, "bot", "Доброго дня"),
            (clients[2], "webchat", 4, 600, "staff", "What's the price of gel nails?"),
        ):
            at = now - timedelta(days=ago)
            conversation = Conversation(
                client_id=client.id,  # type: ignore[arg-type]
                channel=channel,
                inbox="main",
                chat_id=f"an-{client.id}",
                opened_at=at,
                last_message_at=at + timedelta(seconds=answer),
            )
            session.add(conversation)
            await session.flush()
            session.add(message_row(conversation, at, "in", "client", text, 1))
            session.add(
                message_row(conversation, at + timedelta(seconds=answer), "out", author, "ok", 2)
            )
            made.append(conversation)
    today = now.astimezone(business_tz).date()
    return Asked(made[2].id, today.isoformat(), (today - timedelta(days=6)).isoformat())  # type: ignore[arg-type]


async def kpi(page: Any, name: str) -> str:
    return await page.locator(f'.an-kpi[data-kpi="{name}"] .an-kpi-value').inner_text()


async def test_owner_reads_filters_and_exports(inbox: Inbox, page: Any) -> None:
    asked = await inquiries(inbox)
    base = inbox.url
    await sign_in(page, inbox, inbox.owner)
    await page.locator('nav a[href="/inbox/analytics"]').click()
    await page.wait_for_url(f"{base}/inbox/analytics")
    await page.locator("h1", has_text="Analytics").wait_for()
    assert await kpi(page, "inquiries") == "3"
    # The median of 30 s, 90 s and 600 s.
    assert await kpi(page, "response") == "1 min 30 s"
    assert await kpi(page, "revenue") != "0 UAH"  # the demo's visits
    # A chart per figure, drawn on the server, each an image with a title.
    charts = page.locator("figure.an-chart svg[role=img]")
    assert await charts.count() >= 10
    assert await charts.first.locator("> title").text_content() == "Median by channel"
    bars = page.locator("#an-responses figure").first.locator("text.bar-value")
    # Telegram: 30 s and 90 s; the web chat: 600 s.
    assert sorted(await bars.all_text_contents()) == [
        "1 min · p90 1 min 24 s",
        "10 min · p90 10 min",
    ]
    masters = page.locator('#an-no_shows [data-table="no_shows"] tbody tr')
    assert await masters.count() >= 2  # all masters, then each
    assert await masters.first.locator("td").first.inner_text() == "All masters"
    weeks = page.locator('[data-table="occupancy_weeks"] tbody tr')
    assert await weeks.count() >= 4
    # The label is text, not markup: the lead's "<Webchat>" is shown as written.
    lead = page.locator('[data-table="lost_leads"] tbody tr')
    assert await lead.count() == 1
    assert await lead.locator("td.col-name").inner_text() == "Lead <Webchat>"
    await shot(page, "analytics")

    # The CSV of a table: the same period, a BOM, the header, the salon's local times.
    async with page.expect_download() as download_info:
        await page.locator('[data-table="lost_leads"] a.an-csv').click()
    download = await download_info.value
    assert download.suggested_filename.startswith("analytics-lost_leads-")
    saved = await download.path()
    raw = await asyncio.to_thread(Path(saved).read_bytes)
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [r["name"] for r in rows] == ["Lead <Webchat>"]
    assert rows[0]["asked_at"][19:] in ("+02:00", "+03:00")  # Kyiv, winter or summer

    # Narrowed by the form: the last seven days on Telegram.
    await page.fill("#an-filters input[name=from]", asked.week_ago)
    await page.fill("#an-filters input[name=to]", asked.today)
    await page.select_option("#an-filters select[name=channel]", "telegram")
    await page.click("#an-filters button[type=submit]")
    await page.wait_for_url(lambda url: "channel=telegram" in url)
    assert f"from={asked.week_ago}" in page.url
    assert await kpi(page, "inquiries") == "1"
    assert await kpi(page, "response") == "30 s"
    assert "channel filter" in await page.locator(".an-note").inner_text()
    assert await page.locator('[data-table="lost_leads"] tbody tr').count() == 0
    csv_link = await page.locator('[data-table="responses"] a.an-csv').get_attribute("href")
    assert csv_link == (
        f"/api/analytics/responses.csv?from={asked.week_ago}&to={asked.today}&channel=telegram"
    )
    # The link fetches the same table the page shows.
    body = await page.evaluate(
        "async (url) => { const r = await fetch(url); return [r.status, await r.text()]; }",
        csv_link,
    )
    assert body[0] == 200
    table = list(csv.DictReader(io.StringIO(body[1].removeprefix("\ufeff"))))
    assert {(r["dimension"], r["key"]) for r in table if r["dimension"] == "channel"} == {
        ("channel", "telegram")
    }

    # A bad period comes back with the reason and the form.
    await page.fill("#an-filters input[name=from]", asked.today)
    await page.fill("#an-filters input[name=to]", asked.week_ago)
    await page.click("#an-filters button[type=submit]")
    await page.locator("#an-error", has_text="The period starts after it ends.").wait_for()
    assert await page.locator(".an-kpi").count() == 0

    # A lost lead opens in the inbox.
    await page.goto(f"{base}/inbox/analytics")
    await page.locator('[data-table="lost_leads"] td.col-name a').click()
    await page.wait_for_url(f"{base}/inbox?c={asked.lead_conversation}")


async def test_a_master_gets_the_notice(inbox: Inbox, page: Any) -> None:
    await sign_in(page, inbox, inbox.master)
    await page.locator("#me").filter(has_text="master").wait_for()
    link = page.locator('nav a[href="/inbox/analytics"]')
    assert await link.is_hidden()
    response = await page.goto(f"{inbox.url}/inbox/analytics")
    assert response.status == 403
    notice = page.locator("#an-forbidden")
    assert await notice.inner_text() == "Only owners and admins see the analytics."
    assert await page.locator("svg").count() == 0
    assert await link.is_hidden()


async def test_the_language_switch(inbox: Inbox, page: Any) -> None:
    await inquiries(inbox)
    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{inbox.url}/inbox/analytics")
    await page.locator("h1", has_text="Analytics").wait_for()
    await page.locator(".langs a", has_text="ru").click()
    await page.locator("h1", has_text="Аналитика").wait_for()
    assert await page.locator("#an-responses h2").inner_text() == "Скорость ответа"
    assert await page.locator('.an-kpi[data-kpi="response"] .an-kpi-label').inner_text() == (
        "Первый ответ (медиана)"
    )
    assert "мин" in await page.locator('.an-kpi[data-kpi="response"] .an-kpi-value').inner_text()
    heading = page.locator('[data-table="revenue_masters"] th').first
    assert await heading.inner_text() == "Мастер"
    assert await page.locator("nav a[aria-current=page]").inner_text() == "Аналитика"
    await page.locator(".langs a", has_text="en").click()
    await page.locator("h1", has_text="Analytics").wait_for()
    assert await page.locator("#an-responses h2").inner_text() == "Response time"
    # The choice is remembered: the next page is in English too.
    await page.goto(f"{inbox.url}/inbox/analytics?channel=webchat")
    assert await page.locator("#an-filters select[name=channel] option:checked").inner_text() == (
        "Web chat"
    )
