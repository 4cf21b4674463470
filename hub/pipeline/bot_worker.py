"""Hands each client message of a conversation in status `bot` to the responder.

Reads hub:events in its own consumer group ("bots"). A redelivered event is harmless: each
reply's idempotency key is derived from the client message it answers.

Fairness: the events of one conversation form a lane (handled in order), and different
conversations' lanes run at the same time, so a slow model is waited on for many clients at
once and a client who floods the chat holds up only their own answers. A client message that
a newer one of the same conversation already supersedes (the client typed several lines
quickly, or flooded) is not answered on its own: the bot answers the newest, whose history
holds the earlier lines. Only a message the bot will answer itself supersedes (not a
STOP/START keyword, an auto-reply, or a line written while staff had the chat), and only
one already read by this worker, so the newest is always in hand and always gets its turn.

What the turn did to the client's appointments (a cancellation above all: the time is free
for someone else) is published as an `appointment` event, so the inbox tells staff at once and
the calendar redraws. The bot's tools report each change once it is committed
(bots.base.TURN_CHANGES), so it holds for either brain and whichever tool did it.

The bot speaks only in a private chat. A message from a group (`private: false` on the
event: a Telegram group kept for staff, an Instagram group thread) is never given to the
brain: the conversation goes to staff instead, since everyone in the group would read an
answer that may hold the client's appointments or phone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from bots.base import TURN_CHANGES, AppointmentChange, Reply, Responder, Turn
from bots.state import TURN_MEMORY, Memory, MemorySlot, remember
from crm_store.timeutil import iso
from hub import metrics
from hub.messages import Author, QuickReply
from hub.pipeline.bus import EVENTS_STREAM, Bus, Entry, PermanentError
from hub.pipeline.consumer import StreamConsumer
from hub.pipeline.handoff import hand_off
from hub.pipeline.replies import BotSilenced, publish_queued, send_reply
from hub.pipeline.turn_store import TurnEnd, TurnStore, reply_key

log = logging.getLogger(__name__)

GROUP = "bots"
# Changes the bot makes to an appointment that staff hear of at once.
ANNOUNCED = ("cancelled", "confirmed", "book", "reschedule")
# Events read at once: a burst of one conversation is mostly seen whole, so its older lines
# are skipped instead of answered one model call each.
BATCH = 200
# Turns in flight at once: enough to wait on a slow model for many clients together (with a
# model taking a second, about the messages a second one process answers), few enough to stay
# within the model provider's rate limit. The database is not the limit: turns in flight share
# their reads and writes (hub/pipeline/turn_store.py).
MAX_TURNS = 64
# Conversations whose newest message is remembered; past it the memory is dropped (losing
# only a chance to skip a line, never an answer).
MAX_REMEMBERED = 10_000
SHARED_LANE = "-"  # a malformed event: the handler dead-letters it
GROUP_REASON = "a group chat: the bot never answers there"


class BotWorker:
    def __init__(
        self,
        bus: Bus,
        sessions: async_sessionmaker,
        responder: Responder,
        *,
        max_turns: int = MAX_TURNS,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.responder = responder
        self._turns = asyncio.Semaphore(max_turns)
        self.store = TurnStore(sessions)
        # Per conversation, the stream id of the newest event read that the bot will answer.
        self._newest: dict[int, str] = {}

    def consumer(self, name: str, *, claim_idle_ms: int, max_deliveries: int) -> StreamConsumer:
        return StreamConsumer(
            self.bus,
            group=GROUP,
            name=name,
            handler=self.handle,
            streams=[EVENTS_STREAM],
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
            batch=BATCH,
            lane=self.lane,
            # A turn may wait seconds on a model: the next events are read meanwhile.
            continuous=True,
        )

    def lane(self, entry: Entry) -> str | None:
        """One lane per conversation; None for an event the bot has nothing to do with (a
        reply, a status, an appointment): the consumer acknowledges it as it is read. The
        consumer asks for the lane of every entry as it reads it, so this is also where the
        newest message of each conversation is noted: the turns of the older ones, handled
        first, see they are superseded."""
        event = _event(entry)
        if event is None:
            return SHARED_LANE  # malformed: the handler dead-letters it
        if not _answerable(event):
            return None
        conversation: int = event["conversation_id"]
        newest = self._newest.get(conversation)
        if newest is None or _order(entry.id) > _order(newest):
            if len(self._newest) >= MAX_REMEMBERED:
                self._newest.clear()
            self._newest[conversation] = entry.id
        return str(conversation)

    async def handle(self, entry: Entry) -> None:
        event = _event(entry)
        if event is None:
            raise PermanentError("event is not a JSON object")
        if not _answerable(event):
            return
        conversation_id: int = event["conversation_id"]
        newest = self._newest.get(conversation_id)
        try:
            if newest is not None and _order(newest) > _order(entry.id):
                log.debug(
                    "conversation %s: message %s superseded by a newer one",
                    conversation_id,
                    event["message"].get("id"),
                )
                return
            async with self._turns:
                await self._turn(conversation_id, event["message"], private=_private(event))
        finally:
            if self._newest.get(conversation_id) == entry.id:
                del self._newest[conversation_id]

    async def _turn(
        self, conversation_id: int, message: dict[str, Any], *, private: bool = True
    ) -> None:
        start = await self.store.start(conversation_id)
        if start is None or start.conversation.status != "bot":
            return  # a human has it, or it waits for one: the bot stays silent
        conversation, client = start.conversation, start.client
        if not private:
            await hand_off(self.sessions, self.bus, conversation_id, reason=GROUP_REASON)
            return
        turn = Turn(
            conversation_id=conversation_id,
            client_id=conversation.client_id,
            channel=conversation.channel,
            message_id=message["id"],
            text=message.get("text", ""),
            language=client.language if client else None,
        )
        # The brain's memory comes from the store's read and goes back with the replies.
        memory = MemorySlot(start.memory)
        changes: list[AppointmentChange] = []
        heard, held = TURN_CHANGES.set(changes), TURN_MEMORY.set(memory)
        try:
            with metrics.BOT_TURN_SECONDS.time():
                replies = await self.responder.respond(turn)
        finally:
            TURN_CHANGES.reset(heard)
            TURN_MEMORY.reset(held)
        await self._announce(turn, changes, client.name if client else None)
        try:
            queued = await self.store.finish(
                TurnEnd(conversation_id, turn.message_id, replies, memory.kept)
            )
        except BotSilenced:
            log.info("conversation %s was taken over mid-turn", conversation_id)
            return
        except Exception as exc:
            # A redelivered turn whose replies are stored already, or a failure of the
            # store: the old way, a write at a time, where stored replies are found by key.
            log.info("conversation %s: the turn is written alone (%s)", conversation_id, exc)
            if not await self._write_alone(turn, replies, memory.kept):
                return
        else:
            for one in queued:
                await publish_queued(self.bus, one)
        handoff = next((r for r in replies if r.handoff), None)
        if handoff is not None:
            handed = await hand_off(
                self.sessions,
                self.bus,
                turn.conversation_id,
                reason=handoff.handoff_reason or "the bot asked for a person",
            )
            if handed:
                metrics.HANDOFFS.inc()

    async def _write_alone(self, turn: Turn, replies: list[Reply], memory: Memory | None) -> bool:
        """False when staff took the chat meanwhile."""
        if memory is not None:
            await remember(self.sessions, memory)
        for n, reply in enumerate(replies):
            try:
                await send_reply(
                    self.sessions,
                    self.bus,
                    conversation_id=turn.conversation_id,
                    text=reply.text,
                    author=Author.bot,
                    idempotency_key=reply_key(turn.message_id, n),
                    quick_replies=[QuickReply(text=q[:64]) for q in reply.quick_replies],
                )
            except BotSilenced:
                log.info("conversation %s was taken over mid-turn", turn.conversation_id)
                return False
        return True

    async def _announce(
        self, turn: Turn, changes: list[AppointmentChange], client_name: str | None
    ) -> None:
        """An `appointment` event for each change the turn made to the client's appointments."""
        for change in changes:
            if change.action not in ANNOUNCED or change.client_id != turn.client_id:
                continue
            await self.bus.publish_event(
                "appointment",
                appointment_id=change.appointment_id,
                action=change.action,
                status=change.status,
                start=iso(change.start),
                master_id=change.master_id,
                client_id=change.client_id,
                client_name=client_name,
                conversation_id=turn.conversation_id,
                by="client",  # the client, through the bot
            )


def _event(entry: Entry) -> dict[str, Any] | None:
    try:
        event = json.loads(entry.data)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _answerable(event: dict[str, Any]) -> bool:
    """A client message the bot answers, as far as the event tells (the conversation's status
    is checked again when the turn starts)."""
    message = event.get("message")
    return (
        event.get("type") == "message"
        and isinstance(message, dict)
        and message.get("direction") == "in"
        # A keyword for the provider (SMS STOP/START) or an auto-reply, not a question.
        and event.get("bot_reply") is not False
        # Written while staff had the chat: theirs to answer, even if the bot has it back by
        # the time this event is read.
        and event.get("conversation_status", "bot") == "bot"
        and isinstance(event.get("conversation_id"), int)
    )


def _private(event: dict[str, Any]) -> bool:
    """Whether the message came from a one-to-one chat: `true`, or nothing said (events from
    before the flag, and the channels that have only private chats); any other value reads as
    a group."""
    return event.get("private", True) is True


def _order(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)
