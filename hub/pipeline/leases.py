"""Shard ownership: each inbound shard is read by one router at a time, so a chat's messages
are handled in order, while shards spread over all live routers.

A lease is a Redis key holding the owner's name with a TTL; owners renew it, and a dead
owner's lease simply expires. Routers announce themselves in a sorted set (score = last
heartbeat) so each can take its fair share: ceil(shards / live routers).
"""

from __future__ import annotations

import math
import random
import time

from redis.asyncio import Redis

MEMBERS = "hub:routers"

RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_key(stream: str) -> str:
    return f"{stream}:lease"


class ShardLeases:
    def __init__(self, redis: Redis, owner: str, streams: list[str], lease_ms: int) -> None:
        self.redis = redis
        self.owner = owner
        self.streams = streams
        self.lease_ms = lease_ms
        self.owned: set[str] = set()
        # Set by the consumer: a newly won shard may hold entries a dead owner left pending.
        self.newly_acquired: set[str] = set()
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def renew(self) -> None:
        """Heartbeat: keep what we own. Runs beside the handlers, so a long batch does not
        let a lease lapse while its entries are still being handled."""
        await self.redis.zadd(MEMBERS, {self.owner: int(time.time() * 1000)})
        for stream in list(self.owned):
            if not await self._renew(keys=[lease_key(stream)], args=[self.owner, self.lease_ms]):
                self.owned.discard(stream)

    async def rebalance(self) -> set[str]:
        """Take or give back shards to reach our fair share. Called between batches only,
        so a shard is never handed over while one of its entries is in hand."""
        await self.renew()
        now = int(time.time() * 1000)
        await self.redis.zremrangebyscore(MEMBERS, 0, now - self.lease_ms)
        live = max(1, int(await self.redis.zcard(MEMBERS)))
        target = math.ceil(len(self.streams) / live)

        while len(self.owned) > target:
            stream = max(self.owned)
            await self._release(keys=[lease_key(stream)], args=[self.owner])
            self.owned.discard(stream)

        if len(self.owned) < target:
            free = [s for s in self.streams if s not in self.owned]
            random.shuffle(free)
            for stream in free:
                if len(self.owned) >= target:
                    break
                if await self.redis.set(lease_key(stream), self.owner, nx=True, px=self.lease_ms):
                    self.owned.add(stream)
                    self.newly_acquired.add(stream)
        return set(self.owned)

    async def release_all(self) -> None:
        for stream in list(self.owned):
            await self._release(keys=[lease_key(stream)], args=[self.owner])
        self.owned.clear()
        await self.redis.zrem(MEMBERS, self.owner)
