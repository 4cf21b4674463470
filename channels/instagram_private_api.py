"""The synchronous side of Instagram's private mode: one instagrapi `Client`, and what its
errors mean for the channel.

Everything here blocks (instagrapi is built on `requests`) and the `Client` is not
thread-safe: the channel calls it only from its one dedicated worker thread.

Choices made on instagrapi 3.2:
- `request_timeout` (a sleep instagrapi takes before every request) is ours to set: a couple
  of seconds in production, 0 in tests; `session_retry_total=0`, so a 429 is not retried
  inside instagrapi with long sleeps but comes back to us and pauses the channel.
- `with_challenge_flow=False` and challenge/password handlers that raise: instagrapi's
  defaults call `input()`, which would block the worker thread forever.
- The inbox is read with `private_request` on the same endpoints `direct_threads` uses, and
  parsed by channels/instagram_private_items.py (lenient, item by item).
- Login is `login_legacy` (accounts/login/): instagrapi itself moves on to the newer
  "CAA" flow when Instagram answers that the legacy one is not for this account.
- `api_url` (tests only) points every private/public request at a local fake: instagrapi
  builds `https://i.instagram.com/api/...` URLs itself, so a transport adapter rewrites them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import requests
from instagrapi import Client
from instagrapi import exceptions as ig
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

INBOX_PARAMS = {
    "visual_message_return_type": "unseen",
    "thread_message_limit": "10",
    "persistentBadging": "true",
    "limit": "20",
    "is_prefetching": "false",
    "fetch_reason": "initial_snapshot",
}
THREAD_PARAMS = {"visual_message_return_type": "unseen", "direction": "older", "limit": "20"}
# Session settings that describe this process's transport, not the login: ours win.
TRANSPORT_KEYS = (
    "request_timeout",
    "session_retry_total",
    "session_retry_backoff_factor",
    "session_retry_statuses",
    "private_transport",
    "public_transport",
)


class OwnerActionNeeded(Exception):
    """A challenge or password prompt instagrapi would have asked for on the console."""


def _refuse_code(*_args: Any, **_kwargs: Any) -> str:
    raise OwnerActionNeeded("Instagram asked for a security code")


def _refuse_password(*_args: Any, **_kwargs: Any) -> str:
    raise OwnerActionNeeded("Instagram asked to change the password")


class _RewriteAdapter(HTTPAdapter):
    """Sends every request to `base` (a local fake) instead, same path and query; cookies
    and headers stay as they were prepared for the real host."""

    def __init__(self, base: str) -> None:
        super().__init__(max_retries=0)
        parts = urlsplit(base)
        self.scheme, self.netloc = parts.scheme, parts.netloc

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        if parts.netloc != self.netloc:  # every host: a test must never reach the internet
            request = request.copy()
            request.url = urlunsplit((self.scheme, self.netloc, parts.path, parts.query, ""))
        return super().send(request, *args, **kwargs)


@dataclass(frozen=True)
class ApiOptions:
    request_timeout: float = 2.0
    transport: Literal["curl", "requests"] = "curl"
    api_url: str | None = None  # tests only


def _quiet_library_logs() -> None:
    """instagrapi logs every URL it calls at INFO (twice): a line per request, every minute.
    Warnings still show; a level the operator set explicitly is left alone."""
    for name in ("instagrapi", "private_request", "public_request"):
        library_log = logging.getLogger(name)
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.WARNING)


def build_client(options: ApiOptions) -> Client:
    _quiet_library_logs()
    client = Client(
        request_timeout=options.request_timeout,
        session_retry_total=0,
        private_transport=options.transport,
        with_challenge_flow=False,
    )
    client.challenge_code_handler = _refuse_code
    client.change_password_handler = _refuse_password
    _apply_transport(client, options)
    return client


def _apply_transport(client: Client, options: ApiOptions) -> None:
    """(Re)apply our transport choices: instagrapi re-mounts its adapters on every
    `set_settings`, and a saved session carries the transport it was made with."""
    client.set_retry_config(
        request_timeout=options.request_timeout,
        session_retry_total=0,
        private_transport=options.transport,
        public_transport="requests",
    )
    if options.api_url:
        adapter = _RewriteAdapter(options.api_url)
        for session in (client.private, client.public):
            session.mount("https://", adapter)
            session.mount("http://", adapter)


def session_settings(client: Client) -> dict[str, Any]:
    """What a restart needs to skip the login (cookies, tokens, device ids): a secret."""
    settings = client.get_settings()
    for key in TRANSPORT_KEYS:
        settings.pop(key, None)
    return settings


def restore(client: Client, settings: dict[str, Any], options: ApiOptions) -> bool:
    """Load a saved session; True when it holds a logged-in user."""
    client.set_settings(settings)
    _apply_transport(client, options)
    return client.user_id is not None


# A fresh login keeps the device this account already logged in from: a new phone at every
# login is one of the things Instagram's checks look at.
DEVICE_KEYS = ("uuids", "device_settings", "user_agent", "country", "country_code", "locale")


def login(
    client: Client,
    username: str,
    password: str,
    options: ApiOptions,
    previous: dict[str, Any] | None = None,
) -> None:
    device = {k: v for k, v in (previous or {}).items() if k in DEVICE_KEYS}
    client.set_settings(device)
    _apply_transport(client, options)
    if not client.login_legacy(username, password):
        raise ig.BadCredentials("Instagram did not accept the login")


def viewer_id(client: Client) -> str | None:
    return str(client.user_id) if client.user_id is not None else None


def inbox(client: Client, *, pending: bool, cursor: str | None = None) -> dict[str, Any]:
    if pending:
        params: dict[str, str] = {
            "visual_message_return_type": "unseen",
            "persistentBadging": "true",
            "is_prefetching": "false",
        }
        endpoint = "direct_v2/pending_inbox/"
    else:
        params = dict(INBOX_PARAMS)
        endpoint = "direct_v2/inbox/"
    if cursor:
        params.update({"cursor": cursor, "direction": "older", "fetch_reason": "page_scroll"})
    return client.private_request(endpoint, params=params)


def thread_page(client: Client, thread_id: str, cursor: str | None) -> dict[str, Any]:
    params = dict(THREAD_PARAMS)
    if cursor:
        params["cursor"] = cursor
    return client.private_request(f"direct_v2/threads/{thread_id}/", params=params)


def _sent_item_id(client: Client, exc: Exception | None) -> str:
    """The id of the item a broadcast created. instagrapi parses the answer with a strict
    model; when only that parsing fails the message *was* sent, and sending it again would
    double it, so the id is read from the raw answer."""
    payload = client.last_json.get("payload") if isinstance(client.last_json, dict) else None
    item_id = payload.get("item_id") if isinstance(payload, dict) else None
    if item_id:
        return str(item_id)
    if exc is not None:
        raise exc
    raise ig.ClientError("Instagram answered the send without an item id")


def send_text(client: Client, thread_id: str, text: str) -> str:
    thread = int(thread_id)  # a ValueError here: nothing was sent
    client.last_json = {}
    try:
        message = client.direct_send(text, thread_ids=[thread])
    except (ValueError, KeyError, TypeError) as exc:  # the answer's parsing, not the send
        return _sent_item_id(client, exc)
    return str(message.id) if message.id else _sent_item_id(client, None)


def send_photo(client: Client, thread_id: str, path: Path) -> str:
    thread = int(thread_id)
    client.last_json = {}
    try:
        message = client.direct_send_photo(path, thread_ids=[thread])
    except (ValueError, KeyError, TypeError) as exc:
        return _sent_item_id(client, exc)
    return str(message.id) if message.id else _sent_item_id(client, None)


def approve(client: Client, thread_id: str) -> None:
    client.direct_pending_approve(int(thread_id))


def mark_seen(client: Client, thread_id: str, item_id: str) -> None:
    client.direct_message_seen(int(thread_id), int(item_id))


# What an error means -----------------------------------------------------------------

TroubleKind = Literal["owner", "login", "rate", "transient", "refused"]


@dataclass(frozen=True)
class Trouble:
    kind: TroubleKind
    reason: str


CHALLENGE_REASON = (
    "Instagram asks to confirm the login in the app (challenge); open Instagram on the "
    "phone, confirm it was you, then restart the hub"
)
TWO_FACTOR_REASON = (
    "Instagram asks for a two-factor code; turn two-factor authentication off for this "
    "account or log in once from the hub's network, then restart the hub"
)
BAD_PASSWORD_REASON = (
    "Instagram refused the username or password; fix INSTAGRAM_USERNAME/INSTAGRAM_PASSWORD "
    "and restart the hub"
)
SUSPENDED_REASON = "Instagram suspended or disabled the account; check it in the app"


def classify(exc: BaseException) -> Trouble:
    """What the channel should do about an error from instagrapi (or the network)."""
    if isinstance(exc, ig.AccountSuspended):
        return Trouble("owner", SUSPENDED_REASON)
    if isinstance(exc, ig.TwoFactorRequired):
        return Trouble("owner", TWO_FACTOR_REASON)
    if isinstance(exc, ig.ChallengeError | ig.CaptchaChallengeRequired | OwnerActionNeeded):
        return Trouble("owner", CHALLENGE_REASON)
    if isinstance(exc, ig.BadPassword | ig.BadCredentials | ig.ProxyAddressIsBlocked):
        return Trouble("owner", BAD_PASSWORD_REASON)
    if isinstance(exc, ig.LoginRequired | ig.ClientLoginRequired | ig.ReloginAttemptExceeded):
        return Trouble("login", "Instagram ended the session (login_required)")
    if isinstance(exc, ig.FeedbackRequired):
        return Trouble("rate", f"Instagram blocked the action (feedback_required): {_short(exc)}")
    if isinstance(exc, ig.PleaseWaitFewMinutes):
        return Trouble("rate", "Instagram asks to wait a few minutes (too many requests)")
    if isinstance(exc, ig.RateLimitError | ig.ClientThrottledError | ig.SentryBlock):
        return Trouble("rate", f"Instagram rate limit ({type(exc).__name__})")
    if isinstance(
        exc,
        ig.DirectMessageRequestsDisabled
        | ig.InvalidTargetUser
        | ig.DirectThreadNotFound
        | ig.ClientNotFoundError,
    ):
        return Trouble("refused", f"Instagram refused: {_short(exc)}")
    if isinstance(exc, ig.ClientUnauthorizedError | ig.ClientForbiddenError):
        return Trouble("login", f"Instagram refused the session ({type(exc).__name__})")
    return Trouble("transient", f"Instagram unreachable or failing: {type(exc).__name__}")


def _short(exc: BaseException) -> str:
    # Instagram's own message (never a cookie or a password), one line, bounded.
    text = str(getattr(exc, "message", "") or exc or type(exc).__name__)
    return " ".join(text.split())[:200]
