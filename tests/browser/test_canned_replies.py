"""Canned replies managed from the inbox page: the owner adds, edits and deletes them in the
dialog, the reply box's picker offers the new list without a reload, and the API agrees after
each step; a master sees no manage button and the API refuses them."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Inbox, shot, sign_in
from tests.browser.test_inbox_page import api, conversation_of, inbound, live
from tests.support import client_session, login


async def add_canned(inbox: Inbox, body: dict[str, Any]) -> dict[str, Any]:
    """Through the API as the owner, outside the page."""
    async with client_session() as owner:
        assert await login(owner, inbox.url, *inbox.owner) == 200
        async with owner.post(f"{inbox.url}/api/canned", json=body) as response:
            assert response.status == 201
            return await response.json()


def titles(canned: list[dict[str, Any]]) -> list[str]:
    return [c["title"] for c in canned]


async def test_owner_adds_edits_uses_and_deletes_canned_replies(inbox: Inbox, page: Any) -> None:
    await add_canned(inbox, {"title": "Old prices", "text": "Prices as of last year."})
    await add_canned(inbox, {"title": "Address", "text": "We're at 5 Khreshchatyk St."})
    await inbox.hub.bus.publish_inbound(
        inbound("telegram", "701", 1, "Do you have time on Friday?", display_name="Oksana")
    )
    conversation = await conversation_of(inbox, "telegram", "701")

    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{inbox.url}/inbox?c={conversation.id}")
    await live(page)
    await page.locator("#timeline li.msg", has_text="time on Friday").wait_for()
    picker = page.locator("#canned option")
    await expect(picker).to_have_text(["Canned replies", "Address", "Old prices"])

    # The dialog lists what the API holds.
    await page.click("#canned-manage")
    dialog = page.locator("#canned-dialog")
    await expect(dialog).to_be_visible()
    items = dialog.locator("li.canned-item")
    await expect(items.locator(".canned-name")).to_have_text(["Address", "Old prices"])
    await expect(items.first.locator(".canned-text")).to_have_text("We're at 5 Khreshchatyk St.")

    # Add one.
    form = dialog.locator("#canned-form")
    await form.locator("input[name=title]").fill("Friday slot")
    await form.locator("textarea[name=text]").fill("Friday at 15:00 is free — shall I book it?")
    await form.locator("select[name=language]").select_option("en")
    await form.locator("#canned-save").click()
    added = items.filter(has_text="Friday slot")
    await added.wait_for()
    await expect(added.locator(".canned-lang")).to_have_text("en")
    listed = await api(page, "GET", "/api/canned")
    assert titles(listed) == ["Address", "Friday slot", "Old prices"]
    friday = next(c for c in listed if c["title"] == "Friday slot")
    assert friday["text"] == "Friday at 15:00 is free — shall I book it?"
    assert friday["language"] == "en"

    # Edit it: new title and text, any language.
    await added.locator(".canned-edit").click()
    await expect(form.locator("input[name=title]")).to_have_value("Friday slot")
    await expect(form.locator("#canned-form-title")).to_have_text("Edit canned reply")
    await form.locator("input[name=title]").fill("Friday 16:00")
    await form.locator("textarea[name=text]").fill("Friday at 16:00 is free — shall I book it?")
    await form.locator("select[name=language]").select_option("")
    await form.locator("#canned-save").click()
    edited = items.filter(has_text="Friday 16:00")
    await edited.wait_for()
    await expect(items.filter(has_text="Friday slot")).to_have_count(0)
    await expect(edited.locator(".canned-lang")).to_have_count(0)
    await expect(form.locator("#canned-form-title")).to_have_text("New canned reply")
    listed = await api(page, "GET", "/api/canned")
    assert titles(listed) == ["Address", "Friday 16:00", "Old prices"]
    changed = next(c for c in listed if c["title"] == "Friday 16:00")
    assert (changed["id"], changed["language"]) == (friday["id"], None)
    assert changed["text"] == "Friday at 16:00 is free — shall I book it?"

    # Delete another, after confirming in its row.
    old = items.filter(has_text="Old prices")
    await old.locator(".canned-delete").click()
    await old.locator(".canned-confirm").wait_for()
    await old.locator(".canned-yes").click()
    await expect(items.locator(".canned-name")).to_have_text(["Address", "Friday 16:00"])
    listed = await api(page, "GET", "/api/canned")
    assert titles(listed) == ["Address", "Friday 16:00"]
    await shot(page, "inbox-canned-replies")

    # Closed, the picker already offers the new list, and it inserts the edited text.
    await page.click("#canned-close")
    await expect(dialog).to_be_hidden()
    await expect(picker).to_have_text(["Canned replies", "Address", "Friday 16:00"])
    await page.fill("#reply-text", "Hello! ")
    await page.locator("#reply-text").press("End")
    await page.select_option("#canned", label="Friday 16:00")
    await expect(page.locator("#reply-text")).to_have_value(
        "Hello! Friday at 16:00 is free — shall I book it?"
    )


async def test_canned_dialog_fits_a_phone(inbox: Inbox, page: Any) -> None:
    await add_canned(inbox, {"title": "Address", "text": "We're at 5 Khreshchatyk St."})
    await page.set_viewport_size({"width": 360, "height": 740})
    await sign_in(page, inbox, inbox.owner)
    await live(page)
    await page.click("#canned-manage")
    dialog = page.locator("#canned-dialog")
    await expect(dialog.locator("li.canned-item")).to_have_count(1)
    box = await dialog.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    save = await dialog.locator("#canned-save").bounding_box()
    assert save is not None and save["x"] + save["width"] <= 360
    await dialog.locator("input[name=title]").fill("Hours")
    await dialog.locator("textarea[name=text]").fill("We're open 9–20 every day.")
    await dialog.locator("#canned-save").click()
    await expect(dialog.locator("li.canned-item")).to_have_count(2)
    assert titles(await api(page, "GET", "/api/canned")) == ["Address", "Hours"]
    await shot(page, "inbox-canned-phone")


async def test_master_has_no_manage_button_and_api_refuses(inbox: Inbox, page: Any) -> None:
    await add_canned(inbox, {"title": "Address", "text": "We're at 5 Khreshchatyk St."})
    await sign_in(page, inbox, inbox.master)
    await live(page)
    await page.locator("body[data-role=master]").wait_for(state="attached")
    await page.locator("#canned-manage").wait_for(state="hidden")
    assert not await page.locator("#canned-manage").is_visible()
    # A master still reads them (for the picker), but can't change them.
    assert titles(await api(page, "GET", "/api/canned")) == ["Address"]
    refused = await page.evaluate(
        """async () => {
            try {
                await Hub.api("POST", "/api/canned", {title: "Mine", text: "Hi"});
                return null;
            } catch (err) {
                return err.status;
            }
        }"""
    )
    assert refused == 403
    assert titles(await api(page, "GET", "/api/canned")) == ["Address"]
