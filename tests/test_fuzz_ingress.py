"""Property-based fuzzing of every provider webhook (issue 10).

One hub per test with Telegram (webhook mode), Viber, SMS (Twilio) and Instagram (official)
on, each against its local fake; hypothesis draws requests (tests/fuzz_strategies.py):
bodies signed right (so the fuzzing reaches past the signature check) and wrong, random JSON,
valid payloads with a field of the wrong type, missing or extra, bodies over the limit,
bodies that are not UTF-8, other content types, signature headers of raw bytes.

Every answer must be one the input may get (a 4xx, never a 5xx; a 2xx only for a signed
body), a refused request must hand nothing to the hub, an acknowledged one at most the
messages it carried. After the fuzzing the pipeline must have stored everything it took
(nothing in `hub:dead`, nothing left pending), no more messages than it took, /healthz must
answer 200, and a normal message must still be accepted and stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from channels.twilio_signature import compute_signature
from crm_store.models import Message
from hub.config import Settings
from hub.pipeline.router import GROUP as ROUTER_GROUP
from hub.web.app import stream_lag
from tests.fakes.instagram_graph_server import (
    ACCESS_TOKEN,
    ACCOUNT_ID,
    APP_SECRET,
    VERIFY_TOKEN,
    FakeGraph,
    echo_event,
    event,
    igsid,
    new_mid,
    notification,
    read_event,
    text_event,
)
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    inbound_params,
    sid,
    status_params,
)
from tests.fakes.viber_server import AUTH_TOKEN as VIBER_TOKEN
from tests.fakes.viber_server import (
    FakeViber,
    contact_message,
    conversation_started,
    message_event,
    picture_message,
    receipt,
    subscribed,
    text_message,
    unsubscribed,
    user_id,
    viber_user,
    webhook_event,
)
from tests.fuzz_strategies import (
    Answer,
    Call,
    Endpoint,
    Headers,
    calls,
    form_body,
    header_bytes,
    json_objects,
    json_values,
    mutated,
    mutated_forms,
    send,
    signed,
    texts,
)
from tests.support import RunningHub, eventually, rows, start_hub, stored_in

T = TypeVar("T")
EXAMPLES = 150
PUBLIC = "https://hub.example.test"
TG_TOKEN = "7123456789:AAHk3xZpQv9mN2bRt5Yw8cLd4Fg6Hj1KsEo"
TG_SECRET = "fuzz-secret_0123456789abcdef"
CLIENT_PHONE = "+380671234567"


# The hub under fuzzing ----------------------------------------------------------------------


@dataclass
class Ingress:
    """A hub on an event loop of the test's own. Hypothesis draws each example while the loop
    stands still (the hub's tasks use `random`, which hypothesis must see untouched while it
    draws), then the example runs on the loop; the test looks at the hub after all of them."""

    runner: asyncio.Runner
    running: RunningHub | None = None
    published: int = 0  # inbound messages the hub took over the fuzzing

    def run(self, coro: Awaitable[T]) -> T:
        return self.runner.run(coro)  # type: ignore[arg-type]

    def fuzz(
        self,
        strategy: st.SearchStrategy[Any],
        check: Callable[[Any], Awaitable[Any]] | None = None,
        examples: int = EXAMPLES,
        pinned: Sequence[Any] = (),
    ) -> None:
        """`pinned`: inputs that once broke the hub, run first every time."""
        check = check or self.check

        def with_pinned(test: Callable[[Any], None]) -> Callable[[Any], None]:
            for value in reversed(pinned):
                test = example(value)(test)
            return test

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,  # no examples saved between runs: each run draws afresh
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(strategy)
        @with_pinned
        def run(value: Any) -> None:
            note(repr(value))
            self.run(check(value))

        run()

    @property
    def hub(self) -> RunningHub:
        assert self.running is not None
        return self.running

    async def inbound_total(self) -> int:
        hub = self.hub.hub
        return sum([int(await hub.redis.xlen(s)) for s in hub.bus.inbound_streams()])

    async def check(self, call: Call) -> Answer:
        before = await self.inbound_total()
        answer = await send(self.hub.base_url, call)
        taken = await self.inbound_total() - before
        assert answer.status in call.allowed, f"{call.what}: answered {answer.status}"
        if 200 <= answer.status < 300:
            assert taken <= call.may_publish, f"{call.what}: {taken} messages taken"
        else:
            assert taken == 0, f"{call.what}: refused ({answer.status}) but {taken} taken"
        self.published += taken
        return answer

    def settled(self, afterwards: Call | None = None, text: str = "") -> None:
        """Everything taken was stored (nothing pending, nothing dead, no more rows than
        messages taken), the hub is healthy, and it still takes a normal message (the
        `afterwards` request, with `text`)."""
        self.run(self._settled())
        if afterwards is None:
            return
        answer = self.run(self.check(afterwards))
        assert 200 <= answer.status < 300
        self.run(stored_in(self.hub, text))

    async def _settled(self) -> None:
        hub = self.hub.hub

        async def drained() -> bool:
            lags = [await stream_lag(hub, s, ROUTER_GROUP) for s in hub.bus.inbound_streams()]
            return not any(lags)

        await eventually(drained, timeout=20)
        dead = await hub.bus.dead_letters()
        assert dead == [], f"dead letters: {dead}"
        stored = await rows(self.hub, Message)
        assert len(stored) <= self.published
        health = await send(self.hub.base_url, Call("health", "GET", "/healthz", (), b"", OK))
        assert health.status == 200, health.body


OK = frozenset({200})


Start = Callable[[Settings, AsyncExitStack], Awaitable[RunningHub]]


def on_own_loop(settings: Settings, start: Start) -> Iterator[Ingress]:
    """A hub started by `start` (which leaves what to close on the stack), on its own loop."""
    # Hypothesis draws while the loop stands still: an entry in hand then must not look
    # abandoned (the suite's 300 ms would count a delivery and dead-letter good ones).
    settings = settings.model_copy(update={"hub_claim_idle_ms": 5_000})
    with asyncio.Runner() as runner:
        ingress = Ingress(runner)
        stack = AsyncExitStack()
        try:
            ingress.running = runner.run(start(settings, stack))
            yield ingress
        finally:
            runner.run(stack.aclose())


@pytest.fixture
def ingress(settings: Settings, redis: Any) -> Iterator[Ingress]:
    del redis  # flushed before the hub starts
    yield from on_own_loop(settings, with_providers)


async def with_providers(settings: Settings, stack: AsyncExitStack) -> RunningHub:
    telegram = await stack.enter_async_context(FakeTelegram(max_poll_wait=0.2))
    viber = await stack.enter_async_context(FakeViber(verify=False))
    twilio = await stack.enter_async_context(FakeTwilio())
    graph = await stack.enter_async_context(FakeGraph())
    telegram.add_bot(TG_TOKEN, "salon_bot")
    values: dict[str, Any] = {
        "hub_public_url": PUBLIC,
        "telegram_bot_tokens": SecretStr(TG_TOKEN),
        "telegram_api_url": telegram.base_url,
        "telegram_mode": "webhook",
        "telegram_webhook_secret": SecretStr(TG_SECRET),
        "viber_bot_token": SecretStr(VIBER_TOKEN),
        "viber_api_url": viber.base_url,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "twilio_from_number": FROM_NUMBER,
        "twilio_api_url": twilio.base_url,
        "instagram_mode": "official",
        "instagram_access_token": SecretStr(ACCESS_TOKEN),
        "instagram_app_secret": SecretStr(APP_SECRET),
        "instagram_verify_token": SecretStr(VERIFY_TOKEN),
        "instagram_account_id": ACCOUNT_ID,
        "instagram_api_url": graph.base_url,
    }
    running = await start_hub(settings.model_copy(update=values))
    stack.push_async_callback(running.stop)
    assert {"telegram", "viber", "sms", "instagram"} <= set(running.hub.channels)
    return running


def wrong_headers(name: bytes, right: Callable[[bytes], bytes]) -> st.SearchStrategy[Headers]:
    """A signature header that doesn't sign the body: random text, the right one for other
    bytes, or the right one cut short."""
    return st.one_of(
        texts.map(lambda t: t.encode("utf-8", "replace")),
        st.binary(max_size=40).map(right),
        st.binary(min_size=1, max_size=40).map(lambda b: right(b)[:-1]),
    ).map(lambda value: ((name, value),))


# Telegram -----------------------------------------------------------------------------------

TG_HOOK = "/webhooks/telegram/main"
TG_SECRET_HEADER = b"X-Telegram-Bot-Api-Secret-Token"
DATE = 1767261600


def tg_user(uid: int = 111111111) -> dict[str, Any]:
    return {
        "id": uid,
        "is_bot": False,
        "first_name": "Olena",
        "last_name": "Koval",
        "username": "olena_k",
        "language_code": "uk",
    }


def tg_update(update_id: int, message_id: int, **content: Any) -> dict[str, Any]:
    sender = tg_user()
    chat = {"id": sender["id"], "first_name": "Olena", "type": "private"}
    message = {"message_id": message_id, "from": sender, "chat": chat, "date": DATE, **content}
    return {"update_id": update_id, "message": message}


PHOTO = [
    {"file_id": "AgACAgIAAxkBAAMFaVs_s", "file_unique_id": "s1", "width": 90, "height": 67},
    {"file_id": "AgACAgIAAxkBAAMFaVs_x", "file_unique_id": "x1", "width": 1280, "height": 960},
]
TG_SAMPLES = (
    tg_update(1, 10, text="Добрий день! Чи є час на манікюр?"),
    tg_update(2, 11, text="/start insta_ad"),
    tg_update(3, 12, photo=PHOTO, caption="ось такий дизайн", reply_to_message={"message_id": 9}),
    tg_update(
        4, 13, contact={"phone_number": "380671234567", "first_name": "O", "user_id": 111111111}
    ),
    tg_update(5, 14, location={"latitude": 50.4501, "longitude": 30.5234}),
    tg_update(
        6,
        15,
        document={"file_id": "BQACAgIAAxkBAAM", "file_size": 1200, "mime_type": "application/pdf"},
        voice={"file_id": "AwACAgIAAxkBAAM", "duration": 3, "file_size": 800},
        sticker={"file_id": "CAACAgIAAxkBAAM", "emoji": "😀", "is_animated": False},
    ),
    {
        "update_id": 7,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": tg_user(),
            "data": "Fri 15:00",
            "message": {
                "message_id": 16,
                "date": DATE,
                "chat": {"id": 111111111, "type": "private"},
                "text": "When?",
                "reply_markup": {
                    "inline_keyboard": [[{"text": "Fri 15:00", "callback_data": "Fri 15:00"}]]
                },
            },
        },
    },
    {
        "update_id": 8,
        "my_chat_member": {
            "chat": {"id": 111111111, "type": "private"},
            "from": tg_user(),
            "date": DATE,
            "old_chat_member": {"status": "member", "user": tg_user(1)},
            "new_chat_member": {"status": "kicked", "user": tg_user(1)},
        },
    },
    {"update_id": 9, "edited_message": tg_update(9, 17, text="edited")["message"]},
)
TELEGRAM = Endpoint(
    path=TG_HOOK,
    limit=1024 * 1024,
    content_type=b"application/json",
    sign=lambda body, target: ((TG_SECRET_HEADER, TG_SECRET.encode()),),
    wrong=st.one_of(
        texts.map(lambda t: ((TG_SECRET_HEADER, t.encode("utf-8", "replace")),)),
        st.just(((TG_SECRET_HEADER, TG_SECRET[:-1].encode()),)),
        st.just(((TG_SECRET_HEADER, (TG_SECRET + "x").encode()),)),
    ),
    extra_paths=(
        ("/webhooks/telegram/vip", frozenset({404})),
        ("/webhooks/telegram/%00", frozenset({404})),
        ("/webhooks/telegram/", frozenset({404})),
    ),
)
json_payloads = st.one_of(json_values, json_objects)


def tg_with(path: str, value: Any, sample: int = 0) -> dict[str, Any]:
    doc = json.loads(json.dumps(TG_SAMPLES[sample]))
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return doc


# What the fuzzer found (answered 500, or taken and then dead in the router on PostgreSQL).
TG_FOUND = (
    signed(TELEGRAM, tg_with("message.from.first_name", "Olena\ud800")),  # no UTF-8: 500
    signed(TELEGRAM, tg_with("message.text", "a\x00b")),  # PostgreSQL refuses NUL
    signed(TELEGRAM, b'{"update_id": 1, "x": "\xed\xa0\x80"}', 400),  # a surrogate as bytes
    signed(TELEGRAM, tg_with("message.date", 10**400)),  # no such time: OverflowError
    signed(TELEGRAM, tg_with("message.document.file_size", -1, 5)),  # Attachment refused it
    signed(TELEGRAM, tg_with("message.chat.id", 10**300), 400),  # too long an id to keep
    signed(TELEGRAM, tg_with("message.reply_to_message.message_id", 10**30, 2), 400),
)


def test_telegram_webhook(ingress: Ingress) -> None:
    payloads = st.one_of(
        mutated(TG_SAMPLES), mutated(TG_SAMPLES), st.sampled_from(TG_SAMPLES), json_payloads
    )
    ingress.fuzz(calls(TELEGRAM, payloads), pinned=TG_FOUND)
    text = f"still here {secrets.token_hex(4)}"
    body = json.dumps(tg_update(10**6, 10**6, text=text)).encode()
    ingress.settled(Call("valid", "POST", TG_HOOK, TELEGRAM.sign(body, TG_HOOK), body, OK, 1), text)


# Viber --------------------------------------------------------------------------------------

VIBER_HOOK = "/webhooks/viber/main"
VIBER_HEADER = b"X-Viber-Content-Signature"


def viber_sign(body: bytes) -> bytes:
    return hmac.new(VIBER_TOKEN.encode(), body, hashlib.sha256).hexdigest().encode()


VIBER_CLIENT = viber_user(user_id(), "Олена Коваль")
VIBER_SAMPLES = (
    text_message(VIBER_CLIENT, "Добрий день! Є час на манікюр?", tracking_data="src:insta"),
    picture_message(VIBER_CLIENT, "https://dl-media.viber.com/1/share/2/long/vibes/icon/x.jpg"),
    contact_message(VIBER_CLIENT, "Олена", "+380671234567"),
    message_event(VIBER_CLIENT, {"type": "location", "location": {"lat": 50.45, "lon": 30.52}}),
    message_event(VIBER_CLIENT, {"type": "sticker", "sticker_id": 46105}),
    message_event(VIBER_CLIENT, {"type": "url", "media": "https://salon.example.com/price"}),
    conversation_started(VIBER_CLIENT, context="insta"),
    subscribed(VIBER_CLIENT),
    unsubscribed(VIBER_CLIENT["id"]),
    receipt("delivered", 5_000_000_000_000_000_001, VIBER_CLIENT["id"]),
    receipt("failed", 5_000_000_000_000_000_002, VIBER_CLIENT["id"], "blocked"),
    webhook_event(),
)
VIBER = Endpoint(
    path=VIBER_HOOK,
    limit=1024 * 1024,
    content_type=b"application/json",
    sign=lambda body, target: ((VIBER_HEADER, viber_sign(body)),),
    wrong=wrong_headers(VIBER_HEADER, viber_sign),
)


VIBER_FOUND = (
    signed(VIBER, text_message(VIBER_CLIENT, "a\x00b")),  # PostgreSQL refuses NUL
    signed(VIBER, {**VIBER_SAMPLES[0], "extra": "\udfff"}),  # no UTF-8 for the entry: 500
    signed(VIBER, VIBER_SAMPLES[0], 403, headers=((VIBER_HEADER, b"\x80"),)),  # 500
)


def test_viber_webhook(ingress: Ingress) -> None:
    payloads = st.one_of(
        mutated(VIBER_SAMPLES),
        mutated(VIBER_SAMPLES),
        st.sampled_from(VIBER_SAMPLES),
        json_payloads,
    )
    ingress.fuzz(calls(VIBER, payloads), pinned=VIBER_FOUND)
    text = f"still here {secrets.token_hex(4)}"
    body = json.dumps(text_message(viber_user(user_id()), text)).encode()
    ingress.settled(
        Call("valid", "POST", VIBER_HOOK, VIBER.sign(body, VIBER_HOOK), body, OK, 1), text
    )


# SMS (Twilio) -------------------------------------------------------------------------------

SMS_HOOK = "/webhooks/sms/main"
SMS_STATUS = f"/webhooks/sms/main/status?id={'ab' * 16}"
TWILIO_HEADER = b"X-Twilio-Signature"
FORM = b"application/x-www-form-urlencoded"


def twilio_sign(body: bytes, target: str, token: str = AUTH_TOKEN) -> Headers:
    """Signed as Twilio signs: the public URL and the parameters it posted. A body that is no
    form can't be signed; it gets a signature of nothing, to reach the form's check."""
    try:
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except ValueError:
        params = []
    return ((TWILIO_HEADER, compute_signature(token, PUBLIC + target, params).encode()),)


def twilio_wrong(target: str) -> st.SearchStrategy[Headers]:
    return st.one_of(
        texts.map(lambda t: ((TWILIO_HEADER, t.encode("utf-8", "replace") or b"x"),)),
        st.just(twilio_sign(b"", target, token="not-the-token")),
        st.just(twilio_sign(b"", "/webhooks/sms/vip")),
    )


def sms_endpoint(target: str, carries: int) -> Endpoint:
    return Endpoint(
        path=target,
        limit=64 * 1024,
        content_type=FORM,
        sign=twilio_sign,
        wrong=twilio_wrong(target),
        encode=form_body,
        carries=lambda body: carries,
        wrong_type=frozenset({400}),
        extra_paths=(("/webhooks/sms/vip", frozenset({404})),),
    )


MEDIA = (
    f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
    f"/Messages/MM{'1' * 32}/Media/ME{'2' * 32}"
)
SMS_SAMPLES = (
    inbound_params(sid("SM"), CLIENT_PHONE, "Добрий день! Є час на манікюр?"),
    # Only the fields the hub reads, so a change lands on one of them more often.
    [("MessageSid", sid("SM")), ("From", CLIENT_PHONE), ("To", FROM_NUMBER), ("Body", "Привіт")],
    inbound_params(sid("MM"), CLIENT_PHONE, "фото", media=[(MEDIA, "image/jpeg")]),
    inbound_params(sid("SM"), CLIENT_PHONE, "STOP", opt_out_type="STOP"),
)
STATUS_SAMPLES = (
    [("MessageSid", sid("SM")), ("MessageStatus", "failed"), ("ErrorCode", "30003")],
    status_params(sid("SM"), "delivered"),
    status_params(sid("SM"), "undelivered", error_code=30005),
    status_params(sid("SM"), "sent"),
)


def form_payloads(samples: tuple[list[tuple[str, str]], ...]) -> st.SearchStrategy[Any]:
    return st.one_of(
        mutated_forms(samples),
        mutated_forms(samples),
        st.sampled_from(samples),
        st.lists(st.tuples(texts, texts), max_size=5),
        st.binary(max_size=60),
    )


def a_text_message() -> tuple[Call, str]:
    text = f"still here {secrets.token_hex(4)}"
    body = form_body(inbound_params(sid("SM"), CLIENT_PHONE, text))
    headers = ((b"Content-Type", FORM), *twilio_sign(body, SMS_HOOK))
    return Call("valid", "POST", SMS_HOOK, headers, body, OK, 1), text


SMS = sms_endpoint(SMS_HOOK, 1)
SMS_FOUND = (
    signed(SMS, inbound_params(sid("SM"), CLIENT_PHONE, "a\x00b")),  # PostgreSQL refuses NUL
    signed(SMS, inbound_params(sid("SM"), "  ", "hi"), 400),  # a blank sender: 500
    signed(SMS, SMS_SAMPLES[1], 403, headers=((TWILIO_HEADER, b"\xff\xfe"),)),  # 500
)


def test_sms_webhook(ingress: Ingress) -> None:
    ingress.fuzz(calls(SMS, form_payloads(SMS_SAMPLES)), pinned=SMS_FOUND)
    ingress.settled(*a_text_message())


def test_sms_status_callback(ingress: Ingress) -> None:
    ingress.fuzz(calls(sms_endpoint(SMS_STATUS, 0), form_payloads(STATUS_SAMPLES)))
    assert ingress.published == 0
    ingress.settled(*a_text_message())


# Instagram ----------------------------------------------------------------------------------

IG_HOOK = "/webhooks/instagram/main"
IG_HEADER = b"X-Hub-Signature-256"


def ig_sign(body: bytes) -> bytes:
    return b"sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


def ig_events(body: bytes) -> int:
    """How many messaging events a notification holds (each may be one message)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return 0
    entries = doc.get("entry") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return 0
    return sum(
        len(e["messaging"])
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("messaging"), list)
    )


IG_CLIENT = igsid()
IG_SAMPLES = (
    notification(text_event(IG_CLIENT, "Добрий день! Є час на манікюр?")),
    notification(echo_event(IG_CLIENT, "Так, у п'ятницю")),
    notification(read_event(IG_CLIENT, new_mid())),
    notification(
        event(IG_CLIENT, postback={"mid": new_mid(), "title": "Book", "payload": "label:Book"}),
        event(
            IG_CLIENT,
            message={
                "mid": new_mid(),
                "text": "this one",
                "attachments": [
                    {"type": "image", "payload": {"url": "https://cdn.example.com/a.jpg"}}
                ],
                "reply_to": {"story": {"url": "https://cdn.example.com/s.mp4", "id": "1789"}},
                "quick_reply": {"payload": "label:Friday"},
                "referral": {"ref": "insta_ad", "source": "ADS", "type": "OPEN_THREAD"},
            },
        ),
    ),
    notification(event(IG_CLIENT, reaction={"mid": new_mid(), "action": "react", "emoji": "❤"})),
    notification(event(IG_CLIENT, message={"mid": new_mid(), "is_unsupported": True})),
    {"object": "page", "entry": [{"id": "1", "time": 1, "changes": [{"field": "feed"}]}]},
)
INSTAGRAM = Endpoint(
    path=IG_HOOK,
    limit=1024 * 1024,
    content_type=b"application/json",
    sign=lambda body, target: ((IG_HEADER, ig_sign(body)),),
    wrong=wrong_headers(IG_HEADER, ig_sign),
    carries=ig_events,
)


def a_direct_message() -> tuple[Call, str]:
    text = f"still here {secrets.token_hex(4)}"
    body = json.dumps(notification(text_event(igsid(), text))).encode()
    return Call("valid", "POST", IG_HOOK, INSTAGRAM.sign(body, IG_HOOK), body, OK, 1), text


IG_FOUND = (
    # The account's own message with no recipient: AttributeError, 500.
    signed(INSTAGRAM, notification({**echo_event(IG_CLIENT, "hi"), "recipient": None})),
    # A 200-character sender: its reply window's key was too long for PostgreSQL, 500.
    signed(INSTAGRAM, notification(text_event("Z" * 200, "hi"))),
    signed(INSTAGRAM, notification(text_event(IG_CLIENT, "hi", timestamp=10**400))),  # 500
    signed(INSTAGRAM, notification(text_event(IG_CLIENT, "a\x00b"))),  # NUL, PostgreSQL
    signed(INSTAGRAM, IG_SAMPLES[0], 403, headers=((IG_HEADER, b"sha256=\x80"),)),  # 500
)


def test_instagram_webhook(ingress: Ingress) -> None:
    payloads = st.one_of(
        mutated(IG_SAMPLES), mutated(IG_SAMPLES), st.sampled_from(IG_SAMPLES), json_payloads
    )
    ingress.fuzz(calls(INSTAGRAM, payloads), pinned=IG_FOUND)
    ingress.settled(*a_direct_message())


handshake_values = st.one_of(
    st.none(),
    st.just("subscribe"),
    st.just(VERIFY_TOKEN),
    texts,
    st.text(max_size=300),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[Call, dict[str, str]]:
    """Meta's subscription check with any parameters, percent-encoded as bytes (so a
    parameter may be bytes that are not UTF-8)."""
    sent: dict[str, str] = {}
    parts = []
    for name, right in (
        ("hub.mode", "subscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
        ("hub.challenge", None),
    ):
        value = draw(st.one_of(st.just(right), handshake_values) if right else handshake_values)
        if value is None:
            continue
        raw = value.encode("utf-8", "surrogatepass")
        parts.append(f"{name}={quote(raw, safe='')}")
        sent[name] = value
    if draw(st.booleans()):
        parts.append(
            f"{quote(draw(texts).encode('utf-8', 'surrogatepass'))}={quote(draw(header_bytes))}"
        )
    target = IG_HOOK + ("?" + "&".join(parts) if parts else "")
    return Call("handshake", "GET", target, (), b"", frozenset({200, 400, 403})), sent


def test_instagram_handshake(ingress: Ingress) -> None:
    async def check(drawn: tuple[Call, dict[str, str]]) -> None:
        call, sent = drawn
        answer = await ingress.check(call)
        challenge = sent.get("hub.challenge", "")
        genuine = (
            sent.get("hub.mode") == "subscribe"
            and sent.get("hub.verify_token") == VERIFY_TOKEN
            and 0 < len(challenge) <= 256
        )
        if answer.status == 200:
            assert sent.get("hub.verify_token") == VERIFY_TOKEN
            if _is_text(challenge):  # else it was bytes that are not UTF-8: echoed as decoded
                assert answer.body == challenge.encode()
        elif genuine:
            # Only a challenge that is not text may be refused with the right token.
            assert answer.status == 400 and not _is_text(challenge)

    ingress.fuzz(handshakes(), check)
    assert ingress.published == 0
    ingress.settled(*a_direct_message())


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
