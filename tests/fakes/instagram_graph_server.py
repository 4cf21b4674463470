"""A fake of Meta's Graph API for Instagram messaging, over real HTTP, and Meta's side of the
webhook (signed notifications, the verification handshake).

Like the real Send API it takes POST /{version}/{account or "me"}/messages with a Bearer token
and a JSON body, and answers {"recipient_id", "message_id"}, or a Graph error JSON:
{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}} (a bad token is code 190,
a text over 1000 bytes or a bad field code 100, the window code 10/2018278, an unavailable
person 551). GET /{version}/me answers the account's user_id and username. Errors can be
scripted with `fail`; every request is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

ACCESS_TOKEN = "IGQWRtest-access-token-0123456789"
APP_SECRET = "app-secret-abcdef0123456789"
VERIFY_TOKEN = "verify-me-7f3a"
ACCOUNT_ID = "17841400000000001"
USERNAME = "oksamyt.salon"
VERSION = "v21.0"
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG")
_SIGN = object()


def new_mid() -> str:
    """A message id shaped like Instagram's (base64 of an item id)."""
    return "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOj" + secrets.token_urlsafe(24)


def igsid() -> str:
    """An Instagram-scoped user id."""
    return str(secrets.randbelow(9 * 10**15) + 10**15)


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    authorization: str | None
    http_status: int = 200
    answer: Any = None


@dataclass
class Failure:
    code: int | None
    subcode: int | None
    http: int
    message: str
    retry_after: str | None
    after: int = 0


def graph_error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException" if code == 190 else "IGApiException",
        "code": code,
        "fbtrace_id": "A" + secrets.token_hex(8),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


class FakeGraph:
    def __init__(self, token: str = ACCESS_TOKEN, version: str = VERSION) -> None:
        self.token = token
        self.version = version
        self.requests: list[Recorded] = []
        self.sent: list[dict[str, Any]] = []
        self.failures: list[Failure] = []
        self.unavailable: set[str] = set()
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeGraph:
        app = web.Application()
        app.router.add_post("/{version}/{account}/messages", self._send)
        app.router.add_get("/{version}/me", self._me)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # Scripting -------------------------------------------------------------------------

    def fail(
        self,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http: int = 400,
        message: str = "An error occurred",
        retry_after: str | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """`times` sends fail like this, once `after` more have gone through."""
        for n in range(times):
            self.failures.append(
                Failure(code, subcode, http, message, retry_after, after if n == 0 else 0)
            )

    def sends(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    # The API ---------------------------------------------------------------------------

    def _record(self, request: web.Request, body: Any) -> Recorded:
        recorded = Recorded(
            request.method, request.path, body, request.headers.get("Authorization")
        )
        self.requests.append(recorded)
        return recorded

    def _answer(
        self, recorded: Recorded, answer: Any, status: int = 200, **kw: Any
    ) -> web.Response:
        recorded.http_status, recorded.answer = status, answer
        return web.json_response(answer, status=status, **kw)

    def _token_error(self, recorded: Recorded, request: web.Request) -> web.Response | None:
        given = recorded.authorization or ""
        if "access_token" in request.query:
            return self._answer(recorded, graph_error(100, "Use the Authorization header"), 400)
        if not given.startswith("Bearer ") or not hmac.compare_digest(
            given[len("Bearer ") :].encode(), self.token.encode()
        ):
            error = graph_error(190, "Invalid OAuth access token - Cannot parse access token")
            return self._answer(recorded, error, 400)
        if request.match_info["version"] != self.version:
            return self._answer(recorded, graph_error(2635, "Unknown API version"), 400)
        return None

    async def _me(self, request: web.Request) -> web.Response:
        recorded = self._record(request, dict(request.query))
        denied = self._token_error(recorded, request)
        if denied is not None:
            return denied
        return self._answer(recorded, {"user_id": ACCOUNT_ID, "username": USERNAME, "id": "1"})

    async def _send(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        recorded = self._record(request, body)
        denied = self._token_error(recorded, request)
        if denied is not None:
            return denied
        if self.failures and self.failures[0].after > 0:
            self.failures[0].after -= 1
        elif self.failures:
            failure = self.failures.pop(0)
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
            if failure.code is None:
                return self._answer(recorded, {"error": "upstream"}, failure.http, headers=headers)
            error = graph_error(failure.code, failure.message, failure.subcode)
            return self._answer(recorded, error, failure.http, headers=headers)
        problem = _invalid(body)
        if problem is not None:
            return self._answer(recorded, graph_error(100, problem), 400)
        recipient = body["recipient"]["id"]
        if recipient in self.unavailable:
            error = graph_error(551, "This person isn't available right now.", 1545041)
            return self._answer(recorded, error, 400)
        mid = new_mid()
        self.sent.append({**body, "message_id": mid})
        return self._answer(recorded, {"recipient_id": recipient, "message_id": mid})


def _invalid(body: Any) -> str | None:
    """Why Meta would refuse this Send API body (code 100), or None."""
    if not isinstance(body, dict):
        return "Invalid parameter"
    recipient = body.get("recipient")
    if not isinstance(recipient, dict) or not recipient.get("id"):
        return "(#100) The parameter recipient is required"
    message = body.get("message")
    if not isinstance(message, dict):
        return "(#100) The parameter message is required"
    kind = body.get("messaging_type", "RESPONSE")
    if kind not in MESSAGING_TYPES:
        return "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}"
    if (kind == "MESSAGE_TAG") != ("tag" in body):
        return "(#100) A tag goes with messaging_type MESSAGE_TAG"
    if "tag" in body and body["tag"] != "HUMAN_AGENT":
        return "(#100) Instagram supports only the HUMAN_AGENT tag"
    text, attachment = message.get("text"), message.get("attachment")
    if (text is None) == (attachment is None):
        return "(#100) Exactly one of message[text] and message[attachment] is required"
    if text is not None and (not isinstance(text, str) or not text.strip()):
        return "(#100) message[text] must be a non-empty string"
    if text is not None and len(text.encode()) > 1000:
        return "(#100) Length of param message[text] must be less than or equal to 1000"
    if attachment is not None:
        if not isinstance(attachment, dict) or attachment.get("type") not in (
            "image",
            "video",
            "audio",
            "file",
            "template",
            "like_heart",
            "MEDIA_SHARE",
        ):
            return "(#100) Invalid attachment type"
        url = (attachment.get("payload") or {}).get("url", "")
        if not str(url).startswith("https://"):
            return "(#100) Invalid attachment URL"
    replies = message.get("quick_replies")
    if replies is not None:
        if not isinstance(replies, list) or not 1 <= len(replies) <= 13:
            return "(#100) param message[quick_replies] must have 1 to 13 elements"
        for reply in replies:
            if not isinstance(reply, dict) or reply.get("content_type") != "text":
                return "(#100) quick_reply content_type must be text"
            title = reply.get("title")
            if not isinstance(title, str) or not 1 <= len(title) <= 20:
                return "(#100) quick_reply title must be 1 to 20 characters"
            if not reply.get("payload"):
                return "(#100) quick_reply payload is required"
    return None


# Meta calling the hub ---------------------------------------------------------------------


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_webhook(
    base_url: str,
    path: str,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = APP_SECRET,
    signature: Any = _SIGN,
) -> tuple[int, str]:
    """POST a notification as Meta does: JSON signed in X-Hub-Signature-256 (signature=None
    leaves the header out; a string is sent as is)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature is _SIGN:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = str(signature)
    async with aiohttp.ClientSession() as http:
        async with http.post(base_url + path, data=body, headers=headers) as response:
            return response.status, await response.text()


async def verify(
    base_url: str, path: str, *, token: str = VERIFY_TOKEN, mode: str = "subscribe"
) -> tuple[int, str, str]:
    """Meta's subscription handshake; returns the status, the body and the challenge sent."""
    challenge = str(secrets.randbelow(10**9))
    params = {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": challenge}
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + path, params=params) as response:
            return response.status, await response.text(), challenge


def now_ms() -> int:
    return int(time.time() * 1000)


def notification(*events: dict[str, Any], account_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """The envelope of Instagram messaging notifications."""
    return {
        "object": "instagram",
        "entry": [{"id": account_id, "time": now_ms(), "messaging": list(events)}],
    }


def event(
    sender: str,
    *,
    timestamp: int | None = None,
    account_id: str = ACCOUNT_ID,
    **body: Any,
) -> dict[str, Any]:
    """One messaging event from a client (`message=...`, `read=...`, `postback=...`)."""
    return {
        "sender": {"id": sender},
        "recipient": {"id": account_id},
        "timestamp": timestamp if timestamp is not None else now_ms(),
        **body,
    }


def text_event(
    sender: str, text: str, *, mid: str | None = None, timestamp: int | None = None
) -> dict[str, Any]:
    return event(sender, timestamp=timestamp, message={"mid": mid or new_mid(), "text": text})


def echo_event(recipient: str, text: str, mid: str | None = None) -> dict[str, Any]:
    """Our own message, echoed back by the "messages" field."""
    return {
        "sender": {"id": ACCOUNT_ID},
        "recipient": {"id": recipient},
        "timestamp": now_ms(),
        "message": {"mid": mid or new_mid(), "text": text, "is_echo": True},
    }


def read_event(sender: str, mid: str) -> dict[str, Any]:
    return event(sender, read={"mid": mid})
