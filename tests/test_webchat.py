"""A web chat visitor writes; staff see it and answer; the answer reaches the visitor."""

from __future__ import annotations

from sqlmodel import select

from crm_store.db import transaction
from crm_store.models import AuditEntry, Client, Conversation, Message
from crm_store.staff import add_staff
from tests.support import RunningHub, client_session, eventually, login, next_frame


async def add_owner(
    hub: RunningHub, email: str = "owner@salon.test", password: str = "s3cret-pass"
):
    async with transaction(hub.hub.sessions) as session:
        await add_staff(session, email=email, password=password, role="owner")
    return email, password


async def test_visitor_message_reaches_staff_and_reply_reaches_visitor(hub: RunningHub) -> None:
    email, password = await add_owner(hub)
    visitor = client_session()
    staff = client_session()
    try:
        async with visitor.get(f"{hub.base_url}/chat?lang=en") as page:
            assert page.status == 200
            html = await page.text()
            assert "Message us" in html
        ws = await visitor.ws_connect(hub.ws_url("/ws/chat?lang=en"))
        assert (await next_frame(ws, "ready"))["type"] == "ready"
        await ws.send_json({"type": "message", "text": "Hi! Can I book a manicure?"})
        echo = await next_frame(ws)
        assert echo["direction"] == "in" and echo["text"] == "Hi! Can I book a manicure?"

        async def stored() -> list[Message]:
            async with hub.hub.sessions() as session:
                return list((await session.exec(select(Message))).all())

        [message] = await eventually(stored)
        assert message.channel == "webchat" and message.direction == "in"
        assert message.public_id == echo["id"]

        assert await login(staff, hub.base_url, email, password) == 200
        async with staff.get(f"{hub.base_url}/api/conversations") as response:
            assert response.status == 200
            [conversation] = (await response.json())["conversations"]
        assert conversation["channel"] == "webchat"
        assert conversation["status"] == "bot"
        assert conversation["last_message"]["text"] == "Hi! Can I book a manicure?"
        conv_id = conversation["id"]
        async with staff.get(f"{hub.base_url}/api/conversations/{conv_id}/messages") as response:
            [listed] = (await response.json())["messages"]
        assert listed["id"] == echo["id"]

        async with staff.post(
            f"{hub.base_url}/api/conversations/{conv_id}/messages",
            json={"text": "Of course! Tomorrow at 11:00?"},
        ) as response:
            assert response.status == 201
            reply = await response.json()
        pushed = await next_frame(ws)
        assert pushed == {
            "type": "message",
            "direction": "out",
            "text": "Of course! Tomorrow at 11:00?",
            "id": reply["id"],
            "at": pushed["at"],
        }

        async def sent() -> Message | None:
            async with hub.hub.sessions() as session:
                row = (
                    await session.exec(select(Message).where(Message.public_id == reply["id"]))
                ).one()
                return row if row.status == "sent" else None

        await eventually(sent)
        async with hub.hub.sessions() as session:
            conv = await session.get(Conversation, conv_id)
            assert conv is not None
            assert conv.status == "human"  # a staff reply takes the conversation
            assert conv.first_response_at is not None
            client = await session.get(Client, conv.client_id)
            assert client is not None and client.language == "en"
            audit = (
                await session.exec(select(AuditEntry).where(AuditEntry.entity != "staff"))
            ).all()
            assert [(a.entity, a.action) for a in audit] == [
                ("client", "created"),
                ("conversation", "take"),  # staff took it from the bot by replying
            ]
        await ws.close()

        # A reload shows the history, in order.
        again = await visitor.ws_connect(hub.ws_url("/ws/chat"))
        first, second = await next_frame(again), await next_frame(again)
        assert [first["direction"], second["direction"]] == ["in", "out"]
        assert [first["id"], second["id"]] == [echo["id"], reply["id"]]
        assert (await next_frame(again, "ready"))["type"] == "ready"
        await again.close()
    finally:
        await visitor.close()
        await staff.close()


async def test_two_visitors_do_not_see_each_other(hub: RunningHub) -> None:
    async with client_session() as alice, client_session() as bob:
        await alice.get(f"{hub.base_url}/chat")
        await bob.get(f"{hub.base_url}/chat")
        ws_a = await alice.ws_connect(hub.ws_url("/ws/chat"))
        ws_b = await bob.ws_connect(hub.ws_url("/ws/chat"))
        await next_frame(ws_a, "ready")
        await next_frame(ws_b, "ready")
        await ws_a.send_json({"type": "message", "text": "from alice"})
        await ws_b.send_json({"type": "message", "text": "from bob"})
        assert (await next_frame(ws_a))["text"] == "from alice"
        assert (await next_frame(ws_b))["text"] == "from bob"

        async def two_conversations() -> bool:
            async with hub.hub.sessions() as session:
                return len((await session.exec(select(Conversation))).all()) == 2

        await eventually(two_conversations)
        await ws_a.close()
        await ws_b.close()


async def test_malformed_frames_get_an_error_and_change_nothing(hub: RunningHub) -> None:
    async with client_session() as visitor:
        await visitor.get(f"{hub.base_url}/chat")
        ws = await visitor.ws_connect(hub.ws_url("/ws/chat"))
        await next_frame(ws, "ready")
        for bad in (
            "not json",
            '{"type": "message"}',
            '{"type": "message", "text": "   "}',
            '["message"]',
            '{"type": "message", "text": 42}',
        ):
            await ws.send_str(bad)
            error = await next_frame(ws, "error")
            assert error["code"] == "bad_frame"
        await ws.send_json({"type": "message", "text": "x" * 4001})
        assert (await next_frame(ws, "error"))["code"] == "too_long"
        # The socket still works after all that.
        await ws.send_json({"type": "message", "text": "ok now"})
        assert (await next_frame(ws))["text"] == "ok now"
        await ws.close()

    async def stored() -> list[Message]:
        async with hub.hub.sessions() as session:
            return list((await session.exec(select(Message))).all())

    assert [m.text for m in await eventually(stored)] == ["ok now"]


async def test_same_client_id_twice_is_stored_once(hub: RunningHub) -> None:
    """The widget resends with the same client_id after a reconnect: one message."""
    async with client_session() as visitor:
        await visitor.get(f"{hub.base_url}/chat")
        ws = await visitor.ws_connect(hub.ws_url("/ws/chat"))
        await next_frame(ws, "ready")
        for _ in range(2):
            await ws.send_json({"type": "message", "text": "once", "client_id": "abcdef123456"})
            await next_frame(ws)
        await ws.send_json({"type": "message", "text": "after", "client_id": "abcdef999999"})
        await next_frame(ws)
        await ws.close()

    async def both() -> list[str]:
        async with hub.hub.sessions() as session:
            rows = (await session.exec(select(Message).order_by(Message.id))).all()
            texts = [m.text for m in rows]
            return texts if "after" in texts else []

    assert await eventually(both) == ["once", "after"]
