"""Staff sessions: an opaque token in an HttpOnly cookie, its hash kept in Redis with a TTL."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.asyncio import Redis

COOKIE = "hub_session"
STAFF_KEY = web.RequestKey("staff_id", int)


def _key(token: str) -> str:
    return "hub:session:" + hashlib.sha256(token.encode()).hexdigest()


async def open_session(redis: Redis, staff_id: int, ttl_seconds: int) -> str:
    token = secrets.token_urlsafe(32)
    await redis.set(_key(token), str(staff_id), ex=ttl_seconds)
    return token


async def session_staff(redis: Redis, token: str | None) -> int | None:
    if not token or len(token) > 100:
        return None
    value = await redis.get(_key(token))
    return int(value) if value else None


async def close_session(redis: Redis, token: str | None) -> None:
    if token:
        await redis.delete(_key(token))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_API = frozenset({"/api/auth/login"})


def require_staff(redis_of: Callable[[web.Request], Redis]) -> Callable:
    """Middleware: every /api/ route but login needs a live staff session (else 401)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.path in PUBLIC_API:
            return await handler(request)
        staff_id = await session_staff(redis_of(request), request.cookies.get(COOKIE))
        if staff_id is None:
            return web.json_response({"error": "not signed in"}, status=401)
        request[STAFF_KEY] = staff_id
        return await handler(request)

    return middleware
