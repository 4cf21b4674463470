"""A small salon for booking tests: two masters, three services, one client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import Rules
from crm_store.catalog import (
    DayHours,
    add_master,
    add_service,
    set_master_services,
    set_working_hours,
)
from crm_store.db import transaction
from crm_store.models import Client

KYIV = ZoneInfo("Europe/Kyiv")
RULES = Rules(tz=KYIV)
WEEKDAYS = range(5)
LUNCH = ((13 * 60, 14 * 60),)


@dataclass
class Salon:
    olena: int  # Mon-Fri 10:00-19:00, lunch 13-14; manicure and haircut
    iryna: int  # every day 10:00-19:00; manicure (her own: 90 min, 900 UAH)
    manicure: int  # 60 min + 15 min buffer, 800 UAH
    haircut: int  # 45 min, no buffer
    brows: int  # nobody does it
    client: int


def kyiv(text: str) -> datetime:
    """'2027-03-10 10:00' in the salon's zone."""
    return datetime.fromisoformat(text).replace(tzinfo=KYIV)


async def build_salon(sessions: async_sessionmaker[AsyncSession]) -> Salon:
    async with transaction(sessions) as session:
        olena = await add_master(session, email="olena@salon.test", name="Olena")
        iryna = await add_master(session, email="iryna@salon.test", name="Iryna")
        manicure = await add_service(
            session,
            name_uk="Манікюр з покриттям",
            name_en="Gel manicure",
            duration_min=60,
            price_minor=80_000,
            buffer_min=15,
            category="nails",
        )
        haircut = await add_service(
            session,
            name_uk="Жіноча стрижка",
            name_en="Women's haircut",
            duration_min=45,
            price_minor=60_000,
            category="hair",
        )
        brows = await add_service(
            session,
            name_uk="Корекція брів",
            name_en="Brow shaping",
            duration_min=30,
            price_minor=30_000,
            category="brows",
        )
        await set_master_services(
            session, olena.id, {manicure.id: (None, None), haircut.id: (None, None)}
        )
        await set_master_services(session, iryna.id, {manicure.id: (90, 90_000)})
        await set_working_hours(
            session, olena.id, {d: DayHours(600, 1140, LUNCH) for d in WEEKDAYS}
        )
        await set_working_hours(session, iryna.id, {d: DayHours(600, 1140) for d in range(7)})
        client = Client(name="Oksana", phone="+380671234567")
        session.add(client)
        await session.flush()
        return Salon(olena.id, iryna.id, manicure.id, haircut.id, brows.id, client.id)  # type: ignore[arg-type]
