"""The role matrix: every operation of the staff API's OpenAPI document, called as nobody, as a
master on someone else's things, as a master on her own, as an admin and as an owner, against
the promises of docs/security.md. MATRIX says what a master may do with each operation; an
operation the document gains is a failure here until someone decides that.

Then the cases the matrix can't show on its own: a master booking a client she doesn't see, an
appointment that was cancelled, a conversation nobody is assigned to, and a staff member
deactivated while signed in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import aiohttp
import pytest
from yarl import URL

from crm_store.models import Appointment, Conversation
from tests.role_matrix_world import (
    ADMIN,
    MASTER,
    OWNER,
    Answer,
    Side,
    World,
    ask,
    build_world,
    deactivate,
    documented_operations,
    footprint,
    pages_send_to_login,
    unchanged_since,
)
from tests.support import RunningHub, client_session, login, rows
from tests.test_inbox_api import call, set_status
from tests.test_roles import PASSWORD, build, signed

SIGNED_OUT = {"error": "not signed in"}
NOT_YOURS = {"error": "not yours"}
LOGOUT = "POST /api/auth/logout"  # called last: it ends the session the rest ran in
CSRF_HEADER = "X-CSRF-Token"


class May(Enum):
    """What a master may do with an operation."""

    ANYONE = "anyone, signed in or not"
    STAFF = "any signed-in staff member"
    MANAGE = "owners and admins only: 403"
    OWN = "only on her own things: 403 not yours on anyone else's"
    OWN_LIST = "a list of only her own things"


@dataclass(frozen=True)
class Call:
    params: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    json: Any = None


Aim = Callable[[World, Side], Iterable[Call]]


def once(**call: Any) -> Aim:
    return lambda w, s: [Call(**call)]


def at_conversations(json: Any = None) -> Aim:
    return lambda w, s: [Call({"id": c}, json=json) for c in s.conversations]


def at_clients(json: Any = None) -> Aim:
    return lambda w, s: [Call({"id": c}, json=json) for c in s.clients]


ONCE: Aim = once()


@dataclass(frozen=True)
class Op:
    master: May
    aim: Aim = ONCE
    ok: int = 200  # the answer to this call from someone who may make it
    listed: str = ""  # May.OWN_LIST: the key of the answer's items
    owner_only: bool = False  # May.MANAGE: and not for admins either


MATRIX: dict[str, Op] = {
    # A bad body: the same 400 for everyone, signed in or not.
    "POST /api/auth/login": Op(May.ANYONE, once(json={"email": "nobody@salon.test"}), 400),
    LOGOUT: Op(May.STAFF),
    "GET /api/me": Op(May.STAFF),
    "GET /api/channels": Op(May.STAFF),
    # The team, for assigning (a master's copy may leave out what she has no use for).
    "GET /api/staff": Op(May.STAFF),
    # Switching accounts off and on is the owner's alone (hub/web/team_api.py), admins included.
    "POST /api/staff/{id}/deactivate": Op(
        May.MANAGE, lambda w, s: [Call({"id": w.iryna})], owner_only=True
    ),
    "POST /api/staff/{id}/activate": Op(
        May.MANAGE, lambda w, s: [Call({"id": w.iryna})], owner_only=True
    ),
    "GET /api/conversations": Op(
        May.OWN_LIST,
        lambda w, s: [Call(query=q) for q in s.conversation_queries],
        listed="conversations",
    ),
    "GET /api/conversations/{id}/messages": Op(May.OWN, at_conversations()),
    "POST /api/conversations/{id}/messages": Op(
        May.OWN, at_conversations({"text": "Hello from the matrix"}), 201
    ),
    "POST /api/conversations/{id}/take": Op(May.OWN, at_conversations()),
    "POST /api/conversations/{id}/assign": Op(
        May.MANAGE,
        lambda w, s: [Call({"id": c}, json={"staff_id": w.olena}) for c in s.conversations],
    ),
    "POST /api/conversations/{id}/read": Op(May.OWN, at_conversations()),
    "POST /api/conversations/{id}/release": Op(
        May.OWN, lambda w, s: [Call({"id": c}) for c in s.released]
    ),
    "POST /api/conversations/{id}/close": Op(
        May.OWN, lambda w, s: [Call({"id": c}) for c in s.closed]
    ),
    # The web chat keeps no files: past the role check, the channel answers 404.
    "GET /api/attachments/{channel}/{inbox}/{ref}": Op(
        May.OWN,
        lambda w, s: [Call({"channel": "webchat", "inbox": "main", "ref": r}) for r in s.files],
        404,
    ),
    "GET /api/events": Op(May.STAFF),
    "GET /api/clients": Op(
        May.OWN_LIST, lambda w, s: [Call(query=q) for q in s.client_queries], listed="clients"
    ),
    "GET /api/clients/{id}": Op(May.OWN, at_clients()),
    "PATCH /api/clients/{id}": Op(
        May.OWN, at_clients({"tags": ["vip"], "marketing_consent": True})
    ),
    "GET /api/clients/{id}/timeline": Op(May.OWN, at_clients()),
    "POST /api/clients/{id}/notes": Op(May.OWN, at_clients({"text": "Prefers mornings"}), 201),
    "POST /api/clients/{id}/messages": Op(May.OWN, at_clients({"text": "See you soon"}), 201),
    "POST /api/clients/{id}/merge": Op(
        May.MANAGE, lambda w, s: [Call({"id": c}, json={"other_id": w.dup}) for c in s.clients]
    ),
    "GET /api/canned": Op(May.STAFF),
    "POST /api/canned": Op(May.MANAGE, once(json={"title": "Bye", "text": "See you"}), 201),
    "PATCH /api/canned/{id}": Op(
        May.MANAGE, lambda w, s: [Call({"id": w.canned}, json={"title": "Opening hours"})]
    ),
    "DELETE /api/canned/{id}": Op(May.MANAGE, lambda w, s: [Call({"id": w.canned_gone})]),
    "GET /api/services": Op(May.STAFF),
    "GET /api/masters": Op(May.STAFF),
    "GET /api/business": Op(May.STAFF),
    "PATCH /api/business": Op(May.MANAGE, once(json={"name": "Matrix salon"})),
    "GET /api/slots": Op(
        May.STAFF,
        lambda w, s: [Call(query={"service": str(w.manicure), "from": "2027-03-10"})],
    ),
    "GET /api/appointments": Op(
        May.OWN_LIST,
        lambda w, s: [Call(query=q) for q in s.appointment_queries],
        listed="appointments",
    ),
    "POST /api/appointments": Op(May.OWN, lambda w, s: [Call(json=b) for b in s.bookings], 201),
    "GET /api/appointments/unsettled": Op(
        May.OWN_LIST,
        lambda w, s: [Call(query=q) for q in s.unsettled_queries],
        listed="appointments",
    ),
    "GET /api/appointments/{id}": Op(
        May.OWN, lambda w, s: [Call({"id": a}) for a in s.appointments]
    ),
    "PATCH /api/appointments/{id}": Op(
        May.OWN, lambda w, s: [Call({"id": a}, json=change) for a, change in s.changes]
    ),
    "POST /api/broadcasts/preview": Op(May.MANAGE, once(json={"segment": {}})),
    "GET /api/broadcasts": Op(May.MANAGE),
    "POST /api/broadcasts": Op(May.MANAGE, once(json={"title": "Winter", "text": "Hi"}), 201),
    "GET /api/broadcasts/{id}": Op(May.MANAGE, lambda w, s: [Call({"id": w.draft})]),
    "PATCH /api/broadcasts/{id}": Op(
        May.MANAGE, lambda w, s: [Call({"id": w.draft}, json={"title": "Early spring"})]
    ),
    "POST /api/broadcasts/{id}/send": Op(May.MANAGE, lambda w, s: [Call({"id": w.to_send})]),
    "POST /api/broadcasts/{id}/cancel": Op(May.MANAGE, lambda w, s: [Call({"id": w.to_cancel})]),
    "GET /api/broadcasts/{id}/recipients": Op(May.MANAGE, lambda w, s: [Call({"id": w.draft})]),
    "GET /api/broadcast-templates": Op(May.MANAGE),
    "GET /api/analytics": Op(May.MANAGE),
    "GET /api/analytics/{table}.csv": Op(May.MANAGE, once(params={"table": "volume"})),
    "GET /api/analytics/{table}": Op(May.MANAGE, once(params={"table": "volume"})),
    "GET /api/openapi.json": Op(May.STAFF),
}
STATE_CHANGING = [key for key in MATRIX if not key.startswith(("GET ", "POST /api/auth/login"))]


# What each role should get ----------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    status: int
    body: Any = None  # the exact body, when it matters
    holds: str = ""  # for a list: "mine only", "none of theirs", "everyone's"


def as_nobody(op: Op) -> Expect:
    """Signed out, a forged cookie, or deactivated: 401 and not a byte of data."""
    return Expect(op.ok) if op.master is May.ANYONE else Expect(401, SIGNED_OUT)


def as_forgery(op: Op) -> Expect:
    """A live session without its CSRF token: every state-changing request is refused."""
    del op
    return Expect(403)


def as_owner(op: Op) -> Expect:
    return Expect(op.ok, holds="everyone's" if op.listed else "")


def as_admin(op: Op) -> Expect:
    return Expect(403) if op.owner_only else as_owner(op)


def as_master_on_own(op: Op) -> Expect:
    if op.master is May.MANAGE:
        return Expect(403)
    return Expect(op.ok, holds="mine only" if op.listed else "")


def as_master_on_theirs(op: Op) -> Expect:
    if op.master is May.MANAGE:
        return Expect(403)
    if op.master is May.OWN:
        return Expect(403, NOT_YOURS)
    return Expect(op.ok, holds="none of theirs" if op.listed else "")


def refused(expect: Expect) -> bool:
    return expect.status in (401, 403)


def verdict(op: Op, expect: Expect, answer: Answer, w: World) -> str:
    """What is wrong with the answer ("" when nothing is)."""
    if answer.status >= 500:
        return "a server error"
    if answer.status != expect.status:
        return f"expected {expect.status}"
    if expect.body is not None and answer.body != expect.body:
        return f"expected the body {expect.body}"
    if refused(expect) and (not isinstance(answer.body, dict) or set(answer.body) != {"error"}):
        return "a refusal must say why and hold no data"
    if not expect.holds:
        return ""
    listed = {item["id"] for item in answer.body[op.listed]}
    mine, theirs = w.mine.ids[op.listed], w.theirs.ids[op.listed]
    if expect.holds != "everyone's" and listed & theirs:
        return f"lists what isn't hers: {sorted(listed & theirs)}"
    if expect.holds == "mine only" and not listed & mine:
        return "lists none of hers"
    if expect.holds == "everyone's" and not (listed & mine and listed & theirs):
        return "a manager sees everyone's"
    return ""


# Sweeping every operation -----------------------------------------------------------------


async def send(hub: RunningHub, staff: aiohttp.ClientSession, key: str, target: Call) -> Answer:
    method, path = key.split(" ", 1)
    url = hub.base_url + path.format_map(target.params)
    return await ask(staff, method, url, query=target.query, json=target.json)


async def sweep(
    hub: RunningHub,
    w: World,
    staff: aiohttp.ClientSession,
    who: str,
    side: Side,
    expect: Callable[[Op], Expect],
    *,
    keys: Iterable[str] = MATRIX,
) -> list[str]:
    """Every operation of the matrix (or of `keys`) as `who`, aimed at `side`: the problems
    found. What must be refused goes first, and all of it together must change nothing;
    signing out goes last."""
    planned = [
        (key, target, expect(MATRIX[key])) for key in keys for target in MATRIX[key].aim(w, side)
    ]
    planned.sort(key=lambda plan: (not refused(plan[2]), plan[0] == LOGOUT))
    problems = []
    before: dict[str, Any] | None = await footprint(hub)
    for key, target, wanted in planned:
        if before is not None and not refused(wanted):
            problems += await unchanged_since(hub, before, f"{who}, refused,")
            before = None
        answer = await send(hub, staff, key, target)
        wrong = verdict(MATRIX[key], wanted, answer, w)
        if wrong:
            problems.append(_problem(who, key, target, answer, wrong))
    if before is not None:
        problems += await unchanged_since(hub, before, f"{who}, refused,")
    return problems


def _problem(who: str, key: str, target: Call, answer: Answer, wrong: str) -> str:
    aimed = {k: v for k, v in vars(target).items() if v}
    body = repr(answer.body)
    return f"{who}: {key} {aimed} -> {answer.status} {body[:160]}: {wrong}"


async def without_csrf(
    hub: RunningHub, w: World, staff: aiohttp.ClientSession, who: str, token: str | None
) -> list[str]:
    """Every state-changing operation in a live session with no CSRF token (`token` None) or
    another session's: 403 each, and nothing changes."""
    own = staff.headers.pop(CSRF_HEADER)
    if token is not None:
        staff.headers[CSRF_HEADER] = token
    how = "with another session's CSRF token" if token else "without a CSRF token"
    problems = await sweep(hub, w, staff, f"{who} {how}", w.mine, as_forgery, keys=STATE_CHANGING)
    staff.headers[CSRF_HEADER] = own
    return problems


# One table-driven test per role -----------------------------------------------------------


async def nobody(hub: RunningHub, w: World) -> list[str]:
    problems = []
    async with client_session() as anonymous, client_session() as forger:
        forger.cookie_jar.update_cookies({"hub_session": "forged-session"}, URL(hub.base_url))
        forger.headers[CSRF_HEADER] = "forged-token"
        for who, staff in (("anonymous", anonymous), ("a forged session", forger)):
            # The pages first: the sweep ends by signing out.
            problems += await pages_send_to_login(hub, staff, who)
            problems += await sweep(hub, w, staff, who, w.mine, as_nobody)
    return problems


async def master_on_theirs(hub: RunningHub, w: World) -> list[str]:
    async with await signed(hub, MASTER) as olena:
        return await sweep(hub, w, olena, "master on theirs", w.theirs, as_master_on_theirs)


async def master_on_own(hub: RunningHub, w: World) -> list[str]:
    async with await signed(hub, MASTER) as olena:
        return await sweep(hub, w, olena, "master on her own", w.mine, as_master_on_own)


def manager(
    email: str, expect: Callable[[Op], Expect], *, borrowed_token: bool
) -> Callable[[RunningHub, World], Awaitable[list[str]]]:
    """A manager's run: first every state-changing request without the CSRF token (or, with
    `borrowed_token`, with a master's), then every operation as it should be made."""

    async def run(hub: RunningHub, w: World) -> list[str]:
        async with await signed(hub, MASTER) as olena, await signed(hub, email) as staff:
            token = olena.headers[CSRF_HEADER] if borrowed_token else None
            problems = await without_csrf(hub, w, staff, email, token)
            return problems + await sweep(hub, w, staff, email, w.mine, expect)

    return run


ROLES = {
    "anonymous": nobody,
    "master_on_theirs": master_on_theirs,
    "master_on_own": master_on_own,
    "admin": manager(ADMIN, as_admin, borrowed_token=False),
    "owner": manager(OWNER, as_owner, borrowed_token=True),
}


@pytest.mark.parametrize("role", ROLES)
async def test_every_operation_answers_each_role_as_promised(hub: RunningHub, role: str) -> None:
    w = await build_world(hub)
    async with await signed(hub, OWNER) as owner:
        documented = await documented_operations(hub, owner)
    assert sorted(documented - MATRIX.keys()) == [], "operations the role matrix doesn't classify"
    assert sorted(MATRIX.keys() - documented) == [], "classified operations the API lost"
    problems = await ROLES[role](hub, w)
    assert problems == [], "\n" + "\n".join(problems)


# The cases on their own -------------------------------------------------------------------


async def test_a_master_may_not_book_a_client_she_does_not_see(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    before = [a.id for a in await rows(hub, Appointment)]
    stranger = {
        "client_id": w.kateryna,  # Iryna's client: nothing of Olena's
        "service_id": w.salon.manicure,
        "start": "2027-03-11T16:30:00+02:00",
    }
    async with await signed(hub, MASTER) as olena:
        for body in (
            stranger,
            {**stranger, "master_id": w.salon.olena},
            {**stranger, "client_id": w.bohdan},
        ):
            assert await call(olena, "POST", f"{api}/appointments", json=body) == (403, NOT_YOURS)
        assert [a.id for a in await rows(hub, Appointment)] == before
        # Refused, the booking gave her nothing to see either.
        assert await call(olena, "GET", f"{api}/clients/{w.kateryna}") == (403, NOT_YOURS)
        # A client she sees, into her own day: booked.
        status, body = await call(
            olena, "POST", f"{api}/appointments", json={**stranger, "client_id": w.salon.client}
        )
        assert (status, body["master"]["id"]) == (201, w.salon.olena)


async def test_a_cancelled_appointment_grants_nothing(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    card = f"{api}/clients/{w.salon.client}"  # Oksana: Olena's only through this appointment
    async with await signed(hub, MASTER) as olena:
        assert (await call(olena, "GET", card))[0] == 200
        status, body = await call(
            olena, "PATCH", f"{api}/appointments/{w.olena_appointment}", json={"action": "cancel"}
        )
        assert (status, body["status"]) == (200, "cancelled")
        assert await call(olena, "GET", card) == (403, NOT_YOURS)
        assert await call(olena, "GET", f"{card}/timeline") == (403, NOT_YOURS)
        assert await call(olena, "PATCH", card, json={"marketing_consent": True}) == (
            403,
            NOT_YOURS,
        )
        assert await call(olena, "POST", f"{card}/notes", json={"text": "x"}) == (403, NOT_YOURS)
        assert await call(olena, "POST", f"{card}/messages", json={"text": "x"}) == (403, NOT_YOURS)
        status, body = await call(olena, "GET", f"{api}/clients")
        assert w.salon.client not in {c["id"] for c in body["clients"]}
        before = [a.id for a in await rows(hub, Appointment)]
        booking = {
            "client_id": w.salon.client,
            "service_id": w.salon.manicure,
            "start": "2027-03-11T15:00:00+02:00",
        }
        assert await call(olena, "POST", f"{api}/appointments", json=booking) == (403, NOT_YOURS)
        assert [a.id for a in await rows(hub, Appointment)] == before


async def test_a_master_may_not_write_where_nobody_is_assigned(hub: RunningHub) -> None:
    w = await build(hub)
    api = f"{hub.base_url}/api"
    async with await signed(hub, OWNER) as owner:
        # Kateryna's card is Olena's now (a live appointment); her web chat is nobody's.
        status, body = await call(
            owner, "POST", f"{api}/appointments",
            json={"client_id": w.kateryna, "service_id": w.salon.manicure,
                  "master_id": w.salon.olena, "start": "2027-03-11T11:00:00+02:00"},
        )  # fmt: skip
        assert status == 201, body
    conversation = f"{api}/conversations/{w.kateryna_web}"
    async with await signed(hub, MASTER) as olena:
        for state in ("bot", "waiting"):
            await set_status(hub, w.kateryna_web, state, None)
            assert (await call(olena, "GET", f"{api}/clients/{w.kateryna}"))[0] == 200
            before = await footprint(hub)
            written = await call(
                olena, "POST", f"{api}/clients/{w.kateryna}/messages", json={"text": "Mine now"}
            )
            assert written == (403, NOT_YOURS), state
            replied = await call(olena, "POST", f"{conversation}/messages", json={"text": "x"})
            assert replied == (403, NOT_YOURS), state
            for action in ("take", "release", "close", "read"):
                answer = await call(olena, "POST", f"{conversation}/{action}")
                assert answer == (403, NOT_YOURS), (state, action)
            (kept,) = await rows(hub, Conversation, Conversation.id == w.kateryna_web)
            assert (kept.status, kept.assignee_id) == (state, None)
            # No message, no read mark, no change of hands: nothing at all.
            assert await footprint(hub) == before


async def test_a_deactivated_member_is_signed_out_of_everything_at_once(hub: RunningHub) -> None:
    w = await build_world(hub)
    async with await signed(hub, MASTER) as olena, await signed(hub, ADMIN) as admin:
        await deactivate(hub, w.olena, w.admin)
        problems = []
        for who, staff in (("deactivated master", olena), ("deactivated admin", admin)):
            # The pages first: the sweep ends by signing out.
            problems += await pages_send_to_login(hub, staff, who)
            problems += await sweep(hub, w, staff, who, w.mine, as_nobody)
        assert problems == [], "\n" + "\n".join(problems)
    async with client_session() as again:
        for email in (MASTER, ADMIN):
            assert await login(again, hub.base_url, email, PASSWORD) == 401
