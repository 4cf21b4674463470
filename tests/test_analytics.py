"""The owner's figures (docs/metrics.md) against answers computed independently in Python.

Two kinds of check, each on SQLite and PostgreSQL:

- small hand-built salons whose answers are written out here, so the definitions can be read
  at work (the Python reference in tests/analytics_data.py must agree with them too);
- a generated salon (six weeks of messages and appointments across the autumn clock change)
  where every table of several queries must equal what the reference computes.
"""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics import COLUMNS, TABLES, Query, dashboard, table
from tests.analytics_data import (
    CHANNELS,
    KYIV,
    LONG_ASK,
    NOW,
    Reference,
    World,
    ambiguities,
    expected,
    generated_world,
    interest_words,
    kyiv,
    percentile,
    store,
)

WORDS = interest_words()
MESSAGE_TABLES = ("responses", "volume", "sources", "conversion", "containment", "lost_leads")
APPOINTMENT_TABLES = tuple(name for name in TABLES if name not in MESSAGE_TABLES)
Sessions = async_sessionmaker[AsyncSession]


def query(first: str, last: str, now: datetime, **values: Any) -> Query:
    return Query(
        first=date.fromisoformat(first),
        last=date.fromisoformat(last),
        tz=KYIV,
        now=now,
        interest_words=WORDS,
        **values,
    )


def d(text: str) -> date:
    return date.fromisoformat(text)


def utc(text: str) -> datetime:
    """A wall-clock time in Kyiv as the aware UTC datetime the tables hold."""
    return kyiv(text)


async def rows(sessions: Sessions, name: str, q: Query) -> list[dict[str, Any]]:
    async with sessions() as session:
        return (await table(session, name, q)).rows


async def check(
    sessions: Sessions, world: World, q: Query, name: str, answer: list[dict[str, Any]]
) -> None:
    """The hand-written answer is what the reference says and what the store computes."""
    wanted = normalised(name, answer)
    reference = normalised(name, Reference(world, q).table(name))
    assert reference == wanted, "the reference disagrees with the answer"
    assert normalised(name, await rows(sessions, name, q)) == wanted


# Comparing whole tables ---------------------------------------------------------------------


def normalised(name: str, table_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """docs/metrics.md does not say whether rows of nothing are shown (a summary row of no
    inquiries, a master's day with no hours and no bookings): compare without them."""
    if name in ("occupancy_days", "occupancy_weeks"):
        return [r for r in table_rows if r["working_min"] or r["booked_min"]]
    if name in ("conversion", "containment") and table_rows:
        first = table_rows[0]
        if first["channel"] == "all" and first["inquiries"] == 0:
            return table_rows[1:]
    if name == "no_shows" and table_rows:
        first = table_rows[0]
        if first["master_id"] is None and not (
            first["done"] or first["no_shows"] or first["unsettled"]
        ):
            return table_rows[1:]
    return table_rows


def shape_errors(name: str, table_rows: list[dict[str, Any]]) -> list[str]:
    """Columns in COLUMNS order, and the value types docs and the page rely on."""
    errors = []
    for n, row in enumerate(table_rows):
        if tuple(row) != COLUMNS[name]:
            errors.append(f"{name}[{n}]: columns {tuple(row)}")
            continue
        for column, value in row.items():
            if value is None:
                continue
            if column in ("median_s", "p90_s") or column == "rate" or column.endswith("_rate"):
                ok = type(value) is float
            elif column in ("date", "week"):
                ok = type(value) is date
            elif column in ("asked_at", "last_reply_at"):
                ok = isinstance(value, datetime) and value.utcoffset() == timedelta(0)
            elif column in ("channel", "source", "key", "dimension", "master", "service", "text"):
                ok = type(value) is str
            elif column in ("name", "phone", "email"):
                ok = type(value) is str
            else:
                ok = type(value) is int
            if not ok:
                errors.append(f"{name}[{n}].{column} = {value!r} ({type(value).__name__})")
    return errors[:5]


def differences(name: str, actual: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> str:
    actual, wanted = normalised(name, actual), normalised(name, wanted)
    if actual == wanted:
        return ""
    lines = [f"{name}: {len(actual)} rows, expected {len(wanted)}"]
    for n in range(max(len(actual), len(wanted))):
        got = actual[n] if n < len(actual) else None
        want = wanted[n] if n < len(wanted) else None
        if got != want:
            lines.append(f"  first difference at row {n}:\n    got  {got}\n    want {want}")
            break
    missing = [r for r in wanted if r not in actual]
    extra = [r for r in actual if r not in wanted]
    lines += [f"  missing {r}" for r in missing[:4]] + [f"  extra   {r}" for r in extra[:4]]
    if not missing and not extra:
        lines.append("  same rows, different order")
    return "\n".join(lines)


def compare(label: str, got: dict[str, Any], wanted: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    assert tuple(got) == TABLES, f"{label}: tables {tuple(got)}"
    for name in TABLES:
        assert got[name].name == name
        problems += [f"{label}: {e}" for e in shape_errors(name, got[name].rows)]
        diff = differences(name, got[name].rows, wanted[name])
        if diff:
            problems.append(f"{label}: {diff}")
    return problems


# The generated salon ------------------------------------------------------------------------

GENERATED = {
    "main": query("2026-10-07", "2026-11-12", NOW),
    "main-en-1-day": query("2026-10-07", "2026-11-12", NOW, language="en", lost_days=1),
    "main-ru-30-days": query("2026-10-07", "2026-11-12", NOW, language="ru", lost_days=30),
    "clock-change": query("2026-10-19", "2026-10-28", NOW),
    "long-day": query("2026-10-25", "2026-10-25", NOW),
    "august": query("2026-08-01", "2026-08-31", NOW),
    "september": query("2026-09-01", "2026-09-30", NOW),
    "ahead": query("2026-11-09", "2026-11-22", NOW),
    **{
        f"main-{channel}": query("2026-10-07", "2026-11-12", NOW, channel=channel)
        for channel in (*CHANNELS, "webchat")
    },
    "clock-change-instagram": query("2026-10-19", "2026-10-28", NOW, channel="instagram"),
}


def test_the_generated_salon_exercises_the_definitions() -> None:
    """The dataset itself (no database): each definition meets its interesting cases."""
    world = generated_world()
    for n, record in enumerate(
        [*world.staff, *world.services, *world.clients, *world.conversations]
    ):
        record.id = n + 1
    for label, q in GENERATED.items():
        assert ambiguities(world, q) == [], label
    main = expected(world, GENERATED["main"])
    everything = {(r["dimension"], r["key"]): r for r in main["responses"]}
    assert everything[("all", "all")]["inquiries"] >= 80
    assert everything[("all", "all")]["unanswered"] >= 5
    assert {("responder", "bot"), ("responder", "staff"), ("hours", "in"), ("hours", "out")} <= set(
        everything
    )
    assert {r["key"] for r in main["responses"] if r["dimension"] == "channel"} == set(CHANNELS)
    totals = main["containment"][0]
    assert totals["handed_off"] >= 5 and totals["contained"] >= 20
    assert totals["bot_answered"] > totals["contained"] + totals["handed_off"]  # staff stepped in
    assert 0.1 < main["conversion"][0]["rate"] < 0.7
    assert any(r["source"] for r in main["sources"]) and any(
        r["new_clients"] for r in main["sources"]
    )
    assert all(main["no_shows"][0][k] > 0 for k in ("done", "no_shows", "unsettled"))
    assert any(r["rate"] is None for r in main["occupancy_days"])
    assert any(r["working_min"] and r["booked_min"] for r in main["occupancy_days"])
    assert main["returns"][0]["returned"] > 0 and main["returns"][0]["still_open"] > 0
    august = expected(world, GENERATED["august"])["returns"][0]
    assert august["first_visits"] > august["returned"] + august["still_open"]  # some closed
    leads = main["lost_leads"]
    assert len(leads) >= 5
    assert any(r["last_reply_at"] is None for r in leads)
    assert any(r["last_reply_at"] is not None for r in leads)
    assert any(len(r["text"]) == 200 for r in leads)
    assert len(expected(world, GENERATED["main-ru-30-days"])["lost_leads"]) < len(leads)
    assert len(expected(world, GENERATED["main-en-1-day"])["lost_leads"]) > len(leads)
    long_day = expected(world, GENERATED["long-day"])["volume"]
    assert sum(r["inquiries"] for r in long_day) >= 4


async def test_every_table_matches_the_reference(sessions: Sessions) -> None:
    world = generated_world()
    await store(sessions, world)
    problems: list[str] = []
    async with sessions() as session:
        for label, q in GENERATED.items():
            assert ambiguities(world, q) == [], label
            problems += compare(label, await dashboard(session, q), expected(world, q))
    assert not problems, "\n".join(problems)


async def test_one_table_is_the_dashboards_table(sessions: Sessions) -> None:
    world = generated_world()
    await store(sessions, world)
    for q in (GENERATED["main"], GENERATED["main-viber"], GENERATED["clock-change"]):
        async with sessions() as session:
            everything = await dashboard(session, q)
        for name in TABLES:
            alone = await rows(sessions, name, q)
            assert alone == everything[name].rows, name
    with pytest.raises(KeyError):
        await rows(sessions, "weather", GENERATED["main"])


async def test_the_channel_filter_narrows_only_message_figures(sessions: Sessions) -> None:
    world = generated_world()
    await store(sessions, world)
    async with sessions() as session:
        everything = await dashboard(session, GENERATED["main"])
        for channel in (*CHANNELS, "webchat"):
            narrowed = await dashboard(session, GENERATED[f"main-{channel}"])
            for name in APPOINTMENT_TABLES:
                assert narrowed[name].rows == everything[name].rows, (channel, name)
            assert narrowed["volume"].rows == [
                r for r in everything["volume"].rows if r["channel"] == channel
            ]
            assert narrowed["sources"].rows == [
                r for r in everything["sources"].rows if r["channel"] == channel
            ]
            for name in ("conversion", "containment"):
                mine = [r for r in everything[name].rows if r["channel"] == channel]
                assert [r for r in narrowed[name].rows if r["channel"] != "all"] == mine
                if mine:
                    assert narrowed[name].rows[0] == {**mine[0], "channel": "all"}
            by_channel = [
                {**r, "dimension": "all", "key": "all"}
                for r in everything["responses"].rows
                if r["dimension"] == "channel" and r["key"] == channel
            ]
            assert narrowed["responses"].rows[:1] == by_channel
            assert all(r["channel"] == channel for r in narrowed["lost_leads"].rows)
            if channel == "webchat":
                assert all(not narrowed[n].rows for n in ("responses", "volume", "sources"))


async def test_an_empty_database_gives_empty_tables(sessions: Sessions) -> None:
    q = query("2026-10-07", "2026-11-12", NOW)
    async with sessions() as session:
        everything = await dashboard(session, q)
    for name in TABLES:
        assert shape_errors(name, everything[name].rows) == []
        assert await rows(sessions, name, q) == everything[name].rows
    assert everything["returns"].rows == [
        {"first_visits": 0, "returned": 0, "still_open": 0, "rate": None}
    ]
    for name in ("conversion", "containment", "no_shows"):
        assert normalised(name, everything[name].rows) == [], name
    for name in TABLES:
        if name not in ("returns", "conversion", "containment", "no_shows"):
            assert everything[name].rows == [], name


# Hand-built salons with written-out answers ----------------------------------------------------

WEEK = query("2026-11-09", "2026-11-15", kyiv("2026-11-16 12:00"))  # Monday to Sunday


def small_salon() -> tuple[World, Any, Any]:
    """Olena (Mon-Fri 10:00-19:00, lunch 13-14) and one service."""
    w = World()
    olena = w.add_staff("Олена")
    w.add_hours(olena, range(5), "10:00", "19:00", [("13:00", "14:00")])
    manicure = w.add_service("Манікюр", "Manicure", "Маникюр", 60, 80_000, 15)
    return w, olena, manicure


def response(dimension: str, key: str, n: int, answered: int, median: Any, p90: Any) -> dict:
    return {
        "dimension": dimension,
        "key": key,
        "inquiries": n,
        "answered": answered,
        "unanswered": n - answered,
        "median_s": median,
        "p90_s": p90,
    }


async def test_one_inquiry_answered_by_the_bot_in_30_seconds(sessions: Sessions) -> None:
    w, _, _ = small_salon()
    client = w.add_client("Оксана", first_contact_at=kyiv("2026-11-10 12:00"))
    chat = w.chat(client, "telegram")
    w.say(chat, kyiv("2026-11-10 12:00"), "client", "Добрий день")
    w.say(chat, kyiv("2026-11-10 12:00:30"), "bot")
    await store(sessions, w)
    await check(
        sessions,
        w,
        WEEK,
        "responses",
        [
            response("all", "all", 1, 1, 30.0, 30.0),
            response("channel", "telegram", 1, 1, 30.0, 30.0),
            response("responder", "bot", 1, 1, 30.0, 30.0),
            response("hours", "in", 1, 1, 30.0, 30.0),
        ],
    )
    await check(
        sessions,
        w,
        WEEK,
        "volume",
        [{"date": d("2026-11-10"), "channel": "telegram", "inquiries": 1}],
    )
    await check(
        sessions,
        w,
        WEEK,
        "sources",
        [
            {
                "channel": "telegram",
                "source": None,
                "inquiries": 1,
                "clients": 1,
                "new_clients": 1,
                "converted": 0,
            }
        ],
    )
    contained = {
        "inquiries": 1,
        "bot_answered": 1,
        "contained": 1,
        "handed_off": 0,
        "containment_rate": 1.0,
        "handoff_rate": 0.0,
    }
    await check(
        sessions,
        w,
        WEEK,
        "containment",
        [{"channel": "all", **contained}, {"channel": "telegram", **contained}],
    )


async def test_a_new_inquiry_needs_24_hours_of_silence(sessions: Sessions) -> None:
    """Exactly 24 h later is the same exchange; a reply to a reminder too; 24 h + 1 s is not."""
    w, _, _ = small_salon()
    chat = w.chat(w.add_client("Ірина"), "viber")
    w.say(chat, kyiv("2026-11-09 10:00:00"), "client")  # inquiry 1 (first message)
    w.say(chat, kyiv("2026-11-09 10:00:10"), "bot")  # answered in 10 s
    w.say(chat, kyiv("2026-11-10 10:00:10"), "client")  # exactly 24 h: not a new inquiry
    w.say(chat, kyiv("2026-11-10 10:01:10"), "staff")  # staff in inquiry 1's exchange
    w.say(chat, kyiv("2026-11-11 16:01:10"), "system")  # a reminder, 30 h later
    w.say(chat, kyiv("2026-11-11 18:01:10"), "client")  # answers the reminder: not an inquiry
    w.say(chat, kyiv("2026-11-12 18:01:11"), "client")  # 24 h + 1 s: inquiry 2
    w.say(chat, kyiv("2026-11-12 19:00:00"), "system")  # not a response
    await store(sessions, w)
    await check(
        sessions,
        w,
        WEEK,
        "responses",
        [
            response("all", "all", 2, 1, 10.0, 10.0),
            response("channel", "viber", 2, 1, 10.0, 10.0),
            response("responder", "bot", 1, 1, 10.0, 10.0),
            response("hours", "in", 2, 1, 10.0, 10.0),
        ],
    )
    await check(
        sessions,
        w,
        WEEK,
        "volume",
        [
            {"date": d("2026-11-09"), "channel": "viber", "inquiries": 1},
            {"date": d("2026-11-12"), "channel": "viber", "inquiries": 1},
        ],
    )
    # Inquiry 1 was the bot's, but staff wrote in its exchange: not contained.
    await check(
        sessions,
        w,
        WEEK,
        "containment",
        [
            {
                "channel": channel,
                "inquiries": 2,
                "bot_answered": 1,
                "contained": 0,
                "handed_off": 0,
                "containment_rate": 0.0,
                "handoff_rate": 0.0,
            }
            for channel in ("all", "viber")
        ],
    )


def test_percentiles_are_percentile_cont() -> None:
    assert percentile([30.0], 0.5) == 30.0
    assert percentile([10.0, 20.0, 30.0, 100.0], 0.5) == 25.0
    assert percentile([10.0, 20.0, 30.0, 100.0], 0.9) == pytest.approx(79.0)
    for values in ([1.0, 2.0], [5.0, 1.0, 9.0, 3.0, 7.0], [float(v * v) for v in range(1, 23)]):
        cuts = statistics.quantiles(values, n=10, method="inclusive")
        assert percentile(values, 0.5) == pytest.approx(cuts[4])
        assert percentile(values, 0.9) == pytest.approx(cuts[8])


async def test_median_and_90th_percentile_interpolate(sessions: Sessions) -> None:
    w, _, _ = small_salon()
    for n, (after, responder) in enumerate(
        [(10, "bot"), (20, "bot"), (30, "staff"), (100, "staff"), (None, None)]
    ):
        chat = w.chat(w.add_client(f"Клієнт {n}"), "telegram")
        asked = kyiv("2026-11-10 11:00") + timedelta(minutes=n)
        w.say(chat, asked, "client")
        if after is not None and responder is not None:
            w.say(chat, asked + timedelta(seconds=after), responder)
    await store(sessions, w)
    await check(
        sessions,
        w,
        WEEK,
        "responses",
        [
            response("all", "all", 5, 4, 25.0, 79.0),
            response("channel", "telegram", 5, 4, 25.0, 79.0),
            response("responder", "bot", 2, 2, 15.0, 19.0),
            response("responder", "staff", 2, 2, 65.0, 93.0),
            response("hours", "in", 5, 4, 25.0, 79.0),
        ],
    )


async def test_the_first_response_is_ours_within_seven_days_of_the_period(
    sessions: Sessions,
) -> None:
    """Reminders and the client's own messages are no response; the reply horizon is the
    period's end plus 7 days, inclusive; nobody works on Sunday, so Sunday is out of hours."""
    w, _, _ = small_salon()
    late = w.chat(w.add_client("Пізно"), "email")
    w.say(late, kyiv("2026-11-15 23:00"), "client")
    w.say(late, kyiv("2026-11-15 23:10"), "system")
    w.say(late, kyiv("2026-11-15 23:20"), "client")
    w.say(late, kyiv("2026-11-23 01:00"), "staff")  # 7 days and 1 hour after the period
    edge = w.chat(w.add_client("Рівно"), "email")
    w.say(edge, kyiv("2026-11-15 22:00"), "client")
    w.say(edge, kyiv("2026-11-23 00:00"), "staff")  # exactly 7 days after the period
    await store(sessions, w)
    q = query("2026-11-09", "2026-11-15", kyiv("2026-11-24 12:00"))
    week_s = 7 * 86400 + 2 * 3600.0
    await check(
        sessions,
        w,
        q,
        "responses",
        [
            response("all", "all", 2, 1, week_s, week_s),
            response("channel", "email", 2, 1, week_s, week_s),
            response("responder", "staff", 1, 1, week_s, week_s),
            response("hours", "out", 2, 1, week_s, week_s),
        ],
    )
    # A day more of period: both answered (the late one after 7 days 2 hours as well).
    longer = query("2026-11-09", "2026-11-16", kyiv("2026-11-24 12:00"))
    assert [r["answered"] for r in await rows(sessions, "responses", longer)][:1] == [2]


async def test_an_unanswered_inquiry_takes_the_next_answer_in_its_conversation(
    sessions: Sessions,
) -> None:
    """docs/metrics.md: the first response is the earliest message after the inquiry in the same
    conversation that we wrote (bot or staff), up to the horizon, even past the next inquiry."""
    w, _, _ = small_salon()
    chat = w.chat(w.add_client("Двічі"), "telegram")
    w.say(chat, kyiv("2026-11-09 10:00"), "client")  # nobody answers
    w.say(chat, kyiv("2026-11-11 12:00"), "client")  # a new inquiry two days later
    w.say(chat, kyiv("2026-11-11 12:00:20"), "bot")
    await store(sessions, w)
    # Answered after 20 s and after 2 days 2 hours 20 s (180,020 s).
    await check(
        sessions,
        w,
        WEEK,
        "responses",
        [
            response("all", "all", 2, 2, 90_020.0, 162_020.0),
            response("channel", "telegram", 2, 2, 90_020.0, 162_020.0),
            response("responder", "bot", 2, 2, 90_020.0, 162_020.0),
            response("hours", "in", 2, 2, 90_020.0, 162_020.0),
        ],
    )
    await check(
        sessions,
        w,
        WEEK,
        "containment",
        [
            {
                "channel": channel,
                "inquiries": 2,
                "bot_answered": 2,
                "contained": 2,
                "handed_off": 0,
                "containment_rate": 1.0,
                "handoff_rate": 0.0,
            }
            for channel in ("all", "telegram")
        ],
    )


async def test_a_hand_off_in_a_later_exchange_is_not_this_ones(sessions: Sessions) -> None:
    """The exchange ends at the next inquiry, even when that comes after the reply horizon."""
    w, _, _ = small_salon()
    chat = w.chat(w.add_client("Оксана"), "telegram")
    w.say(chat, kyiv("2026-11-10 10:00"), "client")
    w.say(chat, kyiv("2026-11-10 10:00:05"), "bot")  # the bot alone
    w.say(chat, kyiv("2026-12-01 10:00"), "client")  # three weeks later: a new inquiry
    w.say(chat, kyiv("2026-12-01 10:00:05"), "bot")
    w.hand_off(chat, kyiv("2026-12-01 10:00:06"))
    w.say(chat, kyiv("2026-12-01 10:30"), "staff")
    await store(sessions, w)
    q = query("2026-11-09", "2026-11-15", kyiv("2026-12-02 12:00"))
    await check(
        sessions,
        w,
        q,
        "containment",
        [
            {
                "channel": channel,
                "inquiries": 1,
                "bot_answered": 1,
                "contained": 1,
                "handed_off": 0,
                "containment_rate": 1.0,
                "handoff_rate": 0.0,
            }
            for channel in ("all", "telegram")
        ],
    )


async def test_now_is_an_instant_in_any_time_zone(sessions: Sessions) -> None:
    """The same instant written in the salon's zone gives the same figures as in UTC."""
    world = generated_world()
    await store(sessions, world)
    problems: list[str] = []
    for label in ("main", "ahead", "main-en-1-day"):
        in_utc = GENERATED[label]
        local = Query(**{**in_utc.__dict__, "now": in_utc.now.astimezone(KYIV)})
        async with sessions() as session:
            got = await dashboard(session, local)
        problems += compare(f"{label} (now in Kyiv time)", got, expected(world, in_utc))
    assert not problems, "\n".join(problems)


async def test_working_hours_run_from_the_first_start_to_the_last_end(sessions: Sessions) -> None:
    w, _, _ = small_salon()  # Olena Mon-Fri 10-19 (lunch 13-14)
    iryna = w.add_staff("Ірина")
    w.add_hours(iryna, [1], "09:00", "18:00")  # Tuesday from 09:00
    admin = w.add_staff("Адмін", role="admin")
    w.add_hours(admin, [0], "08:00", "12:00")  # the desk opens at 08:00 on Mondays
    taras = w.add_staff("Тарас", active=False)
    w.add_hours(taras, range(7), "07:00", "23:00")  # left: his hours open nothing
    moments = {
        "2026-11-09 07:59:59": "out",
        "2026-11-09 08:00:00": "in",
        "2026-11-09 13:30:00": "in",  # lunch does not close the desk
        "2026-11-09 18:59:59": "in",
        "2026-11-09 19:00:30": "out",
        "2026-11-10 08:59:00": "out",
        "2026-11-10 09:00:00": "in",
        "2026-11-14 12:00:00": "out",  # Saturday: only Taras, inactive
        "2026-11-09 22:00:00": "out",
    }
    for n, moment in enumerate(moments):
        chat = w.chat(w.add_client(f"Клієнт {n}"), "sms")
        w.say(chat, kyiv(moment), "client")
        w.say(chat, kyiv(moment) + timedelta(seconds=n + 1), "bot")
    await store(sessions, w)
    by_key = {r["key"]: r for r in await rows(sessions, "responses", WEEK)}
    assert by_key["in"]["inquiries"] == 4
    assert by_key["out"]["inquiries"] == 5
    # in: answered after 2, 3, 4 and 7 s; out: after 1, 5, 6, 8 and 9 s.
    assert (by_key["in"]["median_s"], by_key["out"]["median_s"]) == (3.5, 6.0)
    assert Reference(w, WEEK).table("responses") == await rows(sessions, "responses", WEEK)


async def test_conversion_counts_bookings_within_168_hours(sessions: Sessions) -> None:
    w, olena, manicure = small_salon()
    asked = kyiv("2026-11-10 12:00")
    cases = [
        # channel, source, first contact, booked this long after asking, status
        ("telegram", "tg_promo", asked, timedelta(seconds=-1), "booked"),
        ("telegram", "tg_promo", kyiv("2026-06-01 10:00"), timedelta(0), "cancelled"),
        ("instagram", None, None, timedelta(hours=168), "booked"),
        ("instagram", None, asked, timedelta(hours=168, seconds=1), "booked"),
        ("telegram", None, asked, timedelta(days=3), "confirmed"),
        ("telegram", None, None, None, None),  # never booked
    ]
    for n, (channel, source, first_contact, after, status) in enumerate(cases):
        client = w.add_client(f"Клієнт {n}", source_ref=source, first_contact_at=first_contact)
        chat = w.chat(client, channel)
        w.say(chat, asked, "client")
        w.say(chat, asked + timedelta(seconds=5), "bot")
        start = kyiv("2026-11-26 10:00") + timedelta(hours=2 * n)
        if after is not None and status is not None:
            w.book(client, olena, manicure, start, status=status, created_at=asked + after)
    q = query("2026-11-09", "2026-11-15", kyiv("2026-11-20 12:00"))
    await store(sessions, w)
    await check(
        sessions,
        w,
        q,
        "conversion",
        [
            {"channel": "all", "inquiries": 6, "converted": 3, "rate": 0.5},
            {"channel": "instagram", "inquiries": 2, "converted": 1, "rate": 0.5},
            {"channel": "telegram", "inquiries": 4, "converted": 2, "rate": 0.5},
        ],
    )
    await check(
        sessions,
        w,
        q,
        "sources",
        [
            {
                "channel": "instagram",
                "source": None,
                "inquiries": 2,
                "clients": 2,
                "new_clients": 1,
                "converted": 1,
            },
            {
                "channel": "telegram",
                "source": None,
                "inquiries": 2,
                "clients": 2,
                "new_clients": 1,
                "converted": 1,
            },
            {
                "channel": "telegram",
                "source": "tg_promo",
                "inquiries": 2,
                "clients": 2,
                "new_clients": 1,
                "converted": 1,
            },
        ],
    )


async def test_containment_is_measured_per_exchange(sessions: Sessions) -> None:
    w, _, _ = small_salon()
    chat = w.chat(w.add_client("Telegram"), "telegram")
    # A: the bot answers, then hands the conversation over.
    w.say(chat, kyiv("2026-11-09 10:00"), "client")
    w.say(chat, kyiv("2026-11-09 10:00:05"), "bot")
    w.say(chat, kyiv("2026-11-09 10:05"), "client")
    w.say(chat, kyiv("2026-11-09 10:05:03"), "bot")
    w.hand_off(chat, kyiv("2026-11-09 10:05:04"))
    w.say(chat, kyiv("2026-11-09 10:30"), "staff")
    # B: the bot alone; entries that are no hand-off of this conversation do not count,
    # nor does the hand-off at C's very instant (it starts C's exchange).
    w.say(chat, kyiv("2026-11-10 12:00"), "client")
    w.say(chat, kyiv("2026-11-10 12:00:02"), "bot")
    w.note(chat, kyiv("2026-11-10 12:01"), "take", "conversation")
    w.note(chat, kyiv("2026-11-10 12:02"), "hand_off", "client")
    # C: handed off at the instant the client wrote.
    w.say(chat, kyiv("2026-11-11 14:00"), "client")
    w.hand_off(chat, kyiv("2026-11-11 14:00"))
    w.say(chat, kyiv("2026-11-11 14:00:03"), "bot")
    w.say(chat, kyiv("2026-11-11 14:20"), "staff")
    # E: the bot answers, staff step in without a hand-off.
    w.say(chat, kyiv("2026-11-12 16:00"), "client")
    w.say(chat, kyiv("2026-11-12 16:00:04"), "bot")
    w.say(chat, kyiv("2026-11-12 17:00"), "staff")
    # F: nobody answers.
    w.say(chat, kyiv("2026-11-14 09:00"), "client")
    other = w.chat(w.add_client("Instagram"), "instagram")
    w.say(other, kyiv("2026-11-13 11:00"), "client")
    w.say(other, kyiv("2026-11-13 11:00:07"), "bot")
    await store(sessions, w)
    await check(
        sessions,
        w,
        WEEK,
        "containment",
        [
            {
                "channel": "all",
                "inquiries": 6,
                "bot_answered": 5,
                "contained": 2,
                "handed_off": 2,
                "containment_rate": 0.4,
                "handoff_rate": 0.4,
            },
            {
                "channel": "instagram",
                "inquiries": 1,
                "bot_answered": 1,
                "contained": 1,
                "handed_off": 0,
                "containment_rate": 1.0,
                "handoff_rate": 0.0,
            },
            {
                "channel": "telegram",
                "inquiries": 5,
                "bot_answered": 4,
                "contained": 1,
                "handed_off": 2,
                "containment_rate": 0.25,
                "handoff_rate": 0.5,
            },
        ],
    )


async def test_no_shows_count_what_started_before_now(sessions: Sessions) -> None:
    w, olena, manicure = small_salon()
    iryna = w.add_staff("Ірина")
    client = w.add_client("Оксана")
    booked_at = kyiv("2026-11-01 09:00")
    for master, start, status in [
        (olena, "2026-11-08 10:00", "done"),  # before the period
        (olena, "2026-11-09 10:00", "done"),
        (olena, "2026-11-09 11:15", "no_show"),
        (olena, "2026-11-10 10:00", "done"),
        (olena, "2026-11-10 11:30", "booked"),  # nobody marked it
        (olena, "2026-11-11 10:00", "confirmed"),  # nor this
        (olena, "2026-11-11 11:30", "cancelled"),
        (olena, "2026-11-12 14:00", "booked"),  # after now
        (iryna, "2026-11-10 10:00", "no_show"),
    ]:
        w.book(client, master, manicure, kyiv(start), status=status, created_at=booked_at)
    q = query("2026-11-09", "2026-11-15", kyiv("2026-11-12 12:00"))
    await store(sessions, w)
    await check(
        sessions,
        w,
        q,
        "no_shows",
        [
            {"master_id": None, "master": None, "done": 2, "no_shows": 2, "unsettled": 2,
             "rate": 0.5},
            {"master_id": olena.id, "master": "Олена", "done": 2, "no_shows": 1, "unsettled": 2,
             "rate": 0.3333},
            {"master_id": iryna.id, "master": "Ірина", "done": 0, "no_shows": 1, "unsettled": 0,
             "rate": 1.0},
        ],
    )  # fmt: skip


async def test_occupancy_subtracts_breaks_and_time_off(sessions: Sessions) -> None:
    w, olena, manicure = small_salon()  # Olena Mon-Fri 10-19, lunch 13-14: 480 min
    owner = w.add_staff("Власниця", role="owner")  # no hours, one early appointment
    iryna = w.add_staff("Ірина")
    w.add_hours(iryna, range(1, 6), "09:00", "18:00", [("12:00", "12:30")])  # 510 min
    w.add_staff("Тарас", active=False)  # no appointments: not listed
    w.add_staff("Адмін", role="admin")  # not a master: not listed
    colouring = w.add_service("Фарбування", "Colouring", None, 120, 150_000, 15)
    haircut = w.add_service("Стрижка", "Haircut", None, 45, 60_000)
    w.add_time_off(olena, kyiv("2026-11-12 13:30"), kyiv("2026-11-12 15:30"))  # half over lunch
    w.add_time_off(iryna, kyiv("2026-11-14 00:00"), kyiv("2026-11-15 00:00"))  # Saturday off
    client = w.add_client("Оксана")
    booked_at = kyiv("2026-11-01 09:00")
    for master, service, start, status in [
        (olena, manicure, "2026-11-10 10:00", "done"),  # before the period
        (olena, manicure, "2026-11-11 10:00", "done"),  # 60 min (the buffer is not counted)
        (olena, manicure, "2026-11-11 11:15", "cancelled"),
        (olena, manicure, "2026-11-12 16:00", "no_show"),  # the time was held
        (iryna, colouring, "2026-11-13 09:00", "booked"),
        (owner, haircut, "2026-11-13 00:30", "done"),  # Friday locally, Thursday in UTC
    ]:
        w.book(client, master, service, kyiv(start), status=status, created_at=booked_at)
    q = query("2026-11-11", "2026-11-17", kyiv("2026-11-18 12:00"))  # Wednesday to Tuesday
    await store(sessions, w)

    def row(key: str, day: date, master: Any, working: int, booked: int) -> dict[str, Any]:
        rate = round(booked / working, 4) if working else None
        return {
            key: day,
            "master_id": master.id,
            "master": master.name,
            "working_min": working,
            "booked_min": booked,
            "rate": rate,
        }

    days = {  # Wed 11 .. Tue 17: olena, owner, iryna (ids in that order)
        "2026-11-11": ((480, 60), (0, 0), (510, 0)),
        "2026-11-12": ((390, 60), (0, 0), (510, 0)),
        "2026-11-13": ((480, 0), (0, 45), (510, 120)),
        "2026-11-14": ((0, 0), (0, 0), (0, 0)),
        "2026-11-15": ((0, 0), (0, 0), (0, 0)),
        "2026-11-16": ((480, 0), (0, 0), (0, 0)),
        "2026-11-17": ((480, 0), (0, 0), (510, 0)),
    }
    masters = (olena, owner, iryna)
    await check(
        sessions,
        w,
        q,
        "occupancy_days",
        [
            row("date", d(day), master, *figures)
            for day, per_master in days.items()
            for master, figures in zip(masters, per_master, strict=True)
        ],
    )
    await check(
        sessions,
        w,
        q,
        "occupancy_weeks",
        [
            row("week", d("2026-11-09"), olena, 1350, 120),
            row("week", d("2026-11-09"), owner, 0, 45),
            row("week", d("2026-11-09"), iryna, 1530, 120),
            row("week", d("2026-11-16"), olena, 960, 0),
            row("week", d("2026-11-16"), owner, 0, 0),
            row("week", d("2026-11-16"), iryna, 510, 0),
        ],
    )


async def test_occupancy_on_the_25_hour_day(sessions: Sessions) -> None:
    w = World()
    sofia = w.add_staff("Софія")
    w.add_hours(sofia, [6], "10:00", "16:00")  # Sundays
    brows = w.add_service("Брови", "Brows", None, 60, 30_000)
    client = w.add_client("Оксана")
    booked_at = kyiv("2026-10-01 09:00")
    # 03:30 in winter time, after the clocks went back: still the 25th.
    w.book(client, sofia, brows, datetime(2026, 10, 25, 1, 30, tzinfo=UTC), status="done",
           created_at=booked_at)  # fmt: skip
    # 00:30 on the 26th locally is 22:30 on the 25th in UTC: the 26th.
    w.book(client, sofia, brows, kyiv("2026-10-26 00:30"), status="done", created_at=booked_at)
    q = query("2026-10-25", "2026-10-26", kyiv("2026-11-01 12:00"))
    await store(sessions, w)
    await check(
        sessions,
        w,
        q,
        "occupancy_days",
        [
            {"date": d("2026-10-25"), "master_id": sofia.id, "master": "Софія",
             "working_min": 360, "booked_min": 60, "rate": 0.1667},
            {"date": d("2026-10-26"), "master_id": sofia.id, "master": "Софія",
             "working_min": 0, "booked_min": 60, "rate": None},
        ],
    )  # fmt: skip


async def test_returns_within_60_days_of_the_first_visit(sessions: Sessions) -> None:
    w, olena, manicure = small_salon()
    booked_at = kyiv("2026-08-01 09:00")

    def visits(name: str, *history: tuple[str, str]) -> None:
        client = w.add_client(name)
        for start, status in history:
            w.book(client, olena, manicure, kyiv(start), status=status, created_at=booked_at)

    # Exactly 60 days (the clocks went back in between: 10:00 summer time is 09:00 winter).
    visits("Рівно 60", ("2026-09-02 10:00", "done"), ("2026-11-01 09:00", "done"))
    visits("60 днів і година", ("2026-09-03 10:00", "done"), ("2026-11-02 10:00", "done"))
    visits("Ще може", ("2026-09-28 10:00", "done"), ("2026-11-20 10:00", "booked"))
    visits(
        "Спершу не прийшла",
        ("2026-08-20 10:00", "no_show"),
        ("2026-09-10 10:00", "done"),
        ("2026-09-20 10:00", "cancelled"),
        ("2026-10-01 10:00", "done"),
    )
    visits("Давня", ("2026-08-14 10:00", "done"), ("2026-09-04 10:00", "done"))
    visits("Не прийшла", ("2026-09-15 10:00", "no_show"))
    q = query("2026-09-01", "2026-09-30", kyiv("2026-11-12 12:00"))
    await store(sessions, w)
    await check(
        sessions,
        w,
        q,
        "returns",
        [{"first_visits": 4, "returned": 2, "still_open": 1, "rate": 0.6667}],
    )


async def test_revenue_per_service_and_master_in_every_language(sessions: Sessions) -> None:
    w, olena, manicure = small_salon()
    iryna = w.add_staff("Ірина")
    brows = w.add_service("Корекція брів", "Brow shaping", None, 30, 30_000)
    client = w.add_client("Оксана")
    booked_at = kyiv("2026-11-01 09:00")
    for master, service, start, status, price in [
        (olena, manicure, "2026-11-09 10:00", "done", 80_000),
        (iryna, manicure, "2026-11-09 10:00", "done", 90_000),
        (olena, brows, "2026-11-10 10:00", "done", 100_000),
        (iryna, brows, "2026-11-10 10:00", "done", 70_000),
        (olena, brows, "2026-11-11 10:00", "no_show", 30_000),
        (olena, brows, "2026-11-11 12:00", "booked", 30_000),
        (olena, manicure, "2026-11-16 10:00", "done", 80_000),  # after the period
    ]:
        w.book(client, master, service, kyiv(start), status=status, created_at=booked_at,
               price_minor=price)  # fmt: skip
    await store(sessions, w)
    names = {"uk": ("Манікюр", "Корекція брів"), "en": ("Manicure", "Brow shaping"),
             "ru": ("Маникюр", "Корекція брів")}  # fmt: skip
    for language, (first, second) in names.items():
        q = query("2026-11-09", "2026-11-15", kyiv("2026-11-20 12:00"), language=language)
        # A tie on revenue: the lower id first.
        await check(
            sessions,
            w,
            q,
            "revenue_services",
            [
                {"service_id": manicure.id, "service": first, "visits": 2,
                 "revenue_minor": 170_000},
                {"service_id": brows.id, "service": second, "visits": 2,
                 "revenue_minor": 170_000},
            ],
        )  # fmt: skip
    await check(
        sessions,
        w,
        q,
        "revenue_masters",
        [
            {"master_id": olena.id, "master": "Олена", "visits": 2, "revenue_minor": 180_000},
            {"master_id": iryna.id, "master": "Ірина", "visits": 2, "revenue_minor": 160_000},
        ],
    )


async def test_lost_leads_asked_and_left_alone(sessions: Sessions) -> None:
    w, olena, manicure = small_salon()
    now = kyiv("2026-11-12 16:30")

    def asking(name: str, channel: str, at: str, text: str, **card: Any) -> Any:
        client = w.add_client(name, **card)
        chat = w.chat(client, channel)
        w.say(chat, kyiv(at), "client", text)
        return client, chat

    silent, silent_chat = asking(
        "Мовчання", "viber", "2026-11-10 11:00", "СКІЛЬКИ КОШТУЄ фарбування?", phone="+380631"
    )
    old, old_chat = asking(
        "Old", "instagram", "2026-11-03 09:00", "What's the PRICE?", email="old@mail.test"
    )
    w.say(old_chat, kyiv("2026-11-03 09:00:40"), "bot")
    recent, recent_chat = asking("Недавно", "telegram", "2026-11-08 13:00", "Сколько стоит?")
    w.say(recent_chat, kyiv("2026-11-11 04:00"), "staff")  # 1.5 days before now
    booked, _ = asking("Записалась", "sms", "2026-11-04 10:00", "ціна манікюру?")
    w.book(booked, olena, manicure, kyiv("2026-11-16 10:00"), status="cancelled",
           created_at=kyiv("2026-11-04 10:00"))  # fmt: skip
    upcoming, _ = asking("Має запис", "telegram", "2026-11-09 18:00", "На коли я записана?")
    w.book(upcoming, olena, manicure, kyiv("2026-11-13 10:00"), status="confirmed",
           created_at=kyiv("2026-10-01 10:00"))  # fmt: skip
    asking("Просто привіт", "telegram", "2026-11-10 10:00", "Добрий день")
    wordy, wordy_chat = asking("Багато слів", "email", "2026-11-11 21:00", LONG_ASK)
    twice, twice_chat = asking("Двічі", "sms", "2026-11-02 10:00", "ціна?")
    w.say(twice_chat, kyiv("2026-11-09 10:00"), "client", "А вільні вікна є?")
    w.say(twice_chat, kyiv("2026-11-09 12:00"), "client", "Добрий день?")
    w.say(twice_chat, kyiv("2026-11-09 12:30"), "system", "Нагадування")  # not us: no reply
    q = query("2026-11-01", "2026-11-12", now)
    await store(sessions, w)

    def lead(client: Any, chat: Any, at: str, text: str, reply: str | None) -> dict[str, Any]:
        return {
            "client_id": client.id,
            "name": client.name,
            "phone": client.phone,
            "email": client.email,
            "channel": chat.channel,
            "conversation_id": chat.id,
            "asked_at": utc(at),
            "text": text,
            "last_reply_at": utc(reply) if reply else None,
        }

    wordy_row = lead(wordy, wordy_chat, "2026-11-11 21:00", LONG_ASK[:200], None)
    silent_row = lead(silent, silent_chat, "2026-11-10 11:00", "СКІЛЬКИ КОШТУЄ фарбування?", None)
    twice_row = lead(twice, twice_chat, "2026-11-09 10:00", "А вільні вікна є?", None)
    recent_row = lead(recent, recent_chat, "2026-11-08 13:00", "Сколько стоит?", "2026-11-11 04:00")
    old_row = lead(old, old_chat, "2026-11-03 09:00", "What's the PRICE?", "2026-11-03 09:00:40")
    await check(sessions, w, q, "lost_leads", [wordy_row, silent_row, twice_row, old_row])
    one_day = query("2026-11-01", "2026-11-12", now, lost_days=1)
    await check(
        sessions, w, one_day, "lost_leads", [wordy_row, silent_row, twice_row, recent_row, old_row]
    )
    month = query("2026-11-01", "2026-11-12", now, lost_days=30)
    await check(sessions, w, month, "lost_leads", [wordy_row, silent_row, twice_row])
    await check(
        sessions, w, query("2026-11-01", "2026-11-12", now, channel="sms"), "lost_leads",
        [twice_row],
    )  # fmt: skip
