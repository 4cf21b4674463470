"""A consumer-group worker over Redis streams: read, handle, ack after success.

- A handler that returns has its entry acknowledged.
- A handler that raises `PermanentError` (a malformed entry) sends it to hub:dead at once.
- An outage (the database or Redis out of reach: hub.outage) is not the entry's fault: the
  consumer keeps the entry in hand and tries it again in place, with capped backoff and
  without counting a delivery, until it works or the consumer stops (then it stays pending).
- Any other exception leaves the entry pending; after `claim_idle_ms` it is reclaimed with
  XAUTOCLAIM and tried again, and once it has been delivered `max_deliveries` times it goes
  to hub:dead with the last error. Entries of a consumer that died are reclaimed the same way.
  The entries held back behind a failing one (its lane's order) are counted delivered too,
  but are never dead-lettered for it: each is tried in its turn.
- With shard leases, a shard with entries still pending is not read further until they are
  done, so the entries of one chat are handled strictly in order.
- With a batch handler, the entries of one read (first deliveries only, every stream of it)
  are handled together and acknowledged after it returns. A malformed entry it finds it
  rejects: that one goes to hub:dead at once, alone. A batch that fails for any reason but an
  outage is handled again entry by entry (each stream in its order, the streams side by
  side), so a poison entry is isolated and goes to hub:dead alone after its retries; the
  others are stored once (the handlers are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.pipeline.bus import ERRORS_HASH, Bus, Entry, PermanentError, parse_entries
from hub.pipeline.leases import ShardLeases
from hub.pipeline.outage import is_outage, outage_delay

log = logging.getLogger(__name__)

# The error hash's mark on an entry held back behind a failing one: its deliveries while it
# waited are not its own failures, so they never send it to hub:dead.
WAITING = "waiting behind "

Handler = Callable[[Entry], Awaitable[None]]
# Sends a malformed entry of a batch to hub:dead (and acks it) at once.
Reject = Callable[[Entry, PermanentError], Awaitable[None]]
# The entries of one stream read, in order, and how to reject one of them.
BatchHandler = Callable[[list[Entry], Reject], Awaitable[None]]


class StreamConsumer:
    def __init__(
        self,
        bus: Bus,
        *,
        group: str,
        name: str,
        handler: Handler,
        streams: list[str],
        batch_handler: BatchHandler | None = None,
        leases: ShardLeases | None = None,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        batch: int = 50,
        block_ms: int = 1_000,
        lane: Callable[[Entry], str | None] | None = None,
        continuous: bool = False,
        outage_backoff_cap: float = 5.0,
    ) -> None:
        self.bus = bus
        self.redis = bus.redis
        self.group = group
        self.name = name
        self.handler = handler
        self.batch_handler = batch_handler
        self.streams = streams
        self.leases = leases
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.batch = batch
        # Entries of one stream with the same lane (say, one chat) are handled in order; other
        # lanes go at the same time, so a chat that must wait (Telegram's one message a
        # second) does not hold up every other chat of its channel. A lane of None: the
        # entry asks nothing of the handler, and is acknowledged as it is read.
        self.lane = lane
        self.block_ms = min(block_ms, max(50, claim_idle_ms // 2))
        self.outage_backoff_cap = outage_backoff_cap
        self._recovering: set[str] = set()
        self._groups_ready: set[str] = set()
        self._stopping = asyncio.Event()
        self._last_rebalance = 0.0
        self._last_sweep = 0.0
        # Entries read and not yet acked or given up, per stream: kept fresh (see _keep_alive)
        # so no other consumer reclaims an entry that is only waiting its turn in a lane.
        self._in_flight: dict[str, set[str]] = {}
        # Continuous lanes: reading goes on while lanes run (up to `batch` entries in hand),
        # each lane a task of its own fed from its queue, so a slow entry (a model call)
        # holds up only its own lane, never the next read.
        self.continuous = continuous and lane is not None
        self._queues: dict[tuple[str, str], list[Entry]] = {}
        self._draining: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._in_hand = 0
        self._room = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Loop until stop(); a failing Redis is waited out, never a crash loop."""
        failures = 0
        heartbeat = (
            asyncio.create_task(self._heartbeat(), name=f"{self.name}-leases")
            if self.leases is not None
            else None
        )
        keep_alive = asyncio.create_task(self._keep_alive(), name=f"{self.name}-in-flight")
        try:
            while not self._stopping.is_set():
                try:
                    await self.poll_once()
                    failures = 0
                except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError) as exc:
                    # Waited out, never fatal: a consumer that died here would leave its
                    # streams unread until the process restarts.
                    failures += 1
                    # Entries may have been delivered to us with the reply lost, or handled
                    # and not acked: every shard held is recovered before it is read further.
                    if self.leases is not None:
                        self._recovering |= self.leases.owned
                    delay = min(10.0, 0.2 * 2**failures)
                    log.warning(
                        "%s: redis unavailable (%s); retrying in %.1fs", self.name, exc, delay
                    )
                    await self._pause(delay)
        finally:
            self._stopping.set()
            if self._draining:
                lanes = list(self._draining.values())
                try:
                    # Each lane finishes the entry in hand; the rest stay pending.
                    await asyncio.gather(*lanes, return_exceptions=True)
                except asyncio.CancelledError:
                    for task in lanes:
                        task.cancel()
                    raise
            try:
                await asyncio.wait_for(keep_alive, self.claim_idle_ms / 1000 + 5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                log.debug("%s: in-flight refresher ended", self.name, exc_info=True)
            if heartbeat is not None:
                try:
                    await asyncio.wait_for(heartbeat, self.leases.lease_ms / 1000 + 5)  # type: ignore[union-attr]
                except (TimeoutError, asyncio.CancelledError, Exception):
                    log.debug("%s: lease heartbeat ended", self.name, exc_info=True)
            if self.leases is not None:
                try:
                    await self.leases.release_all()
                except Exception:  # the server may be gone at shutdown
                    log.debug("could not release leases", exc_info=True)

    async def _heartbeat(self) -> None:
        assert self.leases is not None
        # Ends on the stop event, not by cancellation, for the reason _keep_alive gives: a
        # cancellation swallowed mid-command kept a stopping hub waiting out its whole grace.
        while not self._stopping.is_set():
            await self._pause(self.leases.lease_ms / 3000)
            if self._stopping.is_set():
                break
            try:
                await self.leases.renew()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("%s: could not renew shard leases: %s", self.name, exc)

    async def _keep_alive(self) -> None:
        """Reset the idle time of entries in hand (XCLAIM to ourselves, JUSTID: the delivery
        count stays), so a batch that takes longer than claim_idle_ms — a chat waiting out a
        provider's limit — is not handed to a second consumer and sent twice. An entry of a
        consumer that died is no longer refreshed and is reclaimed as before."""
        # Stops on the stop event, not by cancellation: redis-py can swallow a cancellation
        # that lands mid-command (docs/pipeline.md), which would leave this loop running.
        while not self._stopping.is_set():
            await self._pause(self.claim_idle_ms / 3000)
            for stream, ids in list(self._in_flight.items()):
                if not ids:
                    continue
                try:
                    await self.redis.xclaim(
                        stream, self.group, self.name, 0, sorted(ids), justid=True
                    )
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("%s: could not refresh entries in hand: %s", self.name, exc)

    def _hold(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._in_flight.setdefault(entry.stream, set()).add(entry.id)

    def _release(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._in_flight.get(entry.stream, set()).discard(entry.id)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def current_streams(self) -> list[str]:
        if self.leases is None:
            return self.streams
        now = time.monotonic()
        if now - self._last_rebalance >= self.leases.lease_ms / 3000:
            await self.leases.rebalance()
            self._last_rebalance = now
            self._recovering |= self.leases.newly_acquired
            self.leases.newly_acquired.clear()
        self._recovering &= self.leases.owned
        return sorted(self.leases.owned)

    async def poll_once(self) -> int:
        """One round: recover what is pending, then read and handle new entries."""
        streams = await self.current_streams()
        await self._ensure_groups(streams)
        handled = 0
        ready: list[str] = []
        sweep_due = time.monotonic() - self._last_sweep >= self.claim_idle_ms / 2000
        for stream in streams:
            if self.leases is None:
                if sweep_due:
                    handled += await self._reclaim(stream)
                ready.append(stream)
                continue
            if stream in self._recovering:
                handled += await self._reclaim(stream)
                if await self._pending_count(stream):
                    continue
                self._recovering.discard(stream)
            ready.append(stream)
        if sweep_due:
            self._last_sweep = time.monotonic()
        if not ready:
            await self._pause(min(0.5, self.claim_idle_ms / 4000))
            return handled
        count = self.batch
        if self.continuous:
            count = await self._room_in_hand()
            if count <= 0:
                return handled
        try:
            reply = await self.redis.xreadgroup(
                self.group,
                self.name,
                {s: ">" for s in ready},
                count=count,
                block=self.block_ms,
            )
        except ResponseError as exc:
            # The stream or its group went away under a blocked read (a FLUSHDB, a trimmed
            # or deleted key): make them again on the next round.
            if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):
                self._groups_ready.clear()
                return handled
            raise
        batches = [
            [Entry(stream, eid, fields or {}) for eid, fields in entries]
            for stream, entries in parse_entries(reply)
        ]
        if self.continuous:
            for b in batches:
                self._feed(b)
            return handled + sum(len(b) for b in batches)
        if self.batch_handler is not None and self.lane is None and len(batches) > 1:
            # The shards of one read in one batch: at a low rate each holds a message or two,
            # and a batch's fixed cost (its lookups, its transaction) is paid once, not per shard.
            batches = [[entry for b in batches for entry in b]]
        counts = await asyncio.gather(*(self._handle_lanes(b) for b in batches))
        return handled + sum(counts)

    async def _room_in_hand(self) -> int:
        """How many more entries may be read (continuous lanes): waits while `batch` are in
        hand. Reclaimed entries are handled at once and do not count."""
        while self._in_hand >= self.batch and not self._stopping.is_set():
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), 0.5)
            except TimeoutError:
                pass
        return 0 if self._stopping.is_set() else self.batch - self._in_hand

    def _feed(self, entries: list[Entry]) -> None:
        self._hold(entries)
        self._in_hand += len(entries)
        idle: list[Entry] = []
        for entry in entries:
            lane = self._lane_of(entry)
            if lane is None:
                idle.append(entry)
                continue
            key = (entry.stream, lane)
            self._queues.setdefault(key, []).append(entry)
            if key not in self._draining:
                self._draining[key] = asyncio.create_task(self._drain(key), name=self.name)
        if idle:
            key = (entries[0].stream, "\x00idle")
            self._queues.setdefault(key, []).extend(idle)
            if key not in self._draining:
                self._draining[key] = asyncio.create_task(self._ack_idle(key), name=self.name)

    def _lane_of(self, entry: Entry) -> str | None:
        try:
            return self.lane(entry)  # type: ignore[misc]
        except Exception:
            return ""  # a malformed entry: the handler dead-letters it

    async def _ack_idle(self, key: tuple[str, str]) -> None:
        """Entries that ask nothing of the handler, acknowledged together."""
        try:
            while entries := self._queues.pop(key, None):
                try:
                    await asyncio.gather(*(self._ack_through_outages(e) for e in entries))
                finally:
                    self._settle(entries)
        finally:
            del self._draining[key]

    def _settle(self, entries: list[Entry]) -> None:
        self._release(entries)
        self._in_hand -= len(entries)
        self._room.set()

    async def _drain(self, key: tuple[str, str]) -> None:
        """One lane's entries, one at a time, as they come. After a failure (or on stop)
        the rest of the lane stays pending behind it, to be reclaimed in order."""
        queue = self._queues[key]
        failed: Entry | None = None
        try:
            while queue and not self._stopping.is_set():
                entry = queue.pop(0)
                try:
                    _, finished = await self._run_sequence([entry])
                finally:
                    self._settle([entry])
                if not finished:
                    failed = entry
                    break
            if queue:
                rest = list(queue)
                queue.clear()
                self._settle(rest)
                if failed is not None:
                    await self.redis.hset(
                        ERRORS_HASH,
                        mapping={_error_key(e): f"{WAITING}{failed.id}" for e in rest},
                    )
        finally:
            del self._draining[key]
            if self._queues.get(key) is queue and not queue:
                del self._queues[key]
            elif self._queues.get(key):
                # Fed while this task was finishing: the lane goes on in a new one.
                self._draining[key] = asyncio.create_task(self._drain(key), name=self.name)

    async def _ensure_groups(self, streams: list[str]) -> None:
        for stream in streams:
            if stream not in self._groups_ready:
                await self.bus.ensure_group(stream, self.group)
                self._groups_ready.add(stream)

    async def _pending_count(self, stream: str) -> int:
        summary = await self.redis.xpending(stream, self.group)
        return int(summary["pending"] if isinstance(summary, dict) else summary[0])

    async def _reclaim(self, stream: str) -> int:
        reply = await self.redis.xautoclaim(
            stream,
            self.group,
            self.name,
            min_idle_time=self.claim_idle_ms,
            start_id="0-0",
            count=self.batch,
        )
        # Redis 6.2 answers [cursor, entries]; 7 adds the ids of entries trimmed away.
        claimed = reply[1] if len(reply) > 1 else []
        if not claimed:
            return 0
        # Ours and still in hand (a long turn whose refresh came late): not a second time.
        in_hand = self._in_flight.get(stream, set())
        claimed = [(eid, fields) for eid, fields in claimed if eid not in in_hand]
        if not claimed:
            return 0
        ids = [eid for eid, _ in claimed]
        counts = await self._delivery_counts(stream, ids)
        entries = []
        for eid, fields in claimed:
            if fields is None:  # trimmed while pending: nothing left to handle
                await self._ack(Entry(stream, eid, {}))
                continue
            entries.append(Entry(stream, eid, fields, deliveries=counts.get(eid, 1)))
        return await self._handle_lanes(entries)

    async def _handle_lanes(self, entries: list[Entry]) -> int:
        self._hold(entries)
        try:
            return await self._lanes(entries)
        finally:
            self._release(entries)

    async def _lanes(self, entries: list[Entry]) -> int:
        if self.lane is None:
            # Reclaimed entries failed once already: one by one, so a poison one is found.
            if self.batch_handler is not None and all(e.deliveries <= 1 for e in entries):
                return await self._handle_batch(entries)
            return await self._handle_sequence(entries)
        lanes: dict[str, list[Entry]] = {}
        idle: list[Entry] = []
        for entry in entries:
            key = self._lane_of(entry)
            if key is None:
                idle.append(entry)
            else:
                lanes.setdefault(key, []).append(entry)
        counts = await asyncio.gather(
            *(self._handle_sequence(lane) for lane in lanes.values()),
            *(self._ack_through_outages(e) for e in idle),
        )
        return sum(counts)

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        rows = await self.redis.xpending_range(
            stream,
            self.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 2 + 10,
            consumername=self.name,
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    async def _handle_sequence(self, entries: list[Entry]) -> int:
        """Entries of one stream, in order; the first transient failure stops the sequence."""
        return (await self._run_sequence(entries))[0]

    async def _run_sequence(self, entries: list[Entry]) -> tuple[int, bool]:
        """How many were handled, and whether the sequence ran to its end (False: stopped
        by a failure or by stopping, the rest left pending)."""
        done = 0
        for n, entry in enumerate(entries):
            if entry.deliveries > self.max_deliveries:
                error = await self.redis.hget(ERRORS_HASH, _error_key(entry))
                if error is not None and error.startswith(WAITING):
                    # Counted while it waited behind a failing entry, never tried itself: it
                    # gets its turn. The mark goes first, so an entry that then kills the
                    # consumer each time is still dead-lettered on its next delivery.
                    await self.redis.hdel(ERRORS_HASH, _error_key(entry))
                else:
                    await self.bus.dead_letter(
                        entry, error or "the consumer died or timed out while handling it"
                    )
                    await self._ack(entry)
                    continue
            try:
                handled = await self._handle_through_outages(entry)
            except PermanentError as exc:
                await self.bus.dead_letter(entry, f"{type(exc).__name__}: {exc}")
                await self._ack(entry)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s: %s entry %s failed", self.name, entry.stream, entry.id)
                await self.redis.hset(
                    ERRORS_HASH, _error_key(entry), f"{type(exc).__name__}: {exc}"[:4000]
                )
                if entries[n + 1 :]:
                    await self.redis.hset(
                        ERRORS_HASH,
                        mapping={_error_key(e): f"{WAITING}{entry.id}" for e in entries[n + 1 :]},
                    )
                self._recovering.add(entry.stream)
                # This one and the rest of its lane wait to be reclaimed, in order.
                self._release(entries[n:])
                return done, False
            if not handled or not await self._ack_through_outages(entry):
                # Stopped during an outage: this one and the rest stay pending, in order.
                self._release(entries[n:])
                return done, False
            done += 1
        return done, True

    async def _handle_batch(self, entries: list[Entry]) -> int:
        """Entries of one read (of every stream in it), together; on a failure that is not an
        outage, again one by one. An outage is waited out in place as for one entry."""
        assert self.batch_handler is not None
        rejected: set[str] = set()

        async def reject(entry: Entry, exc: PermanentError) -> None:
            if entry.id not in rejected:
                await self.bus.dead_letter(entry, f"{type(exc).__name__}: {exc}")
                await self._ack(entry)
                rejected.add(entry.id)

        attempt = 0
        while True:
            try:
                await self.batch_handler(entries, reject)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                rest = [entry for entry in entries if entry.id not in rejected]
                if isinstance(exc, PermanentError) or not is_outage(exc):
                    log.warning(
                        "%s: a batch of %d %s entries failed (%s: %s); one by one now",
                        self.name,
                        len(entries),
                        entries[0].stream,
                        type(exc).__name__,
                        str(exc).splitlines()[0][:300] if str(exc) else "",
                    )
                    # Each stream's entries in their order, the streams side by side: a
                    # failure holds back only its own stream.
                    streams: dict[str, list[Entry]] = {}
                    for entry in rest:
                        streams.setdefault(entry.stream, []).append(entry)
                    counts = await asyncio.gather(
                        *(self._handle_sequence(one) for one in streams.values())
                    )
                    return len(rejected) + sum(counts)
                attempt += 1
                if not await self._wait_out(entries[0], exc, attempt):
                    self._release(entries)  # stopped: all stay pending, in order
                    return len(rejected)
        handled = [entry for entry in entries if entry.id not in rejected]
        acked = await asyncio.gather(*(self._ack_through_outages(e) for e in handled))
        if not all(acked):
            self._release(entries)  # stopped during an outage: handled again later, once
        return len(rejected) + sum(acked)

    async def _handle_through_outages(self, entry: Entry) -> bool:
        """Run the handler; an outage is waited out in place (the entry stays in hand, kept
        fresh, its delivery count unchanged). False if the consumer stopped meanwhile."""
        attempt = 0
        while True:
            try:
                await self.handler(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, PermanentError) or not is_outage(exc):
                    raise
                attempt += 1
                if not await self._wait_out(entry, exc, attempt):
                    return False
                continue
            if attempt:
                log.info(
                    "%s: %s entry %s went through after %d tries",
                    self.name,
                    entry.stream,
                    entry.id,
                    attempt + 1,
                )
            return True

    async def _ack_through_outages(self, entry: Entry) -> bool:
        """Ack a handled entry, waiting out Redis if it is away (handling it again would
        change nothing, but holds up the chat). False if the consumer stopped meanwhile."""
        attempt = 0
        while True:
            try:
                await self._ack(entry)
                return True
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                attempt += 1
                if not await self._wait_out(entry, exc, attempt):
                    return False

    async def _wait_out(self, entry: Entry, exc: BaseException, attempt: int) -> bool:
        if self._stopping.is_set():
            return False
        delay = outage_delay(attempt - 1, cap=self.outage_backoff_cap)
        # One line, no stack: an outage of minutes must not bury the log.
        if attempt == 1 or attempt % 10 == 0:
            log.warning(
                "%s: %s entry %s waits out an outage (try %d; again in %.1fs): %s: %s",
                self.name,
                entry.stream,
                entry.id,
                attempt,
                delay,
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
            )
        await self._pause(delay)
        return not self._stopping.is_set()

    async def _ack(self, entry: Entry) -> None:
        # In the bus's group commit: the acks of every lane handled at the same time share
        # one pipeline (and one connection) instead of asking the pool for one each.
        batch = self.bus.group_commit
        if entry.deliveries <= 1:
            # Read once and done: no error mark can be on it (a mark is set only on an entry
            # left pending, which comes back as a second delivery).
            await batch.call("xack", entry.stream, self.group, entry.id)
            return
        await asyncio.gather(
            batch.call("xack", entry.stream, self.group, entry.id),
            batch.call("hdel", ERRORS_HASH, _error_key(entry)),
        )


def _error_key(entry: Entry) -> str:
    return f"{entry.stream}|{entry.id}"
