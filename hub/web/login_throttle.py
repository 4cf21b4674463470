"""Slowing down password guessing without letting anyone lock staff out.

Failed sign-ins are counted per account (the email tried) and per client address (as
hub/forwarded.py finds it behind a proxy). Each has a free allowance; past it, every further
attempt must wait, the wait doubling with each failure up to a cap: backoff, never a lock, and
the counts are forgotten a while after the last failure. An attempt is counted before its
password is checked, in one Redis script, so a burst of parallel guesses gets no more tries
than a patient one.

Known devices (OWASP's "device cookie" scheme): a browser where an account signed in before
holds a random token (an HttpOnly cookie, scoped to /api/auth). Its attempts on that account
skip both throttles, so someone guessing the owner's password from elsewhere, or a colleague's
wrong passwords behind the same proxy, never keeps the owner out on their own computer. A known
device has its own allowance of failures; past it, its token stops counting as known.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from typing import TypeGuard

from redis.asyncio import Redis

DEVICE_COOKIE = "hub_device"
DEVICE_COOKIE_PATH = "/api/auth"
DEVICE_TTL_S = 90 * 86400
FORGET_AFTER_S = 15 * 60  # counts end this long after the last failure
BASE_WAIT_S = 1.0
MAX_WAIT_S = 15 * 60
# Failures before waits start: an account gets a few typos; an address more, since a salon's
# whole staff may sign in from one address (and, unconfigured, everyone behind a proxy is one).
FREE_PER_ACCOUNT = 5
FREE_PER_ADDRESS = 20
FREE_PER_DEVICE = 10

# KEYS: per subject, its count key and its gate key. ARGV: the forget window (ms), the base
# and the cap of waits (ms), then each subject's free allowance.
# Returns 0 when the attempt is taken (and counted), else the milliseconds to wait.
_ATTEMPT = """
local wait = 0
local n = #KEYS / 2
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')
  if count >= tonumber(ARGV[3+i]) then
    wait = math.max(wait, redis.call('PTTL', KEYS[2*i]))
  end
end
if wait > 0 then return wait end
for i = 1, n do
  local count = redis.call('INCR', KEYS[2*i-1])
  redis.call('PEXPIRE', KEYS[2*i-1], ARGV[1])
  local over = count - tonumber(ARGV[3+i])
  if over >= 0 then
    local ms = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(over, 40))
    redis.call('SET', KEYS[2*i], '1', 'PX', math.floor(ms))
  end
end
return 0
"""
# A successful attempt takes back its own count from the address, if the count still exists
# (a DECR of a key that expired would leave a negative count that never expires).
_UNCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
"""


@dataclass(frozen=True)
class Attempt:
    """A sign-in attempt let through: what to undo or record once the password is checked."""

    account: str
    address: str
    device: str | None  # the device's digest when it is known for this account


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _account(email: str) -> str:
    return _digest(email.strip().lower())


def _device_accounts(device: str) -> str:
    """The set of accounts that signed in on a device (by the digest of its token)."""
    return f"hub:device:{device}"


def _subject(kind: str, name: str) -> list[str]:
    # One hash tag for every key of the script: a Redis Cluster runs it on one node.
    return [f"hub:{{login}}:{kind}:{name}:count", f"hub:{{login}}:{kind}:{name}:gate"]


class LoginThrottle:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._attempt = redis.register_script(_ATTEMPT)
        self._uncount = redis.register_script(_UNCOUNT)

    async def attempt(self, email: str, address: str, device_token: str | None) -> Attempt | int:
        """Let an attempt through (an `Attempt`), or the whole seconds to wait before one."""
        account = _account(email)
        device = _digest(device_token) if _well_formed(device_token) else None
        if device is not None and not await self._knows(device, account):
            device = None
        if device is not None:
            subjects = [_subject("device", device)]
            free = [FREE_PER_DEVICE]
        else:
            subjects = [_subject("account", account), _subject("address", address)]
            free = [FREE_PER_ACCOUNT, FREE_PER_ADDRESS]
        wait_ms = await self._attempt(
            keys=[key for pair in subjects for key in pair],
            args=[FORGET_AFTER_S * 1000, int(BASE_WAIT_S * 1000), MAX_WAIT_S * 1000, *free],
        )
        if int(wait_ms) > 0:
            return max(1, math.ceil(int(wait_ms) / 1000))
        return Attempt(account, address, device)

    async def _knows(self, device: str, account: str) -> bool:
        return bool(await self.redis.sismember(_device_accounts(device), account))  # type: ignore[misc]

    async def failed(self, attempt: Attempt) -> None:
        """A wrong password: the attempt stays counted. A known device past its allowance is
        known no more (its next attempts are throttled like anyone's)."""
        if attempt.device is None:
            return
        count = await self.redis.get(_subject("device", attempt.device)[0])
        if count is not None and int(count) >= FREE_PER_DEVICE:
            await self.redis.srem(_device_accounts(attempt.device), attempt.account)  # type: ignore[misc]

    async def succeeded(self, attempt: Attempt, device_token: str | None) -> str:
        """The right password: the account's failures are forgotten, this attempt no longer
        counts against the address, and the browser's device token now knows the account.
        Returns the device token to set (the same one, or a new one)."""
        if attempt.device is None:
            await self._uncount(keys=[_subject("address", attempt.address)[0]])
        token = device_token if _well_formed(device_token) else None
        token = token or secrets.token_urlsafe(32)
        key = _device_accounts(_digest(token))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*_subject("account", attempt.account))
            if attempt.device is not None:
                pipe.delete(*_subject("device", attempt.device))
            pipe.sadd(key, attempt.account)
            pipe.expire(key, DEVICE_TTL_S)
            await pipe.execute()
        return token


def _well_formed(token: str | None) -> TypeGuard[str]:
    return token is not None and 20 <= len(token) <= 100
