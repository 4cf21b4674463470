"""Instagram's private mode: instagrapi against a local fake of the private API, in a running
hub (SQLite and PostgreSQL): polling, dedupe, replies, pauses, logins and sessions."""

from __future__ import annotations

import io
import logging
import re
import time
from typing import Any

import aiohttp
import pytest
import responses
from instagrapi import exceptions as ig
from PIL import Image
from pydantic import SecretStr

from channels import instagram_private_api as api
from channels.base import PermanentSendError
from channels.instagram_private import (
    BACKOFF_BASE,
    HOLD_SENDS_FOR,
    InstagramPaused,
    PrivateInstagramChannel,
    backoff,
    from_settings,
    split_text,
)
from channels.instagram_private_items import describe, parse_item
from crm_store.models import ChannelIdentity, Client, Conversation, Message
from hub.messages import Attachment, OutboundMessage
from tests.fakes.instagram_private_server import (
    FEEDBACK_BODY,
    PASSWORD,
    USERNAME,
    FakeInstagram,
    challenge_body,
)
from tests.support import RunningHub, eventually, rows, start_hub

# Items, pure -----------------------------------------------------------------------------


def _described(item: dict[str, Any]) -> tuple[str, list[Any]] | None:
    parsed = parse_item(item)
    assert parsed is not None
    return describe(parsed)


def test_items_read_as_staff_should_see_them() -> None:
    fake = FakeInstagram()
    client = fake.add_user(1001, "olena.k", "Olena K")
    assert _described(fake.text_item(client, "Привіт")) == ("Привіт", [])
    text, (photo,) = _described(fake.image_item(client, "https://cdn.example/p.jpg"))  # type: ignore[misc]
    assert text == "" and photo.kind == "image" and photo.url == "https://cdn.example/p.jpg"
    assert photo.mime_type == "image/jpeg" and photo.ref
    text, (voice,) = _described(fake.voice_item(client, "https://cdn.example/v.m4a"))  # type: ignore[misc]
    assert (voice.kind, voice.url, voice.mime_type) == (
        "voice",
        "https://cdn.example/v.m4a",
        "audio/mp4",
    )
    text, (story,) = _described(fake.story_reply_item(client, "Хочу так!", "https://c/s.jpg"))  # type: ignore[misc]
    assert text == "[reply to story] Хочу так!" and story.url == "https://c/s.jpg"
    shared = _described(fake.media_share_item(client, "CxYz1", "Nude manicure"))
    assert shared == (
        "[shared post] @beauty.salon.demo https://www.instagram.com/p/CxYz1/ Nude manicure",
        [],
    )
    reel = _described(fake.clip_item(client, "Cr33l"))
    assert reel == ("[shared reel] @nails.inspo https://www.instagram.com/reel/Cr33l/", [])
    link = _described(
        fake.link_item(client, "Book here https://x.example/b", "https://x.example/b")
    )
    assert link == ("Book here https://x.example/b", [])
    assert _described(fake.reaction_item(client)) is None  # a reaction is not a message
    odd = fake.text_item(client, "")
    odd["item_type"] = "hologram"
    assert _described(odd) == ("[instagram hologram]", [])
    assert parse_item({"item_type": "text", "text": "no id"}) is None


def test_what_errors_mean() -> None:
    kinds = {
        ig.ChallengeRequired(): "owner",
        ig.ChallengeUnknownStep(): "owner",
        ig.TwoFactorRequired(): "owner",
        ig.BadPassword(): "owner",
        ig.AccountSuspended(): "owner",
        api.OwnerActionNeeded(): "owner",
        ig.LoginRequired(): "login",
        ig.FeedbackRequired(message="feedback_required: Try Again Later"): "rate",
        ig.PleaseWaitFewMinutes(): "rate",
        ig.ClientThrottledError(): "rate",
        ig.RateLimitError(): "rate",
        ig.DirectMessageRequestsDisabled(): "refused",
        ig.ClientConnectionError(): "transient",
        ConnectionResetError(): "transient",
    }
    for exc, kind in kinds.items():
        assert api.classify(exc).kind == kind, exc
    assert "challenge" in api.classify(ig.ChallengeRequired()).reason
    assert "restart the hub" in api.classify(ig.ChallengeRequired()).reason
    # Backoff: 15 min doubling, at most 6 h.
    assert [backoff(n) / 60 for n in range(6)] == [15, 30, 60, 120, 240, 360]
    parts = split_text(("word " * 500).strip())
    assert len(parts) == 3 and all(len(p) <= 1000 for p in parts)
    assert " ".join(parts).split() == ["word"] * 500


def test_challenge_prompts_raise_instead_of_waiting_for_a_keyboard() -> None:
    client = api.build_client(api.ApiOptions(request_timeout=0, transport="requests"))
    assert client.with_challenge_flow is False
    with pytest.raises(api.OwnerActionNeeded):
        client.challenge_code_handler(USERNAME, "email")
    with pytest.raises(api.OwnerActionNeeded):
        client.change_password_handler(USERNAME)
    assert client.request_timeout == 0 and client.private_transport == "requests"
    assert api.build_client(api.ApiOptions()).private_transport == "curl"


class _NoCtx:
    pass


def test_on_only_with_username_and_password(settings: Any) -> None:
    ctx: Any = _NoCtx()
    assert from_settings(settings, ctx) is None
    assert from_settings(settings.model_copy(update={"instagram_username": USERNAME}), ctx) is None
    on = from_settings(
        settings.model_copy(
            update={"instagram_username": USERNAME, "instagram_password": SecretStr(PASSWORD)}
        ),
        ctx,
    )
    assert isinstance(on, PrivateInstagramChannel) and on.name == "instagram"
    assert on.config.api.transport == "curl" and on.config.api.request_timeout > 0
    assert PASSWORD not in repr(on) and PASSWORD not in repr(on.config)


# A running hub against the fake ------------------------------------------------------------


class Clock:
    """Wall time, moved ahead at will: backoffs are checked without waiting for them."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
async def fake() -> Any:
    async with FakeInstagram() as server:
        yield server


def ig_settings(settings: Any, fake: FakeInstagram, **overrides: Any) -> Any:
    values = {
        "instagram_mode": "private",
        "instagram_username": USERNAME,
        "instagram_password": SecretStr(PASSWORD),
        "instagram_private_api_url": fake.base_url,
        "instagram_poll_interval_s": 3600,  # tests poll with wake(), not the clock
        "instagram_poll_jitter_s": 0,
        **overrides,
    }
    return settings.model_copy(update=values)


def channel_of(running: RunningHub, clock: Clock | None = None) -> PrivateInstagramChannel:
    channel = running.hub.channels["instagram"]
    assert isinstance(channel, PrivateInstagramChannel)
    if clock is not None:
        channel.clock = clock
    return channel


async def polled(channel: PrivateInstagramChannel, times: int = 1) -> None:
    """Run `times` more whole poll cycles now (instead of at the interval).

    A cycle already under way when we wake the poller does not count: it may have read
    the inbox before the test changed what the fake answers."""
    for _ in range(times):
        target = channel.begun + 1
        channel.wake()

        async def done(target: int = target) -> bool:
            return channel.cycles >= target

        await eventually(done)


async def inbound(running: RunningHub) -> list[Message]:
    return await rows(running, Message, Message.direction == "in")


async def healthz(running: RunningHub) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(running.base_url + "/healthz") as resp:
        return (await resp.json())["channels"]["instagram"]


async def test_messages_land_once_and_replies_go_back_to_the_thread(
    settings: Any, redis: Any, fake: FakeInstagram, caplog: pytest.LogCaptureFixture
) -> None:
    del redis
    caplog.set_level(logging.DEBUG)
    olena = fake.add_user(1001, "olena.k", "Olena Kovalenko")
    thread = fake.add_thread(olena)
    fake.add_item(thread, fake.text_item(olena, "A message from last year"))  # history

    running = await start_hub(ig_settings(settings, fake, hub_bot="offline"))
    try:
        channel = channel_of(running)
        await polled(channel)  # connected, history left alone
        assert fake.logins == 1 and channel.status().state == "ok"
        photo = fake.add_file("nails.jpg", b"\xff\xd8\xff\xe0 jpeg", "image/jpeg")
        voice = fake.add_file("voice.m4a", b"\x00\x00\x00\x18ftypM4A", "audio/mp4")
        question = "Добрий день! Скільки коштує манікюр?"
        fake.add_item(thread, fake.text_item(olena, question))
        fake.add_item(thread, fake.image_item(olena, photo))
        fake.add_item(thread, fake.voice_item(olena, voice))
        fake.add_item(thread, fake.story_reply_item(olena, "Хочу такий!", photo))
        fake.add_item(thread, fake.media_share_item(olena, "CxYz1", "Nude"))
        fake.add_item(thread, fake.clip_item(olena, "Cr33l"))
        fake.add_item(thread, fake.reaction_item(olena))
        # More than the inbox shows inline (10): the rest comes from direct_v2/threads/<id>.
        for n in range(12):
            fake.add_item(thread, fake.text_item(olena, f"extra {n}"))
        # A message request from someone new.
        ivan = fake.add_user(1002, "ivan.p", "Ivan P")
        request = fake.add_thread(ivan, pending=True)
        fake.add_item(request, fake.text_item(ivan, "Hi, do you do beards?"))

        await polled(channel)
        await eventually(lambda: _count_in(running, 19))
        await polled(channel, 2)  # again: nothing new, nothing twice
        stored = await inbound(running)
        chat = {c.id: c.chat_id for c in await rows(running, Conversation)}
        from_olena = [m.text for m in stored if chat[m.conversation_id] == thread]
        assert from_olena[:6] == [
            question,
            "",
            "",
            "[reply to story] Хочу такий!",
            "[shared post] @beauty.salon.demo https://www.instagram.com/p/CxYz1/ Nude",
            "[shared reel] @nails.inspo https://www.instagram.com/reel/Cr33l/",
        ]
        assert len(stored) == 19 and "A message from last year" not in [m.text for m in stored]
        assert len({m.provider_message_id for m in stored}) == 19
        by_text = {m.text: m for m in stored}
        assert from_olena[6:] == [f"extra {n}" for n in range(12)]
        image, audio = (m for m in stored if m.text == "")
        assert image.attachments[0]["url"] == photo and image.attachments[0]["kind"] == "image"
        assert audio.attachments[0]["kind"] == "voice" and audio.attachments[0]["url"] == voice
        assert chat[by_text["Hi, do you do beards?"].conversation_id] == request
        cards = {c.name for c in await rows(running, Client)}
        assert cards == {"Olena Kovalenko", "Ivan P"}
        identities = {(i.external_id, i.username) for i in await rows(running, ChannelIdentity)}
        assert identities == {("1001", "olena.k"), ("1002", "ivan.p")}

        # The bot answered the question in Olena's thread, and Ivan's request (accepted first).
        await eventually(lambda: _sent_to(fake, thread))
        await eventually(lambda: _sent_to(fake, request))
        assert request in fake.approved
        last_from_olena = [m for m in stored if chat[m.conversation_id] == thread][-1]
        assert (thread, last_from_olena.provider_message_id) in fake.seen
        outbound = await eventually(lambda: _all_sent(running))
        sends_before = len(fake.sends)
        assert sorted(m.provider_message_id for m in outbound) == sorted(
            s["item_id"] for s in fake.sends
        )
        await polled(channel)  # our own replies come back in the inbox: not client messages
        assert len(await inbound(running)) == 19
    finally:
        await running.stop()

    # A restart: the saved session and cursors are reused; nothing is taken or sent twice.
    again = await start_hub(ig_settings(settings, fake, hub_bot="offline"))
    try:
        channel = channel_of(again)
        await polled(channel, 2)
        assert fake.logins == 1
        assert len(await inbound(again)) == 19
        fake.add_item(thread, fake.text_item(olena, "Дякую, до зустрічі"))
        await polled(channel)
        await eventually(lambda: _count_in(again, 20))
        # Every reply stored is sent once. (Whether the bot answers this one depends on how
        # many turns the burst above took: two it could not help with hand the chat to staff.)
        outbound = await eventually(lambda: _sent_as_stored(again, fake))
        assert len(outbound) >= sends_before
        # A send the dispatcher repeats after a crash goes out once.
        msg = OutboundMessage(
            conversation_id=outbound[0].conversation_id,
            channel="instagram",
            inbox="main",
            chat_id=thread,
            text="Once only",
        )
        first = await channel.send(msg)
        second = await channel.send(msg)
        assert first.provider_message_id == second.provider_message_id
        assert [s["text"] for s in fake.sends].count("Once only") == 1

        # The owner answers Olena from the phone: a staff reply in her conversation, and the
        # bot steps back. (The hub's own sends seen in the inbox are not stored again; "Once
        # only" above went round the hub, straight to the channel, so it reads as staff's.)
        fake.add_item(thread, fake.text_item(fake.viewer, "Олено, це Ірина, підкажу особисто"))
        await polled(channel)
        (by_owner,) = await eventually(
            lambda: rows(
                again,
                Message,
                Message.author == "staff",
                Message.text == "Олено, це Ірина, підкажу особисто",
            )
        )
        staff = await rows(again, Message, Message.author == "staff")
        assert sorted(m.text for m in staff) == ["Once only", by_owner.text]
        (conversation,) = await rows(again, Conversation, Conversation.chat_id == thread)
        assert conversation.status == "human"
        assert conversation.id == by_owner.conversation_id
    finally:
        await again.stop()
    # Neither the password nor the session (cookies, token) reaches a log, instagrapi's
    # included (the database driver's debug log prints every SQL parameter: not ours).
    (session_id,) = fake.sessions
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("aiosqlite", "sqlalchemy"))
    )
    assert "logging in as" in logged and "login_required" not in logged
    for secret in (PASSWORD, session_id, session_id.split("%3A")[-1]):
        assert secret not in logged


async def _count_in(running: RunningHub, n: int) -> bool:
    return len(await inbound(running)) >= n


async def _sent_to(fake: FakeInstagram, thread_id: str) -> bool:
    return any(s["thread_id"] == thread_id for s in fake.sends)


async def _all_sent(running: RunningHub) -> list[Message] | None:
    out = await rows(running, Message, Message.direction == "out")
    return out if out and all(m.status == "sent" for m in out) else None


async def _sent_as_stored(running: RunningHub, fake: FakeInstagram) -> list[Message] | None:
    """The outbound rows, once each is sent and the provider has exactly that many sends (a
    reply stored a moment later makes the two differ until it is out)."""
    out = await _all_sent(running)
    return out if out is not None and len(fake.sends) == len(out) else None


async def test_a_challenge_pauses_until_the_owner_acts_and_never_loops(
    settings: Any, redis: Any, fake: FakeInstagram
) -> None:
    del redis
    fake.login_mode = "challenge"
    clock = Clock()
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running, clock)
        await polled(channel, 3)
        status = await healthz(running)
        assert status["state"] == "paused" and status["until"] is None
        assert "challenge" in status["reason"] and "restart" in status["reason"]
        assert fake.logins == 1  # asked once, not again and again
        msg = OutboundMessage(
            conversation_id=1, channel="instagram", inbox="main", chat_id="1", text="x"
        )
        with pytest.raises(InstagramPaused):  # retried later by the dispatcher
            await channel.send(msg)
        clock.ahead = HOLD_SENDS_FOR + 1  # nobody answered the challenge for an hour
        with pytest.raises(PermanentSendError):
            await channel.send(msg)
        clock.ahead = 0
        assert fake.sends == []
    finally:
        await running.stop()

    # Restarted right away (a supervisor, not the owner): no login before the backoff.
    fake.login_mode = "ok"
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running, clock)
        await polled(channel, 3)
        assert fake.logins == 1
        status = await healthz(running)
        assert status["state"] == "paused" and status["until"] is not None
        clock.ahead = backoff(1) + 1  # the owner confirmed in the app; the backoff is over
        await polled(channel)
        assert fake.logins == 2 and (await healthz(running))["state"] == "ok"
    finally:
        await running.stop()


async def test_a_challenge_on_a_saved_session_pauses_polling(
    settings: Any, redis: Any, fake: FakeInstagram
) -> None:
    del redis
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running)
        await polled(channel)
        fake.fail_next("direct_v2/inbox/", 400, challenge_body("direct_v2/inbox/"))
        await polled(channel)
        reads = fake.inbox_reads()
        await polled(channel, 2)
        assert fake.inbox_reads() == reads  # polling stopped
        status = await healthz(running)
        assert status["state"] == "paused" and "challenge" in status["reason"]
    finally:
        await running.stop()
    # Restarted after the owner confirmed: the same session goes on, no password login.
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running)
        await polled(channel)
        assert fake.logins == 1 and (await healthz(running))["state"] == "ok"
    finally:
        await running.stop()


async def test_rate_limits_back_off_and_resume(
    settings: Any, redis: Any, fake: FakeInstagram
) -> None:
    del redis
    clock = Clock()
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running, clock)
        await polled(channel)
        fake.fail_next("direct_v2/inbox/", 429)
        await polled(channel)
        status = await healthz(running)
        assert status["state"] == "paused" and "wait a few minutes" in status["reason"]
        reads = fake.inbox_reads()
        await polled(channel, 2)
        assert fake.inbox_reads() == reads  # nothing before the backoff is over
        clock.ahead = BACKOFF_BASE + 1
        fake.fail_next("direct_v2/inbox/", 400, FEEDBACK_BODY)
        await polled(channel)
        status = channel.status()
        assert status.state == "paused" and "feedback_required" in status.reason
        assert status.until is not None
        assert status.until.timestamp() == pytest.approx(clock() + backoff(1), abs=5)
        clock.ahead += backoff(1) + 1
        await polled(channel)
        assert channel.status().state == "ok" and fake.inbox_reads() == reads + 2
        # A server error is no rate limit: shown as an error, tried again after an interval.
        fake.fail_next("direct_v2/inbox/", 500)
        await polled(channel)
        status = channel.status()
        assert status.state == "error" and "ClientError" in status.reason
        clock.ahead += 3600 + 1  # the poll interval of ig_settings
        await polled(channel)
        assert channel.status().state == "ok" and fake.inbox_reads() == reads + 4
    finally:
        await running.stop()


async def test_an_ended_session_logs_in_again_at_most_once_per_backoff(
    settings: Any, redis: Any, fake: FakeInstagram
) -> None:
    del redis
    clock = Clock()
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running, clock)
        await polled(channel)
        assert fake.logins == 1
        fake.expire_sessions()  # Instagram logged us out
        await polled(channel, 4)
        assert fake.logins == 1  # logged in moments ago: waits
        status = channel.status()
        assert status.state == "paused" and "login_required" in status.reason
        # Thrown out right after a login counts as a failure: the wait doubles (30 min).
        clock.ahead = BACKOFF_BASE + 1
        await polled(channel)
        assert fake.logins == 1
        clock.ahead = backoff(1) + 1
        await polled(channel)
        assert fake.logins == 2 and channel.status().state == "ok"
    finally:
        await running.stop()


async def test_pictures_go_as_photos(settings: Any, redis: Any, fake: FakeInstagram) -> None:
    del redis
    olena = fake.add_user(1001, "olena.k", "Olena K")
    picture = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 120, 150)).save(picture, "JPEG")
    url = fake.add_file("design.jpg", picture.getvalue(), "image/jpeg")
    running = await start_hub(ig_settings(settings, fake))
    try:
        channel = channel_of(running)
        await polled(channel)
        thread = fake.add_thread(olena)
        fake.add_item(thread, fake.text_item(olena, "Покажіть дизайн"))
        await polled(channel)
        (message,) = await eventually(lambda: inbound(running))
        # The photo upload goes to rupload.facebook.com through a session of instagrapi's
        # own: `responses` plays that host; everything else still reaches the fake.
        with responses.RequestsMock(assert_all_requests_are_fired=True) as upload:
            upload.add_passthru(fake.base_url)
            upload.add(
                responses.POST,
                re.compile(r"https://rupload\.facebook\.com/messenger_image/.+"),
                json={"media_id": 987654321},
            )
            status = await channel.send(
                OutboundMessage(
                    conversation_id=message.conversation_id,
                    channel="instagram",
                    inbox="main",
                    chat_id=thread,
                    text="Ось такий",
                    attachments=[Attachment(kind="image", url=url, mime_type="image/jpeg")],
                )
            )
            assert upload.calls[0].request.body[:2] == b"\xff\xd8"  # a JPEG went up
        kinds = [(s["kind"], s["text"], s["attachment_fbid"]) for s in fake.sends]
        assert kinds == [("text", "Ось такий", None), ("photo_attachment", None, "987654321")]
        assert status.status == "sent" and status.provider_message_id == fake.sends[-1]["item_id"]
        # Not a picture Pillow can open (or not there at all): its link goes instead.
        broken = fake.add_file("broken.jpg", b"not a jpeg", "image/jpeg")
        status = await channel.send(
            OutboundMessage(
                conversation_id=message.conversation_id,
                channel="instagram",
                inbox="main",
                chat_id=thread,
                attachments=[Attachment(kind="image", url=broken)],
            )
        )
        assert fake.sends[-1]["kind"] == "link" and fake.sends[-1]["text"] == broken
        assert status.provider_message_id == fake.sends[-1]["item_id"]
    finally:
        await running.stop()


async def test_one_hub_process_polls_and_logs_in(
    settings: Any, redis: Any, fake: FakeInstagram
) -> None:
    del redis
    first = await start_hub(ig_settings(settings, fake))
    second = await start_hub(ig_settings(settings, fake))
    try:
        channels = [channel_of(first), channel_of(second)]

        async def one_leads() -> bool:
            return sum(c.status().reason == "" for c in channels) == 1

        await eventually(one_leads)
        leader = next(c for c in channels if c.status().reason == "")
        other = next(c for c in channels if c is not leader)
        await polled(leader, 2)
        assert fake.logins == 1 and other.cycles == 0
        assert "another hub process" in other.status().reason
        # The other process still sends, on the session the poller saved.
        olena = fake.add_user(1001, "olena.k", "Olena K")
        thread = fake.add_thread(olena)
        fake.add_item(thread, fake.text_item(olena, "Hi"))
        msg = OutboundMessage(
            conversation_id=1, channel="instagram", inbox="main", chat_id=thread, text="Hello"
        )
        assert (await other.send(msg)).status == "sent"
        assert fake.logins == 1 and fake.sends[-1]["thread_id"] == thread
    finally:
        await second.stop()
        await first.stop()
