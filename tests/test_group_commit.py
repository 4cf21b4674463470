"""hub/pipeline/group_commit.py: callers at the same time share a pipeline, each gets its own entry
or its own error, and nobody is left waiting."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from hub.pipeline.group_commit import GroupCommit


async def test_concurrent_publishers_each_get_their_own_entry(redis: Any) -> None:
    batcher = GroupCommit(redis, max_batch=64)
    streams = [f"batch:{{{n}}}" for n in range(3)]
    payloads = [(streams[n % 3], f"message {n}") for n in range(500)]

    ids = await asyncio.gather(*(batcher.xadd(s, data, 10_000) for s, data in payloads))

    stored: dict[tuple[str, str], str] = {}
    for stream in streams:
        for entry_id, fields in await redis.xrange(stream):
            stored[(stream, entry_id)] = fields["data"]
    # Every publisher's id names its own entry (ids are unique within a stream), written once.
    assert len(stored) == 500
    assert stored == {
        (stream, entry_id): data for entry_id, (stream, data) in zip(ids, payloads, strict=True)
    }
    # Within a stream, entries are in the order they were published.
    for stream in streams:
        datas = [fields["data"] for _, fields in await redis.xrange(stream)]
        assert datas == [data for s, data in payloads if s == stream]


async def test_an_entry_redis_refuses_fails_only_its_publisher(redis: Any) -> None:
    await redis.set("batch:not-a-stream", "x")
    batcher = GroupCommit(redis)

    results = await asyncio.gather(
        batcher.xadd("batch:ok", "first", 1000),
        batcher.xadd("batch:not-a-stream", "refused", 1000),
        batcher.xadd("batch:ok", "second", 1000),
        return_exceptions=True,
    )

    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert [fields["data"] for _, fields in await redis.xrange("batch:ok")] == ["first", "second"]
    assert [entry_id for entry_id, _ in await redis.xrange("batch:ok")] == [
        results[0],
        results[2],
    ]


async def test_a_lost_connection_fails_every_waiting_publisher() -> None:
    # Nothing listens on port 1: each publisher hears the connection error, none hangs.
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    batcher = GroupCommit(dead)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(batcher.xadd("batch:x", str(n), 1000) for n in range(20)),
                return_exceptions=True,
            ),
            30,
        )
    finally:
        await dead.aclose()
    assert all(isinstance(r, RedisConnectionError | OSError) for r in results), results


async def test_a_cancelled_publisher_does_not_stall_the_others(redis: Any) -> None:
    batcher = GroupCommit(redis)
    first = asyncio.create_task(batcher.xadd("batch:c", "cancelled", 1000))
    rest = [asyncio.create_task(batcher.xadd("batch:c", f"kept {n}", 1000)) for n in range(5)]
    first.cancel()
    ids = await asyncio.wait_for(asyncio.gather(*rest), 10)
    with pytest.raises(asyncio.CancelledError):
        await first
    kept = {entry_id: fields["data"] for entry_id, fields in await redis.xrange("batch:c")}
    assert [kept[i] for i in ids] == [f"kept {n}" for n in range(5)]
    # And the batcher still works afterwards.
    assert await batcher.xadd("batch:c", "later", 1000)


async def test_a_consumer_acks_a_wide_batch_on_a_small_pool(
    redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 entries in 300 lanes (300 chats) are handled at the same time; their acks share
    pipelines, so a client allowed 3 connections acks them all with no "too many connections"
    taken for an outage (each ack used to ask the pool for a connection of its own)."""
    from redis.asyncio import ConnectionPool

    from hub.pipeline.bus import Bus
    from hub.pipeline.consumer import StreamConsumer

    pool = ConnectionPool.from_url(redis_url, max_connections=3, decode_responses=True)
    small = Redis.from_pool(pool)  # on the db the `redis` fixture cleans
    handled: list[str] = []

    async def handler(entry: Any) -> None:
        await asyncio.sleep(0)  # each lane yields, as a real handler's I/O does
        handled.append(entry.id)

    consumer = StreamConsumer(
        Bus(small, shards=1, maxlen=10_000),
        group="wide",
        name="wide-1",
        handler=handler,
        streams=["wide:{0}"],
        batch=300,
        lane=lambda entry: entry.id,
    )
    async with small.pipeline(transaction=False) as pipe:
        for n in range(300):
            pipe.xadd("wide:{0}", {"data": str(n)})
        await pipe.execute()
    caplog.set_level(logging.WARNING, logger="hub.pipeline.consumer")
    try:
        assert await consumer.poll_once() == 300
        assert len(handled) == 300
        assert (await small.xpending("wide:{0}", "wide"))["pending"] == 0
        assert "outage" not in caplog.text
    finally:
        await small.aclose()
