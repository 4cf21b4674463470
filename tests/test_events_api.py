"""Live updates over Server-Sent Events: what an open inbox receives, per role."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from hub.messages import ContactHints, InboundMessage
from hub.web import events_api
from tests.support import RunningHub, client_session, login, next_frame
from tests.test_inbox_api import seed, set_status, signed_in
from tests.test_webchat import add_owner

PASSWORD = "s3cret-pass"


class Stream:
    """The client side of an SSE connection: one event at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (comments skipped): {"event", "id", "data"}."""
        return await asyncio.wait_for(self._read(comments=False), timeout)

    async def comment(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._read(comments=True), timeout)

    async def _read(self, comments: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while True:
            line = (await self.response.content.readline()).decode()
            if line == "":
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith(":"):
                if comments:
                    return {"comment": line[1:].strip()}
                continue
            if line == "":
                if fields:
                    fields["data"] = json.loads(fields.get("data", "null"))
                    return fields
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


async def open_stream(staff: aiohttp.ClientSession, base_url: str) -> Stream:
    response = await staff.get(f"{base_url}/api/events")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(response)
    assert await stream.comment() == {"comment": "ready"}  # subscribed from here on
    return stream


async def test_a_web_chat_message_and_a_take_over_arrive_live(hub: RunningHub) -> None:
    email, password = await add_owner(hub, password=PASSWORD)
    staff = client_session()
    visitor = client_session()
    try:
        assert await login(staff, hub.base_url, email, password) == 200
        stream = await open_stream(staff, hub.base_url)
        ws = await visitor.ws_connect(hub.ws_url("/ws/chat?lang=en"))
        await next_frame(ws, "ready")
        await ws.send_json({"type": "message", "text": "Is anyone there?"})
        event = await stream.next()
        assert event["event"] == "message"
        assert event["data"]["message"]["text"] == "Is anyone there?"
        assert event["data"]["conversation_status"] == "bot"
        conversation_id = event["data"]["conversation_id"]

        async with staff.post(f"{hub.base_url}/api/conversations/{conversation_id}/take") as r:
            assert r.status == 200
        event = await stream.next()
        assert event["event"] == "conversation"
        assert event["data"]["status"] == "human"
        assert event["data"]["conversation_id"] == conversation_id
        async with staff.post(
            f"{hub.base_url}/api/conversations/{conversation_id}/messages", json={"text": "Yes!"}
        ) as r:
            assert r.status == 201
        event = await stream.next()
        assert (event["event"], event["data"]["message"]["text"]) == ("message", "Yes!")
        assert event["data"]["conversation_status"] == "human"
        await ws.close()
    finally:
        await staff.close()
        await visitor.close()


async def test_a_master_gets_only_their_conversations(hub: RunningHub) -> None:
    s = await seed(hub)
    await set_status(hub, s.bohdan_viber, "human", s.iryna)
    await set_status(hub, s.kateryna_web, "human", s.olena)
    olena = await signed_in(hub, "olena@salon.test")
    owner = await signed_in(hub)
    try:
        mine = await open_stream(olena, hub.base_url)
        everything = await open_stream(owner, hub.base_url)

        async def client_writes(channel: str, sender: str, text: str) -> None:
            await hub.hub.bus.publish_inbound(
                InboundMessage(
                    channel=channel,  # type: ignore[arg-type]
                    inbox="main",
                    chat_id=sender,
                    sender_id=sender,
                    provider_message_id=f"live-{sender}",
                    text=text,
                    contact=ContactHints(),
                )
            )

        # Iryna's client first, then Olena's: Olena's stream skips the first.
        await client_writes("viber", "vb-bohdan", "for Iryna")
        event = await everything.next()
        assert event["data"]["message"]["text"] == "for Iryna"
        await client_writes("webchat", "web-kat", "for Olena")
        assert (await everything.next())["data"]["message"]["text"] == "for Olena"
        event = await mine.next()
        assert event["event"] == "message"
        assert event["data"]["message"]["text"] == "for Olena"

        # Reassigned to her: she gets that change (and the conversation's later events).
        async with owner.post(
            f"{hub.base_url}/api/conversations/{s.anna_tg}/assign", json={"staff_id": s.olena}
        ) as r:
            assert r.status == 200
        event = await mine.next()
        assert (event["event"], event["data"]["conversation_id"]) == ("conversation", s.anna_tg)
        assert event["data"]["assignee_id"] == s.olena
    finally:
        await olena.close()
        await owner.close()


async def test_a_comment_keeps_the_stream_alive_and_shutdown_ends_it(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_api, "PING_SECONDS", 0.05)
    email, password = await add_owner(hub, password=PASSWORD)
    async with client_session() as staff:
        assert await login(staff, hub.base_url, email, password) == 200
        stream = await open_stream(staff, hub.base_url)
        assert await stream.comment() == {"comment": "ping"}
        fanout = hub.runner.app[events_api.FANOUT]
        assert fanout.task is not None and not fanout.task.done()
        await fanout.close()
        with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
            while True:
                await stream.comment()
        assert fanout.task.done()


async def test_a_reconnecting_browser_gets_what_it_missed(hub: RunningHub) -> None:
    s = await seed(hub)
    owner = await signed_in(hub)
    api = f"{hub.base_url}/api"
    try:
        stream = await open_stream(owner, hub.base_url)
        async with owner.post(f"{api}/conversations/{s.anna_tg}/take") as r:
            assert r.status == 200
        seen = await stream.next()
        stream.response.close()
        # While it was away: a reply (event: message) and a hand-back (event: conversation).
        async with owner.post(
            f"{api}/conversations/{s.anna_tg}/messages", json={"text": "Back soon"}
        ) as r:
            assert r.status == 201
        async with owner.post(f"{api}/conversations/{s.anna_tg}/release") as r:
            assert r.status == 200
        response = await owner.get(f"{api}/events", headers={"Last-Event-ID": seen["id"]})
        again = Stream(response)
        assert await again.comment() == {"comment": "ready"}
        missed = [await again.next(), await again.next()]
        assert [e["event"] for e in missed] == ["message", "conversation"]
        assert missed[0]["data"]["message"]["text"] == "Back soon"
        assert missed[1]["data"]["status"] == "bot"
        # And live ones after that, once each.
        async with owner.post(f"{api}/conversations/{s.anna_tg}/take") as r:
            assert r.status == 200
        live = await again.next()
        assert live["event"] == "conversation" and live["id"] > missed[1]["id"]
        response.close()
    finally:
        await owner.close()
