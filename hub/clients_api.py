"""The staff API for client cards: search, the whole card, edits. See docs/api.md."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from crm_store.business import Rules
from crm_store.clients import ClientError, client_card, list_clients, update_client
from crm_store.db import transaction
from crm_store.models import AuditEntry, ChannelIdentity, Client
from hub import auth
from hub.booking_api import appointments_json, local_iso
from hub.http_json import hub_of, positive_int, query_int, read_body, refuse

routes = web.RouteTableDef()
MAX_PAGE = 200


class ClientBody(BaseModel):
    """Only the fields sent are changed; null empties name, phone, email or language."""

    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=320)
    language: str | None = Field(default=None, max_length=16)
    tags: list[str] | None = Field(default=None, max_length=50)
    notes: str | None = Field(default=None, max_length=10_000)
    preferred_master_id: int | None = Field(default=None, ge=1)
    marketing_consent: bool | None = None


@routes.get("/api/clients")
async def clients(request: web.Request) -> web.Response:
    hub = hub_of(request)
    limit = query_int(request, "limit", 50, low=1, high=MAX_PAGE)
    offset = query_int(request, "offset", 0, low=0, high=10**9)
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        rows = await list_clients(
            session, query=request.query.get("q", "")[:100], limit=limit, offset=offset
        )
    return web.json_response({"clients": [client_json(c, rules) for c in rows]})


@routes.get("/api/clients/{id}")
async def card(request: web.Request) -> web.Response:
    hub = hub_of(request)
    client_id = positive_int(request.match_info["id"], "id")
    async with hub.sessions() as session:
        try:
            found = await client_card(session, client_id)
        except ClientError as exc:
            raise refuse(web.HTTPNotFound, str(exc)) from None
        rules = await hub.rules(session)
        appointments = await appointments_json(session, found.appointments, rules)
    return web.json_response(
        {
            **client_json(found.client, rules),
            "identities": [identity_json(i, rules) for i in found.identities],
            "appointments": appointments,
            "audit": [audit_json(e, rules) for e in found.audit],
        }
    )


@routes.patch("/api/clients/{id}")
async def change_client(request: web.Request) -> web.Response:
    hub = hub_of(request)
    client_id = positive_int(request.match_info["id"], "id")
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
    return web.json_response(client_json(client, rules))


def client_json(client: Client, rules: Rules) -> dict[str, Any]:
    return {
        "id": client.id,
        "name": client.name,
        "phone": client.phone,
        "email": client.email,
        "language": client.language,
        "source_channel": client.source_channel,
        "tags": client.tags,
        "notes": client.notes,
        "preferred_master_id": client.preferred_master_id,
        "marketing_consent": client.marketing_consent,
        "first_contact_at": local_iso(client.first_contact_at, rules),
        "last_contact_at": local_iso(client.last_contact_at, rules),
        "last_visit_at": local_iso(client.last_visit_at, rules),
        "merged_into_id": client.merged_into_id,
    }


def identity_json(identity: ChannelIdentity, rules: Rules) -> dict[str, Any]:
    return {
        "channel": identity.channel,
        "inbox": identity.inbox,
        "external_id": identity.external_id,
        "username": identity.username,
        "display_name": identity.display_name,
        "linked_at": local_iso(identity.created_at, rules),
    }


def audit_json(entry: AuditEntry, rules: Rules) -> dict[str, Any]:
    return {
        "at": local_iso(entry.at, rules),
        "entity": entry.entity,
        "entity_id": entry.entity_id,
        "actor": entry.actor,
        "staff_id": entry.staff_id,
        "action": entry.action,
        "changes": entry.changes,
    }
