"""A fake Telegram Bot API server, spoken to by the real aiogram `Bot`.

    async with FakeTelegram() as fake:
        bot = fake.add_bot("123456:AAE…", "salon_bot")
        fake.push_update(bot.token, {...})            # served by getUpdates
        fake.fail("sendMessage", 429, retry_after=7)  # the next call answers 429
        fake.fail("sendMessage", 500, after=1)        # the call after next answers 500
        fake.calls_of("sendMessage")                  # what the client sent, in order

It serves `POST|GET /bot<token>/<method>` with parameters as multipart or urlencoded form
(what aiogram sends; complex values JSON-serialized) or JSON, and file downloads at
`GET /file/bot<token>/<file_path>`. Answers have the real envelope: `{"ok": true, "result":
…}` or `{"ok": false, "error_code": …, "description": …, "parameters": {"retry_after": …}}`
with the real HTTP status and descriptions ("Unauthorized", "Forbidden: bot was blocked by
the user", "Bad Request: chat not found", "Too Many Requests: retry after N", …). Method names
are case-insensitive, as in the real API.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_TEXT = 4096
MAX_DOWNLOAD = 20 * 1024 * 1024

DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class Call:
    token: str
    method: str  # as the API spells it (sendMessage)
    params: dict[str, Any]
    status: int
    at: float  # the fake's clock when the call arrived


@dataclass
class Failure:
    status: int
    description: str
    retry_after: int | None = None
    after: int = 0  # calls of the method to let through first


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    size: int
    servable: bool = True  # False: getFile knows it, the file server answers 404


@dataclass
class FakeBot:
    token: str
    id: int
    username: str
    first_name: str
    webhook_url: str = ""
    webhook_secret: str | None = None
    allowed_updates: list[str] | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 100_000
    # The last message id of each chat: Telegram numbers a chat's messages in one sequence,
    # the client's and the bot's alike.
    last_message_id: dict[int, int] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def user(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


METHODS = {
    name.lower(): name
    for name in (
        "getMe",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "getUpdates",
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "answerCallbackQuery",
        "getFile",
    )
}


class FakeTelegram:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_poll_wait: float = 0.5
    ) -> None:
        self.clock = clock
        self.max_poll_wait = max_poll_wait  # a long poll waits at most this (a short timeout)
        self.bots: dict[str, FakeBot] = {}
        self.calls: list[Call] = []
        self.failures: dict[str, deque[Failure]] = defaultdict(deque)
        self.blocked: set[int] = set()
        self.missing_chats: set[int] = set()
        self.files: dict[str, StoredFile] = {}
        self.downloads: list[str] = []
        self.answered: set[str] = set()
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    # Lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        # No access log: it would be Telegram's log, and it holds the tokens (in the paths).
        self.runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, access_log=None
        )
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

    def add_bot(self, token: str, username: str, first_name: str = "Salon") -> FakeBot:
        bot = FakeBot(
            token=token, id=int(token.split(":")[0]), username=username, first_name=first_name
        )
        self.bots[token] = bot
        return bot

    def push_update(self, token: str, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is given when it has none)."""
        bot = self.bots[token]
        if "update_id" not in update:
            bot.next_update_id += 1
            update = {"update_id": bot.next_update_id, **update}
        self.saw(token, update)
        bot.updates.append(update)
        bot.arrived.set()
        return update

    def saw(self, token: str, update: dict[str, Any]) -> dict[str, Any]:
        """Note the ids of a client's message the bot is told about (by webhook or polling),
        so the bot's next message in that chat gets a later id, as in Telegram."""
        bot = self.bots[token]
        query = update.get("callback_query") or {}
        for key in ("message", "edited_message"):
            message = update.get(key) or query.get(key)
            if isinstance(message, dict) and "chat" in message and "message_id" in message:
                chat = int(message["chat"]["id"])
                last = bot.last_message_id.get(chat, 0)
                bot.last_message_id[chat] = max(last, int(message["message_id"]))
        return update

    def fail(
        self,
        method: str,
        status: int,
        description: str | None = None,
        *,
        retry_after: int | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """The next `times` calls of `method` answer this error, once `after` more calls of it
        have gone through."""
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}"
                if status == 429
                else DESCRIPTIONS.get(status, "Error")
            )
        for n in range(times):
            self.failures[method.lower()].append(
                Failure(status, description, retry_after, after=after if n == 0 else 0)
            )

    def add_file(
        self,
        file_id: str,
        content: bytes,
        file_path: str,
        *,
        size: int | None = None,
        servable: bool = True,
    ) -> StoredFile:
        """A file getFile knows (file ids are per bot in Telegram; one namespace here)."""
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=f"AQAD{file_id[-8:]}",
            file_path=file_path,
            content=content,
            size=len(content) if size is None else size,
            servable=servable,
        )
        self.files[file_id] = stored
        return stored

    def calls_of(
        self, method: str, *, ok: bool | None = None, token: str | None = None
    ) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method.lower() == method.lower()
            and (ok is None or (c.status == 200) == ok)
            and (token is None or c.token == token)
        ]

    # The API ---------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        bot = self.bots.get(token)
        method = METHODS.get(request.match_info["method"].lower())
        params = await _params(request)
        name = method or request.match_info["method"]
        if bot is None:
            return self._record(token, name, params, _error(401, "Unauthorized"))
        if method is None:
            return self._record(token, name, params, _error(404, "Not Found"))
        queued = self.failures.get(method.lower())
        if queued and queued[0].after > 0:
            queued[0].after -= 1
        elif queued:
            failure = queued.popleft()
            response = _error(failure.status, failure.description, failure.retry_after)
            return self._record(token, method, params, response)
        handler = getattr(self, f"_{_snake(method)}")
        at = self.clock()
        response = await handler(bot, params)
        return self._record(token, method, params, response, at)

    def _record(
        self,
        token: str,
        method: str,
        params: dict[str, Any],
        response: web.Response,
        at: float | None = None,
    ) -> web.Response:
        at = self.clock() if at is None else at
        self.calls.append(Call(token, method, params, response.status, at))
        return response

    async def _get_me(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        return _ok(
            {
                **bot.user(),
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _set_webhook(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        secret = params.get("secret_token")
        if secret is not None and not SECRET_RE.match(str(secret)):
            return _error(400, "Bad Request: secret token contains unallowed characters")
        bot.webhook_url = str(params.get("url") or "")
        bot.webhook_secret = secret
        if "allowed_updates" in params:
            bot.allowed_updates = _json(params["allowed_updates"])
        return _ok(True, "Webhook was set" if bot.webhook_url else "Webhook was deleted")

    async def _delete_webhook(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        had = bool(bot.webhook_url)
        bot.webhook_url = ""
        if _flag(params.get("drop_pending_updates")):
            bot.updates.clear()
        return _ok(True, "Webhook was deleted" if had else "Webhook is already deleted")

    async def _get_webhook_info(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        return _ok(
            {
                "url": bot.webhook_url,
                "has_custom_certificate": False,
                "pending_update_count": len(bot.updates),
            }
        )

    async def _get_updates(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        if bot.webhook_url:
            return _error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if "allowed_updates" in params:
            bot.allowed_updates = _json(params["allowed_updates"])
        if offset:
            # An offset confirms every update before it: they are gone for good.
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        wait = min(timeout, self.max_poll_wait)
        if not bot.updates and wait > 0:
            bot.arrived.clear()
            try:
                await asyncio.wait_for(bot.arrived.wait(), wait)
            except TimeoutError:
                pass
        return _ok(bot.updates[:limit])

    async def _send_message(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text") or "")
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > MAX_TEXT:
            return _error(400, "Bad Request: message is too long")
        return self._message(bot, params, {"text": text})

    async def _send_photo(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        photo = params.get("photo")
        if not photo:
            return _error(400, "Bad Request: there is no photo in the request")
        sizes = [
            {
                "file_id": f"AgACAgIAAxk{n}",
                "file_unique_id": f"AQADp{n}",
                "width": w,
                "height": h,
                "file_size": w * h // 10,
            }
            for n, (w, h) in enumerate(((90, 67), (320, 240), (1280, 960)))
        ]
        return self._message(bot, params, {"photo": sizes, **_caption(params)})

    async def _send_document(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        document = params.get("document")
        if not document:
            return _error(400, "Bad Request: there is no document in the request")
        name = str(document).rsplit("/", 1)[-1] or "file"
        body = {
            "document": {
                "file_id": "BQACAgIAAxkBAAIB",
                "file_unique_id": "AgADdoc",
                "file_name": name,
                "mime_type": "application/octet-stream",
                "file_size": 1024,
            },
            **_caption(params),
        }
        return self._message(bot, params, body)

    def _message(
        self, bot: FakeBot, params: dict[str, Any], content: dict[str, Any]
    ) -> web.Response:
        try:
            chat_id = int(params.get("chat_id") or "")
        except ValueError:
            return _error(400, "Bad Request: chat not found")
        if chat_id in self.missing_chats:
            return _error(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            return _error(403, "Forbidden: bot was blocked by the user")
        message_id = bot.last_message_id.get(chat_id, 0) + 1
        bot.last_message_id[chat_id] = message_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": bot.user(),
            "chat": _chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        markup = params.get("reply_markup")
        if markup:
            message["reply_markup"] = _json(markup)
        return _ok(message)

    async def _answer_callback_query(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        query = str(params.get("callback_query_id") or "")
        if not query or query in self.answered:
            return _error(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self.answered.add(query)
        return _ok(True)

    async def _get_file(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        stored = self.files.get(str(params.get("file_id") or ""))
        if stored is None:
            return _error(400, "Bad Request: invalid file_id")
        if stored.size > MAX_DOWNLOAD:
            return _error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": stored.size,
                "file_path": stored.file_path,
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if request.match_info["token"] not in self.bots:
            return web.Response(status=404, text="Not Found")
        for stored in self.files.values():
            if stored.file_path == path and stored.servable:
                self.downloads.append(path)
                return web.Response(body=stored.content, content_type="application/octet-stream")
        return web.Response(status=404, text="Not Found")


# Helpers ----------------------------------------------------------------------------------


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
        return params
    form = await request.post()
    for key, value in form.items():
        params[key] = value.file.read() if isinstance(value, FileField) else value
    return params


def _ok(result: Any, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": True, "result": result}
    if description:
        body["description"] = description
    return web.json_response(body)


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


def _json(value: Any) -> Any:
    # Form fields carry complex values JSON-serialized, as the Bot API expects.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _caption(params: dict[str, Any]) -> dict[str, Any]:
    return {"caption": str(params["caption"])} if params.get("caption") else {}


def _chat(chat_id: int) -> dict[str, Any]:
    if chat_id < 0:
        return {"id": chat_id, "title": "Salon regulars", "type": "supergroup"}
    return {"id": chat_id, "first_name": "Client", "type": "private"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
