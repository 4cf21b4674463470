"""Visits to settle and no-shows over real HTTP: appointments that have ended but still say
booked or confirmed are listed (a master: their own), staff mark them done or no-show with
the existing PATCH, and the client's card counts their visits and no-shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from sqlmodel import select

from crm_store.appointments import Author, book, set_status
from crm_store.db import transaction
from crm_store.models import Client, Staff
from crm_store.staff import add_staff, hash_password
from crm_store.visits import count_unsettled, unsettled
from tests.salon import RULES, Salon, build_salon, kyiv
from tests.support import RunningHub, client_session, login

BOOKED_AT = kyiv("2027-03-01 09:00")  # when everything was booked
NOW = kyiv("2027-03-10 18:00")  # a Wednesday evening
PASSWORD = "s3cret-pass"
STAFF = Author("staff")


@dataclass
class Visits:
    salon: Salon
    today: int  # Olena, 10:00 today, still booked: to settle
    yesterday: int  # Iryna, 12:00 yesterday, confirmed: to settle
    running_late: int  # Olena, 17:30 today, ends 18:30: not over yet
    done: int  # Olena, last week, done
    no_show: int  # Iryna, last week, no-show
    cancelled: int  # Olena, last week, cancelled
    newcomer: int  # a client with no appointments


async def _book(salon: Salon, session: Any, master: int, start: datetime) -> int:
    appointment = await book(
        session,
        client_id=salon.client,
        service_id=salon.manicure,
        master_id=master,
        start=start,
        rules=RULES,
        now=BOOKED_AT,
        author=STAFF,
    )
    return appointment.id  # type: ignore[return-value]


async def world(hub: RunningHub) -> Visits:
    hub.hub.clock = lambda: NOW
    salon = await build_salon(hub.hub.sessions)
    async with transaction(hub.hub.sessions) as session:
        await add_staff(session, email="owner@salon.test", password=PASSWORD, role="owner")
        for staff in (await session.exec(select(Staff).where(Staff.role == "master"))).all():
            staff.password_hash = hash_password(PASSWORD)
            session.add(staff)
        today = await _book(salon, session, salon.olena, kyiv("2027-03-10 10:00"))
        yesterday = await _book(salon, session, salon.iryna, kyiv("2027-03-09 12:00"))
        late = await _book(salon, session, salon.olena, kyiv("2027-03-10 17:30"))
        done = await _book(salon, session, salon.olena, kyiv("2027-03-03 10:00"))
        no_show = await _book(salon, session, salon.iryna, kyiv("2027-03-03 12:00"))
        cancelled = await _book(salon, session, salon.olena, kyiv("2027-03-04 10:00"))
        await set_status(session, yesterday, "confirmed", now=BOOKED_AT, author=STAFF)
        await set_status(session, done, "done", now=NOW, author=STAFF)
        await set_status(session, no_show, "no_show", now=NOW, author=STAFF)
        await set_status(session, cancelled, "cancelled", now=BOOKED_AT, author=STAFF)
        newcomer = Client(name="Newcomer")
        session.add(newcomer)
        await session.flush()
    return Visits(salon, today, yesterday, late, done, no_show, cancelled, newcomer.id)  # type: ignore[arg-type]


async def signed(hub: RunningHub, email: str) -> aiohttp.ClientSession:
    session = client_session()
    assert await login(session, hub.base_url, email, PASSWORD) == 200
    return session


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.json()


async def to_settle(session: aiohttp.ClientSession, api: str, **query: Any) -> tuple[list, int]:
    status, body = await call(session, "GET", f"{api}/appointments/unsettled", params=query)
    assert status == 200, body
    return [a["id"] for a in body["appointments"]], body["count"]


async def test_the_list_to_settle_and_marking_visits(hub: RunningHub) -> None:
    v = await world(hub)
    api = f"{hub.base_url}/api"
    async with (
        await signed(hub, "owner@salon.test") as owner,
        await signed(hub, "olena@salon.test") as olena,
        await signed(hub, "iryna@salon.test") as iryna,
        client_session() as stranger,
    ):
        # Oldest first; what has not ended, or is closed or cancelled, is not there.
        assert await to_settle(owner, api) == ([v.yesterday, v.today], 2)
        status, body = await call(owner, "GET", f"{api}/appointments/unsettled")
        first = body["appointments"][0]
        assert first["status"] == "confirmed" and first["client"]["name"] == "Oksana"
        assert first["start"] == "2027-03-09T12:00:00+02:00"
        assert await to_settle(owner, api, master=v.salon.olena) == ([v.today], 1)
        # A master sees their own, whatever they ask for.
        assert await to_settle(olena, api) == ([v.today], 1)
        assert await to_settle(olena, api, master=v.salon.iryna) == ([v.today], 1)
        assert await to_settle(iryna, api) == ([v.yesterday], 1)
        status, _ = await call(stranger, "GET", f"{api}/appointments/unsettled")
        assert status == 401

        # Settled with the appointment's own PATCH: Olena can't touch Iryna's.
        status, body = await call(
            olena, "PATCH", f"{api}/appointments/{v.yesterday}", json={"action": "no_show"}
        )
        assert (status, body) == (403, {"error": "not yours"})
        status, body = await call(
            olena, "PATCH", f"{api}/appointments/{v.today}", json={"action": "done"}
        )
        assert status == 200 and body["status"] == "done"
        status, body = await call(
            iryna, "PATCH", f"{api}/appointments/{v.yesterday}", json={"action": "no_show"}
        )
        assert status == 200 and body["status"] == "no_show"
        assert await to_settle(owner, api) == ([], 0)
        # The visit still going on is listed once it has ended.
        hub.hub.clock = lambda: kyiv("2027-03-10 18:30")
        assert await to_settle(owner, api) == ([v.running_late], 1)


async def test_the_card_counts_visits_and_no_shows(hub: RunningHub) -> None:
    v = await world(hub)
    api = f"{hub.base_url}/api"
    async with (
        await signed(hub, "owner@salon.test") as owner,
        await signed(hub, "olena@salon.test") as olena,
    ):
        status, card = await call(owner, "GET", f"{api}/clients/{v.salon.client}")
        assert status == 200
        assert (card["visits"], card["no_shows"]) == (1, 1)
        await call(owner, "PATCH", f"{api}/appointments/{v.today}", json={"action": "no_show"})
        await call(owner, "PATCH", f"{api}/appointments/{v.yesterday}", json={"action": "done"})
        status, card = await call(owner, "GET", f"{api}/clients/{v.salon.client}")
        assert (card["visits"], card["no_shows"]) == (2, 2)
        # A master's card lists their own appointments, and counts the client's record.
        status, mine = await call(olena, "GET", f"{api}/clients/{v.salon.client}")
        assert status == 200
        assert {a["master"]["id"] for a in mine["appointments"]} == {v.salon.olena}
        assert (mine["visits"], mine["no_shows"]) == (2, 2)
        status, fresh = await call(owner, "GET", f"{api}/clients/{v.newcomer}")
        assert (fresh["visits"], fresh["no_shows"]) == (0, 0)
        status, _ = await call(olena, "GET", f"{api}/clients/{v.newcomer}")
        assert status == 403  # not her client: no counts either


async def test_unsettled_in_the_store(hub: RunningHub) -> None:
    v = await world(hub)
    async with hub.hub.sessions() as session:
        everyone = await unsettled(session, now=NOW)
        olenas = await unsettled(session, now=NOW, master_id=v.salon.olena)
        assert [a.id for a in everyone] == [v.yesterday, v.today]
        assert [a.id for a in olenas] == [v.today]
        assert await count_unsettled(session, now=NOW) == 2
        # The moment a visit ends it is to settle; a minute before, not yet.
        assert [a.id for a in await unsettled(session, now=kyiv("2027-03-10 11:00"))] == [
            v.yesterday,
            v.today,
        ]
        assert [a.id for a in await unsettled(session, now=kyiv("2027-03-10 10:59"))] == [
            v.yesterday
        ]
