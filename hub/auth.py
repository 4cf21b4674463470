"""Staff sessions, CSRF tokens and login throttling.

A session is an opaque token in an HttpOnly, SameSite=Strict cookie; Redis keeps its hash with
the staff id and the session's CSRF token. Every state-changing request of a signed-in staff
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
from redis.asyncio import Redis

COOKIE = "hub_session"
CSRF_COOKIE = "hub_csrf"
CSRF_HEADER = "X-CSRF-Token"
STAFF_KEY = web.RequestKey("staff_id", int)
CSRF_KEY = web.RequestKey("csrf", str)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Failed logins: past these counts in the window, more attempts are refused (429) until it
# ends. Per address and per email, so one attacker can't lock out everyone behind one NAT
# quickly, and a spread-out guess at one account is still slowed down.
LOGIN_WINDOW_S = 15 * 60
MAX_FAILS_PER_EMAIL = 5
MAX_FAILS_PER_ADDRESS = 20


@dataclass(frozen=True)
class StaffSession:
    staff_id: int
    csrf: str


def _key(token: str) -> str:
    return "hub:session:" + hashlib.sha256(token.encode()).hexdigest()


async def open_session(redis: Redis, staff_id: int, ttl_seconds: int) -> tuple[str, str]:
    """A new session: (the cookie's token, its CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await redis.set(_key(token), json.dumps({"staff": staff_id, "csrf": csrf}), ex=ttl_seconds)
    return token, csrf


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


def _fail_keys(email: str, address: str) -> tuple[str, str]:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"hub:login-fails:email:{digest}", f"hub:login-fails:addr:{address}"


async def login_blocked(redis: Redis, email: str, address: str) -> int:
    """Seconds until another attempt is allowed (0: go ahead)."""
    by_email, by_address = _fail_keys(email, address)
    fails = await redis.mget(by_email, by_address)
    over = [
        key
        for key, count, limit in zip(
            (by_email, by_address), fails, (MAX_FAILS_PER_EMAIL, MAX_FAILS_PER_ADDRESS), strict=True
        )
        if count is not None and int(count) >= limit
    ]
    if not over:
        return 0
    # A list, not a generator: `await` inside a generator expression makes an async one.
    return max([max(int(await redis.ttl(key)), 1) for key in over])


async def login_failed(redis: Redis, email: str, address: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for key in _fail_keys(email, address):
            # The window starts at the first failure (EXPIRE NX needs Redis 7; this is 6.2).
            pipe.set(key, 0, nx=True, ex=LOGIN_WINDOW_S)
            pipe.incr(key)
        await pipe.execute()


async def login_succeeded(redis: Redis, email: str, address: str) -> None:
    await redis.delete(_fail_keys(email, address)[0])


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_API = frozenset({"/api/auth/login"})


def require_staff(redis_of: Callable[[web.Request], Redis]) -> Callable:
    """Middleware: every /api/ route but login needs a live staff session (else 401), and a
    state-changing one its CSRF token as well (else 403)."""

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
        return await handler(request)

    return middleware


def csrf_ok(request: web.Request, session: StaffSession) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(given.encode(), session.csrf.encode())
