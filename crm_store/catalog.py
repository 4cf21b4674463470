"""The price list and the masters: services, who does which, working hours, time off."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.models import (
    CatalogStamp,
    MasterService,
    Service,
    Staff,
    TimeOff,
    WorkingHours,
)
from crm_store.staff import add_staff
from crm_store.timeutil import aware


class CatalogError(ValueError):
    pass


async def catalog_version(session: AsyncSession) -> int:
    """A number that moves whenever the catalogue changes (models.CatalogStamp): what was
    built from the catalogue at one version is still right at the same version."""
    version = (await session.exec(select(CatalogStamp.version))).first()
    return int(version or 0)


@dataclass(frozen=True)
class Offer:
    """A master doing a service: their duration and price where they set their own."""

    master_id: int
    service_id: int
    duration_min: int
    buffer_min: int
    price_minor: int


@dataclass(frozen=True)
class DayHours:
    start_min: int
    end_min: int
    breaks: tuple[tuple[int, int], ...] = ()


@dataclass
class MasterCard:
    staff: Staff
    offers: list[Offer] = field(default_factory=list)
    hours: dict[int, DayHours] = field(default_factory=dict)


async def add_service(
    session: AsyncSession,
    *,
    name_uk: str,
    name_en: str,
    duration_min: int,
    price_minor: int,
    category: str = "",
    buffer_min: int = 0,
    name_ru: str | None = None,
    position: int = 0,
) -> Service:
    if duration_min <= 0 or buffer_min < 0 or price_minor < 0:
        raise CatalogError("duration must be positive, buffer and price not negative")
    service = Service(
        name_uk=name_uk,
        name_en=name_en,
        name_ru=name_ru,
        category=category,
        duration_min=duration_min,
        price_minor=price_minor,
        buffer_min=buffer_min,
        position=position,
    )
    session.add(service)
    await session.flush()
    return service


async def list_services(session: AsyncSession, *, active_only: bool = True) -> list[Service]:
    query = select(Service).order_by(col(Service.position), col(Service.id))
    if active_only:
        query = query.where(col(Service.active).is_(True))
    return list((await session.exec(query)).all())


async def add_master(
    session: AsyncSession, *, email: str, name: str, language: str = "uk"
) -> Staff:
    """A master account; it has no usable password until an owner sets one."""
    return await add_staff(
        session,
        email=email,
        password=secrets.token_urlsafe(24),
        role="master",
        name=name,
        language=language,
    )


async def set_master_services(
    session: AsyncSession,
    master_id: int,
    services: Mapping[int, tuple[int | None, int | None]],
) -> None:
    """Replace what a master does: service id → (own duration or None, own price or None)."""
    await _master(session, master_id)
    await session.exec(delete(MasterService).where(col(MasterService.master_id) == master_id))  # type: ignore[call-overload]
    for service_id, (duration, price) in services.items():
        if duration is not None and duration <= 0:
            raise CatalogError("a master's own duration must be positive")
        session.add(
            MasterService(
                master_id=master_id, service_id=service_id, duration_min=duration, price_minor=price
            )
        )
    await session.flush()


async def set_working_hours(
    session: AsyncSession, master_id: int, week: Mapping[int, DayHours]
) -> None:
    """Replace a master's week: weekday (0 = Monday) → hours; a missing weekday is a day off."""
    await _master(session, master_id)
    for weekday, day in week.items():
        _check_day(weekday, day)
    await session.exec(delete(WorkingHours).where(col(WorkingHours.master_id) == master_id))  # type: ignore[call-overload]
    for weekday, day in sorted(week.items()):
        session.add(
            WorkingHours(
                master_id=master_id,
                weekday=weekday,
                start_min=day.start_min,
                end_min=day.end_min,
                breaks=[list(b) for b in day.breaks],
            )
        )
    await session.flush()


def _check_day(weekday: int, day: DayHours) -> None:
    if not 0 <= weekday <= 6:
        raise CatalogError(f"weekday must be 0 (Monday) to 6 (Sunday), not {weekday}")
    if not 0 <= day.start_min < day.end_min <= 24 * 60:
        raise CatalogError(f"working hours on weekday {weekday} must start before they end")
    for start, end in day.breaks:
        if not day.start_min <= start < end <= day.end_min:
            raise CatalogError(f"a break on weekday {weekday} must lie inside the working hours")


async def add_time_off(
    session: AsyncSession, master_id: int, start: datetime, end: datetime, reason: str = ""
) -> TimeOff:
    await _master(session, master_id)
    if start.tzinfo is None or end.tzinfo is None:
        raise CatalogError("time off needs timezone-aware start and end")
    if end <= start:
        raise CatalogError("time off must end after it starts")
    # SQLite keeps the wall time and drops the offset: store UTC only.
    entry = TimeOff(
        master_id=master_id,
        start_at=start.astimezone(UTC),
        end_at=end.astimezone(UTC),
        reason=reason,
    )
    session.add(entry)
    await session.flush()
    return entry


async def _master(session: AsyncSession, master_id: int) -> Staff:
    staff = await session.get(Staff, master_id)
    if staff is None or staff.role != "master":
        raise CatalogError(f"no master with id {master_id}")
    return staff


async def offers_for(
    session: AsyncSession, service_id: int, master_ids: Iterable[int] | None = None
) -> list[Offer]:
    """Active masters doing an active service, each with their duration, buffer and price."""
    query = (
        select(MasterService, Service)
        .join(Service, col(Service.id) == col(MasterService.service_id))
        .join(Staff, col(Staff.id) == col(MasterService.master_id))
        .where(
            col(MasterService.service_id) == service_id,
            col(Service.active).is_(True),
            col(Staff.active).is_(True),
            col(Staff.role) == "master",
        )
        .order_by(col(MasterService.master_id))
    )
    if master_ids is not None:
        query = query.where(col(MasterService.master_id).in_(list(master_ids)))
    return [_offer(link, service) for link, service in (await session.exec(query)).all()]


def _offer(link: MasterService, service: Service) -> Offer:
    return Offer(
        master_id=link.master_id,
        service_id=service.id,  # type: ignore[arg-type]
        duration_min=link.duration_min or service.duration_min,
        buffer_min=service.buffer_min,
        price_minor=service.price_minor if link.price_minor is None else link.price_minor,
    )


async def working_hours(
    session: AsyncSession, master_ids: Iterable[int]
) -> dict[int, dict[int, DayHours]]:
    rows = await session.exec(
        select(WorkingHours).where(col(WorkingHours.master_id).in_(list(master_ids)))
    )
    week: dict[int, dict[int, DayHours]] = defaultdict(dict)
    for row in rows:
        week[row.master_id][row.weekday] = DayHours(
            row.start_min, row.end_min, tuple((int(a), int(b)) for a, b in row.breaks)
        )
    return week


async def time_off(
    session: AsyncSession, master_ids: Iterable[int], start: datetime, end: datetime
) -> dict[int, list[tuple[datetime, datetime]]]:
    rows = await session.exec(
        select(TimeOff).where(
            col(TimeOff.master_id).in_(list(master_ids)),
            col(TimeOff.start_at) < end,
            col(TimeOff.end_at) > start,
        )
    )
    absent: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for row in rows:
        absent[row.master_id].append((aware(row.start_at), aware(row.end_at)))  # type: ignore[arg-type]
    return absent


async def list_masters(session: AsyncSession, *, active_only: bool = True) -> list[MasterCard]:
    query = select(Staff).where(col(Staff.role) == "master").order_by(col(Staff.name))
    if active_only:
        query = query.where(col(Staff.active).is_(True))
    cards = {s.id: MasterCard(staff=s) for s in (await session.exec(query)).all()}
    if not cards:
        return []
    links = await session.exec(
        select(MasterService, Service)
        .join(Service, col(Service.id) == col(MasterService.service_id))
        .where(col(MasterService.master_id).in_(list(cards)), col(Service.active).is_(True))
        .order_by(col(Service.position), col(Service.id))
    )
    for link, service in links.all():
        cards[link.master_id].offers.append(_offer(link, service))
    for master_id, week in (await working_hours(session, list(cards))).items():
        cards[master_id].hours = dict(sorted(week.items()))
    return list(cards.values())
