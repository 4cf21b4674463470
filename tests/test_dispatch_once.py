"""Each reply is sent once, however many stream entries of it reach however many dispatchers
(hub/pipeline/dispatcher.py: the claim on a message before the provider call).

1. Two real dispatcher processes, a thousand replies each on the stream twice, a fake Twilio
   over HTTP: every reply arrives exactly once.
2. A duplicate entry while another dispatcher sends is acked at once: the chat's next reply
   is not held up, and the message goes out once.
3. A send cut short (the dispatcher died mid-send) goes out again only once its claim
   lapsed: through its own entry, reclaimed, or through a replayed dead letter.
4. An owner waiting out a provider failure (backoff longer than the claim's lease) keeps its
   claim; one that stalled past it and was taken over does not send.
5. A reply sent whose answer could not be stored is stored on the retry, not sent again; a
   receipt that outruns the send's answer moves a `sending` message on.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from channels.base import Channel
from crm_store.conversations import open_conversation, record_outbound, set_delivery
from crm_store.db import transaction
from crm_store.models import Client, Conversation, Message
from crm_store.timeutil import as_utc, utcnow
from hub.config import Settings
from hub.messages import Author, DeliveryState, DeliveryStatus, OutboundMessage
from hub.pipeline.bus import DEAD_STREAM, outbound_stream
from hub.pipeline.dispatcher import GROUP, Backoff, Dispatcher
from hub.pipeline.replies import outbound_of, send_reply
from hub.state import Hub
from tests.fakes.twilio_server import FakeTwilio
from tests.support import FakeTime, eventually

ROOT = Path(__file__).resolve().parent.parent
STREAM = outbound_stream("sms")
EPOCH = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LEASE_S = 30.0  # the claim's lease in the in-process tests (the default)
IDLE_MS = 50  # how soon a dead dispatcher's entry is reclaimed in the in-process tests


def phone(n: int) -> str:
    return f"+38067{n:07d}"


async def open_chats(sessions: async_sessionmaker[AsyncSession], count: int) -> list[Conversation]:
    """`count` SMS conversations, one client each."""
    async with transaction(sessions) as session:
        clients = [Client(name=f"Client {n}") for n in range(count)]
        session.add_all(clients)
        await session.flush()
        conversations = []
        for n, client in enumerate(clients):
            conversation, _ = await open_conversation(
                session,
                client_id=client.id,  # type: ignore[arg-type]
                channel="sms",
                inbox="main",
                chat_id=phone(n),
                now=utcnow(),
            )
            conversations.append(conversation)
    return conversations


async def stored(sessions: async_sessionmaker[AsyncSession], public_id: str) -> Message:
    async with sessions() as session:
        return (await session.exec(select(Message).where(Message.public_id == public_id))).one()


async def pending(redis: Redis) -> int:
    return int((await redis.xpending(STREAM, GROUP))["pending"])


# 1. Two dispatcher processes -------------------------------------------------------------

REPLIES = 1_000
CHATS = 250
# A dispatcher reads 50 entries at a time (StreamConsumer's batch): each run of 50 first
# copies is followed by the run of their second copies, so the two processes, reading turn
# about, mostly hold the two copies of a reply at the same moment.
RUN = 50


async def queue_replies(
    sessions: async_sessionmaker[AsyncSession], chats: list[Conversation]
) -> list[OutboundMessage]:
    """REPLIES replies stored `queued` (as hub.pipeline.replies stores them), round the chats."""
    outbound = []
    async with transaction(sessions) as session:
        for n in range(REPLIES):
            conversation = chats[n % len(chats)]
            key = f"reply-{n}"
            message = await record_outbound(
                session,
                conversation=conversation,
                text=f"Reply {n}",
                author="bot",
                outbound_key=key,
                public_id=key,
            )
            outbound.append(outbound_of(message, conversation))
    return outbound


async def put_twice(redis: Redis, outbound: list[OutboundMessage]) -> None:
    """Every reply on the stream twice, all in one transaction: the dispatchers find the
    whole backlog at once."""
    async with redis.pipeline(transaction=True) as pipe:
        for start in range(0, len(outbound), RUN):
            run = outbound[start : start + RUN]
            for _ in range(2):
                for msg in run:
                    pipe.xadd(STREAM, {"data": msg.to_json()})
        await pipe.execute()


async def start_dispatcher(
    settings: Settings, data_dir: Path, twilio_url: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.dispatch_process",
        settings.database_url or "",
        settings.redis_url or "",
        str(data_dir),
        twilio_url,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )


async def ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready", line


async def test_two_dispatcher_processes_send_each_of_a_thousand_doubled_replies_once(
    settings: Settings, redis: Redis, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    procs: list[asyncio.subprocess.Process] = []
    async with FakeTwilio() as fake:
        try:
            for n in range(2):
                procs.append(
                    await start_dispatcher(settings, tmp_path / f"dispatcher-{n}", fake.base_url)
                )
            # The replies are stored while the processes start; they send once both are up.
            outbound = await queue_replies(sessions, await open_chats(sessions, CHATS))
            await asyncio.gather(*(ready(proc) for proc in procs))
            await put_twice(redis, outbound)

            async def all_out() -> bool:
                for proc in procs:
                    assert proc.returncode is None, "a dispatcher died by itself"
                async with sessions() as session:
                    open_ = await session.exec(
                        select(func.count()).where(
                            Message.direction == "out", Message.status != "sent"
                        )
                    )
                    if open_.one():
                        return False
                # Read to the end and nothing pending (the group's `lag` field is Redis 7's;
                # the embedded Redis is 6.2).
                group = (await redis.xinfo_groups(STREAM))[0]
                last = (await redis.xinfo_stream(STREAM))["last-generated-id"]
                return group["last-delivered-id"] == last and group["pending"] == 0

            await eventually(all_out, timeout=60, interval=0.05)
            accepted = Counter(r.get("Body") for r in fake.creates() if r.status == 201)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 30)

    texts = [msg.text for msg in outbound]
    assert sorted(accepted) == sorted(texts)  # 0 lost
    assert [text for text, times in accepted.items() if times > 1] == []  # 0 doubled
    assert len(fake.creates()) == REPLIES  # and no other call reached the provider
    async with sessions() as session:
        rows = (await session.exec(select(Message).where(Message.direction == "out"))).all()
    assert len(rows) == REPLIES
    assert {(m.status, m.attempts, m.claimed_by, m.claimed_until) for m in rows} == {
        ("sent", 1, None, None)
    }
    assert await redis.xlen(DEAD_STREAM) == 0


# In-process dispatchers on a fake clock ---------------------------------------------------


class Provider(Channel):
    """A provider that records what it took and when (on the test's clock). It can fail the
    first `failures` calls, and hold every call until `gate` is set (a send in flight)."""

    name = "sms"

    def __init__(
        self, clock: Callable[[], datetime], *, failures: int = 0, hold: bool = False
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()
        self.calls = 0
        self.took: list[tuple[str, datetime]] = []

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        self.calls += 1
        await self.gate.wait()
        if self.calls <= self.failures:
            raise ConnectionError("provider timed out")
        self.took.append((msg.text, self.clock()))
        return DeliveryStatus(
            outbound_id=msg.id, status=DeliveryState.sent, provider_message_id=f"SM{msg.id}"
        )

    def texts(self) -> list[str]:
        return [text for text, _ in self.took]


class Scene:
    """A hub's bus and store (nothing running), a fake clock, and dispatchers on them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.time = FakeTime()

    def clock(self) -> datetime:
        return EPOCH + timedelta(seconds=self.time.now)

    def dispatcher(
        self,
        worker: str,
        provider: Provider,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> Dispatcher:
        return Dispatcher(
            self.hub.bus,
            self.hub.sessions,
            {"sms": provider},
            backoff=backoff,
            sleep=sleep or self.time.sleep,
            rng=rng,
            clock=self.clock,
            claim_lease_s=LEASE_S,
            worker=worker,
        )

    async def reply(self, conversation: Conversation, text: str) -> OutboundMessage:
        queued = await send_reply(
            self.hub.sessions,
            self.hub.bus,
            conversation_id=conversation.id,  # type: ignore[arg-type]
            text=text,
            author=Author.bot,
        )
        return queued.outbound


@pytest.fixture
async def scene(settings: Settings, redis: Redis) -> Any:
    del redis  # flushed before the hub opens
    hub = Hub(settings, run_router=False, run_bots=False, run_dispatcher=False)
    await hub.open()
    try:
        yield Scene(hub)
    finally:
        await hub.close()


async def poll_until_handled(consumer: Any, timeout: float = 10.0) -> int:
    """Poll a consumer until a round handled something (a reclaim waits for idle time)."""
    handled = 0

    async def probe() -> int:
        nonlocal handled
        handled = await consumer.poll_once()
        return handled

    return await eventually(probe, timeout=timeout, interval=0)


# 2. A duplicate while another dispatcher sends ---------------------------------------------


async def test_a_duplicate_entry_while_another_dispatcher_sends_is_acked_and_holds_up_nothing(
    scene: Scene, redis: Redis
) -> None:
    (chat,) = await open_chats(scene.hub.sessions, 1)
    slow = Provider(scene.clock, hold=True)
    first = scene.dispatcher("a", slow).consumer("a", claim_idle_ms=30_000, max_deliveries=3)
    fast = Provider(scene.clock)
    second = scene.dispatcher("b", fast).consumer("b", claim_idle_ms=30_000, max_deliveries=3)

    hello = await scene.reply(chat, "Hello")
    sending = asyncio.create_task(first.poll_once())
    await eventually(lambda: asyncio.sleep(0, slow.calls == 1))  # "a" is mid-send
    await scene.hub.bus.publish_outbound(hello)  # the same reply again (a retried call)
    await scene.reply(chat, "Anything else?")  # and the chat's next one behind it

    # "b" acks the copy at once and goes on with the chat while "a" is still sending.
    assert await asyncio.wait_for(second.poll_once(), 10) == 2
    assert fast.texts() == ["Anything else?"]
    assert not sending.done()
    assert await pending(redis) == 1  # only "a"'s entry, until it is done

    slow.gate.set()
    assert await sending == 1
    assert slow.texts() == ["Hello"]
    assert (await stored(scene.hub.sessions, hello.id)).status == "sent"
    assert await pending(redis) == 0


# 3. A send cut short by a dead dispatcher ---------------------------------------------------


@pytest.mark.parametrize("way_back", ["reclaimed", "replayed dead letter"])
async def test_a_send_cut_short_goes_out_again_only_once_its_claim_lapsed(
    scene: Scene, redis: Redis, way_back: str
) -> None:
    (chat,) = await open_chats(scene.hub.sessions, 1)
    doomed = Provider(scene.clock, hold=True)  # took the call, never answers
    first = scene.dispatcher("a", doomed).consumer("a", claim_idle_ms=IDLE_MS, max_deliveries=3)
    msg = await scene.reply(chat, "See you at 10:00")
    dying = asyncio.create_task(first.poll_once())
    await eventually(lambda: asyncio.sleep(0, doomed.calls == 1))
    dying.cancel()  # the process dies mid-send: no answer stored, nothing given back
    await asyncio.gather(dying, return_exceptions=True)
    cut = await stored(scene.hub.sessions, msg.id)
    assert cut.status == "sending" and cut.claimed_until is not None
    lapses = as_utc(cut.claimed_until)

    survivor = Provider(scene.clock)
    dispatcher = scene.dispatcher("b", survivor)
    if way_back == "reclaimed":
        second = dispatcher.consumer("b", claim_idle_ms=IDLE_MS, max_deliveries=3)
    else:
        # The dead dispatcher's entry went to hub:dead (delivered too often); staff replay it.
        reaper = dispatcher.consumer("b", claim_idle_ms=IDLE_MS, max_deliveries=1)

        async def dead_lettered() -> int:
            await reaper.poll_once()
            return await redis.xlen(DEAD_STREAM)

        await eventually(dead_lettered, interval=0)
        assert await pending(redis) == 0
        await scene.hub.bus.replay_all()
        second = dispatcher.consumer("b", claim_idle_ms=IDLE_MS, max_deliveries=3)
    assert await poll_until_handled(second) == 1

    # Sent once more, and only after the dead owner's claim ran out.
    assert [text for text, _ in survivor.took] == ["See you at 10:00"]
    assert survivor.took[0][1] >= lapses
    done = await stored(scene.hub.sessions, msg.id)
    assert (done.status, done.claimed_by, done.claimed_until) == ("sent", None, None)
    assert await pending(redis) == 0
    assert await redis.xlen(DEAD_STREAM) == 0


# 4. Backoff longer than the lease; an owner that stalled --------------------------------


class MostJitter(random.Random):
    """Backoff at its longest (the jitter's top): a wait longer than the claim's lease."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize("owner", ["waits", "stalls"])
async def test_an_owner_keeps_its_claim_through_backoff_and_a_stalled_one_does_not_send(
    scene: Scene, redis: Redis, owner: str
) -> None:
    (chat,) = await open_chats(scene.hub.sessions, 1)
    other = Provider(scene.clock)
    second = scene.dispatcher("b", other).consumer("b", claim_idle_ms=30_000, max_deliveries=3)
    msg = await scene.reply(chat, "Your visit is confirmed")

    async def sleep_and_meet_a_duplicate(seconds: float) -> None:
        """The owner's backoff: the clock moves (past the lease, or also past the renewed
        lease when the owner stalls) while another dispatcher handles a copy of the entry."""
        stall = LEASE_S + 1 if owner == "stalls" else 0
        await scene.time.sleep(seconds + stall)
        if not other.calls:
            await scene.hub.bus.publish_outbound(msg)
            assert await second.poll_once() == 1

    flaky = Provider(scene.clock, failures=2)
    first = scene.dispatcher(
        "a",
        flaky,
        sleep=sleep_and_meet_a_duplicate,
        backoff=Backoff(base=2 * LEASE_S, cap=60.0, attempts=4),
        rng=MostJitter(),
    ).consumer("a", claim_idle_ms=30_000, max_deliveries=3)
    assert await first.poll_once() == 1

    row = await stored(scene.hub.sessions, msg.id)
    assert row.status == "sent"
    if owner == "waits":
        # The copy found the claim alive after 60 s of backoff and sent nothing.
        assert (flaky.texts(), other.texts()) == (["Your visit is confirmed"], [])
        assert row.attempts == 3
    else:
        # The claim lapsed under a stalled owner: taken over, sent by the other one alone.
        assert (flaky.texts(), other.texts()) == ([], ["Your visit is confirmed"])
        assert flaky.calls == 1 and row.attempts == 1
    assert await pending(redis) == 0


# 5. An answer not stored; a receipt that comes first -------------------------------------


async def test_a_sent_reply_whose_answer_could_not_be_stored_is_not_sent_again(
    scene: Scene, redis: Redis
) -> None:
    (chat,) = await open_chats(scene.hub.sessions, 1)
    provider = Provider(scene.clock)
    dispatcher = scene.dispatcher("a", provider)
    real_record = dispatcher.record
    outages = []

    async def record_after_an_outage(status: DeliveryStatus, attempts: int | None = None) -> None:
        if not outages:
            outages.append(status)
            raise ConnectionRefusedError("the database is out of reach")
        await real_record(status, attempts)

    dispatcher.record = record_after_an_outage  # type: ignore[method-assign]
    msg = await scene.reply(chat, "Booked for Friday")
    consumer = dispatcher.consumer("a", claim_idle_ms=30_000, max_deliveries=3)
    assert await consumer.poll_once() == 1  # the outage is waited out in place
    assert provider.texts() == ["Booked for Friday"]
    row = await stored(scene.hub.sessions, msg.id)
    assert (row.status, row.provider_message_id, row.claimed_by) == ("sent", f"SM{msg.id}", None)
    assert await pending(redis) == 0


async def test_a_receipt_that_outruns_the_send_moves_a_sending_message_on(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    (chat,) = await open_chats(sessions, 1)
    async with transaction(sessions) as session:
        conversation = await session.get(Conversation, chat.id)
        assert conversation is not None
        message = await record_outbound(
            session,
            conversation=conversation,
            text="Hi",
            author="bot",
            outbound_key="k1",
            public_id="p1",
        )
        message.status, message.claimed_by = "sending", "a/1-0"
        message.claimed_until = utcnow() + timedelta(seconds=30)
    for status in ("delivered", "sent"):  # the receipt first, then the send's own answer
        async with transaction(sessions) as session:
            await set_delivery(session, public_id="p1", status=status, provider_message_id="SM1")
    row = await stored(sessions, "p1")
    assert (row.status, row.claimed_by, row.claimed_until) == ("delivered", None, None)
