"""The scheduler on a running hub, against fake Telegram and Twilio servers, on a clock the test
moves: reminders go once at their time, two schedulers never send one twice, a crash mid-send
loses nothing and doubles nothing, a failed channel fails over to SMS, quiet hours hold back
what can wait, and a channel's rate is kept."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import select, update

from crm_store import broadcasts
from crm_store.appointments import Author, book
from crm_store.conversations import InboundData, record_inbound
from crm_store.db import transaction
from crm_store.identity import Hints
from crm_store.models import (
    Appointment,
    Broadcast,
    ChannelIdentity,
    Client,
    Message,
    ScheduledMessage,
)
from crm_store.scheduled import Planned, enqueue
from hub.config import Settings
from hub.state import Hub
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio
from tests.salon import RULES, Salon, build_salon, kyiv
from tests.support import RunningHub, eventually, rows, start_hub

TOKEN = "7123456789:AAHk3xZpQv9mN2bRt5Yw8cLd4Fg6Hj1KsEo"
PHONE = "+380671234567"
NOW = kyiv("2026-12-01 12:00")


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeTwilio]]:
    async with FakeTelegram(max_poll_wait=0.2) as telegram, FakeTwilio() as twilio:
        telegram.add_bot(TOKEN, "salon_bot")
        yield telegram, twilio


def hub_settings(settings: Settings, telegram: FakeTelegram, twilio: FakeTwilio, **extra: Any):
    values: dict[str, Any] = {
        "telegram_bot_tokens": SecretStr(TOKEN),
        "telegram_api_url": telegram.base_url,
        "telegram_mode": "polling",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "twilio_from_number": FROM_NUMBER,
        "twilio_api_url": twilio.base_url,
        "hub_public_url": "https://salon.example.com",
        "hub_send_rates": "telegram=1000,sms=1000",
        **extra,
    }
    return settings.model_copy(update=values)


@asynccontextmanager
async def running_hub(settings: Settings, clock: Clock, **kw: Any) -> AsyncIterator[RunningHub]:
    running = await start_hub(settings, clock=clock, **kw)
    try:
        yield running
    finally:
        await running.stop()


async def telegram_client(
    running: RunningHub,
    chat: int,
    *,
    name: str = "Oksana",
    phone: str | None = None,
    language: str = "uk",
) -> int:
    """A client who wrote to the bot once (so the bot may write to them)."""
    async with transaction(running.hub.sessions) as session:
        record = await record_inbound(
            session,
            InboundData(
                channel="telegram",
                inbox="main",
                chat_id=str(chat),
                sender_id=str(chat),
                provider_message_id=f"tg-{chat}",
                sent_at=(NOW - timedelta(days=3)).astimezone(UTC),
                text="Привіт",
                hints=Hints(display_name=name, phone=phone, language=language),
            ),
            now=(NOW - timedelta(days=3)).astimezone(UTC),
        )
        record.client.language = language
        session.add(record.client)
        return record.client.id  # type: ignore[return-value]


async def booked(running: RunningHub, salon: Salon, client_id: int, start: str) -> Appointment:
    async with transaction(running.hub.sessions) as session:
        return await book(
            session,
            client_id=client_id,
            service_id=salon.manicure,
            master_id=salon.iryna,
            start=kyiv(start),
            rules=RULES,
            now=NOW,
            author=Author("staff", None),
        )


def sent_texts(telegram: FakeTelegram) -> list[tuple[int, str]]:
    return [
        (int(c.params["chat_id"]), str(c.params["text"]))
        for c in telegram.calls_of("sendMessage", ok=True)
    ]


async def scheduled_rows(running: RunningHub, *where: Any) -> list[ScheduledMessage]:
    return await rows(running, ScheduledMessage, *where)


async def wait_sent(telegram: FakeTelegram, count: int) -> list[tuple[int, str]]:
    return await eventually(lambda: _at_least(sent_texts(telegram), count), timeout=20)


async def _at_least(items: list[Any], count: int) -> list[Any] | None:
    return items if len(items) >= count else None


# Reminders ---------------------------------------------------------------------------------


async def test_a_reminder_goes_once_at_its_time_in_the_clients_language(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    async with running_hub(hub_settings(settings, telegram, twilio), clock) as running:
        salon = await build_salon(running.hub.sessions)
        uk = await telegram_client(running, 5001)
        en = await telegram_client(running, 5002, name="Anna Smith", language="en")
        await booked(running, salon, uk, "2026-12-09 15:00")
        appointment = await booked(running, salon, en, "2026-12-09 17:00")

        clock.now = kyiv("2026-12-08 14:59")
        report = await running.hub.scheduler.tick()
        assert report.sent == 0 and sent_texts(telegram) == []

        clock.now = kyiv("2026-12-08 15:00")
        assert (await running.hub.scheduler.tick()).sent == 1
        ((chat, text),) = await wait_sent(telegram, 1)
        assert chat == 5001
        assert text.startswith("Oksana, нагадуємо про ваш запис: середа, 9 грудня, о 15:00.")
        assert "Манікюр з покриттям, майстер Iryna" in text
        markup = json.loads(telegram.calls_of("sendMessage")[0].params["reply_markup"])
        labels = [b["text"] for row in markup["inline_keyboard"] for b in row]
        assert labels == ["Підтверджую", "Скасувати", "Перенести"]

        clock.now = kyiv("2026-12-08 17:00")
        for _ in range(3):  # ticking again sends nothing twice
            await running.hub.scheduler.tick()
        sent = await wait_sent(telegram, 2)
        await asyncio.sleep(0.2)
        assert len(sent_texts(telegram)) == 2
        assert sent[1] == (
            5002,
            "Anna, a reminder of your appointment: Wednesday, 9 December at 17:00.\n"
            "Gel manicure with Iryna.",
        )
        stored = await rows(running, Message, Message.author == "system")
        assert [m.text.split(",")[0] for m in stored] == ["Oksana", "Anna"]
        await eventually(
            lambda: rows(running, Message, Message.author == "system", Message.status == "sent")
        )
        done = await scheduled_rows(running, ScheduledMessage.appointment_id == appointment.id)
        assert [(r.status, r.channel, r.attempts) for r in done] == [
            ("sent", "telegram", 1),
            ("pending", None, 0),
        ]
        assert done[0].message_id == stored[1].public_id


async def test_a_reminder_whose_appointment_changed_is_not_sent(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    async with running_hub(hub_settings(settings, telegram, twilio), clock) as running:
        salon = await build_salon(running.hub.sessions)
        client = await telegram_client(running, 5001)
        appointment = await booked(running, salon, client, "2026-12-09 15:00")
        # Moved behind the store's back (another tool wrote the row): the sender checks.
        async with transaction(running.hub.sessions) as session:
            row = await session.get(Appointment, appointment.id)
            assert row is not None
            row.start_at = kyiv("2026-12-09 17:00")
            row.end_at = kyiv("2026-12-09 18:00")
            row.block_end_at = kyiv("2026-12-09 18:15")
            session.add(row)
        clock.now = kyiv("2026-12-08 15:00")
        report = await running.hub.scheduler.tick()
        assert (report.sent, report.skipped) == (0, 1)
        (skipped, _) = await scheduled_rows(running)
        assert (skipped.status, skipped.last_error) == ("skipped", "the appointment was moved")
        await asyncio.sleep(0.2)
        assert sent_texts(telegram) == []


@contextmanager
def dies_after(running: RunningHub, handed: int) -> Iterator[None]:
    """The process "dies" after handing `handed` messages to the outbound stream: every
    later hand-over fails, leaving its row claimed with the message stored."""
    real_publish = running.hub.bus.publish_outbound
    published: list[str] = []

    async def dying(msg: Any) -> None:
        if len(published) >= handed:
            raise ConnectionError("the process died")
        published.append(msg.id)
        await real_publish(msg)

    running.hub.bus.publish_outbound = dying  # type: ignore[method-assign]
    try:
        yield
    finally:
        running.hub.bus.publish_outbound = real_publish  # type: ignore[method-assign]


# Two schedulers, a crash -------------------------------------------------------------------


async def many_reminders(running: RunningHub, count: int) -> int:
    """`count` clients with an appointment each, and all their reminders due now; how many."""
    salon = await build_salon(running.hub.sessions)
    for n in range(count):
        client = await telegram_client(running, 7000 + n, name=f"Client{n}")
        start = kyiv("2026-12-09 10:00") + timedelta(days=n)
        await booked(running, salon, client, start.strftime("%Y-%m-%d %H:%M"))
    async with transaction(running.hub.sessions) as session:
        result = await session.exec(  # type: ignore[call-overload]
            update(ScheduledMessage).values(due_at=(NOW - timedelta(minutes=1)).astimezone(UTC))
        )
        return int(result.rowcount)


async def test_two_schedulers_racing_send_each_reminder_once(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    config = hub_settings(settings, telegram, twilio)
    async with running_hub(config, clock) as first, running_hub(config, clock) as second:
        assert await many_reminders(first, 24) == 48
        for _ in range(3):
            await asyncio.gather(first.hub.scheduler.tick(), second.hub.scheduler.tick())
        sent = await wait_sent(telegram, 48)
        await asyncio.sleep(0.3)
        assert len(sent_texts(telegram)) == 48
        # Two reminders (a day and two hours before) for each of the 24 chats.
        assert sorted(Counter(c for c, _ in sent).values()) == [2] * 24
        final = await scheduled_rows(first)
        assert {r.status for r in final} == {"sent"}
        assert {r.claimed_by for r in final} == {None}
        keys = [m.outbound_key for m in await rows(first, Message, Message.author == "system")]
        assert len(keys) == len(set(keys)) == 48


async def test_a_scheduler_that_dies_mid_send_loses_nothing_and_doubles_nothing(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    config = hub_settings(settings, telegram, twilio, hub_scheduler_lease_s=60)
    async with running_hub(config, clock) as running:
        assert await many_reminders(running, 5) == 10

        # The first attempt stores four messages, then the process "dies" before it hands
        # them to the outbound stream: the rows stay claimed.
        scheduler = running.hub.scheduler
        with dies_after(running, 4):
            await scheduler.tick()
        stuck = await scheduled_rows(running, ScheduledMessage.status == "sending")
        assert len(stuck) == 10 - 4 and all(r.message_id for r in stuck)

        # Within the lease nobody touches them; after it, the next tick finishes the job.
        await scheduler.tick()
        assert len(await scheduled_rows(running, ScheduledMessage.status == "sending")) == 6
        clock.now += timedelta(seconds=61)
        await scheduler.tick()
        await wait_sent(telegram, 10)
        await asyncio.sleep(0.3)
        sent = sent_texts(telegram)
        assert sorted(Counter(c for c, _ in sent).values()) == [2] * 5
        assert len(await rows(running, Message, Message.author == "system")) == 10
        assert {
            r.status for r in await scheduled_rows(running, ScheduledMessage.status != "pending")
        } == {"sent"}


# Failover, quiet hours, rates --------------------------------------------------------------


async def test_a_blocked_telegram_chat_fails_over_to_sms(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    async with running_hub(hub_settings(settings, telegram, twilio), clock) as running:
        salon = await build_salon(running.hub.sessions)
        client = await telegram_client(running, 5001, phone=PHONE)
        await booked(running, salon, client, "2026-12-09 15:00")
        telegram.blocked.add(5001)
        clock.now = kyiv("2026-12-08 15:00")
        await running.hub.scheduler.tick()
        await eventually(
            lambda: rows(
                running, Message, Message.channel == "telegram", Message.status == "failed"
            )
        )
        await running.hub.scheduler.tick()  # fails over
        await eventually(lambda: _at_least(twilio.creates(), 1), timeout=20)
        (sms,) = twilio.creates()
        assert sms.get("To") == PHONE
        assert "нагадуємо про ваш запис" in (sms.get("Body") or "")
        (row, _) = await scheduled_rows(running)
        assert (row.status, row.channel, row.tried) == ("sent", "sms", ["telegram/main/5001"])
        identities = await rows(running, ChannelIdentity, ChannelIdentity.client_id == client)
        assert {(i.channel, i.unreachable_at is not None) for i in identities} == {
            ("telegram", True),
            ("sms", False),
        }
        # The next reminder doesn't try the blocked chat again.
        clock.now = kyiv("2026-12-09 13:00")
        await running.hub.scheduler.tick()
        await eventually(lambda: _at_least(twilio.creates(), 2), timeout=20)
        assert len(telegram.calls_of("sendMessage")) == 1


async def test_with_no_channel_left_the_row_fails_with_the_reasons(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    async with running_hub(hub_settings(settings, telegram, twilio), clock) as running:
        salon = await build_salon(running.hub.sessions)
        client = await telegram_client(running, 5001)  # no phone: nothing to fail over to
        await booked(running, salon, client, "2026-12-09 15:00")
        telegram.blocked.add(5001)
        clock.now = kyiv("2026-12-08 15:00")
        await running.hub.scheduler.tick()
        await eventually(lambda: rows(running, Message, Message.status == "failed"))
        await running.hub.scheduler.tick()
        (row, _) = await scheduled_rows(running)
        assert row.status == "failed"
        assert "tried telegram/main/5001" in (row.last_error or "")
        assert "blocked" in (row.last_error or "")


async def marketing_row(running: RunningHub, client_id: int, due: datetime, key: str) -> None:
    async with transaction(running.hub.sessions) as session:
        await enqueue(
            session,
            [Planned(key=key, kind="reengage", client_id=client_id, due_at=due, payload={})],
            now=due,
        )


async def test_quiet_hours_hold_back_what_can_wait_and_consent_is_required(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(kyiv("2026-12-08 22:00"))
    async with running_hub(hub_settings(settings, telegram, twilio), clock) as running:
        await build_salon(running.hub.sessions)
        willing = await telegram_client(running, 5001)
        unwilling = await telegram_client(running, 5002)
        async with transaction(running.hub.sessions) as session:
            card = await session.get(Client, willing)
            assert card is not None
            card.marketing_consent = True
            session.add(card)
        await marketing_row(running, willing, clock.now, "test:willing")
        await marketing_row(running, unwilling, clock.now, "test:unwilling")
        report = await running.hub.scheduler.tick()
        assert (report.postponed, report.skipped, report.sent) == (1, 1, 0)
        waiting = (await scheduled_rows(running, ScheduledMessage.client_id == willing))[0]
        assert waiting.status == "pending"
        assert waiting.due_at.astimezone(kyiv("2026-12-09 09:00").tzinfo) == kyiv(
            "2026-12-09 09:00"
        )
        refused = (await scheduled_rows(running, ScheduledMessage.client_id == unwilling))[0]
        assert (refused.status, refused.last_error) == ("skipped", "no marketing consent")
        clock.now = kyiv("2026-12-09 08:59")
        assert (await running.hub.scheduler.tick()).sent == 0


async def test_a_channels_rate_is_kept_across_ticks(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    config = hub_settings(settings, telegram, twilio, hub_send_rates="telegram=4")
    async with running_hub(config, clock) as running:
        running.hub.scheduler.limits.burst_s = 1.0  # a bucket of 4
        assert await many_reminders(running, 6) == 12
        first = await running.hub.scheduler.tick()
        assert first.sent == 4
        left = await scheduled_rows(running, ScheduledMessage.status == "pending")
        assert len(left) == 12 - 4
        assert all(r.channel == "telegram" for r in left)  # routed, waiting for the rate


async def test_the_hub_runs_the_scheduler_on_its_own_clock(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    """In production nobody calls tick(): APScheduler does, every HUB_SCHEDULER_INTERVAL_S."""
    telegram, twilio = fakes
    clock = Clock(NOW)
    config = hub_settings(
        settings, telegram, twilio, hub_scheduler=True, hub_scheduler_interval_s=0.1
    )
    async with running_hub(config, clock) as running:
        assert running.hub.scheduler.clock_runner is not None
        assert await many_reminders(running, 2) == 4
        await wait_sent(telegram, 4)
        final = await eventually(lambda: _all_sent(running), timeout=10)
        assert len(final) == 4
    assert running.hub.scheduler.clock_runner is None  # stopped with the hub


async def _all_sent(running: RunningHub) -> list[ScheduledMessage] | None:
    found = await scheduled_rows(running)
    return found if found and all(r.status == "sent" for r in found) else None


# Broadcasts --------------------------------------------------------------------------------


async def test_a_restart_in_the_middle_of_a_broadcast_resumes_without_resending(
    settings: Settings, redis: Any, fakes: tuple[FakeTelegram, FakeTwilio]
) -> None:
    telegram, twilio = fakes
    clock = Clock(NOW)
    slow = hub_settings(settings, telegram, twilio, hub_send_rates="telegram=10")
    async with running_hub(slow, clock) as first:
        for n in range(30):
            client = await telegram_client(first, 8000 + n, name=f"Guest{n}")
            async with transaction(first.hub.sessions) as session:
                card = await session.get(Client, client)
                assert card is not None
                card.marketing_consent = True
                card.tags = ["vip"]
                session.add(card)
        async with transaction(first.hub.sessions) as session:
            draft = await broadcasts.create_draft(
                session,
                title="Winter",
                text="{name}, -20% this week",
                segment={"tags": ["vip"]},
                now=clock.now,
            )
            await broadcasts.launch(session, draft.id, now=clock.now)  # type: ignore[arg-type]
        first.hub.scheduler.limits.burst_s = 1.0  # ten now, the rest later
        # The process dies while handing the sixth message over: five are out, one is
        # stored and claimed, the other claims of this tick stay with the dead process.
        with dies_after(first, 5):
            await first.hub.scheduler.tick()
        await wait_sent(telegram, 5)
    states = Counter(r.status for r in await scheduled_rows_of(settings, clock))
    assert states == {"sending": 10 - 5, "pending": 20, "sent": 5}

    clock.now += timedelta(minutes=10)  # past the dead process's lease
    fast = hub_settings(settings, telegram, twilio, hub_send_rates="telegram=1000")
    async with running_hub(fast, clock) as second:

        async def ticked_out() -> list[tuple[int, str]] | None:
            # Ticks until all are out: the send rate's bucket lives in Redis and refills on
            # Redis's own clock, so how many go per tick depends on how fast ticks come.
            await second.hub.scheduler.tick()
            return await _at_least(sent_texts(telegram), 30)

        sent = await eventually(ticked_out, timeout=20)
        await asyncio.sleep(0.3)
        assert len(sent_texts(telegram)) == 30
        assert sorted(Counter(c for c, _ in sent).values()) == [1] * 30
        assert {t.split(",")[0] for _, t in sent} == {f"Guest{n}" for n in range(30)}
        progress = await eventually(lambda: _finished(second, draft.id))  # type: ignore[arg-type]
        assert (progress.status, progress.finished_at is not None) == ("done", True)


async def scheduled_rows_of(settings: Settings, clock: Clock) -> list[ScheduledMessage]:
    hub = Hub(settings, clock=clock)
    await hub.open()
    try:
        async with hub.sessions() as session:
            return list((await session.exec(select(ScheduledMessage))).all())
    finally:
        await hub.close()


async def _finished(running: RunningHub, broadcast_id: int) -> Broadcast | None:
    await running.hub.scheduler.tick()
    async with running.hub.sessions() as session:
        found = await session.get(Broadcast, broadcast_id)
    return found if found is not None and found.status == "done" else None


async def test_a_stop_during_a_round_is_one_quiet_line(
    settings: Settings, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C just after `hub serve` starts lands in the first round: it gets its grace, then
    is cut short with one line, not APScheduler's CancelledError traceback."""
    del redis
    running = await start_hub(settings.model_copy(update={"hub_scheduler": True}))
    scheduler = running.hub.scheduler
    entered, never = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        entered.set()
        await never.wait()  # a round that would not end by itself (a slow database)

    scheduler.tick = stuck  # type: ignore[method-assign]
    scheduler.plan = stuck  # type: ignore[method-assign]
    await scheduler.stop()
    scheduler.start()
    await asyncio.wait_for(entered.wait(), 10)
    with caplog.at_level(logging.INFO):
        await scheduler.stop(grace=0.05)
        for _ in range(3):  # APScheduler's done-callbacks, where it logged the traceback
            await asyncio.sleep(0)
    await running.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "cut short by the shutdown" in caplog.text
    assert "Traceback" not in caplog.text and "CancelledError" not in caplog.text
