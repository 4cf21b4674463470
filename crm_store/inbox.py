"""What the staff inbox reads and writes: the conversation list (filters, search, the wait of
a client nobody has answered, unread marks), a client's whole timeline, private notes, canned
replies and read markers. No HTTP here; hub/web/inbox_api.py serves it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, false, func, literal, or_, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.clients import list_clients
from crm_store.models import (
    Appointment,
    CannedReply,
    Client,
    Conversation,
    Message,
    ReadMarker,
    Staff,
    StaffNote,
)
from crm_store.timeutil import aware, utcnow


class InboxError(ValueError):
    status = 400


class NotFound(InboxError):
    status = 404


@dataclass
class ConversationFilter:
    statuses: Sequence[str] = ()
    channel: str | None = None
    # None: anyone's; 0: nobody's; else a staff id.
    assignee_id: int | None = None
    unread_only: bool = False
    query: str = ""
    limit: int = 50
    before_id: int | None = None


@dataclass
class ConversationRow:
    conversation: Conversation
    client: Client
    last_message: Message | None
    waiting_since: datetime | None
    unread: bool


def _last_staff_reply() -> Any:
    """The id of the conversation's latest staff reply (0 when none): what it answered."""
    reply = aliased(Message)
    return (
        select(func.coalesce(func.max(reply.id), 0))
        .where(
            reply.conversation_id == Conversation.id,
            reply.direction == "out",
            reply.author == "staff",
        )
        .correlate(Conversation)
        .scalar_subquery()
    )


def _waiting_since() -> Any:
    """For a `waiting` conversation: its first client message after the last staff reply
    (else when it was opened); NULL otherwise."""
    first_unanswered = (
        select(func.min(Message.created_at))
        .where(
            Message.conversation_id == Conversation.id,
            Message.direction == "in",
            col(Message.id) > _last_staff_reply(),
        )
        .correlate(Conversation)
        .scalar_subquery()
    )
    return case(
        (
            Conversation.status == "waiting",
            func.coalesce(first_unanswered, Conversation.opened_at),
        ),
        else_=None,
    )


def _unread(staff_id: int) -> ColumnElement[bool]:
    """A client message after this staff member's read marker."""
    marker = (
        select(ReadMarker.last_message_id)
        .where(ReadMarker.staff_id == staff_id, ReadMarker.conversation_id == Conversation.id)
        .correlate(Conversation)
        .scalar_subquery()
    )
    return exists(
        select(Message.id).where(
            Message.conversation_id == Conversation.id,
            Message.direction == "in",
            col(Message.id) > func.coalesce(marker, 0),
        )
    ).correlate(Conversation)


def _search(text: str) -> ColumnElement[bool]:
    """Name or email (any case, Cyrillic too: SQLite's lower() is replaced in crm_store.db),
    3+ digits of the phone, or any message of the conversation."""
    like = f"%{text.casefold()}%"
    conditions: list[Any] = [
        func.lower(col(Client.name)).like(like),
        func.lower(col(Client.email)).like(like),
        exists(
            select(Message.id).where(
                Message.conversation_id == Conversation.id,
                func.lower(col(Message.text)).like(like),
            )
        ).correlate(Conversation),
    ]
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) >= 3:
        conditions.append(col(Client.phone).like(f"%{digits}%"))
    return or_(*conditions)


async def list_inbox(
    session: AsyncSession, staff_id: int, where: ConversationFilter
) -> list[ConversationRow]:
    """Waiting conversations first, the longest wait first; then by last message, newest
    first. `before_id` is the last conversation of the previous page: the page after it."""
    waiting = _waiting_since().label("waiting_since")
    unread = _unread(staff_id).label("unread")
    group = case((Conversation.status == "waiting", 0), else_=1)
    last_at = func.coalesce(Conversation.last_message_at, Conversation.opened_at)
    query = (
        select(Conversation, Client, waiting, unread)
        .join(Client, col(Client.id) == Conversation.client_id)
        .order_by(
            group,
            waiting.asc(),
            last_at.desc(),
            col(Conversation.id).desc(),
        )
    )
    if where.statuses:
        query = query.where(col(Conversation.status).in_(list(where.statuses)))
    if where.channel:
        query = query.where(Conversation.channel == where.channel)
    if where.assignee_id == 0:
        query = query.where(col(Conversation.assignee_id).is_(None))
    elif where.assignee_id is not None:
        query = query.where(Conversation.assignee_id == where.assignee_id)
    if where.unread_only:
        query = query.where(_unread(staff_id))
    text = where.query.strip()
    if text:
        query = query.where(_search(text))
    if where.before_id:
        query = query.where(await _after(session, where.before_id, group, last_at))
    rows = list((await session.exec(query.limit(where.limit))).all())  # type: ignore[call-overload]
    last = await _last_messages(session, [conv.id for conv, *_ in rows])
    return [
        ConversationRow(conv, client, last.get(conv.id), aware(since), bool(is_unread))
        for conv, client, since, is_unread in rows
    ]


async def _after(
    session: AsyncSession, anchor_id: int, group: Any, last_at: Any
) -> ColumnElement[bool]:
    """Keyset paging: the conversations that sort after the anchor conversation."""
    anchor = (
        await session.exec(
            select(group, _waiting_since(), last_at, Conversation.id).where(  # type: ignore[call-overload]
                Conversation.id == anchor_id
            )
        )
    ).first()
    if anchor is None:
        return false()
    a_group, a_since, a_last, a_id = anchor
    later = or_(last_at < a_last, and_(last_at == a_last, col(Conversation.id) < a_id))
    if a_group == 1:
        return and_(group == 1, later)
    since = _waiting_since()
    return or_(
        group == 1,
        and_(group == 0, or_(since > a_since, and_(since == a_since, later))),
    )


async def _last_messages(session: AsyncSession, ids: list[int | None]) -> dict[int, Message]:
    if not ids:
        return {}
    last_ids = (
        select(func.max(Message.id).label("mid"))
        .where(col(Message.conversation_id).in_(ids))
        .group_by(col(Message.conversation_id))
        .subquery()
    )
    rows = await session.exec(select(Message).where(col(Message.id).in_(select(last_ids.c.mid))))
    return {m.conversation_id: m for m in rows.all()}


async def conversation_row(
    session: AsyncSession, staff_id: int, conversation_id: int
) -> ConversationRow | None:
    """One conversation as the list shows it."""
    waiting = _waiting_since()
    row = (
        await session.exec(
            select(Conversation, Client, waiting, _unread(staff_id))  # type: ignore[call-overload]
            .join(Client, col(Client.id) == Conversation.client_id)
            .where(Conversation.id == conversation_id)
        )
    ).first()
    if row is None:
        return None
    conv, client, since, is_unread = row
    last = await _last_messages(session, [conv.id])
    return ConversationRow(conv, client, last.get(conv.id), aware(since), bool(is_unread))


# Read markers ------------------------------------------------------------------------------


async def mark_read(session: AsyncSession, staff_id: int, conversation_id: int) -> int:
    """Up to the conversation's latest message; never backwards. The marker's message id."""
    latest = (
        await session.exec(
            select(func.coalesce(func.max(Message.id), 0)).where(
                Message.conversation_id == conversation_id
            )
        )
    ).one()
    marker = await session.get(ReadMarker, (staff_id, conversation_id))
    if marker is None:
        marker = ReadMarker(staff_id=staff_id, conversation_id=conversation_id)
    if latest > marker.last_message_id:
        marker.last_message_id = latest
    marker.read_at = utcnow()
    session.add(marker)
    await session.flush()
    return marker.last_message_id


# The timeline ------------------------------------------------------------------------------


@dataclass
class Timeline:
    messages: list[Message]
    notes: list[StaffNote]
    staff_names: dict[int, str] = field(default_factory=dict)
    more: bool = False


async def timeline(
    session: AsyncSession, client_id: int, *, before: datetime | None = None, limit: int = 100
) -> Timeline:
    """The latest `limit` messages and notes of a client (before `before`), across all their
    conversations and channels; `more` when older ones remain."""
    messages_q = select(Message).where(Message.client_id == client_id)
    notes_q = select(StaffNote).where(StaffNote.client_id == client_id)
    if before is not None:
        messages_q = messages_q.where(col(Message.created_at) < before)
        notes_q = notes_q.where(col(StaffNote.created_at) < before)
    messages = list(
        (
            await session.exec(
                messages_q.order_by(col(Message.created_at).desc(), col(Message.id).desc()).limit(
                    limit + 1
                )
            )
        ).all()
    )
    notes = list(
        (
            await session.exec(
                notes_q.order_by(col(StaffNote.created_at).desc(), col(StaffNote.id).desc()).limit(
                    limit + 1
                )
            )
        ).all()
    )
    merged: list[Message | StaffNote] = sorted(
        [*messages, *notes], key=lambda item: aware(item.created_at), reverse=True
    )
    more = len(merged) > limit
    kept = merged[:limit]
    kept_messages = [m for m in kept if isinstance(m, Message)]
    kept_notes = [n for n in kept if isinstance(n, StaffNote)]
    ids = {m.staff_id for m in kept_messages if m.staff_id} | {
        n.staff_id for n in kept_notes if n.staff_id
    }
    return Timeline(
        list(reversed(kept_messages)),
        list(reversed(kept_notes)),
        await staff_names(session, ids),
        more,
    )


async def staff_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.exec(select(Staff.id, Staff.name).where(col(Staff.id).in_(ids)))
    return {row[0]: row[1] for row in rows.all()}  # type: ignore[misc]


# Notes -------------------------------------------------------------------------------------


async def add_note(
    session: AsyncSession,
    client_id: int,
    *,
    staff_id: int,
    text: str,
    conversation_id: int | None = None,
) -> StaffNote:
    if await session.get(Client, client_id) is None:
        raise NotFound(f"no client with id {client_id}")
    if conversation_id is not None:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None or conversation.client_id != client_id:
            raise InboxError("conversation_id is not a conversation of this client")
    note = StaffNote(
        client_id=client_id, conversation_id=conversation_id, staff_id=staff_id, text=text
    )
    session.add(note)
    await session.flush()
    audit.record(
        session,
        actor="staff",
        staff_id=staff_id,
        entity="client",
        entity_id=client_id,
        action="note_added",
        changes={"note_id": note.id, "conversation_id": conversation_id, "text": text},
    )
    return note


async def move_notes(session: AsyncSession, source_id: int, target_id: int) -> int:
    """After a merge: the merged card's notes go with its history."""
    result = await session.exec(  # type: ignore[call-overload]
        update(StaffNote).where(col(StaffNote.client_id) == source_id).values(client_id=target_id)
    )
    return int(result.rowcount or 0)


# Canned replies ----------------------------------------------------------------------------


async def list_canned(session: AsyncSession) -> list[CannedReply]:
    rows = await session.exec(
        select(CannedReply).order_by(col(CannedReply.title), col(CannedReply.id))
    )
    return list(rows.all())


async def save_canned(
    session: AsyncSession, changes: dict[str, Any], canned_id: int | None = None
) -> CannedReply:
    if canned_id is None:
        canned = CannedReply(**changes)
    else:
        found = await session.get(CannedReply, canned_id)
        if found is None:
            raise NotFound(f"no canned reply with id {canned_id}")
        canned = found
        for key, value in changes.items():
            setattr(canned, key, value)
        canned.updated_at = utcnow()
    session.add(canned)
    await session.flush()
    return canned


async def delete_canned(session: AsyncSession, canned_id: int) -> None:
    found = await session.get(CannedReply, canned_id)
    if found is None:
        raise NotFound(f"no canned reply with id {canned_id}")
    await session.delete(found)
    await session.flush()


# Who sees what -----------------------------------------------------------------------------


def _live_with(master_id: int) -> ColumnElement[bool]:
    """An appointment with this master that was not cancelled: a booking the client dropped
    (or one a master made to reach a stranger's card) grants no look at the card."""
    return and_(Appointment.master_id == master_id, Appointment.status != "cancelled")


def master_clients(master_id: int) -> Any:
    """The ids of the clients a master may see: those with a live appointment with them or a
    conversation assigned to them."""
    return (
        select(Appointment.client_id)
        .where(_live_with(master_id))
        .union(select(Conversation.client_id).where(Conversation.assignee_id == master_id))
    )


async def master_sees_client(session: AsyncSession, master_id: int, client_id: int) -> bool:
    found = (
        await session.exec(
            select(literal(1)).where(
                or_(
                    exists(
                        select(Appointment.id).where(
                            _live_with(master_id), Appointment.client_id == client_id
                        )
                    ),
                    exists(
                        select(Conversation.id).where(
                            Conversation.assignee_id == master_id,
                            Conversation.client_id == client_id,
                        )
                    ),
                )
            )
        )
    ).first()
    return found is not None


async def list_master_clients(
    session: AsyncSession, master_id: int, *, query: str = "", limit: int = 50, offset: int = 0
) -> list[Client]:
    """crm_store.clients.list_clients narrowed to the clients a master may see."""
    return await list_clients(
        session, query=query, limit=limit, offset=offset, among=master_clients(master_id)
    )


async def master_sees_attachment(
    session: AsyncSession, master_id: int, channel: str, inbox: str, ref: str
) -> bool:
    """Whether a file (by the provider's ref) belongs to a message of the master's
    conversations. JSON queries differ between the databases, and a master's conversations
    are few: their attachments are scanned here."""
    rows = await session.exec(
        select(Message.attachments)
        .join(Conversation, col(Conversation.id) == Message.conversation_id)
        .where(
            Conversation.assignee_id == master_id,
            Message.channel == channel,
            Message.inbox == inbox,
        )
    )
    return any(a.get("ref") == ref for attachments in rows.all() for a in attachments or [])
