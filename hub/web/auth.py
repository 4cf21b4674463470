"""Staff sessions and CSRF tokens (sign-in throttling is hub/web/login_throttle.py).

A session is an opaque token in an HttpOnly, SameSite=Strict cookie; Redis keeps its hash with
the staff id and the session's CSRF token, and a set of each staff member's sessions, so that
deactivating someone ends all of them at once. Every request is checked against a live session
*and* an active account (an account switched off in the database is signed out on its next
request, even before its sessions are ended). Every state-changing request of a signed-in staff
member (POST, PUT, PATCH, DELETE) must carry that CSRF token in the `X-CSRF-Token` header
(synchronizer-token pattern): a page reads it from `GET /api/me` or the `hub_csrf` cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.asyncio import Redis

COOKIE = "hub_session"
CSRF_COOKIE = "hub_csrf"
CSRF_HEADER = "X-CSRF-Token"
STAFF_KEY = web.RequestKey("staff_id", int)
CSRF_KEY = web.RequestKey("csrf", str)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class StaffSession:
    staff_id: int
    csrf: str


def _key(token: str) -> str:
    return "hub:session:" + hashlib.sha256(token.encode()).hexdigest()


def _sessions_of(staff_id: int) -> str:
    return f"hub:staff-sessions:{staff_id}"


async def open_session(redis: Redis, staff_id: int, ttl_seconds: int) -> tuple[str, str]:
    """A new session: (the cookie's token, its CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(_key(token), json.dumps({"staff": staff_id, "csrf": csrf}), ex=ttl_seconds)
        # The set lives as long as its newest session; ended sessions' keys in it are harmless.
        pipe.sadd(_sessions_of(staff_id), _key(token))
        pipe.expire(_sessions_of(staff_id), ttl_seconds)
        await pipe.execute()
    return token, csrf


async def end_sessions(redis: Redis, staff_id: int) -> int:
    """End every session of a staff member (deactivated, or their password changed); how many
    were live."""
    keys = list(await redis.smembers(_sessions_of(staff_id)))  # type: ignore[misc]
    if not keys:
        return 0
    ended = int(await redis.delete(*keys))
    await redis.delete(_sessions_of(staff_id))
    return ended


async def session_of(redis: Redis, token: str | None) -> StaffSession | None:
    if not token or len(token) > 100:
        return None
    value = await redis.get(_key(token))
    if not value:
        return None
    try:
        data = json.loads(value)
        return StaffSession(int(data["staff"]), str(data["csrf"]))
    except (ValueError, KeyError, TypeError):
        return None  # a session of an older format: sign in again


async def close_session(redis: Redis, token: str | None) -> None:
    if token:
        await redis.delete(_key(token))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Whether the staff member behind a session may still act (hub/web/roles.py; loaded once a
# request).
ActiveCheck = Callable[[web.Request], Awaitable[bool]]
PUBLIC_API = frozenset({"/api/auth/login"})


def require_staff(redis_of: Callable[[web.Request], Redis], active: ActiveCheck) -> Middleware:
    """Middleware: every /api/ route but login needs a live session of an active staff member
    (else 401), and a state-changing one its CSRF token as well (else 403)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.path in PUBLIC_API:
            return await handler(request)
        session = await session_of(redis_of(request), request.cookies.get(COOKIE))
        if session is None:
            return web.json_response({"error": "not signed in"}, status=401)
        if request.method not in SAFE_METHODS and not csrf_ok(request, session):
            return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
        request[STAFF_KEY] = session.staff_id
        request[CSRF_KEY] = session.csrf
        if not await active(request):
            return web.json_response({"error": "not signed in"}, status=401)
        return await handler(request)

    return middleware


def csrf_ok(request: web.Request, session: StaffSession) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(given.encode(), session.csrf.encode())
