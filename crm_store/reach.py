"""Which channel reaches a client for a message the hub starts on its own.

The order is the client's own: the chats they wrote from, newest first; then their email and
phone on file (email before SMS: SMS is paid per segment). The channels' rules cut that list:

- webchat can't be reached once the visitor has left the page;
- an identity marked unreachable (blocked the bot, unsubscribed, undeliverable) is skipped;
- Telegram: a bot may write only to someone who started it — any chat we have is one;
- Instagram allows messages only within 24 hours of the client's last message;
- Viber bills messages its bot starts (for bots created since 2024); the salon may allow
  them (the default) or keep Viber to the same 24-hour window;
- a channel that is off in this hub is skipped;
- a group chat the client wrote in (a Telegram group, an Instagram group thread) is never a
  route: what goes out from here is personal.

A route already tried for this message (`exclude`) is skipped too: that is failover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.models import ChannelIdentity, Client, Conversation, Message
from crm_store.timeutil import aware

NEVER_REACHABLE = ("webchat",)
REPLY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Route:
    channel: str
    inbox: str
    chat_id: str
    last_in: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.channel}/{self.inbox}/{self.chat_id}"


@dataclass(frozen=True)
class ReachRules:
    # channel → its inboxes that are on in this hub
    enabled: dict[str, tuple[str, ...]]
    # Channels limited to REPLY_WINDOW after the client's last message.
    windowed: frozenset[str] = field(default_factory=lambda: frozenset({"instagram"}))


async def routes(
    session: AsyncSession,
    client: Client,
    *,
    rules: ReachRules,
    now: datetime,
    exclude: tuple[str, ...] | list[str] = (),
) -> list[Route]:
    """Every way to reach the client now, best first."""
    assert client.id is not None
    found = await routes_many(session, [client], rules=rules, now=now)
    return [route for route in found[client.id] if route.key not in exclude]


async def routes_many(
    session: AsyncSession, clients: Sequence[Client], *, rules: ReachRules, now: datetime
) -> dict[int, list[Route]]:
    """`routes` for many clients in two queries (a broadcast routes thousands at once), by
    client id; nothing excluded."""
    ids = [client.id for client in clients if client.id is not None]
    if not ids:
        return {}
    chats: dict[int, list[tuple[str, str, str, datetime | None]]] = {i: [] for i in ids}
    # Bounded statements: PostgreSQL allows 32k bind parameters in one.
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        rows = (
            await session.exec(
                select(
                    Message.client_id,
                    Conversation.channel,
                    Conversation.inbox,
                    Conversation.chat_id,
                    func.max(Message.created_at),
                )
                .join(Message, col(Message.conversation_id) == col(Conversation.id))
                # Never a group the client wrote in: what goes out from here is personal.
                .where(
                    col(Message.client_id).in_(chunk),
                    Message.direction == "in",
                    col(Conversation.private).is_(True),
                )
                .group_by(
                    Message.client_id,
                    Conversation.channel,
                    Conversation.inbox,
                    Conversation.chat_id,
                )
            )
        ).all()
        for client_id, channel, inbox, chat_id, last in rows:
            chats[client_id].append((channel, inbox, chat_id, last))
    identities: dict[int, list[ChannelIdentity]] = {i: [] for i in ids}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for identity in (
            await session.exec(
                select(ChannelIdentity)
                .where(col(ChannelIdentity.client_id).in_(chunk))
                .order_by(col(ChannelIdentity.id))
            )
        ).all():
            identities[identity.client_id].append(identity)
    return {
        client.id: _usable(client, chats[client.id], identities[client.id], rules, now)
        for client in clients
        if client.id is not None
    }


def _usable(
    client: Client,
    chats: list[tuple[str, str, str, datetime | None]],
    identities: list[ChannelIdentity],
    rules: ReachRules,
    now: datetime,
) -> list[Route]:
    unreachable = {
        (i.channel, i.inbox, i.external_id) for i in identities if i.unreachable_at is not None
    }
    found = [Route(ch, inbox, chat, aware(last)) for ch, inbox, chat, last in chats]
    # An identity we never had a message from (a shared contact, an import) still counts.
    known = {(r.channel, r.inbox, r.chat_id) for r in found}
    found += [
        Route(i.channel, i.inbox, i.external_id)
        for i in identities
        if (i.channel, i.inbox, i.external_id) not in known
    ]
    found.sort(key=lambda r: r.last_in.timestamp() if r.last_in else 0.0, reverse=True)
    # The contacts on the card, where no chat of that channel exists yet.
    on_file = [("email", client.email), ("sms", client.phone)]
    for channel, address in on_file:
        inboxes = rules.enabled.get(channel, ())
        if address and inboxes and not any(r.channel == channel for r in found):
            found.append(Route(channel, inboxes[0], address))
    usable: list[Route] = []
    for route in found:
        if route.channel in NEVER_REACHABLE:
            continue
        if route.inbox not in rules.enabled.get(route.channel, ()):
            continue
        if (route.channel, route.inbox, route.chat_id) in unreachable:
            continue
        if route.channel in rules.windowed and (
            route.last_in is None or now - route.last_in > REPLY_WINDOW
        ):
            continue
        if any(u.key == route.key for u in usable):
            continue
        usable.append(route)
    return usable


async def ensure_identity(session: AsyncSession, client_id: int, route: Route) -> None:
    """A route taken from the card (phone, email) becomes an identity, so the client's answer
    on it lands on this card."""
    exists = (
        await session.exec(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == route.channel,
                ChannelIdentity.inbox == route.inbox,
                ChannelIdentity.external_id == route.chat_id,
            )
        )
    ).first()
    if exists is not None:
        return
    session.add(
        ChannelIdentity(
            client_id=client_id,
            channel=route.channel,
            inbox=route.inbox,
            external_id=route.chat_id,
        )
    )
    audit.record(
        session,
        actor="system",
        entity="client",
        entity_id=client_id,
        action="identity_added",
        changes={"channel": route.channel, "inbox": route.inbox, "via": "card contact"},
    )
    await session.flush()
