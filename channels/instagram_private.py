"""Instagram Direct through the private (mobile app) API, with instagrapi: the hub logs in as
the salon's own account, polls its inbox and answers from it. Risky by nature (Instagram
challenges and blocks such logins); the official mode is the safe one.
docs/channels/instagram.md ("Private mode") has the settings, the choices and how to recover.

The poller runs in one hub process (`ctx.run_exclusive("instagram-private:<inbox>")`):
- Session: instagrapi's settings (cookies, tokens, device ids) are kept with
  `ctx.save_state(..., "session")`, in the database, so a restart, and the other hub
  processes, reuse them: no second login. The first inbox request verifies a loaded session;
  the password is used only without a session or when Instagram ends it, and never more than
  once per backoff period (15 min, doubling with each failure to 6 h), counted in the
  "login" state document so restarts can't turn into a login loop either.
- Polling: direct_v2/inbox and direct_v2/pending_inbox every interval ± jitter. Each thread
  has a cursor (the last item's timestamp), saved after its messages are published: published
  first, cursor second, so a crash re-publishes (deduplicated by item id) but loses nothing.
  The first connection only records its time: history before it is not imported. Items the
  account wrote itself (our sends, the owner on the phone) are not client messages: skipped.
- Pauses: a challenge, a two-factor prompt, a refused password, a suspended account wait for
  the owner (until a restart); rate limits (429, "please wait", feedback_required) back off
  15 min doubling to 6 h. `status()` tells which, and until when; sends during a pause are
  transient failures (the dispatcher retries later).

instagrapi is synchronous and its Client is not thread-safe: every call runs on one
dedicated worker thread of this channel. Nothing here logs the session or the password.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import random
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
from instagrapi import Client
from PIL import Image
from pydantic import SecretStr

from channels import instagram_private_api as api
from channels.base import Channel, ChannelContext, ChannelStatus, PermanentSendError
from channels.instagram_private_items import IgItem, IgThread, parse_item, parse_thread
from channels.instagram_private_items import to_inbound as item_to_inbound
from channels.layout import split_text as split_parts
from hub.config import Settings
from hub.messages import ContactHints, DeliveryState, DeliveryStatus, OutboundMessage

log = logging.getLogger(__name__)

CHANNEL = "instagram"
MINUTE = 60.0
HOUR = 3600.0
BACKOFF_BASE = 15 * MINUTE  # rate limits and logins
BACKOFF_CAP = 6 * HOUR
TRANSIENT_CAP = 15 * MINUTE
# A send waits out a pause (raising, so the dispatcher retries) while the pause is young;
# once the owner has left a challenge unanswered this long, sends fail for good instead.
HOLD_SENDS_FOR = HOUR
MAX_INBOX_PAGES = 3
MAX_THREAD_PAGES = 5
MAX_CURSORS = 2000
MAX_JOURNAL = 300
MAX_TEXT = 1000  # Instagram cuts longer direct texts
MAX_PHOTO = 8 * 1024 * 1024
PHOTO_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
T = TypeVar("T")


class InstagramPaused(Exception):
    """The channel is paused (challenge, rate limit): a send is retried later."""


class InstagramUnavailable(Exception):
    """A transient failure talking to Instagram: the dispatcher retries."""


@dataclass(frozen=True)
class PrivateConfig:
    username: str
    password: SecretStr
    poll_interval: float = 60.0
    poll_jitter: float = 20.0
    api: api.ApiOptions = field(default_factory=api.ApiOptions)

    def __repr__(self) -> str:  # the password stays out of any repr that reaches a log
        return f"PrivateConfig(username={self.username!r})"


@dataclass
class Pause:
    kind: Literal["owner", "rate", "login", "error"]
    reason: str
    since: float
    until: float | None  # None: waits for the owner (a restart)
    level: int = 0

    def as_doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "since": self.since,
            "until": self.until,
            "level": self.level,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Pause | None:
        if not doc or doc.get("kind") not in ("owner", "rate", "login", "error"):
            return None
        until = doc.get("until")
        return cls(
            kind=doc["kind"],
            reason=str(doc.get("reason") or ""),
            since=float(doc.get("since") or 0),
            until=float(until) if until is not None else None,
            level=int(doc.get("level") or 0),
        )


def backoff(level: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """base, 2·base, 4·base … up to cap (level 0 is base)."""
    return min(cap, base * (2 ** max(0, min(level, 30))))


def fingerprint(username: str, password: str, salt: str) -> str:
    """Tells whether the credentials changed since the last login, without keeping them."""
    digest = hashlib.pbkdf2_hmac(
        "sha256", f"{username}\x00{password}".encode(), salt.encode(), 50_000
    )
    return digest.hex()[:32]


def _iso(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


class PrivateInstagramChannel(Channel):
    name = CHANNEL

    def __init__(
        self,
        ctx: ChannelContext,
        inbox: str,
        config: PrivateConfig,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(ctx, inbox)
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.lease_name = f"instagram-private:{inbox}"
        self._executor: ThreadPoolExecutor | None = None
        self._client: Client | None = None
        self._viewer: str | None = None
        self._logged_in_at: float | None = None  # by this process, for loop detection
        self._pause: Pause | None = None
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._transient_failures = 0
        self.begun = 0  # poll cycles started (tests wait on it with `cycles`)
        self.cycles = 0  # completed poll cycles
        self.logins = 0  # password logins this process made

    def __repr__(self) -> str:
        return f"PrivateInstagramChannel(inbox={self.inbox!r}, user={self.config.username!r})"

    # Lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instagram")
        # A pause that waited for the owner ends with this restart; a rate limit does not.
        stored = Pause.from_doc(await self.ctx.load_state(CHANNEL, self.inbox, "pause"))
        if stored is not None and stored.kind != "owner":
            self._pause = stored
        else:
            await self._save_pause(None)
        self._task = asyncio.create_task(self._lease_loop(), name=f"instagram-{self.inbox}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._executor is not None:
            # A request in flight finishes on its own; nothing waits for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._client = None

    def wake(self) -> None:
        """Poll now instead of at the next interval (a pause still holds)."""
        self._wake.set()

    def status(self) -> ChannelStatus:
        pause = self._pause
        if pause is not None:
            state = "error" if pause.kind == "error" else "paused"
            return ChannelStatus(state, pause.reason, _iso(pause.until))
        if not self._leading:
            return ChannelStatus("ok", "polled by another hub process, or about to start")
        return ChannelStatus("ok", "")

    # The poller ------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.ctx.run_exclusive(self.lease_name, self._poll_forever)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("instagram %s: poller lease failed (%s)", self.inbox, exc)
            await self.sleep(5.0)

    async def _poll_forever(self) -> None:
        self._leading = True
        try:
            while True:
                self.begun += 1
                delay = await self._cycle()
                self.cycles += 1
                await self._wait(delay)
        finally:
            self._leading = False

    async def _wait(self, delay: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self.sleep(max(0.0, delay)))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        self._wake.clear()

    def _interval(self) -> float:
        return self.config.poll_interval + self.config.poll_jitter * self.jitter()

    async def _cycle(self) -> float:
        """One round: connect if needed, poll; the seconds until the next round."""
        now = self.clock()
        # A sender in another process may have hit a rate limit meanwhile.
        shared = Pause.from_doc(await self.ctx.load_state(CHANNEL, self.inbox, "pause"))
        if shared is not None and (self._pause is None or shared.since > self._pause.since):
            self._pause = shared
            self._client = None if shared.kind == "owner" else self._client
        pause = self._pause
        if pause is not None:
            if pause.until is None:
                return HOUR  # waits for the owner; woken only to re-show the status
            if now < pause.until:
                return pause.until - now
        try:
            if self._client is None and not await self._connect():
                return self._retry_delay()
            await self._poll()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._trouble(exc, during="poll")
            return self._retry_delay()
        await self._resume()
        return self._interval()

    def _retry_delay(self) -> float:
        pause = self._pause
        if pause is None:
            return self._interval()
        if pause.until is None:
            return HOUR
        return max(1.0, pause.until - self.clock())

    async def _resume(self) -> None:
        """A good poll: any pause is over, the backoffs start again from the bottom."""
        self._transient_failures = 0
        if self._pause is not None:
            log.info("instagram %s: polling again", self.inbox)
            self._pause = None
            await self._save_pause(None)
        login = await self.ctx.load_state(CHANNEL, self.inbox, "login")
        if login and login.get("failures"):
            await self.ctx.save_state(CHANNEL, self.inbox, "login", {**login, "failures": 0})

    # Connecting ------------------------------------------------------------------------

    async def _connect(self) -> bool:
        """A client with a session: the saved one (verified by the poll that follows), else
        a password login if the backoff allows one now. False: paused, try later."""
        options = self.config.api
        saved = await self.ctx.load_state(CHANNEL, self.inbox, "session") or {}
        settings = saved.get("settings")
        if settings and saved.get("username") == self.config.username:
            client = api.build_client(options)
            if await self._run(api.restore, client, settings, options):
                self._client = client
                self._viewer = api.viewer_id(client)
                return True
        return await self._login(settings or saved.get("device"))

    async def _login(self, previous: dict[str, Any] | None) -> bool:
        now = self.clock()
        doc = await self.ctx.load_state(CHANNEL, self.inbox, "login") or {}
        salt = str(doc.get("salt") or secrets.token_hex(8))
        password = self.config.password.get_secret_value()
        mark = fingerprint(self.config.username, password, salt)
        same = doc.get("fingerprint") == mark
        failures = int(doc.get("failures") or 0) if same else 0
        last = float(doc.get("last_attempt") or 0) if same else 0.0
        if last and now < last + backoff(failures):
            until = last + backoff(failures)
            reason = doc.get("last_error") or "waiting before logging in again"
            await self._set_pause(
                "login", f"{reason}; next login at {_iso(until):%H:%M} UTC", until
            )
            return False
        # Counted before trying: a crash in the middle still counts as an attempt.
        attempt = {"salt": salt, "fingerprint": mark, "last_attempt": now}
        await self.ctx.save_state(CHANNEL, self.inbox, "login", {**attempt, "failures": failures})
        client = api.build_client(self.config.api)
        self.logins += 1
        log.info("instagram %s: logging in as %s", self.inbox, self.config.username)
        try:
            await self._run(
                api.login, client, self.config.username, password, self.config.api, previous
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            trouble = api.classify(exc)
            await self.ctx.save_state(
                CHANNEL,
                self.inbox,
                "login",
                {**attempt, "failures": failures + 1, "last_error": trouble.reason},
            )
            await self._trouble(exc, during="login")
            return False
        self._client = client
        self._viewer = api.viewer_id(client)
        self._logged_in_at = now
        await self._save_session(client)
        log.info("instagram %s: logged in", self.inbox)
        return True

    async def _save_session(self, client: Client) -> None:
        settings = await self._run(api.session_settings, client)
        doc = {"username": self.config.username, "settings": settings, "saved_at": self.clock()}
        await self.ctx.save_state(CHANNEL, self.inbox, "session", doc)

    async def _forget_session(self) -> None:
        self._client = None
        saved = await self.ctx.load_state(CHANNEL, self.inbox, "session")
        if saved:
            # Keep the device ids: the next login should come from the same "phone".
            device = {
                k: v for k, v in (saved.get("settings") or {}).items() if k in api.DEVICE_KEYS
            }
            await self.ctx.save_state(
                CHANNEL,
                self.inbox,
                "session",
                {"username": saved.get("username"), "device": device},
            )

    # Trouble ---------------------------------------------------------------------------

    async def _trouble(self, exc: BaseException, *, during: str) -> None:
        trouble = api.classify(exc)
        now = self.clock()
        log.warning(
            "instagram %s: %s failed: %s (%s)",
            self.inbox,
            during,
            trouble.reason,
            type(exc).__name__,
        )
        if trouble.kind == "owner":
            self._client = None
            await self._set_pause("owner", trouble.reason, None)
        elif trouble.kind == "rate":
            level = self._pause.level + 1 if self._pause and self._pause.kind == "rate" else 0
            until = now + backoff(level)
            reason = f"{trouble.reason}; polling again at {_iso(until):%H:%M} UTC"
            await self._set_pause("rate", reason, until, level)
        elif trouble.kind == "login":
            await self._forget_session()
            if self._logged_in_at is not None and now - self._logged_in_at < BACKOFF_BASE:
                # Logged in moments ago and already thrown out: a loop in the making.
                doc = await self.ctx.load_state(CHANNEL, self.inbox, "login") or {}
                failures = int(doc.get("failures") or 0) + 1
                await self.ctx.save_state(
                    CHANNEL,
                    self.inbox,
                    "login",
                    {**doc, "failures": failures, "last_error": trouble.reason},
                )
            self._logged_in_at = None
            # The next cycle logs in, when the login backoff allows it.
            self._pause = None
        else:
            self._transient_failures += 1
            wait = backoff(self._transient_failures - 1, self.config.poll_interval, TRANSIENT_CAP)
            self._pause = Pause("error", trouble.reason, now, now + wait)

    async def _set_pause(
        self,
        kind: Literal["owner", "rate", "login"],
        reason: str,
        until: float | None,
        level: int = 0,
    ) -> None:
        self._pause = Pause(kind, reason, self.clock(), until, level)
        await self._save_pause(self._pause)

    async def _save_pause(self, pause: Pause | None) -> None:
        await self.ctx.save_state(CHANNEL, self.inbox, "pause", pause.as_doc() if pause else {})

    # Polling ---------------------------------------------------------------------------

    async def _poll(self) -> None:
        cursors = await self.ctx.load_state(CHANNEL, self.inbox, "cursors") or {}
        if "since" not in cursors:
            # First connection: history stays where it is; only what comes from now on.
            cursors = {"since": int(self.clock() * 1_000_000), "threads": {}, "pending": []}
            await self.ctx.save_state(CHANNEL, self.inbox, "cursors", cursors)
        threads, viewer = await self._threads(cursors, pending=False)
        pending, _ = await self._threads(cursors, pending=True)
        self._viewer = viewer or self._viewer
        cursors["pending"] = [t.thread_id for t in pending][:200]
        # Saved before any message is published: the bot may answer a request at once, and
        # its send must know to accept the request first.
        await self._save_cursors(cursors)
        for thread in [*threads, *pending]:
            await self._take(thread, cursors)
        await self._save_cursors(cursors)
        if self._client is not None:
            await self._refresh_session(self._client)

    async def _threads(
        self, cursors: dict[str, Any], *, pending: bool
    ) -> tuple[list[IgThread], str | None]:
        """The threads of the inbox (or the requests), newest activity first; another page
        while the last thread of this one still has something new."""
        client = self._require_client()
        found: list[IgThread] = []
        viewer: str | None = None
        cursor: str | None = None
        for _ in range(MAX_INBOX_PAGES):
            data = await self._run(api.inbox, client, pending=pending, cursor=cursor)
            viewer_pk = (data.get("viewer") or {}).get("pk") if isinstance(data, dict) else None
            viewer = str(viewer_pk) if viewer_pk else viewer
            box = data.get("inbox") if isinstance(data, dict) else None
            box = box if isinstance(box, dict) else {}
            page = [t for t in map(parse_thread, box.get("threads") or []) if t is not None]
            found.extend(page)
            cursor = box.get("oldest_cursor")
            if not (box.get("has_older") and cursor and page):
                break
            if not self._has_news(page[-1], cursors):
                break  # threads come newest first: the next page has nothing new
        return found, viewer

    @staticmethod
    def _floor(thread_id: str, cursors: dict[str, Any]) -> int:
        return int((cursors.get("threads") or {}).get(thread_id) or cursors.get("since") or 0)

    def _has_news(self, thread: IgThread, cursors: dict[str, Any]) -> bool:
        return (thread.last_activity_at or 0) > self._floor(thread.thread_id, cursors)

    async def _take(self, thread: IgThread, cursors: dict[str, Any]) -> None:
        floor = self._floor(thread.thread_id, cursors)
        items = await self._items_after(thread, floor)
        if not items:
            return
        users = {u.pk: u for u in thread.users}
        last_client_item: IgItem | None = None
        threads = cursors.setdefault("threads", {})
        client = self._client_of(thread)
        for item in items:
            if item.user_id != self._viewer:
                msg = item_to_inbound(item, thread, inbox=self.inbox, users=users)
                if msg is not None:
                    await self.ctx.publish(msg)
                    last_client_item = item
            elif client is not None:
                # The account's own message: a send of the hub's (the hub drops it) or the
                # owner writing from the phone (a staff reply there; the bot steps back).
                msg = item_to_inbound(item, thread, inbox=self.inbox, users=users)
                if msg is not None:
                    await self.ctx.publish(
                        msg.model_copy(
                            update={"own": True, "sender_id": client, "contact": ContactHints()}
                        )
                    )
            # Published (or not a client's): the cursor moves past it.
            threads[thread.thread_id] = item.timestamp
        await self._save_cursors(cursors)
        if last_client_item is not None:
            await self._mark_seen(thread.thread_id, last_client_item.item_id)

    def _client_of(self, thread: IgThread) -> str | None:
        """The one person on the other side of a one-to-one thread (None in a group, where
        the account's own messages have no single client to belong to)."""
        others = [u.pk for u in thread.users if u.pk != self._viewer]
        return others[0] if len(others) == 1 and not thread.is_group else None

    async def _items_after(self, thread: IgThread, floor: int) -> list[IgItem]:
        """The thread's items newer than `floor`, oldest first; older pages are fetched when
        the inbox's preview (the last few items) does not reach back to the floor."""
        raw_items = list(thread.items)
        cursor, has_older = thread.oldest_cursor, thread.has_older
        pages = 0
        while True:
            parsed = [i for i in map(_parsed, raw_items) if i is not None]
            reaches = any(i.timestamp <= floor for i in parsed)
            if reaches or not has_older or not cursor or pages >= MAX_THREAD_PAGES:
                break
            data = await self._run(
                api.thread_page, self._require_client(), thread.thread_id, cursor
            )
            page = parse_thread((data or {}).get("thread"))
            if page is None or not page.items:
                break
            raw_items.extend(page.items)
            cursor, has_older = page.oldest_cursor, page.has_older
            pages += 1
        unique = {i.item_id: i for i in map(_parsed, raw_items) if i is not None}
        newer = [i for i in unique.values() if i.timestamp > floor]
        return sorted(newer, key=lambda i: (i.timestamp, i.item_id))

    async def _mark_seen(self, thread_id: str, item_id: str) -> None:
        try:
            await self._run(api.mark_seen, self._require_client(), thread_id, item_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if api.classify(exc).kind in ("owner", "rate", "login"):
                raise
            log.info("instagram %s: marking %s seen failed (%s)", self.inbox, thread_id, exc)

    async def _save_cursors(self, cursors: dict[str, Any]) -> None:
        threads = cursors.get("threads") or {}
        if len(threads) > MAX_CURSORS:
            newest = sorted(threads.items(), key=lambda kv: kv[1])[-MAX_CURSORS:]
            cursors["threads"] = dict(newest)
        await self.ctx.save_state(CHANNEL, self.inbox, "cursors", cursors)

    async def _refresh_session(self, client: Client) -> None:
        """Instagram rotates some cookies; keep the newest so a restart reuses them."""
        settings = await self._run(api.session_settings, client)
        saved = await self.ctx.load_state(CHANNEL, self.inbox, "session") or {}
        if saved.get("settings") != settings:
            doc = {"username": self.config.username, "settings": settings, "saved_at": self.clock()}
            await self.ctx.save_state(CHANNEL, self.inbox, "session", doc)

    # Sending ---------------------------------------------------------------------------

    async def send(self, msg: OutboundMessage) -> DeliveryStatus:
        journal = await self.ctx.load_state(CHANNEL, self.inbox, "sent") or {}
        done: list[str] = list(journal.get(msg.id) or [])
        steps = self._steps(msg)
        if not steps:
            raise PermanentSendError("nothing to send: no text and no link or picture")
        if len(done) >= len(steps):
            return self._sent(msg, done)  # went out before a restart: never twice
        await self._check_pause()
        client = await self._sending_client()
        pending = (await self.ctx.load_state(CHANNEL, self.inbox, "cursors") or {}).get("pending")
        try:
            if msg.chat_id in (pending or []):
                # A message request: answering it accepts it, as the app does.
                await self._run(api.approve, client, msg.chat_id)
            for n, step in enumerate(steps):
                if n < len(done):
                    continue
                done.append(await self._send_step(client, msg.chat_id, step))
                await self._journal(msg.id, done)
        except asyncio.CancelledError:
            raise
        except (InstagramPaused, InstagramUnavailable):
            raise
        except Exception as exc:
            return await self._send_failed(msg, exc)
        return self._sent(msg, done)

    def _sent(self, msg: OutboundMessage, item_ids: list[str]) -> DeliveryStatus:
        return DeliveryStatus(
            outbound_id=msg.id,
            channel=CHANNEL,
            status=DeliveryState.sent,
            provider_message_id=item_ids[-1] if item_ids else None,
        )

    def _steps(self, msg: OutboundMessage) -> list[tuple[str, str]]:
        """("text", text) and ("photo", url) parts. Images go as photos; other files as
        their link, in the text (the private API has no document messages)."""
        text = msg.text.strip()
        photos: list[str] = []
        for attachment in msg.attachments:
            url = attachment.url if attachment.url and attachment.url.startswith("http") else None
            if url is None:
                continue
            if attachment.kind == "image":
                photos.append(url)
            else:
                text = f"{text}\n{url}".strip()
        if msg.quick_replies:
            choices = "\n".join(f"{n}) {q.text}" for n, q in enumerate(msg.quick_replies, 1))
            text = f"{text}\n{choices}".strip()
        parts = [("text", t) for t in split_text(text)]
        return [*parts, *(("photo", u) for u in photos)]

    async def _send_step(self, client: Client, thread_id: str, step: tuple[str, str]) -> str:
        kind, value = step
        if kind == "text":
            return await self._run(api.send_text, client, thread_id, value)
        path = await self._download(value)
        if path is None:  # not a picture we can upload: its link still gets there
            return await self._run(api.send_text, client, thread_id, value)
        try:
            return await self._run(api.send_photo, client, thread_id, path)
        finally:
            path.unlink(missing_ok=True)

    async def _download(self, url: str) -> Path | None:
        """The picture in a temporary file (instagrapi uploads from a path), or None."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        try:
            async with self._http.get(url) as resp:
                suffix = PHOTO_TYPES.get(resp.content_type)
                if resp.status != 200 or suffix is None or (resp.content_length or 0) > MAX_PHOTO:
                    return None
                body = await resp.content.read(MAX_PHOTO + 1)
        except (aiohttp.ClientError, TimeoutError):
            raise InstagramUnavailable("the picture to send could not be downloaded") from None
        if len(body) > MAX_PHOTO or not _is_picture(body):
            return None
        fd, name = tempfile.mkstemp(prefix="hub-ig-", suffix=suffix)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        return Path(name)

    async def _journal(self, outbound_id: str, item_ids: list[str]) -> None:
        journal = await self.ctx.load_state(CHANNEL, self.inbox, "sent") or {}
        journal.pop(outbound_id, None)
        journal[outbound_id] = item_ids
        while len(journal) > MAX_JOURNAL:
            journal.pop(next(iter(journal)))
        await self.ctx.save_state(CHANNEL, self.inbox, "sent", journal)

    async def _check_pause(self) -> None:
        pause = Pause.from_doc(await self.ctx.load_state(CHANNEL, self.inbox, "pause"))
        pause = pause or self._pause
        now = self.clock()
        if pause is None or pause.kind == "error":
            return
        if pause.until is not None and now >= pause.until:
            return
        if pause.until is None and now - pause.since > HOLD_SENDS_FOR:
            raise PermanentSendError(f"Instagram is paused: {pause.reason}")
        raise InstagramPaused(pause.reason)

    async def _sending_client(self) -> Client:
        """The poller's client, or (in a process that does not poll) one on the saved
        session: only the poller ever logs in."""
        if self._client is not None:
            return self._client
        saved = await self.ctx.load_state(CHANNEL, self.inbox, "session")
        settings = (saved or {}).get("settings")
        if not settings or (saved or {}).get("username") != self.config.username:
            raise InstagramUnavailable("Instagram is not connected yet")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instagram")
        client = api.build_client(self.config.api)
        if not await self._run(api.restore, client, settings, self.config.api):
            raise InstagramUnavailable("Instagram is not connected yet")
        self._client = client
        return client

    async def _send_failed(self, msg: OutboundMessage, exc: Exception) -> DeliveryStatus:
        trouble = api.classify(exc)
        if trouble.kind == "refused":
            log.info("instagram %s: a message was refused: %s", self.inbox, trouble.reason)
            return DeliveryStatus(
                outbound_id=msg.id,
                channel=CHANNEL,
                status=DeliveryState.failed,
                error=trouble.reason,
                retryable=False,
            )
        if isinstance(exc, ValueError):  # instagrapi refusing the input (a bad thread id)
            return DeliveryStatus(
                outbound_id=msg.id,
                channel=CHANNEL,
                status=DeliveryState.failed,
                error=f"not sendable on Instagram: {str(exc)[:200]}",
                retryable=False,
            )
        log.warning("instagram %s: send failed: %s", self.inbox, trouble.reason)
        if trouble.kind == "owner":
            self._client = None
            await self._set_pause("owner", trouble.reason, None)
        elif trouble.kind == "rate":
            level = self._pause.level + 1 if self._pause and self._pause.kind == "rate" else 0
            until = self.clock() + backoff(level)
            await self._set_pause("rate", trouble.reason, until, level)
        elif trouble.kind == "login":
            # The poller (whichever process has it) logs in again; here only the client goes.
            self._client = None
        if trouble.kind in ("owner", "rate"):
            raise InstagramPaused(trouble.reason) from None
        raise InstagramUnavailable(trouble.reason) from None

    # The worker thread -----------------------------------------------------------------

    def _require_client(self) -> Client:
        if self._client is None:
            raise InstagramUnavailable("not connected")
        return self._client

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            raise InstagramUnavailable("the channel is stopped")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))


_skipped: set[int] = set()


def _parsed(raw: Any) -> IgItem | None:
    if not isinstance(raw, dict):
        return None
    item = parse_item(raw)
    if item is None:
        # One line per odd item, not one per poll while it stays in the inbox's preview.
        key = hash(repr(sorted(raw.items()))[:2000])
        if key not in _skipped and len(_skipped) < 10_000:
            _skipped.add(key)
            log.warning(
                "instagram: skipped an item without id, author or time (%s)",
                str(raw.get("item_type"))[:40],
            )
    return item


def _is_picture(body: bytes) -> bool:
    """Whether instagrapi's image preparation (Pillow) will be able to open it."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            image.verify()
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Instagram takes about 1000 characters a message: longer texts go as several."""
    return split_parts(text, limit, unit="chars")


def from_settings(settings: Settings, ctx: ChannelContext) -> PrivateInstagramChannel | None:
    username = (settings.instagram_username or "").strip()
    password = settings.instagram_password.get_secret_value() if settings.instagram_password else ""
    if not (username and password):
        if username or password:
            log.warning(
                "Instagram private mode is off: INSTAGRAM_USERNAME and _PASSWORD both needed"
            )
        return None
    test_api = settings.instagram_private_api_url
    options = (
        # A local fake (tests): plain requests, so it can be pointed there; no sleeps.
        api.ApiOptions(request_timeout=0.0, transport="requests", api_url=test_api)
        if test_api
        else api.ApiOptions()
    )
    config = PrivateConfig(
        username=username,
        password=SecretStr(password),
        poll_interval=settings.instagram_poll_interval_s,
        poll_jitter=settings.instagram_poll_jitter_s,
        api=options,
    )
    return PrivateInstagramChannel(ctx, settings.instagram_inbox, config)
