"""Continuous lanes (hub/pipeline/consumer.py, the bot worker's mode): reading goes on while
a lane waits on a slow entry, each lane keeps its order, `batch` bounds the entries in hand,
a failing entry holds back only its own lane, and a stop leaves the unstarted entries
pending."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.pipeline.bus import ERRORS_HASH, Bus, Entry
from hub.pipeline.consumer import WAITING, StreamConsumer
from tests.support import eventually

STREAM = "lanes:{0}"


class Handler:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.done: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failing: set[str] = set()

    def gate(self, data: str) -> asyncio.Event:
        return self.gates.setdefault(data, asyncio.Event())

    async def __call__(self, entry: Entry) -> None:
        data = entry.data
        self.started.append(data)
        if data in self.gates:
            await self.gates[data].wait()
        if data in self.failing:
            raise RuntimeError(f"{data} failed")
        self.done.append(data)


def consumer(redis: Any, handler: Handler, *, batch: int = 50) -> StreamConsumer:
    return StreamConsumer(
        Bus(redis, shards=1, maxlen=10_000),
        group="g",
        name="c-1",
        handler=handler,
        streams=[STREAM],
        batch=batch,
        block_ms=50,
        claim_idle_ms=60_000,
        # "a1" and "a2" share lane "a"; "x…" asks nothing of the handler
        lane=lambda entry: None if entry.data.startswith("x") else entry.data[0],
        continuous=True,
    )


async def add(redis: Any, *data: str) -> None:
    for one in data:
        await redis.xadd(STREAM, {"data": one})


async def test_a_slow_lane_holds_up_only_itself(redis) -> None:
    handler = Handler()
    handler.gate("a1")
    worker = consumer(redis, handler)
    running = asyncio.create_task(worker.run())
    try:
        await add(redis, "a1")
        await eventually(lambda: asyncio.sleep(0, "a1" in handler.started))
        # Written after the slow one started: read and handled while it still waits.
        await add(redis, "b1", "x1", "a2", "x2", "c1")
        await eventually(lambda: asyncio.sleep(0, handler.done == ["b1", "c1"]))
        await eventually(lambda: _pending(redis, 2))  # the x's acked unseen; a1, a2 in hand
        assert "a2" not in handler.started  # behind a1, in its lane
        handler.gates["a1"].set()
        await eventually(lambda: asyncio.sleep(0, handler.done == ["b1", "c1", "a1", "a2"]))
        await eventually(lambda: _pending(redis, 0))
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)


async def test_no_more_than_a_batch_is_in_hand(redis) -> None:
    handler = Handler()
    for data in ("a1", "b1", "c1"):
        handler.gate(data)
    worker = consumer(redis, handler, batch=3)
    running = asyncio.create_task(worker.run())
    try:
        await add(redis, "a1", "b1", "c1", "d1")
        await eventually(lambda: asyncio.sleep(0, len(handler.started) == 3))
        await asyncio.sleep(0.2)
        assert "d1" not in handler.started  # three in hand: not read yet
        handler.gates["b1"].set()
        await eventually(lambda: asyncio.sleep(0, "d1" in handler.done))
        for gate in handler.gates.values():
            gate.set()
        await eventually(lambda: _pending(redis, 0))
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)


async def test_a_failure_holds_back_its_lane_and_a_stop_leaves_the_rest_pending(redis) -> None:
    handler = Handler()
    handler.failing.add("a1")
    handler.gate("a1")
    handler.gate("b1")
    worker = consumer(redis, handler)
    running = asyncio.create_task(worker.run())
    await add(redis, "a1", "a2", "b1", "b2", "c1")
    await eventually(lambda: asyncio.sleep(0, handler.done == ["c1"]))
    handler.gates["a1"].set()  # a1 fails: a2 waits behind it, to be reclaimed in order
    await eventually(lambda: asyncio.sleep(0, "a1" in handler.started and _waiting(handler)))
    worker.stop()  # b1 is in hand and finishes; b2 has not started and stays pending
    await asyncio.sleep(0.05)
    handler.gates["b1"].set()
    await asyncio.wait_for(running, 10)
    assert handler.done == ["c1", "b1"] and "a2" not in handler.started
    assert "b2" not in handler.started
    assert await _pending(redis, 3)  # a1, a2 and b2
    marks = await redis.hgetall(ERRORS_HASH)
    assert any(v.startswith(WAITING) for v in marks.values())
    assert any(v.startswith("RuntimeError") for v in marks.values())


def _waiting(handler: Handler) -> bool:
    return "a1" not in handler.done


async def _pending(redis: Any, n: int) -> bool:
    try:
        return (await redis.xpending(STREAM, "g"))["pending"] == n
    except Exception:
        return False
