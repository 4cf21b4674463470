"""Faults in the inbound pipeline: a router killed mid-batch, the database out of reach, Redis
restarted under live webhooks. Each ends with every message stored exactly once, in its
chat's order, and nothing dead-lettered."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import col, func, select

from crm_store.db import create_engine, session_factory
from crm_store.models import Message
from hub.config import Settings
from hub.messages import InboundMessage
from hub.pipeline.bus import DEAD_STREAM, BusUnavailable, Entry, PermanentError
from hub.pipeline.consumer import StreamConsumer
from hub.pipeline.leases import ShardLeases
from hub.pipeline.outage import is_outage
from hub.state import Hub
from tests.fakes.viber_server import AUTH_TOKEN, FakeViber, post_callback, text_message, viber_user
from tests.support import eventually, start_hub

ROOT = Path(__file__).resolve().parent.parent
VIBER_PATH = "/webhooks/viber/main"


def inbound(chat: str, n: int) -> InboundMessage:
    return InboundMessage(
        channel="telegram",
        inbox="main",
        chat_id=chat,
        sender_id=chat,
        provider_message_id=f"{chat}-{n}",
        text=f"{chat} #{n}",
    )


def interleaved(chats: list[str], numbers: range) -> list[InboundMessage]:
    """The chats' messages taking turns, as they arrive from many clients at once."""
    return [inbound(chat, n) for n in numbers for chat in chats]


async def count_stored(sessions: Any) -> int:
    async with sessions() as session:
        return int((await session.exec(select(func.count()).select_from(Message))).one())


async def stored_ids(sessions: Any) -> list[str]:
    """Provider message ids of every stored message, in insert order."""
    async with sessions() as session:
        query = select(Message.provider_message_id).order_by(col(Message.id))
        return [str(pid) for pid in (await session.exec(query)).all()]


def assert_once_in_order(ids: list[str], expected: dict[str, list[str]]) -> None:
    """Every expected id stored exactly once, and each chat's in the order it was sent."""
    doubled = {pid: n for pid, n in Counter(ids).items() if n > 1}
    assert not doubled, f"stored more than once: {sorted(doubled)[:10]}"
    wanted = {pid for chat in expected.values() for pid in chat}
    assert set(ids) == wanted, f"missing: {sorted(wanted - set(ids))[:10]}"
    chat_of = {pid: chat for chat, pids in expected.items() for pid in pids}
    seen: dict[str, list[str]] = defaultdict(list)
    for pid in ids:
        seen[chat_of[pid]].append(pid)
    for chat, pids in expected.items():
        assert seen[chat] == pids, f"{chat} out of order"


def expected_of(messages: list[InboundMessage]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for msg in messages:
        out[msg.chat_id].append(msg.provider_message_id)
    return out


async def holds(value: object) -> object:
    """A plain value as a probe for `eventually`."""
    return value


async def drained(hub: Hub) -> bool:
    return await pending_total(hub) == 0


async def pending_total(hub: Hub) -> int:
    """Inbound entries read by a router and not acked."""
    total = 0
    for stream in hub.bus.inbound_streams():
        if await hub.redis.exists(stream):
            total += int((await hub.redis.xpending(stream, "router"))["pending"])
    return total


# What counts as an outage -----------------------------------------------------------------


def test_outage_classification() -> None:
    # Servers out of reach: waited out.
    assert is_outage(ConnectionRefusedError(111, "Connect call failed"))
    assert is_outage(ConnectionResetError())
    assert is_outage(TimeoutError())
    assert is_outage(RedisConnectionError("Connection refused"))
    assert is_outage(BusUnavailable("Redis did not take an entry"))
    assert is_outage(OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked")))
    dropped = DBAPIError("SELECT 1", {}, Exception("closed mid-operation"))
    dropped.connection_invalidated = True
    assert is_outage(dropped)
    try:  # wrapped, as SQLAlchemy wraps what the driver raised
        try:
            raise ConnectionResetError("reset by peer")
        except ConnectionResetError as exc:
            raise RuntimeError("the session failed") from exc
    except RuntimeError as wrapped:
        assert is_outage(wrapped)
    # The entry's own fault: counted, and dead-lettered in the end.
    assert not is_outage(ValueError("bad text"))
    assert not is_outage(PermanentError("malformed"))
    assert not is_outage(IntegrityError("INSERT", {}, Exception("unique")))
    assert not is_outage(DBAPIError("INSERT", {}, Exception("value too long")))
    try:  # merely raised while handling an outage: not caused by it
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise KeyError("conversation_id") from None
    except KeyError as unrelated:
        assert not is_outage(unrelated)


async def test_an_outage_longer_than_the_claim_time_sends_nothing_to_dead(
    settings: Settings, redis: Any
) -> None:
    """Consumer level: a handler failing with "database is locked" for many claim periods
    keeps its entry in hand, uncounted; a real failure is still dead-lettered."""
    hub = Hub(settings, run_dispatcher=False, run_bots=False)
    await hub.open()
    calls: Counter[str] = Counter()
    done: list[str] = []
    failing_until = asyncio.get_running_loop().time() + 2.0  # ~7 claim periods of 300 ms

    async def handler(entry: Entry) -> None:
        calls[entry.fields["n"]] += 1
        if entry.fields["n"] == "bad":
            raise ValueError("this one is broken")
        if asyncio.get_running_loop().time() < failing_until:
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        done.append(entry.fields["n"])

    consumer = StreamConsumer(
        hub.bus,
        group="faults",
        name="faults-1",
        handler=handler,
        streams=["faults:in"],
        claim_idle_ms=300,
        max_deliveries=3,
        outage_backoff_cap=0.2,
    )
    for n in ("1", "2", "3"):
        await redis.xadd("faults:in", {"n": n})
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: holds(len(done) == 3), timeout=15)
        assert done == ["1", "2", "3"]
        assert calls["1"] > 3  # tried over and over, never counted as a delivery
        assert await redis.xlen(DEAD_STREAM) == 0
        await redis.xadd("faults:in", {"n": "bad"})
        await eventually(lambda: redis.xlen(DEAD_STREAM), timeout=15)
        assert calls["bad"] == 3  # the entry's own fault: three deliveries, then dead
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await hub.close()


class LosesOneReply:
    """A Redis client whose first non-empty XREADGROUP reply is lost on the way back: the
    entries are delivered (pending to the reader) but the reader never sees them."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xreadgroup(self, *args: Any, **kwargs: Any) -> Any:
        reply = await self._redis.xreadgroup(*args, **kwargs)
        if reply and not self.lost:
            self.lost = True
            raise RedisConnectionError("Connection lost")
        return reply


async def test_entries_whose_read_reply_was_lost_come_first(settings: Settings, redis: Any) -> None:
    """A shard's entries delivered to a router whose connection then broke are pending to it
    alone: it recovers them before it reads that shard further (else they wait, out of order,
    until the shard changes hands)."""
    hub = Hub(settings, run_dispatcher=False, run_bots=False)
    await hub.open()
    stream = "faults:{0}"
    handled: list[str] = []

    async def handler(entry: Entry) -> None:
        handled.append(entry.fields["n"])

    consumer = StreamConsumer(
        hub.bus,
        group="faults",
        name="faults-reader",
        handler=handler,
        streams=[stream],
        leases=ShardLeases(hub.redis, "faults-reader", [stream], 60_000),
        claim_idle_ms=300,
        max_deliveries=3,
    )
    flaky = LosesOneReply(hub.redis)
    consumer.redis = flaky  # type: ignore[assignment]
    for n in ("1", "2", "3"):
        await redis.xadd(stream, {"n": n})
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: holds(flaky.lost), timeout=10)
        for n in ("4", "5", "6"):
            await redis.xadd(stream, {"n": n})
        await eventually(lambda: holds(len(handled) >= 6), timeout=10)
        assert handled == ["1", "2", "3", "4", "5", "6"]
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await hub.close()


# 1. A router killed mid-batch ----------------------------------------------------------


async def test_router_killed_mid_batch_loses_and_doubles_nothing(
    settings: Settings, redis: Any, tmp_path: Path
) -> None:
    hub = Hub(settings, run_dispatcher=False, run_bots=False)
    await hub.open()
    proc: asyncio.subprocess.Process | None = None
    try:
        chats = [f"kill-{n:02d}" for n in range(40)]
        batch = interleaved(chats, range(50))
        await hub.bus.publish_inbound_many(batch)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fault_router",
            settings.database_url or "",
            settings.redis_url or "",
            str(tmp_path / "doomed"),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

        async def some_hundreds() -> bool:
            assert proc is not None and proc.returncode is None, "the router died by itself"
            # Killed while a read is in hand: a read spans every shard and may hold hundreds
            # of entries, acked together after their one commit.
            return await count_stored(hub.sessions) >= 300 and await pending_total(hub) > 0

        await eventually(some_hundreds, timeout=40, interval=0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        at_kill = await count_stored(hub.sessions)
        assert at_kill < len(batch), "the router finished before it was killed"
        # Killed mid-batch: entries were read and not acknowledged.
        assert await pending_total(hub) > 0

        await hub.start()  # a healthy router takes the shards once the dead one's leases end

        async def all_stored() -> bool:
            return await count_stored(hub.sessions) >= len(batch)

        await eventually(all_stored, timeout=45, interval=0.1)
        await eventually(lambda: drained(hub), timeout=10)
        assert_once_in_order(await stored_ids(hub.sessions), expected_of(batch))
        assert await redis.xlen(DEAD_STREAM) == 0
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await hub.stop()
        await hub.close()


# 2. The database out of reach ----------------------------------------------------------


class TcpProxy:
    """Forwards a local port to the database. `cut()` closes every connection and stops
    listening (new connections are refused); `restore()` listens on the same port again."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.open = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.open = True

    async def cut(self) -> None:
        self.open = False
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if not self.open:  # cut while this one was connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self._writers -= pair


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.transport.abort()


@asynccontextmanager
async def database_outage(settings: Settings) -> AsyncIterator[tuple[Settings, Any]]:
    """Settings for a hub whose database can be taken away, and the switch: an async context
    manager during which the database is out of reach for the hub."""
    url = make_url(settings.database_url or "")
    if url.get_backend_name() == "sqlite":
        path = url.database or ""

        @asynccontextmanager
        async def locked() -> AsyncIterator[None]:
            # SQLite's outage: another process holds the write lock.
            holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
                yield
                await asyncio.to_thread(holder.execute, "COMMIT")
            finally:
                holder.close()

        yield settings, locked
        return
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.restore()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)

    @asynccontextmanager
    async def cut() -> AsyncIterator[None]:
        await proxy.cut()
        try:
            yield
        finally:
            await proxy.restore()

    try:
        yield settings.model_copy(update={"database_url": through}), cut
    finally:
        if proxy.open:
            await proxy.cut()


def short_busy_timeout(hub: Hub) -> None:
    """crm_store.db waits 30 s for SQLite's lock; here a 3 s lock must outlast the wait, as
    a longer one would in production, so the hub sees "database is locked"."""

    def pragma(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=500")
        cursor.close()

    event.listen(hub.engine.sync_engine, "connect", pragma)


async def test_database_out_of_reach_for_seconds_loses_nothing(
    settings: Settings, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.pipeline.consumer")
    # The test reads what was stored straight from the database, never through the outage.
    reader = create_engine(settings.database_url or "")
    async with database_outage(settings) as (hub_settings, outage):
        hub = Hub(hub_settings, run_dispatcher=False, run_bots=False)
        await hub.open()
        try:
            if hub.engine.dialect.name == "sqlite":
                short_busy_timeout(hub)
                await hub.engine.dispose()  # pooled connections waited 30 s
            sessions = session_factory(reader)
            chats = [f"out-{n}" for n in range(10)]
            before, during, after = (
                interleaved(chats, range(0, 10)),
                interleaved(chats, range(10, 30)),
                interleaved(chats, range(30, 40)),
            )
            await hub.start()
            await hub.bus.publish_inbound_many(before)

            async def stored(count: int) -> bool:
                return await count_stored(sessions) >= count

            await eventually(lambda: stored(len(before)), timeout=20)

            async with outage():
                caplog.clear()  # (SQLite's writers may have queued for the lock before)
                await hub.bus.publish_inbound_many(during)
                # The router meets the outage (and says so) with entries in hand.
                await eventually(lambda: holds(caplog.records), timeout=10)
                await asyncio.sleep(3)  # the outage itself
                assert await pending_total(hub) > 0
                assert await redis.xlen(DEAD_STREAM) == 0
            await hub.bus.publish_inbound_many(after)

            everything = before + during + after
            await eventually(lambda: stored(len(everything)), timeout=30, interval=0.1)
            await eventually(lambda: drained(hub), timeout=10)
            assert_once_in_order(await stored_ids(sessions), expected_of(everything))
            assert await redis.xlen(DEAD_STREAM) == 0
            assert "Traceback" not in caplog.text  # warnings, not a stack per attempt
        finally:
            await hub.stop()
            await hub.close()
            await reader.dispose()


# 3. Redis restarted under live webhooks ------------------------------------------------


async def test_redis_restarted_under_live_webhooks_loses_nothing_acknowledged(
    settings: Settings,
) -> None:
    # The embedded Redis of the hub itself (persistent, in the data directory). A short
    # directory: a unix socket's path has room for about 100 bytes.
    data_dir = Path(tempfile.mkdtemp(prefix="hub-faults-"))
    users = [f"restart-user-{n:02d}=" for n in range(12)]
    per_user = 20
    async with FakeViber() as viber:
        hub_settings = settings.model_copy(
            update={
                "redis_url": None,
                "hub_data_dir": data_dir,
                "viber_bot_token": SecretStr(AUTH_TOKEN),
                "viber_api_url": viber.base_url,
                "viber_bot_name": "Салон",
                "hub_public_url": None,
            }
        )
        running = await start_hub(hub_settings)
        hub = running.hub
        assert hub.embedded is not None
        # Shorter than the restart below, so some webhooks are answered 503 and re-sent.
        hub.bus.publish_deadline_s = 1.0
        answered: Counter[int | str] = Counter()
        acked = asyncio.Event()
        tokens: dict[str, list[str]] = {}

        async def client(user: str, first_token: int) -> None:
            tokens[user] = []
            for n in range(per_user):
                # One callback per message, sent again as is until it is taken (Viber does
                # the same on a 5xx).
                callback = text_message(
                    viber_user(user, "Client"), f"{user} #{n}", token=first_token + n
                )
                tokens[user].append(str(first_token + n))
                while True:
                    try:
                        status, _ = await post_callback(running.base_url, VIBER_PATH, callback)
                    except aiohttp.ClientError as exc:
                        status = type(exc).__name__
                    answered[status] += 1
                    if status == 200:
                        break
                    await asyncio.sleep(0.1)
                if answered[200] >= 40:
                    acked.set()
                await asyncio.sleep(0.05)

        async def restart_redis() -> None:
            await acked.wait()
            assert hub.embedded is not None and hub.embedded.process is not None
            hub.embedded.process.kill()  # SIGKILL: no shutdown, no last AOF flush
            await asyncio.to_thread(hub.embedded.process.wait)
            await asyncio.sleep(2)  # down for longer than a webhook waits
            await hub.embedded.astart()  # same socket, same directory, its append-only file

        try:
            senders = [client(user, 5_000_000 + 1000 * k) for k, user in enumerate(users)]
            await asyncio.wait_for(asyncio.gather(restart_redis(), *senders), 45)
            assert answered[503] > 0, "no webhook met the restart"
            assert set(answered) <= {200, 503}, answered  # never a 500

            async def all_stored() -> bool:
                return await count_stored(hub.sessions) >= len(users) * per_user

            await eventually(all_stored, timeout=30, interval=0.1)
            await eventually(lambda: drained(hub), timeout=15)
            assert_once_in_order(await stored_ids(hub.sessions), tokens)
            assert await hub.redis.xlen(DEAD_STREAM) == 0
        finally:
            await running.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
