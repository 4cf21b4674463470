"""A fake Twilio REST API (the Messages resource and MMS media), over real HTTP, and helpers that
play Twilio calling the hub's webhooks.

    async with FakeTwilio() as fake:
        settings.twilio_api_url = fake.base_url
        fake.fail(429, retry_after=7)          # the next create answers 429 (then as usual)
        fake.fail(400, code=21610)             # Twilio's error body for that code
        fake.fail(500, after=1)                # the create after next answers 500
        fake.created                           # the Message resources created, in order
        fake.requests                          # every request: path, form, whether auth passed
        ref = fake.add_media(b"...", "image/jpeg")   # an MMS media URL for an inbound message

It serves, as api.twilio.com does:

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form-encoded), HTTP basic auth with
  the account SID and auth token: 401 with error 20003 on wrong credentials, 404 (20404) for
  another account's path; To required (21604) and a valid E.164 number (21211), From or
  MessagingServiceSid (21603), Body or MediaUrl (21602), Body up to 1600 characters (21617);
  201 with the Message resource (sid "SM" + 32 hex, status "queued", num_segments as a
  string, dates in RFC 2822, subresource_uris…).
- `GET /2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}/Media/{MediaSid}`: the media's
  bytes with its content type (basic auth, as with media authentication on).

Errors have Twilio's body: {"code", "message", "more_info", "status"} (+ "detail" on 401).
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from channels.sms_segments import count_segments
from channels.twilio_signature import compute_signature

ACCOUNT_SID = "AC" + "5ef8732a3c49700934481addd5ce1659"
AUTH_TOKEN = "f3e1c0d9b8a7e6f5d4c3b2a1e0f9d8c7"  # a test token: the logs must never show it
FROM_NUMBER = "+15017122661"
E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_BODY_CHARS = 1600

ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}
DEFAULT_CODE = {429: 20429, 500: 20500, 503: 20500, 401: 20003, 404: 20404}


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Recorded:
    method: str
    path: str
    form: list[tuple[str, str]]
    authorized: bool
    status: int = 0

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.form if k == name), None)


@dataclass
class Failure:
    status: int
    code: int
    message: str | None
    retry_after: str | None
    after: int = 0  # creates to let through first


@dataclass
class Media:
    content: bytes
    content_type: str


@dataclass
class FakeTwilio:
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    requests: list[Recorded] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    media: dict[tuple[str, str], Media] = field(default_factory=dict)
    # Set to answer without num_segments (or with this count) instead of Twilio's own count.
    num_segments: str | None = "auto"
    base_url: str = ""
    runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeTwilio:
        app = web.Application()
        prefix = "/2010-04-01/Accounts/{account}"
        app.router.add_post(prefix + "/Messages.json", self._create)
        app.router.add_get(prefix + "/Messages/{message}/Media/{media}", self._media)
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
        status: int,
        *,
        code: int | None = None,
        message: str | None = None,
        retry_after: int | str | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """The next `times` creates answer this error (after the credentials check), once
        `after` more creates have gone through."""
        code = code or DEFAULT_CODE.get(status, 20500)
        wait = None if retry_after is None else str(retry_after)
        self.failures.extend(
            Failure(status, code, message, wait, after=after if n == 0 else 0) for n in range(times)
        )

    def add_media(self, content: bytes, content_type: str) -> str:
        """Store an MMS media item; its URL as Twilio puts it in MediaUrlN."""
        message, media = sid("MM"), sid("ME")
        self.media[(message, media)] = Media(content, content_type)
        account = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}"
        return f"{account}/Messages/{message}/Media/{media}"

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/Messages.json")]

    # The API ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    def _error(self, code: int, headers: dict[str, str] | None = None, **fmt: str) -> web.Response:
        status, message = ERRORS.get(code, (400, "Error"))
        return self._error_body(status, code, message.format(**fmt), headers)

    def _error_body(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        if code == 20003:
            body["detail"] = "Your AccountSid or AuthToken was incorrect."
        return web.json_response(body, status=status, headers=headers)

    async def _create(self, request: web.Request) -> web.Response:
        form = [(k, str(v)) for k, v in (await request.post()).items()]
        record = Recorded("POST", request.path, form, self._authorized(request))
        self.requests.append(record)
        response = self._answer_create(request, record)
        record.status = response.status
        return response

    def _answer_create(self, request: web.Request, record: Recorded) -> web.Response:
        if not record.authorized:
            return self._error(20003)
        if request.match_info["account"] != self.account_sid:
            return self._error(20404)
        if self.failures and self.failures[0].after > 0:
            self.failures[0].after -= 1
        elif self.failures:
            f = self.failures.pop(0)
            headers = {"Retry-After": f.retry_after} if f.retry_after else None
            known = ERRORS.get(f.code, (f.status, "Error"))[1]
            text = f.message or known.format(to=record.get("To") or "")
            return self._error_body(f.status, f.code, text, headers)
        to = record.get("To")
        if not to:
            return self._error(21604)
        if not E164_RE.match(to):
            return self._error(21211, to=to)
        sender = record.get("From")
        service = record.get("MessagingServiceSid")
        if not sender and not service:
            return self._error(21603)
        body = record.get("Body") or ""
        media = [v for k, v in record.form if k == "MediaUrl"]
        if not body and not media:
            return self._error(21602)
        if len(body) > MAX_BODY_CHARS:
            return self._error(21617)
        return web.json_response(self._resource(to, sender, service, body, media), status=201)

    def _resource(
        self, to: str, sender: str | None, service: str | None, body: str, media: list[str]
    ) -> dict[str, Any]:
        message_sid = sid("MM" if media else "SM")
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}"
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            # With a Messaging Service Twilio picks the sender later: "from" is null.
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": str(count_segments(body))
            if self.num_segments == "auto"
            else self.num_segments,
            "price": None,
            "price_unit": "USD",
            "sid": message_sid,
            "status": "accepted" if service and not sender else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
        if resource["num_segments"] is None:
            del resource["num_segments"]
        self.created.append(resource)
        return resource

    async def _media(self, request: web.Request) -> web.StreamResponse:
        record = Recorded("GET", request.path, [], self._authorized(request))
        self.requests.append(record)
        if not record.authorized:
            record.status = 401
            return self._error(20003)
        item = self.media.get((request.match_info["message"], request.match_info["media"]))
        if item is None or request.match_info["account"] != self.account_sid:
            record.status = 404
            return self._error(20404)
        record.status = 200
        return web.Response(body=item.content, content_type=item.content_type)


# Playing Twilio towards the hub -----------------------------------------------------------


def inbound_params(
    message_sid: str,
    sender: str,
    body: str,
    *,
    to: str = FROM_NUMBER,
    media: list[tuple[str, str]] | None = None,
    opt_out_type: str | None = None,
    account_sid: str = ACCOUNT_SID,
) -> list[tuple[str, str]]:
    """An incoming-message webhook's parameters, as Twilio's docs list them."""
    media = media or []
    params = [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", message_sid),
        ("NumMedia", str(len(media))),
        ("ToCity", ""),
        ("FromZip", ""),
        ("SmsSid", message_sid),
        ("FromState", ""),
        ("SmsStatus", "received"),
        ("FromCity", ""),
        ("Body", body),
        ("FromCountry", "UA"),
        ("To", to),
        ("ToZip", ""),
        ("NumSegments", str(count_segments(body))),
        ("MessageSid", message_sid),
        ("AccountSid", account_sid),
        ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]
    for n, (url, mime) in enumerate(media):
        params += [(f"MediaContentType{n}", mime), (f"MediaUrl{n}", url)]
    if opt_out_type:
        params.append(("OptOutType", opt_out_type))
    return params


def status_params(
    message_sid: str,
    status: str,
    *,
    error_code: int | None = None,
    to: str = "+380671234567",
    sender: str = FROM_NUMBER,
    account_sid: str = ACCOUNT_SID,
) -> list[tuple[str, str]]:
    """A status callback's parameters (ErrorCode on undelivered/failed)."""
    params = [
        ("AccountSid", account_sid),
        ("ApiVersion", "2010-04-01"),
        ("From", sender),
        ("MessageSid", message_sid),
        ("MessageStatus", status),
        ("SmsSid", message_sid),
        ("SmsStatus", status),
        ("To", to),
    ]
    if error_code is not None:
        params.append(("ErrorCode", str(error_code)))
    return params


async def post_webhook(
    hub_url: str,
    path: str,
    params: list[tuple[str, str]],
    *,
    signed_base: str | None = None,
    auth_token: str = AUTH_TOKEN,
    signature: str | None = None,
    sign: Any = None,
) -> tuple[int, str, str]:
    """POST a form to the hub as Twilio does, signed over `signed_base` + path (the public URL
    Twilio knows; the hub's own URL by default). `sign(url, params)` replaces our signer (the
    twilio package's, in one test); `signature` forces a header value ("" sends none).

    Returns (status, content type, body)."""
    signed_url = (signed_base or hub_url) + path
    if signature is None:
        signature = (
            sign(signed_url, params) if sign else compute_signature(auth_token, signed_url, params)
        )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature:
        headers["X-Twilio-Signature"] = signature
    async with aiohttp.ClientSession() as session:
        async with session.post(hub_url + path, data=urlencode(params), headers=headers) as resp:
            return resp.status, resp.content_type, await resp.text()
