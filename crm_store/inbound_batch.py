"""Inbound messages stored a batch at a time: the same rows as `record_inbound` one by one.

The common case (a known person writing again into their open private chat, with nothing new
for the card) costs a few statements for the whole batch: the lookups in bulk, one
`INSERT … ON CONFLICT DO NOTHING RETURNING` for the messages and one UPDATE each for the
conversations' and clients' last contact. Everything else (a new person or chat, a card to
fill in or follow through a merge, a group) goes through `record_inbound` in the same
transaction, a whole chat at a time so that a chat's messages keep their order.

The unique key (channel, inbox, direction, provider_message_id) stays the final word: a copy
already stored, or a second copy in the same batch, comes back with duplicate=True; a racing
copy that won the insert is found after it (ON CONFLICT), never raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, or_, tuple_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.contacts import normalize_email, normalize_phone
from crm_store.conversations import (
    OPEN_STATUSES,
    InboundData,
    InboundRecord,
    new_conversation,
    record_inbound,
)
from crm_store.db import insert_for
from crm_store.identity import card_created, card_gaps, new_card, new_identity
from crm_store.models import ChannelIdentity, Client, Conversation, Message
from crm_store.timeutil import utcnow

__all__ = ["record_inbound_batch"]

Key = tuple[str, str, str]  # channel, inbox, provider_message_id
Sender = tuple[str, str, str]  # channel, inbox, the sender's id there
ChatKey = tuple[str, str, str]  # channel, inbox, chat_id

MESSAGES: Table = Message.__table__  # type: ignore[attr-defined]


@dataclass
class _Known:
    """What the bulk lookups found for a batch."""

    stored: dict[Key, Message]
    identities: dict[tuple[str, str, str], ChannelIdentity]
    clients: dict[int, Client]
    conversations: dict[ChatKey, Conversation]


async def record_inbound_batch(
    session: AsyncSession,
    batch: Sequence[InboundData],
    *,
    region: str = "UA",
    now: datetime | None = None,
) -> list[InboundRecord]:
    """Store each inbound message of the batch once; one record per item, in order."""
    if not batch:
        return []
    now = now or utcnow()
    known = await _look_up(session, batch)
    records: list[InboundRecord | None] = [None] * len(batch)
    first: dict[Key, int] = {}
    copies: dict[int, int] = {}  # a second copy in the batch → the first's index
    for i, data in enumerate(batch):
        key = _key(data)
        if key in known.stored:
            records[i] = await _stored_record(session, known.stored[key])
        elif key in first:
            copies[i] = first[key]
        else:
            first[key] = i
    fresh = sorted(first.values())
    opened = await _open_places(session, batch, fresh, known, now, region)
    slow_chats = {_chat(batch[i]) for i in fresh if not _simple(batch[i], known, region)}

    # Chats that need the card resolved go the one-by-one way first; the rest touch other
    # conversations, so their rows do not depend on the order between the two groups.
    for i in fresh:
        if _chat(batch[i]) in slow_chats:
            records[i] = await record_inbound(session, batch[i], region=region, now=now)
    simple = [i for i in fresh if _chat(batch[i]) not in slow_chats]
    if simple:
        for i, record in zip(
            simple, await _insert(session, batch, simple, known, now), strict=True
        ):
            records[i] = record
    for i in fresh:  # the first message of a card or conversation made above says so
        record = records[i]
        assert record is not None
        record.new_client = record.new_client or record.client.id in opened.clients
        record.new_conversation = (
            record.new_conversation or record.conversation.id in opened.conversations
        )
        opened.clients.discard(record.client.id)  # type: ignore[arg-type]
        opened.conversations.discard(record.conversation.id)  # type: ignore[arg-type]
    for i, original in copies.items():
        record = records[original]
        assert record is not None
        records[i] = InboundRecord(record.message, record.conversation, record.client, True)
    assert all(r is not None for r in records)
    return records  # type: ignore[return-value]


@dataclass
class _Opened:
    clients: set[int]
    conversations: set[int]


async def _open_places(
    session: AsyncSession,
    batch: Sequence[InboundData],
    fresh: list[int],
    known: _Known,
    now: datetime,
    region: str,
) -> _Opened:
    """People writing for the first time, and known people whose chat has no open
    conversation: their cards, identities and conversations are made together (an INSERT a
    table) and added to `known`, so that their messages take the bulk way too. A newcomer whose
    phone or email is on a card already, or is given by someone else in the same batch (who
    may be the same person), is linked one by one instead."""
    people: dict[Sender, tuple[InboundData, str | None, str | None]] = {}
    chats: dict[ChatKey, Sender] = {}
    given: dict[str, set[Sender]] = {}  # a phone or email → who gives it in this batch
    for i in fresh:
        data = batch[i]
        sender = (data.channel, data.inbox, data.sender_id)
        phone, email = _contacts(data, region)
        for value in (phone, email):
            if value:
                given.setdefault(value, set()).add(sender)
        chat = _chat(data)
        if not data.private or chat in known.conversations or chat in chats:
            continue
        identity = known.identities.get(sender)
        if identity is None:
            people.setdefault(sender, (data, phone, email))
        elif identity.unreachable_at is not None or _merged(known, identity.client_id):
            continue
        chats[chat] = sender
    taken = await _cards_with(session, {v for _, *vs in people.values() for v in vs if v})
    linked = {
        sender
        for sender, (_, *values) in people.items()
        if any(v and (v in taken or len(given[v]) > 1) for v in values)
    }
    for sender in linked:
        del people[sender]
    chats = {chat: sender for chat, sender in chats.items() if sender not in linked}
    if not chats:
        return _Opened(set(), set())
    cards = {
        sender: new_card(data.hints, data.channel, now, phone=phone, email=email)
        for sender, (data, phone, email) in people.items()
    }
    session.add_all(cards.values())
    await session.flush()
    for sender, client in cards.items():
        hints = people[sender][0].hints
        card_created(session, client, hints, sender[0])
        identity = new_identity(client, *sender, hints)
        session.add(identity)
        known.identities[sender] = identity
        known.clients[client.id] = client  # type: ignore[index]
    conversations = []
    for (channel, inbox, chat_id), sender in chats.items():
        client_id = known.identities[sender].client_id
        conversation = new_conversation(client_id, channel, inbox, chat_id, now, private=True)
        session.add(conversation)
        conversations.append(conversation)
        known.conversations[(channel, inbox, chat_id)] = conversation
    await session.flush()
    return _Opened(
        {c.id for c in cards.values()},  # type: ignore[misc]
        {c.id for c in conversations},  # type: ignore[misc]
    )


def _contacts(data: InboundData, region: str) -> tuple[str | None, str | None]:
    """The phone and email a message gives, as resolve_client would read them."""
    hints = data.hints
    phone = normalize_phone(hints.phone, region) if hints.phone else None
    return phone, normalize_email(hints.email) if hints.email else None


async def _cards_with(session: AsyncSession, values: set[str]) -> set[str]:
    """Which of these phones and emails a live card has already."""
    if not values:
        return set()
    rows = await session.exec(
        select(Client.phone, Client.email).where(
            col(Client.merged_into_id).is_(None),
            or_(col(Client.phone).in_(values), col(Client.email).in_(values)),
        )
    )
    return {value for row in rows.all() for value in row if value in values}


def _merged(known: _Known, client_id: int) -> bool:
    client = known.clients.get(client_id)
    return client is None or client.merged_into_id is not None


def _key(data: InboundData) -> Key:
    return (data.channel, data.inbox, data.provider_message_id)


def _chat(data: InboundData) -> ChatKey:
    return (data.channel, data.inbox, data.chat_id)


def _simple(data: InboundData, known: _Known, region: str) -> bool:
    """A known, reachable person writing into their own open private chat with nothing new
    for their card: what `record_inbound` would do is only the insert and the timestamps."""
    if not data.private:
        return False
    identity = known.identities.get((data.channel, data.inbox, data.sender_id))
    if identity is None or identity.unreachable_at is not None:
        return False
    client = known.clients.get(identity.client_id)
    if client is None or client.merged_into_id is not None:
        return False
    conversation = known.conversations.get(_chat(data))
    if conversation is None or conversation.client_id != client.id:
        return False
    hints = data.hints
    # Normalising costs; only a field the card lacks needs it.
    phone = normalize_phone(hints.phone, region) if hints.phone and not client.phone else None
    email = normalize_email(hints.email) if hints.email and not client.email else None
    return not card_gaps(client, hints, phone, email)


async def _look_up(session: AsyncSession, batch: Sequence[InboundData]) -> _Known:
    """What the store has of the batch's messages, senders, chats and cards: four queries
    whatever the channels and inboxes in it (row values: `(channel, inbox, id) IN (…)`)."""
    keys = {_key(d) for d in batch}
    senders = {(d.channel, d.inbox, d.sender_id) for d in batch}
    chats = {_chat(d) for d in batch}
    stored: dict[Key, Message] = {}
    for message in await session.exec(
        select(Message).where(
            Message.direction == "in",
            tuple_(col(Message.channel), col(Message.inbox), col(Message.provider_message_id)).in_(
                keys
            ),
        )
    ):
        stored[(message.channel, message.inbox, message.provider_message_id or "")] = message
    identities: dict[tuple[str, str, str], ChannelIdentity] = {}
    for identity in await session.exec(
        select(ChannelIdentity).where(
            tuple_(
                col(ChannelIdentity.channel),
                col(ChannelIdentity.inbox),
                col(ChannelIdentity.external_id),
            ).in_(senders)
        )
    ):
        identities[(identity.channel, identity.inbox, identity.external_id)] = identity
    conversations: dict[ChatKey, Conversation] = {}
    # The newest open conversation of a chat is its conversation (as open_conversation).
    for conversation in await session.exec(
        select(Conversation)
        .where(
            tuple_(
                col(Conversation.channel), col(Conversation.inbox), col(Conversation.chat_id)
            ).in_(chats),
            col(Conversation.status).in_(OPEN_STATUSES),
        )
        .order_by(col(Conversation.id))
    ):
        conversations[(conversation.channel, conversation.inbox, conversation.chat_id)] = (
            conversation
        )
    client_ids = {i.client_id for i in identities.values()}
    clients = {
        c.id: c  # type: ignore[misc]
        for c in await session.exec(select(Client).where(col(Client.id).in_(client_ids)))
    }
    return _Known(stored, identities, clients, conversations)  # type: ignore[arg-type]


async def _stored_record(session: AsyncSession, message: Message) -> InboundRecord:
    conversation = await session.get(Conversation, message.conversation_id)
    client = await session.get(Client, message.client_id)
    assert conversation is not None and client is not None
    return InboundRecord(message, conversation, client, duplicate=True)


async def _insert(
    session: AsyncSession,
    batch: Sequence[InboundData],
    indexes: list[int],
    known: _Known,
    now: datetime,
) -> list[InboundRecord]:
    """The messages of simple chats in one INSERT, then their chats' and cards' timestamps."""
    rows: list[dict[str, Any]] = []
    places: list[tuple[Conversation, Client]] = []
    for i in indexes:
        data = batch[i]
        conversation = known.conversations[_chat(data)]
        identity = known.identities[(data.channel, data.inbox, data.sender_id)]
        client = known.clients[identity.client_id]
        places.append((conversation, client))
        rows.append(_message_row(data, conversation, client, now))
    statement = (
        insert_for(session)(MESSAGES)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(MESSAGES.c.id, MESSAGES.c.public_id)
    )
    # Multi-row RETURNING promises no order: rows are matched by their public id.
    ids = dict(
        (public_id, id_)
        for id_, public_id in (
            await session.exec(  # type: ignore[call-overload]
                statement
            )
        ).all()
    )
    records: list[InboundRecord] = []
    touched_conversations: set[int] = set()
    touched_clients: set[int] = set()
    for row, (conversation, client) in zip(rows, places, strict=True):
        message_id = ids.get(row["public_id"])
        if message_id is None:
            records.append(await _lost_race(session, row))
            continue
        message = Message(**row)
        message.id = message_id
        records.append(InboundRecord(message, conversation, client, duplicate=False))
        touched_conversations.add(conversation.id)  # type: ignore[arg-type]
        touched_clients.add(client.id)  # type: ignore[arg-type]
    await _touch(
        session, Conversation, touched_conversations, "first_inbound_at", now, last_message_at=now
    )
    await _touch(session, Client, touched_clients, "first_contact_at", now, last_contact_at=now)
    return records


async def _touch(
    session: AsyncSession,
    model: type[Conversation] | type[Client],
    ids: set[int],
    first: str,
    now: datetime,
    **last: datetime,
) -> None:
    """One UPDATE for the rows a batch wrote to: `last` set, `first` set only where empty."""
    if not ids:
        return
    column = getattr(model, first)
    await session.exec(  # type: ignore[call-overload]
        update(model)
        .where(col(model.id).in_(ids))
        .values(**last, **{first: func.coalesce(col(column), now)})
        .execution_options(synchronize_session=False)
    )


def _message_row(
    data: InboundData, conversation: Conversation, client: Client, now: datetime
) -> dict[str, Any]:
    # Every column, as the ORM would write them (the model's defaults are Python-side).
    return {
        "public_id": data.public_id or uuid.uuid4().hex,
        "conversation_id": conversation.id,
        "client_id": client.id,
        "channel": data.channel,
        "inbox": data.inbox,
        "direction": "in",
        "author": "client",
        "staff_id": None,
        "text": data.text,
        "attachments": data.attachments,
        "provider_message_id": data.provider_message_id,
        "outbound_key": None,
        "reply_to_id": data.reply_to_id,
        "status": "received",
        "claimed_by": None,
        "claimed_until": None,
        "error": None,
        "attempts": 0,
        "segments": None,
        "sent_at": data.sent_at,
        "created_at": now,
        "status_at": now,
    }


async def _lost_race(session: AsyncSession, row: dict[str, Any]) -> InboundRecord:
    """A copy stored by someone else between the lookup and the insert: theirs is the one."""
    message = (
        await session.exec(
            select(Message).where(
                Message.channel == row["channel"],
                Message.inbox == row["inbox"],
                Message.direction == "in",
                Message.provider_message_id == row["provider_message_id"],
            )
        )
    ).first()
    if message is None:
        # Another unique key refused the row (a public id taken): not a copy, an error.
        raise LookupError(f"inbound {row['provider_message_id']!r} was refused by the store")
    return await _stored_record(session, message)
