"""The AI administrator's hands: the only ways either brain changes or reads the CRM.

Each tool is one typed function acting for the conversation's own client: the client is
read from the conversation on every call, never taken from the model's arguments, so no
wording of a message can make the bot read or touch another client's card or appointments.
Bad arguments and refusals come back as a `ToolResult` with `ok=False` and an error the model
(or the offline brain) can act on; a tool never raises.

Two surfaces: the offline brain calls `Tools` itself, every tool included; the model gets only
`ModelTools` (`Tools.for_model()`), the tools in MODEL_TOOLS. A name outside it is refused as
an unknown tool whatever the model writes, not merely left out of the specs it is shown.

No answer tells whether a phone number belongs to a client (`update_contact`): a stranger
must not learn who is in the salon's records by typing numbers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bots.base import TURN_CHANGES, AppointmentChange
from crm_store import audit
from crm_store.appointments import (
    LIVE,
    AppointmentError,
    Author,
    SlotUnavailable,
    book,
    list_appointments,
    reschedule,
    set_status,
)
from crm_store.business import Rules, get_business
from crm_store.catalog import list_masters, list_services
from crm_store.clients import ClientError, update_client
from crm_store.contacts import normalize_phone
from crm_store.db import transaction
from crm_store.models import (
    Appointment,
    AuditEntry,
    Business,
    Client,
    Conversation,
    Service,
    Staff,
)
from crm_store.reminder_answers import latest_reminded_appointment
from crm_store.slots import Slot, find_slots
from crm_store.timeutil import aware

log = logging.getLogger(__name__)

Language = Literal["uk", "en", "ru"]
BOT = Author("bot")
SLOT_DAYS = 14  # how far find_slots looks when no end date is given
MAX_SLOT_DAYS = 31
UPCOMING_LIMIT = 10
PHONE_CLAIMED = "phone_claimed"  # the audit action of a typed phone that is on another card
# The tools the model may call, in the order it is shown them. Any other is the offline
# brain's alone: `reminded_appointment`, since the model reads the reminder, with its
# appointment's id, in the conversation itself (bots/llm.py marks it). A list of what is
# allowed, so a tool added later stays off the model's surface until it is put here.
MODEL_TOOLS = (
    "list_services",
    "find_slots",
    "book",
    "my_appointments",
    "reschedule",
    "cancel",
    "confirm",
    "update_contact",
    "handoff",
)


@dataclass(frozen=True)
class ToolContext:
    conversation_id: int
    language: Language = "uk"


@dataclass
class ToolResult:
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # Set by `handoff`: the conversation goes to staff with this reason.
    handoff: str | None = None

    def to_json(self) -> str:
        body = {"ok": True, **self.data} if self.ok else {"ok": False, "error": self.error}
        return json.dumps(body, ensure_ascii=False, default=str)


class ToolError(Exception):
    """A refusal to report back to the brain, not a crash."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.data = data


# Arguments --------------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListServicesArgs(_Args):
    """The price list: every service with its price, duration and who does it."""

    category: str | None = Field(default=None, description="nails, hair, brows, lashes, …")


class FindSlotsArgs(_Args):
    """Free start times for a service, soonest first, in the salon's local time."""

    service_id: int = Field(ge=1)
    master_id: int | None = Field(default=None, ge=1, description="omit for any master")
    date_from: date | None = Field(default=None, description="local date, YYYY-MM-DD")
    date_to: date | None = Field(default=None, description="local date, inclusive")
    after: time | None = Field(default=None, description="earliest start, HH:MM")
    before: time | None = Field(default=None, description="latest start, HH:MM")
    limit: int = Field(default=6, ge=1, le=100)
    moving: int | None = Field(
        default=None, ge=1, description="id of the client's own appointment being moved"
    )


class BookArgs(_Args):
    """Book the client for a service at a free start time found by find_slots."""

    service_id: int = Field(ge=1)
    start: datetime = Field(description="local time, YYYY-MM-DDTHH:MM")
    master_id: int | None = Field(default=None, ge=1, description="omit for any master")
    # Who the visit is for when it is not the writer ("for my son"): the booking stays on
    # the writer's card, where the salon can reach someone, and staff read the note.
    note: str = Field(default="", max_length=300)


class MyAppointmentsArgs(_Args):
    """The client's own upcoming appointments."""


class RescheduleArgs(_Args):
    """Move one of the client's own upcoming appointments to another free time."""

    appointment_id: int = Field(ge=1)
    start: datetime = Field(description="local time, YYYY-MM-DDTHH:MM")
    master_id: int | None = Field(default=None, ge=1, description="omit to keep the master")


class CancelArgs(_Args):
    """Cancel one of the client's own upcoming appointments."""

    appointment_id: int = Field(ge=1)
    reason: str = Field(default="", max_length=300)


class ConfirmArgs(_Args):
    """Confirm one of the client's own upcoming appointments: they will come (e.g. their
    answer to a reminder)."""

    appointment_id: int = Field(ge=1)


class RemindedAppointmentArgs(_Args):
    """The upcoming appointment the client was last reminded of (in the last three days)."""


class ContactArgs(_Args):
    """What the salon knows of the client: whether their card has a name and a phone."""


class UpdateContactArgs(_Args):
    """Save the client's name or phone number on their card."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    phone: str | None = Field(default=None, min_length=5, max_length=40)

    @model_validator(mode="after")
    def _something(self) -> UpdateContactArgs:
        if self.name is None and self.phone is None:
            raise ValueError("give a name or a phone")
        return self


class HandoffArgs(_Args):
    """Hand the conversation to a human administrator."""

    reason: str = Field(min_length=1, max_length=300)


# The tools --------------------------------------------------------------------------------

Impl = Callable[[Any, "_Call"], Awaitable[ToolResult]]


@dataclass
class _Call:
    session: AsyncSession
    ctx: ToolContext
    client_id: int
    rules: Rules
    business: Business
    now: datetime
    # What the call changed, told to the turn's runner once committed (bots.base.TURN_CHANGES).
    changes: list[AppointmentChange] = field(default_factory=list)

    def changed(self, appointment: Appointment, action: str) -> None:
        self.changes.append(
            AppointmentChange(
                appointment_id=appointment.id,  # type: ignore[arg-type]
                action=action,
                status=appointment.status,
                start=appointment.start_at,
                master_id=appointment.master_id,
                client_id=appointment.client_id,
            )
        )


class Tools:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        timezone: str = "Europe/Kyiv",
        currency: str = "UAH",
        region: str = "UA",
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.timezone = timezone
        self.currency = currency
        self.region = region
        self.registry: dict[str, tuple[type[_Args], Impl]] = {
            "list_services": (ListServicesArgs, self._list_services),
            "find_slots": (FindSlotsArgs, self._find_slots),
            "book": (BookArgs, self._book),
            "my_appointments": (MyAppointmentsArgs, self._my_appointments),
            "reschedule": (RescheduleArgs, self._reschedule),
            "cancel": (CancelArgs, self._cancel),
            "confirm": (ConfirmArgs, self._confirm),
            "update_contact": (UpdateContactArgs, self._update_contact),
            "handoff": (HandoffArgs, self._handoff),
            "reminded_appointment": (RemindedAppointmentArgs, self._reminded_appointment),
            "contact": (ContactArgs, self._contact),
        }

    def for_model(self) -> ModelTools:
        """The surface the LLM brain hands the model."""
        return ModelTools(self)

    async def call(
        self, name: str, arguments: str | Mapping[str, Any] | None, ctx: ToolContext
    ) -> ToolResult:
        """Validate and run one tool in its own transaction; every failure is a result."""
        if name not in self.registry:
            return unknown_tool(name)
        model, impl = self.registry[name]
        try:
            raw = json.loads(arguments or "{}") if isinstance(arguments, str) else arguments
            args = model.model_validate(raw or {})
        except json.JSONDecodeError as exc:
            return ToolResult(False, error=f"arguments are not JSON: {exc.msg}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return ToolResult(False, error=f"invalid arguments: {problems}")
        try:
            async with transaction(self.sessions) as session:
                call = await self._open(session, ctx)
                result = await impl(args, call)
            heard = TURN_CHANGES.get()
            if heard is not None:
                heard.extend(call.changes)
            return result
        except ToolError as exc:
            return ToolResult(False, data=exc.data, error=str(exc))
        except (AppointmentError, ClientError) as exc:
            return ToolResult(False, error=str(exc))
        except Exception:
            log.exception("tool %s failed", name)
            return ToolResult(False, error="the tool failed; try again or hand off")

    async def _open(self, session: AsyncSession, ctx: ToolContext) -> _Call:
        conversation = await session.get(Conversation, ctx.conversation_id)
        if conversation is None:
            raise ToolError("the conversation is gone")
        business = await get_business(session, timezone=self.timezone, currency=self.currency)
        return _Call(
            session, ctx, conversation.client_id, Rules.of(business), business, self.clock()
        )

    # Reading ------------------------------------------------------------------------------

    async def _list_services(self, args: ListServicesArgs, call: _Call) -> ToolResult:
        masters = await list_masters(call.session)
        doing: dict[int, list[str]] = {}
        for card in masters:
            for offer in card.offers:
                doing.setdefault(offer.service_id, []).append(card.staff.name)
        services = [
            s
            for s in await list_services(call.session)
            if s.id in doing and (not args.category or s.category == args.category.lower())
        ]
        return ToolResult(
            True,
            {
                "currency": call.rules.currency,
                "services": [
                    {
                        "id": s.id,
                        "name": service_name(s, call.ctx.language),
                        "category": s.category,
                        "duration_min": s.duration_min,
                        "price": s.price_minor / 100,
                        "masters": doing[s.id],  # type: ignore[index]
                    }
                    for s in services
                ],
            },
        )

    async def _find_slots(self, args: FindSlotsArgs, call: _Call) -> ToolResult:
        service = await _service(call.session, args.service_id)
        if args.master_id is not None:
            await _master(call.session, args.master_id)
        earliest, latest = call.rules.window(call.now)
        today = earliest.astimezone(call.rules.tz).date()
        first = max(args.date_from or today, today)
        last = args.date_to or first + timedelta(days=SLOT_DAYS - 1)
        if last < first:
            raise ToolError("date_to is before date_from (or in the past)")
        last = min(last, first + timedelta(days=MAX_SLOT_DAYS - 1))
        if args.moving is not None:
            await self._own(call, args.moving)  # its time is free only to its own client
        found = await find_slots(
            call.session,
            service_id=service.id,  # type: ignore[arg-type]
            rules=call.rules,
            first_day=first,
            last_day=last,
            master_id=args.master_id,
            earliest=earliest,
            latest=latest,
            ignore_appointment=args.moving,
        )
        fitting = [s for s in found if _within(s, call.rules, args.after, args.before)]
        names = await _staff_names(call.session, {s.master_id for s in fitting})
        return ToolResult(
            True,
            {
                "service": service_name(service, call.ctx.language),
                "slots": [slot_json(s, call.rules, names) for s in fitting[: args.limit]],
                "more": max(0, len(fitting) - args.limit),
            },
        )

    async def _my_appointments(self, args: MyAppointmentsArgs, call: _Call) -> ToolResult:
        del args
        rows = await list_appointments(
            call.session,
            client_id=call.client_id,
            start=call.now,
            statuses=LIVE,
            limit=UPCOMING_LIMIT,
        )
        return ToolResult(True, {"appointments": await self._described(call, rows)})

    async def _reminded_appointment(self, args: RemindedAppointmentArgs, call: _Call) -> ToolResult:
        """What a bare "Confirm" or "Cancel" answers: the client's own reminded appointment,
        and only while it is still ahead and live (crm_store.reminder_answers)."""
        del args
        found = await latest_reminded_appointment(call.session, call.client_id, call.now)
        if found is None:
            return ToolResult(True, {"appointment": None})
        (described,) = await self._described(call, [found])
        return ToolResult(True, {"appointment": described})

    # Changing -----------------------------------------------------------------------------

    async def _book(self, args: BookArgs, call: _Call) -> ToolResult:
        start = _local(args.start, call.rules)
        try:
            appointment = await book(
                call.session,
                client_id=call.client_id,
                service_id=args.service_id,
                master_id=args.master_id,
                start=start,
                rules=call.rules,
                now=call.now,
                author=BOT,
                source="bot",
                notes=args.note,
            )
        except SlotUnavailable as exc:
            raise await self._unavailable(call, exc) from None
        call.changed(appointment, "book")
        (described,) = await self._described(call, [appointment])
        return ToolResult(
            True,
            {
                "booked": described,
                "address": self._address(call),
                "client_has_phone": await _gave_phone(call.session, call.client_id),
            },
        )

    async def _reschedule(self, args: RescheduleArgs, call: _Call) -> ToolResult:
        await self._own(call, args.appointment_id)
        try:
            appointment = await reschedule(
                call.session,
                args.appointment_id,
                start=_local(args.start, call.rules),
                master_id=args.master_id,
                rules=call.rules,
                now=call.now,
                author=BOT,
            )
        except SlotUnavailable as exc:
            raise await self._unavailable(call, exc) from None
        call.changed(appointment, "reschedule")
        (described,) = await self._described(call, [appointment])
        return ToolResult(True, {"moved": described, "address": self._address(call)})

    async def _cancel(self, args: CancelArgs, call: _Call) -> ToolResult:
        before = (await self._own(call, args.appointment_id)).status
        appointment = await set_status(
            call.session,
            args.appointment_id,
            "cancelled",
            now=call.now,
            author=BOT,
            reason=args.reason or "cancelled by the client in chat",
        )
        if appointment.status != before:
            call.changed(appointment, "cancelled")
        (described,) = await self._described(call, [appointment])
        return ToolResult(True, {"cancelled": described})

    async def _confirm(self, args: ConfirmArgs, call: _Call) -> ToolResult:
        before = (await self._own(call, args.appointment_id)).status
        appointment = await set_status(
            call.session, args.appointment_id, "confirmed", now=call.now, author=BOT
        )
        if appointment.status != before:
            call.changed(appointment, "confirmed")
        (described,) = await self._described(call, [appointment])
        return ToolResult(True, {"confirmed": described})

    async def _update_contact(self, args: UpdateContactArgs, call: _Call) -> ToolResult:
        """A typed phone proves nothing: anyone can type a neighbour's number. So a phone that
        is already on another card is not linked here (that would show and let them change
        the other client's appointments); it is written to the audit log as a claim for staff
        to check and merge. A phone the channel vouches for (a Telegram contact share, the
        SMS sender) is linked by the router as before.

        The answer is the same, to the byte, whether or not the number was known: the number
        as noted and the card's name. Anything else would tell a stranger (or the model, who
        would repeat it) that the number belongs to a client."""
        changes: dict[str, Any] = {}
        noted = None
        if args.phone is not None:
            noted = normalize_phone(args.phone, self.region)
            if noted is None:  # said of the text alone, never of the records
                raise ToolError(f"{args.phone!r} is not a valid phone number")
            other = await _card_with_phone(call.session, noted, besides=call.client_id)
            if other is not None:
                audit.record(
                    call.session,
                    actor="bot",
                    entity="client",
                    entity_id=call.client_id,
                    action=PHONE_CLAIMED,
                    changes={"phone": noted, "card_with_that_phone": other},
                )
            else:
                changes["phone"] = noted
        if args.name is not None:
            changes["name"] = args.name
        client = await update_client(
            call.session, call.client_id, changes, actor="bot", region=self.region
        )
        return ToolResult(True, {"name": client.name, "phone": noted or client.phone})

    async def _contact(self, args: ContactArgs, call: _Call) -> ToolResult:
        """Booleans only, and the name the client gave: a brain asks for what is missing
        before it books on a channel that vouches for neither (the web chat, email)."""
        del args
        client = await call.session.get(Client, call.client_id)
        name = (client.name or "").strip() if client is not None else ""
        return ToolResult(
            True,
            {
                "has_name": bool(name),
                "has_phone": await _gave_phone(call.session, call.client_id),
                "name": name,
            },
        )

    async def _handoff(self, args: HandoffArgs, call: _Call) -> ToolResult:
        del call
        return ToolResult(True, {"handed_off": True}, handoff=args.reason)

    # Helpers ------------------------------------------------------------------------------

    async def _own(self, call: _Call, appointment_id: int) -> Appointment:
        """The client's own live, upcoming appointment; anyone else's reads as not found."""
        appointment = await call.session.get(Appointment, appointment_id)
        if (
            appointment is None
            or appointment.client_id != call.client_id
            or appointment.status not in LIVE
            or aware(appointment.start_at) < call.now  # type: ignore[operator]
        ):
            raise ToolError(f"the client has no upcoming appointment {appointment_id}")
        return appointment

    async def _unavailable(self, call: _Call, exc: SlotUnavailable) -> ToolError:
        names = await _staff_names(call.session, {s.master_id for s in exc.alternatives})
        return ToolError(
            str(exc),
            reason=exc.reason,
            alternatives=[slot_json(s, call.rules, names) for s in exc.alternatives],
        )

    async def _described(self, call: _Call, rows: list[Appointment]) -> list[dict[str, Any]]:
        services = {
            s.id: s
            for s in (
                await call.session.exec(
                    select(Service).where(col(Service.id).in_({a.service_id for a in rows}))
                )
            ).all()
        }
        names = await _staff_names(call.session, {a.master_id for a in rows})
        result = []
        for a in rows:
            local = aware(a.start_at).astimezone(call.rules.tz)  # type: ignore[union-attr]
            result.append(
                {
                    "id": a.id,
                    "service_id": a.service_id,
                    "service": service_name(services[a.service_id], call.ctx.language),
                    "master_id": a.master_id,
                    "master": names.get(a.master_id),
                    "date": local.date().isoformat(),
                    "weekday": local.weekday(),
                    "time": local.strftime("%H:%M"),
                    "price": a.price_minor / 100,
                    "currency": call.rules.currency,
                    "status": a.status,
                }
            )
        return result

    def _address(self, call: _Call) -> str:
        address = call.business.address or {}
        return address.get(call.ctx.language) or address.get("uk") or ""


# The model's surface -----------------------------------------------------------------------


def unknown_tool(name: str) -> ToolResult:
    return ToolResult(False, error=f"unknown tool {name!r}")


class ModelTools:
    """The tools the model may call: their specs, and a `call` that refuses any other name
    exactly as it refuses a name that exists nowhere, so a model that names a hidden tool
    (it read about it, or guessed) gets nothing run and learns nothing."""

    def __init__(self, tools: Tools, names: Sequence[str] = MODEL_TOOLS) -> None:
        missing = [name for name in names if name not in tools.registry]
        if missing:
            raise ValueError(f"no such tools: {', '.join(missing)}")
        self.tools = tools
        self.names = tuple(names)

    def specs(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function definitions."""
        specs = []
        for name in self.names:
            model, _ = self.tools.registry[name]
            specs.append(
                {
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": (model.__doc__ or name).strip(),
                        "parameters": _schema(model),
                    },
                }
            )
        return specs

    async def call(
        self, name: str, arguments: str | Mapping[str, Any] | None, ctx: ToolContext
    ) -> ToolResult:
        if name not in self.names:
            return unknown_tool(name)
        return await self.tools.call(name, arguments, ctx)


# Shared pieces ----------------------------------------------------------------------------


def service_name(service: Service, language: str) -> str:
    if language == "en":
        return service.name_en
    if language == "ru" and service.name_ru:
        return service.name_ru
    return service.name_uk


def slot_json(slot: Slot, rules: Rules, names: Mapping[int, str]) -> dict[str, Any]:
    local = slot.start.astimezone(rules.tz)
    return {
        "start": local.strftime("%Y-%m-%dT%H:%M"),
        "date": local.date().isoformat(),
        "weekday": local.weekday(),
        "time": local.strftime("%H:%M"),
        "master_id": slot.master_id,
        "master": names.get(slot.master_id),
    }


def _within(slot: Slot, rules: Rules, after: time | None, before: time | None) -> bool:
    at = slot.start.astimezone(rules.tz).time()
    return (after is None or at >= after) and (before is None or at <= before)


def _local(value: datetime, rules: Rules) -> datetime:
    """A time the model wrote without an offset is the salon's wall clock."""
    return value if value.tzinfo else value.replace(tzinfo=rules.tz)


async def _service(session: AsyncSession, service_id: int) -> Service:
    service = await session.get(Service, service_id)
    if service is None or not service.active:
        raise ToolError(f"no service with id {service_id}; call list_services")
    return service


async def _master(session: AsyncSession, master_id: int) -> Staff:
    staff = await session.get(Staff, master_id)
    if staff is None or staff.role != "master" or not staff.active:
        raise ToolError(f"no master with id {master_id}; call list_services")
    return staff


async def _card_with_phone(session: AsyncSession, phone: str, *, besides: int) -> int | None:
    """Another live card holding this phone."""
    return (
        await session.exec(
            select(Client.id)
            .where(
                Client.phone == phone,
                col(Client.merged_into_id).is_(None),
                col(Client.id) != besides,
            )
            .order_by(col(Client.id))
            .limit(1)
        )
    ).first()


async def _gave_phone(session: AsyncSession, client_id: int) -> bool:
    """Whether the client has a phone for us: on the card, or typed in chat and held as a
    claim for staff (so the bot does not ask again only when the number was someone's)."""
    client = await session.get(Client, client_id)
    if client is not None and client.phone:
        return True
    claim = await session.exec(
        select(AuditEntry.id)
        .where(
            AuditEntry.entity == "client",
            AuditEntry.entity_id == client_id,
            AuditEntry.action == PHONE_CLAIMED,
        )
        .limit(1)
    )
    return claim.first() is not None


async def _staff_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.exec(select(Staff.id, Staff.name).where(col(Staff.id).in_(ids)))
    return {row[0]: row[1] for row in rows.all()}  # type: ignore[misc]


def _schema(model: type[_Args]) -> dict[str, Any]:
    """JSON schema without pydantic's titles, which only cost the model tokens."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema
