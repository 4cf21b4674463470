"""`hub eval`: the AI administrator against a suite of client dialogues with known outcomes.

Each scenario (a TOML file, docs/eval.md) is a client's turns in a web chat and the state the
database must end in: what is booked, moved, cancelled, whether the conversation went to
staff, and what must not happen. Every scenario runs on a database of its own (a copy of a
migrated SQLite file holding the demo salon, no history) at a fixed clock, and is driven the
way the hub drives a brain: each client message is stored with `record_inbound`, the brain
answers only while the conversation is in status `bot`, its replies are stored as outbound
messages and a hand-off moves the conversation to `waiting`. The outcome is read from the
database, never from what the bot said it did.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bots.base import Reply, Responder, Turn
from crm_store.appointments import LIVE, AppointmentError, Author, book, set_status
from crm_store.business import Rules
from crm_store.contacts import normalize_phone
from crm_store.conversations import InboundData, record_inbound, record_outbound
from crm_store.db import create_engine, session_factory, transaction
from crm_store.demo import DATA as DEMO_DATA
from crm_store.demo import load_demo_salon
from crm_store.identity import Hints
from crm_store.migrate import upgrade_async
from crm_store.models import Appointment, ChannelIdentity, Client, Conversation, Staff
from crm_store.models import Service as ServiceRow
from hub.config import Settings
from hub.eval.checks import Row, Setup, check
from hub.eval.outcomes import Outcome, TurnLog
from hub.eval.scenarios import (
    CHANNEL,
    CHAT,
    DEFAULT_NOW,
    INBOX,
    TIMEZONE,
    CardSpec,
    Catalog,
    Scenario,
    ScenarioError,
    load_scenarios,
)

SETUP = Author("system")
BUTTON = re.compile(r"^\{button:(.+)\}$")
Brain = Literal["offline", "llm"]


# The salon --------------------------------------------------------------------------------


class Salon:
    """A migrated SQLite file with the demo salon, copied over a scenario's database file
    before each scenario: a fresh database in milliseconds instead of a migration. Each of
    the `jobs` lanes keeps its engine between scenarios (disposed, so no connection sees the
    swap): the engine's compiled-statement cache then outlives the scenario."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.template = directory / "template.sqlite3"
        self.catalog = Catalog({}, {})
        self._idle: asyncio.Queue[tuple[Path, AsyncEngine]] = asyncio.Queue()
        self._lanes: list[AsyncEngine] = []

    async def build(self, lanes: int = 1) -> None:
        url = f"sqlite:///{self.template}"
        await upgrade_async(url)
        engine = create_engine(url)
        try:
            sessions = session_factory(engine)
            async with transaction(sessions) as session:
                await load_demo_salon(
                    session, now=DEFAULT_NOW.replace(tzinfo=ZoneInfo(TIMEZONE)), history=False
                )
            self.catalog = await _read_catalog(sessions)
        finally:
            await engine.dispose()  # the last connection checkpoints the WAL into the file
        for n in range(lanes):
            path = self.directory / f"lane-{n}.sqlite3"
            lane = create_engine(f"sqlite:///{path}")
            self._lanes.append(lane)
            self._idle.put_nowait((path, lane))

    @asynccontextmanager
    async def fresh(self) -> AsyncIterator[AsyncEngine]:
        """An engine on a database just copied from the template."""
        path, engine = await self._idle.get()
        try:
            await engine.dispose()
            for leftover in (
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                leftover.unlink(missing_ok=True)
            shutil.copyfile(self.template, path)
            yield engine
        finally:
            await engine.dispose()
            self._idle.put_nowait((path, engine))

    async def close(self) -> None:
        for engine in self._lanes:
            await engine.dispose()


async def _read_catalog(sessions: async_sessionmaker[AsyncSession]) -> Catalog:
    keys = {s["en"]: s["key"] for s in json.loads(DEMO_DATA.read_text("utf-8"))["services"]}
    async with sessions() as session:
        services = (await session.exec(select(ServiceRow))).all()
        masters = (await session.exec(select(Staff).where(Staff.role == "master"))).all()
    return Catalog(
        services={keys[s.name_en]: s.id for s in services if s.name_en in keys},  # type: ignore[misc]
        masters={m.id: (m.email, m.name) for m in masters},  # type: ignore[misc]
    )


# Running ----------------------------------------------------------------------------------


async def evaluate(
    directory: Path,
    make_brain: BrainFactory,
    *,
    only: str | None = None,
    jobs: int = 1,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Load the scenarios of `directory` (raising ScenarioError on a bad one) and run them."""
    with tempfile.TemporaryDirectory(prefix="hub-eval-") as tmp:
        salon = Salon(Path(tmp))
        try:
            await salon.build(lanes=jobs)
            scenarios = load_scenarios(directory, salon.catalog, only)
            if not scenarios:
                raise ScenarioError(
                    f"{directory}: no scenario" + (f" matches {only!r}" if only else " (*.toml)")
                )
            return await run_suite(scenarios, salon, make_brain, on_done=on_done)
        finally:
            await salon.close()


BrainFactory = Callable[[async_sessionmaker[AsyncSession], Callable[[], datetime]], Responder]


def brain_factory(settings: Settings, brain: Brain) -> BrainFactory:
    """The hub's own construction (hub.brains), pinned to the demo salon's zone and money."""
    from hub.brains import build_responder

    pinned = settings.model_copy(
        update={
            "hub_bot": brain,
            "hub_timezone": TIMEZONE,
            "hub_currency": "UAH",
            "hub_default_region": "UA",
        }
    )
    return lambda sessions, clock: build_responder(pinned, sessions, clock)


async def run_suite(
    scenarios: Sequence[Scenario],
    salon: Salon,
    make_brain: BrainFactory,
    *,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Every scenario on a fresh database; as many at once as the salon has lanes."""

    async def one(scenario: Scenario) -> Outcome:
        async with salon.fresh() as engine:
            outcome = await run_scenario(scenario, engine, salon.catalog, make_brain)
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(s) for s in scenarios)))


async def run_scenario(
    scenario: Scenario, engine: AsyncEngine, catalog: Catalog, make_brain: BrainFactory
) -> Outcome:
    sessions = session_factory(engine)
    outcome = Outcome(scenario)
    brain: Responder | None = None
    try:
        setup = await _set_up(sessions, scenario, catalog)
        brain = make_brain(sessions, lambda: scenario.now)
        await _converse(sessions, brain, scenario, setup, outcome)
        outcome.failures += await check(sessions, scenario, setup, catalog, outcome)
    finally:
        await _close_brain(brain)
    return outcome


async def _set_up(
    sessions: async_sessionmaker[AsyncSession], scenario: Scenario, catalog: Catalog
) -> Setup:
    spec, now = scenario.spec, scenario.now
    clients: dict[str, int] = {}
    appointments: dict[str, Row] = {}
    async with transaction(sessions) as session:
        cards = [("me", spec.me)] if spec.me else []
        cards += [(c.key, c) for c in spec.clients]
        for key, card in cards:
            assert card is not None
            clients[key] = await _card(session, card, spec.language, now)
        if spec.me is not None:
            # The chat is already this card's, as if the client had written before.
            session.add(
                ChannelIdentity(
                    client_id=clients["me"], channel=CHANNEL, inbox=INBOX, external_id=CHAT
                )
            )
        rules = Rules(tz=ZoneInfo(TIMEZONE))
        for a in spec.appointments:
            where = f"{scenario.path}: appointment {a.key!r}"
            try:
                row = await book(
                    session,
                    client_id=clients[a.client],
                    service_id=catalog.service(a.service, where),
                    master_id=catalog.master(a.master, where),
                    start=a.start.replace(tzinfo=rules.tz),
                    rules=rules,
                    now=now,
                    author=SETUP,
                    client_window=False,
                )
            except AppointmentError as exc:  # the master's hours, an overlap: the file's fault
                raise ScenarioError(f"{where} can't be set up: {exc}") from None
            if a.status != "booked":
                row = await set_status(session, row.id, a.status, now=now, author=SETUP)  # type: ignore[arg-type]
            appointments[a.key] = Row.of(row)
    return Setup(clients, appointments)


async def _card(session: AsyncSession, card: CardSpec, language: str, now: datetime) -> int:
    client = Client(
        name=card.name,
        phone=normalize_phone(card.phone, "UA") if card.phone else None,
        email=card.email,
        language=card.language or language,
        source_channel=CHANNEL,
        first_contact_at=now,
        last_contact_at=now,
    )
    session.add(client)
    await session.flush()
    return client.id  # type: ignore[return-value]


async def _converse(
    sessions: async_sessionmaker[AsyncSession],
    brain: Responder,
    scenario: Scenario,
    setup: Setup,
    outcome: Outcome,
) -> None:
    last: list[Reply] = []
    wanted = len(scenario.bookings)
    for n, written in enumerate(scenario.spec.turns, start=1):
        text = _resolve_button(written, last)
        if text is None:
            outcome.failures.append(
                f"turn {n}: {written} — the bot's last answer has no such button"
            )
            return
        log = TurnLog(text)
        outcome.turns.append(log)
        turn = await _client_says(sessions, scenario, n, text)
        if turn is None:  # with staff: the hub does not ask the bot
            continue
        log.answered = True
        try:
            last = await brain.respond(turn)
        except Exception as exc:  # the hub would retry, then dead-letter: a failed dialogue
            outcome.failures.append(f"turn {n}: the brain raised {type(exc).__name__}: {exc}")
            return
        log.replies = last
        _count_tokens(brain, log, outcome)
        await _store_replies(sessions, turn, last, scenario.now)
        if any(r.handoff for r in last) and outcome.handoff_turn is None:
            outcome.handoff_turn = n
        if wanted and outcome.booking_turn is None:
            if len(await _new_live(sessions, setup)) >= wanted:
                outcome.booking_turn = n


def _resolve_button(written: str, last: Sequence[Reply]) -> str | None:
    """ "{button:1}" is the first quick reply of the bot's last answer, "{button:Text}" the
    first one holding that text; anything else is sent as written."""
    match = BUTTON.match(written.strip())
    if match is None:
        return written
    buttons = [b for r in last for b in r.quick_replies]
    wanted = match.group(1).strip()
    if wanted.isdigit():
        index = int(wanted) - 1
        return buttons[index] if 0 <= index < len(buttons) else None
    for test in (
        lambda b: b.casefold() == wanted.casefold(),
        lambda b: wanted.casefold() in b.casefold(),
    ):
        found = [b for b in buttons if test(b)]
        if found:
            return found[0]
    return None


async def _client_says(
    sessions: async_sessionmaker[AsyncSession], scenario: Scenario, n: int, text: str
) -> Turn | None:
    """Store the message as the router does; the Turn the bot worker would build, or None
    when the conversation is not the bot's."""
    async with transaction(sessions) as session:
        record = await record_inbound(
            session,
            InboundData(
                channel=CHANNEL,
                inbox=INBOX,
                chat_id=CHAT,
                sender_id=CHAT,
                provider_message_id=f"eval-{n}",
                sent_at=scenario.now,
                text=text,
                hints=Hints(language=scenario.spec.language),
            ),
            now=scenario.now,
        )
        conversation, client = record.conversation, record.client
        if conversation.status != "bot":
            return None
        return Turn(
            conversation_id=conversation.id,  # type: ignore[arg-type]
            client_id=client.id,  # type: ignore[arg-type]
            channel=CHANNEL,
            message_id=record.message.public_id,
            text=text,
            language=client.language,
        )


async def _store_replies(
    sessions: async_sessionmaker[AsyncSession], turn: Turn, replies: Sequence[Reply], now: datetime
) -> None:
    """As hub/pipeline/replies.py and hub/pipeline/bot_worker.py: each reply stored, then a
    hand-off moves the conversation to `waiting` (from `bot` only)."""
    async with transaction(sessions) as session:
        conversation = await session.get(Conversation, turn.conversation_id)
        assert conversation is not None
        for n, reply in enumerate(replies):
            await record_outbound(
                session,
                conversation=conversation,
                text=reply.text,
                author="bot",
                outbound_key=f"bot:{turn.message_id}:{n}",
                public_id=uuid.uuid4().hex,
                now=now,
            )
        if any(r.handoff for r in replies) and conversation.status == "bot":
            conversation.status = "waiting"
            session.add(conversation)


def _count_tokens(brain: Responder, log: TurnLog, outcome: Outcome) -> None:
    usage = getattr(brain, "last_usage", None)  # the LLM brain's; the offline one has none
    if usage is None:
        return
    log.prompt_tokens = usage.prompt_tokens
    log.retries = getattr(usage, "retries", 0)
    log.timeouts = getattr(usage, "timeouts", 0)
    outcome.retries += log.retries
    outcome.timeouts += log.timeouts
    outcome.prompt_tokens += usage.prompt_tokens
    outcome.completion_tokens += usage.completion_tokens
    outcome.estimated_tokens = outcome.estimated_tokens or usage.estimated


async def _close_brain(brain: Responder | None) -> None:
    client = getattr(brain, "client", None)
    close = getattr(client, "close", None)
    if close is not None:
        await close()


async def _new_live(sessions: async_sessionmaker[AsyncSession], setup: Setup) -> list[int]:
    known = {a.id for a in setup.appointments.values()}
    async with sessions() as session:
        rows = await session.exec(select(Appointment.id).where(col(Appointment.status).in_(LIVE)))
        return [i for i in rows.all() if i not in known]  # type: ignore[misc]
