"""Slot search speed: 30 days, 10 masters, 5,000 appointments inside the searched month.

    python -m bench.slot_search [--postgres postgresql://user@host/db] [--runs 50]

SQLite always; PostgreSQL too when --postgres names a server (a database of the benchmark's
own is created there and dropped afterwards). Prints the median and the 90th percentile of
each search, and the PostgreSQL/SQLite ratio of the medians, all from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from crm_store.business import Rules
from crm_store.catalog import (
    DayHours,
    add_master,
    add_service,
    set_master_services,
    set_working_hours,
)
from crm_store.db import create_engine, session_factory, transaction
from crm_store.models import Appointment, Client
from crm_store.slots import find_slots
from hub.cli.bench.databases import fresh_database, label

MASTERS = 10
APPOINTMENTS = 5_000
DAYS = 30
OPEN, CLOSE = 8 * 60, 22 * 60  # every day, 14 hours, a 30-minute lunch
LUNCH = ((14 * 60, 14 * 60 + 30),)
FIRST_DAY = date(2027, 3, 1)  # spans the spring daylight-saving change in Kyiv
RULES = Rules(tz=ZoneInfo("Europe/Kyiv"))


async def seed(url: str, rng: random.Random) -> tuple[int, list[int]]:
    """The salon; returns the 60-minute service searched for and the masters."""
    sessions = session_factory(engine := create_engine(url))
    try:
        async with transaction(sessions) as session:
            short = await add_service(
                session, name_uk="Стрижка", name_en="Haircut", duration_min=30, price_minor=50_000
            )
            long = await add_service(
                session,
                name_uk="Фарбування",
                name_en="Colour",
                duration_min=60,
                price_minor=150_000,
                buffer_min=15,
            )
            masters = []
            for n in range(MASTERS):
                master = await add_master(session, email=f"m{n}@bench.test", name=f"Master {n}")
                await set_master_services(
                    session, master.id, {short.id: (None, None), long.id: (None, None)}
                )
                await set_working_hours(
                    session, master.id, {d: DayHours(OPEN, CLOSE, LUNCH) for d in range(7)}
                )
                masters.append(master.id)
            clients = [Client(name=f"Client {n}", phone=f"+38067{n:07d}") for n in range(500)]
            session.add_all(clients)
            await session.flush()
            session.add_all(_appointments(masters, [c.id for c in clients], short.id, rng))
        return long.id, masters  # type: ignore[return-value]
    finally:
        await engine.dispose()


def _appointments(
    masters: list[int], clients: list[int], service: int, rng: random.Random
) -> list[Appointment]:
    """5,000 non-overlapping 30-minute appointments spread over the masters and days."""
    per_day = APPOINTMENTS // (MASTERS * DAYS)
    extra = APPOINTMENTS - per_day * MASTERS * DAYS
    rows = []
    for day_index in range(DAYS):
        day = FIRST_DAY + timedelta(days=day_index)
        for master_index, master in enumerate(masters):
            count = per_day + (1 if day_index * MASTERS + master_index < extra else 0)
            starts = [m for m in range(OPEN, CLOSE, 30) if not 14 * 60 <= m < 14 * 60 + 30]
            for minute in sorted(rng.sample(starts, count)):
                start = datetime.combine(day, datetime.min.time(), RULES.tz)
                start = (start + timedelta(minutes=minute)).astimezone(UTC)
                end = start + timedelta(minutes=30)
                rows.append(
                    Appointment(
                        client_id=rng.choice(clients),
                        master_id=master,
                        service_id=service,
                        start_at=start,
                        end_at=end,
                        block_end_at=end,
                        status=rng.choice(("booked", "confirmed")),
                    )
                )
    assert len(rows) == APPOINTMENTS
    return rows


async def timed(runs: int, search: Callable[[], Awaitable[int]]) -> tuple[list[float], int]:
    await search()  # warm the connection pool and the caches
    samples, found = [], 0
    for _ in range(runs):
        began = time.perf_counter()
        found = await search()
        samples.append((time.perf_counter() - began) * 1000)
    return samples, found


async def measure(url: str, runs: int) -> dict[str, tuple[float, float, int]]:
    service, masters = await seed(url, random.Random(42))
    engine = create_engine(url)
    sessions = session_factory(engine)
    results = {}
    try:
        for name, master in (("any master", None), ("one master", masters[3])):

            async def search(master: int | None = master) -> int:
                async with sessions() as session:
                    found = await find_slots(
                        session,
                        service_id=service,
                        master_id=master,
                        rules=RULES,
                        first_day=FIRST_DAY,
                        last_day=FIRST_DAY + timedelta(days=DAYS - 1),
                    )
                return len(found)

            samples, found = await timed(runs, search)
            cuts = statistics.quantiles(samples, n=10)
            results[name] = (statistics.median(samples), cuts[-1], found)
    finally:
        await engine.dispose()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL server URL (an admin database on it)")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(
        f"slot search: {DAYS} days, {MASTERS} masters, {APPOINTMENTS} appointments, "
        f"{args.runs} runs each"
    )
    medians: dict[tuple[str, str], float] = {}
    for admin in [None, args.postgres] if args.postgres else [None]:
        async with fresh_database(admin) as url:
            for name, (median, p90, found) in (await measure(url, args.runs)).items():
                backend = label(url)
                medians[(backend, name)] = median
                print(
                    f"  {backend:<10} {name:<10}  median {median:6.1f} ms   "
                    f"p90 {p90:6.1f} ms   ({found} free starts)"
                )
    if args.postgres:
        for name in ("any master", "one master"):
            ratio = medians[("postgresql", name)] / medians[("sqlite", name)]
            print(f"  postgresql/sqlite median ratio, {name}: {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
