"""The owner's figures (docs/metrics.md): response times, sources, conversion, the bot's share,
no-shows, occupancy, returns, revenue and lost leads, computed by SQL on SQLite and PostgreSQL.

`dashboard()` computes every table (what the analytics page shows); `table()` one of them.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.analytics import inquiries as asked
from crm_store.analytics.leads import lost_leads
from crm_store.analytics.occupancy import occupancy
from crm_store.analytics.report import COLUMNS, TABLES, Query, Table
from crm_store.analytics.visits import no_shows, returns, revenue

__all__ = ["COLUMNS", "TABLES", "Query", "Table", "dashboard", "table"]

# The tables read from the temporary table of inquiries.
FROM_INQUIRIES = ("responses", "volume", "sources", "conversion", "containment")


async def dashboard(session: AsyncSession, query: Query) -> dict[str, Table]:
    """Every table of docs/metrics.md, keyed by name, in TABLES order."""
    return await _tables(session, query, TABLES)


async def table(session: AsyncSession, name: str, query: Query) -> Table:
    """One table; KeyError for a name not in TABLES."""
    if name not in COLUMNS:
        raise KeyError(name)
    return (await _tables(session, query, (name,)))[name]


async def _tables(session: AsyncSession, query: Query, names: tuple[str, ...]) -> dict[str, Table]:
    found: dict[str, Table] = {}
    if any(name in FROM_INQUIRIES for name in names):
        async with asked.inquiries(session, query):
            for name in FROM_INQUIRIES:
                if name in names:
                    found[name] = await _from_inquiries(session, query, name)
    if "no_shows" in names:
        found["no_shows"] = await no_shows(session, query)
    if {"occupancy_days", "occupancy_weeks"} & set(names):
        found["occupancy_days"], found["occupancy_weeks"] = await occupancy(session, query)
    if "returns" in names:
        found["returns"] = await returns(session, query)
    if {"revenue_services", "revenue_masters"} & set(names):
        found["revenue_services"], found["revenue_masters"] = await revenue(session, query)
    if "lost_leads" in names:
        found["lost_leads"] = await lost_leads(session, query)
    return {name: found[name] for name in names}


async def _from_inquiries(session: AsyncSession, query: Query, name: str) -> Table:
    if name == "responses":
        return await asked.responses(session)
    if name == "volume":
        return await asked.volume(session)
    if name == "sources":
        return await asked.sources(session, query)
    if name == "conversion":
        return await asked.conversion(session)
    return await asked.containment(session)
