"""The inbox's defences, tried from a real Chromium: a master can't read another master's
conversation (page or API), a change without the CSRF token is refused, a form posted from
another site changes nothing, and repeated wrong passwords end in "too many attempts"."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func
from sqlmodel import col, select

from crm_store.models import Appointment, AuditEntry, Client, Conversation, Staff
from hub.messages import ContactHints, InboundMessage
from tests.browser.conftest import Inbox, sign_in
from tests.support import client_session, eventually, login

# fetch() from the signed-in page's own context: the page's cookies, optionally its CSRF token.
FETCH = """async ([method, path, body, withToken]) => {
  const headers = {"Content-Type": "application/json"};
  if (withToken) {
    const cookie = document.cookie.split("; ").find((c) => c.startsWith("hub_csrf="));
    headers["X-CSRF-Token"] = decodeURIComponent(cookie.slice("hub_csrf=".length));
  }
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === null ? undefined : JSON.stringify(body),
  });
  return [response.status, await response.text()];
}"""


async def staff_id(inbox: Inbox, email: str) -> int:
    async with inbox.hub.sessions() as session:
        return (await session.exec(select(Staff.id).where(Staff.email == email))).one()


async def new_conversation(inbox: Inbox, text: str) -> int:
    """A client writes in on Telegram; the router opens a conversation."""
    chat = f"sec-{secrets.token_hex(4)}"
    await inbox.hub.bus.publish_inbound(
        InboundMessage(
            channel="telegram",
            inbox="main",
            chat_id=chat,
            sender_id=chat,
            provider_message_id=f"{chat}-1",
            text=text,
            contact=ContactHints(display_name=f"Client {chat}"),
        )
    )

    async def opened() -> int | None:
        async with inbox.hub.sessions() as session:
            query = select(Conversation.id).where(Conversation.chat_id == chat)
            return (await session.exec(query)).first()

    return await eventually(opened)


async def assign(http: aiohttp.ClientSession, inbox: Inbox, conversation: int, to: int) -> None:
    async with http.post(
        f"{inbox.url}/api/conversations/{conversation}/assign", json={"staff_id": to}
    ) as response:
        assert response.status == 200, await response.text()
    async with inbox.hub.sessions() as session:
        assert (await session.get(Conversation, conversation)).assignee_id == to


async def test_a_master_cannot_open_another_masters_conversation(inbox: Inbox, page: Any) -> None:
    me = await staff_id(inbox, inbox.master[0])
    other = await staff_id(inbox, inbox.other_master[0])
    theirs = await new_conversation(inbox, "a private question for the other master")
    mine = await new_conversation(inbox, "a question for me")
    async with client_session() as http:
        assert await login(http, inbox.url, *inbox.owner) == 200
        await assign(http, inbox, theirs, other)
        await assign(http, inbox, mine, me)

    await sign_in(page, inbox, inbox.master)
    fetch = "/api/conversations/{}/messages"
    status, body = await page.evaluate(FETCH, ["GET", fetch.format(theirs), None, False])
    assert (status, "private question" in body) == (403, False)
    # Their own conversation opens: the 403 above is about whose it is.
    status, body = await page.evaluate(FETCH, ["GET", fetch.format(mine), None, False])
    assert (status, "a question for me" in body) == (200, True)
    for path in (f"/api/clients/{await client_of(inbox, theirs)}/timeline",):
        status, body = await page.evaluate(FETCH, ["GET", path, None, False])
        assert (status, "private question" in body) == (403, False)

    # The page: a link to that conversation says "no access" and shows none of its messages.
    await page.goto(f"{inbox.url}/inbox?c={theirs}")
    refusal = page.locator("#inbox-error")
    await refusal.wait_for()
    assert await refusal.inner_text() in ("This conversation isn't yours.", "No access.")
    assert "private question" not in await page.locator("body").inner_text()
    assert await page.locator("#timeline li").count() == 0
    # ... nor is it in the master's list, where their own one is.
    await page.goto(f"{inbox.url}/inbox")
    await page.locator(f'[data-id="{mine}"]').first.wait_for()
    assert await page.locator(f'#conversations [data-id="{theirs}"]').count() == 0


async def client_of(inbox: Inbox, conversation: int) -> int:
    async with inbox.hub.sessions() as session:
        return (await session.get(Conversation, conversation)).client_id


async def notes_of(inbox: Inbox, client_id: int) -> str:
    async with inbox.hub.sessions() as session:
        return (await session.get(Client, client_id)).notes


async def count(inbox: Inbox, model: Any) -> int:
    async with inbox.hub.sessions() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


async def test_a_change_without_the_csrf_token_is_refused(inbox: Inbox, page: Any) -> None:
    async with inbox.hub.sessions() as session:
        client = (await session.exec(select(Client).order_by(col(Client.id)).limit(1))).one()
    before = await notes_of(inbox, client.id)
    appointments = await count(inbox, Appointment)
    audit = await count(inbox, AuditEntry)
    await sign_in(page, inbox, inbox.owner)

    path = f"/api/clients/{client.id}"
    status, body = await page.evaluate(FETCH, ["PATCH", path, {"notes": "forged"}, False])
    assert (status, "CSRF" in body) == (403, True)
    status, _ = await page.evaluate(
        FETCH, ["POST", f"{path}/notes", {"text": "a forged private note"}, False]
    )
    assert status == 403
    status, _ = await page.evaluate(FETCH, ["POST", "/api/auth/logout", None, False])
    assert status == 403
    # Nothing changed: the card, the audit log, and the session is still alive.
    assert await notes_of(inbox, client.id) == before
    assert (await count(inbox, Appointment), await count(inbox, AuditEntry)) == (
        appointments,
        audit,
    )
    status, _ = await page.evaluate(FETCH, ["GET", "/api/me", None, False])
    assert status == 200

    # The same request with the page's token goes through.
    status, body = await page.evaluate(FETCH, ["PATCH", path, {"notes": "real notes"}, True])
    assert status == 200, body
    assert await notes_of(inbox, client.id) == "real notes"
    assert await count(inbox, AuditEntry) == audit + 1


@pytest.fixture
async def attacker() -> AsyncIterator[str]:
    """Another origin serving pages that auto-submit forms to the hub (/?to=URL&kind=...)."""

    async def page(request: web.Request) -> web.Response:
        target = request.query["to"]
        # text/plain lets a form send a body that looks like JSON: the classic trick.
        html = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}" enctype="text/plain">
<input type="hidden" name='{{"text": "forged", "notes": "forged", "x": "' value='"}}'>
</form><script>document.getElementById("f").submit();</script></body></html>"""
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_form_posted_from_another_site_changes_nothing(
    inbox: Inbox, page: Any, attacker: str
) -> None:
    async with inbox.hub.sessions() as session:
        client = (await session.exec(select(Client).order_by(col(Client.id)).limit(1))).one()
    before = await notes_of(inbox, client.id)
    audit = await count(inbox, AuditEntry)
    await sign_in(page, inbox, inbox.owner)

    targets = [f"/api/clients/{client.id}/notes", "/api/auth/logout", "/api/appointments"]
    # From another site (localhost is not 127.0.0.1): the SameSite=Strict cookie stays home,
    # so the hub sees no session (401). From a sibling origin on the same host (another port,
    # same site) the cookie goes along, and the missing CSRF token stops it (403).
    port = attacker.split(":")[1]
    for origin, refused in ((f"http://localhost:{port}", 401), (f"http://{attacker}", 403)):
        for target in targets:
            url = f"{origin}/?to={inbox.url}{target}"
            hub_url = f"{inbox.url}{target}"
            async with page.expect_response(lambda r, u=hub_url: r.url == u) as answer:
                await page.goto(url)
            response = await answer.value
            assert (origin, target, response.status) == (origin, target, refused)

    assert await notes_of(inbox, client.id) == before
    assert await count(inbox, AuditEntry) == audit
    # Still signed in (the forged logout did nothing): the calendar opens, not the login page.
    await page.goto(f"{inbox.url}/inbox/calendar")
    await page.locator("#me").filter(has_text="owner").wait_for()
    assert "/inbox/login" not in page.url


async def test_repeated_wrong_passwords_end_in_too_many_attempts(inbox: Inbox, page: Any) -> None:
    await page.goto(f"{inbox.url}/inbox/login?lang=en")
    error = page.locator("#login-error")
    statuses = []
    for attempt in range(6):
        await page.fill("input[name=email]", inbox.owner[0])
        await page.fill("input[name=password]", f"wrong-{attempt}")
        async with page.expect_response("**/api/auth/login") as answer:
            await page.click("button[type=submit]")
        statuses.append((await answer.value).status)
        await error.wait_for(state="visible")
    assert statuses == [401] * 5 + [429]
    await error.filter(has_text="Too many attempts. Please try again later.").wait_for()

    # Now even the right password waits: the limit is not just about wrong ones.
    await page.fill("input[name=password]", inbox.owner[1])
    async with page.expect_response("**/api/auth/login") as answer:
        await page.click("button[type=submit]")
    assert (await answer.value).status == 429
    assert "/inbox/login" in page.url
    assert await error.inner_text() == "Too many attempts. Please try again later."
    async with client_session() as http:
        assert await login(http, inbox.url, *inbox.owner) == 429
