"""The staff booking and client API over real HTTP: what a front-desk screen would do."""

from __future__ import annotations

from typing import Any

import aiohttp
from sqlmodel import col, select

from crm_store.db import transaction
from crm_store.models import Appointment, AuditEntry, ChannelIdentity, Client
from tests.salon import Salon, build_salon, kyiv
from tests.support import RunningHub, client_session, login, status_of
from tests.test_webchat import add_owner

NOW = kyiv("2027-03-01 09:00")  # a Monday; the tests book Wednesday 10 March


async def staff_of(hub: RunningHub) -> aiohttp.ClientSession:
    email, password = await add_owner(hub)
    staff = client_session()
    assert await login(staff, hub.base_url, email, password) == 200
    return staff


async def call(
    staff: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with staff.request(method, url, **kwargs) as response:
        return response.status, await response.json()


async def setup(hub: RunningHub) -> tuple[Salon, aiohttp.ClientSession, str]:
    hub.hub.clock = lambda: NOW
    salon = await build_salon(hub.hub.sessions)
    return salon, await staff_of(hub), f"{hub.base_url}/api"


async def starts(staff: aiohttp.ClientSession, api: str, **query: Any) -> list[str]:
    status, body = await call(staff, "GET", f"{api}/slots", params=query)
    assert status == 200, body
    return [s["start"] for s in body["slots"]]


async def test_price_list_masters_and_free_times(hub: RunningHub) -> None:
    salon, staff, api = await setup(hub)
    async with staff:
        status, body = await call(staff, "GET", f"{api}/services")
        assert status == 200
        by_name = {s["name"]["en"]: s for s in body["services"]}
        manicure = by_name["Gel manicure"]
        assert manicure["price"] == {"amount": 800.0, "minor": 80_000, "currency": "UAH"}
        assert manicure["duration_min"] == 60 and manicure["buffer_min"] == 15
        assert sorted(manicure["master_ids"]) == sorted([salon.olena, salon.iryna])
        assert by_name["Brow shaping"]["master_ids"] == []

        status, body = await call(staff, "GET", f"{api}/masters")
        iryna = next(m for m in body["masters"] if m["id"] == salon.iryna)
        assert iryna["services"] == [
            {
                "service_id": salon.manicure,
                "duration_min": 90,
                "price": {"amount": 900.0, "minor": 90_000, "currency": "UAH"},
            }
        ]
        olena = next(m for m in body["masters"] if m["id"] == salon.olena)
        assert olena["hours"]["0"] == {
            "start": "10:00",
            "end": "19:00",
            "breaks": [["13:00", "14:00"]],
        }
        assert "5" not in olena["hours"]  # Saturday off

        day = {"service": salon.manicure, "from": "2027-03-10", "to": "2027-03-10"}
        olena_day = await starts(staff, api, master=salon.olena, **day)
        # 10:00 to 18:00 on the quarter hour, none running into lunch (12:15 ends 13:15).
        assert olena_day[0] == "2027-03-10T10:00:00+02:00"
        assert "2027-03-10T12:00:00+02:00" in olena_day
        assert "2027-03-10T12:15:00+02:00" not in olena_day
        assert "2027-03-10T13:00:00+02:00" not in olena_day
        assert olena_day[-1] == "2027-03-10T18:00:00+02:00"
        status, body = await call(staff, "GET", f"{api}/slots", params=day)
        anyone = body["slots"]
        assert len({s["start"] for s in anyone}) == len(anyone)  # each time once
        assert {s["master_name"] for s in anyone} <= {"Olena", "Iryna"}
        # The client window (60 min lead) applies only when asked for.
        today = {"service": salon.manicure, "master": salon.olena, "from": "2027-03-01"}
        assert (await starts(staff, api, **today))[0] == "2027-03-01T10:00:00+02:00"
        client_first = (await starts(staff, api, window="client", **today))[0]
        assert client_first == "2027-03-01T10:00:00+02:00"  # 09:00 + 60 min
        hub.hub.clock = lambda: kyiv("2027-03-01 09:30")
        assert (await starts(staff, api, **today))[0] == "2027-03-01T10:00:00+02:00"
        assert (await starts(staff, api, window="client", **today))[0] == (
            "2027-03-01T10:30:00+02:00"
        )


async def test_book_refuse_move_cancel_and_close_with_audit(hub: RunningHub) -> None:
    salon, staff, api = await setup(hub)
    ten = "2027-03-10T10:00:00+02:00"
    day = {
        "service": salon.manicure,
        "master": salon.olena,
        "from": "2027-03-10",
        "to": "2027-03-10",
    }
    async with staff:
        status, booked = await call(
            staff,
            "POST",
            f"{api}/appointments",
            json={
                "client_id": salon.client,
                "service_id": salon.manicure,
                "master_id": salon.olena,
                "start": ten,
                "notes": "french",
            },
        )
        assert status == 201, booked
        assert booked["start"] == ten and booked["end"] == "2027-03-10T11:00:00+02:00"
        assert booked["master"] == {"id": salon.olena, "name": "Olena"}
        assert booked["client"]["phone"] == "+380671234567"
        assert booked["status"] == "booked" and booked["source"] == "staff"
        assert booked["price"]["minor"] == 80_000
        assert ten not in await starts(staff, api, **day)

        # The same time again: refused, with the nearest free times and nothing written.
        status, refused = await call(
            staff,
            "POST",
            f"{api}/appointments",
            json={
                "client_id": salon.client,
                "service_id": salon.manicure,
                "master_id": salon.olena,
                "start": "2027-03-10T10:30:00+02:00",
            },
        )
        assert status == 409
        assert refused["reason"] == "taken"
        assert refused["alternatives"][0]["start"].startswith("2027-03-10T")
        assert all(a["master_id"] == salon.olena for a in refused["alternatives"])
        assert "2027-03-10T11:15:00+02:00" in [a["start"] for a in refused["alternatives"]]

        # Move to 15:00: 10:00 is free again.
        status, moved = await call(
            staff,
            "PATCH",
            f"{api}/appointments/{booked['id']}",
            json={"action": "move", "start": "2027-03-10T15:00:00+02:00"},
        )
        assert status == 200, moved
        assert moved["start"] == "2027-03-10T15:00:00+02:00"
        free = await starts(staff, api, **day)
        assert ten in free and "2027-03-10T15:00:00+02:00" not in free

        status, listed = await call(
            staff, "GET", f"{api}/appointments", params={"from": "2027-03-10", "to": "2027-03-10"}
        )
        assert [a["id"] for a in listed["appointments"]] == [booked["id"]]

        # Not started yet: can't be done. Later it can, and the card learns the visit.
        status, body = await call(
            staff, "PATCH", f"{api}/appointments/{booked['id']}", json={"action": "done"}
        )
        assert status == 400 and "has not started" in body["error"]
        hub.hub.clock = lambda: kyiv("2027-03-10 16:10")
        status, done = await call(
            staff, "PATCH", f"{api}/appointments/{booked['id']}", json={"action": "done"}
        )
        assert status == 200 and done["status"] == "done"
        status, body = await call(
            staff, "PATCH", f"{api}/appointments/{booked['id']}", json={"action": "cancel"}
        )
        assert status == 400 and "can't become cancelled" in body["error"]

        # A second booking, cancelled: its time is free again.
        hub.hub.clock = lambda: NOW
        status, second = await call(
            staff,
            "POST",
            f"{api}/appointments",
            json={"client_id": salon.client, "service_id": salon.manicure, "start": ten},
        )
        assert status == 201
        status, cancelled = await call(
            staff,
            "PATCH",
            f"{api}/appointments/{second['id']}",
            json={"action": "cancel", "reason": "client called"},
        )
        assert status == 200 and cancelled["status"] == "cancelled"
        assert ten in await starts(
            staff,
            api,
            service=salon.manicure,
            master=second["master"]["id"],
            **{"from": "2027-03-10", "to": "2027-03-10"},
        )

    async with hub.hub.sessions() as session:
        entries = (
            await session.exec(
                select(AuditEntry)
                .where(AuditEntry.entity == "appointment")
                .order_by(col(AuditEntry.id))
            )
        ).all()
        client = await session.get(Client, salon.client)
    assert [(e.entity_id, e.action) for e in entries] == [
        (booked["id"], "book"),
        (booked["id"], "reschedule"),
        (booked["id"], "done"),
        (second["id"], "book"),
        (second["id"], "cancelled"),
    ]
    assert all(e.actor == "staff" and e.staff_id is not None for e in entries)
    assert entries[1].changes["start_at"][1].startswith("2027-03-10T13:00:00")  # 15:00 Kyiv
    assert entries[4].changes == {"status": ["booked", "cancelled"], "reason": "client called"}
    assert client is not None and client.last_visit_at is not None


async def test_bad_booking_requests_are_4xx_and_change_nothing(hub: RunningHub) -> None:
    salon, staff, api = await setup(hub)
    ok = {
        "client_id": salon.client,
        "service_id": salon.manicure,
        "start": "2027-03-10T10:00:00+02:00",
    }
    async with staff:
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", "/slots", {"params": {"from": "2027-03-10"}}, 400),  # no service
            ("GET", "/slots", {"params": {"service": "x"}}, 400),
            ("GET", "/slots", {"params": {"service": salon.manicure, "from": "10.03.2027"}}, 400),
            (
                "GET",
                "/slots",
                {"params": {"service": salon.manicure, "from": "2027-03-10", "to": "2027-03-01"}},
                400,
            ),
            (
                "GET",
                "/slots",
                {"params": {"service": salon.manicure, "from": "2027-03-01", "to": "2027-12-01"}},
                400,
            ),
            ("GET", "/slots", {"params": {"service": 9999}}, 404),
            ("GET", "/slots", {"params": {"service": salon.manicure, "master": 9999}}, 404),
            ("GET", "/appointments", {"params": {"status": "lost"}}, 400),
            ("GET", "/appointments/9999", {}, 404),
            ("POST", "/appointments", {"json": {**ok, "start": "2027-03-10T10:00:00"}}, 400),
            ("POST", "/appointments", {"json": {**ok, "client_id": 9999}}, 404),
            ("POST", "/appointments", {"json": {**ok, "service_id": 9999}}, 404),
            ("POST", "/appointments", {"json": {**ok, "service_id": salon.brows}}, 409),
            ("POST", "/appointments", {"json": {**ok, "start": "2027-03-10T10:05:00+02:00"}}, 409),
            ("POST", "/appointments", {"json": {**ok, "start": "2027-02-10T10:00:00+02:00"}}, 409),
            ("POST", "/appointments", {"data": "client_id=1"}, 415),
            (
                "POST",
                "/appointments",
                {"data": "{", "headers": {"Content-Type": "application/json"}},
                400,
            ),
            ("PATCH", "/appointments/9999", {"json": {"action": "cancel"}}, 404),
            ("PATCH", "/appointments/1", {"json": {"action": "move"}}, 400),
            ("PATCH", "/appointments/1", {"json": {"action": "explode"}}, 400),
            ("PATCH", "/business", {"json": {"slot_step_min": 7}}, 400),
            ("PATCH", "/business", {"json": {"timezone": "Mars/Olympus"}}, 400),
            ("GET", "/clients/9999", {}, 404),
            ("GET", "/clients", {"params": {"limit": "0"}}, 400),
            ("PATCH", f"/clients/{salon.client}", {"json": {"phone": "12345"}}, 400),
            ("PATCH", f"/clients/{salon.client}", {"json": {"email": "not-an-email"}}, 400),
            ("PATCH", f"/clients/{salon.client}", {"json": {"language": "de"}}, 400),
            ("PATCH", f"/clients/{salon.client}", {"json": {"preferred_master_id": 9999}}, 400),
            ("PATCH", f"/clients/{salon.client}", {"json": {"tags": None}}, 400),
        ]
        for method, path, kwargs, expected in cases:
            status, body = await call(staff, method, api + path, **kwargs)
            assert status == expected, (method, path, kwargs, status, body)
            assert body["error"]
        # Refusals name their reason.
        status, body = await call(
            staff, "POST", f"{api}/appointments", json={**ok, "service_id": salon.brows}
        )
        assert body["reason"] == "not_offered"
    async with client_session() as stranger:
        assert await status_of(stranger, "GET", f"{api}/appointments") == 401
        assert (
            await status_of(stranger, "PATCH", f"{api}/clients/{salon.client}", json={"name": "x"})
            == 401
        )
    async with hub.hub.sessions() as session:
        assert (await session.exec(select(Appointment))).all() == []
        changes = select(AuditEntry).where(AuditEntry.entity != "staff")  # not the team's making
        assert (await session.exec(changes)).all() == []
        client = await session.get(Client, salon.client)
        assert client is not None and client.phone == "+380671234567" and client.language is None


async def test_client_cards_search_edit_and_trail(hub: RunningHub) -> None:
    salon, staff, api = await setup(hub)
    async with transaction(hub.hub.sessions) as session:
        other = Client(name="Марія Коваленко", email="maria@example.com")
        session.add(other)
        await session.flush()
        session.add(
            ChannelIdentity(
                client_id=salon.client,
                channel="telegram",
                inbox="main",
                external_id="42",
                username="oksana",
            )
        )
    async with staff:
        status, body = await call(staff, "GET", f"{api}/clients", params={"q": "коваленко"})
        assert [c["name"] for c in body["clients"]] == ["Марія Коваленко"]
        status, body = await call(staff, "GET", f"{api}/clients", params={"q": "067 123"})
        assert [c["id"] for c in body["clients"]] == [salon.client]
        status, body = await call(staff, "GET", f"{api}/clients")
        assert {c["id"] for c in body["clients"]} == {salon.client, other.id}

        status, changed = await call(
            staff,
            "PATCH",
            f"{api}/clients/{salon.client}",
            json={
                "name": "  Oksana   Petrenko ",
                "phone": "050 111 22 33",
                "tags": ["VIP", "vip", " nails "],
                "language": "en",
                "preferred_master_id": salon.olena,
                "marketing_consent": True,
            },
        )
        assert status == 200, changed
        assert changed["name"] == "Oksana Petrenko"
        assert changed["phone"] == "+380501112233"
        assert changed["tags"] == ["VIP", "nails"]
        # The same edit again changes nothing and writes no second entry.
        status, _ = await call(
            staff, "PATCH", f"{api}/clients/{salon.client}", json={"language": "en"}
        )
        assert status == 200

        status, booked = await call(
            staff,
            "POST",
            f"{api}/appointments",
            json={
                "client_id": salon.client,
                "service_id": salon.haircut,
                "start": "2027-03-10T16:00:00+02:00",
            },
        )
        assert status == 201
        status, card = await call(staff, "GET", f"{api}/clients/{salon.client}")
        assert status == 200
        assert card["identities"] == [
            {
                "channel": "telegram",
                "inbox": "main",
                "external_id": "42",
                "username": "oksana",
                "display_name": None,
                "linked_at": card["identities"][0]["linked_at"],
            }
        ]
        assert [a["id"] for a in card["appointments"]] == [booked["id"]]
        assert [(e["entity"], e["action"]) for e in card["audit"]] == [
            ("appointment", "book"),
            ("client", "update"),
        ]
        update = card["audit"][1]
        assert update["actor"] == "staff" and update["staff_id"] is not None
        assert update["changes"]["phone"] == ["+380671234567", "+380501112233"]
        assert update["changes"]["name"] == ["Oksana", "Oksana Petrenko"]
        assert "language" in update["changes"]


async def test_business_settings_change_the_slots(hub: RunningHub) -> None:
    salon, staff, api = await setup(hub)
    day = {
        "service": salon.haircut,
        "master": salon.olena,
        "from": "2027-03-10",
        "to": "2027-03-10",
    }
    async with staff:
        status, body = await call(staff, "GET", f"{api}/business")
        assert status == 200 and body["slot_step_min"] == 15 and body["timezone"] == "Europe/Kyiv"
        assert "2027-03-10T10:15:00+02:00" in await starts(staff, api, **day)
        status, body = await call(
            staff,
            "PATCH",
            f"{api}/business",
            json={
                "slot_step_min": 30,
                "address": {"uk": "вул. Хрещатик, 1", "en": "1 Khreshchatyk St"},
            },
        )
        assert status == 200, body
        assert body["address"]["en"] == "1 Khreshchatyk St"
        free = await starts(staff, api, **day)
        assert "2027-03-10T10:15:00+02:00" not in free and "2027-03-10T10:30:00+02:00" in free
    async with hub.hub.sessions() as session:
        entry = (
            await session.exec(select(AuditEntry).where(AuditEntry.entity == "business"))
        ).one()
    assert entry.changes["slot_step_min"] == [15, 30]
