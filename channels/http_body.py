"""Reading webhook and download bodies without letting a large one fill the memory."""

from __future__ import annotations

import aiohttp
from aiohttp import web


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is over `limit`: declared, or counted (a chunked body has no
    Content-Length)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await read_stream(request.content, limit + 1)
    return None if len(body) > limit else body


async def read_stream(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of a stream (fewer at its end); the rest is left unread."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]
