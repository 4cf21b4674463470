"""The broadcasts page in Chromium: the owner picks a segment and sees the live count (as the
API counts it), takes a template, sends, and watches the progress and recipients change as
the rows go; a scheduled one is cancelled from the page; a refused form stores nothing; a
master has no link and no page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, update
from sqlmodel import col, select

from crm_store import broadcasts as store
from crm_store.db import transaction
from crm_store.models import Broadcast, ScheduledMessage
from tests.browser.conftest import Inbox, shot, sign_in
from tests.support import client_session, eventually, login


async def api(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as response:
        assert response.status < 300, (url, response.status, await response.text())
        return await response.json()


async def preview_count(http: aiohttp.ClientSession, base: str, segment: dict[str, Any]) -> int:
    found = await api(http, "POST", f"{base}/api/broadcasts/preview", json={"segment": segment})
    return int(found["count"])


async def shown_count(page: Any, expected: int) -> None:
    await page.locator(f'#bc-count[data-count="{expected}"]').wait_for()


async def counts_shown(page: Any) -> dict[str, int]:
    values = {}
    for name in ("sent", "failed", "skipped", "pending", "cancelled"):
        values[name] = int(await page.locator(f'#bc-d-counts dd[data-count="{name}"]').inner_text())
    return values


async def set_all_rows(inbox: Inbox, broadcast_id: int, statuses: list[str]) -> None:
    """What the scheduler would have done with every row (whatever it did meanwhile)."""
    async with transaction(inbox.hub.sessions) as session:
        ids = (
            await session.exec(
                select(ScheduledMessage.id)
                .where(ScheduledMessage.broadcast_id == broadcast_id)
                .order_by(col(ScheduledMessage.id))
            )
        ).all()
        assert len(ids) == len(statuses)
        for row_id, status in zip(ids, statuses, strict=True):
            await session.exec(  # type: ignore[call-overload]
                update(ScheduledMessage)
                .where(col(ScheduledMessage.id) == row_id)
                .values(
                    status=status,
                    channel="telegram",
                    claimed_by=None,
                    sent_at=datetime.now(UTC) if status == "sent" else None,
                    last_error="no way to reach the client" if status == "skipped" else None,
                )
            )


async def test_owner_sends_a_broadcast_and_watches_it_go(inbox: Inbox, page: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        vip = await preview_count(http, base, {"tags": ["vip"]})
        everyone = await preview_count(http, base, {})
        assert 0 < vip < everyone

        await sign_in(page, inbox, inbox.owner)
        await page.locator('nav a[href="/inbox/broadcasts"]').click()
        await page.wait_for_url(f"{base}/inbox/broadcasts")
        await page.click("#bc-new")
        # The consent rule is stated on the form.
        assert "agreed to receive marketing" in await page.locator(".bc-consent").inner_text()
        await shown_count(page, everyone)
        await page.fill("#bc-tags", "VIP")
        await shown_count(page, vip)
        await page.fill("#bc-tags", "")
        await shown_count(page, everyone)
        assert "Recipients: " in await page.locator("#bc-count").inner_text()

        await page.select_option("#bc-template-lang", "en")
        await page.select_option("#bc-template", "promotion")
        assert await page.input_value("#bc-title") == "Special offer"
        text = await page.input_value("#bc-text")
        assert text.startswith("{name}, until the end of the month")
        await page.fill("#bc-title", "November offer")
        await shot(page, "broadcasts-new")
        await page.click("#bc-send")

        # The broadcast's page: sending, with a row per recipient.
        await page.locator("#bc-detail:not([hidden])").wait_for()
        await page.locator("#bc-d-title", has_text="November offer").wait_for()
        (stored,) = (await api(http, "GET", f"{base}/api/broadcasts"))["broadcasts"]
        assert (stored["title"], stored["total"], stored["text"]) == (
            "November offer",
            everyone,
            text,
        )
        assert "?id=" in page.url
        await eventually(lambda: _rows_shown(page, everyone), timeout=10)  # the recipients table

        # The rows go; the page follows by itself.
        statuses = ["sent"] * (everyone - 2) + ["failed", "skipped"]
        await set_all_rows(inbox, stored["id"], statuses)
        await page.locator(
            f'#bc-d-counts dd[data-count="sent"]:text-is("{everyone - 2}")'
        ).wait_for()
        assert await counts_shown(page) == {
            "sent": everyone - 2,
            "failed": 1,
            "skipped": 1,
            "pending": 0,
            "cancelled": 0,
        }
        await page.select_option("#bc-r-status", "skipped")
        await page.locator("#bc-recipients tr").first.wait_for()
        await eventually(lambda: _rows_shown(page, 1))
        assert "no way to reach" in await page.locator("#bc-recipients .bc-reason").inner_text()
        await page.select_option("#bc-r-status", "")

        # The scheduler marks it done when nothing is left; the page shows it and stops.
        async with transaction(inbox.hub.sessions) as session:
            await store.finish_done(session, now=datetime.now(UTC))
        await page.locator('#bc-d-status[data-status="done"]').wait_for()
        assert await page.locator("#bc-d-cancel").is_hidden()
        item = page.locator(f'.bc-item[data-id="{stored["id"]}"]')
        await item.locator('.bc-status[data-status="done"]').wait_for()
        await shot(page, "broadcasts")


async def _rows_shown(page: Any, n: int) -> bool:
    return await page.locator("#bc-recipients tr").count() == n


async def test_a_scheduled_broadcast_is_cancelled_from_the_page(inbox: Inbox, page: Any) -> None:
    base = inbox.url
    async with client_session() as http:
        assert await login(http, base, *inbox.owner) == 200
        business = await api(http, "GET", f"{base}/api/business")
        tomorrow = datetime.now(ZoneInfo(business["timezone"])) + timedelta(days=1)
        at = tomorrow.strftime("%Y-%m-%dT10:00")

        await sign_in(page, inbox, inbox.owner)
        await page.goto(f"{base}/inbox/broadcasts")
        await page.click("#bc-new")
        # Refused in the page first: nothing stored.
        await page.fill("#bc-title", "Holiday hours")
        await page.click("#bc-send")
        await page.locator("#bc-form-error", has_text="Write the text.").wait_for()
        await page.fill("#bc-text", "{name}, we are closed on {day}")
        await page.check("input[name=when][value=later]")
        await page.fill("#bc-at", at)
        assert await page.locator("#bc-send").inner_text() == "Schedule"
        await page.click("#bc-send")
        # The API refuses the unknown placeholder, in words; fixed, the broadcast goes.
        await page.locator("#bc-form-error", has_text="{name} placeholder").wait_for()
        async with inbox.hub.sessions() as session:
            assert (await session.exec(select(func.count()).select_from(Broadcast))).one() == 0
        await page.fill("#bc-text", "{name}, we are closed on Monday")
        await page.click("#bc-send")
        await page.locator('#bc-d-status[data-status="scheduled"]').wait_for()
        assert f"{at[:10]} 10:00" in await page.locator("#bc-d-when").inner_text()

        await page.click("#bc-d-cancel")
        await page.click("#bc-d-cancel-yes")
        await page.locator('#bc-d-status[data-status="cancelled"]').wait_for()
        (stored,) = (await api(http, "GET", f"{base}/api/broadcasts"))["broadcasts"]
        assert stored["status"] == "cancelled"
        assert stored["scheduled_at"].startswith(f"{at}:00")
        assert stored["counts"]["cancelled"] == stored["total"] > 0
        assert await page.locator("#bc-d-cancel").is_hidden()


async def test_a_master_has_no_broadcasts(inbox: Inbox, page: Any) -> None:
    await sign_in(page, inbox, inbox.master)
    await page.locator("#me").filter(has_text="master").wait_for()
    assert await page.locator('nav a[href="/inbox/broadcasts"]').is_hidden()
    await page.goto(f"{inbox.url}/inbox/broadcasts")
    await page.locator("#bc-forbidden").wait_for()
    assert await page.locator("#bc-app").is_hidden()
