"""The ceilings of the pipeline's parts on this machine, measured in the same run as the
pipeline: what Redis streams and the store take when nothing else is done with the data.

- Redis: the same entries written with pipelined XADDs, then read back in a consumer group
  and acknowledged (XREADGROUP + XACK), 100 to a round trip: what the bus could carry.
- Store: the same message rows inserted with plain INSERTs, one transaction per message, as
  the router commits (an entry is acknowledged only after its commit), on as many
  connections at once as the router uses (one per shard; one on SQLite, a single writer).
  Clients and conversations are made first and not timed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_store.db import transaction
from crm_store.models import Client, Conversation, Message
from crm_store.timeutil import utcnow
from hub.messages import InboundMessage

STREAM = "hub:bench:ceiling"
BATCH = 100


async def redis_ceiling(redis: Redis, payloads: Sequence[str]) -> dict[str, Any]:
    await redis.delete(STREAM)
    try:
        started = time.perf_counter()
        for start in range(0, len(payloads), BATCH):
            async with redis.pipeline(transaction=False) as pipe:
                for data in payloads[start : start + BATCH]:
                    pipe.xadd(STREAM, {"data": data})
                await pipe.execute()
        wrote = time.perf_counter() - started
        await redis.xgroup_create(STREAM, "bench", id="0")
        started = time.perf_counter()
        read = 0
        while read < len(payloads):
            reply = await redis.xreadgroup("bench", "bench", {STREAM: ">"}, count=BATCH)
            ids = [eid for _, entries in reply for eid, _ in entries]
            await redis.xack(STREAM, "bench", *ids)
            read += len(ids)
        took = time.perf_counter() - started
    finally:
        await redis.delete(STREAM)
    n = len(payloads)
    return {
        "write_per_s": round(n / wrote),
        "read_per_s": round(n / took),
        "write_read_per_s": round(n / (wrote + took)),
    }


async def store_ceiling(
    sessions: async_sessionmaker, msgs: Sequence[InboundMessage], *, connections: int = 8
) -> dict[str, Any]:
    engine = sessions.kw["bind"]
    if engine.dialect.name == "sqlite":
        connections = 1
    conversations = await _conversations(sessions, msgs)
    now = utcnow()
    rows = [
        {
            "public_id": uuid.uuid4().hex,
            "conversation_id": conversations[m.chat_id][1],
            "client_id": conversations[m.chat_id][0],
            "channel": m.channel,
            "inbox": m.inbox,
            "direction": "in",
            "author": "client",
            "text": m.text,
            "attachments": [],
            "provider_message_id": f"ceiling-{m.provider_message_id}",
            "status": "received",
            "sent_at": m.sent_at,
            "created_at": now,
            "status_at": now,
        }
        for m in msgs
    ]
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)

    async def writer() -> None:
        while not queue.empty():
            row = queue.get_nowait()
            async with engine.begin() as conn:
                await conn.execute(insert(Message).values(**row))

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(connections)))
    took = time.perf_counter() - started
    return {
        "inserts_per_s": round(len(rows) / took),
        "how": f"one transaction per message, {connections} connection(s)",
    }


async def _conversations(
    sessions: async_sessionmaker, msgs: Sequence[InboundMessage]
) -> dict[str, tuple[int, int]]:
    """A client card and a conversation per chat, made in one transaction (not timed)."""
    chats = sorted({(m.chat_id, m.channel, m.inbox) for m in msgs})
    async with transaction(sessions) as session:
        clients = [Client(name=f"ceiling {chat}") for chat, _, _ in chats]
        session.add_all(clients)
        await session.flush()
        conversations = [
            Conversation(client_id=c.id, channel=channel, inbox=inbox, chat_id=f"ceiling-{chat}")  # type: ignore[arg-type]
            for c, (chat, channel, inbox) in zip(clients, chats, strict=True)
        ]
        session.add_all(conversations)
        await session.flush()
        return {
            chat: (c.id, v.id)  # type: ignore[misc]
            for c, v, (chat, _, _) in zip(clients, conversations, chats, strict=True)
        }
