"""Outbound retries with backoff, permanent failures, and the bot hook."""

from __future__ import annotations

import asyncio
import random

from sqlmodel import select

from bots.base import Reply, Turn
from channels.base import Channel, PermanentSendError
from crm_store.db import transaction
from crm_store.models import Conversation, Message
from crm_store.staff import add_staff
from hub.messages import Author, DeliveryState, DeliveryStatus, OutboundMessage
from hub.pipeline.dispatcher import Backoff, Dispatcher
from hub.pipeline.replies import send_reply
from tests.support import client_session, eventually, next_frame, start_hub


class FlakyChannel(Channel):
    """A provider that fails `failures` times (transiently), then accepts."""

    name = "sms"

    def __init__(self, failures: int, permanent: bool = False) -> None:
        self.failures = failures
        self.permanent = permanent
        self.calls = 0

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        self.calls += 1
        if self.permanent:
            raise PermanentSendError("21211: the 'To' number is not a valid phone number")
        if self.calls <= self.failures:
            raise ConnectionError("provider timed out")
        return DeliveryStatus(
            outbound_id=msg.id, status=DeliveryState.sent, provider_message_id=f"SM{self.calls}"
        )


async def _conversation(hub, chat_id: str = "+380501112233") -> Conversation:
    from crm_store.conversations import open_conversation
    from crm_store.models import Client
    from crm_store.timeutil import utcnow

    async with transaction(hub.sessions) as session:
        client = Client(name="Iryna")
        session.add(client)
        await session.flush()
        conv, _ = await open_conversation(
            session,
            client_id=client.id,
            channel="sms",
            inbox="main",
            chat_id=chat_id,
            now=utcnow(),
        )
    return conv


async def test_transient_failures_retry_with_backoff_then_permanent_fails(settings, redis) -> None:
    from hub.state import Hub

    hub = Hub(settings, run_router=False, run_bots=False, run_dispatcher=False)
    await hub.open()
    try:
        conv = await _conversation(hub)
        delays: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            delays.append(seconds)

        flaky = FlakyChannel(failures=3)
        dispatcher = Dispatcher(
            hub.bus,
            hub.sessions,
            {"sms": flaky},
            backoff=Backoff(base=1.0, cap=4.0, attempts=5),
            sleep=fake_sleep,
            rng=random.Random(7),
        )
        queued = await send_reply(
            hub.sessions,
            hub.bus,
            conversation_id=conv.id,
            text="Нагадуємо про запис",
            author=Author.system,
        )
        consumer = dispatcher.consumer("test-dispatch", claim_idle_ms=300, max_deliveries=3)
        await consumer.poll_once()
        assert flaky.calls == 4
        assert len(delays) == 3
        assert all(0 <= d <= cap for d, cap in zip(delays, [1.0, 2.0, 4.0], strict=True))
        async with hub.sessions() as session:
            row = (
                await session.exec(
                    select(Message).where(Message.public_id == queued.message.public_id)
                )
            ).one()
        assert (row.status, row.provider_message_id, row.attempts) == ("sent", "SM4", 4)

        # A redelivered entry does not send again.
        await hub.bus.publish_outbound(queued.outbound)
        await consumer.poll_once()
        assert flaky.calls == 4

        refused = FlakyChannel(failures=0, permanent=True)
        dispatcher.channels = {"sms": refused}
        second = await send_reply(
            hub.sessions, hub.bus, conversation_id=conv.id, text="second", author=Author.system
        )
        await consumer.poll_once()
        assert refused.calls == 1
        async with hub.sessions() as session:
            row = (
                await session.exec(
                    select(Message).where(Message.public_id == second.message.public_id)
                )
            ).one()
        assert row.status == "failed" and "not a valid phone number" in (row.error or "")
    finally:
        await hub.close()


class GatedChannel(Channel):
    """A provider that holds the first message to one chat until let go (a chat waiting out
    Telegram's one-message-a-second limit), and records the order of sends."""

    name = "sms"

    def __init__(self, held_chat: str) -> None:
        self.held_chat = held_chat
        self.gate = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        if msg.chat_id == self.held_chat and not self.gate.is_set():
            await self.gate.wait()
        self.sent.append(msg.text)
        return DeliveryStatus(outbound_id=msg.id, status=DeliveryState.sent)


async def test_a_waiting_chat_does_not_hold_up_the_others(settings, redis) -> None:
    from hub.state import Hub

    hub = Hub(settings, run_router=False, run_bots=False, run_dispatcher=False)
    await hub.open()
    try:
        slow, other = (
            await _conversation(hub, "+380501112233"),
            await _conversation(hub, "+380671112233"),
        )
        channel = GatedChannel(held_chat="+380501112233")
        dispatcher = Dispatcher(hub.bus, hub.sessions, {"sms": channel})
        for conv, text in ((slow, "A1"), (slow, "A2"), (other, "B1")):
            await send_reply(
                hub.sessions, hub.bus, conversation_id=conv.id, text=text, author=Author.system
            )
        consumer = dispatcher.consumer("test-dispatch", claim_idle_ms=300, max_deliveries=3)
        polling = asyncio.create_task(consumer.poll_once())
        await eventually(lambda: asyncio.sleep(0, channel.sent == ["B1"]))
        assert not polling.done()
        channel.gate.set()
        assert await polling == 3
        assert channel.sent == ["B1", "A1", "A2"]  # the held chat's own order kept
    finally:
        await hub.close()


class EchoResponder:
    def __init__(self) -> None:
        self.turns: list[Turn] = []

    async def respond(self, turn: Turn) -> list[Reply]:
        self.turns.append(turn)
        return [Reply(text=f"echo: {turn.text}")]


async def test_bot_answers_while_status_is_bot_and_is_silent_for_humans(settings, redis) -> None:
    responder = EchoResponder()
    running = await start_hub(settings, responder=responder)
    try:
        async with client_session() as visitor:
            await visitor.get(f"{running.base_url}/chat")
            ws = await visitor.ws_connect(running.ws_url("/ws/chat"))
            await next_frame(ws, "ready")
            await ws.send_json({"type": "message", "text": "hello"})
            assert (await next_frame(ws))["direction"] == "in"
            answer = await next_frame(ws)
            assert answer["direction"] == "out" and answer["text"] == "echo: hello"

            async with running.hub.sessions() as session:
                conv = (await session.exec(select(Conversation))).one()
            async with transaction(running.hub.sessions) as session:
                staff = await add_staff(
                    session, email="a@salon.test", password="password1", role="admin"
                )
            await send_reply(
                running.hub.sessions,
                running.hub.bus,
                conversation_id=conv.id,
                text="Staff here",
                author=Author.staff,
                staff_id=staff.id,
            )
            assert (await next_frame(ws))["text"] == "Staff here"
            await ws.send_json({"type": "message", "text": "thanks"})
            assert (await next_frame(ws))["text"] == "thanks"

            async def outs() -> list[str]:
                async with running.hub.sessions() as session:
                    rows = (await session.exec(select(Message).order_by(Message.id))).all()
                texts = [m.text for m in rows]
                return texts if "thanks" in texts else []

            assert await eventually(outs) == ["hello", "echo: hello", "Staff here", "thanks"]
            assert [t.text for t in responder.turns] == ["hello"]
            await ws.close()
    finally:
        await running.stop()
