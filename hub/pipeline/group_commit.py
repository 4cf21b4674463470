"""Group commit for Redis commands: the commands of callers waiting at the same time go to
Redis in one pipeline.

redis-py spends a few hundred microseconds of Python on every command (the connection pool,
packing, parsing the reply), so a webhook endpoint doing one XADD per request tops out at a
few thousand requests a second; pipelined, the same XADDs cost a tenth of that. The same goes
for the consumers' acks: a batch of 200 entries acked one pipeline each also asked the pool
for up to 200 connections at once. Each caller still waits for its own command: it gets the
command's reply, or the error Redis gave for that command (or for the whole pipeline, when
the connection failed), so nothing is promised to a provider before Redis has it and no entry
counts as acked before Redis took the XACK.

No timer and no background task between bursts: the first caller to find no flush running
starts one; while that flush's pipeline is on the wire, the callers arriving meanwhile queue
up and go in the next one. One caller alone is written at once. `Batched` is that skeleton
for any call: the database's group commit (hub/pipeline/write_batch.py) and the bot worker's
reads and writes (hub/pipeline/turn_store.py) use it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis

MAX_BATCH = 500  # commands per pipeline: keeps one reply read short

In = TypeVar("In")  # what a caller hands in
Out = TypeVar("Out")  # what it gets back


class Batched(Generic[In, Out]):
    """Group commit for any call: items handed in while a flush is under way go together in
    the next one, and each caller gets its own item's result (or error) once that flush ends.

    `flush` answers a batch with one result per item, in order; an exception in the list is
    that item's error, an exception raised is every item's. `orphaned` hears of an item whose
    caller was cancelled after the flush did its work (nobody will use the result: a claim
    can be given back). No timer: one caller alone is flushed at once.
    """

    def __init__(
        self,
        flush: Callable[[list[In]], Awaitable[list[Any]]],
        *,
        max_batch: int,
        name: str,
        orphaned: Callable[[In, Out], Awaitable[None]] | None = None,
    ) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self.name = name
        self._orphaned = orphaned
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Out] = loop.create_future()
        self._pending.append((item, done))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._run(), name=self.name)
        return await done

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                results = await self._flush([item for item, _ in batch])
            except asyncio.CancelledError:
                # The loop is going away: nobody may be left waiting on a future.
                for _, done in batch + self._pending:
                    done.cancel()
                self._pending.clear()
                raise
            except Exception as exc:
                results = [exc] * len(batch)
            for (item, done), result in zip(batch, results, strict=True):
                if done.done():  # its caller was cancelled meanwhile
                    if self._orphaned is not None and not isinstance(result, BaseException):
                        await self._orphaned(item, result)
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)


# A Redis command: the client's method name, its arguments and keyword arguments.
Command = tuple[str, tuple[Any, ...], dict[str, Any]]


class GroupCommit:
    def __init__(self, redis: Redis, *, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self._batched: Batched[Command, Any] = Batched(
            self._write, max_batch=max_batch, name="redis-group-commit"
        )

    @property
    def max_batch(self) -> int:
        return self._batched.max_batch

    async def xadd(self, stream: str, data: str, maxlen: int) -> str:
        """XADD stream MAXLEN ~ maxlen * data <data>; the new entry's id."""
        return await self.call("xadd", stream, {"data": data}, maxlen=maxlen, approximate=True)

    async def call(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """One command (a method of redis-py's client, by name), in the next pipeline."""
        return await self._batched.submit((command, args, kwargs))

    async def _write(self, batch: list[Command]) -> list[Any]:
        if len(batch) == 1:
            command, args, kwargs = batch[0]
            try:
                return [await getattr(self.redis, command)(*args, **kwargs)]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return [exc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for command, args, kwargs in batch:
                getattr(pipe, command)(*args, **kwargs)
            # Per command: its reply, or the error Redis answered for it.
            return await pipe.execute(raise_on_error=False)
