"""bench/analytics.py on a tiny salon, so the generator and the harness keep working."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.analytics import Spec, generate, measure, report
from crm_store.analytics import TABLES
from crm_store.models import Appointment, AuditEntry, Client, Message


async def test_the_bench_runs_on_a_tiny_salon(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    spec = Spec(messages=500, appointments=50)
    loaded = await generate(sessions, spec)

    async with sessions() as session:
        messages = (await session.exec(select(func.count()).select_from(Message))).one()
        booked = (await session.exec(select(func.count()).select_from(Appointment))).one()
        hand_offs = (
            await session.exec(
                select(func.count()).where(
                    AuditEntry.entity == "conversation", AuditEntry.action == "hand_off"
                )
            )
        ).one()
        authors = set((await session.exec(select(Message.author).distinct())).all())
        statuses = set((await session.exec(select(Appointment.status).distinct())).all())
        sources = (
            await session.exec(select(func.count()).where(Client.source_ref.is_not(None)))  # type: ignore[union-attr]
        ).one()
    assert (messages, booked) == (500, 50)
    assert loaded.counts["messages"] == 500 and loaded.counts["appointments"] == 50
    assert hand_offs > 0 and sources > 0
    assert authors == {"client", "bot", "staff", "system"}
    assert {"done", "cancelled"} <= statuses

    measured = await measure(sessions, spec, runs=1)
    assert [s.name for s in measured] == ["30 days", "365 days", "30 days, telegram"]
    for scenario in measured:
        assert len(scenario.samples_ms) == 1
        assert set(scenario.rows) == set(TABLES)
    assert set(measured[1].tables_ms) == set(TABLES)
    assert measured[1].rows["volume"] > 0
    lines = report("test", loaded, measured, runs=1)
    assert any("slowest" in line for line in lines)
