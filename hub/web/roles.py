"""Who may see and do what, enforced in the API (the pages only hide what is refused here).

Owners and admins see everything. A master sees the conversations assigned to them, their own
appointments, and the cards of the clients in those (a cancelled appointment grants nothing);
anything else is `403 not yours` for one item and simply absent from a list. A master books
only clients they already see, into their own day. Only owners and admins assign, merge, manage
canned replies and change the salon's settings; only owners switch staff accounts off and on.
An account switched off is signed out on its next request (hub/web/auth.py).
"""

from __future__ import annotations

from aiohttp import web

from crm_store.inbox import master_sees_client
from crm_store.models import Appointment, Conversation, Staff
from hub.web import auth
from hub.web.http_json import hub_of, refuse

MANAGERS = frozenset({"owner", "admin"})
STAFF_ROW = web.RequestKey("staff_row", Staff)
NOT_YOURS = "not yours"


async def load_active(request: web.Request) -> bool:
    """Load the signed-in staff member for this request (hub/web/auth.py's middleware calls it
    for every /api/ request); False when the account is gone or switched off."""
    async with hub_of(request).sessions() as session:
        staff = await session.get(Staff, request[auth.STAFF_KEY])
    if staff is None or not staff.active:
        request.pop(STAFF_ROW, None)
        return False
    request[STAFF_ROW] = staff
    return True


async def staff_of(request: web.Request) -> Staff:
    """The signed-in staff member (loaded once per request); a disabled account is signed out."""
    if request.get(STAFF_ROW) is None and not await load_active(request):
        raise refuse(web.HTTPUnauthorized, "not signed in")
    return request[STAFF_ROW]


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


async def require_owner(request: web.Request) -> Staff:
    staff = await staff_of(request)
    if staff.role != "owner":
        raise refuse(web.HTTPForbidden, "only an owner may do this")
    return staff


def may_handle(staff: Staff, conversation: Conversation) -> bool:
    """The one rule for reading, writing in, taking, giving back and closing a conversation:
    owners and admins anywhere, a master only in one assigned to them (an unassigned one is
    taken for them by an owner or admin, never by writing into it)."""
    return is_manager(staff) or conversation.assignee_id == staff.id


async def check_conversation(request: web.Request, conversation: Conversation) -> None:
    """403 unless the caller may handle this conversation (may_handle)."""
    if not may_handle(await staff_of(request), conversation):
        raise refuse(web.HTTPForbidden, NOT_YOURS)


async def check_appointment(request: web.Request, appointment: Appointment) -> None:
    master = await master_id_of(request)
    if master is not None and appointment.master_id != master:
        raise refuse(web.HTTPForbidden, NOT_YOURS)


async def check_client(request: web.Request, client_id: int) -> None:
    """A master may see (and book) a client they have a live appointment or a conversation
    assigned to them with (crm_store.inbox.master_sees_client)."""
    master = await master_id_of(request)
    if master is None:
        return
    async with hub_of(request).sessions() as session:
        if not await master_sees_client(session, master, client_id):
            raise refuse(web.HTTPForbidden, NOT_YOURS)
