"""SMS through Twilio: signatures, segments, keywords, and a running hub against a fake Twilio."""

from __future__ import annotations

import base64
import logging
import random
import string
from typing import Any

import aiohttp
import pytest
from multidict import MultiDict
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from channels.base import AttachmentUnavailable
from channels.sms import (
    TWIML_EMPTY,
    SmsChannel,
    TwilioConfig,
    TwilioUnavailable,
    consent_of,
    error_text,
    from_settings,
    parse_form,
    retry_after_seconds,
    split_body,
    with_choices,
)
from channels.sms_segments import count_segments, measure
from channels.twilio_signature import compute_signature, is_valid, url_variants
from crm_store.models import AuditEntry, ChannelIdentity, Client, Message
from hub.messages import OutboundMessage, QuickReply
from tests.fakes.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    inbound_params,
    post_webhook,
    sid,
    status_params,
)
from tests.support import RunningHub, eventually, reply, rows, settled, start_hub, stored_in

PUBLIC = "https://salon.example.com"  # what Twilio calls; a reverse proxy forwards to the hub
PATH = "/webhooks/sms/main"
CLIENT = "+380671234567"

# Twilio's worked example ("Webhooks security"): auth token 12345, this URL and these params.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


# Signatures -------------------------------------------------------------------------------


def test_twilio_documented_example() -> None:
    assert compute_signature("12345", DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    # Order of arrival doesn't matter: the parameters are sorted by name.
    assert compute_signature("12345", DOC_URL, list(reversed(DOC_PARAMS.items()))) == (
        DOC_SIGNATURE
    )
    assert is_valid("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not is_valid("12345", DOC_URL, {**DOC_PARAMS, "Digits": "9999"}, DOC_SIGNATURE)
    assert not is_valid("12345", DOC_URL.replace("bar=2", "bar=3"), DOC_PARAMS, DOC_SIGNATURE)
    assert not is_valid("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not is_valid("12345", DOC_URL, DOC_PARAMS, None)
    assert not is_valid("12345", DOC_URL, DOC_PARAMS, "")
    assert not is_valid("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-1])


def test_ports_and_repeated_parameters_as_twilio_libraries_sign_them() -> None:
    # The vectors of twilio-python's own tests (same token and URL, a caller +14158675309).
    params = {**DOC_PARAMS, "Caller": "+14158675309", "From": "+14158675309"}
    assert compute_signature("12345", DOC_URL, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    # Signed with the standard port although the URL has none, and vice versa.
    assert is_valid("12345", DOC_URL, params, "kvajT1Ptam85bY51eRf/AJRuM3w=")  # :443
    assert is_valid(
        "12345", DOC_URL.replace("https", "http"), params, "0ZXoZLH/DfblKGATFgpif+LLRf4="
    )
    assert is_valid(
        "12345", DOC_URL.replace(".com", ".com:1234"), params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature("12345", DOC_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert url_variants("https://a.example/x?y=1") == [
        "https://a.example/x?y=1",
        "https://a.example:443/x?y=1",
    ]
    assert url_variants("http://a.example:8080/x") == [
        "http://a.example:8080/x",
        "http://a.example/x",
    ]


def _random_text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def test_agrees_with_the_official_request_validator_on_random_requests() -> None:
    rng = random.Random(20261105)
    names = string.ascii_letters + string.digits + "_."
    values = string.printable + "Привіт€ñ😀ü &=+%"
    for _ in range(400):
        token = _random_text(rng, string.ascii_letters + string.digits, 8, 40)
        scheme = rng.choice(["http", "https"])
        port = rng.choice(["", ":8443", ":443", ":80", ":1234"])
        query = rng.choice(["", "?a=1", "?id=0123abcd&x=%20y"])
        url = f"{scheme}://hub{rng.randint(1, 9)}.example.com{port}/webhooks/sms/main{query}"
        pairs = [
            (_random_text(rng, names, 1, 12), _random_text(rng, values, 0, 30))
            for _ in range(rng.randint(0, 12))
        ]
        if pairs and rng.random() < 0.3:  # a repeated name with another value
            pairs.append((pairs[0][0], _random_text(rng, values, 0, 10)))
        official = RequestValidator(token)
        ours = compute_signature(token, url, pairs)
        assert ours == official.compute_signature(url, MultiDict(pairs))
        assert is_valid(token, url, pairs, ours) == official.validate(url, MultiDict(pairs), ours)
        other = rng.choice([f"{scheme}://other.example.com/", url.replace("/main", "/vip")])
        forged = official.compute_signature(other, MultiDict(pairs))
        assert is_valid(token, url, pairs, forged) == official.validate(
            url, MultiDict(pairs), forged
        )
        port_swapped = url_variants(url)[1]
        theirs = official.compute_signature(port_swapped, MultiDict(pairs))
        assert is_valid(token, url, pairs, theirs) == official.validate(
            url, MultiDict(pairs), theirs
        )


# Segments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("Hello", "GSM-7", 5, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€", "GSM-7", 2, 1),
        ("[" * 80, "GSM-7", 160, 1),
        ("[" * 80 + "a", "GSM-7", 161, 2),
        ("€" * 81, "GSM-7", 162, 2),
        # 152 plain + "€": the escape pair doesn't fit in part one's last septet, so it moves on.
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
        ("Ça coûte 10 £, ¿vale? Ñandú ÆØÅ", "UCS-2", 31, 1),  # "û", "ú" aren't GSM-7
        ("Ça va? 10 £, ¿vale? Ñandù ÆØÅ @_§ Δ", "GSM-7", 35, 1),
        ("Привіт! Запис на манікюр завтра о 15:00?", "UCS-2", 40, 1),
        ("ї" * 70, "UCS-2", 70, 1),
        ("ї" * 71, "UCS-2", 71, 2),
        ("ї" * 134, "UCS-2", 134, 2),
        ("ї" * 135, "UCS-2", 135, 3),
        ("a" * 159 + "й", "UCS-2", 160, 3),  # one Cyrillic letter makes it all UCS-2
        ("😀", "UCS-2", 2, 1),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 36, "UCS-2", 72, 2),
        ("a" * 66 + "😀" + "a", "UCS-2", 69, 1),
        ("a" * 66 + "😀" + "a" * 5, "UCS-2", 73, 2),  # the pair is not split at 67
        ("•", "UCS-2", 1, 1),
    ],
)
def test_segments(text: str, encoding: str, units: int, segments: int) -> None:
    count = measure(text)
    assert (count.encoding, count.units, count.segments) == (encoding, units, segments)
    assert count_segments(text) == segments


def test_a_surrogate_pair_never_straddles_two_parts() -> None:
    # 66 units, then emoji pairs: the first would need units 67-68 of part one, so it opens
    # part two; 33 fill it (66 units) and a 34th opens part three, where ceil(134/67) says 2.
    assert count_segments("a" * 66 + "😀" * 33) == 2
    assert count_segments("a" * 66 + "😀" * 34) == 3


# Pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "opt_out_type", "consent"),
    [
        ("STOP", None, False),
        ("  stop \n", None, False),
        ("Unsubscribe", None, False),
        ("stopall", None, False),
        ("REVOKE", None, False),
        ("optout", None, False),
        ("cancel", None, False),
        ("Stop please", None, None),  # only the whole message is a keyword
        ("start", None, True),
        ("UNSTOP", None, True),
        ("YES", None, None),  # an answer, unless Twilio flags it
        ("YES", "START", True),
        ("Скасувати", "STOP", False),  # a custom Advanced Opt-Out keyword
        ("HELP", None, None),
        ("info", "HELP", None),
        ("Hi", None, None),
    ],
)
def test_keywords(body: str, opt_out_type: str | None, consent: bool | None) -> None:
    assert consent_of(body, opt_out_type) == consent


def test_quick_replies_become_a_numbered_list() -> None:
    assert with_choices("Book?", ["Yes", "No"]) == "Book?\n1) Yes\n2) No"
    assert with_choices(
        "Free times:\n• Fri 15:00\n• Sat 11:00\nWhich one?", ["Fri 15:00", "Sat 11:00"]
    ) == ("Free times:\n1) Fri 15:00\n2) Sat 11:00\nWhich one?")
    assert with_choices("", ["Book"]) == "1) Book"
    assert with_choices("Hi", []) == "Hi"


def test_helpers() -> None:
    assert error_text(21211, "The 'To' number 123 is not a valid phone number.") == (
        "21211: The 'To' number 123 is not a valid phone number."
    )
    assert error_text(30006, None) == "30006: Landline or unreachable carrier"
    assert error_text(39999, None).startswith("39999: see https://www.twilio.com/docs")
    assert retry_after_seconds("7", now=0) == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0) == 5
    assert retry_after_seconds("soon", now=0) is None
    assert retry_after_seconds(None, now=0) is None
    parts = split_body("word " * 700)
    assert len(parts) == 3 and all(len(p) <= 1600 for p in parts)
    assert " ".join(parts).split() == ["word"] * 700
    assert split_body("short") == ["short"]
    assert parse_form(b"a=1&b=%D0%B9&a=2&c=") == [("a", "1"), ("b", "й"), ("a", "2"), ("c", "")]
    for bad in (b"no-equals-sign", b"a=%ff", b"\xff=1"):
        with pytest.raises(ValueError):
            parse_form(bad)


class _NoCtx:
    async def publish(self, msg: Any) -> None: ...
    async def report(self, status: Any) -> None: ...
    def on_fanout(self, topic: str, handler: Any) -> None: ...


NO_CTX: Any = _NoCtx()  # a channel outside a hub: nothing it publishes is looked at


def _config(api_url: str, **kw: Any) -> TwilioConfig:
    return TwilioConfig(
        account_sid=ACCOUNT_SID,
        auth_token=kw.pop("auth_token", SecretStr(AUTH_TOKEN)),
        from_number=kw.pop("from_number", FROM_NUMBER),
        messaging_service_sid=kw.pop("messaging_service_sid", None),
        api_url=api_url,
        **kw,
    )


def test_on_only_with_credentials_and_a_sender(settings) -> None:
    base = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": SecretStr(AUTH_TOKEN)}
    assert from_settings(settings, NO_CTX) is None
    assert from_settings(settings.model_copy(update=base), NO_CTX) is None
    on = from_settings(
        settings.model_copy(update={**base, "twilio_messaging_service_sid": "MG" + "0" * 32}),
        NO_CTX,
    )
    assert isinstance(on, SmsChannel) and on.inbox == "main"
    assert AUTH_TOKEN not in repr(on) and AUTH_TOKEN not in repr(on.config)
    with pytest.raises(ValueError):
        SmsChannel(NO_CTX, "a/b", _config("http://x"))


async def test_network_errors_are_transient_and_media_refs_checked() -> None:
    channel = SmsChannel(NO_CTX, "main", _config("http://127.0.0.1:9"))
    try:
        msg = OutboundMessage(
            conversation_id=1, channel="sms", inbox="main", chat_id=CLIENT, text="Hi"
        )
        with pytest.raises(TwilioUnavailable) as raised:
            await channel.send(msg)
        assert AUTH_TOKEN not in str(raised.value)
        for ref in ("../etc", "MMx:MEy", "ME" + "0" * 32):
            with pytest.raises(AttachmentUnavailable):
                await channel.fetch_attachment("main", ref)
    finally:
        await channel.stop()


async def test_a_messaging_service_sends_without_from() -> None:
    async with FakeTwilio() as fake:
        service = "MG" + "1" * 32
        channel = SmsChannel(
            NO_CTX,
            "main",
            _config(fake.base_url, from_number=None, messaging_service_sid=service),
        )
        try:
            msg = OutboundMessage(
                conversation_id=1, channel="sms", inbox="main", chat_id=CLIENT, text="Hi"
            )
            status = await channel.send(msg)
        finally:
            await channel.stop()
        (request,) = fake.creates()
        assert request.get("MessagingServiceSid") == service and request.get("From") is None
        assert request.get("StatusCallback") is None  # no public URL: nowhere to call back
        assert status.status == "sent" and status.provider_message_id == fake.created[0]["sid"]
        assert len(status.provider_message_id) == 34 and status.segments == 1

        # A wrong token: Twilio's 401 is permanent, and its text never quotes the token.
        wrong = SmsChannel(NO_CTX, "main", _config(fake.base_url, auth_token=SecretStr("nope")))
        try:
            refused = await wrong.send(msg)
        finally:
            await wrong.stop()
        assert (refused.status, refused.retryable) == ("failed", False)
        assert refused.error == "20003: Authenticate" and refused.outbound_id == msg.id
        assert fake.requests[-1].status == 401 and not fake.requests[-1].authorized


# A running hub against the fake -----------------------------------------------------------


@pytest.fixture
async def twilio() -> Any:
    async with FakeTwilio() as fake:
        yield fake


def sms_settings(settings: Any, fake: FakeTwilio, **overrides: Any) -> Any:
    values = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "twilio_from_number": FROM_NUMBER,
        "twilio_api_url": fake.base_url,
        "hub_public_url": PUBLIC,
        "sms_inbox": "main",
        **overrides,
    }
    return settings.model_copy(update=values)


@pytest.fixture
async def sms_hub(settings: Any, redis: Any, twilio: FakeTwilio) -> Any:
    del redis  # flushed before the hub starts
    running = await start_hub(sms_settings(settings, twilio))
    try:
        yield running
    finally:
        await running.stop()


async def text_in(
    running: RunningHub,
    body: str,
    *,
    sender: str = CLIENT,
    message_sid: str | None = None,
    **kw: Any,
) -> tuple[int, str, str]:
    params = inbound_params(message_sid or sid("SM"), sender, body, **kw)
    return await post_webhook(running.base_url, PATH, params, signed_base=PUBLIC)


async def callback(running: RunningHub, query: str, params: list[tuple[str, str]]) -> int:
    path = f"{PATH}/status{query}"
    status, _, _ = await post_webhook(running.base_url, path, params, signed_base=PUBLIC)
    return status


async def test_inbound_sms_and_mms_are_stored_once_on_the_client_card(
    sms_hub: RunningHub, twilio: FakeTwilio
) -> None:
    message_sid = sid("SM")
    for _ in range(3):  # Twilio retrying the same webhook
        answer = await text_in(
            sms_hub, "Добрий день! Є вільний час на манікюр?", message_sid=message_sid
        )
        assert answer == (200, "text/xml", TWIML_EMPTY)
    picture = twilio.add_media(b"\xff\xd8\xff\xe0 a photo", "image/jpeg")
    assert (await text_in(sms_hub, "Ось такий дизайн", media=[(picture, "image/jpeg")]))[0] == 200

    mms = await stored_in(sms_hub, "Ось такий дизайн")  # in order: the three copies came first
    stored = await rows(sms_hub, Message, Message.provider_message_id == message_sid)
    assert len(stored) == 1 and stored[0].channel == "sms" and stored[0].inbox == "main"
    (card,) = await rows(sms_hub, Client)
    assert card.phone == CLIENT and card.source_channel == "sms"
    (identity,) = await rows(sms_hub, ChannelIdentity)
    assert (identity.channel, identity.external_id) == ("sms", CLIENT)

    (attachment,) = mms.attachments
    assert attachment["kind"] == "image" and attachment["mime_type"] == "image/jpeg"
    assert attachment["url"] == picture
    channel = sms_hub.hub.channels["sms"]
    fetched = await channel.fetch_attachment("main", attachment["ref"])
    assert fetched.content == b"\xff\xd8\xff\xe0 a photo" and fetched.mime_type == "image/jpeg"
    assert twilio.requests[-1].authorized


async def test_forged_malformed_and_oversized_webhooks_are_refused(
    sms_hub: RunningHub, twilio: FakeTwilio
) -> None:
    base = sms_hub.base_url
    forged = inbound_params(sid("SM"), CLIENT, "forged")
    assert (await post_webhook(base, PATH, forged, signed_base=PUBLIC, auth_token="wrong"))[
        0
    ] == 403
    assert (await post_webhook(base, PATH, forged, signature=""))[0] == 403
    assert (await post_webhook(base, PATH, forged, signature="bm90IGEgc2lnbmF0dXJl"))[0] == 403
    # Behind the proxy Twilio signed the public URL: the hub's own address doesn't verify.
    assert (await post_webhook(base, PATH, forged))[0] == 403
    # Signed for another inbox, replayed to this one.
    wrong_path = PUBLIC + "/webhooks/sms/vip"
    signature = compute_signature(AUTH_TOKEN, wrong_path, forged)
    assert (await post_webhook(base, PATH, forged, signature=signature))[0] == 403

    no_sid = [(k, v) for k, v in inbound_params("SMx", CLIENT, "x") if k != "MessageSid"]
    no_from = [(k, v) for k, v in inbound_params(sid("SM"), CLIENT, "x") if k != "From"]
    for params in (no_sid, no_from):
        assert (await post_webhook(base, PATH, params, signed_base=PUBLIC))[0] == 400
    receipt = [(k, v) for k, v in status_params(sid("SM"), "delivered") if k != "MessageStatus"]
    assert (await post_webhook(base, PATH + "/status", receipt, signed_base=PUBLIC))[0] == 400
    forged_receipt = status_params(sid("SM"), "delivered")
    assert (await post_webhook(base, PATH + "/status", forged_receipt, auth_token="x"))[0] == 403

    async with aiohttp.ClientSession() as http:
        signature = compute_signature(AUTH_TOKEN, PUBLIC + PATH, [])
        for body, content_type in (
            (b"MessageSid=SM1&From=%2B380&Body=%ff", "application/x-www-form-urlencoded"),
            (b'{"MessageSid": "SM1"}', "application/json"),
        ):
            headers = {"Content-Type": content_type, "X-Twilio-Signature": signature}
            async with http.post(base + PATH, data=body, headers=headers) as resp:
                assert resp.status == 400
        huge = b"Body=" + b"a" * (70 * 1024)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"}
        async with http.post(base + PATH, data=huge, headers=headers) as resp:
            assert resp.status == 413

    # The twilio package's own signer, end to end: accepted.
    official = RequestValidator(AUTH_TOKEN)
    genuine = inbound_params(sid("SM"), CLIENT, "genuine")
    answer = await post_webhook(
        base,
        PATH,
        genuine,
        signed_base=PUBLIC,
        sign=lambda url, p: official.compute_signature(url, dict(p)),
    )
    assert answer[0] == 200
    await stored_in(sms_hub, "genuine")
    assert [m.text for m in await rows(sms_hub, Message)] == ["genuine"]
    assert twilio.requests == []


async def test_without_a_public_url_the_request_url_is_signed(
    settings: Any, redis: Any, twilio: FakeTwilio
) -> None:
    del redis
    running = await start_hub(sms_settings(settings, twilio, hub_public_url=None))
    try:
        params = inbound_params(sid("SM"), CLIENT, "public?")
        assert (await post_webhook(running.base_url, PATH, params, signed_base=PUBLIC))[0] == 403
        assert (await post_webhook(running.base_url, PATH, params))[0] == 200
        message = await stored_in(running, "public?")
        public_id = await reply(running, message.conversation_id, "Hello!")
        await settled(running, public_id, "sent")
        (request,) = twilio.creates()
        assert request.get("StatusCallback") is None
    finally:
        await running.stop()


async def test_stop_and_start_set_consent_and_the_bot_stays_quiet(
    settings: Any, redis: Any, twilio: FakeTwilio
) -> None:
    del redis
    running = await start_hub(sms_settings(settings, twilio, hub_bot="offline"))
    try:
        sent = ["Привіт", "STOP", "  start ", "Скасувати", "Дякую"]
        flags = {"Скасувати": "STOP"}  # a custom Advanced Opt-Out keyword, flagged by Twilio
        for body in sent:
            answer = await text_in(running, body, opt_out_type=flags.get(body))
            assert answer == (200, "text/xml", TWIML_EMPTY)
        last = await stored_in(running, "Дякую")
        await eventually(lambda: _answered(running, last.public_id))

        entries = await rows(running, AuditEntry, AuditEntry.action == "consent")
        assert [e.changes["marketing_consent"] for e in entries] == [[False, True], [True, False]]
        (card,) = await rows(running, Client)
        assert card.marketing_consent is False
        # Keywords are stored for staff to see; the bot answered only the two others (a
        # turn may answer with several messages, each keyed by the message it answers).
        inbound = await rows(running, Message, Message.direction == "in")
        assert [m.text for m in inbound] == sent
        answered = {m.text for m in inbound if await _answered(running, m.public_id)}
        assert answered == {"Привіт", "Дякую"}
        outbound = await rows(running, Message, Message.direction == "out")
        await eventually(lambda: _at_least(twilio.created, len(outbound)))
        assert len(twilio.created) == len(outbound)
    finally:
        await running.stop()


async def _answered(running: RunningHub, public_id: str) -> bool:
    prefix = f"bot:{public_id}:"
    return any(
        (m.outbound_key or "").startswith(prefix)
        for m in await rows(running, Message, Message.direction == "out")
    )


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_replies_go_out_with_segments_and_receipts_follow(
    sms_hub: RunningHub, twilio: FakeTwilio
) -> None:
    assert (await text_in(sms_hub, "Можна записатися?"))[0] == 200
    conversation_id = (await stored_in(sms_hub, "Можна записатися?")).conversation_id

    cyrillic = "Так, звісно! Завтра о 15:00 у майстрині Олени є вільне вікно. Записати вас?"
    cyrillic = cyrillic.ljust(80, ".")
    assert len(cyrillic) == 80
    twilio.num_segments = None  # Twilio leaves it out: our count is stored
    first = await reply(sms_hub, conversation_id, cyrillic, quick_replies=[QuickReply(text="Так")])
    sent = await settled(sms_hub, first, "sent")
    (request,) = twilio.creates()
    assert request.authorized
    assert (request.get("To"), request.get("From")) == (CLIENT, FROM_NUMBER)
    assert request.get("Body") == cyrillic + "\n1) Так"
    callback_url = request.get("StatusCallback")
    assert callback_url == f"{PUBLIC}{PATH}/status?id={first}"
    assert sent.provider_message_id == twilio.created[0]["sid"]
    assert sent.segments == 2

    # Twilio's own count wins when it gives one.
    twilio.num_segments = "3"
    second = await reply(sms_hub, conversation_id, "See you tomorrow!")
    assert (await settled(sms_hub, second, "sent")).segments == 3

    # Receipts, signed over the exact callback URL Twilio was given.
    query = callback_url.removeprefix(f"{PUBLIC}{PATH}/status")
    first_sid = twilio.created[0]["sid"]
    for step in ("queued", "sending", "sent", "delivered"):
        assert await callback(sms_hub, query, status_params(first_sid, step)) == 200
    delivered = await settled(sms_hub, first, "delivered")
    assert delivered.error is None

    # Found by Twilio's id alone (a callback configured on the Messaging Service).
    second_sid = twilio.created[1]["sid"]
    receipt = status_params(second_sid, "undelivered", error_code=30006)
    assert await callback(sms_hub, "", receipt) == 200
    failed = await settled(sms_hub, second, "failed")
    assert failed.error == "30006: Landline or unreachable carrier"
    (identity,) = await rows(sms_hub, ChannelIdentity)
    assert identity.unreachable_at is not None
    assert identity.unreachable_reason == "30006: Landline or unreachable carrier"
    # A receipt for a message we never sent changes nothing.
    assert await callback(sms_hub, "", status_params(sid("SM"), "delivered")) == 200


async def test_send_failures_retries_and_a_token_that_never_reaches_the_logs(
    sms_hub: RunningHub, twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    channel = sms_hub.hub.channels["sms"]
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    channel.sleep = no_wait  # type: ignore[attr-defined]
    assert (await text_in(sms_hub, "Hello"))[0] == 200
    conversation_id = (await stored_in(sms_hub, "Hello")).conversation_id

    # Too many requests, then fine: sent once, after Twilio's Retry-After.
    twilio.fail(429, retry_after=7)
    first = await reply(sms_hub, conversation_id, "Hi! How can we help?")
    await settled(sms_hub, first, "sent")
    assert [r.status for r in twilio.creates()] == [429, 201]
    assert len(twilio.created) == 1 and slept == [7.0]

    # Twilio down for longer than the dispatcher's patience.
    twilio.fail(500, times=10)
    second = await reply(sms_hub, conversation_id, "Are you there?")
    gave_up = await settled(sms_hub, second, "failed")
    assert gave_up.error.startswith("gave up after 5 attempts") and "20500" in gave_up.error
    twilio.failures.clear()

    # The client replied STOP at Twilio: permanent, and the identity is unreachable.
    twilio.fail(400, code=21610)
    third = await reply(sms_hub, conversation_id, "A promo!")
    refused = await settled(sms_hub, third, "failed")
    assert refused.error == "21610: Attempt to send to unsubscribed recipient"
    assert refused.attempts == 1
    (identity,) = await rows(sms_hub, ChannelIdentity)
    assert identity.unreachable_at is not None

    # A number Twilio can't text: failed with Twilio's own words, not retried.
    assert (await text_in(sms_hub, "hi from a short number", sender="+1555"))[0] == 200
    other = (await stored_in(sms_hub, "hi from a short number")).conversation_id
    fourth = await reply(sms_hub, other, "Hello!")
    invalid = await settled(sms_hub, fourth, "failed")
    assert invalid.error == "21211: The 'To' number +1555 is not a valid phone number."
    assert invalid.attempts == 1

    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert "twilio refused" in caplog.text  # the logs were captured at all
    for secret in (AUTH_TOKEN, basic):
        assert secret not in caplog.text
        assert all(secret not in (m.error or "") for m in await rows(sms_hub, Message))
