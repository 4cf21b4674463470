"""The inbox page in Chromium: a web chat message arrives live, staff take over and reply, the
client's card is edited, two cards are merged, and the phone layout goes list → conversation →
back."""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import expect
from sqlmodel import select

from crm_store.models import Client, Conversation
from hub.messages import Attachment, ContactHints, InboundMessage
from tests.browser.conftest import Inbox, shot, sign_in
from tests.support import client_session, eventually, login, next_frame


def inbound(
    channel: str, chat: str, n: int, text: str, attachments: Any = (), **contact: Any
) -> InboundMessage:
    return InboundMessage(
        channel=channel,
        inbox="main",
        chat_id=chat,
        sender_id=chat,
        provider_message_id=f"{channel}-{chat}-{n}",
        text=text,
        attachments=list(attachments),
        contact=ContactHints(**contact),
    )


async def conversation_of(inbox: Inbox, channel: str, chat: str) -> Conversation:
    async def found() -> Conversation | None:
        async with inbox.hub.sessions() as session:
            query = select(Conversation).where(
                Conversation.channel == channel, Conversation.chat_id == chat
            )
            return (await session.exec(query)).first()

    return await eventually(found)


async def api(page: Any, method: str, path: str, body: Any = None) -> Any:
    """The JSON API as the page calls it (its session, its CSRF token)."""
    return await page.evaluate("([m, p, b]) => Hub.api(m, p, b ?? undefined)", [method, path, body])


async def live(page: Any) -> None:
    """The page has loaded its list and its live stream is open."""
    await page.locator("body[data-live=on]").wait_for(state="attached")
    await page.locator("#list-pane").wait_for()


async def test_live_message_take_over_and_reply(inbox: Inbox, page: Any) -> None:
    async with client_session() as admin:
        assert await login(admin, inbox.url, *inbox.owner) == 200
        canned = {"title": "Offer 15:00", "text": "Yes! 15:00 with Olena — shall I book you?"}
        async with admin.post(f"{inbox.url}/api/canned", json=canned) as response:
            assert response.status == 201
    await sign_in(page, inbox, inbox.owner)
    await live(page)
    assert await page.locator("#conversations li").count() == 0

    # Clients write on three channels; one of them waits for a person.
    hub = inbox.hub
    await hub.bus.publish_inbound(
        inbound("telegram", "501", 1, "Can I move my manicure to Friday?", display_name="Oksana")
    )
    await hub.bus.publish_inbound(
        inbound("viber", "502", 1, "Скільки коштує стрижка?", display_name="Наталія")
    )
    await hub.bus.publish_inbound(
        inbound(
            "email", "iryna@example.com", 1, "Do you do gel removal?", email="iryna@example.com"
        )
    )
    waiting = await conversation_of(inbox, "viber", "502")
    await api(page, "POST", f"/api/conversations/{waiting.id}/assign", {"staff_id": None})

    visitor = client_session()
    try:
        async with visitor.get(f"{inbox.url}/chat?lang=en") as response:
            assert response.status == 200
        ws = await visitor.ws_connect(inbox.running.ws_url("/ws/chat?lang=en"))
        await next_frame(ws, "ready")
        await ws.send_json({"type": "message", "text": "Hi! Is there a free slot today?"})

        # Live, without a reload: the rows appear, the waiting one first with its badge.
        row = page.locator("#conversations li.conv", has_text="Is there a free slot today?")
        await row.wait_for()
        await page.locator("#conversations li.conv").nth(3).wait_for()
        first = page.locator("#conversations li.conv").first
        assert await first.get_attribute("data-status") == "waiting"
        assert "Скільки коштує стрижка?" in await first.inner_text()
        await first.locator(".badge-waiting").filter(has_text="waiting 0 min").wait_for()
        assert await row.locator(".channel-icon").get_attribute("alt") == "Web chat"
        await shot(page, "inbox-list")

        # Filters and search narrow the list; clearing them brings every row back.
        rows = page.locator("#conversations li.conv")
        await page.click(".status-filter .chip-waiting")
        await expect(rows).to_have_count(1)
        assert await rows.first.get_attribute("data-status") == "waiting"
        await page.click(".status-filter .chip-waiting")
        await expect(rows).to_have_count(4)
        await page.select_option("#f-channel", "email")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("iryna@example.com")
        await page.select_option("#f-channel", "")
        await expect(rows).to_have_count(4)
        await page.fill("#q", "gel removal")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("iryna@example.com")
        await page.fill("#q", "")
        await expect(rows).to_have_count(4)

        # Open it, take it over from the bot, reply with Enter.
        await row.locator("button.conv-open").click()
        await page.locator("#timeline li.msg.dir-in", has_text="free slot today").wait_for()
        assert "c=" in page.url
        await page.click("#act-take")
        await page.locator("#thread-status", has_text="Human").wait_for()
        await page.select_option("#canned", label="Offer 15:00")  # the canned reply's text
        assert await page.locator("#reply-text").input_value() == canned["text"]
        await page.press("#reply-text", "Enter")

        pushed = await next_frame(ws)
        while pushed["direction"] == "in":  # the visitor's own message, echoed
            pushed = await next_frame(ws)
        assert pushed["text"] == "Yes! 15:00 with Olena — shall I book you?"
        reply = page.locator("#timeline li.msg.dir-out[data-status=sent]", has_text="book you?")
        await reply.wait_for()
        await reply.locator(".tick-sent").wait_for()
        await expect(reply.locator(".who")).to_have_text("Owner")
        assert await page.locator("#reply-text").input_value() == ""

        conv_id = int(page.url.split("c=")[1])
        listed = await api(page, "GET", "/api/conversations?channel=webchat")
        [conversation] = listed["conversations"]
        assert conversation["id"] == conv_id and conversation["status"] == "human"
        me = await api(page, "GET", "/api/me")
        assert conversation["assignee_id"] == me["id"]

        # A private note: shown apart, stored, never sent to the visitor.
        await page.check("#reply-note")
        await page.fill("#reply-text", "Prefers afternoons; ask about a gel top coat")
        await page.press("#reply-text", "Enter")
        note = page.locator("#timeline li.note", has_text="Prefers afternoons")
        await note.locator(".note-label", has_text="note — never sent").wait_for()
        timeline = await api(page, "GET", f"/api/clients/{conversation['client']['id']}/timeline")
        assert [i["kind"] for i in timeline["items"]] == ["message", "message", "note"]
        await ws.send_json({"type": "message", "text": "Yes please, 15:00 is perfect"})
        await page.locator("#timeline li.msg.dir-in", has_text="15:00 is perfect").wait_for()
        assert await page.locator("#timeline li.msg", has_text="Prefers").count() == 0
        await page.uncheck("#reply-note")
        await shot(page, "inbox-conversation")
        async with asyncio.timeout(10):
            while True:  # nothing but the visitor's own echo reaches the socket
                frame = await next_frame(ws)
                assert "Prefers" not in frame.get("text", "")
                if frame.get("text") == "Yes please, 15:00 is perfect":
                    break
        await ws.close()
    finally:
        await visitor.close()


async def test_card_edit_phone_and_tag(inbox: Inbox, page: Any) -> None:
    # Наталія Савчук of the demo salon writes by SMS from the phone on her card.
    await inbox.hub.bus.publish_inbound(
        inbound("sms", "+380502223344", 1, "Hello, it's Natalia", phone="+380502223344")
    )
    conversation = await conversation_of(inbox, "sms", "+380502223344")
    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{inbox.url}/inbox?c={conversation.id}")
    form = page.locator("#card-form")
    await expect(form.locator("input[name=name]")).to_have_value("Наталія Савчук")
    await page.locator("#identities li[data-channel=sms]").wait_for()

    await form.locator("input[name=phone]").fill("050 999 88 77")
    await page.click("#card-save")
    await page.locator("#card-saved").wait_for()
    await page.fill("#tag-input", "regular")
    await page.press("#tag-input", "Enter")
    await page.locator("#tags li[data-tag=regular]").wait_for()

    card = await api(page, "GET", f"/api/clients/{conversation.client_id}")
    assert card["phone"] == "+380509998877"  # normalised by the API, shown as saved
    assert "regular" in card["tags"]
    await expect(form.locator("input[name=phone]")).to_have_value("+380509998877")

    await page.click("#audit summary")
    trail = page.locator("#audit-list")
    await trail.locator("li.change[data-field=phone]", has_text="+380509998877").wait_for()
    await trail.locator("li.change[data-field=tags]", has_text="regular").wait_for()
    assert "+380502223344 → +380509998877" in await trail.inner_text()

    # Removing the tag again goes through the same way.
    await page.click("#tags li[data-tag=regular] button.remove")
    await page.locator("#tags li[data-tag=regular]").wait_for(state="detached")
    card = await api(page, "GET", f"/api/clients/{conversation.client_id}")
    assert "regular" not in card["tags"]


async def test_merge_two_cards(inbox: Inbox, page: Any) -> None:
    hub = inbox.hub
    # Тетяна Гончаренко of the demo salon writes by SMS; "Tanya G" writes on Telegram: two cards.
    await hub.bus.publish_inbound(
        inbound("sms", "+380633334455", 1, "Чи є час у п'ятницю?", phone="+380633334455")
    )
    files = [
        Attachment(kind="image", url="/inbox/static/icons/telegram.svg", name="nails.svg"),
        Attachment(kind="file", url="/inbox/static/inbox.css", name="price-list.pdf"),
    ]
    await hub.bus.publish_inbound(
        inbound(
            "telegram", "777", 1, "It's Tanya again, from Telegram", files, display_name="Tanya G"
        )
    )
    by_sms = await conversation_of(inbox, "sms", "+380633334455")
    by_telegram = await conversation_of(inbox, "telegram", "777")
    assert by_sms.client_id != by_telegram.client_id

    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{inbox.url}/inbox?c={by_telegram.id}")
    from_telegram = page.locator("#timeline li.msg", has_text="from Telegram")
    await from_telegram.wait_for()
    assert await page.locator("#timeline li.msg", has_text="п'ятницю").count() == 0
    # The photo inline, the file as a download link.
    image = from_telegram.locator(".files img[alt='nails.svg']")
    await expect(image).to_have_attribute("src", "/inbox/static/icons/telegram.svg")
    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
    link = from_telegram.locator(".files a.file", has_text="price-list.pdf")
    assert await link.get_attribute("download") == "price-list.pdf"

    await page.fill("#merge-q", "Гончаренко")
    result = page.locator("#merge-results li.merge-result", has_text="Тетяна Гончаренко")
    await result.locator("button").click()
    await page.locator("#merge-question", has_text="Тетяна Гончаренко").wait_for()
    await page.click("#merge-yes")
    await page.locator("#merge-done", has_text="Cards merged.").wait_for()

    # Both histories in one timeline, each message with its channel.
    await page.locator("#timeline li.msg[data-channel=sms]", has_text="п'ятницю").wait_for()
    await page.locator(
        "#timeline li.msg[data-channel=telegram]", has_text="from Telegram"
    ).wait_for()
    await page.locator("#identities li[data-channel=sms]").wait_for()
    card = await api(page, "GET", f"/api/clients/{by_telegram.client_id}")
    assert {i["channel"] for i in card["identities"]} == {"sms", "telegram"}
    assert card["phone"] == "+380633334455"
    async with hub.sessions() as session:
        other = await session.get(Client, by_sms.client_id)
        assert other is not None and other.merged_into_id == by_telegram.client_id


async def test_phone_layout_list_conversation_back(inbox: Inbox, page: Any) -> None:
    await page.set_viewport_size({"width": 375, "height": 740})
    await inbox.hub.bus.publish_inbound(
        inbound("instagram", "901", 1, "Hi! Do you have lash lifting?", display_name="Marta")
    )
    await conversation_of(inbox, "instagram", "901")
    await sign_in(page, inbox, inbox.owner, lang="ru")
    row = page.locator("#conversations li.conv", has_text="lash lifting")
    await row.wait_for()
    assert await page.locator(".status-filter .chip-waiting").inner_text() == "Ждут"
    assert not await page.locator("#thread-pane").is_visible()
    assert not await page.locator("#card-pane").is_visible()

    await row.locator("button.conv-open").click()
    await page.locator("#timeline li.msg", has_text="lash lifting").wait_for()
    assert not await page.locator("#list-pane").is_visible()
    assert await page.locator("#reply-text").is_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375  # nothing sticks out sideways

    await page.click("#show-card")
    await page.locator("#card-form input[name=name]").wait_for()
    assert not await page.locator("#thread-pane").is_visible()
    await page.click("#back-to-thread")
    await page.locator("#thread-pane").wait_for()

    assert await page.locator("#back-to-list").inner_text() == "← Разговоры"
    await page.click("#back-to-list")
    await row.wait_for()
    assert not await page.locator("#thread-pane").is_visible()
    assert "c=" not in page.url


async def test_master_sees_only_their_own(inbox: Inbox, page: Any) -> None:
    hub = inbox.hub
    await hub.bus.publish_inbound(
        inbound("telegram", "601", 1, "For Olena, please", display_name="A")
    )
    await hub.bus.publish_inbound(inbound("telegram", "602", 1, "Someone else's", display_name="B"))
    mine = await conversation_of(inbox, "telegram", "601")
    other = await conversation_of(inbox, "telegram", "602")
    # The owner assigns one of them to Olena from the page.
    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{inbox.url}/inbox?c={mine.id}")
    await page.locator("#timeline li.msg", has_text="For Olena").wait_for()
    staff = await api(page, "GET", "/api/staff")
    olena = next(s for s in staff if s["email"] == inbox.master[0])
    await page.select_option("#act-assign", str(olena["id"]))
    await page.locator("#thread-status", has_text="Human").wait_for()
    listed = await api(page, "GET", f"/api/conversations?assignee={olena['id']}")
    assert [c["id"] for c in listed["conversations"]] == [mine.id]
    await page.click("#logout")
    await page.wait_for_url(f"{inbox.url}/inbox/login")

    await sign_in(page, inbox, inbox.master)
    row = page.locator("#conversations li.conv", has_text="For Olena")
    await row.wait_for()
    assert await page.locator("#conversations li.conv").count() == 1
    await row.locator("button.conv-open").click()
    await page.locator("#timeline li.msg", has_text="For Olena").wait_for()
    await page.locator("#card-form input[name=name]").wait_for()
    assert await page.locator("body").get_attribute("data-role") == "master"
    assert not await page.locator("#act-assign").is_visible()
    assert not await page.locator("#merge").is_visible()

    # Another's conversation by its link: a short message, not a blank page.
    await page.goto(f"{inbox.url}/inbox?c={other.id}")
    await page.locator("#inbox-error", has_text="This conversation isn't yours.").wait_for()
    assert await page.locator("#timeline li").count() == 0
