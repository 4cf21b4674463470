"""Conversations and their messages: storing each provider message once, delivery states.

An outbound message goes queued → sending → sent → delivered → read (or failed). `sending` is
a dispatcher's claim on the send (claim_outbound): it carries the claim's owner and expiry,
so two dispatchers holding entries of one message never both send it (hub/pipeline/dispatcher.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.identity import Hints, Resolution, resolve_client
from crm_store.models import AuditEntry, Client, Conversation, Message
from crm_store.timeutil import as_utc, utcnow

OPEN_STATUSES = ("bot", "waiting", "human")
STATUSES = (*OPEN_STATUSES, "closed")
# A receipt only moves a message forward: a late `sent` never hides `read`, while a later
# "undelivered" receipt does turn `sent` into `failed`. Any answer or receipt moves a message
# on from `sending` (a receipt may outrun the send's own answer).
DELIVERY_RANK = {"queued": 0, "sending": 1, "sent": 2, "failed": 3, "delivered": 4, "read": 5}


@dataclass
class InboundRecord:
    message: Message
    conversation: Conversation
    client: Client
    duplicate: bool
    new_client: bool = False
    new_conversation: bool = False
    # For a message the business wrote outside the hub: the status staff took it from.
    taken_from: str | None = None


@dataclass
class InboundData:
    """What the store needs of an inbound message (the hub maps its contract onto this)."""

    channel: str
    inbox: str
    chat_id: str
    sender_id: str
    provider_message_id: str
    sent_at: datetime
    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    hints: Hints = field(default_factory=Hints)
    reply_to_id: str | None = None
    public_id: str | None = None
    private: bool = True  # a one-to-one chat (false: a group)


async def find_provider_message(
    session: AsyncSession, channel: str, inbox: str, provider_message_id: str
) -> Message | None:
    return (
        await session.exec(
            select(Message).where(
                Message.channel == channel,
                Message.inbox == inbox,
                Message.direction == "in",
                Message.provider_message_id == provider_message_id,
            )
        )
    ).first()


async def record_inbound(
    session: AsyncSession, data: InboundData, *, region: str = "UA", now: datetime | None = None
) -> InboundRecord:
    """Store an inbound message once; a second copy returns the first with duplicate=True.

    The unique key (channel, inbox, provider_message_id) is the final word: a racing copy
    that passes this check fails on insert, and the caller retries the transaction.
    """
    now = now or utcnow()
    existing = await find_provider_message(
        session, data.channel, data.inbox, data.provider_message_id
    )
    if existing is not None:
        conversation = await session.get(Conversation, existing.conversation_id)
        client = await session.get(Client, existing.client_id)
        assert conversation is not None and client is not None
        return InboundRecord(existing, conversation, client, duplicate=True)

    resolved, conversation, opened = await _place(session, data, region=region, now=now)
    client = resolved.client
    message = Message(
        public_id=data.public_id or uuid.uuid4().hex,
        conversation_id=conversation.id,  # type: ignore[arg-type]
        client_id=client.id,  # type: ignore[arg-type]
        channel=data.channel,
        inbox=data.inbox,
        direction="in",
        author="client",
        text=data.text,
        attachments=data.attachments,
        provider_message_id=data.provider_message_id,
        reply_to_id=data.reply_to_id,
        status="received",
        sent_at=data.sent_at,
        created_at=now,
        status_at=now,
    )
    session.add(message)
    conversation.last_message_at = now
    if conversation.first_inbound_at is None:
        conversation.first_inbound_at = now
    client.last_contact_at = now
    if client.first_contact_at is None:
        client.first_contact_at = now
    await session.flush()
    return InboundRecord(
        message,
        conversation,
        client,
        duplicate=False,
        new_client=resolved.new_client,
        new_conversation=opened,
    )


async def _place(
    session: AsyncSession, data: InboundData, *, region: str, now: datetime
) -> tuple[Resolution, Conversation, bool]:
    """The client card (resolved from the chat's person) and the chat's open conversation."""
    resolved = await resolve_client(
        session,
        channel=data.channel,
        inbox=data.inbox,
        external_id=data.sender_id,
        hints=data.hints,
        at=now,
        region=region,
    )
    client = resolved.client
    conversation, opened = await open_conversation(
        session,
        client_id=client.id,
        channel=data.channel,
        inbox=data.inbox,  # type: ignore[arg-type]
        chat_id=data.chat_id,
        now=now,
        private=data.private,
    )
    if conversation.client_id != client.id:
        conversation.client_id = client.id  # type: ignore[assignment]
    return resolved, conversation, opened


# An echo that comes back before the send's own answer was stored is recognised by its text.
ECHO_WINDOW = timedelta(minutes=2)
# What a channel without buttons adds to a reply: its choices as "1) …" lines, links on lines
# of their own (channels/instagram_private.py).
_RENDERED_LINE = re.compile(r"^\s*(\d{1,2}\)\s.*|https?://\S+)\s*$")


def is_echo_of(echo: str, recent: Sequence[str | None]) -> bool:
    """Whether the account's own message is one of the hub's recent replies as the channel
    rendered it. A long reply goes out in parts, each echoed with an id of its own, and the
    last part carries the choices and links the channel appended: what is left of a part once
    those lines are set aside is part of a reply."""
    texts = [text for text in recent if text]
    own = echo.strip()
    if own and any(own in text for text in texts):
        return True
    lines = [line for line in own.splitlines() if not _RENDERED_LINE.match(line)]
    rest = "\n".join(lines).strip()
    if not rest:
        return bool(own) and bool(texts)
    return any(rest in text for text in texts)


async def record_own(
    session: AsyncSession, data: InboundData, *, region: str = "UA", now: datetime | None = None
) -> InboundRecord | None:
    """A message the business wrote outside the hub (the owner answering from the Instagram
    app): stored as a staff reply, and the conversation goes to staff so the bot keeps quiet.
    `data.sender_id` is the client's id (the other side of the chat).

    None for the echo of a message the hub sent itself (known by its provider id or, when the
    echo outran the send's answer or is one part of a long reply, by its text sent to the same
    chat a moment ago) and for a copy already stored."""
    now = now or utcnow()
    if await outbound_by_provider_id(session, data.channel, data.provider_message_id):
        return None
    resolved, conversation, opened = await _place(session, data, region=region, now=now)
    recent = (
        await session.exec(
            select(Message.text).where(
                Message.conversation_id == conversation.id,
                Message.direction == "out",
                Message.created_at >= now - ECHO_WINDOW,
            )
        )
    ).all()
    if recent and is_echo_of(data.text, recent):
        return None
    message = Message(
        public_id=data.public_id or uuid.uuid4().hex,
        conversation_id=conversation.id,  # type: ignore[arg-type]
        client_id=resolved.client.id,  # type: ignore[arg-type]
        channel=data.channel,
        inbox=data.inbox,
        direction="out",
        author="staff",
        text=data.text,
        attachments=data.attachments,
        provider_message_id=data.provider_message_id,
        status="sent",
        sent_at=data.sent_at,
        created_at=now,
        status_at=now,
    )
    session.add(message)
    conversation.last_message_at = now
    taken_from = conversation.status if conversation.status in ("bot", "waiting") else None
    if taken_from:
        conversation.status = "human"
        record_hands(
            session, conversation, taken_from, actor="staff", reason="written outside the hub"
        )
    await session.flush()
    return InboundRecord(
        message,
        conversation,
        resolved.client,
        duplicate=False,
        new_client=resolved.new_client,
        new_conversation=opened,
        taken_from=taken_from,
    )


async def open_conversation(
    session: AsyncSession,
    *,
    client_id: int,
    channel: str,
    inbox: str,
    chat_id: str,
    now: datetime,
    private: bool = True,
) -> tuple[Conversation, bool]:
    """The open conversation of a chat, or a new one (status `bot`). A chat is private or a
    group for good: `private` is taken when the conversation is opened."""
    found = (
        await session.exec(
            select(Conversation)
            .where(
                Conversation.channel == channel,
                Conversation.inbox == inbox,
                Conversation.chat_id == chat_id,
                col(Conversation.status).in_(OPEN_STATUSES),
            )
            .order_by(col(Conversation.id).desc())
            .limit(1)
        )
    ).first()
    if found is not None:
        return found, False
    conversation = new_conversation(client_id, channel, inbox, chat_id, now, private=private)
    session.add(conversation)
    await session.flush()
    return conversation, True


def new_conversation(
    client_id: int, channel: str, inbox: str, chat_id: str, now: datetime, *, private: bool
) -> Conversation:
    """A chat's conversation as it opens: the bot has it."""
    return Conversation(
        client_id=client_id,
        channel=channel,
        inbox=inbox,
        chat_id=chat_id,
        status="bot",
        opened_at=now,
        private=private,
    )


async def record_outbound(
    session: AsyncSession,
    *,
    conversation: Conversation,
    text: str,
    author: str,
    outbound_key: str,
    public_id: str,
    staff_id: int | None = None,
    attachments: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> Message:
    """A reply about to leave: stored `queued` before it is put on the outbound stream."""
    now = now or utcnow()
    message = outbound_row(
        conversation,
        text=text,
        author=author,
        outbound_key=outbound_key,
        public_id=public_id,
        staff_id=staff_id,
        attachments=attachments,
        now=now,
    )
    session.add(message)
    await session.flush()
    return message


async def insert_messages(session: AsyncSession, messages: Sequence[Message]) -> None:
    """New messages in one INSERT on either database (the ORM writes SQLite's one by one);
    each gets its id. They are not added to the session: treat them as read-only."""
    if not messages:
        return
    table = Message.__table__  # type: ignore[attr-defined]
    columns = [c.name for c in table.columns if c.name != "id"]
    rows = [{name: getattr(m, name) for name in columns} for m in messages]
    returned = await session.exec(  # type: ignore[call-overload]
        insert(table).values(rows).returning(table.c.id, table.c.public_id)
    )
    # Multi-row RETURNING promises no order: rows are matched by their public id.
    ids = dict((public_id, id_) for id_, public_id in returned.all())
    for message in messages:
        message.id = ids[message.public_id]


def outbound_row(
    conversation: Conversation,
    *,
    text: str,
    author: str,
    outbound_key: str,
    public_id: str,
    now: datetime,
    staff_id: int | None = None,
    attachments: list[dict[str, Any]] | None = None,
) -> Message:
    """The row of a reply (`queued`), and the conversation told of it; the caller adds it to
    its session (several replies go in one INSERT when flushed together)."""
    conversation.last_message_at = now
    if author in ("staff", "bot") and conversation.first_response_at is None:
        conversation.first_response_at = now
    return Message(
        public_id=public_id,
        conversation_id=conversation.id,  # type: ignore[arg-type]
        client_id=conversation.client_id,
        channel=conversation.channel,
        inbox=conversation.inbox,
        direction="out",
        author=author,
        staff_id=staff_id,
        text=text,
        attachments=attachments or [],
        outbound_key=outbound_key,
        status="queued",
        created_at=now,
        status_at=now,
    )


async def message_by_public_id(session: AsyncSession, public_id: str) -> Message | None:
    return (await session.exec(select(Message).where(Message.public_id == public_id))).first()


async def outbound_by_provider_id(
    session: AsyncSession, channel: str, provider_message_id: str
) -> Message | None:
    return (
        await session.exec(
            select(Message).where(
                Message.channel == channel,
                Message.provider_message_id == provider_message_id,
                Message.direction == "out",
            )
        )
    ).first()


@dataclass(frozen=True)
class Delivery:
    """A send's answer or a provider's receipt for one outbound message, found by our id or
    by the provider's (with the channel)."""

    status: str
    public_id: str | None = None
    channel: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    attempts: int | None = None
    segments: int | None = None


async def set_delivery(
    session: AsyncSession,
    *,
    public_id: str | None = None,
    channel: str | None = None,
    status: str,
    provider_message_id: str | None = None,
    error: str | None = None,
    attempts: int | None = None,
    segments: int | None = None,
    now: datetime | None = None,
    displace_copies: bool = False,
) -> Message | None:
    """Move an outbound message forward, found by our id or by the provider's.

    `displace_copies`: another outbound row already holds the provider's id (the echo of this
    very send, stored as a message written in the provider's app because it outran the send's
    answer): that copy is dropped so the send keeps its one row."""
    delivery = Delivery(status, public_id, channel, provider_message_id, error, attempts, segments)
    if public_id is not None:
        message = (await _with_conversations(session, [public_id])).get(public_id)
    elif channel is not None and provider_message_id is not None:
        message = await outbound_by_provider_id(session, channel, provider_message_id)
    else:
        raise ValueError("set_delivery needs public_id, or channel and provider_message_id")
    if message is None:
        return None
    if displace_copies and provider_message_id and _moves(message, delivery):
        await _drop_copies(session, message, provider_message_id)
    _apply(message, delivery, now or utcnow())
    await session.flush()
    return message


async def set_deliveries(
    session: AsyncSession, deliveries: Sequence[Delivery], *, now: datetime | None = None
) -> list[Message | None]:
    """Several messages moved forward at once, found by our ids: one SELECT (their
    conversations come along into the session), the UPDATEs in one flush."""
    ids = [d.public_id for d in deliveries if d.public_id is not None]
    if len(ids) != len(deliveries):
        raise ValueError("set_deliveries finds messages by public_id only")
    found = await _with_conversations(session, ids)
    now = now or utcnow()
    moved: list[Message | None] = []
    for delivery in deliveries:
        message = found.get(delivery.public_id)  # type: ignore[arg-type]
        if message is not None:
            _apply(message, delivery, now)
        moved.append(message)
    await session.flush()
    return moved


async def _with_conversations(session: AsyncSession, public_ids: list[str]) -> dict[str, Message]:
    # The conversations come along into the session: the caller announces the change.
    rows = await session.exec(
        select(Message, Conversation)
        .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
        .where(col(Message.public_id).in_(public_ids))
    )
    return {message.public_id: message for message, _ in rows.all()}


def _moves(message: Message, delivery: Delivery) -> bool:
    return DELIVERY_RANK.get(delivery.status, 0) >= DELIVERY_RANK.get(message.status, 0)


def _apply(message: Message, delivery: Delivery, now: datetime) -> None:
    if delivery.segments is not None:
        message.segments = delivery.segments
    if not _moves(message, delivery):
        return
    message.status = delivery.status
    message.status_at = now
    if delivery.provider_message_id:
        message.provider_message_id = delivery.provider_message_id
    if delivery.error is not None:
        message.error = delivery.error[:2000]
    if delivery.attempts is not None:
        message.attempts = delivery.attempts
    if delivery.status != "sending":
        message.claimed_by = None
        message.claimed_until = None


async def _drop_copies(session: AsyncSession, message: Message, provider_message_id: str) -> None:
    copies = (
        await session.exec(
            select(Message).where(
                Message.channel == message.channel,
                Message.inbox == message.inbox,
                Message.direction == "out",
                Message.provider_message_id == provider_message_id,
                Message.id != message.id,
            )
        )
    ).all()
    for copy in copies:
        await session.delete(copy)
    if copies:
        await session.flush()


# Claims on a send (hub/pipeline/dispatcher.py). Each is one UPDATE decided by the database:
# PostgreSQL re-checks the WHERE on a row a concurrent UPDATE has just changed (so of two
# dispatchers racing for one row only the first matches), SQLite runs one writer at a time.
# `now` and `until` come from the dispatcher's clock: hosts must agree on the time to well
# within a claim's lease.


async def claim_outbound(
    session: AsyncSession, public_id: str, *, owner: str, now: datetime, until: datetime
) -> bool:
    """Take the send of an outbound message: True for the one caller whose UPDATE moved it to
    `sending`. It must be `queued`, or `sending` under a claim that lapsed (its owner died) or
    that is `owner`'s own already (the same dispatcher trying the same entry again)."""
    now = as_utc(now)
    result = await session.exec(  # type: ignore[call-overload]
        update(Message)
        .where(
            col(Message.public_id) == public_id,
            col(Message.direction) == "out",
            or_(
                col(Message.status) == "queued",
                and_(
                    col(Message.status) == "sending",
                    or_(col(Message.claimed_until) < now, col(Message.claimed_by) == owner),
                ),
            ),
        )
        .values(status="sending", claimed_by=owner, claimed_until=as_utc(until), status_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _held_by(public_id: str, owner: str) -> tuple[Any, ...]:
    """A message being sent under `owner`'s claim."""
    return (
        col(Message.public_id) == public_id,
        col(Message.status) == "sending",
        col(Message.claimed_by) == owner,
    )


async def renew_claim(
    session: AsyncSession, public_id: str, *, owner: str, until: datetime
) -> bool:
    """Push a claim's expiry to `until`; False if it is no longer `owner`'s (taken over after
    it lapsed, or the message moved on: a receipt, another dispatcher's answer)."""
    result = await session.exec(  # type: ignore[call-overload]
        update(Message)
        .where(*_held_by(public_id, owner))
        .values(claimed_until=as_utc(until))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def release_claim(
    session: AsyncSession, public_id: str, *, owner: str, now: datetime
) -> bool:
    """Give an unsent message back (`queued`), so the next entry of it sends it at once
    rather than after the claim lapses. Only `owner`'s own claim is given back."""
    result = await session.exec(  # type: ignore[call-overload]
        update(Message)
        .where(*_held_by(public_id, owner))
        .values(status="queued", claimed_by=None, claimed_until=None, status_at=as_utc(now))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def list_conversations(
    session: AsyncSession,
    *,
    status: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[tuple[Conversation, Client, Message | None]]:
    query = select(Conversation, Client).join(Client, col(Client.id) == Conversation.client_id)
    if status:
        query = query.where(Conversation.status == status)
    if before_id:
        query = query.where(col(Conversation.id) < before_id)
    query = query.order_by(col(Conversation.last_message_at).desc(), col(Conversation.id).desc())
    rows = list((await session.exec(query.limit(limit))).all())
    if not rows:
        return []
    ids = [conv.id for conv, _ in rows]
    last_ids = (
        select(func.max(Message.id).label("mid"))
        .where(col(Message.conversation_id).in_(ids))
        .group_by(col(Message.conversation_id))
        .subquery()
    )
    last = {
        m.conversation_id: m
        for m in (
            await session.exec(select(Message).where(col(Message.id).in_(select(last_ids.c.mid))))
        ).all()
    }
    return [(conv, client, last.get(conv.id)) for conv, client in rows]


async def conversation_messages(
    session: AsyncSession, conversation_id: int, *, limit: int = 200, after_id: int | None = None
) -> list[Message]:
    query = select(Message).where(Message.conversation_id == conversation_id)
    if after_id:
        query = query.where(col(Message.id) > after_id)
    return list((await session.exec(query.order_by(col(Message.id)).limit(limit))).all())


async def chat_history(
    session: AsyncSession, *, channel: str, inbox: str, chat_id: str, limit: int = 100
) -> list[Message]:
    """The latest messages of a chat across its conversations, oldest first."""
    conv_ids = select(Conversation.id).where(
        Conversation.channel == channel,
        Conversation.inbox == inbox,
        Conversation.chat_id == chat_id,
    )
    rows = (
        await session.exec(
            select(Message)
            .where(col(Message.conversation_id).in_(conv_ids))
            .order_by(col(Message.id).desc())
            .limit(limit)
        )
    ).all()
    return list(reversed(rows))


# Each change of hands is in the audit log; analytics counts hand-offs there (docs/metrics.md).
HANDS = {"waiting": "hand_off", "human": "take", "bot": "give_back", "closed": "close"}


def record_hands(
    session: AsyncSession,
    conversation: Conversation,
    before: str,
    *,
    actor: audit.Actor,
    staff_id: int | None = None,
    reason: str = "",
) -> AuditEntry:
    return audit.record(
        session,
        actor=actor,
        staff_id=staff_id,
        entity="conversation",
        entity_id=conversation.id,  # type: ignore[arg-type]
        action=HANDS[conversation.status],
        changes={"status": [before, conversation.status], "reason": reason},
    )


async def take_over(session: AsyncSession, conversation: Conversation, staff_id: int) -> bool:
    """A staff reply takes the conversation: the bot stays silent while a human has it."""
    changed = conversation.status != "human" or conversation.assignee_id != staff_id
    if conversation.status != "human":
        before, conversation.status = conversation.status, "human"
        record_hands(
            session, conversation, before, actor="staff", staff_id=staff_id, reason="reply"
        )
    conversation.assignee_id = staff_id
    await session.flush()
    return changed
