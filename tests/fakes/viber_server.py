"""A fake Viber REST bot API, over real HTTP, and helpers that play Viber calling the hub.

    async with FakeViber() as fake:
        settings.viber_api_url = fake.base_url
        fake.fail(status=12)                 # the next send_message answers status 12
        fake.fail(http=500, times=3)         # three HTTP 500s
        fake.fail(status=12, after=1)        # the call after next answers status 12
        fake.not_subscribed.add(USER_ID)     # sends to them answer status 6 "Not subscribed"
        fake.route_to(hub_base_url)          # where set_webhook's check call really goes
        fake.sent                            # accepted send_message bodies (+ their token)
        fake.requests                        # every request: method, body, token header

It serves, as chatapi.viber.com/pa does, POST with a JSON body and HTTP 200 with a JSON
`status` (0 = ok) for everything it understands:

- `/set_webhook` {url, event_types, send_name, send_photo}: the url must be https (else status
  1 invalidUrl); before answering, Viber calls the url once with a signed
  {"event": "webhook", …} callback, and anything but a 200 there makes set_webhook fail
  (status 1). An empty url removes the webhook. Answers {status, status_message,
  event_types, chat_hostname}.
- `/send_message` {receiver, sender{name ≤ 28, avatar}, type, text ≤ 7000, keyboard,
  min_api_version, tracking_data, media…}: answers {status 0, "ok", message_token (a 64-bit
  integer), chat_hostname, billing_status}; 4 missingData / 3 badData for a bad body, 5/6 for
  a receiver who is not registered / not subscribed, a scripted failure first if any.
- `/get_account_info`: the bot's account (id, name, uri, webhook, event_types, …).

Every method checks `X-Viber-Auth-Token`: missing → status 2 "missing_auth_token", wrong →
status 2 "invalidAuthToken".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

AUTH_TOKEN = "4453b6ac12345678-e02c5f12174805f9-daec9cbb5448c51f"  # a test token: never logged
BOT_NAME = "Salon"
CHAT_HOSTNAME = "SN-CHAT-05_"
MAX_TEXT = 7000
MAX_REQUEST = 30 * 1024  # "Maximum total JSON size of the request is 30kb"
MESSAGE_TYPES = {
    "text",
    "picture",
    "video",
    "file",
    "location",
    "contact",
    "sticker",
    "url",
    "rich_media",
}
ACTION_TYPES = {"reply", "open-url", "location-picker", "share-phone", "none"}
STATUS_MESSAGES = {
    1: "invalidUrl",
    2: "invalidAuthToken",
    3: "badData",
    4: "missingData",
    5: "receiverNotRegistered",
    6: "Not subscribed",
    10: "webhookNotSet",
    12: "Too many requests",
}
_SIGN = object()  # post_callback's default: sign the body with the token

# Message tokens are 64-bit integers, past what a JavaScript number holds exactly.
_tokens = itertools.count(5_741_311_803_571_721_087)


def next_token() -> int:
    return next(_tokens)


def sign(body: bytes, token: str = AUTH_TOKEN) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Recorded:
    method: str
    body: Any
    token: str | None
    answer: dict[str, Any] | None = None
    http_status: int = 200


@dataclass
class Failure:
    status: int | None = None  # Viber's JSON status
    http: int | None = None  # or an HTTP error instead
    message: str | None = None
    retry_after: str | None = None
    after: int = 0  # send_message calls to let through first


@dataclass
class FakeViber:
    token: str = AUTH_TOKEN
    name: str = BOT_NAME
    requests: list[Recorded] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    # The check calls made to the hub: (url called, the hub's HTTP status or the error).
    checks: list[tuple[str, int | str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    not_subscribed: set[str] = field(default_factory=set)
    not_registered: set[str] = field(default_factory=set)
    # Check the webhook on set_webhook, as Viber does (off: set it without calling).
    verify: bool = True
    webhook: str = ""
    event_types: list[str] = field(default_factory=list)
    base_url: str = ""
    runner: web.AppRunner | None = None
    _route: str | None = None
    _routed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> FakeViber:
        app = web.Application()
        app.router.add_post("/set_webhook", self._set_webhook)
        app.router.add_post("/send_message", self._send_message)
        app.router.add_post("/get_account_info", self._account_info)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._routed.set()  # release a set_webhook still waiting for a route
        if self.runner is not None:
            await self.runner.cleanup()

    # Scripting -------------------------------------------------------------------------

    def fail(
        self,
        *,
        status: int | None = None,
        http: int | None = None,
        message: str | None = None,
        retry_after: str | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """`times` send_message calls fail like this, once `after` more have gone through."""
        for n in range(times):
            self.failures.append(
                Failure(status, http, message, retry_after, after=after if n == 0 else 0)
            )

    def route_to(self, base_url: str) -> None:
        """The hub is reachable here: the check call goes to this base + the webhook's path
        (in tests the public URL is a name that doesn't resolve)."""
        self._route = base_url.rstrip("/")
        self._routed.set()

    def calls(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method]

    # The API ---------------------------------------------------------------------------

    async def _read(self, request: web.Request, method: str) -> tuple[Recorded, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = Recorded(method, body, request.headers.get("X-Viber-Auth-Token"))
        self.requests.append(recorded)
        return recorded, raw

    def _auth_error(self, recorded: Recorded) -> dict[str, Any] | None:
        if not recorded.token:
            return {"status": 2, "status_message": "missing_auth_token"}
        if not hmac.compare_digest(recorded.token, self.token):
            return {"status": 2, "status_message": "invalidAuthToken"}
        return None

    def _answer(self, recorded: Recorded, answer: dict[str, Any]) -> web.Response:
        recorded.answer = answer
        return web.json_response(answer)

    async def _set_webhook(self, request: web.Request) -> web.Response:
        recorded, _ = await self._read(request, "set_webhook")
        denied = self._auth_error(recorded)
        if denied:
            return self._answer(recorded, denied)
        body = recorded.body
        if not isinstance(body, dict) or "url" not in body:
            return self._answer(recorded, {"status": 4, "status_message": "missingData"})
        url = str(body["url"])
        if url == "":
            self.webhook, self.event_types = "", []
            return self._answer(recorded, {"status": 0, "status_message": "ok"})
        if not url.startswith("https://"):
            return self._answer(recorded, {"status": 1, "status_message": "invalidUrl"})
        if self.verify and not await self._check(url):
            answer = {"status": 1, "status_message": f"Failed to connect to {url}"}
            return self._answer(recorded, answer)
        self.webhook = url
        self.event_types = list(body.get("event_types") or [])
        self.webhooks.append(body)
        answer = {
            "status": 0,
            "status_message": "ok",
            "event_types": self.event_types,
            "chat_hostname": CHAT_HOSTNAME,
        }
        return self._answer(recorded, answer)

    async def _check(self, url: str) -> bool:
        """Viber's call to a new webhook: a signed "webhook" event, which must answer 200."""
        try:
            await asyncio.wait_for(self._routed.wait(), 10)
        except TimeoutError:
            self.checks.append((url, "no route"))
            return False
        if self._route is None:
            self.checks.append((url, "no route"))
            return False
        parts = urlsplit(url)
        target = self._route + parts.path + (f"?{parts.query}" if parts.query else "")
        event = webhook_event()
        try:
            status, _ = await post_callback(target, "", event, token=self.token)
        except (aiohttp.ClientError, OSError) as exc:
            self.checks.append((url, type(exc).__name__))
            return False
        self.checks.append((url, status))
        return status == 200

    async def _send_message(self, request: web.Request) -> web.Response:
        recorded, raw = await self._read(request, "send_message")
        denied = self._auth_error(recorded)
        if denied:
            return self._answer(recorded, denied)
        if self.failures and self.failures[0].after > 0:
            self.failures[0].after -= 1
        elif self.failures:
            failure = self.failures.pop(0)
            if failure.http is not None:
                recorded.http_status = failure.http
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
                return web.json_response(
                    {"error": "Internal Server Error"}, status=failure.http, headers=headers
                )
            status = failure.status or 0
            answer = {
                "status": status,
                "status_message": failure.message or STATUS_MESSAGES.get(status, "failure"),
                "message_token": next_token(),
                "chat_hostname": CHAT_HOSTNAME,
            }
            return self._answer(recorded, answer)
        problem = self._invalid(recorded.body, raw)
        if problem is not None:
            return self._answer(recorded, problem)
        receiver = recorded.body["receiver"]
        if receiver in self.not_registered:
            return self._answer(recorded, _error(5))
        if receiver in self.not_subscribed:
            return self._answer(recorded, _error(6))
        token = next_token()
        self.sent.append({**recorded.body, "message_token": token})
        answer = {
            "status": 0,
            "status_message": "ok",
            "message_token": token,
            "chat_hostname": CHAT_HOSTNAME,
            "billing_status": 1,
        }
        return self._answer(recorded, answer)

    def _invalid(self, body: Any, raw: bytes) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            return _error(3)
        if len(raw) > MAX_REQUEST:
            return _error(3, "The request is larger than 30KB")
        sender = body.get("sender")
        if not body.get("receiver") or not isinstance(sender, dict) or not sender.get("name"):
            return _error(4)
        if len(str(sender["name"])) > 28:
            return _error(3, "sender.name is longer than 28 characters")
        kind = body.get("type")
        if kind not in MESSAGE_TYPES:
            return _error(3)
        if kind == "text" and not (isinstance(body.get("text"), str) and body["text"]):
            return _error(4)
        if kind == "text" and len(body["text"]) > MAX_TEXT:
            return _error(3, f"text is longer than {MAX_TEXT} characters")
        if kind in ("picture", "url", "video", "file") and not body.get("media"):
            return _error(4)
        board = body.get("keyboard")
        if board is not None and not _keyboard_ok(board):
            return _error(3, "invalid keyboard")
        return None

    async def _account_info(self, request: web.Request) -> web.Response:
        recorded, _ = await self._read(request, "get_account_info")
        denied = self._auth_error(recorded)
        if denied:
            return self._answer(recorded, denied)
        answer = {
            "status": 0,
            "status_message": "ok",
            "id": "pa:75346594275468546724",
            "name": self.name,
            "uri": "salon-test",
            "icon": "https://example.com/icon.jpg",
            "background": "https://example.com/background.jpg",
            "category": "Beauty",
            "subcategory": "Beauty Salon",
            "location": {"lon": 30.5234, "lat": 50.4501},
            "country": "UA",
            "webhook": self.webhook,
            "event_types": self.event_types,
            "subscribers_count": 0,
            "members": [{"id": "01234567890A=", "name": "Owner", "avatar": "", "role": "admin"}],
        }
        return self._answer(recorded, answer)


def _error(status: int, message: str | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "status_message": message or STATUS_MESSAGES.get(status, "failure"),
        "chat_hostname": CHAT_HOSTNAME,
    }


def _keyboard_ok(board: Any) -> bool:
    if not isinstance(board, dict) or board.get("Type", "keyboard") != "keyboard":
        return False
    buttons = board.get("Buttons")
    if not isinstance(buttons, list) or not buttons:
        return False
    for button in buttons:
        if not isinstance(button, dict):
            return False
        if button.get("ActionType", "reply") not in ACTION_TYPES:
            return False
        if not 1 <= int(button.get("Columns", 6)) <= 6 or not 1 <= int(button.get("Rows", 1)) <= 2:
            return False
        if button.get("ActionType", "reply") == "reply" and not button.get("ActionBody"):
            return False
    return True


# Viber calling the hub --------------------------------------------------------------------


async def post_callback(
    base_url: str,
    path: str,
    event: dict[str, Any] | bytes,
    *,
    token: str = AUTH_TOKEN,
    signature: Any = _SIGN,
) -> tuple[int, bytes]:
    """POST a callback as Viber does: the JSON body signed with the bot token in
    `X-Viber-Content-Signature` (signature=None leaves the header out; a string is sent as is).
    Returns the HTTP status and the body of the answer."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    if signature is _SIGN:
        headers["X-Viber-Content-Signature"] = sign(body, token)
    elif signature is not None:
        headers["X-Viber-Content-Signature"] = str(signature)
    async with aiohttp.ClientSession() as http:
        async with http.post(base_url + path, data=body, headers=headers) as response:
            return response.status, await response.read()


def _now_ms() -> int:
    return int(time.time() * 1000)


def viber_user(
    user_id: str,
    name: str | None = "Олена Коваль",
    *,
    language: str = "uk",
    country: str = "UA",
    api_version: int = 10,
) -> dict[str, Any]:
    """The user object of callbacks ("name" and "avatar" come when the bot asks send_name and
    send_photo)."""
    user: dict[str, Any] = {
        "id": user_id,
        "avatar": "https://media-direct.cdn.viber.com/download_photo?dlid=abc",
        "language": language,
        "country": country,
        "api_version": api_version,
    }
    if name is not None:
        user["name"] = name
    return user


def user_id() -> str:
    """A Viber user id: 16 random bytes, base64 (e.g. "01234567890A=" in the docs)."""
    return base64.b64encode(secrets.token_bytes(16)).decode()


def message_event(
    sender: dict[str, Any], message: dict[str, Any], *, token: int | None = None
) -> dict[str, Any]:
    """The "message" callback (a user wrote to the bot)."""
    return {
        "event": "message",
        "timestamp": _now_ms(),
        "chat_hostname": CHAT_HOSTNAME,
        "message_token": token if token is not None else next_token(),
        "sender": sender,
        "message": message,
        "silent": False,
    }


def text_message(
    sender: dict[str, Any], text: str, *, token: int | None = None, tracking_data: str = ""
) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "text", "text": text}
    if tracking_data:
        message["tracking_data"] = tracking_data
    return message_event(sender, message, token=token)


def picture_message(
    sender: dict[str, Any],
    media: str,
    *,
    caption: str = "",
    file_name: str = "IMG_20261105.jpg",
    file_size: int = 245_760,
) -> dict[str, Any]:
    return message_event(
        sender,
        {
            "type": "picture",
            "text": caption,
            "media": media,
            "thumbnail": media + "&thumbnail=1",
            "file_name": file_name,
            "file_size": file_size,
        },
    )


def contact_message(sender: dict[str, Any], name: str, phone_number: str) -> dict[str, Any]:
    return message_event(
        sender,
        {
            "type": "contact",
            "contact": {
                "name": name,
                "phone_number": phone_number,
                "avatar": "https://media-direct.cdn.viber.com/download_photo?dlid=xyz",
            },
        },
    )


def conversation_started(
    user: dict[str, Any], *, context: str | None = None, subscribed: bool = False
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "conversation_started",
        "timestamp": _now_ms(),
        "chat_hostname": CHAT_HOSTNAME,
        "message_token": next_token(),
        "type": "open",
        "user": user,
        "subscribed": subscribed,
    }
    if context is not None:
        event["context"] = context
    return event


def subscribed(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "subscribed",
        "timestamp": _now_ms(),
        "chat_hostname": CHAT_HOSTNAME,
        "user": user,
        "message_token": next_token(),
    }


def unsubscribed(user_id: str) -> dict[str, Any]:
    return {
        "event": "unsubscribed",
        "timestamp": _now_ms(),
        "chat_hostname": CHAT_HOSTNAME,
        "user_id": user_id,
        "message_token": next_token(),
    }


def receipt(event: str, message_token: int, user_id: str, desc: str = "") -> dict[str, Any]:
    """ "delivered", "seen" or "failed" (with a `desc`) for a message the bot sent."""
    body: dict[str, Any] = {
        "event": event,
        "timestamp": _now_ms(),
        "chat_hostname": CHAT_HOSTNAME,
        "message_token": message_token,
        "user_id": user_id,
    }
    if event == "failed":
        body["desc"] = desc or "failure description"
    return body


def webhook_event() -> dict[str, Any]:
    """The call Viber makes to a webhook it was just given."""
    return {
        "event": "webhook",
        "timestamp": _now_ms(),
        "chat_hostname": CHAT_HOSTNAME,
        "message_token": next_token(),
    }
