"""The staff booking API: the price list, the masters, free times, appointments and the salon's
settings. The rules themselves are crm_store's; this module reads requests, and answers with
the models of hub/web/booking_answers.py. See docs/api.md."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.appointments import (
    AppointmentError,
    Author,
    SlotUnavailable,
    book,
    list_appointments,
    reschedule,
    set_status,
)
from crm_store.business import STEPS, BusinessError, Rules, get_business, update_business
from crm_store.catalog import list_masters, list_services
from crm_store.db import transaction
from crm_store.inbox import staff_names
from crm_store.models import APPOINTMENT_STATUSES, Appointment, Service, Staff
from crm_store.slots import find_slots
from crm_store.visits import count_unsettled, unsettled
from hub.web import auth, roles
from hub.web.answers import not_null
from hub.web.booking_answers import (
    AppointmentList,
    MasterList,
    MasterOffer,
    MasterView,
    ServiceList,
    SlotList,
    UnsettledList,
    WorkingDay,
    appointment_views,
    business_view,
    free_time,
    hhmm,
    money,
    service_view,
)
from hub.web.http_json import (
    MAX_ID,
    CalendarTime,
    answer,
    hub_of,
    optional_int,
    positive_int,
    query_date,
    read_body,
    refuse,
)

routes = web.RouteTableDef()
MAX_SLOT_DAYS = 62
DEFAULT_SLOT_DAYS = 7
MAX_LIST_DAYS = 366
ACTIONS = {"confirm": "confirmed", "cancel": "cancelled", "done": "done", "no_show": "no_show"}
# Minutes before an appointment (crm_store.business).
REMINDER_OFFSET = {"type": "integer", "minimum": 10, "maximum": 14 * 1440}


class BookBody(BaseModel):
    client_id: int = Field(ge=1, le=MAX_ID)
    service_id: int = Field(ge=1, le=MAX_ID)
    start: CalendarTime
    master_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    notes: str = Field(default="", max_length=2000)


class ChangeBody(BaseModel):
    """A move needs `start` (and may name `master_id` or `any_master`); the other actions take
    only a `reason`."""

    # _move_needs_a_time's rule, for the document.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"action": {"const": "move"}}},
            "then": {"required": ["start"], "properties": {"start": {"type": "string"}}},
            "else": {
                "properties": {
                    "start": {"type": "null"},
                    "master_id": {"type": "null"},
                    "any_master": {"const": False},
                }
            },
        }
    )

    action: Literal["move", "confirm", "cancel", "done", "no_show"]
    start: CalendarTime | None = None
    master_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    any_master: bool = False
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _move_needs_a_time(self) -> ChangeBody:
        if self.action == "move" and self.start is None:
            raise ValueError("a move needs `start`")
        if self.action != "move" and (self.start or self.master_id or self.any_master):
            raise ValueError("`start`, `master_id` and `any_master` go with action `move`")
        return self


class BusinessBody(BaseModel):
    """Only the settings sent are changed; none can be emptied. A time zone is an IANA name,
    a currency three letters."""

    # What crm_store.business checks (with its own messages) is stated for the document too.
    name: str | None = Field(default=None, max_length=200, json_schema_extra=not_null())
    timezone: str | None = Field(default=None, max_length=64, json_schema_extra=not_null())
    currency: str | None = Field(default=None, json_schema_extra=not_null(minLength=3, maxLength=3))
    slot_step_min: int | None = Field(default=None, json_schema_extra=not_null(enum=list(STEPS)))
    lead_min: int | None = Field(default=None, ge=0, le=60 * 24 * 30, json_schema_extra=not_null())
    horizon_days: int | None = Field(
        default=None, json_schema_extra=not_null(minimum=1, maximum=730)
    )
    phone: str | None = Field(default=None, max_length=32, json_schema_extra=not_null())
    address: dict[Literal["uk", "en", "ru"], str] | None = Field(
        default=None, json_schema_extra=not_null()
    )
    hours_text: dict[Literal["uk", "en", "ru"], str] | None = Field(
        default=None, json_schema_extra=not_null()
    )
    reminder_offsets_min: list[int] | None = Field(
        default=None, max_length=5, json_schema_extra=not_null(items=REMINDER_OFFSET)
    )
    quiet_start_min: int | None = Field(default=None, ge=0, lt=1440, json_schema_extra=not_null())
    quiet_end_min: int | None = Field(default=None, ge=0, lt=1440, json_schema_extra=not_null())


def _author(request: web.Request) -> Author:
    return Author("staff", request[auth.STAFF_KEY])


# The price list, the masters, the salon ---------------------------------------------------


@routes.get("/api/services")
async def services(request: web.Request) -> web.Response:
    hub = hub_of(request)
    every = request.query.get("all") in ("1", "true")
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        rows = await list_services(session, active_only=not every)
        masters = await list_masters(session)
    doing: dict[int, list[int]] = {}
    for card in masters:
        for offer in card.offers:
            doing.setdefault(offer.service_id, []).append(card.staff.id)  # type: ignore[arg-type]
    return answer(
        ServiceList(services=[service_view(s, rules, doing.get(s.id, [])) for s in rows])  # type: ignore[arg-type]
    )


@routes.get("/api/masters")
async def masters(request: web.Request) -> web.Response:
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        cards = await list_masters(session)
    return answer(
        MasterList(
            masters=[
                MasterView(
                    id=card.staff.id,  # type: ignore[arg-type]
                    name=card.staff.name,
                    services=[
                        MasterOffer(
                            service_id=o.service_id,
                            duration_min=o.duration_min,
                            price=money(o.price_minor, rules),
                        )
                        for o in card.offers
                    ],
                    hours={
                        str(weekday): WorkingDay(  # type: ignore[misc]
                            start=hhmm(day.start_min),
                            end=hhmm(day.end_min),
                            breaks=[(hhmm(a), hhmm(b)) for a, b in day.breaks],
                        )
                        for weekday, day in card.hours.items()
                    },
                )
                for card in cards
            ]
        )
    )


@routes.get("/api/business")
async def business(request: web.Request) -> web.Response:
    hub = hub_of(request)
    async with hub.sessions() as session:
        saved = await get_business(
            session, timezone=hub.settings.hub_timezone, currency=hub.settings.hub_currency
        )
    return answer(business_view(saved))


@routes.patch("/api/business")
async def change_business(request: web.Request) -> web.Response:
    await roles.require_manager(request)
    hub = hub_of(request)
    changes = (await read_body(request, BusinessBody)).model_dump(exclude_unset=True)
    if any(value is None for value in changes.values()):
        raise refuse(web.HTTPBadRequest, "settings can be changed, not emptied")
    author = _author(request)
    try:
        async with transaction(hub.sessions) as session:
            saved = await update_business(
                session,
                changes,
                actor=author.actor,
                staff_id=author.staff_id,
                timezone=hub.settings.hub_timezone,
                currency=hub.settings.hub_currency,
            )
    except BusinessError as exc:
        raise refuse(web.HTTPBadRequest, str(exc)) from None
    return answer(business_view(saved))


# Free times -------------------------------------------------------------------------------


@routes.get("/api/slots")
async def slots(request: web.Request) -> web.Response:
    """Free starts from `from` to `to` (local dates, inclusive), from now on. Staff are not
    held to the client booking window unless `window=client`."""
    hub = hub_of(request)
    service_id = optional_int(request, "service")
    if service_id is None:
        raise refuse(web.HTTPBadRequest, "service is required")
    master_id = optional_int(request, "master")
    client_window = request.query.get("window") == "client"
    now = hub.clock()
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        first = query_date(request, "from") or now.astimezone(rules.tz).date()
        last = query_date(request, "to") or first + timedelta(days=DEFAULT_SLOT_DAYS - 1)
        _check_span(first, last, MAX_SLOT_DAYS)
        if await session.get(Service, service_id) is None:
            raise refuse(web.HTTPNotFound, f"no service with id {service_id}")
        if master_id is not None and not await _is_master(session, master_id):
            raise refuse(web.HTTPNotFound, f"no master with id {master_id}")
        earliest, latest = rules.window(now) if client_window else (now, None)
        found = await find_slots(
            session,
            service_id=service_id,
            rules=rules,
            first_day=first,
            last_day=last,
            master_id=master_id,
            earliest=earliest,
            latest=latest,
        )
        names = await staff_names(session, {s.master_id for s in found})
    return answer(SlotList(slots=[free_time(s, rules, names) for s in found]))


# Appointments -----------------------------------------------------------------------------


@routes.get("/api/appointments")
async def appointments(request: web.Request) -> web.Response:
    hub = hub_of(request)
    statuses = tuple(s for s in request.query.get("status", "").split(",") if s)
    unknown = set(statuses) - set(APPOINTMENT_STATUSES)
    if unknown:
        raise refuse(web.HTTPBadRequest, f"status must be among {', '.join(APPOINTMENT_STATUSES)}")
    client_id = optional_int(request, "client")
    # A master sees only their own appointments, whatever `master` asks.
    master_id = await roles.master_id_of(request) or optional_int(request, "master")
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        first = query_date(request, "from")
        last = query_date(request, "to")
        if first is None and client_id is None:
            first = hub.clock().astimezone(rules.tz).date()
        if first is not None and last is None and client_id is None:
            last = first + timedelta(days=DEFAULT_SLOT_DAYS - 1)
        if first is not None and last is not None:
            _check_span(first, last, MAX_LIST_DAYS)
        rows = await list_appointments(
            session,
            start=_midnight(first, rules) if first else None,
            end=_midnight(last + timedelta(days=1), rules) if last else None,
            master_id=master_id,
            client_id=client_id,
            statuses=statuses or None,
        )
        body = await appointment_views(session, rows, rules)
    return answer(AppointmentList(appointments=body))


@routes.post("/api/appointments")
async def create_appointment(request: web.Request) -> web.Response:
    hub = hub_of(request)
    data = await read_body(request, BookBody)
    master = await roles.master_id_of(request)
    if master is not None:
        # A master books only into their own day, and only a client they already see: a
        # booking must not be a way into any card of the base.
        if data.master_id not in (None, master):
            raise refuse(web.HTTPForbidden, roles.NOT_YOURS)
        data.master_id = master
        await roles.check_client(request, data.client_id)
    try:
        async with transaction(hub.sessions) as session:
            rules = await hub.rules(session)
            appointment = await book(
                session,
                client_id=data.client_id,
                service_id=data.service_id,
                master_id=data.master_id,
                start=data.start,
                rules=rules,
                now=hub.clock(),
                author=_author(request),
                source="staff",
                notes=data.notes,
                client_window=False,
            )
            (body,) = await appointment_views(session, [appointment], rules)
    except AppointmentError as exc:
        raise _refusal(exc, rules) from None
    return answer(body, 201)


@routes.get("/api/appointments/unsettled")
async def unsettled_appointments(request: web.Request) -> web.Response:
    """Ended appointments still booked or confirmed, to be marked done or no-show (a master:
    their own). Registered before /api/appointments/{id}, which would take the word for an
    id. `count` is all of them; the list holds the oldest UNSETTLED_LIMIT."""
    hub = hub_of(request)
    master_id = await roles.master_id_of(request) or optional_int(request, "master")
    now = hub.clock()
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        rows = await unsettled(session, now=now, master_id=master_id)
        count = await count_unsettled(session, now=now, master_id=master_id)
        body = await appointment_views(session, rows, rules)
    return answer(UnsettledList(appointments=body, count=count))


@routes.get("/api/appointments/{id}")
async def appointment(request: web.Request) -> web.Response:
    hub = hub_of(request)
    appointment_id = positive_int(request.match_info["id"], "id")
    await roles.staff_of(request)  # before the session: SQLite allows one writer at a time
    async with hub.sessions() as session:
        found = await session.get(Appointment, appointment_id)
        if found is None:
            raise refuse(web.HTTPNotFound, f"no appointment with id {appointment_id}")
        await roles.check_appointment(request, found)
        (body,) = await appointment_views(session, [found], await hub.rules(session))
    return answer(body)


@routes.patch("/api/appointments/{id}")
async def change_appointment(request: web.Request) -> web.Response:
    hub = hub_of(request)
    appointment_id = positive_int(request.match_info["id"], "id")
    data = await read_body(request, ChangeBody)
    async with hub.sessions() as session:
        found = await session.get(Appointment, appointment_id)
    if found is None:
        raise refuse(web.HTTPNotFound, f"no appointment with id {appointment_id}")
    await roles.check_appointment(request, found)
    if data.master_id is not None or data.any_master:
        master = await roles.master_id_of(request)
        if master is not None and (data.any_master or data.master_id != master):
            raise refuse(web.HTTPForbidden, roles.NOT_YOURS)
    author = _author(request)
    now = hub.clock()
    try:
        async with transaction(hub.sessions) as session:
            rules = await hub.rules(session)
            changed = await _change(session, appointment_id, data, rules, author, now)
            (body,) = await appointment_views(session, [changed], rules)
    except AppointmentError as exc:
        raise _refusal(exc, rules) from None
    return answer(body)


async def _change(
    session: AsyncSession,
    appointment_id: int,
    data: ChangeBody,
    rules: Rules,
    author: Author,
    now: datetime,
) -> Appointment:
    if data.action == "move":
        assert data.start is not None  # checked by ChangeBody
        return await reschedule(
            session,
            appointment_id,
            start=data.start,
            master_id=data.master_id,
            any_master=data.any_master,
            rules=rules,
            now=now,
            author=author,
            client_window=False,
        )
    return await set_status(
        session, appointment_id, ACTIONS[data.action], now=now, author=author, reason=data.reason
    )


def _refusal(exc: AppointmentError, rules: Rules) -> web.HTTPError:
    """crm_store's refusal as a JSON 4xx; the transaction rolled back, nothing was written."""
    if isinstance(exc, SlotUnavailable):
        return refuse(
            web.HTTPConflict,
            str(exc),
            reason=exc.reason,
            alternatives=[free_time(s, rules, {}) for s in exc.alternatives],
        )
    return refuse(web.HTTPNotFound if exc.status == 404 else web.HTTPBadRequest, str(exc))


# Helpers ----------------------------------------------------------------------------------


def _check_span(first: date, last: date, limit: int) -> None:
    if last < first:
        raise refuse(web.HTTPBadRequest, "`to` is before `from`")
    if (last - first).days >= limit:
        raise refuse(web.HTTPBadRequest, f"ask for at most {limit} days at a time")


def _midnight(day: date, rules: Rules) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=rules.tz)


async def _is_master(session: AsyncSession, staff_id: int) -> bool:
    staff = await session.get(Staff, staff_id)
    return staff is not None and staff.role == "master"
