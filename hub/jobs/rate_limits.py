"""Per-channel send rates shared by every hub process: token buckets kept in Redis."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or capacity
local at = tonumber(saved[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local got = math.min(want, math.floor(tokens))
tokens = tokens - got
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return got
"""


class RateLimits:
    """Per-channel token buckets in Redis: every hub process draws from the same one."""

    def __init__(self, redis: Redis, rates: Mapping[str, float], *, burst_s: float) -> None:
        self.redis = redis
        self.rates = dict(rates)
        self.burst_s = burst_s
        self.script = redis.register_script(BUCKET_SCRIPT)

    async def take(self, channel: str, want: int) -> int:
        rate = self.rates.get(channel)
        if rate is None:
            return want
        capacity = max(1.0, rate * self.burst_s)
        return int(await self.script(keys=[f"hub:rate:{channel}"], args=[rate, capacity, want]))

    async def give_back(self, channel: str, unused: int) -> None:
        if unused > 0 and channel in self.rates:
            await self.redis.hincrbyfloat(f"hub:rate:{channel}", "tokens", unused)
