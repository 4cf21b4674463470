"""The bot worker's reads and writes, shared by the turns in flight at the same moment.

A turn starts by reading its conversation, the client's card and the bot's memory, and ends
by writing the memory and the replies. Each alone was four sessions and eight statements a
turn. Here the turns that start at the same moment share one query, and the turns that end
at the same moment share one transaction (one SELECT of their conversations, one upsert of
their memories, one INSERT of all their replies, the conversations' UPDATE), through the same
group commit as Redis's pipelines (hub/pipeline/group_commit.Batched). Turns still run as a
continuously fed pool: nothing waits for a batch to fill, one turn alone is written at once,
and a slow model holds up only its own turn.

A shared transaction that fails is written again turn by turn, so one bad turn fails only
itself; the bot worker then takes the old path for it (hub/pipeline/replies.send_reply, one
reply at a time), where a redelivered turn finds its replies already stored by their keys.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bots.base import Reply
from bots.state import Memory, keep
from crm_store.conversations import insert_messages, outbound_row
from crm_store.db import transaction
from crm_store.models import BotState, Client, Conversation, Message
from crm_store.timeutil import utcnow
from hub.messages import Author, QuickReply, new_id
from hub.pipeline.group_commit import Batched
from hub.pipeline.replies import BotSilenced, Queued, ReplyError, outbound_of

log = logging.getLogger(__name__)

MAX_BATCH = 200


@dataclass
class TurnStart:
    conversation: Conversation
    client: Client | None
    memory: Memory


@dataclass
class TurnEnd:
    conversation_id: int
    answering: str  # the client message's id: the replies' idempotency keys come from it
    replies: list[Reply]
    memory: Memory | None  # None: nothing to keep


def reply_key(answering: str, n: int) -> str:
    return f"bot:{answering}:{n}"


class TurnStore:
    def __init__(self, sessions: async_sessionmaker, *, max_batch: int = MAX_BATCH) -> None:
        self.sessions = sessions
        self._reads: Batched[int, TurnStart | None] = Batched(
            self._read, max_batch=max_batch, name="turn-reads"
        )
        self._writes: Batched[TurnEnd, list[Queued]] = Batched(
            self._write, max_batch=max_batch, name="turn-writes"
        )

    async def start(self, conversation_id: int) -> TurnStart | None:
        """The conversation, card and memory of a turn about to run; None if it is gone."""
        return await self._reads.submit(conversation_id)

    async def finish(self, end: TurnEnd) -> list[Queued]:
        """Keep the memory and store the replies (committed, not yet published). Raises
        BotSilenced (the memory still kept) when staff took the chat meanwhile."""
        return await self._writes.submit(end)

    async def _read(self, ids: list[int]) -> list[TurnStart | None]:
        async with self.sessions() as session:
            rows = (
                await session.exec(
                    select(Conversation, Client, BotState)
                    .join(Client, col(Client.id) == col(Conversation.client_id), isouter=True)
                    .join(
                        BotState,
                        col(BotState.conversation_id) == col(Conversation.id),
                        isouter=True,
                    )
                    .where(col(Conversation.id).in_(set(ids)))
                )
            ).all()
        found = {
            conversation.id: (conversation, client, state) for conversation, client, state in rows
        }
        starts: list[TurnStart | None] = []
        for conversation_id in ids:
            if conversation_id not in found:
                starts.append(None)
                continue
            conversation, client, state = found[conversation_id]
            # A memory of its own for each turn: the brain changes it in place.
            starts.append(TurnStart(conversation, client, Memory.of(conversation_id, state)))
        return starts

    async def _write(self, ends: list[TurnEnd]) -> list[object]:
        if len(ends) > 1:
            try:
                async with transaction(self.sessions) as session:
                    return await self._store(session, ends)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # rolled back: each turn again, alone
                log.info("%d turns written together failed (%s); one by one", len(ends), exc)
        results: list[object] = []
        for end in ends:
            try:
                async with transaction(self.sessions) as session:
                    results += await self._store(session, [end])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                results.append(exc)
        return results

    async def _store(self, session: AsyncSession, ends: list[TurnEnd]) -> list[object]:
        ids = {end.conversation_id for end in ends}
        conversations = {
            c.id: c
            for c in (
                await session.exec(select(Conversation).where(col(Conversation.id).in_(ids)))
            ).all()
        }
        await keep(session, [end.memory for end in ends if end.memory is not None])
        now = utcnow()
        results: list[object] = []
        messages: list[Message] = []
        for end in ends:
            conversation = conversations.get(end.conversation_id)
            if conversation is None:
                results.append(ReplyError(f"no conversation {end.conversation_id}"))
                continue
            if conversation.status != "bot":
                results.append(
                    BotSilenced(f"conversation {end.conversation_id} is {conversation.status}")
                )
                continue
            queued: list[Queued] = []
            for n, reply in enumerate(end.replies):
                message = outbound_row(
                    conversation,
                    text=reply.text,
                    author=Author.bot.value,
                    outbound_key=reply_key(end.answering, n),
                    public_id=new_id(),
                    now=now,
                )
                messages.append(message)
                outbound = outbound_of(message, conversation)
                outbound.quick_replies = [QuickReply(text=q[:64]) for q in reply.quick_replies]
                queued.append(Queued(message, conversation, outbound, created=True))
            results.append(queued)
        # All the turns' replies in one INSERT; the conversations' times as the ORM flushes.
        await insert_messages(session, messages)
        await session.flush()
        return results
