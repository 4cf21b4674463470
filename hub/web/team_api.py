"""The owner switches a staff account off or on (`hub staff deactivate` does the same from the
shell). Switched off, the account is signed out everywhere at once (hub/web/team.py)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from crm_store.staff import StaffError, StaffNotFound
from hub.web import roles
from hub.web.http_json import answer, hub_of, positive_int, refuse
from hub.web.team import set_staff_active

routes = web.RouteTableDef()


class AccountState(BaseModel):
    id: int
    name: str
    role: str
    active: bool


@routes.post("/api/staff/{id}/deactivate")
async def deactivate(request: web.Request) -> web.Response:
    return await _set_active(request, False)


@routes.post("/api/staff/{id}/activate")
async def activate(request: web.Request) -> web.Response:
    return await _set_active(request, True)


async def _set_active(request: web.Request, active: bool) -> web.Response:
    owner = await roles.require_owner(request)
    staff_id = positive_int(request.match_info["id"], "id")
    if staff_id == owner.id and not active:
        raise refuse(web.HTTPConflict, "you can't deactivate your own account")
    hub = hub_of(request)
    try:
        staff = await set_staff_active(
            hub.sessions, hub.bus, staff_id, active, actor="staff", by_staff_id=owner.id
        )
    except StaffError as exc:
        kind = web.HTTPNotFound if isinstance(exc, StaffNotFound) else web.HTTPConflict
        raise refuse(kind, str(exc)) from None
    return answer(
        AccountState(id=staff.id, name=staff.name, role=staff.role, active=staff.active)  # type: ignore[arg-type]
    )
