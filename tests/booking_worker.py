"""A second process for the double-booking test: books on "go", prints what happened.

python -m tests.booking_worker URL CLIENT SERVICE MASTER START_ISO... (one task per start)
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

from crm_store.appointments import Author, SlotUnavailable, book
from crm_store.db import create_engine, session_factory, transaction
from tests.salon import RULES


async def attempt(sessions, client: int, service: int, master: int, start: datetime) -> str:
    try:
        async with transaction(sessions) as session:
            await book(
                session,
                client_id=client,
                service_id=service,
                master_id=master,
                start=start,
                rules=RULES,
                now=datetime.fromisoformat("2027-03-01T09:00:00+02:00"),
                author=Author("staff"),
            )
        return "booked"
    except SlotUnavailable as exc:
        return exc.reason


async def main(url: str, client: int, service: int, master: int, starts: list[str]) -> None:
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:  # connect before the start signal
            await session.connection()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        outcomes = await asyncio.gather(
            *(attempt(sessions, client, service, master, datetime.fromisoformat(s)) for s in starts)
        )
        print(json.dumps(outcomes), flush=True)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    url, client, service, master, *starts = sys.argv[1:]
    asyncio.run(main(url, int(client), int(service), int(master), starts))
