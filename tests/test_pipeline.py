"""The inbound pipeline: once-only storage, crash safety, order, identity, dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import col, select

from crm_store.models import AuditEntry, ChannelIdentity, Client, Message
from crm_store.timeutil import as_utc
from hub.config import Settings
from hub.messages import ContactHints, InboundMessage
from hub.pipeline.bus import DEAD_STREAM, inbound_stream
from hub.state import Hub
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent


def inbound(chat: str, n: int, channel: str = "telegram", **contact: str) -> InboundMessage:
    return InboundMessage(
        channel=channel,
        inbox="main",
        chat_id=chat,
        sender_id=chat,
        provider_message_id=f"{chat}-{n}",
        text=f"{chat} #{n}",
        contact=ContactHints(**contact),
    )


async def open_hub(settings: Settings, **kwargs: object) -> Hub:
    hub = Hub(settings, run_dispatcher=False, run_bots=False, **kwargs)  # type: ignore[arg-type]
    await hub.open()
    return hub


async def messages(hub: Hub) -> list[Message]:
    async with hub.sessions() as session:
        return list((await session.exec(select(Message).order_by(col(Message.id)))).all())


async def test_same_provider_message_three_times_is_stored_once(settings, redis) -> None:
    hub = await open_hub(settings)
    try:
        first = inbound("chat-1", 1)
        await hub.bus.publish_inbound(first)
        await hub.bus.publish_inbound(first)
        # A webhook retry: a new envelope around the same provider message.
        await hub.bus.publish_inbound(inbound("chat-1", 1))
        await hub.bus.publish_inbound(inbound("chat-1", 2))
        await hub.start()

        async def two() -> list[Message]:
            rows = await messages(hub)
            return rows if len(rows) >= 2 else []

        rows = await eventually(two)
        await asyncio.sleep(0.2)  # let any wrongly stored copy show up
        rows = await messages(hub)
        assert [m.provider_message_id for m in rows] == ["chat-1-1", "chat-1-2"]
    finally:
        await hub.stop()
        await hub.close()


async def _crash_then_recover(settings: Settings, redis, tmp_path: Path, point: str) -> None:
    hub = await open_hub(settings)
    try:
        await hub.bus.publish_inbound(inbound("crash-chat", 1))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.crash_router",
            settings.database_url or "",
            settings.redis_url or "",
            str(tmp_path / "crash"),
            point,
            cwd=ROOT,
            env=env,
        )
        assert await asyncio.wait_for(proc.wait(), 60) == 17  # died at the hook
        stored_by_crashed = len(await messages(hub))
        assert stored_by_crashed == (1 if point == "after_commit" else 0)
        # The entry is still pending with the dead router.
        pending = await redis.xpending(
            inbound_stream(hub.bus.shard_for(inbound("crash-chat", 1))), "router"
        )
        assert pending["pending"] == 1

        await hub.start()  # a healthy router takes the shard once the lease runs out

        async def reclaimed() -> bool:
            stream = inbound_stream(hub.bus.shard_for(inbound("crash-chat", 1)))
            return (await redis.xpending(stream, "router"))["pending"] == 0

        await eventually(reclaimed, timeout=20)
        rows = await messages(hub)
        assert [m.provider_message_id for m in rows] == ["crash-chat-1"]
        assert await redis.xlen(DEAD_STREAM) == 0
    finally:
        await hub.stop()
        await hub.close()


async def test_router_killed_after_commit_before_ack(settings, redis, tmp_path) -> None:
    await _crash_then_recover(settings, redis, tmp_path, "after_commit")


async def test_router_killed_before_commit(settings, redis, tmp_path) -> None:
    await _crash_then_recover(settings, redis, tmp_path, "before_commit")


async def test_messages_of_a_chat_stay_in_order_with_two_routers(settings, redis) -> None:
    first = await open_hub(settings)
    second = await open_hub(settings)
    try:
        await first.start()
        await second.start()

        async def balanced() -> bool:
            owners = [await redis.get(k) for k in await redis.keys("hub:in:*:lease")]
            return len(owners) == 4 and len(set(owners)) == 2

        await eventually(balanced, timeout=20)
        chats = [f"order-{n}" for n in range(8)]
        batch = [inbound(chat, n) for n in range(15) for chat in chats]
        await first.bus.publish_inbound_many(batch)

        async def all_stored() -> list[Message]:
            rows = await messages(first)
            return rows if len(rows) == len(batch) else []

        rows = await eventually(all_stored, timeout=30)
        for chat in chats:
            seen = [
                m.provider_message_id for m in rows if m.provider_message_id.startswith(chat + "-")
            ]
            assert seen == [f"{chat}-{n}" for n in range(15)]
        # (Both routers owned shards while the batch was published: `balanced` above.)
    finally:
        for hub in (first, second):
            await hub.stop()
            await hub.close()


async def test_second_channel_with_same_phone_lands_on_same_card(settings, redis) -> None:
    hub = await open_hub(settings)
    try:
        await hub.start()
        await hub.bus.publish_inbound(
            inbound(
                "tg-olena",
                1,
                channel="telegram",
                phone="067 123 45 67",
                display_name="Olena",
                email="olena@example.com",
            )
        )
        await eventually(lambda: _count(hub, Message, 1))
        await hub.bus.publish_inbound(
            inbound("+380671234567", 1, channel="sms", phone="+380671234567")
        )
        await hub.bus.publish_inbound(
            inbound("olena@example.com", 1, channel="email", email="Olena@Example.com")
        )
        await hub.bus.publish_inbound(
            inbound("viber-x", 1, channel="viber", display_name="Stranger")
        )
        await eventually(lambda: _count(hub, Message, 4))
        async with hub.sessions() as session:
            clients = (await session.exec(select(Client).order_by(col(Client.id)))).all()
            identities = (await session.exec(select(ChannelIdentity))).all()
        assert len(clients) == 2
        olena = clients[0]
        assert olena.phone == "+380671234567" and olena.name == "Olena"
        assert olena.email == "olena@example.com"
        assert {i.channel for i in identities if i.client_id == olena.id} == {
            "telegram",
            "sms",
            "email",
        }
        stranger = clients[1]
        assert [i.channel for i in identities if i.client_id == stranger.id] == ["viber"]
        async with hub.sessions() as session:
            audit = (await session.exec(select(AuditEntry).order_by(col(AuditEntry.id)))).all()
        # Chats on different shards are handled in parallel: compare without order.
        assert sorted((a.entity_id, a.action) for a in audit) == sorted(
            [
                (olena.id, "created"),
                (olena.id, "identity_linked"),
                (olena.id, "identity_linked"),
                (stranger.id, "created"),
            ]
        )
    finally:
        await hub.stop()
        await hub.close()


async def _count(hub: Hub, model: type, n: int) -> bool:
    async with hub.sessions() as session:
        return len((await session.exec(select(model))).all()) == n


async def test_malformed_entry_goes_to_dead_letters_and_replays(settings, redis, tmp_path) -> None:
    hub = await open_hub(settings)
    try:
        good = inbound("dl-chat", 1)
        stream = inbound_stream(hub.bus.shard_for(good))
        await redis.xadd(stream, {"data": "{not json"})
        broken = json.loads(inbound("dl-chat", 2).to_json())
        del broken["chat_id"]
        await redis.xadd(stream, {"data": json.dumps(broken)})
        await hub.bus.publish_inbound(good)
        await hub.start()

        async def one() -> list[Message]:
            return await messages(hub)

        assert [m.provider_message_id for m in await eventually(one)] == ["dl-chat-1"]
        assert await redis.xlen(DEAD_STREAM) == 2

        env = {
            **os.environ,
            "REDIS_URL": settings.redis_url or "",
            "PYTHONPATH": str(ROOT),
            "HUB_DATA_DIR": str(tmp_path / "cli"),
        }

        async def hub_cli(*args: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "hub.cli.main", *args],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )

        listed = await hub_cli("dead", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["stream"] for r in rows] == [stream, stream]
        assert "malformed inbound message" in rows[0]["error"]
        assert "chat_id" in rows[1]["error"]

        fixed = tmp_path / "fixed.json"
        broken["chat_id"] = "dl-chat"
        fixed.write_text(json.dumps(broken))
        replayed = await hub_cli("dead", "replay", rows[1]["id"], "--data", str(fixed))
        assert replayed.returncode == 0, replayed.stderr

        async def two() -> list[Message]:
            rows = await messages(hub)
            return rows if len(rows) == 2 else []

        assert [m.provider_message_id for m in await eventually(two)] == ["dl-chat-1", "dl-chat-2"]
        assert await redis.xlen(DEAD_STREAM) == 1  # the unfixable one stays
        bad = await hub_cli("dead", "replay", "1-1")
        assert bad.returncode == 2 and "no dead letter" in bad.stderr

        # A mail the email channel could not make a client's message of is listed beside
        # them, and refused by a replay (it stays in the mailbox); --all passes it over.
        await hub.ctx.set_aside("email", "main", "no sender address", {"uid": 7})
        listed = await hub_cli("dead", "list", "--json")
        aside = json.loads(listed.stdout.splitlines()[-1])
        assert (aside["stream"], aside["error"]) == ("set-aside:email/main", "no sender address")
        assert aside["fields"] == {"uid": 7}
        refused = await hub_cli("dead", "replay", aside["id"])
        assert refused.returncode == 2 and "can't be replayed" in refused.stderr
        everything = await hub_cli("dead", "replay", "--all")
        assert everything.returncode == 0 and "replayed 1 entry" in everything.stdout
        assert aside["id"] in {r["id"] for r in await hub.bus.dead_letters()}
    finally:
        await hub.stop()
        await hub.close()


async def test_a_time_with_an_offset_is_stored_as_the_same_instant(settings, redis) -> None:
    """SQLite keeps a timestamp's wall time and drops its offset: a channel's 10:00+02:00 must
    come back as 08:00 UTC on either database, not as 10:00 UTC."""
    hub = await open_hub(settings)
    try:
        kyiv_morning = datetime(2027, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
        message = inbound("chat-tz", 1).model_copy(update={"sent_at": kyiv_morning})
        await hub.bus.publish_inbound(InboundMessage.model_validate(message.model_dump()))
        await hub.start()
        (stored,) = await eventually(lambda: messages(hub))
        assert as_utc(stored.sent_at) == datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    finally:
        await hub.stop()
        await hub.close()
