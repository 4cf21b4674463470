"""What the booking API answers (hub/web/booking_api.py): the price list, the masters, the
salon's settings, free times and appointments, as models, and how they are built from the
store's rows. Times are the salon's wall clock with its offset; money is Money."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import EDITABLE as BUSINESS_FIELDS
from crm_store.business import Rules
from crm_store.inbox import staff_names
from crm_store.models import Appointment, Business, Client, Service
from crm_store.slots import Slot
from crm_store.timeutil import aware
from hub.web.answers import FreeTime, Money, Time


class LocalNames(BaseModel):
    """A service's name in each language (Russian may be missing)."""

    uk: str
    en: str
    ru: str | None


class ServiceView(BaseModel):
    id: int
    name: LocalNames
    category: str
    duration_min: int
    buffer_min: int
    price: Money
    active: bool
    master_ids: list[int]


class ServiceList(BaseModel):
    services: list[ServiceView]


class MasterOffer(BaseModel):
    """A service as this master does it: their own duration and price where they set one."""

    service_id: int
    duration_min: int
    price: Money


class WorkingDay(BaseModel):
    """Hours of one weekday, "HH:MM" in the salon's zone; breaks are [start, end) pairs."""

    start: str
    end: str
    breaks: list[tuple[str, str]]


class MasterView(BaseModel):
    id: int
    name: str
    services: list[MasterOffer]
    # "0" is Monday; a weekday missing is a day off.
    hours: dict[Literal["0", "1", "2", "3", "4", "5", "6"], WorkingDay]


class MasterList(BaseModel):
    masters: list[MasterView]


class BusinessView(BaseModel):
    """The salon's settings."""

    # Every one of crm_store.business.EDITABLE (tests/test_openapi.py holds them equal).

    name: str
    timezone: str
    currency: str
    slot_step_min: int
    lead_min: int
    horizon_days: int
    phone: str | None
    address: dict[str, str]
    hours_text: dict[str, str]
    reminder_offsets_min: list[int]
    quiet_start_min: int
    quiet_end_min: int


class SlotList(BaseModel):
    slots: list[FreeTime]


class ClientRef(BaseModel):
    id: int
    name: str | None
    phone: str | None


class MasterRef(BaseModel):
    id: int
    name: str | None


class ServiceRef(BaseModel):
    id: int
    name: LocalNames | None


class AppointmentView(BaseModel):
    id: int
    status: str
    start: Time
    end: Time
    client: ClientRef
    master: MasterRef
    service: ServiceRef
    price: Money
    source: str
    notes: str
    created_at: Time
    updated_at: Time


class AppointmentList(BaseModel):
    appointments: list[AppointmentView]


class UnsettledList(BaseModel):
    """The oldest of them (up to 200); `count` is all."""

    appointments: list[AppointmentView]  # up to crm_store.visits.UNSETTLED_LIMIT
    count: int


# Building them -----------------------------------------------------------------------------


def money(minor: int, rules: Rules) -> Money:
    return Money(amount=minor / 100, minor=minor, currency=rules.currency)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def local_iso(value: datetime | None, rules: Rules) -> str | None:
    """Times as the salon's wall clock with its offset: what staff and the bot talk in."""
    value = aware(value)
    return value.astimezone(rules.tz).isoformat() if value else None


def local_names(service: Service) -> LocalNames:
    return LocalNames(uk=service.name_uk, en=service.name_en, ru=service.name_ru)


def service_view(service: Service, rules: Rules, master_ids: list[int]) -> ServiceView:
    return ServiceView(
        id=service.id,  # type: ignore[arg-type]
        name=local_names(service),
        category=service.category,
        duration_min=service.duration_min,
        buffer_min=service.buffer_min,
        price=money(service.price_minor, rules),
        active=service.active,
        master_ids=master_ids,
    )


def business_view(saved: Business) -> BusinessView:
    return BusinessView(**{key: getattr(saved, key) for key in BUSINESS_FIELDS})


def free_time(slot: Slot, rules: Rules, names: dict[int, str]) -> FreeTime:
    return FreeTime(
        start=local_iso(slot.start, rules),  # type: ignore[arg-type]
        end=local_iso(slot.end, rules),  # type: ignore[arg-type]
        master_id=slot.master_id,
        master_name=names.get(slot.master_id),
    )


async def appointment_views(
    session: AsyncSession, rows: Iterable[Appointment], rules: Rules
) -> list[AppointmentView]:
    rows = list(rows)
    masters = await staff_names(session, {a.master_id for a in rows})
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
            AppointmentView(
                id=a.id,  # type: ignore[arg-type]
                status=a.status,
                start=local_iso(a.start_at, rules),  # type: ignore[arg-type]
                end=local_iso(a.end_at, rules),  # type: ignore[arg-type]
                client=ClientRef(
                    id=a.client_id,
                    name=client.name if client else None,
                    phone=client.phone if client else None,
                ),
                master=MasterRef(id=a.master_id, name=masters.get(a.master_id)),
                service=ServiceRef(id=a.service_id, name=local_names(service) if service else None),
                price=money(a.price_minor, rules),
                source=a.source,
                notes=a.notes,
                created_at=local_iso(a.created_at, rules),  # type: ignore[arg-type]
                updated_at=local_iso(a.updated_at, rules),  # type: ignore[arg-type]
            )
        )
    return result
