"""The staff API for client cards: search, the whole card, edits. See docs/api.md."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import Rules
from crm_store.clients import ClientError, client_card, list_clients, update_client
from crm_store.db import transaction
from crm_store.inbox import list_master_clients
from crm_store.models import AuditEntry, ChannelIdentity, Client
from hub.web import auth, roles
from hub.web.answers import Time, not_null
from hub.web.booking_answers import AppointmentView, appointment_views, local_iso
from hub.web.http_json import (
    MAX_ID,
    answer,
    hub_of,
    positive_int,
    query_int,
    query_text,
    read_body,
    refuse,
)
from prompts import LANGUAGES

routes = web.RouteTableDef()
MAX_PAGE = 200


class ClientBody(BaseModel):
    """Only the fields sent are changed; null empties name, phone, email, language or the
    preferred master."""

    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=320)
    # uk, en or ru: crm_store.clients checks it, with its own message.
    language: Annotated[str, Field(max_length=16, json_schema_extra={"enum": LANGUAGES})] | None = (
        None
    )
    tags: list[str] | None = Field(default=None, max_length=50, json_schema_extra=not_null())
    notes: str | None = Field(default=None, max_length=10_000, json_schema_extra=not_null())
    preferred_master_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    marketing_consent: bool | None = Field(default=None, json_schema_extra=not_null())


class ClientView(BaseModel):
    """A client card's own fields (a list shows only these)."""

    id: int
    name: str | None
    phone: str | None
    email: str | None
    language: str | None
    source_channel: str | None
    tags: list[str]
    notes: str
    preferred_master_id: int | None
    marketing_consent: bool
    first_contact_at: Time | None
    last_contact_at: Time | None
    last_visit_at: Time | None
    merged_into_id: int | None


class ClientList(BaseModel):
    clients: list[ClientView]


class IdentityView(BaseModel):
    """Where the client writes from: a channel, its inbox and the client's id there."""

    channel: str
    inbox: str
    external_id: str
    username: str | None
    display_name: str | None
    linked_at: Time


class AuditView(BaseModel):
    at: Time
    entity: str
    entity_id: int
    actor: str
    staff_id: int | None
    action: str
    # Each field changed: [before, after].
    changes: dict[str, Any]


class CardView(ClientView):
    """The whole card. `visits` (done) and `no_shows` count all the client's appointments."""

    identities: list[IdentityView]
    appointments: list[AppointmentView]
    audit: list[AuditView]
    visits: int
    no_shows: int


@routes.get("/api/clients")
async def clients(request: web.Request) -> web.Response:
    hub = hub_of(request)
    limit = query_int(request, "limit", 50, low=1, high=MAX_PAGE)
    offset = query_int(request, "offset", 0, low=0, high=10**9)
    master = await roles.master_id_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        query = query_text(request, "q", limit=100)
        if master is None:
            rows = await list_clients(session, query=query, limit=limit, offset=offset)
        else:
            # Only the clients the master has an appointment or a conversation with.
            rows = await list_master_clients(
                session, master, query=query, limit=limit, offset=offset
            )
    return answer(ClientList(clients=[client_view(c, rules) for c in rows]))


@routes.get("/api/clients/{id}")
async def card(request: web.Request) -> web.Response:
    hub = hub_of(request)
    client_id = positive_int(request.match_info["id"], "id")
    await roles.check_client(request, client_id)
    master = await roles.master_id_of(request)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        return answer(await card_view(session, client_id, rules, master_id=master))


async def card_view(
    session: AsyncSession, client_id: int, rules: Rules, *, master_id: int | None = None
) -> CardView:
    """The whole card: identities, appointments and the audit trail (404 if unknown). For a
    master, only their own appointments (and their audit entries). `visits` (done) and
    `no_shows` count all of the client's appointments, a master's view too: how reliable a
    client is matters to whoever keeps time for them, and a count shows no one's details."""
    try:
        found = await client_card(session, client_id)
    except ClientError as exc:
        raise refuse(web.HTTPNotFound, str(exc)) from None
    visits = found.appointments
    trail = found.audit
    if master_id is not None:
        visits = [a for a in visits if a.master_id == master_id]
        others = {a.id for a in found.appointments} - {a.id for a in visits}
        trail = [e for e in trail if not (e.entity == "appointment" and e.entity_id in others)]
    appointments = await appointment_views(session, visits, rules)
    return CardView(
        **dict(client_view(found.client, rules)),
        identities=[identity_view(i, rules) for i in found.identities],
        appointments=appointments,
        audit=[audit_view(e, rules) for e in trail],
        visits=found.visits,
        no_shows=found.no_shows,
    )


@routes.patch("/api/clients/{id}")
async def change_client(request: web.Request) -> web.Response:
    hub = hub_of(request)
    client_id = positive_int(request.match_info["id"], "id")
    await roles.check_client(request, client_id)
    changes = (await read_body(request, ClientBody)).model_dump(exclude_unset=True)
    for key in ("tags", "notes", "marketing_consent"):
        if key in changes and changes[key] is None:
            raise refuse(web.HTTPBadRequest, f"{key} can't be null")
    try:
        async with transaction(hub.sessions) as session:
            client = await update_client(
                session,
                client_id,
                changes,
                actor="staff",
                staff_id=request[auth.STAFF_KEY],
                region=hub.settings.hub_default_region,
            )
            rules = await hub.rules(session)
    except ClientError as exc:
        kind = web.HTTPNotFound if exc.status == 404 else web.HTTPBadRequest
        raise refuse(kind, str(exc)) from None
    return answer(client_view(client, rules))


def client_view(client: Client, rules: Rules) -> ClientView:
    return ClientView(
        id=client.id,  # type: ignore[arg-type]
        name=client.name,
        phone=client.phone,
        email=client.email,
        language=client.language,
        source_channel=client.source_channel,
        tags=client.tags,
        notes=client.notes,
        preferred_master_id=client.preferred_master_id,
        marketing_consent=client.marketing_consent,
        first_contact_at=local_iso(client.first_contact_at, rules),
        last_contact_at=local_iso(client.last_contact_at, rules),
        last_visit_at=local_iso(client.last_visit_at, rules),
        merged_into_id=client.merged_into_id,
    )


def identity_view(identity: ChannelIdentity, rules: Rules) -> IdentityView:
    return IdentityView(
        channel=identity.channel,
        inbox=identity.inbox,
        external_id=identity.external_id,
        username=identity.username,
        display_name=identity.display_name,
        linked_at=local_iso(identity.created_at, rules),  # type: ignore[arg-type]
    )


def audit_view(entry: AuditEntry, rules: Rules) -> AuditView:
    return AuditView(
        at=local_iso(entry.at, rules),  # type: ignore[arg-type]
        entity=entry.entity,
        entity_id=entry.entity_id,
        actor=entry.actor,
        staff_id=entry.staff_id,
        action=entry.action,
        changes=entry.changes,
    )
