"""Hands each client message of a conversation in status `bot` to the responder.

Reads hub:events in its own consumer group ("bots"). A redelivered event is harmless: each
reply's idempotency key is derived from the client message it answers.

What the turn did to the client's appointments (a cancellation above all: the time is free
for someone else) is published as an `appointment` event, so the inbox tells staff at once and
the calendar redraws. It is read from the audit log, which every change through the bot's
tools writes, so it holds for either brain and whichever tool did it.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select

from bots.base import Responder, Turn
from crm_store.models import Appointment, AuditEntry, Client, Conversation
from crm_store.timeutil import iso
from hub import metrics
from hub.bus import EVENTS_STREAM, Bus, Entry, PermanentError
from hub.consumer import StreamConsumer
from hub.handoff import hand_off
from hub.messages import Author, QuickReply
from hub.replies import BotSilenced, send_reply

log = logging.getLogger(__name__)

GROUP = "bots"
# Changes the bot makes to an appointment that staff hear of at once.
ANNOUNCED = ("cancelled", "confirmed", "book", "reschedule")


class BotWorker:
    def __init__(self, bus: Bus, sessions: async_sessionmaker, responder: Responder) -> None:
        self.bus = bus
        self.sessions = sessions
        self.responder = responder

    def consumer(self, name: str, *, claim_idle_ms: int, max_deliveries: int) -> StreamConsumer:
        return StreamConsumer(
            self.bus,
            group=GROUP,
            name=name,
            handler=self.handle,
            streams=[EVENTS_STREAM],
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
        )

    async def handle(self, entry: Entry) -> None:
        try:
            event = json.loads(entry.data)
        except json.JSONDecodeError as exc:
            raise PermanentError(f"event is not JSON: {exc}") from None
        message = event.get("message") or {}
        if event.get("type") != "message" or message.get("direction") != "in":
            return
        if event.get("bot_reply") is False:
            return  # a keyword for the provider (SMS STOP/START), not a question
        if event.get("conversation_status", "bot") != "bot":
            # Written while staff had the chat: theirs to answer, even if the bot has it back
            # by the time this event is read.
            return
        async with self.sessions() as session:
            conversation = await session.get(Conversation, int(event["conversation_id"]))
            if conversation is None or conversation.status != "bot":
                return  # a human has it, or it waits for one: the bot stays silent
            client = await session.get(Client, conversation.client_id)
        turn = Turn(
            conversation_id=conversation.id,  # type: ignore[arg-type]
            client_id=conversation.client_id,
            channel=conversation.channel,
            message_id=message["id"],
            text=message.get("text", ""),
            language=client.language if client else None,
        )
        mark = await self._audit_mark()
        with metrics.BOT_TURN_SECONDS.time():
            replies = await self.responder.respond(turn)
        await self._announce(turn, mark, client.name if client else None)
        for n, reply in enumerate(replies):
            try:
                await send_reply(
                    self.sessions,
                    self.bus,
                    conversation_id=turn.conversation_id,
                    text=reply.text,
                    author=Author.bot,
                    idempotency_key=f"bot:{turn.message_id}:{n}",
                    quick_replies=[QuickReply(text=q[:64]) for q in reply.quick_replies],
                )
            except BotSilenced:
                log.info("conversation %s was taken over mid-turn", turn.conversation_id)
                return
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

    async def _audit_mark(self) -> int:
        """The newest audit entry before the turn: what the turn writes comes after it (its
        ids are drawn later, whatever other transactions commit meanwhile)."""
        async with self.sessions() as session:
            newest = (await session.exec(select(func.max(AuditEntry.id)))).one()
        return int(newest or 0)

    async def _announce(self, turn: Turn, mark: int, client_name: str | None) -> None:
        """An `appointment` event for each change the turn made to the client's appointments."""
        async with self.sessions() as session:
            rows = (
                await session.exec(
                    select(AuditEntry, Appointment)
                    .join(Appointment, col(Appointment.id) == col(AuditEntry.entity_id))
                    .where(
                        col(AuditEntry.id) > mark,
                        AuditEntry.actor == "bot",
                        AuditEntry.entity == "appointment",
                        col(AuditEntry.action).in_(ANNOUNCED),
                        Appointment.client_id == turn.client_id,
                    )
                    .order_by(col(AuditEntry.id))
                )
            ).all()
        for entry, appointment in rows:
            await self.bus.publish_event(
                "appointment",
                appointment_id=appointment.id,
                action=entry.action,
                status=appointment.status,
                start=iso(appointment.start_at),
                master_id=appointment.master_id,
                client_id=appointment.client_id,
                client_name=client_name,
                conversation_id=turn.conversation_id,
                by="client",  # the client, through the bot
            )
