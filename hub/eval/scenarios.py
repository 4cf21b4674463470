"""The scenario files of `hub eval` (docs/eval.md): the TOML schema as pydantic models, loading
and checking a file, and the scenario as run, with the demo salon's names resolved to ids by the
Catalog. A file that can't be run as written raises ScenarioError before anything runs."""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crm_store.appointments import LIVE

TIMEZONE = "Europe/Kyiv"  # the scenarios are written in the demo salon's wall clock
DEFAULT_NOW = datetime(2027, 3, 1, 9, 0)  # a Monday morning
CHANNEL, INBOX, CHAT = "webchat", "site", "eval-chat"
# Scenarios kept out of sight of whoever tunes the bot: a subdirectory of the suite, run with
# it and reported as a block of its own (and prefixed "unseen/" in names).
UNSEEN = "unseen"
Part = Literal["seen", "unseen"]
Language = Literal["uk", "en", "ru"]


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
