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


# `next` as an attacker writes it (raw in the query), and where signing in must land.
NEXT = [
    ("/\\evil.example/", "/inbox"),
    ("/%09/evil.example/", "/inbox"),
    ("/%0a/evil.example/", "/inbox"),
    ("//evil.example/", "/inbox"),
    ("%2F%2Fevil.example/", "/inbox"),
    ("\\/evil.example/", "/inbox"),
    ("/%5Cevil.example/", "/inbox"),
    ("https://evil.example/", "/inbox"),
    ("javascript:alert(1)", "/inbox"),
    ("/inbox/calendar?view=week", "/inbox/calendar?view=week"),
]


async def test_after_signing_in_only_a_path_of_this_site_is_followed(
    inbox: Inbox, page: Any
) -> None:
    for raw, landing in NEXT:
        await page.goto(f"{inbox.url}/inbox/login?next={raw}")
        await page.fill("input[name=email]", inbox.owner[0])
        await page.fill("input[name=password]", inbox.owner[1])
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{inbox.url}{landing}")
