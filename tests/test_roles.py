"""Roles, enforced in the API on a running hub: a master sees and touches only their own
conversations, appointments and clients; managing is for owners and admins."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from sqlmodel import select

from crm_store.db import transaction
from crm_store.identity import Hints
from crm_store.models import (
    Appointment,
    CannedReply,
    Client,
    Conversation,
    Message,
    Staff,
    StaffNote,
)
from crm_store.staff import add_staff, hash_password
from tests.salon import Salon, build_salon, kyiv
from tests.support import RunningHub, client_session, login
from tests.test_inbox_api import call, inbound, set_status

NOW = kyiv("2027-03-01 09:00")
PASSWORD = "s3cret-pass"
NOT_YOURS = {"error": "not yours"}


@dataclass
class World:
    salon: Salon
    owner: int
    anna: int  # Olena's conversation
    bohdan: int  # Iryna's conversation
    kateryna: int  # nobody's conversation; an appointment with Iryna
    anna_tg: int
    bohdan_viber: int
    kateryna_web: int
    olena_appointment: int  # with the salon's client Oksana
    iryna_appointment: int  # with Kateryna


async def signed(hub: RunningHub, email: str) -> aiohttp.ClientSession:
    session = client_session()
    assert await login(session, hub.base_url, email, PASSWORD) == 200
    return session


async def build(hub: RunningHub) -> World:
    hub.hub.clock = lambda: NOW
    salon = await build_salon(hub.hub.sessions)
    async with transaction(hub.hub.sessions) as session:
        owner = await add_staff(session, email="owner@salon.test", password=PASSWORD, role="owner")
        for staff in (await session.exec(select(Staff).where(Staff.role == "master"))).all():
            staff.password_hash = hash_password(PASSWORD)
            session.add(staff)
    anna = await inbound(hub, "telegram", "tg-anna", "Hi", minutes_ago=30, hints=Hints("Anna"))
    bohdan = await inbound(hub, "viber", "vb-bohdan", "Hey", minutes_ago=20, hints=Hints("Bohdan"))
    kat = await inbound(hub, "webchat", "web-kat", "Привіт", minutes_ago=10, hints=Hints("Kat"))
    await set_status(hub, anna.conversation_id, "human", salon.olena)
    await set_status(hub, bohdan.conversation_id, "human", salon.iryna)
    api = f"{hub.base_url}/api"
    async with await signed(hub, "owner@salon.test") as owner_session:
        booked = []
        for client, master, start in (
            (salon.client, salon.olena, "2027-03-10T10:00:00+02:00"),
            (kat.client_id, salon.iryna, "2027-03-10T12:00:00+02:00"),
        ):
            status, body = await call(
                owner_session, "POST", f"{api}/appointments",
                json={"client_id": client, "service_id": salon.manicure, "start": start,
                      "master_id": master},
            )  # fmt: skip
            assert status == 201, body
            booked.append(body["id"])
    return World(
        salon,
        owner.id,  # type: ignore[arg-type]
        anna.client_id,
        bohdan.client_id,
        kat.client_id,
        anna.conversation_id,
        bohdan.conversation_id,
        kat.conversation_id,
        *booked,
    )


async def test_a_master_sees_only_their_conversations(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    async with await signed(hub, "olena@salon.test") as olena:
        status, body = await call(olena, "GET", f"{api}/conversations")
        assert [c["id"] for c in body["conversations"]] == [w.anna_tg]
        status, body = await call(olena, "GET", f"{api}/conversations", params={"assignee": "none"})
        assert body["conversations"] == []
        for other in (w.bohdan_viber, w.kateryna_web):
            assert await call(olena, "GET", f"{api}/conversations/{other}/messages") == (
                403,
                NOT_YOURS,
            )
            refused = await call(
                olena, "POST", f"{api}/conversations/{other}/messages", json={"text": "hi"}
            )
            assert refused == (403, NOT_YOURS)
            for action in ("take", "read", "release", "close"):
                assert await call(olena, "POST", f"{api}/conversations/{other}/{action}") == (
                    403,
                    NOT_YOURS,
                ), action
        status, _ = await call(olena, "GET", f"{api}/conversations/{w.anna_tg}/messages")
        assert status == 200
        status, _ = await call(
            olena, "POST", f"{api}/conversations/{w.anna_tg}/messages", json={"text": "Hello!"}
        )
        assert status == 201
        assert (await call(olena, "POST", f"{api}/conversations/{w.anna_tg}/read"))[0] == 200
        # Assigning is for owners and admins.
        status, _ = await call(
            olena, "POST", f"{api}/conversations/{w.anna_tg}/assign", json={"staff_id": None}
        )
        assert status == 403
    async with await signed(hub, "owner@salon.test") as owner:
        status, body = await call(owner, "GET", f"{api}/conversations")
        assert len(body["conversations"]) == 3
    async with hub.hub.sessions() as session:
        kept = await session.get(Conversation, w.bohdan_viber)
        assert kept is not None and (kept.status, kept.assignee_id) == ("human", w.salon.iryna)
        nobody = await session.get(Conversation, w.kateryna_web)
        assert nobody is not None and (nobody.status, nobody.assignee_id) == ("bot", None)


async def test_a_master_sees_only_their_appointments(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    day = {"from": "2027-03-10", "to": "2027-03-10"}
    async with await signed(hub, "olena@salon.test") as olena:
        for query in (day, {**day, "master": str(w.salon.iryna)}):
            status, body = await call(olena, "GET", f"{api}/appointments", params=query)
            assert [a["id"] for a in body["appointments"]] == [w.olena_appointment]
        mine = f"{api}/appointments/{w.olena_appointment}"
        theirs = f"{api}/appointments/{w.iryna_appointment}"
        assert (await call(olena, "GET", mine))[0] == 200
        assert await call(olena, "GET", theirs) == (403, NOT_YOURS)
        assert await call(olena, "PATCH", theirs, json={"action": "cancel"}) == (403, NOT_YOURS)
        assert (await call(olena, "PATCH", mine, json={"action": "confirm"}))[0] == 200
        moved_away = await call(
            olena, "PATCH", mine,
            json={"action": "move", "start": "2027-03-11T10:00:00+02:00",
                  "master_id": w.salon.iryna},
        )  # fmt: skip
        assert moved_away == (403, NOT_YOURS)
        booking = {"client_id": w.salon.client, "service_id": w.salon.manicure}
        refused = await call(
            olena, "POST", f"{api}/appointments",
            json={**booking, "start": "2027-03-11T10:00:00+02:00", "master_id": w.salon.iryna},
        )  # fmt: skip
        assert refused == (403, NOT_YOURS)
        status, body = await call(
            olena, "POST", f"{api}/appointments",
            json={**booking, "start": "2027-03-11T15:00:00+02:00"},
        )  # fmt: skip
        assert status == 201 and body["master"]["id"] == w.salon.olena
        assert await call(olena, "PATCH", f"{api}/business", json={"name": "Mine"}) == (
            403,
            {"error": "only an owner or admin may do this"},
        )
    async with hub.hub.sessions() as session:
        theirs_row = await session.get(Appointment, w.iryna_appointment)
        assert theirs_row is not None and theirs_row.status == "booked"
        rows = (await session.exec(select(Appointment))).all()
        assert sorted(a.master_id for a in rows) == sorted(
            [w.salon.olena, w.salon.iryna, w.salon.olena]
        )


async def test_a_master_sees_only_their_clients(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    async with await signed(hub, "olena@salon.test") as olena:
        status, body = await call(olena, "GET", f"{api}/clients")
        assert {c["id"] for c in body["clients"]} == {w.anna, w.salon.client}
        for other in (w.kateryna, w.bohdan):
            card = f"{api}/clients/{other}"
            assert await call(olena, "GET", card) == (403, NOT_YOURS)
            assert await call(olena, "GET", f"{card}/timeline") == (403, NOT_YOURS)
            assert await call(olena, "PATCH", card, json={"name": "X"}) == (403, NOT_YOURS)
            assert await call(olena, "POST", f"{card}/notes", json={"text": "x"}) == (
                403,
                NOT_YOURS,
            )
            assert await call(olena, "POST", f"{card}/messages", json={"text": "x"}) == (
                403,
                NOT_YOURS,
            )
        for mine in (w.anna, w.salon.client):
            assert (await call(olena, "GET", f"{api}/clients/{mine}"))[0] == 200
            assert (await call(olena, "GET", f"{api}/clients/{mine}/timeline"))[0] == 200
        status, body = await call(olena, "PATCH", f"{api}/clients/{w.anna}", json={"tags": ["vip"]})
        assert (status, body["tags"]) == (200, ["vip"])
        assert (await call(olena, "POST", f"{api}/clients/{w.anna}/notes", json={"text": "ok"}))[
            0
        ] == 201
        merge = await call(
            olena, "POST", f"{api}/clients/{w.anna}/merge", json={"other_id": w.salon.client}
        )
        assert merge[0] == 403
        assert (await call(olena, "POST", f"{api}/canned", json={"title": "t", "text": "x"}))[
            0
        ] == 403
        assert (await call(olena, "GET", f"{api}/canned"))[0] == 200
    async with hub.hub.sessions() as session:
        kateryna = await session.get(Client, w.kateryna)
        assert kateryna is not None and kateryna.name == "Kat"
        oksana = await session.get(Client, w.salon.client)
        assert oksana is not None and oksana.merged_into_id is None
        notes = (await session.exec(select(StaffNote))).all()
        assert [n.client_id for n in notes] == [w.anna]
        assert (await session.exec(select(CannedReply))).all() == []


async def test_managers_may_manage(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    async with transaction(hub.hub.sessions) as session:
        await add_staff(session, email="admin@salon.test", password=PASSWORD, role="admin")
    async with await signed(hub, "admin@salon.test") as admin:
        status, card = await call(admin, "GET", f"{api}/clients/{w.kateryna}")
        assert [a["id"] for a in card["appointments"]] == [w.iryna_appointment]
        assert (await call(admin, "POST", f"{api}/canned", json={"title": "t", "text": "x"}))[
            0
        ] == 201
        status, body = await call(
            admin, "POST", f"{api}/conversations/{w.kateryna_web}/assign",
            json={"staff_id": w.salon.olena},
        )  # fmt: skip
        assert (status, body["assignee_id"]) == (200, w.salon.olena)
    # Now the conversation is Olena's, and so is its client's card.
    async with await signed(hub, "olena@salon.test") as olena:
        status, card = await call(olena, "GET", f"{api}/clients/{w.kateryna}")
        # Her card, but not Iryna's appointment with her (nor its audit entries).
        assert (status, card["appointments"]) == (200, [])
        assert all(e["entity"] != "appointment" for e in card["audit"])
        status, body = await call(olena, "GET", f"{api}/conversations")
        assert {c["id"] for c in body["conversations"]} == {w.anna_tg, w.kateryna_web}


async def test_a_master_fetches_only_files_of_their_conversations(hub: RunningHub) -> None:
    w = await build(hub)
    photo = [{"kind": "image", "ref": "photo-1", "mime_type": "image/png"}]
    await inbound(hub, "webchat", "web-kat", "photo", minutes_ago=5, attachments=photo)
    api = f"{hub.base_url}/api"
    url = f"{api}/attachments/webchat/main/photo-1"
    async with await signed(hub, "olena@salon.test") as olena:
        assert await call(olena, "GET", url) == (403, NOT_YOURS)
        await set_status(hub, w.kateryna_web, "human", w.salon.olena)
        # Hers now: past the role check, the channel answers (the fake file is not there).
        status, body = await call(olena, "GET", url)
        assert status == 404 and body != NOT_YOURS


async def test_a_master_books_only_clients_they_already_see(hub: RunningHub) -> None:
    """A booking is not a way into a card: a stranger (or a client whose appointment with the
    master was cancelled) can't be booked by a master, and a cancellation grants nothing."""
    w = await build(hub)
    api = f"{hub.base_url}/api"
    booking = {"service_id": w.salon.manicure, "start": "2027-03-11T15:00:00+02:00"}
    async with await signed(hub, "olena@salon.test") as olena:
        for stranger in (w.kateryna, w.bohdan, 10_000):
            refused = await call(
                olena, "POST", f"{api}/appointments", json={**booking, "client_id": stranger}
            )
            assert refused == (403, NOT_YOURS), stranger
            assert await call(olena, "GET", f"{api}/clients/{stranger}") == (403, NOT_YOURS)
        # Oksana is hers through a live appointment; once it is cancelled, she is not.
        oksana = f"{api}/clients/{w.salon.client}"
        assert (await call(olena, "GET", oksana))[0] == 200
        cancel = {"action": "cancel"}
        assert (await call(olena, "PATCH", f"{api}/appointments/{w.olena_appointment}",
                           json=cancel))[0] == 200  # fmt: skip
        assert await call(olena, "GET", oksana) == (403, NOT_YOURS)
        assert await call(olena, "GET", f"{oksana}/timeline") == (403, NOT_YOURS)
        assert await call(olena, "PATCH", oksana, json={"marketing_consent": False}) == (
            403,
            NOT_YOURS,
        )
        status, body = await call(olena, "GET", f"{api}/clients")
        assert {c["id"] for c in body["clients"]} == {w.anna}
        again = await call(
            olena, "POST", f"{api}/appointments", json={**booking, "client_id": w.salon.client}
        )
        assert again == (403, NOT_YOURS)
        # Her own conversation's client she books as before.
        status, body = await call(
            olena, "POST", f"{api}/appointments", json={**booking, "client_id": w.anna}
        )
        assert status == 201 and body["master"]["id"] == w.salon.olena
    async with hub.hub.sessions() as session:
        booked = (await session.exec(select(Appointment).order_by(Appointment.id))).all()
    assert [(a.client_id, a.status) for a in booked] == [
        (w.salon.client, "cancelled"),
        (w.kateryna, "booked"),
        (w.anna, "booked"),
    ]


async def test_writing_to_a_client_does_not_take_an_unassigned_conversation(
    hub: RunningHub,
) -> None:
    """Iryna sees Kateryna (an appointment with her), but Kateryna's chat is nobody's: a
    master can neither take it (/take) nor take it by writing; one rule for every route."""
    w = await build(hub)
    api = f"{hub.base_url}/api"
    async with await signed(hub, "iryna@salon.test") as iryna:
        assert (await call(iryna, "GET", f"{api}/clients/{w.kateryna}"))[0] == 200
        assert await call(iryna, "POST", f"{api}/conversations/{w.kateryna_web}/take") == (
            403,
            NOT_YOURS,
        )
        written = await call(
            iryna, "POST", f"{api}/clients/{w.kateryna}/messages", json={"text": "Hi, it's Iryna"}
        )
        assert written == (403, NOT_YOURS)
        on_channel = await call(
            iryna, "POST", f"{api}/clients/{w.kateryna}/messages",
            json={"text": "Hi", "channel": "webchat"},
        )  # fmt: skip
        assert on_channel == (403, NOT_YOURS)
    async with hub.hub.sessions() as session:
        conversation = await session.get(Conversation, w.kateryna_web)
        assert conversation is not None
        assert (conversation.status, conversation.assignee_id) == ("bot", None)
        sent = (await session.exec(select(Message).where(Message.direction == "out"))).all()
        assert sent == []
        conversations = (await session.exec(select(Conversation))).all()
        assert len(conversations) == 3  # none opened by the refused write either


async def test_a_master_gets_no_staff_emails(hub: RunningHub) -> None:
    """An email is half of a sign-in: a master sees colleagues' names only."""
    await build(hub)
    api = f"{hub.base_url}/api"
    async with await signed(hub, "olena@salon.test") as olena:
        status, team = await call(olena, "GET", f"{api}/staff")
    assert status == 200 and team and all(set(s) == {"id", "name", "role"} for s in team)
    async with await signed(hub, "owner@salon.test") as owner:
        status, team = await call(owner, "GET", f"{api}/staff")
    assert "owner@salon.test" in {s["email"] for s in team}
