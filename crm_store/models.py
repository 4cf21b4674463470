"""SQLModel tables of the CRM.

Every datetime column is timezone-aware (asyncpg rejects aware values in naive columns);
SQLite gives them back naive, so readers go through `crm_store.timeutil.aware`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy import true as sa_true
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index),
    )


def _ts_now(index: bool = False) -> Any:
    return Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=index),
    )


# BIGINT on PostgreSQL, but SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Client(SQLModel, table=True):
    __tablename__ = "clients"

    id: int | None = Field(default=None, primary_key=True)
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=32, index=True)
    email: str | None = Field(default=None, max_length=320, index=True)
    language: str | None = Field(default=None, max_length=16)
    source_channel: str | None = Field(default=None, max_length=20)
    first_contact_at: datetime | None = _ts()
    last_contact_at: datetime | None = _ts(index=True)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notes: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    preferred_master_id: int | None = Field(default=None)
    marketing_consent: bool = Field(default=False)
    last_visit_at: datetime | None = _ts()
    merged_into_id: int | None = Field(default=None, foreign_key="clients.id")
    # What brought the client, beyond the channel: an ad's /start payload, a campaign tag.
    source_ref: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts_now()


class ChannelIdentity(SQLModel, table=True):
    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "inbox", "external_id", name="uq_identity"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    channel: str = Field(max_length=20)
    inbox: str = Field(max_length=100)
    external_id: str = Field(max_length=200)
    username: str | None = Field(default=None, max_length=200)
    display_name: str | None = Field(default=None, max_length=200)
    # Set when the person blocked the bot or unsubscribed; cleared when they write again.
    unreachable_at: datetime | None = _ts()
    unreachable_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts_now()


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversation_chat", "channel", "inbox", "chat_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    channel: str = Field(max_length=20)
    inbox: str = Field(max_length=100)
    chat_id: str = Field(max_length=200)
    # bot | waiting | human | closed
    status: str = Field(default="bot", max_length=10, index=True)
    assignee_id: int | None = Field(default=None, foreign_key="staff.id")
    opened_at: datetime = _ts_now()
    closed_at: datetime | None = _ts()
    last_message_at: datetime | None = _ts(index=True)
    first_inbound_at: datetime | None = _ts()
    first_response_at: datetime | None = _ts()
    # A one-to-one chat (false: a group the client wrote in). Nothing personal (reminders,
    # re-engagement, the bot) is ever sent into a chat that is not private.
    private: bool = Field(default=True, sa_column_kwargs={"server_default": sa_true()})


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        # A provider message is stored once, whatever the retries and redeliveries.
        UniqueConstraint(
            "channel", "inbox", "direction", "provider_message_id", name="uq_message_provider"
        ),
        UniqueConstraint("outbound_key", name="uq_message_outbound"),
        Index("ix_message_conversation", "conversation_id", "id"),
        Index("ix_message_created", "created_at"),
        Index("ix_message_conversation_time", "conversation_id", "created_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True))
    public_id: str = Field(max_length=32, unique=True)
    conversation_id: int = Field(foreign_key="conversations.id")
    client_id: int = Field(foreign_key="clients.id", index=True)
    channel: str = Field(max_length=20)
    inbox: str = Field(max_length=100)
    direction: str = Field(max_length=3)  # in | out
    author: str = Field(max_length=10)  # client | bot | staff | system
    staff_id: int | None = Field(default=None, foreign_key="staff.id")
    text: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    provider_message_id: str | None = Field(default=None, max_length=200)
    outbound_key: str | None = Field(default=None, max_length=64)
    reply_to_id: str | None = Field(default=None, max_length=200)
    # inbound: received; outbound: queued | sending | sent | delivered | read | failed
    status: str = Field(default="received", max_length=10)
    # While `sending`: the dispatcher that claimed the send ("<worker>/<stream entry id>")
    # and when its claim lapses unless renewed (hub/pipeline/dispatcher.py). Cleared when it leaves.
    claimed_by: str | None = Field(default=None, max_length=120)
    claimed_until: datetime | None = _ts()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = Field(default=0)
    # SMS parts the provider billed (the owner's SMS cost); None on other channels.
    segments: int | None = Field(default=None)
    sent_at: datetime | None = _ts()
    created_at: datetime = _ts_now()
    status_at: datetime | None = _ts()


class Staff(SQLModel, table=True):
    __tablename__ = "staff"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(max_length=10)  # owner | admin | master
    password_hash: str = Field(max_length=200)
    active: bool = Field(default=True)
    language: str = Field(default="uk", max_length=16)
    created_at: datetime = _ts_now()


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_entity", "entity", "entity_id"),)

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True))
    at: datetime = _ts_now(index=True)
    actor: str = Field(max_length=10)  # staff | bot | system | client | import
    staff_id: int | None = Field(default=None, foreign_key="staff.id")
    entity: str = Field(max_length=30)
    entity_id: int
    action: str = Field(max_length=40)
    changes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# Booking ---------------------------------------------------------------------------------


class Business(SQLModel, table=True):
    """The salon's own settings: one row (id 1); absent until the owner saves any."""

    __tablename__ = "business"

    id: int = Field(default=1, primary_key=True)
    name: str = Field(default="", max_length=200)
    timezone: str = Field(default="Europe/Kyiv", max_length=64)
    currency: str = Field(default="UAH", max_length=3)
    slot_step_min: int = Field(default=15)
    lead_min: int = Field(default=60)
    horizon_days: int = Field(default=60)
    phone: str | None = Field(default=None, max_length=32)
    # Per language ({"uk": ..., "en": ..., "ru": ...}): what the bot tells clients.
    address: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    hours_text: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Reminders go this many minutes before an appointment (a service may override them).
    reminder_offsets_min: list[int] = Field(
        default_factory=lambda: [1440, 120], sa_column=Column(JSON, nullable=False)
    )
    # Quiet hours, minutes from local midnight: nothing non-urgent is sent from start to end.
    quiet_start_min: int = Field(default=21 * 60)
    quiet_end_min: int = Field(default=9 * 60)


class CatalogStamp(SQLModel, table=True):
    """One row whose version moves on every write to what the catalogue is made of (the
    salon, services, masters, their services, hours and time off). Triggers in the database
    move it (migration 0012), so a change made anywhere, by any process or by hand, is seen:
    readers that cache the catalogue check this one number instead of re-reading it all."""

    __tablename__ = "catalog_stamp"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class Service(SQLModel, table=True):
    __tablename__ = "services"
    __table_args__ = (
        CheckConstraint("duration_min > 0", name="ck_service_duration"),
        CheckConstraint("buffer_min >= 0", name="ck_service_buffer"),
        CheckConstraint("price_minor >= 0", name="ck_service_price"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name_uk: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    name_ru: str | None = Field(default=None, max_length=200)
    category: str = Field(default="", max_length=100, index=True)
    duration_min: int
    # In minor units (kopiykas): exact, and the same on SQLite and PostgreSQL.
    price_minor: int = Field(default=0)
    buffer_min: int = Field(default=0)
    active: bool = Field(default=True)
    position: int = Field(default=0)
    # None: the salon's reminder offsets; [] : no reminders for this service.
    reminder_offsets_min: list[int] | None = Field(default=None, sa_column=Column(JSON))
    # After this many days without a visit a client gets one "time for your next visit".
    return_interval_days: int | None = Field(default=None)
    created_at: datetime = _ts_now()


class MasterService(SQLModel, table=True):
    """A service a master does, optionally with the master's own duration and price."""

    __tablename__ = "master_services"

    master_id: int = Field(foreign_key="staff.id", primary_key=True)
    service_id: int = Field(foreign_key="services.id", primary_key=True, index=True)
    duration_min: int | None = Field(default=None)
    price_minor: int | None = Field(default=None)


class WorkingHours(SQLModel, table=True):
    """A master's hours on one weekday (0 is Monday), in minutes from local midnight.

    A weekday without a row is a day off. Breaks are [start, end) minute pairs inside the day.
    """

    __tablename__ = "working_hours"
    __table_args__ = (
        UniqueConstraint("master_id", "weekday", name="uq_working_hours_day"),
        CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_working_hours_weekday"),
        CheckConstraint(
            "start_min >= 0 AND end_min <= 1440 AND start_min < end_min",
            name="ck_working_hours_span",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    master_id: int = Field(foreign_key="staff.id", index=True)
    weekday: int
    start_min: int
    end_min: int
    breaks: list[list[int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class TimeOff(SQLModel, table=True):
    """One-off absence of a master: a vacation, a sick day, a dentist at 14:00."""

    __tablename__ = "time_off"
    __table_args__ = (Index("ix_time_off_master", "master_id", "start_at"),)

    id: int | None = Field(default=None, primary_key=True)
    master_id: int = Field(foreign_key="staff.id")
    start_at: datetime = _ts_now()
    end_at: datetime = _ts_now()
    reason: str = Field(default="", max_length=200)


# Statuses that hold the master's time: everything but a cancellation.
APPOINTMENT_STATUSES = ("booked", "confirmed", "cancelled", "no_show", "done")
APPOINTMENT_SOURCES = ("bot", "staff", "webchat", "import")


class Appointment(SQLModel, table=True):
    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointment_master_start", "master_id", "start_at"),
        CheckConstraint("start_at < end_at AND end_at <= block_end_at", name="ck_appointment_span"),
        # The last word on double booking, in PostgreSQL itself: no two live appointments of
        # one master overlap, buffers included. (SQLite gets a trigger, see migration 0002.)
        ExcludeConstraint(
            ("master_id", "="),
            (func.tstzrange(literal_column("start_at"), literal_column("block_end_at")), "&&"),
            where="status <> 'cancelled'",
            using="gist",
            name="ex_appointment_overlap",
        ).ddl_if(dialect="postgresql"),
    )

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    master_id: int = Field(foreign_key="staff.id")
    service_id: int = Field(foreign_key="services.id")
    start_at: datetime = _ts_now(index=True)
    end_at: datetime = _ts_now()
    # end_at plus the service's buffer: the master is not free again before this.
    block_end_at: datetime = _ts_now()
    status: str = Field(default="booked", max_length=10, index=True)
    source: str = Field(default="staff", max_length=10)
    price_minor: int = Field(default=0)
    notes: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    created_by_staff_id: int | None = Field(default=None, foreign_key="staff.id")
    created_at: datetime = _ts_now()
    updated_at: datetime = _ts_now()


class BotState(SQLModel, table=True):
    """Where the bot is in a conversation's dialogue, so a restart continues it."""

    __tablename__ = "bot_states"

    conversation_id: int = Field(foreign_key="conversations.id", primary_key=True)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Turns in a row the bot could not help with; two hand the conversation to staff.
    failures: int = Field(default=0)
    updated_at: datetime = _ts_now()


class ChannelState(SQLModel, table=True):
    """What a channel must remember across restarts: an IMAP UID cursor, an email thread's
    headers, an Instagram session. Small JSON documents, one per (channel, inbox, key)."""

    __tablename__ = "channel_state"

    channel: str = Field(primary_key=True, max_length=20)
    inbox: str = Field(primary_key=True, max_length=100)
    key: str = Field(primary_key=True, max_length=200)
    value: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = _ts_now()


# The staff inbox -------------------------------------------------------------------------


class StaffNote(SQLModel, table=True):
    """A private note on a client card (optionally about one conversation): never sent."""

    __tablename__ = "staff_notes"
    __table_args__ = (Index("ix_staff_note_client", "client_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id")
    conversation_id: int | None = Field(default=None, foreign_key="conversations.id")
    staff_id: int | None = Field(default=None, foreign_key="staff.id")
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _ts_now()


class CannedReply(SQLModel, table=True):
    """A ready answer staff paste into the reply box; managed by owners and admins."""

    __tablename__ = "canned_replies"

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    text: str = Field(sa_column=Column(Text, nullable=False))
    language: str | None = Field(default=None, max_length=16)
    created_at: datetime = _ts_now()
    updated_at: datetime = _ts_now()


class ReadMarker(SQLModel, table=True):
    """How far one staff member has read one conversation (the id of its last message then)."""

    __tablename__ = "read_markers"

    staff_id: int = Field(foreign_key="staff.id", primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", primary_key=True, index=True)
    last_message_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    read_at: datetime = _ts_now()


# Reminders, re-engagement and broadcasts ------------------------------------------------

SCHEDULED_KINDS = ("reminder", "reengage", "broadcast")
# pending → sending (claimed by one scheduler) → sent | failed | skipped; cancelled by a change.
SCHEDULED_STATUSES = ("pending", "sending", "sent", "failed", "skipped", "cancelled")


class ScheduledMessage(SQLModel, table=True):
    """A message the hub will send on its own at `due_at`: one row, one recipient.

    `key` is unique, so planning the same reminder twice (a retried transaction, two
    processes) stores it once; the outbound message it becomes carries the same key, so
    sending it twice stores and sends it once.
    """

    __tablename__ = "scheduled_messages"
    __table_args__ = (
        Index("ix_scheduled_due", "status", "due_at"),
        Index("ix_scheduled_broadcast", "broadcast_id", "status"),
        Index("ix_scheduled_client", "client_id", "kind", "due_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True))
    key: str = Field(max_length=120, unique=True)
    kind: str = Field(max_length=16)
    client_id: int = Field(foreign_key="clients.id")
    appointment_id: int | None = Field(default=None, foreign_key="appointments.id", index=True)
    broadcast_id: int | None = Field(default=None, foreign_key="broadcasts.id")
    service_id: int | None = Field(default=None, foreign_key="services.id")
    due_at: datetime = _ts_now()
    # Reminders are urgent: they may go in quiet hours if planning could not avoid them.
    urgent: bool = Field(default=False)
    status: str = Field(default="pending", max_length=10)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # What the row is about, as planned (a reminder: the appointment's start and the offset).
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Where it went: the channel and chat of the current attempt, the outbound message's id,
    # and every "channel/inbox/chat" tried before (failover never tries one twice).
    channel: str | None = Field(default=None, max_length=20)
    conversation_id: int | None = Field(default=None, foreign_key="conversations.id")
    message_id: str | None = Field(default=None, max_length=32, index=True)
    tried: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    claimed_by: str | None = Field(default=None, max_length=100)
    claimed_until: datetime | None = _ts()
    created_at: datetime = _ts_now()
    updated_at: datetime = _ts_now()
    sent_at: datetime | None = _ts()


BROADCAST_STATUSES = ("draft", "scheduled", "sending", "done", "cancelled")


class Broadcast(SQLModel, table=True):
    """A message to a segment of clients; each recipient becomes a ScheduledMessage."""

    __tablename__ = "broadcasts"

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    text: str = Field(sa_column=Column(Text, nullable=False))
    # The filter that picks the recipients (crm_store.segments.Segment as JSON).
    segment: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="draft", max_length=10)
    scheduled_at: datetime | None = _ts()
    total: int = Field(default=0)
    created_by_staff_id: int | None = Field(default=None, foreign_key="staff.id")
    created_at: datetime = _ts_now()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
