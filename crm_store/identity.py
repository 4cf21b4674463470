"""Cross-channel identity: one client card, however many channels the client writes from.

An exact channel identity finds the card; otherwise a phone number or email already on a
card links the new identity to it; otherwise a new card is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.contacts import normalize_email, normalize_phone
from crm_store.models import ChannelIdentity, Client


@dataclass(frozen=True)
class Hints:
    display_name: str | None = None
    username: str | None = None
    phone: str | None = None
    email: str | None = None
    language: str | None = None
    source: str | None = None


@dataclass
class Resolution:
    client: Client
    identity: ChannelIdentity
    new_client: bool
    new_identity: bool


async def resolve_client(
    session: AsyncSession,
    *,
    channel: str,
    inbox: str,
    external_id: str,
    hints: Hints,
    at: datetime,
    region: str = "UA",
) -> Resolution:
    phone = normalize_phone(hints.phone, region)
    email = normalize_email(hints.email)

    identity = await identity_of(session, channel, inbox, external_id)
    if identity is not None:
        if identity.unreachable_at is not None:
            # They wrote again: they unblocked the bot or subscribed back.
            identity.unreachable_at = None
            identity.unreachable_reason = None
        client = await live_client(session, identity.client_id)
        if client.id != identity.client_id:
            identity.client_id = client.id  # type: ignore[assignment]
        await _fill_gaps(session, client, hints, phone, email)
        return Resolution(client, identity, new_client=False, new_identity=False)

    client = await _find_by_contact(session, phone, email)
    new_client = client is None
    if client is None:
        client = new_card(hints, channel, at, phone=phone, email=email)
        session.add(client)
        await session.flush()
        card_created(session, client, hints, channel)
    else:
        await _fill_gaps(session, client, hints, phone, email)

    identity = new_identity(client, channel, inbox, external_id, hints)
    session.add(identity)
    await session.flush()
    if not new_client:
        audit.record(
            session,
            actor="system",
            entity="client",
            entity_id=client.id,  # type: ignore[arg-type]
            action="identity_linked",
            changes={"channel": channel, "inbox": inbox, "external_id": external_id},
        )
    return Resolution(client, identity, new_client=new_client, new_identity=True)


def new_card(
    hints: Hints, channel: str, at: datetime, *, phone: str | None = None, email: str | None = None
) -> Client:
    """The card of a person no card knows, from what their channel told of them."""
    return Client(
        name=hints.display_name or hints.username,
        phone=phone,
        email=email,
        language=hints.language,
        source_channel=channel,
        source_ref=hints.source,
        first_contact_at=at,
        last_contact_at=at,
    )


def card_created(session: AsyncSession, client: Client, hints: Hints, channel: str) -> None:
    """The audit entry of a card the hub made (the card has its id)."""
    audit.record(
        session,
        actor="system",
        entity="client",
        entity_id=client.id,  # type: ignore[arg-type]
        action="created",
        changes={
            "name": client.name,
            "phone": client.phone,
            "email": client.email,
            "source": channel,
            "source_ref": hints.source,
        },
    )


def new_identity(
    client: Client, channel: str, inbox: str, external_id: str, hints: Hints
) -> ChannelIdentity:
    return ChannelIdentity(
        client_id=client.id,  # type: ignore[arg-type]
        channel=channel,
        inbox=inbox,
        external_id=external_id,
        username=hints.username,
        display_name=hints.display_name,
    )


async def live_client(session: AsyncSession, client_id: int) -> Client:
    """Follow merges: an identity of a merged card belongs to the card it was merged into."""
    client = await session.get(Client, client_id)
    seen = set()
    while client is not None and client.merged_into_id and client.id not in seen:
        seen.add(client.id)
        client = await session.get(Client, client.merged_into_id)
    if client is None:
        raise LookupError(f"client {client_id} is gone")
    return client


async def _find_by_contact(
    session: AsyncSession, phone: str | None, email: str | None
) -> Client | None:
    for column, value in ((Client.phone, phone), (Client.email, email)):
        if not value:
            continue
        found = (
            await session.exec(
                select(Client)
                .where(column == value, col(Client.merged_into_id).is_(None))
                .order_by(col(Client.id))
                .limit(1)
            )
        ).first()
        if found is not None:
            return found
    return None


async def _fill_gaps(
    session: AsyncSession, client: Client, hints: Hints, phone: str | None, email: str | None
) -> None:
    """A channel may tell us what the card lacks; it never overwrites what staff wrote."""
    changes = card_gaps(client, hints, phone, email)
    for name, value in changes.items():
        setattr(client, name, value)
    if changes:
        audit.record(
            session,
            actor="system",
            entity="client",
            entity_id=client.id,  # type: ignore[arg-type]
            action="updated_from_channel",
            changes=changes,
        )


def card_gaps(client: Client, hints: Hints, phone: str | None, email: str | None) -> dict[str, str]:
    """What the hints would fill in on the card (its empty fields only), by field name."""
    changes: dict[str, str] = {}
    name = hints.display_name or hints.username
    if not client.name and name:
        changes["name"] = name
    if not client.phone and phone:
        changes["phone"] = phone
    if not client.email and email:
        changes["email"] = email
    if not client.source_ref and hints.source:
        changes["source_ref"] = hints.source
    if not client.language and hints.language:
        changes["language"] = hints.language
    return changes


async def identity_of(
    session: AsyncSession, channel: str, inbox: str, external_id: str
) -> ChannelIdentity | None:
    return (
        await session.exec(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel,
                ChannelIdentity.inbox == inbox,
                ChannelIdentity.external_id == external_id,
            )
        )
    ).first()


async def mark_unreachable(
    session: AsyncSession,
    *,
    channel: str,
    inbox: str,
    external_id: str,
    reason: str,
    at: datetime,
) -> ChannelIdentity | None:
    """The person blocked the bot or unsubscribed: nothing automatic goes to them there."""
    identity = await identity_of(session, channel, inbox, external_id)
    if identity is None or identity.unreachable_at is not None:
        return identity
    identity.unreachable_at = at
    identity.unreachable_reason = reason[:200]
    session.add(identity)
    audit.record(
        session,
        actor="client",
        entity="client",
        entity_id=identity.client_id,
        action="unreachable",
        changes={"channel": channel, "inbox": inbox, "reason": reason[:200]},
    )
    await session.flush()
    return identity


async def set_consent(
    session: AsyncSession,
    *,
    channel: str,
    inbox: str,
    external_id: str,
    granted: bool,
    reason: str,
) -> Client | None:
    """The client opted in or out of marketing messages (SMS START/STOP)."""
    identity = await identity_of(session, channel, inbox, external_id)
    if identity is None:
        return None
    client = await live_client(session, identity.client_id)
    if client.marketing_consent != granted:
        audit.record(
            session,
            actor="client",
            entity="client",
            entity_id=client.id,  # type: ignore[arg-type]
            action="consent",
            changes={"marketing_consent": [client.marketing_consent, granted], "via": reason},
        )
        client.marketing_consent = granted
        session.add(client)
        await session.flush()
    return client
