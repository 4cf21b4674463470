"""The router: inbound shards → client card, conversation, message (once) → hub:events.

Opt-out keywords work on every channel: a message that is just "stop", "стоп", "відписатися"
… (prompts/consent.json) takes the client's marketing consent away ("start" gives it back),
is not a question for the bot, and gets one short confirmation. Where the provider has its
own keywords (SMS: the channel sets `InboundMessage.consent`), the provider answers them and
the hub only records the consent.

The consumer hands the router the entries of one stream read at a time (handle_batch): a run
of plain client messages is stored in one transaction (crm_store.inbound_batch) and their
events go out in one group commit; an own-app message or a consent keyword takes the
one-message path in its place. A batch that fails is handled again one entry at a time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_store.conversations import InboundData, InboundRecord, record_inbound, record_own
from crm_store.db import transaction
from crm_store.identity import Hints, set_consent
from crm_store.inbound_batch import record_inbound_batch
from hub import metrics
from hub.messages import Author, InboundMessage, utcnow
from hub.pipeline.bus import Bus, Entry, PermanentError
from hub.pipeline.consumer import Reject, StreamConsumer
from hub.pipeline.events import message_event
from hub.pipeline.leases import ShardLeases
from hub.pipeline.replies import send_reply
from prompts import DEFAULT_LANGUAGE, LANGUAGES, load_json

log = logging.getLogger(__name__)

GROUP = "router"
CONSENT_TEXTS = "consent.json"
_PUNCTUATION = re.compile(r"[^\w\s]+")


@dataclass(frozen=True)
class ConsentKeyword:
    granted: bool
    language: str  # the keyword's own language, for a client whose language is unknown


def consent_keyword(text: str) -> ConsentKeyword | None:
    """An opt-out or opt-in keyword that is the whole message (any case, punctuation and
    spaces around it ignored); None for anything else."""
    stripped = text.strip()
    if not stripped or stripped.startswith("/"):
        return None  # a bot command (Telegram's "/start") is not a keyword
    word = " ".join(_PUNCTUATION.sub(" ", stripped).split()).casefold()
    table = load_json(CONSENT_TEXTS)
    for key, granted in (("opt_out", False), ("opt_in", True)):
        for language, words in table[key].items():
            if word in words:
                # "stop" is every language's: the salon's own then.
                return ConsentKeyword(
                    granted, language if language in LANGUAGES else DEFAULT_LANGUAGE
                )
    return None


def keyword_of(msg: InboundMessage) -> ConsentKeyword | None:
    """A keyword for the hub to act on and confirm: not when the channel already read one
    (the provider answers those), nor in what a machine or the business wrote, nor in a group
    (a word there is not a client's answer to the salon, and the confirmation would be read
    by everyone in it)."""
    if msg.consent is not None or msg.automated or msg.own or not msg.private:
        return None
    return consent_keyword(msg.text)


@dataclass
class RouterHooks:
    """Points where tests stop a router dead (os._exit) to prove nothing is lost."""

    before_commit: Callable[[InboundMessage], None] | None = None
    after_commit: Callable[[InboundMessage], None] | None = None


def to_store(msg: InboundMessage) -> InboundData:
    return InboundData(
        channel=msg.channel,
        inbox=msg.inbox,
        chat_id=msg.chat_id,
        sender_id=msg.sender_id,
        provider_message_id=msg.provider_message_id,
        sent_at=msg.sent_at,
        text=msg.text,
        attachments=[a.model_dump(exclude_none=True) for a in msg.attachments],
        hints=Hints(**msg.contact.model_dump()),
        reply_to_id=msg.reply_to_id,
        public_id=msg.id,
        private=msg.private,
    )


class Router:
    def __init__(
        self,
        bus: Bus,
        sessions: async_sessionmaker,
        *,
        region: str = "UA",
        hooks: RouterHooks | None = None,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.region = region
        self.hooks = hooks or RouterHooks()

    def consumer(
        self, name: str, *, claim_idle_ms: int, max_deliveries: int, lease_ms: int
    ) -> StreamConsumer:
        streams = self.bus.inbound_streams()
        return StreamConsumer(
            self.bus,
            group=GROUP,
            name=name,
            handler=self.handle,
            batch_handler=self.handle_batch,
            streams=streams,
            leases=ShardLeases(self.bus.redis, name, streams, lease_ms),
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
        )

    async def handle(self, entry: Entry) -> None:
        await self.handle_message(parse(entry))

    async def handle_batch(self, entries: list[Entry], reject: Reject) -> None:
        """The entries of one read (its shards in turn), stored in as few transactions as they
        allow: a run of plain client messages in one; an own-app message or a consent keyword
        alone, by the one-message path, in its place in the order. A malformed entry is
        rejected before anything is stored (it belongs to no chat, so no order is broken)."""
        msgs: list[InboundMessage] = []
        for entry in entries:
            try:
                msgs.append(parse(entry))
            except PermanentError as exc:
                await reject(entry, exc)
        run: list[InboundMessage] = []
        for msg in msgs:
            if msg.own or msg.consent is not None or keyword_of(msg) is not None:
                await self.handle_run(run)
                run = []
                await self.handle_message(msg)
            else:
                run.append(msg)
        await self.handle_run(run)

    async def handle_message(self, msg: InboundMessage) -> None:
        if msg.own:
            await self.handle_own(msg)
            return
        keyword = keyword_of(msg)
        record = await self.store(msg, keyword)
        if self.hooks.after_commit:
            self.hooks.after_commit(msg)
        await self.announce(msg, record, keyword)

    async def handle_run(self, msgs: list[InboundMessage]) -> None:
        """Plain client messages (no keyword, not own) in one transaction, then their events."""
        if not msgs:
            return
        records = await self.store_many(msgs)
        if self.hooks.after_commit:
            for msg in msgs:
                self.hooks.after_commit(msg)
        # Together, so the events share the bus's group commit; the calls queue in this order,
        # so a chat's events keep the order of its messages.
        await asyncio.gather(
            *(self.announce(msg, record, None) for msg, record in zip(msgs, records, strict=True))
        )

    async def announce(
        self, msg: InboundMessage, record: InboundRecord, keyword: ConsentKeyword | None
    ) -> None:
        # Published for duplicates too: a crash between commit and publish must not lose the
        # event, so every event consumer is idempotent on the message id.
        quiet = msg.consent is not None or msg.automated or keyword is not None
        extra: dict[str, bool] = {"bot_reply": False} if quiet else {}
        if not msg.private:
            extra["private"] = False  # the bot worker hands a group to staff, never answers it
        await self.bus.publish_event(**message_event(record.message, record.conversation), **extra)
        if keyword is not None:
            # For duplicates too (a crash before it was queued); its key makes it one message.
            await self.confirm_consent(record, keyword)
        channel = msg.channel
        if record.duplicate:
            metrics.DUPLICATES_IN.labels(channel).inc()
        else:
            metrics.MESSAGES_IN.labels(channel).inc()
            latency = (utcnow() - msg.received_at).total_seconds()
            metrics.PIPELINE_LATENCY.labels(channel).observe(max(latency, 0.0))

    async def handle_own(self, msg: InboundMessage) -> None:
        """The business wrote in the provider's own app: a staff reply, and staff have the
        chat now. The echo of the hub's own send is dropped (a redelivered copy too, so a
        crash between commit and publish loses only the live update, not the message)."""
        data = to_store(msg)
        for attempt in range(3):
            try:
                async with transaction(self.sessions) as session:
                    record = await record_own(session, data, region=self.region)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        if record is None:
            return
        conversation = record.conversation
        await self.bus.publish_event(**message_event(record.message, conversation), bot_reply=False)
        if record.taken_from:
            await self.bus.publish_event(
                "conversation",
                conversation_id=conversation.id,
                client_id=conversation.client_id,
                status=conversation.status,
                previous=record.taken_from,
                reason=f"staff replied in the {msg.channel} app",
                staff_id=None,
            )
        metrics.MESSAGES_OUT.labels(msg.channel, "sent").inc()

    async def store(
        self, msg: InboundMessage, keyword: ConsentKeyword | None = None
    ) -> InboundRecord:
        data = to_store(msg)
        consent = msg.consent if keyword is None else keyword.granted
        for attempt in range(3):
            try:
                async with transaction(self.sessions) as session:
                    record = await record_inbound(session, data, region=self.region)
                    if consent is not None and not record.duplicate:
                        await set_consent(
                            session,
                            channel=msg.channel,
                            inbox=msg.inbox,
                            external_id=msg.sender_id,
                            granted=consent,
                            reason=f"{msg.channel}: {msg.text[:40]}",
                        )
                    if self.hooks.before_commit and not record.duplicate:
                        self.hooks.before_commit(msg)
                return record
            except IntegrityError:
                # A racing copy of the same message or identity won; the retry finds it.
                if attempt == 2:
                    raise
                log.info("retrying %s after a unique-key race", msg.provider_message_id)
        raise AssertionError("unreachable")

    async def store_many(self, msgs: list[InboundMessage]) -> list[InboundRecord]:
        batch = [to_store(msg) for msg in msgs]
        for attempt in range(3):
            try:
                async with transaction(self.sessions) as session:
                    records = await record_inbound_batch(session, batch, region=self.region)
                    if self.hooks.before_commit:
                        for msg, record in zip(msgs, records, strict=True):
                            if not record.duplicate:
                                self.hooks.before_commit(msg)
                return records
            except IntegrityError:
                # A racing copy of a new identity or conversation won; the retry finds it.
                if attempt == 2:
                    raise
                log.info("retrying a batch of %d after a unique-key race", len(msgs))
        raise AssertionError("unreachable")

    async def confirm_consent(self, record: InboundRecord, keyword: ConsentKeyword) -> None:
        """One short system message in the client's language: what changed, how to undo it."""
        known = (record.client.language or "")[:2].lower()
        language = known if known in LANGUAGES else keyword.language
        texts = load_json(CONSENT_TEXTS)["opted_in" if keyword.granted else "opted_out"]
        await send_reply(
            self.sessions,
            self.bus,
            conversation_id=record.conversation.id,  # type: ignore[arg-type]
            text=texts.get(language) or texts[DEFAULT_LANGUAGE],
            author=Author.system,
            idempotency_key=f"consent:{record.message.public_id}",
        )


def parse(entry: Entry) -> InboundMessage:
    try:
        return InboundMessage.model_validate_json(entry.data)
    except ValidationError as exc:
        raise PermanentError(f"malformed inbound message: {_short(exc)}") from None


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
    )[:1000]
