"""Lost leads: clients who asked about price or time, did not book, and have heard nothing from
us for N days (docs/metrics.md). SQL narrows to the clients with no upcoming appointment and no
recent word from us; the question itself is recognised in Python (case-folded word stems:
SQLite's lower() knows only ASCII)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics.report import Query, Table, run
from crm_store.models import Appointment, Client, Message
from crm_store.timeutil import as_utc

LIMIT = 500
TEXT_CHARS = 200
CHUNK = 500
M = Message.__table__.c  # type: ignore[attr-defined]
A = Appointment.__table__.c  # type: ignore[attr-defined]
C = Client.__table__.c  # type: ignore[attr-defined]


def interest_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    stems = sorted({w.casefold() for w in words if w.strip()}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, stems))) if stems else None


def _ours(table: Any = Message.__table__) -> Any:  # type: ignore[attr-defined]
    """A message we wrote to the client: the bot's or staff's (reminders are not a reply)."""
    return and_(table.c.direction == "out", table.c.author.in_(("bot", "staff")))


async def lost_leads(session: AsyncSession, query: Query) -> Table:
    pattern = interest_pattern(query.interest_words)
    if pattern is None:
        return Table("lost_leads", [])
    # Uncorrelated NOT IN: SQLite ran a correlated NOT EXISTS once per message.
    ours = Message.__table__.alias("ours")  # type: ignore[attr-defined]
    replied_lately = select(ours.c.client_id).where(
        _ours(ours), ours.c.created_at >= query.now - timedelta(days=query.lost_days)
    )
    coming = select(A.client_id).where(
        A.status.in_(("booked", "confirmed")), A.start_at > query.now
    )
    wanted = [
        M.direction == "in",
        M.author == "client",
        M.created_at >= query.start,
        M.created_at < query.end,
        M.client_id.not_in(replied_lately),
        M.client_id.not_in(coming),
    ]
    if query.channel:
        wanted.append(M.channel == query.channel)
    # Only what recognising the question needs; the rest is read for the leads found.
    result = await run(
        session,
        select(M.id, M.client_id, M.created_at, M.text).where(*wanted).order_by(M.created_at, M.id),
    )
    first_ask: dict[int, datetime] = {}
    last_ask: dict[int, int] = {}
    for message_id, client_id, at, words in result.all():
        if pattern.search((words or "").casefold()):
            first_ask.setdefault(client_id, as_utc(at))
            last_ask[client_id] = message_id
    booked = await _last_booked(session, list(first_ask))
    leads = [c for c in first_ask if c not in booked or booked[c] < first_ask[c]]
    asks = await _messages(session, [last_ask[c] for c in leads])
    asks.sort(key=lambda r: (-as_utc(r.created_at).timestamp(), r.client_id))
    asks = asks[:LIMIT]
    replied = await _last_replies(session, [r.client_id for r in asks])
    rows = [
        {
            "client_id": r.client_id,
            "name": r.name,
            "phone": r.phone,
            "email": r.email,
            "channel": r.channel,
            "conversation_id": r.conversation_id,
            "asked_at": as_utc(r.created_at),
            "text": (r.text or "")[:TEXT_CHARS],
            "last_reply_at": replied.get(r.client_id),
        }
        for r in asks
    ]
    return Table("lost_leads", rows)


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[n : n + CHUNK] for n in range(0, len(ids), CHUNK)]


async def _last_booked(session: AsyncSession, clients: list[int]) -> dict[int, datetime]:
    return await _latest(session, A.client_id, A.created_at, None, clients)


async def _messages(session: AsyncSession, ids: list[int]) -> list[Any]:
    found: list[Any] = []
    for chunk in _chunks(ids):
        result = await run(
            session,
            select(
                M.id, M.client_id, M.channel, M.conversation_id, M.created_at, M.text,
                C.name, C.phone, C.email,
            )
            .join(Client.__table__, C.id == M.client_id)  # type: ignore[attr-defined]
            .where(M.id.in_(chunk)),
        )  # fmt: skip
        found.extend(result.all())
    return found


async def _last_replies(session: AsyncSession, clients: list[int]) -> dict[int, datetime]:
    return await _latest(session, M.client_id, M.created_at, _ours(), clients)


async def _latest(
    session: AsyncSession, client: Any, at: Any, where: Any, clients: list[int]
) -> dict[int, datetime]:
    """The newest `at` per client among `clients` (asked in chunks), where `where` holds."""
    found: dict[int, datetime] = {}
    for chunk in _chunks(clients):
        query = select(client, func.max(at)).where(client.in_(chunk)).group_by(client)
        if where is not None:
            query = query.where(where)
        result = await run(session, query)
        found.update({c: as_utc(latest) for c, latest in result.all()})
    return found
