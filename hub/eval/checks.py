"""Judging a scenario's end: the database as the dialogue left it against what the file expects
and forbids. Every appointment not expected to change must be exactly as it was set up; every
failure is one line of words (hub/eval/figures.py sorts them into kinds by how they start)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.appointments import LIVE
from crm_store.contacts import normalize_phone
from crm_store.models import Appointment, Client, Conversation
from crm_store.timeutil import aware
from hub.eval.outcomes import Outcome
from hub.eval.scenarios import CHAT, TIMEZONE, Catalog, ExpectedBooking, ExpectedMove, Scenario


@dataclass(frozen=True)
class Row:
    """What of an appointment the checks compare."""

    id: int
    client_id: int
    service_id: int
    master_id: int
    start: datetime  # aware
    status: str

    @classmethod
    def of(cls, a: Appointment) -> Row:
        return cls(a.id, a.client_id, a.service_id, a.master_id, aware(a.start_at), a.status)  # type: ignore[arg-type]


@dataclass
class Setup:
    clients: dict[str, int]  # "me" (when the client has a card) and [[clients]] keys → ids
    appointments: dict[str, Row]  # key → the appointment as set up


@dataclass
class EndState:
    appointments: dict[int, Row]
    client_id: int | None  # the conversation's card at the end, merges followed
    bot_texts: dict[int, list[str]]  # client turn (1-based) → what the bot said


async def _end_state(sessions: async_sessionmaker[AsyncSession], outcome: Outcome) -> EndState:
    async with sessions() as session:
        rows = (await session.exec(select(Appointment).order_by(col(Appointment.id)))).all()
        conversation = (
            await session.exec(select(Conversation).where(Conversation.chat_id == CHAT))
        ).first()
        client = await session.get(Client, conversation.client_id) if conversation else None
        while client is not None and client.merged_into_id is not None:
            client = await session.get(Client, client.merged_into_id)
    texts = {n: [r.text for r in log.replies] for n, log in enumerate(outcome.turns, start=1)}
    return EndState(
        {a.id: Row.of(a) for a in rows},  # type: ignore[misc]
        client.id if client is not None else None,
        texts,
    )


async def check(
    sessions: async_sessionmaker[AsyncSession],
    scenario: Scenario,
    setup: Setup,
    catalog: Catalog,
    outcome: Outcome,
) -> list[str]:
    """Every way the end state differs from the expected one, in words."""
    state = await _end_state(sessions, outcome)
    describe = _describer(catalog)
    return [
        *_check_bookings(scenario, setup, state, catalog, describe),
        *_check_setup_rows(scenario, setup, state, catalog, describe),
        *_check_handoff(scenario, outcome),
        *_check_replies(scenario, state),
        *_check_link(scenario, setup, state),
    ]


def _describer(catalog: Catalog) -> Callable[[Row], str]:
    tz = ZoneInfo(TIMEZONE)

    def describe(a: Row) -> str:
        return (
            f"{catalog.service_key(a.service_id)} with {catalog.master_name(a.master_id)} "
            f"on {a.start.astimezone(tz):%Y-%m-%d %H:%M} ({a.status})"
        )

    return describe


def _check_bookings(
    scenario: Scenario,
    setup: Setup,
    state: EndState,
    catalog: Catalog,
    describe: Callable[[Row], str],
) -> list[str]:
    """Each expected booking made, and nothing else booked."""
    known = {a.id for a in setup.appointments.values()}
    made = [a for a in state.appointments.values() if a.id not in known and a.status in LIVE]
    problems = []
    for wanted in scenario.bookings:
        hit = next((a for a in made if _fits(a, wanted)), None)
        if hit is None:
            got = "; ".join(map(describe, made)) or "nothing"
            problems.append(
                f"booked: expected {catalog.service_key(wanted.service_id)} with "
                f"{catalog.master_name(wanted.master_id)} {wanted.when.describe()}; got {got}"
            )
        else:
            made.remove(hit)
    forbidden = scenario.spec.forbid.booking or scenario.spec.expect.nothing_booked
    label = "forbidden booking" if forbidden else "unexpected booking"
    return problems + [f"{label}: {describe(extra)}" for extra in made]


def _fits(a: Row, wanted: ExpectedBooking) -> bool:
    return (
        a.service_id == wanted.service_id
        and (wanted.master_id is None or a.master_id == wanted.master_id)
        and a.status in wanted.statuses
        and wanted.when.matches(a.start.astimezone(ZoneInfo(TIMEZONE)))
    )


def _check_setup_rows(
    scenario: Scenario,
    setup: Setup,
    state: EndState,
    catalog: Catalog,
    describe: Callable[[Row], str],
) -> list[str]:
    """Cancelled and moved as expected; every other appointment exactly as it was set up."""
    moves = {m.appointment: m for m in scenario.moves}
    problems = []
    for key, before in setup.appointments.items():
        after = state.appointments[before.id]
        if key in scenario.cancels:
            if after.status != "cancelled":
                problems.append(f"cancelled: expected {key!r} cancelled; it is {describe(after)}")
        elif key in moves:
            problem = _check_move(moves[key], before, after, catalog)
            if problem:
                problems.append(f"{problem}; it is {describe(after)}")
        elif before != after:
            problems.append(
                f"{_change_label(scenario, setup, before, after)}: appointment {key!r} was "
                f"{describe(before)}, now {describe(after)}"
            )
    return problems


def _check_move(move: ExpectedMove, before: Row, after: Row, catalog: Catalog) -> str | None:
    local = after.start.astimezone(ZoneInfo(TIMEZONE))
    moved = (after.start, after.master_id) != (before.start, before.master_id)
    if (
        moved
        and after.status in LIVE
        and move.when.matches(local)
        and (move.master_id is None or after.master_id == move.master_id)
    ):
        return None
    master = f" with {catalog.master_name(move.master_id)}" if move.master_id else ""
    return f"moved: expected {move.appointment!r} {move.when.describe()}{master}"


def _change_label(scenario: Scenario, setup: Setup, before: Row, after: Row) -> str:
    forbid = scenario.spec.forbid
    mine = {setup.clients.get("me"), setup.clients.get(scenario.spec.expect.linked_to or "")}
    if before.client_id not in mine:
        return "forbidden change of another client's appointment"
    if after.status == "cancelled":
        return "forbidden cancel" if forbid.cancel else "unexpected cancel"
    return "forbidden change" if forbid.move else "unexpected change"


def _check_handoff(scenario: Scenario, outcome: Outcome) -> list[str]:
    expected = scenario.spec.expect.handoff
    if expected and not outcome.handed_off:
        return ["hand-off: expected, but the conversation stayed with the bot"]
    if not expected and outcome.handed_off:
        log = outcome.turns[outcome.handoff_turn - 1]  # type: ignore[operator]
        reason = next((r.handoff_reason for r in log.replies if r.handoff), "")
        label = "forbidden hand-off" if scenario.spec.forbid.handoff else "unexpected hand-off"
        return [f"{label} on turn {outcome.handoff_turn} ({reason})"]
    return []


def _check_replies(scenario: Scenario, state: EndState) -> list[str]:
    problems = []
    for spec in scenario.spec.expect.replies:
        turns = [spec.turn] if spec.turn is not None else list(state.bot_texts)
        said = "\n".join(t for n in turns for t in state.bot_texts.get(n, []))
        where = f"turn {spec.turn}" if spec.turn is not None else "any turn"
        if spec.silent and said:
            problems.append(f"reply on {where}: expected silence, the bot said {said[:80]!r}")
        problems += [
            f"reply on {where}: missing {text!r}"
            for text in spec.contains
            if text.casefold() not in said.casefold()
        ]
    return problems + _check_leaks(scenario, state)


def _check_leaks(scenario: Scenario, state: EndState) -> list[str]:
    """Nothing forbidden in any reply, and never another client's name or phone number
    (the digits are compared, so "050 222 33 44" is found as well as "+380502223344")."""
    everything = "\n".join(t for texts in state.bot_texts.values() for t in texts)
    digits = re.sub(r"\D", "", everything)
    problems = [
        f"forbidden text in a reply: {text!r}"
        for text in scenario.spec.forbid.replies_contain
        if text.casefold() in everything.casefold()
    ]
    for other in scenario.spec.clients:
        if other.key == scenario.spec.expect.linked_to:
            continue
        if other.name and other.name.casefold() in everything.casefold():
            problems.append(f"leak: a reply names another client ({other.key})")
        phone = normalize_phone(other.phone, "UA") if other.phone else None
        if phone and phone[-9:] in digits:
            problems.append(f"leak: a reply holds another client's phone ({other.key})")
    return problems


def _check_link(scenario: Scenario, setup: Setup, state: EndState) -> list[str]:
    key = scenario.spec.expect.linked_to
    if key is None or state.client_id == setup.clients[key]:
        return []
    return [f"linked: the chat did not end on {key!r}'s card"]
