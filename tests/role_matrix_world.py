"""The world tests/test_role_matrix.py calls every staff API operation in, and the ways it asks
and looks. The salon is tests/test_roles.py's (two masters, their conversations, appointments
and clients); on top of it, one object of every kind an operation takes, on Olena's side
(`mine`) and on everyone else's (`theirs`), so each operation can be aimed at both."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlmodel import SQLModel, col, select

from crm_store.db import transaction
from crm_store.identity import Hints
from crm_store.inbox import save_canned
from crm_store.models import Client, Staff
from crm_store.staff import add_staff
from hub.pipeline.bus import EVENTS_STREAM
from tests.salon import kyiv
from tests.support import RunningHub
from tests.test_inbox_api import call, inbound, set_status
from tests.test_roles import NOW, PASSWORD, build, signed

OWNER = "owner@salon.test"
ADMIN = "admin@salon.test"
MASTER = "olena@salon.test"  # the master the matrix signs in as
# Before the salon's "now" (tests/test_roles.NOW): appointments that ended unsettled.
PAST = kyiv("2027-02-24 10:00")
BOOKED_AT = kyiv("2027-02-20 09:00")
SSE_FIRST_LINE_S = 5.0


@dataclass(frozen=True)
class Side:
    """Objects as Olena meets them. `mine` are hers (a master may touch them; owners and admins
    act on them too); `theirs` are Iryna's or nobody's (a master must not touch them). Ids in
    tuples are each tried; `ids` are what the lists must or must not hold of this side."""

    conversations: tuple[int, ...]
    released: tuple[int, ...]  # given back to the bot (one of its own: the others stay hers)
    closed: tuple[int, ...]
    clients: tuple[int, ...]
    appointments: tuple[int, ...]
    changes: tuple[tuple[int, dict[str, Any]], ...]  # PATCH /api/appointments/{id}
    bookings: tuple[dict[str, Any], ...]  # POST /api/appointments
    files: tuple[str, ...]  # refs of webchat attachments
    conversation_queries: tuple[dict[str, str], ...]
    client_queries: tuple[dict[str, str], ...]
    appointment_queries: tuple[dict[str, str], ...]
    unsettled_queries: tuple[dict[str, str], ...]
    ids: dict[str, frozenset[int]]  # "conversations", "clients", "appointments"


@dataclass(frozen=True)
class World:
    owner: int
    admin: int
    olena: int
    iryna: int
    manicure: int
    dup: int  # a card nobody has: merged into Olena's client by a manager
    canned: int  # changed by a manager
    canned_gone: int  # deleted by a manager
    draft: int  # a broadcast draft: read, changed, its recipients listed
    to_send: int
    to_cancel: int
    mine: Side
    theirs: Side


def booking(client: int, service: int, start: str, master: int | None = None) -> dict[str, Any]:
    """A POST /api/appointments body."""
    body = {"client_id": client, "service_id": service, "start": start}
    return body if master is None else {**body, "master_id": master}


async def build_world(hub: RunningHub) -> World:
    base = await build(hub)
    salon = base.salon
    async with transaction(hub.hub.sessions) as session:
        admin = await add_staff(session, email=ADMIN, password=PASSWORD, role="admin")
        canned = await save_canned(session, {"title": "Hours", "text": "10-19"})
        canned_gone = await save_canned(session, {"title": "Old", "text": "Gone soon"})
        dup = Client(name="Anna (twice)")
        session.add(dup)
        anna = await session.get(Client, base.anna)
        assert anna is not None
        anna.marketing_consent = True  # a broadcast needs somebody to send to
        session.add(anna)
    photo = {"kind": "image", "mime_type": "image/png"}
    rita = await inbound(
        hub, "webchat", "web-rita", "photo", minutes_ago=9, hints=Hints("Rita"),
        attachments=[{**photo, "ref": "rita-photo"}],
    )  # fmt: skip
    lesia = await inbound(hub, "webchat", "web-lesia", "Hi", minutes_ago=8, hints=Hints("Lesia"))
    mila = await inbound(hub, "webchat", "web-mila", "Hi", minutes_ago=7, hints=Hints("Mila"))
    zoya = await inbound(
        hub, "webchat", "web-zoya", "photo", minutes_ago=6, hints=Hints("Zoya"),
        attachments=[{**photo, "ref": "zoya-photo"}],
    )  # fmt: skip
    for mine in (rita, lesia, mila):
        await set_status(hub, mine.conversation_id, "human", salon.olena)
    await set_status(hub, zoya.conversation_id, "human", salon.iryna)
    api = f"{hub.base_url}/api"
    async with await signed(hub, OWNER) as owner:
        # Ended, never marked done or no-show: the "to settle" list has one of each master.
        hub.hub.clock = lambda: BOOKED_AT
        past = []
        for client, master, hour in (
            (base.anna, salon.olena, 10),
            (base.kateryna, salon.iryna, 12),
        ):
            at = PAST.replace(hour=hour).isoformat()
            status, body = await call(
                owner,
                "POST",
                f"{api}/appointments",
                json=booking(client, salon.manicure, at, master),
            )
            assert status == 201, body
            past.append(body["id"])
        hub.hub.clock = lambda: NOW
        broadcasts = []
        for title in ("Spring", "Summer", "Autumn"):
            status, body = await call(
                owner, "POST", f"{api}/broadcasts", json={"title": title, "text": "Come by"}
            )
            assert status == 201, body
            broadcasts.append(body["id"])
    week = {"from": "2027-02-20", "to": "2027-03-20"}
    mine = Side(
        conversations=(base.anna_tg,),
        released=(lesia.conversation_id,),
        closed=(mila.conversation_id,),
        clients=(base.anna,),
        appointments=(base.olena_appointment,),
        changes=((base.olena_appointment, {"action": "confirm"}),),
        bookings=(booking(salon.client, salon.manicure, "2027-03-11T15:00:00+02:00"),),
        files=("rita-photo",),
        conversation_queries=({},),
        client_queries=({},),
        appointment_queries=(week,),
        unsettled_queries=({},),
        ids={
            "conversations": frozenset(
                {base.anna_tg, rita.conversation_id, lesia.conversation_id, mila.conversation_id}
            ),
            "clients": frozenset(
                {base.anna, salon.client, rita.client_id, lesia.client_id, mila.client_id}
            ),
            "appointments": frozenset({base.olena_appointment, past[0]}),
        },
    )
    theirs_conversations = (base.bohdan_viber, base.kateryna_web)
    theirs = Side(
        conversations=theirs_conversations,
        released=theirs_conversations,
        closed=theirs_conversations,
        clients=(base.bohdan, base.kateryna),
        appointments=(base.iryna_appointment,),
        changes=(
            (base.iryna_appointment, {"action": "confirm"}),
            # Her own appointment, moved into Iryna's day.
            (
                base.olena_appointment,
                {"action": "move", "start": "2027-03-12T10:00:00+02:00", "master_id": salon.iryna},
            ),
        ),
        bookings=(
            # A client she has nothing with (Iryna's).
            booking(base.kateryna, salon.manicure, "2027-03-11T16:30:00+02:00"),
            # A client she sees, into Iryna's day.
            booking(salon.client, salon.manicure, "2027-03-11T10:00:00+02:00", salon.iryna),
        ),
        files=("zoya-photo",),
        conversation_queries=(
            {},
            {"assignee": str(salon.iryna)},
            {"assignee": "none"},
            {"q": "Bohdan"},
        ),
        client_queries=({}, {"q": "Bohdan"}, {"q": "Kat"}, {"q": "twice"}),
        appointment_queries=(
            week,
            {**week, "master": str(salon.iryna)},
            {"client": str(base.kateryna)},
        ),
        unsettled_queries=({}, {"master": str(salon.iryna)}),
        ids={
            "conversations": frozenset({*theirs_conversations, zoya.conversation_id}),
            "clients": frozenset({base.bohdan, base.kateryna, zoya.client_id, dup.id}),  # type: ignore[arg-type]
            "appointments": frozenset({base.iryna_appointment, past[1]}),
        },
    )
    return World(
        owner=base.owner,
        admin=admin.id,  # type: ignore[arg-type]
        olena=salon.olena,
        iryna=salon.iryna,
        manicure=salon.manicure,
        dup=dup.id,  # type: ignore[arg-type]
        canned=canned.id,  # type: ignore[arg-type]
        canned_gone=canned_gone.id,  # type: ignore[arg-type]
        draft=broadcasts[0],
        to_send=broadcasts[1],
        to_cancel=broadcasts[2],
        mine=mine,
        theirs=theirs,
    )


# Asking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # JSON, the first line of an event stream, or text
    location: str | None = None


async def ask(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    query: dict[str, str] | None = None,
    json: Any = None,
) -> Answer:
    """One request, whatever it answers: JSON, CSV, a file, an event stream (whose first line
    is read and the connection closed) or a redirect (not followed)."""
    async with session.request(
        method, url, params=query, json=json, allow_redirects=False
    ) as response:
        if response.content_type == "text/event-stream":
            body: Any = await asyncio.wait_for(response.content.readline(), SSE_FIRST_LINE_S)
        elif response.content_type == "application/json":
            body = await response.json()
        else:
            body = await response.text(errors="replace")
        return Answer(response.status, body, response.headers.get("Location"))


async def documented_operations(hub: RunningHub, staff: aiohttp.ClientSession) -> set[str]:
    """Every operation of the OpenAPI document the hub serves, as "METHOD /path"."""
    answer = await ask(staff, "GET", f"{hub.base_url}/api/openapi.json")
    assert answer.status == 200, answer
    return {
        f"{method.upper()} {path}"
        for path, operations in answer.body["paths"].items()
        for method in operations
    }


def inbox_pages(hub: RunningHub) -> list[str]:
    """The staff pages under /inbox that need a session (all but the login page and assets)."""
    found = set()
    for route in hub.runner.app.router.routes():
        path = route.resource.get_info().get("path") if route.resource else None
        if route.method == "GET" and path and path.startswith("/inbox") and path != "/inbox/login":
            found.add(path)
    return sorted(found)


async def footprint(hub: RunningHub) -> dict[str, Any]:
    """Everything a request could have changed: every table's rows, and how many events
    went out on hub:events."""
    tables: dict[str, Any] = {}
    async with hub.hub.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await connection.execute(table.select())).all()
            tables[table.name] = sorted(repr(tuple(row)) for row in rows)
    tables["hub:events"] = await hub.hub.redis.xlen(EVENTS_STREAM)
    return tables


async def pages_send_to_login(hub: RunningHub, staff: aiohttp.ClientSession, who: str) -> list[str]:
    """Every page under /inbox redirects to the login page: the problems found."""
    problems = []
    for page in inbox_pages(hub):
        answer = await ask(staff, "GET", hub.base_url + page)
        if answer.status != 302 or not (answer.location or "").startswith("/inbox/login"):
            problems.append(f"{who}: GET {page} -> {answer.status} {answer.location}")
    return problems


async def unchanged_since(hub: RunningHub, before: dict[str, Any], who: str) -> list[str]:
    """The problem, if any, that the footprint is no longer `before`."""
    after = await footprint(hub)
    return [] if after == before else [f"{who} changed {', '.join(_changed(before, after))}"]


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(name for name in after if before.get(name) != after[name])


async def deactivate(hub: RunningHub, *staff_ids: int) -> None:
    """Staff.active off in the database, as an owner dismissing someone would leave it."""
    async with transaction(hub.hub.sessions) as session:
        found = await session.exec(select(Staff).where(col(Staff.id).in_(staff_ids)))
        for staff in found.all():
            staff.active = False
            session.add(staff)
