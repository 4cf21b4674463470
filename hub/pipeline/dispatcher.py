"""The dispatcher: hub:out:<channel> → the channel's `send` → the delivery status in the store.

Transient failures (an exception, a `failed` status marked retryable) are retried with
exponential backoff and full jitter; permanent ones are stored `failed` with the provider's
error.

Each message is sent once, however many entries of it reach however many dispatcher processes
(hub/pipeline/replies.py queues a reply again on a retried call; entries are redelivered,
reclaimed and replayed from hub:dead):

- Before the provider call a dispatcher claims the message (crm_store.conversations.
  claim_outbound): one UPDATE moves it from `queued` to `sending` with the claim's owner, this
  dispatcher and the stream entry in hand, and an expiry `claim_lease_s` ahead. Only the
  dispatcher whose UPDATE changed the row sends; the database picks one.
- The claim does not lapse while its owner is alive and still trying: a side task renews it
  every third of its lease through a slow send and the backoff between attempts (up to a
  minute), and before each retry the owner renews it itself and stops if it is gone (taken
  over, or a receipt moved the message on): an owner whose claim was taken over never sends.
- A claim lapses only when its owner stops renewing it: the process died. Whoever handles an
  entry of the message next takes the lapsed claim over and sends. That is the one way a
  client can still get a reply twice: the process died after the provider took the message
  and before its answer was stored (no one can know whether the provider got it).
- An entry whose message is held under another live claim (the claim names its entry):
  (a) a duplicate entry while another dispatcher sends: the claim's own entry is still pending
      (in that dispatcher's hands, or reclaimed from it if it dies), so it carries the message;
      this copy is acked at once and the chat's lane goes on;
  (b) this very entry, reclaimed (XAUTOCLAIM) from a dispatcher that died or let it go
      mid-send: it is the message's last carrier, so it is not acked; the handler waits in
      place (the consumer keeps the entry fresh, no delivery is counted), looking again every
      second, until the claim lapses and it takes it over, or the message is done.
      The owner's renewals stopped with it, so the wait is what is left of one lease; a claim
      still renewed after two leases (its owner alive without its entry) raises `ClaimHeld`
      and the entry is tried again later;
  (c) a replayed dead letter is a new entry: it sends a message still `queued`, is acked if
      the message is done, and if the claim's own entry is gone (it went to hub:dead) it
      carries the message as in (b).
- A message sent whose answer could not be stored (the database away) is kept in memory and
  stored when the entry is tried again, without sending it again.

The claims, and the answers stored, of sends under way at the same moment share one
transaction (`WriteBatch`, a group commit): a claim counts only once that transaction has
committed, and a shared transaction that fails is tried again claim by claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from redis.exceptions import ResponseError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from channels.base import Channel, PermanentSendError
from crm_store.conversations import (
    Delivery,
    claim_outbound,
    message_by_public_id,
    release_claim,
    renew_claim,
    set_deliveries,
    set_delivery,
)
from crm_store.db import transaction
from crm_store.identity import mark_unreachable
from crm_store.models import Conversation, Message
from crm_store.timeutil import as_utc, utcnow
from hub import metrics
from hub.messages import DeliveryState, DeliveryStatus, OutboundMessage
from hub.pipeline.bus import Bus, Entry, PermanentError, outbound_stream
from hub.pipeline.consumer import StreamConsumer
from hub.pipeline.events import message_event
from hub.pipeline.group_commit import Batched
from hub.pipeline.write_batch import Unit, WriteBatch

log = logging.getLogger(__name__)

GROUP = "dispatch"
# As long as a stream entry may sit idle before another consumer reclaims it
# (HUB_CLAIM_IDLE_MS's default): both say "its owner is gone" after about the same time.
CLAIM_LEASE_S = 30.0
# How often an entry waiting for a claim to lapse looks at the message again.
CLAIM_POLL_S = 1.0
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    cap: float = 60.0
    attempts: int = 5

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base·2^attempt)]."""
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))


class ClaimHeld(Exception):
    """A live dispatcher still holds the claim made for this entry: try the entry later."""


@dataclass
class Claim:
    """This dispatcher's right to send one message. `owner` None: the message is not in the
    store, so there is nothing to claim (sent as it always was)."""

    public_id: str
    owner: str | None
    lost: bool = False


class Dispatcher:
    """Sends what reaches hub:out:<channel>, each message once.

    `backoff` spaces the attempts at a transient failure; `sleep` waits (a test's fake clock);
    `rng` draws the jitter; `clock` stamps claims (UTC); `claim_lease_s` is how long a claim
    lasts without renewal, so how soon a send cut short by a dead process is tried again;
    `worker` names this process in claims (a unique default).
    """

    def __init__(
        self,
        bus: Bus,
        sessions: async_sessionmaker,
        channels: Mapping[str, Channel],
        *,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Clock = utcnow,
        claim_lease_s: float = CLAIM_LEASE_S,
        worker: str | None = None,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.channels = channels
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        self.claim_lease = timedelta(seconds=claim_lease_s)
        # Unique per process and bounded, so "<worker>/<entry id>" fits messages.claimed_by.
        self.worker = (
            worker or f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        )[:70]
        # Claims of the sends under way at once share a transaction; so do their answers.
        self.writes = WriteBatch(sessions)
        self._answers: Batched[Answer, tuple[Message | None, Conversation | None]] = Batched(
            self._record_many, max_batch=200, name="delivery-answers"
        )
        # Sent, but the answer is not stored yet (the database away): stored on the next try.
        self._unstored: dict[str, tuple[DeliveryStatus, int]] = {}

    def consumer(self, name: str, *, claim_idle_ms: int, max_deliveries: int) -> StreamConsumer:
        return StreamConsumer(
            self.bus,
            group=GROUP,
            name=name,
            handler=self.handle,
            streams=[outbound_stream(ch) for ch in sorted(self.channels)],
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
            lane=chat_lane,
        )

    async def handle(self, entry: Entry) -> None:
        try:
            msg = OutboundMessage.model_validate_json(entry.data)
        except ValidationError as exc:
            raise PermanentError(
                f"malformed outbound message: {exc.error_count()} errors"
            ) from None
        unstored = self._unstored.pop(msg.id, None)
        if unstored is not None:
            await self._store(msg, *unstored)
            return
        claim = await self.claim(msg, entry)
        if claim is None:
            return  # sent already, or another entry's live claim carries it
        try:
            status, attempts = await self._deliver_claimed(msg, claim)
        except Exception:
            # Nothing is in flight (a send's own errors are caught in deliver): give it back
            # so the retry sends at once instead of waiting out the lease.
            await self._release(claim)
            raise
        if status is None:
            # Taken over (this process stalled past its lease) or a receipt came first: the
            # message is someone else's to send and store now.
            log.warning("%s: lost the claim on %s; not sending it again", self.worker, msg.id)
            return
        await self._store(msg, status, attempts)

    async def claim(self, msg: OutboundMessage, entry: Entry) -> Claim | None:
        """The claim on `msg` for this entry, or None if the entry has nothing left to do.
        One UPDATE when the message is `queued` (every first send); only when it is not, one
        SELECT to learn why."""
        owner = f"{self.worker}/{entry.id}"
        started = self.clock()
        while True:
            now = self.clock()
            claimed = await self.writes.run(
                lambda session, now=now: claim_outbound(  # type: ignore[misc]
                    session, msg.id, owner=owner, now=now, until=now + self.claim_lease
                ),
                undo=lambda claimed, now=now: (
                    lambda session: (  # type: ignore[misc]
                        release_claim(session, msg.id, owner=owner, now=now)
                        if claimed
                        else asyncio.sleep(0)
                    )
                ),
            )
            if claimed:
                return Claim(msg.id, owner)
            # Not ours: why (a read after the claim's commit; a change between the two is
            # what the loop below is for).
            async with self.sessions() as session:
                stored = await message_by_public_id(session, msg.id)
            if stored is None:
                return Claim(msg.id, None)
            if stored.status not in ("queued", "sending"):
                return None  # already sent or failed (a redelivery): never twice
            if stored.status == "queued":
                continue  # given back between the two statements: claim it now
            holder = stored.claimed_by or ""
            carrier = holder.rpartition("/")[2]
            if carrier != entry.id and await self._pending(entry.stream, carrier):
                # (a) The claim's own entry is in a dispatcher's hands or waits to be
                # reclaimed: it carries the message, so this copy has nothing to do.
                log.info(
                    "%s: %s is %s's to send; entry %s acked", self.worker, msg.id, holder, entry.id
                )
                return None
            # (b) This entry's own claim, its dispatcher dead or its entry let go; (c) a claim
            # whose entry is gone (dead-lettered): this entry carries the message now.
            now = self.clock()
            if now - started > 2 * self.claim_lease:
                raise ClaimHeld(f"{msg.id} is still claimed by {holder}")
            until = as_utc(stored.claimed_until) if stored.claimed_until else now
            wait = max((until - now).total_seconds(), 0.0) + 0.05
            log.info(
                "%s: %s waits %.1fs for %s's claim to lapse", self.worker, msg.id, wait, holder
            )
            # Looked at again every second: the holder may still finish it meanwhile.
            await self.sleep(min(wait, CLAIM_POLL_S))

    async def _pending(self, stream: str, entry_id: str) -> bool:
        """Whether an entry is still pending in the dispatchers' group (not acked yet)."""
        try:
            rows = await self.bus.redis.xpending_range(
                stream, GROUP, min=entry_id, max=entry_id, count=1
            )
        except ResponseError:  # not an entry id (an owner written by hand)
            return False
        return bool(rows)

    async def _deliver_claimed(
        self, msg: OutboundMessage, claim: Claim
    ) -> tuple[DeliveryStatus | None, int]:
        if claim.owner is None:
            return await self.deliver(msg)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        keepers: list[asyncio.Task[None]] = []
        period = self.claim_lease.total_seconds() / 3

        def keep() -> None:
            name = f"claim-{msg.id}"
            keepers.append(loop.create_task(self._keep_claim(claim, done, period), name=name))

        # Nearly every send is over long before a third of the lease: only one that is not
        # gets a task renewing its claim (one for every send cost 5 % of the process's CPU).
        timer = loop.call_later(period, keep)
        try:
            return await self.deliver(msg, claim)
        finally:
            timer.cancel()
            # Stopped by the event, not cancelled: a renewal mid-statement ends cleanly.
            done.set()
            await asyncio.gather(*keepers, return_exceptions=True)

    async def _keep_claim(self, claim: Claim, done: asyncio.Event, period: float) -> None:
        """Renew the claim now and every `period` after until the send is over."""
        while not claim.lost and not done.is_set():
            try:
                await self._renew(claim)
            except Exception as exc:  # the database away: the next renewal tries again
                log.warning(
                    "%s: could not renew the claim on %s: %s", self.worker, claim.public_id, exc
                )
            try:
                await asyncio.wait_for(done.wait(), period)
                return
            except TimeoutError:
                pass

    async def _renew(self, claim: Claim, wait_s: float = 0.0) -> bool:
        """Extend the claim to one lease past `wait_s` from now; False if it is gone."""
        if claim.owner is None:
            return True
        if not claim.lost:
            until = self.clock() + timedelta(seconds=wait_s) + self.claim_lease
            async with transaction(self.sessions) as session:
                kept = await renew_claim(session, claim.public_id, owner=claim.owner, until=until)
            claim.lost = not kept
        return not claim.lost

    async def _release(self, claim: Claim) -> None:
        if claim.owner is None or claim.lost:
            return
        try:
            async with transaction(self.sessions) as session:
                await release_claim(session, claim.public_id, owner=claim.owner, now=self.clock())
        except Exception as exc:  # the claim lapses on its own
            log.warning("%s: could not give back %s: %s", self.worker, claim.public_id, exc)

    async def deliver(
        self, msg: OutboundMessage, claim: Claim | None = None
    ) -> tuple[DeliveryStatus | None, int]:
        """The final status and how many attempts it took; None as the status when the claim
        was lost before a retry (so nothing is sent or stored)."""
        channel = self.channels.get(msg.channel)
        if channel is None:
            return _failed(msg, f"the {msg.channel} channel is not enabled"), 0
        last_error = ""
        for attempt in range(self.backoff.attempts):
            # Checked before every retry: a process that stalled past its lease may have been
            # taken over, and then the provider must not be called again.
            if attempt and claim is not None and not await self._renew(claim):
                return None, attempt
            try:
                status = await channel.send(msg)
            except PermanentSendError as exc:
                return _failed(msg, str(exc) or type(exc).__name__), attempt + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "send %s via %s failed (attempt %d): %s",
                    msg.id,
                    msg.channel,
                    attempt + 1,
                    last_error,
                )
            else:
                if status.status != DeliveryState.failed or not status.retryable:
                    return status.model_copy(update={"outbound_id": msg.id}), attempt + 1
                last_error = status.error or "failed"
            if attempt + 1 < self.backoff.attempts:
                delay = self.backoff.delay(attempt, self.rng)
                # The wait (up to a minute) is covered before it starts, so the claim does not
                # lapse under an owner that is only waiting to try again.
                if claim is not None and not await self._renew(claim, delay):
                    return None, attempt + 1
                await self.sleep(delay)
        error = f"gave up after {self.backoff.attempts} attempts: {last_error}"
        return _failed(msg, error), self.backoff.attempts

    async def _store(self, msg: OutboundMessage, status: DeliveryStatus, attempts: int) -> None:
        try:
            await self.record(status, attempts)
        except Exception:
            self._unstored[msg.id] = (status, attempts)
            raise
        metrics.MESSAGES_OUT.labels(msg.channel, status.status.value).inc()

    async def record(self, status: DeliveryStatus, attempts: int | None = None) -> None:
        """Store a status: the answer to a send, or a provider's later receipt. The answers
        to sends stored at the same moment share one transaction and one SELECT."""
        if status.outbound_id is not None:
            found = await self._answers.submit((status, attempts))
        else:
            found = await self._record_alone(status, attempts)
        message, conversation = found
        if message is None:
            log.info("a %s receipt for an unknown message was ignored", status.channel)
            return
        if conversation is not None:
            await self.bus.publish_event(**message_event(message, conversation))

    async def _record_many(self, answers: list[Answer]) -> list[object]:
        try:
            async with transaction(self.sessions) as session:
                deliveries = [_delivery(status, attempts) for status, attempts in answers]
                messages = await set_deliveries(session, deliveries)
                found: list[object] = []
                for (status, _), message in zip(answers, messages, strict=True):
                    # In the session already: read with the messages.
                    conversation = (
                        await session.get(Conversation, message.conversation_id)
                        if message is not None
                        else None
                    )
                    await _unreachable(session, status, conversation)
                    found.append((message, conversation))
                return found
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # rolled back: each alone, the way that knows echo copies
            log.info("%d answers stored together failed (%s); one by one", len(answers), exc)
        results: list[object] = []
        for status, attempts in answers:
            try:
                results.append(await self._record_alone(status, attempts))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                results.append(exc)
        return results

    async def _record_alone(
        self, status: DeliveryStatus, attempts: int | None
    ) -> tuple[Message | None, Conversation | None]:
        try:
            return await self.writes.run(self._status_unit(status, attempts))
        except IntegrityError:
            # The provider's id is taken by the echo of this send, stored as a message written
            # in the provider's app: the send is the message, the copy goes.
            log.warning(
                "%s: an echo of %s was stored as a copy; dropped",
                status.channel,
                status.outbound_id,
            )
            unit = self._status_unit(status, attempts, displace_copies=True)
            return await self.writes.run(unit)

    @staticmethod
    def _status_unit(
        status: DeliveryStatus, attempts: int | None, *, displace_copies: bool = False
    ) -> Unit[tuple[Message | None, Conversation | None]]:
        async def unit(session: AsyncSession) -> tuple[Message | None, Conversation | None]:
            message = await set_delivery(
                session,
                public_id=status.outbound_id,
                channel=status.channel,
                status=status.status.value,
                provider_message_id=status.provider_message_id,
                error=status.error,
                attempts=attempts,
                segments=status.segments,
                displace_copies=displace_copies,
            )
            conversation = (
                await session.get(Conversation, message.conversation_id) if message else None
            )
            await _unreachable(session, status, conversation)
            return message, conversation

        return unit


# A send's answer and the attempts it took.
Answer = tuple[DeliveryStatus, int | None]


def _delivery(status: DeliveryStatus, attempts: int | None) -> Delivery:
    return Delivery(
        status.status.value,
        public_id=status.outbound_id,
        channel=status.channel,
        provider_message_id=status.provider_message_id,
        error=status.error,
        attempts=attempts,
        segments=status.segments,
    )


async def _unreachable(
    session: AsyncSession, status: DeliveryStatus, conversation: Conversation | None
) -> None:
    """The provider said the chat cannot be reached any more (blocked, unsubscribed)."""
    if status.unreachable and conversation is not None:
        await mark_unreachable(
            session,
            channel=conversation.channel,
            inbox=conversation.inbox,
            external_id=conversation.chat_id,
            reason=status.error or "unreachable",
            at=status.at,
        )


def _failed(msg: OutboundMessage, error: str) -> DeliveryStatus:
    return DeliveryStatus(outbound_id=msg.id, status=DeliveryState.failed, error=error)


def chat_lane(entry: Entry) -> str:
    """One chat's replies go out in order; different chats' at the same time."""
    data = json.loads(entry.data)
    return f"{data.get('inbox')}\x1f{data.get('chat_id')}"
