"""A fake of Instagram's private (mobile app) API, over real HTTP, for instagrapi to talk to.

    async with FakeInstagram() as fake:
        settings.instagram_private_api_url = fake.base_url   # instagrapi's hosts rewritten here
        thread = fake.add_thread(CLIENT)                     # a client writes to the salon
        fake.add_item(thread, fake.text_item(CLIENT, "Hi"))
        fake.login_mode = "challenge"                        # the next logins ask for a challenge
        fake.fail_next("direct_v2/inbox/", 429)              # the next inbox read: rate limited
        fake.logins, fake.sends, fake.seen                   # what the hub did

It serves what instagrapi 3.2 asks for, shaped as Instagram answers it:
- `GET qe/sync/` (instagrapi's public session) with the password-encryption key headers
  (`ig-set-password-encryption-key-id`, `…-pub-key`: a base64 PEM of an RSA key); the login's
  `enc_password` (#PWD_INSTAGRAM:4:…) is really decrypted and checked.
- `POST launcher/sync/`, `feed/reels_tray/`, `feed/timeline/`: the pre/post-login flow.
- `POST accounts/login/` (a signed form): `logged_in_user` and the `ig-set-authorization`
  header (Bearer IGT:2:<base64 JSON with ds_user_id and sessionid>); or, by `login_mode`,
  Instagram's bodies for a challenge (400, message challenge_required), two-factor (400,
  two_factor_info), a wrong password (400, error_type bad_password), 429 "Please wait a few
  minutes".
- `GET direct_v2/inbox/`, `direct_v2/pending_inbox/`: {viewer, inbox: {threads: [...],
  has_older, oldest_cursor}, status}; each thread with thread_id, thread_v2_id, users,
  items (newest first, `thread_message_limit` of them), last_activity_at (µs), pending,
  has_older, oldest_cursor; items with item_id, user_id, timestamp (µs), item_type and the
  type's own object (media, voice_media, reel_share, media_share, clip, link…).
- `GET direct_v2/threads/<id>/?cursor=`: older items, 20 a page.
- `POST direct_v2/threads/broadcast/{text,link,photo_attachment}/`: {action: item_ack,
  payload: {item_id, thread_id, timestamp, client_context}, status: ok}; the item appears
  in the thread as the account's own (as an echo does).
- `POST direct_v2/threads/<id>/items/<item>/seen/`, `direct_v2/threads/<id>/approve/`.
- Authenticated calls without a valid session: 403 {"message": "login_required"}.
- Anything else: 404, as Instagram answers an unknown endpoint.
- `GET /cdn/<name>`: files (the pictures items point at, and pictures the hub sends).
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA

VIEWER_PK = 51234567890
USERNAME = "beauty.salon.demo"
PASSWORD = "n0t-the-real-one!"  # a test password: the logs must never show it
KEY_ID = 41


@lru_cache(maxsize=1)
def _rsa_key() -> RSA.RsaKey:
    return RSA.generate(2048)


@dataclass
class User:
    pk: int
    username: str
    full_name: str

    def as_json(self) -> dict[str, Any]:
        return {
            "pk": self.pk,
            "pk_id": str(self.pk),
            "id": str(self.pk),
            "username": self.username,
            "full_name": self.full_name,
            "is_private": False,
            "is_verified": False,
            "profile_pic_url": f"https://scontent.cdninstagram.com/v/t51/{self.pk}.jpg",
            "profile_pic_id": f"{self.pk}_pic",
            "has_anonymous_profile_picture": False,
            "friendship_status": {"following": False, "blocking": False, "is_bestie": False},
        }


@dataclass
class Thread:
    thread_id: str
    thread_v2_id: str
    user: User
    pending: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)  # newest first

    def last_activity(self) -> int:
        return int(self.items[0]["timestamp"]) if self.items else 0


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, str]
    status: int = 0


class FakeInstagram:
    def __init__(self) -> None:
        self.viewer = User(VIEWER_PK, USERNAME, "Beauty Salon")
        self.password = PASSWORD
        self.login_mode = "ok"  # ok | challenge | two_factor | bad_password | wait
        self.sessions: set[str] = set()
        self.threads: dict[str, Thread] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[Recorded] = []
        self.logins = 0
        self.sends: list[dict[str, Any]] = []
        self.seen: list[tuple[str, str]] = []
        self.approved: list[str] = []
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._last_ts = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeInstagram:
        app = web.Application()
        app.router.add_route("*", "/cdn/{name}", self._cdn)
        app.router.add_route("*", "/api/v1/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # Scenario helpers --------------------------------------------------------------------

    def next_ts(self) -> int:
        """Now in microseconds, strictly increasing."""
        self._last_ts = max(self._last_ts + 1, int(time.time() * 1_000_000))
        return self._last_ts

    def new_item_id(self) -> str:
        # Instagram's item ids are ~35-digit numbers, increasing with time.
        return f"3{self.next_ts():019d}{next(self._ids):015d}"

    def add_user(self, pk: int, username: str, full_name: str) -> User:
        return User(pk, username, full_name)

    def add_thread(self, user: User, *, pending: bool = False) -> str:
        n = len(self.threads) + 1
        thread_id = f"340282366841710300949128{n:015d}"
        self.threads[thread_id] = Thread(thread_id, f"17{n:015d}", user, pending)
        return thread_id

    def add_item(self, thread_id: str, item: dict[str, Any]) -> str:
        self.threads[thread_id].items.insert(0, item)
        return str(item["item_id"])

    def add_file(self, name: str, content: bytes, content_type: str) -> str:
        self.files[name] = (content, content_type)
        return f"{self.base_url}/cdn/{name}"

    def fail_next(self, endpoint: str, status: int, body: dict[str, Any] | None = None) -> None:
        """The next request to `endpoint` (e.g. "direct_v2/inbox/") answers this instead."""
        self._failures.setdefault(endpoint, []).append((status, body or _error_body(status)))

    def expire_sessions(self) -> None:
        """Instagram logged the session out (the saved cookies stop working)."""
        self.sessions.clear()

    def inbox_reads(self) -> int:
        return sum(1 for r in self.requests if r.path == "direct_v2/inbox/")

    # Items, as the private API shapes them -------------------------------------------------

    def _item(self, user_pk: int, item_type: str, **fields: Any) -> dict[str, Any]:
        item = {
            "item_id": self.new_item_id(),
            "user_id": user_pk,
            "timestamp": self._last_ts,
            "item_type": item_type,
            "client_context": str(6_800_011_111_111_111_111 + next(self._ids)),
            "is_sent_by_viewer": user_pk == VIEWER_PK,
            "show_forward_attribution": False,
            "is_shh_mode": False,
        }
        item.update(fields)
        return item

    def text_item(self, user: User, text: str) -> dict[str, Any]:
        return self._item(user.pk, "text", text=text)

    def image_item(self, user: User, url: str) -> dict[str, Any]:
        media = _media(1, url, pk=next(self._ids))
        return self._item(user.pk, "media", media=media)

    def voice_item(self, user: User, url: str) -> dict[str, Any]:
        voice = {
            "media": {
                "id": f"{next(self._ids)}_{user.pk}",
                "media_type": 11,
                "product_type": "direct_audio",
                "audio": {
                    "audio_src": url,
                    "duration": 4120,
                    "waveform_data": [0.1, 0.4, 0.8, 0.3],
                    "waveform_sampling_frequency_hz": 10,
                },
            },
            "is_shh_mode": False,
            "seen_count": 0,
            "view_mode": "permanent",
        }
        return self._item(user.pk, "voice_media", voice_media=voice)

    def story_reply_item(self, user: User, text: str, story_url: str) -> dict[str, Any]:
        share = {
            "text": text,
            "type": "reply",
            "reel_owner_id": VIEWER_PK,
            "is_reel_persisted": False,
            "reel_type": "user_reel",
            "media": {
                **_media(1, story_url, pk=next(self._ids)),
                "user": self.viewer.as_json(),
                "expiring_at": int(time.time()) + 86_400,
            },
        }
        return self._item(user.pk, "reel_share", reel_share=share)

    def media_share_item(self, user: User, code: str, caption: str) -> dict[str, Any]:
        media = {
            **_media(1, f"https://scontent.cdninstagram.com/v/{code}.jpg", pk=next(self._ids)),
            "code": code,
            "caption": {"text": caption, "pk": str(next(self._ids))},
            "user": self.viewer.as_json(),
        }
        return self._item(user.pk, "media_share", media_share=media)

    def clip_item(self, user: User, code: str) -> dict[str, Any]:
        clip = {
            **_media(2, f"https://scontent.cdninstagram.com/v/{code}.mp4", pk=next(self._ids)),
            "code": code,
            "user": {"pk": 777, "username": "nails.inspo", "full_name": "Nails"},
        }
        return self._item(user.pk, "clip", clip={"clip": clip})

    def link_item(self, user: User, text: str, url: str) -> dict[str, Any]:
        link = {
            "text": text,
            "link_context": {
                "link_url": url,
                "link_title": "Booking",
                "link_summary": "",
                "link_image_url": "",
            },
            "client_context": "",
            "mutation_token": "",
        }
        return self._item(user.pk, "link", link=link)

    def reaction_item(self, user: User) -> dict[str, Any]:
        return self._item(user.pk, "action_log", action_log={"description": "Liked a message"})

    # The API -----------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=found[0], content_type=found[1])

    async def _api(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        form: dict[str, str] = {}
        if request.method == "POST":
            form = _form(await request.read())
        record = Recorded(request.method, tail, form)
        self.requests.append(record)
        response = await self._answer(request, tail, form)
        record.status = response.status
        return response

    async def _answer(self, request: web.Request, tail: str, form: dict[str, str]) -> web.Response:
        if tail == "qe/sync/":
            public_pem = _rsa_key().publickey().export_key()
            headers = {
                "ig-set-password-encryption-key-id": str(KEY_ID),
                "ig-set-password-encryption-pub-key": base64.b64encode(public_pem).decode(),
            }
            return web.json_response({"status": "ok"}, headers=headers)
        if tail == "launcher/sync/":
            return web.json_response({"configs": {}, "status": "ok"})
        if tail == "accounts/login/":
            return self._login(form)
        queued = self._failures.get(tail)
        if queued:
            status, body = queued.pop(0)
            return web.json_response(body, status=status)
        if not self._authorized(request):
            return web.json_response(
                {"message": "login_required", "logout_reason": 2, "status": "fail"}, status=403
            )
        if tail == "feed/reels_tray/":
            return web.json_response({"tray": [], "status": "ok"})
        if tail == "feed/timeline/":
            return web.json_response({"feed_items": [], "more_available": False, "status": "ok"})
        if tail in ("direct_v2/inbox/", "direct_v2/pending_inbox/"):
            limit = int(request.query.get("thread_message_limit") or 10)
            pending = tail == "direct_v2/pending_inbox/"
            return web.json_response(self._inbox(pending, limit))
        parts = tail.strip("/").split("/")
        if parts[:3] == ["direct_v2", "threads", "broadcast"] and len(parts) == 4:
            return self._broadcast(parts[3], form)
        if parts[:2] == ["direct_v2", "threads"] and len(parts) >= 3:
            thread = self.threads.get(parts[2])
            if thread is None:
                return web.json_response({"message": "Thread not found", "status": "fail"}, 404)
            if len(parts) == 3:
                return web.json_response(self._thread_page(thread, request.query.get("cursor")))
            if len(parts) == 6 and parts[3] == "items" and parts[5] == "seen":
                self.seen.append((thread.thread_id, parts[4]))
                return web.json_response({"action": "item_ack", "status": "ok"})
            if parts[3] == "approve":
                thread.pending = False
                self.approved.append(thread.thread_id)
                return web.json_response({"status": "ok"})
        return web.json_response({"message": "Page not found", "status": "fail"}, status=404)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer IGT:2:"):
            return False
        try:
            data = json.loads(base64.b64decode(header.rsplit(":", 1)[-1]))
        except (ValueError, TypeError):
            return False
        return isinstance(data, dict) and data.get("sessionid") in self.sessions

    def _login(self, form: dict[str, str]) -> web.Response:
        self.logins += 1
        signed = form.get("signed_body", "")
        data = json.loads(signed.split(".", 1)[1]) if "." in signed else {}
        if self.login_mode == "wait":
            body = {"message": "Please wait a few minutes before you try again.", "status": "fail"}
            return web.json_response(body, status=429)
        if self.login_mode == "challenge":
            return web.json_response(challenge_body("accounts/login/"), status=400)
        if self.login_mode == "two_factor":
            return web.json_response(two_factor_body(self.viewer.username), status=400)
        password_ok = _decrypt_password(str(data.get("enc_password", ""))) == self.password
        if self.login_mode == "bad_password" or not password_ok:
            return web.json_response(BAD_PASSWORD_BODY, status=400)
        if data.get("username") != self.viewer.username:
            return web.json_response(BAD_PASSWORD_BODY, status=400)
        session_id = f"{VIEWER_PK}%3A{secrets.token_hex(8)}%3A12%3A{secrets.token_hex(16)}"
        self.sessions.add(session_id)
        auth = {
            "ds_user_id": str(VIEWER_PK),
            "sessionid": session_id,
            "should_use_header_over_cookies": True,
        }
        headers = {
            "ig-set-authorization": "Bearer IGT:2:"
            + base64.b64encode(json.dumps(auth).encode()).decode(),
            "ig-set-x-mid": "ZfakeMID0ABAAHq1",
            "ig-set-ig-u-rur": f"RVA,{VIEWER_PK},{int(time.time()) + 31536000}:01f7fake",
        }
        body = {
            "logged_in_user": {**self.viewer.as_json(), "is_business": True},
            "session_flush_nonce": None,
            "status": "ok",
        }
        return web.json_response(body, headers=headers)

    def _thread_json(self, thread: Thread, items: list[dict[str, Any]], older: bool) -> dict:
        return {
            "thread_id": thread.thread_id,
            "thread_v2_id": thread.thread_v2_id,
            "users": [thread.user.as_json()],
            "left_users": [],
            "admin_user_ids": [],
            "items": items,
            "last_activity_at": thread.last_activity(),
            "muted": False,
            "is_pin": False,
            "named": False,
            "canonical": True,
            "pending": thread.pending,
            "archived": False,
            "thread_type": "private",
            "viewer_id": VIEWER_PK,
            "thread_title": thread.user.username,
            "folder": 0,
            "vc_muted": False,
            "is_group": False,
            "mentions_muted": False,
            "approval_required_for_new_members": False,
            "input_mode": 0,
            "business_thread_folder": 0,
            "read_state": 0,
            "inviter": self.viewer.as_json(),
            "has_older": older,
            "has_newer": False,
            "oldest_cursor": items[-1]["item_id"] if items else None,
            "newest_cursor": items[0]["item_id"] if items else None,
            "last_seen_at": {},
        }

    def _inbox(self, pending: bool, limit: int) -> dict[str, Any]:
        chosen = [t for t in self.threads.values() if t.pending == pending and t.items]
        chosen.sort(key=lambda t: t.last_activity(), reverse=True)
        threads = [self._thread_json(t, t.items[:limit], len(t.items) > limit) for t in chosen[:20]]
        return {
            "viewer": self.viewer.as_json(),
            "inbox": {
                "threads": threads,
                "has_older": False,
                "unseen_count": len(threads),
                "unseen_count_ts": int(time.time() * 1000),
                "oldest_cursor": None,
                "blended_inbox_enabled": True,
            },
            "seq_id": 40065,
            "snapshot_at_ms": int(time.time() * 1000),
            "pending_requests_total": sum(1 for t in self.threads.values() if t.pending),
            "has_pending_top_requests": False,
            "status": "ok",
        }

    def _thread_page(self, thread: Thread, cursor: str | None) -> dict[str, Any]:
        start = 0
        if cursor:
            ids = [str(i["item_id"]) for i in thread.items]
            start = ids.index(cursor) + 1 if cursor in ids else len(ids)
        page = thread.items[start : start + 20]
        older = start + 20 < len(thread.items)
        return {"thread": self._thread_json(thread, page, older), "status": "ok"}

    def _broadcast(self, kind: str, form: dict[str, str]) -> web.Response:
        try:
            thread_ids = [str(t) for t in json.loads(form.get("thread_ids", "[]"))]
        except ValueError:
            thread_ids = []
        thread = self.threads.get(thread_ids[0]) if thread_ids else None
        if thread is None:
            return web.json_response({"message": "Invalid thread", "status": "fail"}, 400)
        text = form.get("link_text") if kind == "link" else form.get("text")
        if kind == "photo_attachment":
            item = self._item(
                VIEWER_PK, "media", media={"attachment_fbid": form.get("attachment_fbid")}
            )
        else:
            item = self._item(VIEWER_PK, "link" if kind == "link" else "text", text=text)
        self.add_item(thread.thread_id, item)
        self.sends.append(
            {
                "kind": kind,
                "thread_id": thread.thread_id,
                "text": text,
                "attachment_fbid": form.get("attachment_fbid"),
                "item_id": item["item_id"],
                "client_context": form.get("client_context"),
            }
        )
        payload = {
            "client_context": form.get("client_context"),
            "item_id": item["item_id"],
            "timestamp": str(item["timestamp"]),
            "thread_id": thread.thread_id,
        }
        return web.json_response(
            {"action": "item_ack", "status_code": "200", "payload": payload, "status": "ok"}
        )


# Bodies -------------------------------------------------------------------------------


def challenge_body(next_path: str) -> dict[str, Any]:
    return {
        "message": "challenge_required",
        "challenge": {
            "url": f"https://i.instagram.com/challenge/?next=/api/v1/{next_path}",
            "api_path": "/challenge/",
            "hide_webview_header": True,
            "lock": True,
            "logout": False,
            "native_flow": True,
            "flow_render_type": 0,
        },
        "status": "fail",
        "error_type": "checkpoint_challenge_required",
    }


def two_factor_body(username: str) -> dict[str, Any]:
    return {
        "message": "",
        "two_factor_required": True,
        "two_factor_info": {
            "username": username,
            "sms_two_factor_on": False,
            "totp_two_factor_on": True,
            "obfuscated_phone_number": "",
            "two_factor_identifier": secrets.token_hex(20),
            "show_messenger_code_option": False,
            "show_new_login_screen": True,
            "pk": VIEWER_PK,
        },
        "phone_verification_settings": {"max_sms_count": 2, "resend_sms_delay_sec": 60},
        "status": "fail",
        "error_type": "two_factor_required",
    }


BAD_PASSWORD_BODY = {
    "message": "The password you entered is incorrect. Please try again.",
    "invalid_credentials": True,
    "error_title": "Incorrect Password",
    "buttons": [{"title": "Try Again", "action": "dismiss"}],
    "status": "fail",
    "error_type": "bad_password",
}

FEEDBACK_BODY = {
    "message": "feedback_required",
    "spam": True,
    "feedback_title": "Try Again Later",
    "feedback_message": (
        "We restrict certain activity to protect our community. Let us know if you think we "
        "made a mistake."
    ),
    "feedback_url": "repute/report_problem/scraping/",
    "feedback_appeal_label": "Tell us",
    "feedback_ignore_label": "OK",
    "feedback_action": "report_problem",
    "status": "fail",
}


def _error_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {"message": "Please wait a few minutes before you try again.", "status": "fail"}
    if status == 403:
        return {"message": "login_required", "logout_reason": 2, "status": "fail"}
    return {"message": "Something went wrong", "status": "fail"}


def _media(media_type: int, url: str, *, pk: int) -> dict[str, Any]:
    media: dict[str, Any] = {
        "id": f"{3_000_000_000_000_000_000 + pk}_{VIEWER_PK}",
        "pk": 3_000_000_000_000_000_000 + pk,
        "media_type": media_type,
        "original_width": 1080,
        "original_height": 1350,
        "image_versions2": {
            "candidates": [
                {"width": 1080, "height": 1350, "url": url},
                {"width": 240, "height": 300, "url": url + "?small"},
            ]
        },
    }
    if media_type == 2:
        media["video_versions"] = [{"type": 101, "width": 720, "height": 1280, "url": url}]
    return media


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


def _decrypt_password(enc: str) -> str | None:
    """#PWD_INSTAGRAM:4:<time>:<base64(1, key id, iv, rsa size, rsa(session key), tag, aes)>"""
    try:
        _, version, timestamp, payload = enc.split(":", 3)
        raw = base64.b64decode(payload)
        if version != "4" or raw[0] != 1 or raw[1] != KEY_ID:
            return None
        iv, size = raw[2:14], int.from_bytes(raw[14:16], "little")
        rsa_part = raw[16 : 16 + size]
        tag = raw[16 + size : 32 + size]
        secret = raw[32 + size :]
        session_key = PKCS1_v1_5.new(_rsa_key()).decrypt(rsa_part, None)
        if not session_key:
            return None
        cipher = AES.new(session_key, AES.MODE_GCM, iv)
        cipher.update(timestamp.encode())
        return cipher.decrypt_and_verify(secret, tag).decode()
    except (ValueError, IndexError, KeyError):
        return None
