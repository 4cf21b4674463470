"""Who may see and do what, enforced in the API (the pages only hide what is refused here).

Owners and admins see everything. A master sees the conversations assigned to them, their own
appointments, and the cards of the clients in those; anything else is `403 not yours` for one
item and simply absent from a list. Only owners and admins assign, merge, manage canned
replies and change the salon's settings.
"""

from __future__ import annotations

from aiohttp import web

from crm_store.inbox import master_sees_client
from crm_store.models import Appointment, Conversation, Staff
from hub import auth
from hub.http_json import hub_of, refuse

MANAGERS = frozenset({"owner", "admin"})
STAFF_ROW = web.RequestKey("staff_row", Staff)
NOT_YOURS = "not yours"


async def staff_of(request: web.Request) -> Staff:
    """The signed-in staff member (loaded once per request); a disabled account is signed out."""
    cached = request.get(STAFF_ROW)
    if cached is not None:
        return cached
    async with hub_of(request).sessions() as session:
        staff = await session.get(Staff, request[auth.STAFF_KEY])
    if staff is None or not staff.active:
        raise refuse(web.HTTPUnauthorized, "not signed in")
    request[STAFF_ROW] = staff
    return staff


def is_manager(staff: Staff) -> bool:
    return staff.role in MANAGERS


async def master_id_of(request: web.Request) -> int | None:
    """The caller's id when they are a master (whose view is narrowed), else None."""
    staff = await staff_of(request)
    return None if is_manager(staff) else staff.id


async def require_manager(request: web.Request) -> Staff:
    staff = await staff_of(request)
    if not is_manager(staff):
        raise refuse(web.HTTPForbidden, "only an owner or admin may do this")
    return staff


async def check_conversation(request: web.Request, conversation: Conversation) -> None:
    """A master may touch only a conversation assigned to them."""
    master = await master_id_of(request)
    if master is not None and conversation.assignee_id != master:
        raise refuse(web.HTTPForbidden, NOT_YOURS)


async def check_appointment(request: web.Request, appointment: Appointment) -> None:
    master = await master_id_of(request)
    if master is not None and appointment.master_id != master:
        raise refuse(web.HTTPForbidden, NOT_YOURS)


async def check_client(request: web.Request, client_id: int) -> None:
    """A master may see a card of a client they have an appointment or a conversation with."""
    master = await master_id_of(request)
    if master is None:
        return
    async with hub_of(request).sessions() as session:
        if not await master_sees_client(session, master, client_id):
            raise refuse(web.HTTPForbidden, NOT_YOURS)
