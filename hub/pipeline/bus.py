"""Redis streams: the message bus between channels, the router, the bots and the dispatcher.

Delivery is at-least-once: an entry is acknowledged only after its handler returned (after
the database commit). The database's unique keys make a redelivery change nothing.

Key names are hash-tagged so a stream and its lease share a Redis Cluster slot:
  hub:in:{N}          inbound shard N (consumer group "router")
  hub:in:{N}:lease    which router owns shard N
  hub:out:{channel}   outbound messages for a channel (consumer group "dispatch")
  hub:events          events for bots, live inboxes and analytics
  hub:dead            dead letters: the original entry, its stream, the error
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.messages import InboundMessage, OutboundMessage
from hub.pipeline.group_commit import GroupCommit

log = logging.getLogger(__name__)

DEAD_STREAM = "hub:dead"
# The `stream` of a dead letter that is a provider's message a channel set aside.
SET_ASIDE_PREFIX = "set-aside:"
EVENTS_STREAM = "hub:events"
ERRORS_HASH = "hub:errors"
EVENTS_MAXLEN = 50_000
# How long a publisher keeps trying Redis (a restart takes a second or two) before it gives
# up, so a webhook can still answer the provider "try again later" in time.
PUBLISH_DEADLINE_S = 5.0
PUBLISH_BACKOFF_CAP_S = 1.0


def inbound_stream(shard: int) -> str:
    return f"hub:in:{{{shard}}}"


def outbound_stream(channel: str) -> str:
    return f"hub:out:{{{channel}}}"


def shard_of(key: str, shards: int) -> int:
    # A stable hash (not Python's salted hash()): every process must agree on the shard.
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    fields: dict[str, str]
    deliveries: int = 1

    @property
    def data(self) -> str:
        try:
            return self.fields["data"]
        except KeyError:
            raise PermanentError("the entry has no 'data' field") from None


class PermanentError(Exception):
    """The entry can never succeed as it is: it goes to the dead-letter stream at once."""


class BusUnavailable(RedisConnectionError):
    """Redis did not take an entry within the publish deadline: nothing was promised, so
    the caller must say "try again later" (a webhook: 503, and the provider retries)."""


def parse_entries(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str] | None]]]]:
    """XREAD/XREADGROUP reply as [(stream, [(id, fields)])], whatever the protocol version."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, Mapping) else reply
    out = []
    for stream, entries in items:
        if isinstance(entries, Mapping):
            entries = entries.items()
        out.append((stream, [(eid, fields) for eid, fields in entries]))
    return out


class Bus:
    """Publishing side plus the dead-letter operations; consuming lives in hub.pipeline.consumer."""

    def __init__(
        self,
        redis: Redis,
        *,
        shards: int,
        maxlen: int,
        publish_deadline_s: float = PUBLISH_DEADLINE_S,
    ) -> None:
        self.redis = redis
        self.shards = shards
        self.maxlen = maxlen
        self.publish_deadline_s = publish_deadline_s
        # Concurrent publishers share a pipeline (hub/pipeline/group_commit.py), each awaiting
        # its entry.
        self.group_commit = GroupCommit(redis)

    def inbound_streams(self) -> list[str]:
        return [inbound_stream(n) for n in range(self.shards)]

    def shard_for(self, msg: InboundMessage) -> int:
        return shard_of(msg.shard_key(), self.shards)

    async def publish_inbound(self, msg: InboundMessage) -> str:
        return await self._add(inbound_stream(self.shard_for(msg)), msg.to_json())

    async def publish_inbound_many(self, msgs: Iterable[InboundMessage]) -> list[str]:
        # One round trip for many entries: single XADDs top out at a few thousand a second.
        async with self.redis.pipeline(transaction=False) as pipe:
            for msg in msgs:
                pipe.xadd(
                    inbound_stream(self.shard_for(msg)),
                    {"data": msg.to_json()},
                    maxlen=self.maxlen,
                    approximate=True,
                )
            return [str(x) for x in await pipe.execute()]

    async def publish_outbound(self, msg: OutboundMessage) -> str:
        return await self._add(outbound_stream(msg.channel), msg.to_json())

    async def publish_event(self, kind: str, **payload: Any) -> str:
        body = json.dumps({"type": kind, **payload}, default=str, ensure_ascii=False)
        return await self._xadd(EVENTS_STREAM, body, EVENTS_MAXLEN)

    async def _add(self, stream: str, data: str) -> str:
        # Approximate MAXLEN can cut entries still pending; the default cap (100k per
        # stream) is far above any backlog a live consumer group leaves.
        return await self._xadd(stream, data, self.maxlen)

    async def _xadd(self, stream: str, data: str, maxlen: int) -> str:
        """XADD, tried again with capped backoff while Redis is out of reach (restarting),
        for at most `publish_deadline_s`; then BusUnavailable. A retry after a lost reply
        may add the entry twice: the store's unique keys make the copy a no-op."""
        deadline = time.monotonic() + self.publish_deadline_s
        failures = 0
        while True:
            try:
                return await self.group_commit.xadd(stream, data, maxlen)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failures += 1
                delay = min(PUBLISH_BACKOFF_CAP_S, 0.05 * 2 ** min(failures, 16))
                if time.monotonic() + delay > deadline:
                    raise BusUnavailable(
                        f"Redis did not take an entry on {stream} in "
                        f"{self.publish_deadline_s:.0f}s: {exc}"
                    ) from exc
                if failures == 1:
                    log.warning("publishing to %s failed (%s); retrying", stream, exc)
                await asyncio.sleep(delay)

    # Dead letters --------------------------------------------------------------------

    async def dead_letter(self, entry: Entry, error: str) -> str:
        """Move an entry to hub:dead, then ack it. Not one transaction (the keys may live in
        different cluster slots): a crash in between leaves a duplicate dead letter, which a
        replay turns into a no-op thanks to the store's unique keys."""
        dead_id = await self.redis.xadd(
            DEAD_STREAM,
            {
                "stream": entry.stream,
                "entry_id": entry.id,
                "error": error[:4000],
                "deliveries": str(entry.deliveries),
                "failed_at": str(int(time.time() * 1000)),
                "fields": json.dumps(entry.fields, ensure_ascii=False),
            },
            maxlen=self.maxlen,
            approximate=True,
        )
        log.warning(
            "dead letter %s: %s entry %s after %d deliveries: %s",
            dead_id,
            entry.stream,
            entry.id,
            entry.deliveries,
            error[:300],
        )
        return dead_id

    async def set_aside(self, source: str, error: str, details: dict[str, Any]) -> str:
        """A provider's message a channel could not take, on hub:dead beside failed entries
        (channels.base.ChannelContext.set_aside). Its `stream` says where it comes from; it
        is not a stream entry, so it is never replayed."""
        dead_id = await self.redis.xadd(
            DEAD_STREAM,
            {
                "stream": SET_ASIDE_PREFIX + source,
                "entry_id": "",
                "error": error[:4000],
                "deliveries": "0",
                "failed_at": str(int(time.time() * 1000)),
                "fields": json.dumps(details, ensure_ascii=False, default=str),
            },
            maxlen=self.maxlen,
            approximate=True,
        )
        log.warning("dead letter %s: %s set a message aside: %s", dead_id, source, error[:300])
        return dead_id

    async def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        rows = await self.redis.xrange(DEAD_STREAM, count=count)
        return [_dead_row(dead_id, fields) for dead_id, fields in rows]

    async def dead_count(self) -> int:
        return int(await self.redis.xlen(DEAD_STREAM))

    async def replay(self, dead_id: str, data: str | None = None) -> str:
        """Put a dead letter back on its stream (optionally with fixed data) and drop it."""
        rows = await self.redis.xrange(DEAD_STREAM, min=dead_id, max=dead_id)
        if not rows:
            raise KeyError(f"no dead letter {dead_id}")
        row = _dead_row(*rows[0])
        if row["stream"].startswith(SET_ASIDE_PREFIX):
            raise NotReplayable(
                f"dead letter {dead_id} is a message {row['stream'][len(SET_ASIDE_PREFIX) :]} "
                "set aside; it stays with the provider and can't be replayed"
            )
        fields = dict(row["fields"])
        if data is not None:
            fields["data"] = data
        if not fields:
            raise PermanentError(f"dead letter {dead_id} has no fields to replay")
        new_id = await self.redis.xadd(row["stream"], fields, maxlen=self.maxlen, approximate=True)
        await self.redis.xdel(DEAD_STREAM, dead_id)
        return new_id

    async def replay_all(self) -> list[str]:
        """Every dead letter there is now that can be replayed (messages channels set aside
        stay). One that fails again and comes back as a new dead letter is not taken again."""
        replayed: list[str] = []
        newest = await self.redis.xrevrange(DEAD_STREAM, count=1)
        if not newest:
            return replayed
        after, last = "-", newest[0][0]
        while rows := await self.redis.xrange(DEAD_STREAM, min=after, max=last, count=100):
            for dead_id, _ in rows:
                try:
                    replayed.append(await self.replay(dead_id))
                except NotReplayable:
                    pass
            after = f"({rows[-1][0]}"
        return replayed

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class NotReplayable(PermanentError):
    """A dead letter that is not a stream entry (a message a channel set aside)."""


def _dead_row(dead_id: str, fields: dict[str, str]) -> dict[str, Any]:
    try:
        original = json.loads(fields.get("fields", "{}"))
    except json.JSONDecodeError:
        original = {}
    return {
        "id": dead_id,
        "stream": fields.get("stream", ""),
        "entry_id": fields.get("entry_id", ""),
        "error": fields.get("error", ""),
        "deliveries": int(fields.get("deliveries", "0") or 0),
        "failed_at": int(fields.get("failed_at", "0") or 0),
        "fields": original,
    }
