"""The staff booking API: the price list, the masters, free times, appointments and the salon's
settings. The rules themselves are crm_store's; this module reads requests and writes JSON.
See docs/api.md."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, model_validator
from sqlmodel import col, select
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
from crm_store.business import EDITABLE as BUSINESS_FIELDS
from crm_store.business import BusinessError, Rules, get_business, update_business
from crm_store.catalog import list_masters, list_services
from crm_store.db import transaction
from crm_store.models import APPOINTMENT_STATUSES, Appointment, Client, Service, Staff
from crm_store.slots import Slot, find_slots
from crm_store.timeutil import aware
from crm_store.visits import count_unsettled, unsettled
from hub.web import auth, roles
from hub.web.http_json import hub_of, optional_int, positive_int, query_date, read_body, refuse

routes = web.RouteTableDef()
MAX_SLOT_DAYS = 62
DEFAULT_SLOT_DAYS = 7
MAX_LIST_DAYS = 366
ACTIONS = {"confirm": "confirmed", "cancel": "cancelled", "done": "done", "no_show": "no_show"}


class BookBody(BaseModel):
    client_id: int = Field(ge=1)
    service_id: int = Field(ge=1)
    start: AwareDatetime
    master_id: int | None = Field(default=None, ge=1)
    notes: str = Field(default="", max_length=2000)


class ChangeBody(BaseModel):
    action: Literal["move", "confirm", "cancel", "done", "no_show"]
    start: AwareDatetime | None = None
    master_id: int | None = Field(default=None, ge=1)
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
    name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    currency: str | None = None
    slot_step_min: int | None = None
    lead_min: int | None = Field(default=None, ge=0, le=60 * 24 * 30)
    horizon_days: int | None = None
    phone: str | None = Field(default=None, max_length=32)
    address: dict[Literal["uk", "en", "ru"], str] | None = None
    hours_text: dict[Literal["uk", "en", "ru"], str] | None = None
    reminder_offsets_min: list[int] | None = Field(default=None, max_length=5)
    quiet_start_min: int | None = Field(default=None, ge=0, lt=1440)
    quiet_end_min: int | None = Field(default=None, ge=0, lt=1440)


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
    return web.json_response(
        {"services": [service_json(s, rules, doing.get(s.id, [])) for s in rows]}  # type: ignore[arg-type]
    )


@routes.get("/api/masters")
async def masters(request: web.Request) -> web.Response:
    hub = hub_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        cards = await list_masters(session)
    return web.json_response(
        {
            "masters": [
                {
                    "id": card.staff.id,
                    "name": card.staff.name,
                    "services": [
                        {
                            "service_id": o.service_id,
                            "duration_min": o.duration_min,
                            "price": money(o.price_minor, rules),
                        }
                        for o in card.offers
                    ],
                    "hours": {
                        str(weekday): {
                            "start": hhmm(day.start_min),
                            "end": hhmm(day.end_min),
                            "breaks": [[hhmm(a), hhmm(b)] for a, b in day.breaks],
                        }
                        for weekday, day in card.hours.items()
                    },
                }
                for card in cards
            ]
        }
    )


@routes.get("/api/business")
async def business(request: web.Request) -> web.Response:
    hub = hub_of(request)
    async with hub.sessions() as session:
        saved = await get_business(
            session, timezone=hub.settings.hub_timezone, currency=hub.settings.hub_currency
        )
    return web.json_response({key: getattr(saved, key) for key in BUSINESS_FIELDS})


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
    return web.json_response({key: getattr(saved, key) for key in BUSINESS_FIELDS})


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
        names = await _names(session, {s.master_id for s in found})
    return web.json_response({"slots": [slot_json(s, rules, names) for s in found]})


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
        body = await appointments_json(session, rows, rules)
    return web.json_response({"appointments": body})


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
            (body,) = await appointments_json(session, [appointment], rules)
    except AppointmentError as exc:
        raise _refusal(exc, rules) from None
    return web.json_response(body, status=201)


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
        body = await appointments_json(session, rows, rules)
    return web.json_response({"appointments": body, "count": count})


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
        (body,) = await appointments_json(session, [found], await hub.rules(session))
    return web.json_response(body)


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
            (body,) = await appointments_json(session, [changed], rules)
    except AppointmentError as exc:
        raise _refusal(exc, rules) from None
    return web.json_response(body)


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
            alternatives=[slot_json(s, rules, {}) for s in exc.alternatives],
        )
    return refuse(web.HTTPNotFound if exc.status == 404 else web.HTTPBadRequest, str(exc))


# JSON shapes ------------------------------------------------------------------------------


def money(minor: int, rules: Rules) -> dict[str, Any]:
    return {"amount": minor / 100, "minor": minor, "currency": rules.currency}


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def local_iso(value: datetime | None, rules: Rules) -> str | None:
    """Times as the salon's wall clock with its offset: what staff and the bot talk in."""
    value = aware(value)
    return value.astimezone(rules.tz).isoformat() if value else None


def service_json(service: Service, rules: Rules, master_ids: list[int]) -> dict[str, Any]:
    return {
        "id": service.id,
        "name": {"uk": service.name_uk, "en": service.name_en, "ru": service.name_ru},
        "category": service.category,
        "duration_min": service.duration_min,
        "buffer_min": service.buffer_min,
        "price": money(service.price_minor, rules),
        "active": service.active,
        "master_ids": master_ids,
    }


def slot_json(slot: Slot, rules: Rules, names: dict[int, str]) -> dict[str, Any]:
    return {
        "start": local_iso(slot.start, rules),
        "end": local_iso(slot.end, rules),
        "master_id": slot.master_id,
        "master_name": names.get(slot.master_id),
    }


async def appointments_json(
    session: AsyncSession, rows: Iterable[Appointment], rules: Rules
) -> list[dict[str, Any]]:
    rows = list(rows)
    masters = await _names(session, {a.master_id for a in rows})
    client_rows = await session.exec(
        select(Client).where(col(Client.id).in_({a.client_id for a in rows}))
    )
    clients = {c.id: c for c in client_rows.all()}
    service_rows = await session.exec(
        select(Service).where(col(Service.id).in_({a.service_id for a in rows}))
    )
    services_by_id = {s.id: s for s in service_rows.all()}
    result = []
    for a in rows:
        client = clients.get(a.client_id)
        service = services_by_id.get(a.service_id)
        result.append(
            {
                "id": a.id,
                "status": a.status,
                "start": local_iso(a.start_at, rules),
                "end": local_iso(a.end_at, rules),
                "client": {
                    "id": a.client_id,
                    "name": client.name if client else None,
                    "phone": client.phone if client else None,
                },
                "master": {"id": a.master_id, "name": masters.get(a.master_id)},
                "service": {
                    "id": a.service_id,
                    "name": {"uk": service.name_uk, "en": service.name_en, "ru": service.name_ru}
                    if service
                    else None,
                },
                "price": money(a.price_minor, rules),
                "source": a.source,
                "notes": a.notes,
                "created_at": local_iso(a.created_at, rules),
                "updated_at": local_iso(a.updated_at, rules),
            }
        )
    return result


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


async def _names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    """Staff names by id."""
    if not ids:
        return {}
    rows = await session.exec(select(Staff.id, Staff.name).where(col(Staff.id).in_(ids)))
    return {row[0]: row[1] for row in rows.all()}  # type: ignore[misc]
