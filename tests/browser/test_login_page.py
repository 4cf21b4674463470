"""The login page in Chromium: a wrong password is refused, a right one opens the inbox."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Inbox, sign_in


async def test_sign_in_and_out(inbox: Inbox, page: Any) -> None:
    await page.goto(f"{inbox.url}/inbox")
    assert "/inbox/login" in page.url  # no session: the page sends you to sign in
    await page.fill("input[name=email]", inbox.owner[0])
    await page.fill("input[name=password]", "wrong")
    await page.click("button[type=submit]")
    error = page.locator("#login-error")
    await error.wait_for(state="visible")
    assert await error.inner_text() == "Wrong email or password."

    await sign_in(page, inbox, inbox.owner)
    await page.locator("#me").filter(has_text="owner").wait_for()
    await page.click("#logout")
    await page.wait_for_url(f"{inbox.url}/inbox/login")
    await page.goto(f"{inbox.url}/inbox")
    assert "/inbox/login" in page.url
