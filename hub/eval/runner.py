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
import datetime as dt
import json
import re
import shutil
import statistics
import tempfile
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
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
from crm_store.timeutil import aware
from hub.config import Settings

TIMEZONE = "Europe/Kyiv"  # the scenarios are written in the demo salon's wall clock
DEFAULT_NOW = datetime(2027, 3, 1, 9, 0)  # a Monday morning
CHANNEL, INBOX, CHAT = "webchat", "site", "eval-chat"
SETUP = Author("system")
BUTTON = re.compile(r"^\{button:(.+)\}$")
# Scenarios kept out of sight of whoever tunes the bot: a subdirectory of the suite, run with
# it and reported as a block of its own (and prefixed "unseen/" in names).
UNSEEN = "unseen"
Part = Literal["seen", "unseen"]
Language = Literal["uk", "en", "ru"]
Brain = Literal["offline", "llm"]


class ScenarioError(ValueError):
    """A scenario file that can't be run as written; the message names the file."""


def default_scenarios_dir() -> Path:
    """tests/scenarios of the checkout this package runs from, whatever the cwd (tests/ is
    not installed, so an installed wheel has no default and needs --scenarios)."""
    return Path(__file__).resolve().parents[2] / "tests" / "scenarios"


# Scenario files ---------------------------------------------------------------------------


class _Strict(BaseModel):
    # A misspelt key would otherwise silently drop an expectation.
    model_config = ConfigDict(extra="forbid")


class CardSpec(_Strict):
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    language: Language | None = None


class ClientSpec(CardSpec):
    key: str


class AppointmentSpec(_Strict):
    key: str
    client: str = "me"  # "me" or the key of one of [[clients]]
    service: str  # a service key of crm_store/demo_salon.json
    master: str  # email, full name or first name
    start: datetime  # local wall clock
    status: Literal["booked", "confirmed"] = "booked"


class WhenSpec(_Strict):
    # The field names are the file's keys, so the types are spelt through the module.
    date: list[dt.date] = Field(default_factory=list)  # any of these days; empty: any day
    time: dt.time | None = None
    after: dt.time | None = None  # inclusive
    before: dt.time | None = None  # inclusive

    @field_validator("date", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | dt.date) else value


class BookedSpec(WhenSpec):
    service: str
    master: str = "any"
    status: Literal["booked", "confirmed"] | None = None  # None: either


class MovedSpec(WhenSpec):
    appointment: str
    master: str | None = None  # None: any master


class CancelledSpec(_Strict):
    appointment: str


class ReplySpec(_Strict):
    turn: int | None = Field(default=None, ge=1)  # 1-based client turn; None: any turn
    contains: list[str] = Field(default_factory=list)
    silent: bool = False  # the bot said nothing on that turn


class ExpectSpec(_Strict):
    handoff: bool = False
    nothing_booked: bool = False
    booked: list[BookedSpec] = Field(default_factory=list)
    cancelled: list[CancelledSpec] = Field(default_factory=list)
    moved: list[MovedSpec] = Field(default_factory=list)
    replies: list[ReplySpec] = Field(default_factory=list)
    linked_to: str | None = None  # the chat ends on this client's card (a [[clients]] key)


class ForbidSpec(_Strict):
    """Named for the reader and the failure message; the end state is checked strictly
    anyway (what is not expected must not happen)."""

    booking: bool = False
    cancel: bool = False
    move: bool = False
    handoff: bool = False
    others_changed: Literal[True] = True  # always checked: no scenario may allow it
    replies_contain: list[str] = Field(default_factory=list)


class ScenarioFile(_Strict):
    name: str | None = None
    language: Language
    description: str = ""
    now: datetime = DEFAULT_NOW
    me: CardSpec | None = None
    clients: list[ClientSpec] = Field(default_factory=list)
    appointments: list[AppointmentSpec] = Field(default_factory=list)
    turns: list[str] = Field(min_length=1)
    expect: ExpectSpec = Field(default_factory=ExpectSpec)
    forbid: ForbidSpec = Field(default_factory=ForbidSpec)


# Scenarios as run: names resolved to ids ---------------------------------------------------


@dataclass(frozen=True)
class When:
    dates: tuple[date, ...] = ()
    at: time | None = None
    after: time | None = None
    before: time | None = None

    @classmethod
    def of(cls, spec: WhenSpec) -> When:
        return cls(tuple(spec.date), spec.time, spec.after, spec.before)

    def matches(self, local: datetime) -> bool:
        clock = local.time()
        return (
            (not self.dates or local.date() in self.dates)
            and (self.at is None or clock == self.at)
            and (self.after is None or clock >= self.after)
            and (self.before is None or clock <= self.before)
        )

    def describe(self) -> str:
        parts = []
        if self.dates:
            parts.append("on " + " or ".join(d.isoformat() for d in self.dates))
        if self.at is not None:
            parts.append(f"at {self.at:%H:%M}")
        if self.after is not None:
            parts.append(f"from {self.after:%H:%M}")
        if self.before is not None:
            parts.append(f"until {self.before:%H:%M}")
        return " ".join(parts) or "at any time"


@dataclass(frozen=True)
class ExpectedBooking:
    service_id: int
    master_id: int | None
    when: When
    statuses: tuple[str, ...]


@dataclass(frozen=True)
class ExpectedMove:
    appointment: str
    master_id: int | None
    when: When


@dataclass
class Scenario:
    name: str
    path: Path
    spec: ScenarioFile
    now: datetime  # aware, in the salon's zone
    bookings: list[ExpectedBooking]
    moves: list[ExpectedMove]
    cancels: list[str]
    part: Part = "seen"

    @property
    def category(self) -> str:
        """What the dialogue should end in, for the failure table."""
        expect = self.spec.expect
        if expect.booked:
            return "booked"
        if expect.moved:
            return "moved"
        if expect.cancelled:
            return "cancelled"
        return "handoff" if expect.handoff else "nothing"


@dataclass(frozen=True)
class Catalog:
    """The demo salon's ids, read from the template database."""

    services: dict[str, int]  # demo_salon.json key → id
    masters: dict[int, tuple[str, str]]  # id → (email, name)

    def service(self, key: str, where: str) -> int:
        if key not in self.services:
            known = ", ".join(sorted(self.services))
            raise ScenarioError(f"{where}: unknown service {key!r} (known: {known})")
        return self.services[key]

    def master(self, said: str, where: str) -> int | None:
        """None for "any"; a master by email, full name, first name or surname."""
        wanted = said.strip().casefold()
        if wanted == "any":
            return None
        found = {
            mid
            for mid, (email, name) in self.masters.items()
            if wanted in (email.casefold(), name.casefold(), *name.casefold().split())
        }
        if len(found) != 1:
            known = ", ".join(name for _, name in self.masters.values())
            raise ScenarioError(f"{where}: no single master {said!r} (masters: {known})")
        return found.pop()

    def service_key(self, service_id: int) -> str:
        return next((k for k, v in self.services.items() if v == service_id), str(service_id))

    def master_name(self, master_id: int | None) -> str:
        return "any master" if master_id is None else self.masters[master_id][1]


def load_scenarios(directory: Path, catalog: Catalog, only: str | None = None) -> list[Scenario]:
    """The directory's scenarios, then those of its `unseen/` subdirectory."""
    scenarios = [load_scenario(path, catalog) for path in sorted(directory.glob("*.toml"))]
    scenarios += [
        load_scenario(path, catalog, part="unseen")
        for path in sorted((directory / UNSEEN).glob("*.toml"))
    ]
    names = [s.name for s in scenarios]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScenarioError(f"{directory}: scenario names used twice: {', '.join(twice)}")
    if only:
        scenarios = [s for s in scenarios if only.casefold() in s.name.casefold()]
    return scenarios


def load_scenario(path: Path, catalog: Catalog, part: Part = "seen") -> Scenario:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        spec = ScenarioFile.model_validate(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise ScenarioError(f"{path}: {problems}") from None
    where = str(path)
    _check_references(spec, where)
    for a in spec.appointments:
        catalog.service(a.service, f"{where}: appointment {a.key!r}")
        catalog.master(a.master, f"{where}: appointment {a.key!r}")
    tz = ZoneInfo(TIMEZONE)
    name = spec.name or path.stem
    return Scenario(
        name=f"{UNSEEN}/{name}" if part == "unseen" else name,
        part=part,
        path=path,
        spec=spec,
        now=spec.now.replace(tzinfo=tz) if spec.now.tzinfo is None else spec.now.astimezone(tz),
        bookings=[
            ExpectedBooking(
                catalog.service(b.service, f"{where}: expect.booked"),
                catalog.master(b.master, f"{where}: expect.booked"),
                When.of(b),
                (b.status,) if b.status else LIVE,
            )
            for b in spec.expect.booked
        ],
        moves=[
            ExpectedMove(
                m.appointment,
                catalog.master(m.master, f"{where}: expect.moved") if m.master else None,
                When.of(m),
            )
            for m in spec.expect.moved
        ],
        cancels=[c.appointment for c in spec.expect.cancelled],
    )


def _check_references(spec: ScenarioFile, where: str) -> None:
    clients = {c.key for c in spec.clients}
    appointments = {a.key: a for a in spec.appointments}
    if len(appointments) != len(spec.appointments) or len(clients) != len(spec.clients):
        raise ScenarioError(f"{where}: a client or appointment key is used twice")
    for a in spec.appointments:
        if a.client != "me" and a.client not in clients:
            raise ScenarioError(f"{where}: appointment {a.key!r}: no client {a.client!r}")
        if a.client == "me" and spec.me is None:
            raise ScenarioError(f"{where}: appointment {a.key!r} is the client's: add [me]")
    linked = spec.expect.linked_to
    if linked is not None and linked not in clients:
        raise ScenarioError(f"{where}: expect.linked_to: no client {linked!r}")
    mine = {"me", linked}
    for key in [c.appointment for c in spec.expect.cancelled] + [
        m.appointment for m in spec.expect.moved
    ]:
        if key not in appointments:
            raise ScenarioError(f"{where}: expect: no appointment {key!r}")
        if appointments[key].client not in mine:
            raise ScenarioError(f"{where}: expect: {key!r} is another client's appointment")
    if spec.expect.nothing_booked and spec.expect.booked:
        raise ScenarioError(f"{where}: expect.nothing_booked with expect.booked")
    if spec.forbid.booking and spec.expect.booked:
        raise ScenarioError(f"{where}: forbid.booking with expect.booked")
    if spec.forbid.handoff and spec.expect.handoff:
        raise ScenarioError(f"{where}: forbid.handoff with expect.handoff")
    for reply in spec.expect.replies:
        if reply.turn is not None and reply.turn > len(spec.turns):
            raise ScenarioError(f"{where}: expect.replies: no turn {reply.turn}")


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


@dataclass
class TurnLog:
    text: str
    replies: list[Reply] = field(default_factory=list)
    answered: bool = False  # False: the conversation was with staff, the bot was not asked
    prompt_tokens: int | None = None
    retries: int = 0  # the model client's retries in this turn (LLM brain)
    timeouts: int = 0


@dataclass
class Outcome:
    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    turns: list[TurnLog] = field(default_factory=list)
    handoff_turn: int | None = None  # 1-based
    booking_turn: int | None = None  # the turn the expected bookings were all made
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: bool = False
    retries: int = 0
    timeouts: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def handed_off(self) -> bool:
        return self.handoff_turn is not None


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


# Checking the end state -------------------------------------------------------------------


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


async def _new_live(sessions: async_sessionmaker[AsyncSession], setup: Setup) -> list[int]:
    known = {a.id for a in setup.appointments.values()}
    async with sessions() as session:
        rows = await session.exec(select(Appointment.id).where(col(Appointment.status).in_(LIVE)))
        return [i for i in rows.all() if i not in known]  # type: ignore[misc]


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


# Totals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    prompt: float = 0.15  # USD per million prompt tokens (gpt-4o-mini-ish)
    completion: float = 0.60


def totals(outcomes: Sequence[Outcome], brain: str, prices: Prices) -> dict[str, Any]:
    """The whole run's figures, with the seen and the unseen parts as blocks of their own
    (`unseen` is None when the suite has no unseen part)."""
    result = figures(outcomes, brain, prices)
    seen = [o for o in outcomes if o.scenario.part == "seen"]
    unseen = [o for o in outcomes if o.scenario.part == "unseen"]
    result["seen"] = figures(seen, brain, prices, parts=False) if unseen else None
    result["unseen"] = figures(unseen, brain, prices, parts=False) if unseen else None
    return result


def figures(
    outcomes: Sequence[Outcome], brain: str, prices: Prices, *, parts: bool = True
) -> dict[str, Any]:
    passed = [o for o in outcomes if o.passed]
    expected = [o for o in outcomes if o.scenario.spec.expect.handoff]
    happened = [o for o in outcomes if o.handed_off]
    right = [o for o in happened if o.scenario.spec.expect.handoff]
    booking_turns = [
        o.booking_turn for o in passed if o.scenario.bookings and o.booking_turn is not None
    ]
    languages = sorted({o.scenario.spec.language for o in outcomes})
    result: dict[str, Any] = {
        "brain": brain,
        "scenarios": len(outcomes),
        "passed": len(passed),
        "completion": _ratio(len(passed), len(outcomes)),
        "handoff_expected": len(expected),
        "handoff_happened": len(happened),
        "handoff_right": len(right),
        "handoff_precision": _ratio(len(right), len(happened)),
        "handoff_recall": _ratio(len(right), len(expected)),
        "turns_per_booking": statistics.mean(booking_turns) if booking_turns else None,
        "bookings_passed": len(booking_turns),
        "by_language": {
            lang: {
                "scenarios": sum(o.scenario.spec.language == lang for o in outcomes),
                "passed": sum(o.scenario.spec.language == lang for o in passed),
            }
            for lang in languages
        },
        "retries": sum(o.retries for o in outcomes),
        "timeouts": sum(o.timeouts for o in outcomes),
        "failures_by_category": failure_table(outcomes),
        "llm": None,
    }
    if parts:
        result["seen"] = result["unseen"] = None
    if brain == "llm":
        result["llm"] = _llm_totals(outcomes, len(passed), prices)
    return result


def _llm_totals(outcomes: Sequence[Outcome], resolved: int, prices: Prices) -> dict[str, Any]:
    per_turn = [
        log.prompt_tokens for o in outcomes for log in o.turns if log.prompt_tokens is not None
    ]
    prompt = sum(o.prompt_tokens for o in outcomes)
    completion = sum(o.completion_tokens for o in outcomes)
    cost = (prompt * prices.prompt + completion * prices.completion) / 1_000_000
    return {
        "bot_turns": len(per_turn),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_per_turn_mean": statistics.mean(per_turn) if per_turn else None,
        "prompt_tokens_per_turn_p50": statistics.median(per_turn) if per_turn else None,
        "estimated": any(o.estimated_tokens for o in outcomes),
        "price_in_per_million": prices.prompt,
        "price_out_per_million": prices.completion,
        "cost_usd": cost,
        # Failed conversations cost money too: all of it is divided by the resolved ones.
        "cost_per_resolved_usd": cost / resolved if resolved else None,
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


CATEGORIES = ("booked", "moved", "cancelled", "handoff", "nothing")
# The check a failure message comes from, by how it starts (see the checks above).
CHECKS: tuple[tuple[str, str], ...] = (
    ("booked:", "not booked"),
    ("forbidden booking", "wrong booking"),
    ("unexpected booking", "wrong booking"),
    ("moved:", "not moved"),
    ("cancelled:", "not cancelled"),
    ("forbidden change of another client", "other client touched"),
    ("forbidden cancel", "wrong cancel"),
    ("unexpected cancel", "wrong cancel"),
    ("forbidden change", "wrong change"),
    ("unexpected change", "wrong change"),
    ("hand-off: expected", "missed hand-off"),
    ("forbidden hand-off", "needless hand-off"),
    ("unexpected hand-off", "needless hand-off"),
    ("reply on", "reply"),
    ("forbidden text", "forbidden text"),
    ("leak:", "leak"),
    ("linked:", "link"),
)


def failed_check(failure: str) -> str:
    if failure.startswith("turn "):  # the run stopped: the brain raised, or no such button
        return "crash" if "raised" in failure else "button"
    return next((label for prefix, label in CHECKS if failure.startswith(prefix)), "other")


def failure_table(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """Per category of expected end (booked, moved, cancelled, handoff, nothing): how many
    scenarios, how many failed, and how often each kind of check failed in them."""
    table: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        mine = [o for o in outcomes if o.scenario.category == category]
        if not mine:
            continue
        checks: dict[str, int] = {}
        for o in mine:
            for label in sorted({failed_check(f) for f in o.failures}):
                checks[label] = checks.get(label, 0) + 1
        table[category] = {
            "scenarios": len(mine),
            "failed": sum(not o.passed for o in mine),
            "checks": dict(sorted(checks.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
    return table


# Output -----------------------------------------------------------------------------------


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    s = outcome.scenario
    return {
        "name": s.name,
        "file": str(s.path),
        "language": s.spec.language,
        "passed": outcome.passed,
        "failures": outcome.failures,
        "turns": len(s.spec.turns),
        "handoff_expected": s.spec.expect.handoff,
        "handoff_turn": outcome.handoff_turn,
        "booking_turn": outcome.booking_turn,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "part": s.part,
        "category": s.category,
        "failed_checks": sorted({failed_check(f) for f in outcome.failures}),
        "retries": outcome.retries,
        "timeouts": outcome.timeouts,
        "dialogue": [turn_json(log) for log in outcome.turns],
    }


def turn_json(log: TurnLog) -> dict[str, Any]:
    """One client turn as the JSON report shows it: what was said back, with buttons and
    hand-offs; `answered` false when the conversation was with staff."""
    return {
        "client": log.text,
        "answered": log.answered,
        "replies": [
            {
                "text": r.text,
                "quick_replies": list(r.quick_replies),
                "handoff": r.handoff,
                "handoff_reason": r.handoff_reason,
            }
            for r in log.replies
        ],
        "retries": log.retries,
        "timeouts": log.timeouts,
    }
