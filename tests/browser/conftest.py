"""The inbox in a real headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`: Playwright's own browser downloads are never used).

Fixtures: `inbox` — a running hub with the demo salon, an owner and a master who can sign in;
`browser` — Chromium; `page` — a fresh browser context and page for one test. Helpers:
`sign_in(page, inbox, who)`, `shot(page, name)` (a screenshot into docs/screenshots/).
Without a Chromium on the machine these tests are skipped with the reason; CI installs one and
sets HUB_TEST_REQUIRE_CHROMIUM, so there a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from crm_store.db import transaction
from crm_store.demo import load_demo_salon
from crm_store.models import Staff
from crm_store.staff import add_staff, hash_password
from hub.config import Settings
from tests.support import RunningHub, start_hub

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None
)
OWNER = ("owner@salon.test", "owner-pass-1")
MASTER = ("olena@demo.salon", "olena-pass-1")  # Олена Коваль of the demo salon
OTHER_MASTER = ("iryna@demo.salon", "iryna-pass-1")

if CHROMIUM is None and os.environ.get("HUB_TEST_REQUIRE_CHROMIUM"):
    raise RuntimeError("the browser tests need Chromium (HUB_TEST_REQUIRE_CHROMIUM is set)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


@dataclass
class Inbox:
    running: RunningHub
    owner: tuple[str, str]
    master: tuple[str, str]
    other_master: tuple[str, str]

    @property
    def url(self) -> str:
        return self.running.base_url

    @property
    def hub(self) -> Any:
        return self.running.hub


@pytest.fixture
async def inbox(settings: Settings, redis: Any) -> AsyncIterator[Inbox]:
    del redis
    running = await start_hub(settings)
    try:
        async with transaction(running.hub.sessions) as session:
            await load_demo_salon(
                session,
                now=datetime.now(UTC),
                timezone=settings.hub_timezone,
                currency=settings.hub_currency,
            )
            await add_staff(session, email=OWNER[0], password=OWNER[1], role="owner", name="Owner")
            for email, password in (MASTER, OTHER_MASTER):
                staff = (await session.exec(select(Staff).where(Staff.email == email))).one()
                staff.password_hash = hash_password(password)
                session.add(staff)
        yield Inbox(running, OWNER, MASTER, OTHER_MASTER)
    finally:
        await running.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Root in CI containers has no user namespaces for Chromium's sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    context.set_default_timeout(10_000)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


async def sign_in(page: Any, inbox: Inbox, who: tuple[str, str], lang: str = "en") -> None:
    """Through the login page, as a person would; ends on the inbox."""
    await page.goto(f"{inbox.url}/inbox/login?lang={lang}")
    await page.fill("input[name=email]", who[0])
    await page.fill("input[name=password]", who[1])
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{inbox.url}/inbox")


async def shot(page: Any, name: str) -> Path:
    """A screenshot for the README (docs/screenshots/<name>.png), refreshed by each run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    return path
