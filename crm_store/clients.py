"""Client cards for staff: search, the whole card, and edits written to the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.contacts import normalize_email, normalize_phone
from crm_store.models import (
    Appointment,
    AuditEntry,
    ChannelIdentity,
    Client,
    Conversation,
    Message,
    Staff,
)
from crm_store.timeutil import aware

LANGUAGES = ("uk", "en", "ru")
EDITABLE = (
    "name",
    "phone",
    "email",
    "language",
    "tags",
    "notes",
    "preferred_master_id",
    "marketing_consent",
)
CARD_APPOINTMENTS = 100
CARD_AUDIT = 200


class ClientError(ValueError):
    """An edit that can't be made as asked; nothing was written."""

    status = 400


class ClientNotFound(ClientError):
    status = 404


@dataclass
class ClientCard:
    client: Client
    identities: list[ChannelIdentity]
    appointments: list[Appointment]
    audit: list[AuditEntry]
    # Over all of the client's appointments, not only the CARD_APPOINTMENTS listed.
    visits: int = 0  # done
    no_shows: int = 0


async def list_clients(
    session: AsyncSession,
    *,
    query: str = "",
    limit: int = 50,
    offset: int = 0,
    among: Any = None,
) -> list[Client]:
    """Live cards (not merged away), most recently in touch first; `query` matches a part of
    the name, the email, or the digits of the phone. `among`: a subquery of client ids to
    keep to (a master's clients)."""
    statement = select(Client).where(col(Client.merged_into_id).is_(None))
    if among is not None:
        statement = statement.where(col(Client.id).in_(among))
    text = query.strip()
    if text:
        like = f"%{text.casefold()}%"
        conditions = [
            func.lower(col(Client.name)).like(like),
            func.lower(col(Client.email)).like(like),
        ]
        digits = "".join(ch for ch in text if ch.isdigit())
        if len(digits) >= 3:
            conditions.append(col(Client.phone).like(f"%{digits}%"))
        statement = statement.where(or_(*conditions))
    statement = statement.order_by(
        col(Client.last_contact_at).desc().nulls_last(), col(Client.id).desc()
    )
    return list((await session.exec(statement.offset(offset).limit(limit))).all())


async def client_card(session: AsyncSession, client_id: int) -> ClientCard:
    client = await _client(session, client_id)
    identities = await session.exec(
        select(ChannelIdentity)
        .where(ChannelIdentity.client_id == client_id)
        .order_by(col(ChannelIdentity.id))
    )
    appointments = await session.exec(
        select(Appointment)
        .where(Appointment.client_id == client_id)
        .order_by(col(Appointment.start_at).desc())
        .limit(CARD_APPOINTMENTS)
    )
    appointments = list(appointments)
    # The card's own changes and those of its appointments, newest first.
    mine = or_(
        (col(AuditEntry.entity) == "client") & (col(AuditEntry.entity_id) == client_id),
        (col(AuditEntry.entity) == "appointment")
        & col(AuditEntry.entity_id).in_([a.id for a in appointments]),
    )
    trail = await session.exec(
        select(AuditEntry).where(mine).order_by(col(AuditEntry.id).desc()).limit(CARD_AUDIT)
    )
    counts = await status_counts(session, client_id)
    return ClientCard(
        client,
        list(identities),
        appointments,
        list(trail),
        visits=counts.get("done", 0),
        no_shows=counts.get("no_show", 0),
    )


async def status_counts(session: AsyncSession, client_id: int) -> dict[str, int]:
    """How many of the client's appointments are in each status."""
    rows = await session.exec(
        select(Appointment.status, func.count())
        .where(Appointment.client_id == client_id)
        .group_by(col(Appointment.status))
    )
    return {status: int(n) for status, n in rows.all()}


async def update_client(
    session: AsyncSession,
    client_id: int,
    changes: dict[str, Any],
    *,
    actor: audit.Actor,
    staff_id: int | None = None,
    region: str = "UA",
) -> Client:
    """Set the given fields; one audit entry with before and after of what really changed."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ClientError(f"unknown client fields: {', '.join(sorted(unknown))}")
    client = await _client(session, client_id)
    clean = {key: await _clean(session, key, value, region) for key, value in changes.items()}
    diff = {
        key: [getattr(client, key), value]
        for key, value in clean.items()
        if getattr(client, key) != value
    }
    if not diff:
        return client
    for key, (_, value) in diff.items():
        setattr(client, key, value)
    session.add(client)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        staff_id=staff_id,
        entity="client",
        entity_id=client_id,
        action="update",
        changes=diff,
    )
    return client


async def _clean(session: AsyncSession, key: str, value: Any, region: str) -> Any:
    if key == "name":
        text = " ".join(str(value or "").split())
        return text or None
    if key == "phone":
        if not value:
            return None
        phone = normalize_phone(str(value), region)
        if phone is None:
            raise ClientError(f"{value!r} is not a valid phone number")
        return phone
    if key == "email":
        if not value:
            return None
        email = normalize_email(str(value))
        if email is None:
            raise ClientError(f"{value!r} is not a valid email address")
        return email
    if key == "language":
        if value is not None and value not in LANGUAGES:
            raise ClientError(f"language must be one of {', '.join(LANGUAGES)}")
        return value
    if key == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ClientError("tags must be a list of strings")
        return list(union_tags((), value))
    if key == "notes":
        return str(value or "")
    if key == "preferred_master_id":
        if value is None:
            return None
        master = await session.get(Staff, value)
        if master is None or master.role != "master":
            raise ClientError(f"no master with id {value}")
        return value
    return bool(value)  # marketing_consent


# Tables whose rows belong to a client card and move with a merge.
OWNED = (ChannelIdentity, Conversation, Message, Appointment)


async def merge_clients(
    session: AsyncSession,
    source_id: int,
    target_id: int,
    *,
    actor: audit.Actor,
    staff_id: int | None = None,
) -> Client:
    """Fold card `source` into `target`: its identities, conversations, messages and
    appointments move; what the target lacks (name, phone, email, language) is taken; tags
    are united and notes appended. The source stays, marked `merged_into_id`, so links to
    it still resolve. Both cards get an audit entry."""
    if source_id == target_id:
        raise ClientError("a card can't be merged into itself")
    source = await _client(session, source_id)
    target = await _client(session, target_id)
    if source.merged_into_id is not None or target.merged_into_id is not None:
        raise ClientError("one of the cards was already merged into another")
    moved: dict[str, int] = {}
    for table in OWNED:
        result = await session.exec(  # type: ignore[call-overload]
            update(table).where(col(table.client_id) == source_id).values(client_id=target_id)
        )
        moved[table.__tablename__] = result.rowcount
    taken: dict[str, Any] = {}
    for key in ("name", "phone", "email", "language", "preferred_master_id", "source_channel"):
        if getattr(target, key) is None and getattr(source, key) is not None:
            taken[key] = getattr(source, key)
            setattr(target, key, taken[key])
    tags = list(union_tags(target.tags or [], source.tags or []))
    if tags != (target.tags or []):
        taken["tags"] = tags
        target.tags = tags
    if source.notes and source.notes not in target.notes:
        target.notes = f"{target.notes}\n{source.notes}" if target.notes else source.notes
        taken["notes"] = target.notes
    for key, pick in (("first_contact_at", min), ("last_contact_at", max), ("last_visit_at", max)):
        values = [aware(v) for v in (getattr(target, key), getattr(source, key)) if v]
        if values and aware(getattr(target, key)) != pick(values):  # type: ignore[type-var]
            setattr(target, key, pick(values))  # type: ignore[type-var]
    target.marketing_consent = target.marketing_consent or source.marketing_consent
    source.merged_into_id = target_id
    session.add_all([source, target])
    await session.flush()
    common = {"actor": actor, "staff_id": staff_id, "entity": "client"}
    audit.record(
        session,
        **common,
        entity_id=target_id,
        action="merged_in",
        changes={"from": source_id, "moved": moved, **taken},
    )
    audit.record(
        session, **common, entity_id=source_id, action="merged_into", changes={"into": target_id}
    )
    return target


def union_tags(existing: Sequence[str], more: Sequence[str]) -> tuple[str, ...]:
    """Tags trimmed, the first spelling of each kept (VIP and vip are one)."""
    tags: list[str] = []
    seen: set[str] = set()
    for tag in [*existing, *more]:
        tag = " ".join(tag.split())
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    return tuple(tags)


async def _client(session: AsyncSession, client_id: int) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise ClientNotFound(f"no client with id {client_id}")
    return client
