"""Inquiries and what became of them: the figures built on messages (docs/metrics.md).

One statement walks the period's messages conversation by conversation (window functions),
finds the inquiries and, for each, its first bot and staff messages and the next inquiry, and
keeps them in a temporary table for the connection; two joins then mark those with a hand-off
and those that became a booking (joins: an EXISTS per row was most of the cost on PostgreSQL).
The tables (response times, volume, sources, conversion, containment) are small aggregates
over it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    and_,
    case,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import (
    Table as SqlTable,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics.report import Query, Table, ratio, run
from crm_store.models import Appointment, AuditEntry, Client, Message, Staff, WorkingHours
from crm_store.sqltime import (
    day_of,
    local_day,
    local_seconds,
    minute_of_day,
    seconds_between,
    weekday_of,
)

GAP_S = 24 * 3600  # silence after which a client's message starts a new inquiry
HORIZON = timedelta(days=7)  # how far past the period replies and bookings are looked for
CONVERSION_S = 7 * 86400

_meta = MetaData()
INQUIRIES = SqlTable(
    "analytics_inquiries",
    _meta,
    Column("id", Integer),
    Column("conversation_id", Integer),
    Column("client_id", Integer),
    Column("channel", String(20)),
    Column("at", DateTime(timezone=True)),
    Column("day", Integer),
    Column("in_hours", Integer),
    Column("responder", String(10)),
    Column("response_s", Float),
    Column("next_at", DateTime(timezone=True)),
    Column("staff_in", Integer),
    Column("handed_off", Integer),
    Column("converted", Integer),
    prefixes=["TEMPORARY"],
)
T = INQUIRIES.c
M = Message.__table__.c  # type: ignore[attr-defined]
A = Appointment.__table__.c  # type: ignore[attr-defined]
AU = AuditEntry.__table__.c  # type: ignore[attr-defined]


@asynccontextmanager
async def inquiries(session: AsyncSession, query: Query) -> AsyncIterator[None]:
    """The period's inquiries in a temporary table of this session's connection."""
    connection = await session.connection()
    await connection.run_sync(lambda sync: INQUIRIES.drop(sync, checkfirst=True))
    await connection.run_sync(INQUIRIES.create)
    try:
        if connection.dialect.name == "postgresql":
            # The planner's estimate of these statements crosses JIT's threshold, and compiling
            # took longer than running them (bench/analytics.py): not worth it for one page.
            await run(session, text("SET LOCAL jit = off"))
        found = await _select(session, query)
        await run(
            session, insert(INQUIRIES).from_select(list(found.selected_columns.keys()), found)
        )
        for column, among in (("handed_off", _handed_off()), ("converted", _converted())):
            await run(session, update(INQUIRIES).where(T.id.in_(among)).values({column: 1}))
        if connection.dialect.name == "postgresql":
            await run(session, text(f"ANALYZE {INQUIRIES.name}"))
        yield
    finally:
        await connection.run_sync(lambda sync: INQUIRIES.drop(sync, checkfirst=True))


async def opening_hours(session: AsyncSession) -> dict[int, tuple[int, int]]:
    """Per weekday, the salon's open span: earliest start to latest end of active staff."""
    rows = await run(
        session,
        select(
            WorkingHours.weekday, func.min(WorkingHours.start_min), func.max(WorkingHours.end_min)
        )
        .join(Staff, Staff.id == WorkingHours.master_id)  # type: ignore[arg-type]
        .where(Staff.active)  # type: ignore[arg-type]
        .group_by(WorkingHours.weekday),
    )
    return {weekday: (start, end) for weekday, start, end in rows.all()}


async def _select(session: AsyncSession, query: Query) -> Any:
    start, end = query.start, query.end
    first_seen = start - timedelta(seconds=GAP_S)
    last_seen = end + HORIZON

    # No upper bound: the exchange of a period's inquiry may end (at the next inquiry) long
    # after it. Replies are looked for only up to the horizon.
    wanted = [M.created_at >= first_seen]
    if query.channel:
        wanted.append(M.channel == query.channel)
    later_first = dict(
        partition_by=M.conversation_id,
        order_by=(M.created_at.desc(), M.id.desc()),
        rows=(None, -1),  # every message after this one
    )

    def first_after(author: str, *, until: datetime | None = None) -> Any:
        mine = and_(M.direction == "out", M.author == author)
        if until is not None:
            mine = and_(mine, M.created_at <= until)
        return func.min(case((mine, M.created_at))).over(**later_first)

    walked = (
        select(
            M.id,
            M.conversation_id,
            M.client_id,
            M.channel,
            M.created_at.label("at"),
            and_(M.direction == "in", M.author == "client").label("from_client"),
            # The message before, read in the same (newest first) order as the rest: one sort.
            func.lead(M.created_at)
            .over(partition_by=M.conversation_id, order_by=later_first["order_by"])
            .label("prev_at"),
            first_after("bot", until=last_seen).label("bot_at"),
            first_after("staff", until=last_seen).label("staff_at"),
            first_after("staff").label("staff_any_at"),
        )
        .where(*wanted)
        .subquery("walked")
    )
    w = walked.c
    starts = or_(w.prev_at.is_(None), seconds_between(w.at, w.prev_at) > GAP_S)
    next_at = func.lead(w.at).over(partition_by=w.conversation_id, order_by=(w.at, w.id))
    found = (
        select(
            w.id, w.conversation_id, w.client_id, w.channel, w.at,
            w.bot_at, w.staff_at, w.staff_any_at,
            next_at.label("next_at"),
        )
        .where(w.from_client, starts, w.at >= start)
        .subquery("found")
    )  # fmt: skip
    f = found.c

    in_exchange = and_(
        f.staff_any_at.is_not(None), or_(f.next_at.is_(None), f.staff_any_at < f.next_at)
    )
    bot_first = and_(f.bot_at.is_not(None), or_(f.staff_at.is_(None), f.bot_at <= f.staff_at))
    responder = case((bot_first, literal("bot")), (f.staff_at.is_not(None), literal("staff")))
    replied_at = case((bot_first, f.bot_at), else_=f.staff_at)
    local = local_seconds(f.at, query.tz, first_seen, last_seen)
    day = local_day(local)
    spans = await opening_hours(session)
    return select(
        f.id,
        f.conversation_id,
        f.client_id,
        f.channel,
        f.at,
        day.label("day"),
        _flag(_in_hours(spans, weekday_of(day), minute_of_day(local))).label("in_hours"),
        responder.label("responder"),
        seconds_between(replied_at, f.at).label("response_s"),
        f.next_at,
        _flag(in_exchange).label("staff_in"),
        literal(0).label("handed_off"),
        literal(0).label("converted"),
    ).where(f.at < end)


def _flag(condition: Any) -> Any:
    return case((condition, 1), else_=0)


def _handed_off() -> Any:
    """Inquiries with a hand-off in their exchange (joins, not EXISTS per row: see above)."""
    return (
        select(T.id)
        .join(
            AuditEntry.__table__,  # type: ignore[attr-defined]
            and_(
                AU.entity == "conversation",
                AU.entity_id == T.conversation_id,
                AU.action == "hand_off",
                AU.at >= T.at,
                or_(T.next_at.is_(None), AU.at < T.next_at),
            ),
        )
        .distinct()
    )


def _converted() -> Any:
    """Inquiries after which the client booked within CONVERSION_S."""
    return (
        select(T.id)
        .join(
            Appointment.__table__,  # type: ignore[attr-defined]
            and_(
                A.client_id == T.client_id,
                A.created_at >= T.at,
                seconds_between(A.created_at, T.at) <= CONVERSION_S,
            ),
        )
        .distinct()
    )


def _in_hours(spans: dict[int, tuple[int, int]], weekday: Any, minute: Any) -> Any:
    if not spans:
        return false()
    return or_(
        *[
            and_(weekday == day, minute >= opens, minute < closes)
            for day, (opens, closes) in sorted(spans.items())
        ]
    )


# The tables ------------------------------------------------------------------------------------


DIMENSIONS = ("all", "channel", "responder", "hours")


async def responses(session: AsyncSession) -> Table:
    """Per dimension and key: inquiries, answered, and the response time's median and p90.

    The response times come from SQL; the percentiles are taken in Python from the sorted
    values. Ranking them in SQL (row_number over four copies of the inquiries) sorted to
    disk on PostgreSQL and took ten times as long as fetching them."""
    result = await run(session, select(T.channel, T.responder, T.in_hours, T.response_s))
    counted: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for channel, responder, in_hours, seconds in result.all():
        keys = [("all", "all"), ("channel", channel), ("hours", "in" if in_hours else "out")]
        if responder is not None:
            keys.append(("responder", responder))
        for key in keys:
            counted[key][0] += 1
            if seconds is not None:
                counted[key][1] += 1
                times[key].append(float(seconds))
    rows = []
    for dimension in DIMENSIONS:
        for key in sorted(k for d, k in counted if d == dimension):
            n, got = counted[(dimension, key)]
            ordered = sorted(times[(dimension, key)])
            rows.append(
                {
                    "dimension": dimension,
                    "key": key,
                    "inquiries": n,
                    "answered": got,
                    "unanswered": n - got,
                    "median_s": percentile(ordered, 50),
                    "p90_s": percentile(ordered, 90),
                }
            )
    return Table("responses", rows)


def percentile(ordered: list[float], p: int) -> float | None:
    """percentile_cont: position (n-1)p/100 counted from 0, between its two neighbours."""
    if not ordered:
        return None
    low, rest = divmod((len(ordered) - 1) * p, 100)
    value = ordered[low]
    if rest:
        value += (ordered[low + 1] - value) * rest / 100
    return round(value, 3)


async def volume(session: AsyncSession) -> Table:
    result = await run(
        session,
        select(T.day, T.channel, func.count())
        .group_by(T.day, T.channel)
        .order_by(T.day, T.channel),
    )
    rows = [{"date": day_of(day), "channel": ch, "inquiries": n} for day, ch, n in result.all()]
    return Table("volume", rows)


async def sources(session: AsyncSession, query: Query) -> Table:
    C = Client.__table__.c  # type: ignore[attr-defined]
    new = and_(C.first_contact_at >= query.start, C.first_contact_at < query.end)
    result = await run(
        session,
        select(
            T.channel,
            C.source_ref,
            func.count(),
            func.count(T.client_id.distinct()),
            func.count(case((new, T.client_id)).distinct()),
            func.sum(T.converted),
        )
        .join(Client.__table__, C.id == T.client_id)  # type: ignore[attr-defined]
        .group_by(T.channel, C.source_ref),
    )
    rows = [
        {
            "channel": channel,
            "source": source,
            "inquiries": n,
            "clients": clients,
            "new_clients": newcomers,
            "converted": int(converted or 0),
        }
        for channel, source, n, clients, newcomers, converted in result.all()
    ]
    rows.sort(
        key=lambda r: (-r["inquiries"], r["channel"], r["source"] is not None, r["source"] or "")
    )
    return Table("sources", rows)


async def _per_channel(session: AsyncSession, *measures: Any) -> list[tuple[str, list[int]]]:
    """The measures summed per channel, with the `all` row first."""
    result = await run(
        session, select(T.channel, *measures).group_by(T.channel).order_by(T.channel)
    )
    per = [(channel, [int(v or 0) for v in values]) for channel, *values in result.all()]
    total = [sum(values[i] for _, values in per) for i in range(len(measures))]
    return [("all", total), *per] if per else []


async def conversion(session: AsyncSession) -> Table:
    rows = [
        {"channel": ch, "inquiries": n, "converted": won, "rate": ratio(won, n)}
        for ch, (n, won) in await _per_channel(session, func.count(), func.sum(T.converted))
    ]
    return Table("conversion", rows)


async def containment(session: AsyncSession) -> Table:
    by_bot = T.responder == "bot"
    alone = and_(by_bot, T.handed_off == 0, T.staff_in == 0)
    measures = (
        func.count(),
        func.sum(case((by_bot, 1), else_=0)),
        func.sum(case((alone, 1), else_=0)),
        func.sum(case((and_(by_bot, T.handed_off == 1), 1), else_=0)),
    )
    rows = [
        {
            "channel": ch,
            "inquiries": n,
            "bot_answered": bot,
            "contained": kept,
            "handed_off": handed,
            "containment_rate": ratio(kept, bot),
            "handoff_rate": ratio(handed, bot),
        }
        for ch, (n, bot, kept, handed) in await _per_channel(session, *measures)
    ]
    return Table("containment", rows)
