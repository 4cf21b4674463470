"""Serving a client's file: the bytes decide what is shown inline, and nothing can run
(hub/web/client_files.py; tests/browser/test_client_files.py opens them in Chromium)."""

from __future__ import annotations

import pytest

from channels.base import FetchedFile
from hub.web.client_files import SANDBOX, file_headers
from tests.support import RunningHub, client_session, login
from tests.test_webchat import add_owner

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "


@pytest.mark.parametrize(
    ("content", "declared", "name", "served_as", "disposition"),
    [
        (PNG, "image/png", "a.png", "image/png", "inline; filename*=UTF-8''a.png"),
        (PNG, "application/x-anything", None, "image/png", "inline; filename*=UTF-8''attachment"),
        (b"\xff\xd8\xff\xe0JFIF", None, None, "image/jpeg", "inline; filename*=UTF-8''attachment"),
        (b"GIF89a\x01\x00", "image/gif", None, "image/gif", "inline; filename*=UTF-8''attachment"),
        (WEBP, "image/webp", "s.webp", "image/webp", "inline; filename*=UTF-8''s.webp"),
        # The sender's word is not taken: these are downloads, whatever they claim to be.
        (b"<svg onload=alert(1)>", "image/svg+xml", None, "application/octet-stream", "attachment"),
        (b"<script>x</script>", "text/html", None, "application/octet-stream", "attachment"),
        (b"<script>x</script>", "image/png", "p.png", "image/png", "attachment"),
        (b"<x/>", "application/xhtml+xml", None, "application/octet-stream", "attachment"),
        (b"<x/>", "text/xml; charset=utf-8", None, "application/octet-stream", "attachment"),
        (b"<x/>", 'text/html"\r\nSet-Cookie: a=b', None, "application/octet-stream", "attachment"),
        (b"%PDF-1.7", "application/pdf", "price.pdf", "application/pdf", "attachment"),
        (b"OggS", "audio/ogg", None, "audio/ogg", "attachment"),
        (b"hello", "text/plain", "n.txt", "text/plain", "attachment"),
        (b"", None, None, "application/octet-stream", "attachment"),
    ],
)
def test_only_real_raster_images_are_inline(
    content: bytes, declared: str | None, name: str | None, served_as: str, disposition: str
) -> None:
    content_type, headers = file_headers(FetchedFile(content, declared, name))
    assert content_type == served_as
    assert headers["Content-Disposition"].startswith(disposition)
    assert headers["Content-Security-Policy"] == SANDBOX == "sandbox; default-src 'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_file_name_cannot_break_out_of_its_header() -> None:
    _, headers = file_headers(FetchedFile(b"x", "text/plain", 'a"; b\r\nSet-Cookie: x=1.txt'))
    disposition = headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and '"' not in disposition
    assert disposition == "attachment; filename*=UTF-8''a%22%3B%20b%0D%0ASet-Cookie%3A%20x%3D1.txt"


async def test_every_answer_under_the_files_path_is_sandboxed(hub: RunningHub) -> None:
    """Refusals too: a 401, a 404 never render as a page of the hub's origin."""
    email, password = await add_owner(hub)
    url = f"{hub.base_url}/api/attachments/telegram/main/AgAC"
    async with client_session() as http:
        answers = []
        async with http.get(url) as response:
            answers.append(response)
        assert await login(http, hub.base_url, email, password) == 200
        for path in ("telegram/main/AgAC", "webchat/site/nope"):
            async with http.get(f"{hub.base_url}/api/attachments/{path}") as response:
                answers.append(response)
    assert [r.status for r in answers] == [401, 404, 404]
    for response in answers:
        assert response.headers["Content-Security-Policy"] == SANDBOX
        assert response.headers["X-Content-Type-Options"] == "nosniff"
