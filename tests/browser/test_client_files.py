"""A client's files in Chromium: an SVG or HTML part with a script, shown in the inbox and opened
by a staff member, runs nothing; a real photo still shows inline (hub/web/client_files.py)."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from playwright.async_api import Error as PlaywrightError

from channels.base import AttachmentUnavailable, Channel, FetchedFile
from hub.messages import Attachment, DeliveryState, DeliveryStatus, OutboundMessage
from tests.browser.conftest import Inbox, sign_in
from tests.browser.test_inbox_page import conversation_of, inbound

SCRIPT = "<script>alert(document.cookie)</script>"
# A 1×1 PNG: what a phone's photo is, as far as a browser cares.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
FILES = {
    # No file name, as in an email part: the probe's two ways in.
    "svg": FetchedFile(
        f'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">{SCRIPT}</svg>'.encode(),
        "image/svg+xml",
    ),
    "html": FetchedFile(
        f"<html><body>{SCRIPT}<img src=x onerror=alert(2)></body></html>".encode(), "text/html"
    ),
    # Declared a photo, but HTML bytes: the bytes decide.
    "fake-png": FetchedFile(f"<html>{SCRIPT}</html>".encode(), "image/png", "photo.png"),
    "photo": FetchedFile(PNG, "image/png", "photo.png"),
}


class FileChannel(Channel):
    """A mailbox whose attachments are the files above."""

    name = "email"

    async def fetch_attachment(self, inbox: str, ref: str) -> FetchedFile:
        if ref not in FILES:
            raise AttachmentUnavailable("no such file")
        return FILES[ref]

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        return DeliveryStatus(outbound_id=msg.id, status=DeliveryState.sent)


async def test_a_clients_file_never_runs_in_the_inbox(inbox: Inbox, page: Any) -> None:
    inbox.hub.channels["email"] = FileChannel(inbox.hub.ctx, "main")
    attachments = [
        Attachment(kind="image" if ref != "html" else "file", ref=ref, mime_type=f.mime_type)
        for ref, f in FILES.items()
    ]
    await inbox.hub.bus.publish_inbound(
        inbound("email", "mallory@example.com", 1, "my photos", attachments,
                display_name="Mallory", email="mallory@example.com")
    )  # fmt: skip
    conversation = (await conversation_of(inbox, "email", "mallory@example.com")).id
    dialogs: list[str] = []

    async def ran(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", ran)

    await sign_in(page, inbox, inbox.owner)
    await page.goto(f"{inbox.url}/inbox?c={conversation}")
    thumbnails = page.locator("#timeline .files a")
    await thumbnails.first.wait_for()
    assert await thumbnails.count() == len(FILES)
    # The photo is drawn; the others' thumbnails are broken images at worst.
    photo = page.locator('#timeline img[src$="/photo"]')
    await photo.wait_for()
    assert await photo.evaluate("img => img.complete && img.naturalWidth") == 1

    # Every file opened as staff would (a thumbnail opens a new tab, a file downloads), and
    # straight by its address.
    for ref in FILES:
        link = page.locator(f'#timeline .files a[href$="/{ref}"]')
        if await link.get_attribute("target") == "_blank":
            async with page.context.expect_page() as opened:
                await link.click()
            tab = await opened.value
            tab.on("dialog", ran)
            with contextlib.suppress(PlaywrightError):  # a download closes its tab
                await tab.wait_for_load_state()
                await tab.close()
        else:
            async with page.expect_download():
                await link.click()
        other = await page.context.new_page()
        other.on("dialog", ran)
        try:
            response = await other.goto(f"{inbox.url}/api/attachments/email/main/{ref}")
        except PlaywrightError as exc:  # a download is not a page: Chromium says so
            assert dialogs == [], f"a script in {ref!r} ran"
            assert "Download is starting" in str(exc), exc
            assert ref != "photo"
        else:
            assert ref == "photo" and response is not None
            assert response.headers["content-type"] == "image/png"
        await other.close()
    assert dialogs == []
