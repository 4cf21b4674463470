"""A poller runs in one hub process at a time: the others stand by and take over."""

from __future__ import annotations

import asyncio

import pytest

from hub.pipeline.exclusive import PREFIX, run_exclusive
from tests.support import eventually

LEASE_MS = 300  # the lease's TTL lives in Redis, so it is short rather than faked


async def test_one_holder_and_a_takeover_when_it_stops(redis) -> None:
    running: list[str] = []

    def job(owner: str):
        async def poll() -> None:
            running.append(owner)
            await asyncio.Event().wait()

        return poll

    first = asyncio.create_task(run_exclusive(redis, "a", "mail:main", job("a"), lease_ms=LEASE_MS))
    await eventually(lambda: asyncio.sleep(0, running == ["a"]))
    second = asyncio.create_task(
        run_exclusive(redis, "b", "mail:main", job("b"), lease_ms=LEASE_MS)
    )
    # Several lease periods pass with a renewing holder: the second never starts its job.
    await asyncio.sleep(LEASE_MS * 3 / 1000)
    assert running == ["a"]
    assert await redis.get(PREFIX + "mail:main") == "a"

    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await eventually(lambda: asyncio.sleep(0, running == ["a", "b"]))
    assert await redis.get(PREFIX + "mail:main") == "b"
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await redis.get(PREFIX + "mail:main") is None


async def test_a_holder_that_loses_its_lease_stops_its_job(redis) -> None:
    cancelled = asyncio.Event()

    async def poll() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    holder = asyncio.create_task(run_exclusive(redis, "a", "ig:main", poll, lease_ms=LEASE_MS))
    await eventually(lambda: redis.get(PREFIX + "ig:main"))
    # Another process took the lease (say this one stalled past the TTL).
    await redis.set(PREFIX + "ig:main", "intruder", px=60_000)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert not holder.done()  # back to standing by, not crashed
    assert await redis.get(PREFIX + "ig:main") == "intruder"  # and not released by us
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder


async def test_the_job_ends_or_fails_and_the_lease_is_released(redis) -> None:
    async def done() -> None:
        return None

    async def broken() -> None:
        raise RuntimeError("imap said no")

    await run_exclusive(redis, "a", "x", done, lease_ms=LEASE_MS)
    assert await redis.get(PREFIX + "x") is None
    with pytest.raises(RuntimeError, match="imap said no"):
        await run_exclusive(redis, "a", "x", broken, lease_ms=LEASE_MS)
    assert await redis.get(PREFIX + "x") is None
