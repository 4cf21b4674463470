"""Hands each client message of a conversation in status `bot` to the responder.

Reads hub:events in its own consumer group ("bots"). A redelivered event is harmless: each
reply's idempotency key is derived from the client message it answers.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy.ext.asyncio import async_sessionmaker

from bots.base import Responder, Turn
from crm_store.models import Client, Conversation
from hub import metrics
from hub.bus import EVENTS_STREAM, Bus, Entry, PermanentError
from hub.consumer import StreamConsumer
from hub.handoff import hand_off
from hub.messages import Author, QuickReply
from hub.replies import BotSilenced, send_reply

log = logging.getLogger(__name__)

GROUP = "bots"


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
        with metrics.BOT_TURN_SECONDS.time():
            replies = await self.responder.respond(turn)
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
