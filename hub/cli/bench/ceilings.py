"""The ceilings of the pipeline's parts on this machine, measured in the same run as the
pipeline: what Redis streams and the store take when nothing else is done with the data.

- Redis: the same entries written with pipelined XADDs, then read back in a consumer group
  and acknowledged (XREADGROUP + XACK), 100 to a round trip: what the bus could carry.
- Store: all the SQL of one answered message (the inbound row and its conversation's and
  card's times, the bot's memory, the reply, the dispatcher's claim and answer: 7
  statements), 100 messages a transaction, each statement once for the batch through the raw
  driver (asyncpg's or sqlite3's executemany): what the store takes when the hub's own
  Python costs nothing. Clients and conversations are made first and not timed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select

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


# All the SQL of one answered message, as the pipeline's stages write it: the router stores the
# message and touches its conversation and card, the bot worker keeps its memory and stores
# the reply, the dispatcher claims the reply and stores the provider's answer.
ANSWERED = (
    (
        "INSERT INTO messages (public_id, conversation_id, client_id, channel, inbox, direction,"
        " author, text, attachments, provider_message_id, status, attempts, created_at,"
        " status_at) VALUES ({}, {}, {}, {}, {}, 'in', 'client', {}, '[]', {}, 'received', 0,"
        " {}, {})",
        (
            "in_id",
            "conversation",
            "client",
            "channel",
            "inbox",
            "text",
            "provider_id",
            "now",
            "now",
        ),
    ),
    (
        "UPDATE conversations SET last_message_at = {}, first_inbound_at = COALESCE("
        "first_inbound_at, {}) WHERE id = {}",
        ("now", "now", "conversation"),
    ),
    (
        "UPDATE clients SET last_contact_at = {}, first_contact_at = COALESCE(first_contact_at,"
        " {}) WHERE id = {}",
        ("now", "now", "client"),
    ),
    (
        "INSERT INTO bot_states (conversation_id, state, failures, updated_at) VALUES ({}, {}, 0,"
        " {}) ON CONFLICT (conversation_id) DO UPDATE SET state = excluded.state,"
        " failures = excluded.failures, updated_at = excluded.updated_at",
        ("conversation", "state", "now"),
    ),
    (
        "INSERT INTO messages (public_id, conversation_id, client_id, channel, inbox, direction,"
        " author, text, attachments, outbound_key, status, attempts, created_at, status_at)"
        " VALUES ({}, {}, {}, {}, {}, 'out', 'bot', {}, '[]', {}, 'queued', 0, {}, {})",
        ("out_id", "conversation", "client", "channel", "inbox", "text", "key", "now", "now"),
    ),
    (
        "UPDATE messages SET status = 'sending', claimed_by = 'ceiling', claimed_until = {},"
        " status_at = {} WHERE public_id = {} AND status = 'queued'",
        ("now", "now", "out_id"),
    ),
    (
        "UPDATE messages SET status = 'sent', provider_message_id = {}, attempts = 1,"
        " claimed_by = NULL, claimed_until = NULL, status_at = {} WHERE public_id = {}",
        ("sent_id", "now", "out_id"),
    ),
)


async def answered_ceiling(
    sessions: async_sessionmaker, msgs: Sequence[InboundMessage]
) -> dict[str, Any]:
    """All the SQL of an answered message, through the raw driver, 100 messages a
    transaction (each statement once for the batch, executemany): what the store could
    take if the hub's own Python cost nothing."""
    engine = sessions.kw["bind"]
    conversations = await _conversations(sessions, msgs)
    now = utcnow()
    rows = [
        {
            "in_id": uuid.uuid4().hex,
            "out_id": uuid.uuid4().hex,
            "conversation": conversations[m.chat_id][1],
            "client": conversations[m.chat_id][0],
            "channel": m.channel,
            "inbox": m.inbox,
            "text": m.text,
            "provider_id": f"ceiling-{m.provider_message_id}",
            "sent_id": f"ceiling-sent-{m.provider_message_id}",
            "key": f"ceiling:{m.provider_message_id}",
            "state": '{"lang": "uk"}',
            "now": now,
        }
        for m in msgs
    ]
    batches = [rows[n : n + BATCH] for n in range(0, len(rows), BATCH)]
    if engine.dialect.name == "sqlite":
        took = await asyncio.to_thread(_sqlite_answered, str(engine.url.database), batches)
        driver = "sqlite3"
    else:
        took = await _postgres_answered(engine.url, batches)
        driver = "asyncpg"
    # A ceiling whose statements missed their rows would flatter the store: every reply is
    # there, claimed and answered.
    async with sessions() as session:
        answered = (
            await session.exec(
                select(func.count()).where(
                    col(Message.provider_message_id).startswith("ceiling-sent-"),
                    Message.status == "sent",
                )
            )
        ).one()
    if answered != len(rows):
        raise RuntimeError(f"the store ceiling answered {answered} of {len(rows)} messages")
    return {
        "answered_per_s": round(len(rows) / took),
        "how": f"{len(ANSWERED)} statements a message, {BATCH} messages a transaction, {driver}",
    }


def _sqlite_answered(path: str, batches: list[list[dict[str, Any]]]) -> float:
    statements = [(sql.format(*["?"] * len(names)), names) for sql, names in ANSWERED]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        started = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            for sql, names in statements:
                conn.executemany(sql, [tuple(_sqlite(r[n]) for n in names) for r in batch])
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def _sqlite(value: Any) -> Any:
    # As SQLAlchemy stores a timezone-aware datetime in SQLite: ISO text.
    return value.replace(tzinfo=None).isoformat(sep=" ") if isinstance(value, datetime) else value


async def _postgres_answered(url: URL, batches: list[list[dict[str, Any]]]) -> float:
    import asyncpg

    statements = []
    for sql, names in ANSWERED:
        statements.append((sql.format(*(f"${n}" for n in range(1, len(names) + 1))), names))
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        started = time.perf_counter()
        for batch in batches:
            async with conn.transaction():
                for sql, names in statements:
                    await conn.executemany(sql, [tuple(r[n] for n in names) for r in batch])
        return time.perf_counter() - started
    finally:
        await conn.close()


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
