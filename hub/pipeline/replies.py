"""Sending a reply into a conversation: stored `queued`, then put on the outbound stream.

Staff replies and bot replies both come through here. The idempotency key is unique in the
store, so a retried call (a double-click, a bot worker redelivery) stores the reply once. It
puts the reply on the outbound stream again unless it has gone already (a crash between the
commit and the XADD must not leave it unsent); the dispatcher's claim on the message
(hub/pipeline/dispatcher.py) makes sure that however many entries of it there are, it is sent once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select

from crm_store.conversations import record_outbound, take_over
from crm_store.db import transaction
from crm_store.models import Conversation, Message
from hub.messages import Author, OutboundMessage, QuickReply, new_id
from hub.pipeline.bus import Bus
from hub.pipeline.events import message_event

log = logging.getLogger(__name__)

UNSENT = ("queued", "sending")


class ReplyError(LookupError):
    pass


class BotSilenced(ReplyError):
    """A bot reply to a conversation that staff have (or wait for): not sent."""


@dataclass
class Queued:
    message: Message
    conversation: Conversation
    outbound: OutboundMessage
    created: bool


def outbound_of(message: Message, conversation: Conversation) -> OutboundMessage:
    return OutboundMessage(
        id=message.public_id,
        conversation_id=conversation.id,  # type: ignore[arg-type]
        channel=conversation.channel,  # type: ignore[arg-type]
        inbox=conversation.inbox,
        chat_id=conversation.chat_id,
        text=message.text,
        author=Author(message.author),
        staff_id=message.staff_id,
        idempotency_key=message.outbound_key or message.public_id,
    )


async def send_reply(
    sessions: async_sessionmaker,
    bus: Bus,
    *,
    conversation_id: int,
    text: str,
    author: Author,
    staff_id: int | None = None,
    idempotency_key: str | None = None,
    quick_replies: list[QuickReply] | None = None,
) -> Queued:
    key = idempotency_key or new_id()
    try:
        async with transaction(sessions) as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                raise ReplyError(f"no conversation {conversation_id}")
            if author is Author.bot and conversation.status != "bot":
                raise BotSilenced(f"conversation {conversation_id} is {conversation.status}")
            if author is Author.staff and staff_id is not None:
                await take_over(session, conversation, staff_id)
            message = await record_outbound(
                session,
                conversation=conversation,
                text=text,
                author=author.value,
                outbound_key=key,
                public_id=new_id(),
                staff_id=staff_id,
            )
        created = True
    except IntegrityError:
        async with sessions() as session:
            message = (await session.exec(select(Message).where(Message.outbound_key == key))).one()
            conversation = await session.get(Conversation, message.conversation_id)
            assert conversation is not None
        created = False
    outbound = outbound_of(message, conversation)
    if quick_replies:
        outbound.quick_replies = quick_replies
    queued = Queued(message, conversation, outbound, created)
    await publish_queued(bus, queued)
    return queued


async def publish_queued(bus: Bus, queued: Queued) -> None:
    """A stored reply onto the outbound stream, and its event for the inbox."""
    # A retried call puts it on the stream again while it may still need a carrier (queued,
    # or sending under a claim whose dispatcher may die); the claim sends it once.
    if queued.created or queued.message.status in UNSENT:
        await bus.publish_outbound(queued.outbound)
    await bus.publish_event(**message_event(queued.message, queued.conversation))
