"""The inbox API over real HTTP: the conversation list (filters, search, waiting, unread),
taking and assigning, a client's timeline, notes, replies, merging, canned replies, CSRF."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
from sqlmodel import col, select

from crm_store.conversations import InboundData, record_inbound
from crm_store.db import transaction
from crm_store.identity import Hints
from crm_store.models import (
    AuditEntry,
    CannedReply,
    Client,
    Conversation,
    Message,
    StaffNote,
)
from crm_store.staff import add_staff
from crm_store.timeutil import utcnow
from tests.support import RunningHub, client_session, eventually, login

PASSWORD = "s3cret-pass"


@dataclass
class Seed:
    owner: int
    olena: int  # a master
    iryna: int  # another master
    anna: int  # client: telegram (waiting, the longest) and email
    bohdan: int  # client: viber, waiting since later
    kateryna: int  # client "Катерина Коваленко": webchat, bot
    anna_tg: int
    anna_mail: int
    bohdan_viber: int
    kateryna_web: int


async def inbound(
    hub: RunningHub,
    channel: str,
    sender: str,
    text: str,
    *,
    minutes_ago: int,
    hints: Hints | None = None,
    attachments: list[dict[str, Any]] | None = None,
    inbox: str = "main",
) -> Message:
    at = utcnow() - timedelta(minutes=minutes_ago)
    async with transaction(hub.hub.sessions) as session:
        record = await record_inbound(
            session,
            InboundData(
                channel=channel,
                inbox=inbox,
                chat_id=sender,
                sender_id=sender,
                provider_message_id=f"{channel}-{sender}-{minutes_ago}",
                sent_at=at,
                text=text,
                attachments=attachments or [],
                hints=hints or Hints(),
            ),
            now=at,
        )
    return record.message


async def set_status(hub: RunningHub, conversation_id: int, status: str, assignee=None) -> None:
    async with transaction(hub.hub.sessions) as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        conversation.status = status
        conversation.assignee_id = assignee
        session.add(conversation)


async def seed(hub: RunningHub) -> Seed:
    async with transaction(hub.hub.sessions) as session:
        owner = await add_staff(
            session, email="owner@salon.test", password=PASSWORD, role="owner", name="Owner"
        )
        olena = await add_staff(
            session, email="olena@salon.test", password=PASSWORD, role="master", name="Olena"
        )
        iryna = await add_staff(
            session, email="iryna@salon.test", password=PASSWORD, role="master", name="Iryna"
        )
    a1 = await inbound(
        hub, "telegram", "tg-anna", "Hello, a manicure?", minutes_ago=50,
        hints=Hints(display_name="Anna Shevchenko", phone="+380671112233"),
    )  # fmt: skip
    a2 = await inbound(
        hub, "email", "anna@example.com", "Sending the photo", minutes_ago=40,
        hints=Hints(display_name="Anna", phone="+380671112233", email="anna@example.com"),
        attachments=[
            {"kind": "image", "ref": "att-1", "mime_type": "image/png", "name": "nails.png"},
            {"kind": "file", "url": "https://example.com/x.pdf", "name": "x.pdf"},
        ],
    )  # fmt: skip
    b1 = await inbound(
        hub, "viber", "vb-bohdan", "Can I move my haircut?", minutes_ago=30,
        hints=Hints(display_name="Bohdan"),
    )  # fmt: skip
    k1 = await inbound(
        hub, "webchat", "web-kat", "Скільки коштує стрижка?", minutes_ago=20,
        hints=Hints(display_name="Катерина Коваленко"),
    )  # fmt: skip
    assert a1.client_id == a2.client_id  # one card by the phone
    await set_status(hub, a1.conversation_id, "waiting")
    await set_status(hub, b1.conversation_id, "waiting")
    return Seed(
        owner.id,  # type: ignore[arg-type]
        olena.id,  # type: ignore[arg-type]
        iryna.id,  # type: ignore[arg-type]
        a1.client_id,
        b1.client_id,
        k1.client_id,
        a1.conversation_id,
        a2.conversation_id,
        b1.conversation_id,
        k1.conversation_id,
    )


async def signed_in(hub: RunningHub, email: str = "owner@salon.test") -> aiohttp.ClientSession:
    session = client_session()
    assert await login(session, hub.base_url, email, PASSWORD) == 200
    return session


async def call(
    staff: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with staff.request(method, url, **kwargs) as response:
        return response.status, await response.json()


async def listed(staff: aiohttp.ClientSession, api: str, **query: Any) -> list[dict[str, Any]]:
    status, body = await call(staff, "GET", f"{api}/conversations", params=query)
    assert status == 200, body
    return body["conversations"]


async def test_list_waiting_first_filters_search_and_paging(hub: RunningHub) -> None:
    s = await seed(hub)
    api = f"{hub.base_url}/api"
    async with await signed_in(hub) as staff:
        rows = await listed(staff, api)
        # Waiting first, the longest wait first; then the newest last message first.
        assert [r["id"] for r in rows] == [s.anna_tg, s.bohdan_viber, s.kateryna_web, s.anna_mail]
        first = rows[0]
        assert (
            first["waiting_since"] is not None and rows[1]["waiting_since"] > first["waiting_since"]
        )
        assert rows[2]["waiting_since"] is None
        assert first["unread"] is True
        assert first["client"]["name"] == "Anna Shevchenko" and first["client"]["tags"] == []
        assert first["last_message"]["text"] == "Hello, a manicure?"
        assert "first_response_at" in first and "opened_at" in first

        waiting_or_bot = await listed(staff, api, status="waiting,bot", channel="viber")
        assert [r["id"] for r in waiting_or_bot] == [s.bohdan_viber]
        assert [r["id"] for r in await listed(staff, api, q="КОВАЛЕНКО")] == [s.kateryna_web]
        assert [r["id"] for r in await listed(staff, api, q="1112233")] == [
            s.anna_tg,
            s.anna_mail,
        ]
        assert [r["id"] for r in await listed(staff, api, q="ANNA@EXAMPLE")] == [
            s.anna_tg,
            s.anna_mail,
        ]
        assert [r["id"] for r in await listed(staff, api, q="move my haircut")] == [s.bohdan_viber]
        # Paging: the page after a conversation continues the same order.
        page1 = await listed(staff, api, limit=2)
        page2 = await listed(staff, api, limit=2, before=page1[-1]["id"])
        page3 = await listed(staff, api, limit=2, before=page2[-1]["id"])
        assert [r["id"] for r in page1 + page2] == [r["id"] for r in rows] and page3 == []
        assert (await call(staff, "GET", f"{api}/conversations?status=nope"))[0] == 400
        assert (await call(staff, "GET", f"{api}/conversations?assignee=x"))[0] == 400


async def test_take_assign_read_and_reply_clears_waiting(hub: RunningHub) -> None:
    s = await seed(hub)
    api = f"{hub.base_url}/api"
    async with await signed_in(hub) as staff:
        status, body = await call(staff, "POST", f"{api}/conversations/{s.anna_tg}/read")
        assert status == 200 and body["unread"] is False
        assert s.anna_tg not in [r["id"] for r in await listed(staff, api, unread=1)]
        await inbound(hub, "telegram", "tg-anna", "Are you there?", minutes_ago=1)
        assert s.anna_tg in [r["id"] for r in await listed(staff, api, unread=1)]

        status, body = await call(staff, "POST", f"{api}/conversations/{s.bohdan_viber}/take")
        assert status == 200
        assert (body["status"], body["assignee_id"]) == ("human", s.owner)
        assert [r["id"] for r in await listed(staff, api, assignee="me")] == [s.bohdan_viber]

        status, body = await call(
            staff, "POST", f"{api}/conversations/{s.kateryna_web}/assign",
            json={"staff_id": s.olena},
        )  # fmt: skip
        assert (status, body["status"], body["assignee_id"]) == (200, "human", s.olena)
        assert [r["id"] for r in await listed(staff, api, assignee=str(s.olena))] == [
            s.kateryna_web
        ]
        status, body = await call(
            staff, "POST", f"{api}/conversations/{s.kateryna_web}/assign", json={"staff_id": None}
        )
        assert (body["status"], body["assignee_id"]) == ("waiting", None)
        bad = await call(
            staff, "POST", f"{api}/conversations/{s.kateryna_web}/assign", json={"staff_id": 999}
        )
        assert bad[0] == 400 and bad[1]["details"][0]["field"] == "staff_id"

        # A staff reply answers the waiting client: no longer waiting.
        status, _ = await call(
            staff, "POST", f"{api}/conversations/{s.anna_tg}/messages", json={"text": "Yes!"}
        )
        assert status == 201
        row = next(r for r in await listed(staff, api) if r["id"] == s.anna_tg)
        assert (row["status"], row["waiting_since"]) == ("human", None)
        assert row["unread"] is False  # who answers has read it
        assert (await call(staff, "POST", f"{api}/conversations/9999/take"))[0] == 404


async def test_timeline_notes_and_reply_to_a_client(hub: RunningHub) -> None:
    s = await seed(hub)
    api = f"{hub.base_url}/api"
    async with await signed_in(hub) as staff:
        status, note = await call(
            staff, "POST", f"{api}/clients/{s.anna}/notes",
            json={"text": "Prefers mornings", "conversation_id": s.anna_tg},
        )  # fmt: skip
        assert status == 201 and note["kind"] == "note" and note["staff"]["name"] == "Owner"
        assert (
            await call(
                staff, "POST", f"{api}/clients/{s.anna}/notes",
                json={"text": "x", "conversation_id": s.bohdan_viber},
            )
        )[0] == 400  # fmt: skip

        status, body = await call(staff, "GET", f"{api}/clients/{s.anna}/timeline")
        assert status == 200 and body["more"] is False
        kinds = [(i["kind"], i.get("channel")) for i in body["items"]]
        assert kinds == [("message", "telegram"), ("message", "email"), ("note", None)]
        photo, link = body["items"][1]["attachments"]
        assert photo["download"] == "/api/attachments/email/main/att-1"
        assert link["download"] == "https://example.com/x.pdf"
        status, older = await call(
            staff, "GET", f"{api}/clients/{s.anna}/timeline",
            params={"limit": 1, "before": body["items"][1]["at"]},
        )  # fmt: skip
        assert [i["text"] for i in older["items"]] == ["Hello, a manicure?"]
        assert older["more"] is False

        # The reply goes on the channel of the client's latest message: email.
        status, frame = await call(
            staff, "POST", f"{api}/clients/{s.anna}/messages", json={"text": "Got the photo"}
        )
        assert status == 201, frame
        assert (frame["channel"], frame["conversation_id"]) == ("email", s.anna_mail)
        assert frame["staff"]["id"] == s.owner and frame["direction"] == "out"
        # Or the chosen one; a channel the client never used is a 400.
        status, frame = await call(
            staff, "POST", f"{api}/clients/{s.anna}/messages",
            json={"text": "See you", "channel": "telegram"},
        )  # fmt: skip
        assert (status, frame["conversation_id"]) == (201, s.anna_tg)
        status, error = await call(
            staff, "POST", f"{api}/clients/{s.anna}/messages",
            json={"text": "Hi", "channel": "sms"},
        )  # fmt: skip
        assert status == 400 and error["details"][0]["field"] == "channel"
        # A closed conversation: the chat gets a new one, taken by the reply.
        await set_status(hub, s.bohdan_viber, "closed")
        status, frame = await call(
            staff, "POST", f"{api}/clients/{s.bohdan}/messages", json={"text": "Moved!"}
        )
        assert status == 201 and frame["conversation_id"] != s.bohdan_viber
    async with hub.hub.sessions() as session:
        fresh = await session.get(Conversation, frame["conversation_id"])
        assert fresh is not None and (fresh.status, fresh.assignee_id) == ("human", s.owner)
        assert fresh.chat_id == "vb-bohdan"
        out = (await session.exec(select(Message).where(Message.direction == "out"))).all()
        assert sorted(m.text for m in out) == ["Got the photo", "Moved!", "See you"]
        audit = (
            await session.exec(select(AuditEntry).where(AuditEntry.action == "note_added"))
        ).all()
        assert [a.entity_id for a in audit] == [s.anna]


async def test_merge_moves_history_and_notes(hub: RunningHub) -> None:
    s = await seed(hub)
    api = f"{hub.base_url}/api"
    async with await signed_in(hub) as staff:
        await call(staff, "POST", f"{api}/clients/{s.bohdan}/notes", json={"text": "VIP"})
        status, card = await call(
            staff, "POST", f"{api}/clients/{s.anna}/merge", json={"other_id": s.bohdan}
        )
        assert status == 200, card
        assert {i["channel"] for i in card["identities"]} == {"telegram", "email", "viber"}
        again = await call(
            staff, "POST", f"{api}/clients/{s.anna}/merge", json={"other_id": s.bohdan}
        )
        assert again[0] == 400
        assert (
            await call(staff, "POST", f"{api}/clients/{s.anna}/merge", json={"other_id": s.anna})
        )[0] == 400
        assert (await call(staff, "POST", f"{api}/clients/{s.anna}/merge", json={"other_id": 999}))[
            0
        ] == 404
        status, body = await call(staff, "GET", f"{api}/clients/{s.anna}/timeline")
        assert [i["text"] for i in body["items"]][-1] == "VIP"
    async with hub.hub.sessions() as session:
        moved = await session.get(Conversation, s.bohdan_viber)
        assert moved is not None and moved.client_id == s.anna
        notes = (await session.exec(select(StaffNote))).all()
        assert [n.client_id for n in notes] == [s.anna]
        merged = await session.get(Client, s.bohdan)
        assert merged is not None and merged.merged_into_id == s.anna
        actions = (
            await session.exec(
                select(AuditEntry.action).where(col(AuditEntry.action).like("merged%"))
            )
        ).all()
        assert sorted(actions) == ["merged_in", "merged_into"]


async def test_canned_replies_and_staff_list(hub: RunningHub) -> None:
    s = await seed(hub)
    api = f"{hub.base_url}/api"
    async with await signed_in(hub) as staff:
        status, made = await call(
            staff, "POST", f"{api}/canned",
            json={"title": "Address", "text": "Khreshchatyk 1", "language": "en"},
        )  # fmt: skip
        assert status == 201
        status, changed = await call(
            staff, "PATCH", f"{api}/canned/{made['id']}", json={"text": "Khreshchatyk 2"}
        )
        assert (status, changed["title"], changed["text"]) == (200, "Address", "Khreshchatyk 2")
        assert (await call(staff, "POST", f"{api}/canned", json={"title": "x"}))[0] == 400
        assert (await call(staff, "PATCH", f"{api}/canned/999", json={"text": "y"}))[0] == 404
        status, rows = await call(staff, "GET", f"{api}/canned")
        assert rows == [
            {"id": made["id"], "title": "Address", "text": "Khreshchatyk 2", "language": "en"}
        ]
        assert (await call(staff, "DELETE", f"{api}/canned/{made['id']}"))[0] == 200
        assert (await call(staff, "GET", f"{api}/canned"))[1] == []
        status, people = await call(staff, "GET", f"{api}/staff")
        assert {p["id"]: p["role"] for p in people} == {
            s.owner: "owner",
            s.olena: "master",
            s.iryna: "master",
        }


async def test_a_post_without_the_csrf_header_is_refused_and_changes_nothing(
    hub: RunningHub,
) -> None:
    s = await seed(hub)
    api = f"{hub.base_url}/api"
    async with await signed_in(hub) as staff:
        del staff.headers["X-CSRF-Token"]
        for path, body in (
            (f"/clients/{s.anna}/notes", {"text": "sneaky"}),
            (f"/conversations/{s.anna_tg}/take", None),
            ("/canned", {"title": "t", "text": "x"}),
            (f"/clients/{s.anna}/merge", {"other_id": s.bohdan}),
        ):
            status, error = await call(staff, "POST", api + path, json=body)
            assert (status, error) == (403, {"error": "missing or wrong CSRF token"})
    async with hub.hub.sessions() as session:
        assert (await session.exec(select(StaffNote))).all() == []
        assert (await session.exec(select(CannedReply))).all() == []
        conversation = await session.get(Conversation, s.anna_tg)
        assert conversation is not None and conversation.assignee_id is None
        bohdan = await session.get(Client, s.bohdan)
        assert bohdan is not None and bohdan.merged_into_id is None


__all__ = ["Seed", "call", "eventually", "inbound", "seed", "signed_in"]
