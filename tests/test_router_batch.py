"""The router's batch path: the same rows and events as one message at a time, duplicates
found within and across batches, and a poison entry dead-lettered alone."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.models import AuditEntry, ChannelIdentity, Client, Conversation, Message
from hub.messages import ContactHints, InboundMessage
from hub.pipeline.bus import (
    DEAD_STREAM,
    EVENTS_STREAM,
    Bus,
    Entry,
    PermanentError,
    inbound_stream,
)
from hub.pipeline.consumer import Reject
from hub.pipeline.router import Router, RouterHooks
from tests.support import eventually


def inbound(
    chat: str, n: int, text_: str | None = None, *, channel: str = "telegram", **kw: Any
) -> InboundMessage:
    contact = ContactHints(**kw.pop("contact", {}))
    return InboundMessage(
        channel=channel,
        inbox="main",
        chat_id=chat,
        sender_id=kw.pop("sender", chat),
        provider_message_id=f"{chat}-{n}",
        text=text_ if text_ is not None else f"{chat} #{n}",
        contact=contact,
        **kw,
    )


def traffic() -> list[InboundMessage]:
    """Every path the router knows: new and known people, a card filled in and linked across
    channels by phone, copies, a group, an own-app message, consent keywords."""
    anna = {"display_name": "Anna"}
    msgs = [
        inbound("anna", 1, contact=anna),
        inbound("anna", 2, contact=anna),
        inbound("bob", 1),
        inbound("anna", 3, contact=anna),
        inbound("bob", 2, contact={"phone": "+380501112233"}),  # fills bob's card
        inbound("viber-bob", 1, channel="viber", contact={"phone": "+380501112233"}),
        inbound("anna", 2, contact=anna),  # a copy, within the batch
        inbound("bob", 3),
        inbound("group-1", 1, private=False, sender="anna"),
        inbound("group-1", 2, private=False, sender="bob"),
        inbound("anna", 4, "stop"),  # opt-out keyword
        inbound("anna", 5),
        inbound("anna", 6, "the owner wrote this", own=True),
        inbound("anna", 7),
        inbound("sms-carl", 1, channel="sms", consent=False),  # the provider read a STOP
        inbound("carl", 1),
        inbound("bob", 1),  # a copy, across batches
        inbound("carl", 2, contact={"language": "en"}),
        inbound("carl", 3),
        inbound("bob", 4),
    ]
    for n, msg in enumerate(msgs):
        msg.id = f"m{n:03d}"  # the same public ids on both runs
    return msgs


def entries(msgs: list[InboundMessage]) -> list[Entry]:
    return [Entry(inbound_stream(0), f"{n}-0", {"data": m.to_json()}) for n, m in enumerate(msgs)]


async def stored(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """The rows, by what they mean rather than their ids and clock times."""
    async with sessions() as session:
        clients = {c.id: c for c in (await session.exec(select(Client))).all()}
        convs = {c.id: c for c in (await session.exec(select(Conversation))).all()}

        def card(client_id: int | None) -> str:
            c = clients[client_id]
            return f"{c.name}|{c.phone}|{c.language}|{c.source_channel}|{c.marketing_consent}"

        def chat(conv_id: int) -> str:
            c = convs[conv_id]
            return f"{c.channel}:{c.chat_id}"

        identities = (await session.exec(select(ChannelIdentity))).all()
        messages = (await session.exec(select(Message).order_by(col(Message.id)))).all()
        audit = (await session.exec(select(AuditEntry))).all()
        per_chat: dict[str, list[tuple[Any, ...]]] = {}
        for m in messages:
            per_chat.setdefault(chat(m.conversation_id), []).append(
                (
                    m.public_id if m.direction == "in" else "",
                    m.provider_message_id,
                    m.direction,
                    m.author,
                    m.text,
                    m.status,
                    card(m.client_id),
                )
            )
        return {
            "clients": sorted(
                card(c.id) + f"|{c.merged_into_id is None}|{c.first_contact_at is not None}"
                f"|{c.last_contact_at is not None}"
                for c in clients.values()
            ),
            "identities": sorted(
                f"{i.channel}:{i.external_id}->{card(i.client_id)}|{i.display_name}"
                for i in identities
            ),
            "conversations": sorted(
                f"{chat(c.id)}|{c.status}|{c.private}|{card(c.client_id)}"
                f"|{c.first_inbound_at is not None}|{c.last_message_at is not None}"
                for c in convs.values()
            ),
            "messages": per_chat,
            "audit": Counter(
                f"{a.entity}|{a.action}|{json.dumps(a.changes, sort_keys=True)}" for a in audit
            ),
        }


async def events(redis: Redis) -> dict[str, list[tuple[Any, ...]]]:
    """hub:events per chat, in order, without the database's ids."""
    per_chat: dict[str, list[tuple[Any, ...]]] = {}
    for _, fields in await redis.xrange(EVENTS_STREAM):
        event = json.loads(fields["data"])
        message = event.get("message", {})
        per_chat.setdefault(f"{event.get('channel')}:{event.get('chat_id')}", []).append(
            (
                event["type"],
                event.get("conversation_status"),
                message.get("id") if message.get("direction") == "in" else message.get("text"),
                event.get("bot_reply"),
                event.get("private"),
            )
        )
    return per_chat


async def forget(sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
    async with sessions() as session:
        for table in reversed(SQLModel.metadata.sorted_tables):
            await session.exec(text(f'DELETE FROM "{table.name}"'))  # type: ignore[call-overload]
        await session.commit()
    await redis.delete(EVENTS_STREAM)


async def refuse(entry: Entry, exc: PermanentError) -> None:
    raise AssertionError(f"{entry.id} rejected: {exc}")


def router(sessions: async_sessionmaker[AsyncSession], redis: Redis, **kw: Any) -> Router:
    return Router(Bus(redis, shards=1, maxlen=10_000), sessions, **kw)


async def test_batches_store_the_same_rows_and_events_as_one_by_one(sessions, redis) -> None:
    one_by_one = router(sessions, redis)
    for entry in entries(traffic()):
        await one_by_one.handle(entry)
    expected_rows, expected_events = await stored(sessions), await events(redis)
    await forget(sessions, redis)

    batched = router(sessions, redis)
    all_entries = entries(traffic())
    for start in range(0, len(all_entries), 8):
        await batched.handle_batch(all_entries[start : start + 8], refuse)

    assert await stored(sessions) == expected_rows
    assert await events(redis) == expected_events


async def test_a_copy_within_and_across_batches_is_stored_once(sessions, redis) -> None:
    batched = router(sessions, redis)
    first, second = inbound("dana", 1), inbound("dana", 2)
    await batched.handle_batch(entries([first, first, second]), refuse)
    await batched.handle_batch(entries([inbound("dana", 1), inbound("dana", 3)]), refuse)

    rows = (await stored(sessions))["messages"]["telegram:dana"]
    assert [r[1] for r in rows] == ["dana-1", "dana-2", "dana-3"]
    # An event for every copy, each naming the stored message.
    assert [e[2] for e in (await events(redis))["telegram:dana"]] == [
        first.id,
        first.id,
        second.id,
        first.id,
        rows[2][0],
    ]


async def test_a_malformed_entry_is_rejected_before_the_rest_is_stored(sessions, redis) -> None:
    batched = router(sessions, redis)
    good = entries([inbound("erin", 1), inbound("erin", 2)])
    bad = Entry(inbound_stream(0), "9-0", {"data": '{"channel": "telegram"}'})
    seen: list[tuple[str, int]] = []

    async def reject(entry: Entry, exc: PermanentError) -> None:
        rows = (await stored(sessions))["messages"]
        seen.append((entry.id, len(rows)))

    await batched.handle_batch([good[0], bad, good[1]], reject)
    assert seen == [("9-0", 0)]
    assert len((await stored(sessions))["messages"]["telegram:erin"]) == 2


async def test_a_poison_entry_in_a_batch_goes_to_dead_alone(sessions, redis) -> None:
    def poison(msg: InboundMessage) -> None:
        if msg.provider_message_id == "fay-2":
            raise RuntimeError("this one breaks the store")

    hub_router = router(sessions, redis, hooks=RouterHooks(before_commit=poison))
    await hub_router.bus.publish_inbound_many(
        [inbound("fay", 1), inbound("fay", 2), inbound("fay", 3), inbound("gus", 1)]
    )
    consumer = hub_router.consumer(
        "router-test", claim_idle_ms=200, max_deliveries=2, lease_ms=2000
    )
    handled: list[int] = []
    batch_handler = consumer.batch_handler
    assert batch_handler is not None

    async def counting(batch: list[Entry], reject: Reject) -> None:
        handled.append(len(batch))
        await batch_handler(batch, reject)

    consumer.batch_handler = counting

    async def dead() -> list[Any]:
        await consumer.poll_once()
        return await redis.xrange(DEAD_STREAM)

    dead_letters = await eventually(dead)
    assert [
        json.loads(json.loads(f["fields"])["data"])["provider_message_id"] for _, f in dead_letters
    ] == ["fay-2"]

    async def rest() -> dict[str, Any]:
        await consumer.poll_once()
        rows = (await stored(sessions))["messages"]
        return rows if len(rows.get("telegram:fay", [])) == 2 else {}

    rows = await eventually(rest)
    assert [r[1] for r in rows["telegram:fay"]] == ["fay-1", "fay-3"]
    assert [r[1] for r in rows["telegram:gus"]] == ["gus-1"]
    assert handled == [4]  # the first read went as one batch
    assert await redis.xpending(inbound_stream(0), "router") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_newcomers_and_reopened_chats_are_made_together(sessions, redis) -> None:
    """New people (no phone to look them up by) and a known person whose chat was closed:
    cards, identities and conversations made in the batch, the messages in one insert."""
    batched = router(sessions, redis)
    await batched.handle_batch(entries([inbound("erin", 1)]), refuse)
    async with sessions() as session:
        await session.exec(text("UPDATE conversations SET status = 'closed'"))  # type: ignore[call-overload]
        await session.commit()
    traffic = [inbound("erin", 2), inbound("fay", 1, contact={"display_name": "Fay"})]
    traffic += [inbound("gus", 1), inbound("fay", 2), inbound("erin", 3)]
    await batched.handle_batch(entries(traffic), refuse)

    rows = await stored(sessions)
    assert rows["conversations"] == [
        "telegram:erin|bot|True|None|None|None|telegram|False|True|True",
        "telegram:erin|closed|True|None|None|None|telegram|False|True|True",
        "telegram:fay|bot|True|Fay|None|None|telegram|False|True|True",
        "telegram:gus|bot|True|None|None|None|telegram|False|True|True",
    ]
    assert rows["audit"] == Counter(
        {
            f'client|created|{{"email": null, "name": {name}, "phone": null, "source": '
            f'"telegram", "source_ref": null}}': n
            for name, n in (("null", 2), ('"Fay"', 1))
        }
    )
    assert [r[1] for r in rows["messages"]["telegram:fay"]] == ["fay-1", "fay-2"]
    assert len(rows["identities"]) == 3


async def test_newcomers_with_a_phone_are_made_together_unless_a_card_or_the_batch_has_it(
    sessions, redis
) -> None:
    """A phone or email no card has: a card of its own, in the batch's insert. One a card has
    already, or one two people of the same batch give: linked to that one card, as one by one."""
    batched = router(sessions, redis)
    await batched.handle_batch(
        entries([inbound("hana", 1, contact={"phone": "+380671110000"})]), refuse
    )
    traffic = [
        inbound("ivy", 1, channel="sms", contact={"phone": "+380672220000"}),
        inbound("hana-viber", 1, channel="viber", contact={"phone": "067 111 0000"}),
        inbound("jo", 1, channel="webchat", contact={"email": "Jo@Example.com"}),
        inbound("jo-mail", 1, channel="email", contact={"email": "jo@example.com"}),
    ]
    await batched.handle_batch(entries(traffic), refuse)

    rows = await stored(sessions)
    assert sorted(rows["identities"]) == [
        "email:jo-mail->None|None|None|webchat|False|None",
        "sms:ivy->None|+380672220000|None|sms|False|None",
        "telegram:hana->None|+380671110000|None|telegram|False|None",
        "viber:hana-viber->None|+380671110000|None|telegram|False|None",
        "webchat:jo->None|None|None|webchat|False|None",
    ]
    created = sum(n for key, n in rows["audit"].items() if key.startswith("client|created"))
    linked = sum(n for key, n in rows["audit"].items() if key.startswith("client|identity_linked"))
    assert (created, linked) == (3, 2)
