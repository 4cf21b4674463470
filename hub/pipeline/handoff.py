"""Who has a conversation: the bot, staff (waiting for one, or one on it), or nobody (closed).

Every change is published on hub:events as `conversation`, so open inboxes update and staff
are alerted when the bot hands a client over.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker

from bots.state import forget
from crm_store.conversations import record_hands
from crm_store.db import transaction
from crm_store.models import Conversation
from crm_store.timeutil import utcnow
from hub.pipeline.bus import Bus


class HandoffError(LookupError):
    pass


async def _set(
    sessions: async_sessionmaker,
    bus: Bus,
    conversation_id: int,
    status: str,
    *,
    reason: str,
    only_from: tuple[str, ...] | None = None,
    assignee_id: int | None = None,
    staff_id: int | None = None,
) -> Conversation | None:
    """Set the status; None when it was not in `only_from` (someone else moved it first)."""
    async with transaction(sessions) as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise HandoffError(f"no conversation {conversation_id}")
        if only_from is not None and conversation.status not in only_from:
            return None
        before = conversation.status
        conversation.status = status
        conversation.assignee_id = assignee_id
        conversation.closed_at = utcnow() if status == "closed" else None
        session.add(conversation)
        actor = "staff" if staff_id is not None else "bot" if status == "waiting" else "system"
        record_hands(session, conversation, before, actor=actor, staff_id=staff_id, reason=reason)
    await bus.publish_event(
        "conversation",
        conversation_id=conversation_id,
        client_id=conversation.client_id,
        status=status,
        previous=before,
        reason=reason,
        staff_id=staff_id,
    )
    return conversation


async def hand_off(
    sessions: async_sessionmaker, bus: Bus, conversation_id: int, *, reason: str
) -> bool:
    """The bot gives the client to staff: `waiting`, unless a human already has it."""
    changed = await _set(
        sessions, bus, conversation_id, "waiting", reason=reason, only_from=("bot",)
    )
    return changed is not None


async def give_back(
    sessions: async_sessionmaker, bus: Bus, conversation_id: int, *, staff_id: int
) -> Conversation:
    """Staff return the conversation to the bot, which starts its dialogue afresh."""
    conversation = await _set(
        sessions,
        bus,
        conversation_id,
        "bot",
        reason="given back to the bot",
        only_from=("waiting", "human", "bot"),
        staff_id=staff_id,
    )
    if conversation is None:
        raise HandoffError("a closed conversation can't be given back")
    await forget(sessions, conversation_id)
    return conversation


async def close(
    sessions: async_sessionmaker, bus: Bus, conversation_id: int, *, staff_id: int
) -> Conversation:
    """Done: the chat's next message opens a new conversation, answered by the bot."""
    conversation = await _set(
        sessions, bus, conversation_id, "closed", reason="closed by staff", staff_id=staff_id
    )
    assert conversation is not None  # no only_from: always set
    await forget(sessions, conversation_id)
    return conversation
