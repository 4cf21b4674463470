"""How a client's file is served to staff, so that nothing a client sends can run in the hub.

Files come from strangers (an email part, an MMS, a Telegram document) and are served from the
hub's own origin, next to the staff member's session: an SVG or an HTML part shown inline would
run its script as that staff member. So:

- only raster images (PNG, JPEG, GIF, WebP), recognised by their bytes and not by the type the
  sender declared, are shown inline, with the type their bytes say;
- everything else is a download (`Content-Disposition: attachment`), with its declared type only
  when that type is a passive one, else `application/octet-stream`;
- every response says `nosniff`, and `Content-Security-Policy: sandbox; default-src 'none'`, so
  even a browser that renders the bytes anyway runs nothing and loads nothing.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from channels.base import FetchedFile

# Magic numbers of the image formats every browser draws in an <img> and none runs code in.
_RASTER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
# Types a browser would render as a document (and so run scripts in) if it ever displayed one.
_ACTIVE = re.compile(r"html|xml|svg|script|multipart|^text/(?!plain$)")
SANDBOX = "sandbox; default-src 'none'"
GENERIC_NAME = "attachment"
FILES_PATH = "/api/attachments/"
# On every answer under FILES_PATH, refusals and errors included.
_ALWAYS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": SANDBOX}


def raster_type(content: bytes) -> str | None:
    """The image type the bytes are, when they are a PNG, JPEG, GIF or WebP; else None."""
    for magic, mime in _RASTER_MAGIC:
        if content.startswith(magic):
            return mime
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def download_type(declared: str | None) -> str:
    """The declared type when it is a well-formed passive one, else application/octet-stream
    (the file is a download either way; a passive type only helps the computer open it)."""
    mime = (declared or "").split(";")[0].strip().lower()
    if not _MIME.match(mime) or _ACTIVE.search(mime):
        return "application/octet-stream"
    return mime


def file_headers(fetched: FetchedFile) -> tuple[str, dict[str, str]]:
    """(Content-Type, other headers) to serve a client's file to staff."""
    headers = {
        **_ALWAYS,
        "Cache-Control": "private, max-age=3600",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    image = raster_type(fetched.content)
    name = fetched.name or GENERIC_NAME
    disposition = "inline" if image else "attachment"
    headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(name, safe='')}"
    return image or download_type(fetched.mime_type), headers


@web.middleware
async def sandbox_files(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer under /api/attachments/ (a 401, a 403, a 404 too) is sandboxed: the
    promise holds for the path, not only for the handler's happy end."""
    if not request.path.startswith(FILES_PATH):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_ALWAYS)
        raise
    response.headers.update(_ALWAYS)
    return response
