"""The OpenAPI document and the code agree, checked from outside: schemathesis reads the
document a live hub serves and calls every operation in it, signed in as the salon's owner,
in a salon with one thing of every kind (tests/role_matrix_world.py). Each operation gets
examples that fit the document (positive) and examples that break it (negative), about half of
them aimed at things that exist. Every answer must be as documented: no 5xx, a documented
status and content type, documented headers, a body that fits its schema; what fits the
document is taken (no 400 for it) and what breaks it is refused. Hypothesis is derandomized:
each run sends the same examples.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from channels.base import AttachmentUnavailable, FetchedFile
from tests.role_matrix_world import OWNER, World, build_world
from tests.support import RunningHub
from tests.test_roles import PASSWORD

EXAMPLES = 12  # per operation and per mode (positive, negative)
# Last, each example in a session of its own: signing out ends the session it runs in, and the
# failed sign-ins slow later sign-ins from the same address down. (The owner switching their
# own account off, which would end it too, is refused: a 409.)
SIGN_OUT = "POST /api/auth/logout"
SIGN_IN = "POST /api/auth/login"
LAST = (SIGN_OUT, SIGN_IN)
EVENTS = "GET /api/events"
EVENTS_READ_S = 0.3  # an event stream never ends: read this long, then hang up
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Rules a JSON schema can't state (an order between two fields, what exists, what state a
# thing is in): a request that fits the document may still be refused for one of these, with
# exactly these errors, and for nothing else.
PERIOD = r"`to` is before `from`|ask for at most \d+ days at a time"
ANALYTICS_PERIOD = r"from must not be after to|the period may be at most \d+ days"
SEGMENT = (
    r"Value error, (a tag can't be empty|channel must be one of .*"
    r"|visited_after must be at least a day before visited_before)"
    r"|no service with id \d+|segment.*"
)
BROADCAST = (
    r"|scheduled_at .*|the (title|text) can't be empty"
    r"|the text may use only the \{name\} placeholder .*"
)
BEYOND_THE_SCHEMA: dict[str, str] = {
    "POST /api/conversations/{id}/assign": "no such active staff member",
    "PATCH /api/clients/{id}": r"'.*' is not a valid (phone number|email address)|no master .*",
    "POST /api/clients/{id}/notes": "conversation_id is not a conversation of this client",
    "POST /api/clients/{id}/messages": (
        "the client has not written yet: choose a channel"
        "|the client has no identity on that channel and inbox|give the channel with the inbox"
    ),
    "POST /api/clients/{id}/merge": (
        "a card can't be merged into itself|one of the cards was already merged into another"
    ),
    "PATCH /api/business": r"unknown time zone .*|currency .*",
    "GET /api/slots": PERIOD,
    "GET /api/appointments": PERIOD,
    "PATCH /api/appointments/{id}": (
        r"a \w+ appointment can't .*|an appointment that has not started can't be marked \w+"
    ),
    "POST /api/broadcasts/preview": SEGMENT,
    "POST /api/broadcasts": SEGMENT + BROADCAST,
    "PATCH /api/broadcasts/{id}": SEGMENT + BROADCAST,
    "POST /api/broadcasts/{id}/send": "nobody to send to: .*",
    "GET /api/analytics": ANALYTICS_PERIOD,
    "GET /api/analytics/{table}.csv": ANALYTICS_PERIOD,
    "GET /api/analytics/{table}": ANALYTICS_PERIOD,
}


def positive_data_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """schemathesis' positive_data_acceptance, but for the rules of BEYOND_THE_SCHEMA."""
    rules = BEYOND_THE_SCHEMA.get(case.operation.label)
    if rules and response.status_code == 400:
        refusal = json.loads(response.content)
        reasons = [d["error"] for d in refusal.get("details", ())] or [refusal["error"]]
        if all(re.fullmatch(rules, reason) for reason in reasons):
            return None
    return positive_data_acceptance(ctx, response, case)


MODE_CHECKS = {
    GenerationMode.POSITIVE: [*CHECKS, positive_data_accepted],
    GenerationMode.NEGATIVE: [*CHECKS, negative_data_rejection],
}
CONFIG = schemathesis.Config.from_dict(
    # The session cookie and the CSRF header are the test's own, not generated.
    {"generation": {"with-security-parameters": False}}
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@dataclass(frozen=True)
class Known:
    """What exists, by the path parameters that name it, and bodies that do something (a
    sign-in, a booking): examples are aimed at these too."""

    ids: dict[str, tuple[int, ...]]
    files: tuple[dict[str, str], ...]
    bodies: dict[str, tuple[dict[str, Any], ...]]

    def paths(self, path: str) -> list[dict[str, Any]]:
        if path.startswith("/api/attachments/"):
            return list(self.files)
        prefix = path.split("/{id}")[0] if "{id}" in path else None
        return [{"id": known} for known in self.ids.get(prefix, ())] if prefix else []


def known_in(world: World) -> Known:
    sides = (world.mine, world.theirs)
    return Known(
        ids={
            "/api/conversations": tuple(
                sorted(set().union(*(s.ids["conversations"] for s in sides)))
            ),
            "/api/clients": tuple(sorted(set().union(*(s.ids["clients"] for s in sides)))),
            "/api/appointments": tuple(
                sorted(set().union(*(s.ids["appointments"] for s in sides)))
            ),
            "/api/canned": (world.canned, world.canned_gone),
            "/api/broadcasts": (world.draft, world.to_send, world.to_cancel),
            "/api/staff": (world.owner, world.admin, world.olena, world.iryna),
        },
        files=(
            {"channel": "webchat", "inbox": "main", "ref": "rita-photo"},
            {"channel": "webchat", "inbox": "main", "ref": "zoya-photo"},
        ),
        bodies={
            "POST /api/auth/login": ({"email": OWNER, "password": PASSWORD},),
            "POST /api/appointments": (*world.mine.bookings, *world.theirs.bookings),
        },
    )


def signed_in(base_url: str) -> requests.Session:
    """The owner's session, sending the CSRF token with every request as the pages do."""
    session = requests.Session()
    answer = session.post(
        f"{base_url}/api/auth/login", json={"email": OWNER, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    session.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return session


def cases(operation: APIOperation, mode: GenerationMode, known: Known) -> st.SearchStrategy[Case]:
    generated = operation.as_strategy(generation_mode=mode)
    aimed = [
        operation.as_strategy(generation_mode=mode, path_parameters=p)
        for p in known.paths(operation.path)
    ]
    if mode is GenerationMode.POSITIVE:
        aimed += [operation.as_strategy(body=b) for b in known.bodies.get(operation.label, ())]
    return (st.one_of(generated, *aimed) if aimed else generated).filter(asked_once)


def asked_once(case: Case) -> bool:
    """A query parameter sent twice is read once (the first), as HTTP leaves it to the server;
    the document has no repeated parameters, so such a request is no test of it."""
    return not any(isinstance(value, list) for value in (case.query or {}).values())


def check_operation(
    operation: APIOperation,
    mode: GenerationMode,
    known: Known,
    session_of: Callable[[], requests.Session],
) -> str | None:
    """The first way the operation's answers part from the document, if any."""
    found: list[str] = []
    label = operation.label

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(operation, mode, known))
    def check(case: Case) -> None:
        if found:
            return
        timeout = EVENTS_READ_S if label == EVENTS else 10
        try:
            case.call_and_validate(session=session_of(), checks=MODE_CHECKS[mode], timeout=timeout)
        except FailureGroup as exc:
            found.append(f"{label} ({mode.value}):\n{exc}")

    try:
        check()
    except Unsatisfiable:
        return None  # nothing in the operation can be made to break the document
    return found[0] if found else None


def exercise(base_url: str, known: Known) -> list[str]:
    owner = signed_in(base_url)
    schema = schemathesis.openapi.from_url(
        f"{base_url}/api/openapi.json", config=CONFIG, cookies=owner.cookies, timeout=10
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: LAST.index(op.label) if op.label in LAST else -1)
    sessions: dict[str, Callable[[], requests.Session]] = {
        SIGN_OUT: lambda: signed_in(base_url),
        SIGN_IN: requests.Session,
    }
    problems = []
    for operation in operations:
        session_of = sessions.get(operation.label, lambda: owner)
        for mode in GenerationMode:
            problem = check_operation(operation, mode, known, session_of)
            if problem:
                problems.append(problem)
    return problems


class Files:
    """The web chat keeps no files; for the test it serves one photo, so that a file's answer
    is checked too."""

    async def fetch(self, inbox: str, ref: str) -> FetchedFile:
        if (inbox, ref) != ("main", "rita-photo"):
            raise AttachmentUnavailable(ref)
        return FetchedFile(PNG, "image/png", "rita.png")


async def test_every_operation_answers_as_the_document_says(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await build_world(hub)
    monkeypatch.setattr(hub.hub.channels["webchat"], "fetch_attachment", Files().fetch)
    problems = await asyncio.to_thread(exercise, hub.base_url, known_in(world))
    assert not problems, "\n\n".join(problems)


# 500s once, at edges a dozen examples rarely reach: the ends of Python's calendar (with a
# zone's offset or a week added), NUL (PostgreSQL can't keep or compare it), an id beyond
# PostgreSQL's integers. Each is now refused as the document says, or NUL is dropped.
def edges(world: World) -> list[tuple[str, str, dict[str, Any] | None, int]]:
    client, service = world.mine.clients[0], world.manicure
    return [
        ("GET", f"/api/slots?service={service}&from=9999-12-30", None, 400),
        ("GET", "/api/appointments?from=0001-01-01&to=0001-01-02", None, 400),
        ("GET", "/api/analytics?to=0001-01-01", None, 400),
        ("GET", "/api/analytics/volume.csv?from=9999-12-31&to=9999-12-31", None, 400),
        ("GET", f"/api/clients/{client}/timeline?before=0001-01-01T00:00:00%2B05:00", None, 400),
        ("GET", "/api/conversations?q=a%00b", None, 200),
        ("GET", "/api/clients?q=a%00b", None, 200),
        ("GET", "/api/conversations/2147483648/messages", None, 400),
        ("POST", "/api/broadcasts/preview", {"segment": {"service_id": 2**40}}, 400),
        ("POST", "/api/broadcasts/preview", {"segment": {"visited_before": "0001-01-01"}}, 400),
        (
            "POST",
            "/api/appointments",
            {"client_id": client, "service_id": service, "start": "9999-12-31T23:00:00+00:00"},
            400,
        ),
        ("PATCH", f"/api/clients/{client}", {"name": "Ok\u0000sana"}, 200),
    ]


def ask(base_url: str, asked: list[tuple[str, str, dict[str, Any] | None, int]]) -> list[str]:
    """Each request as "METHOD path status", the owner asking."""
    owner = signed_in(base_url)
    answers = []
    for method, path, body, _ in asked:
        status = owner.request(method, base_url + path, json=body, timeout=10).status_code
        answers.append(f"{method} {path} {status}")
    return answers


async def test_the_edges_are_refused_not_crashed_on(hub: RunningHub) -> None:
    asked = edges(await build_world(hub))
    answers = await asyncio.to_thread(ask, hub.base_url, asked)
    assert answers == [f"{method} {path} {status}" for method, path, _, status in asked]
