"""Segments: which client cards a broadcast goes to.

A segment is a set of filters, all of which must hold (each one left empty matches everyone):

- `tags`: the card has any of these tags (compared ignoring case, as tags are kept);
- `visited_before` / `visited_after`: the last visit was before the start of that salon-local
  day, or after its end (a card with no visit on record matches neither);
- `service_id`: the client had that service (an appointment of it marked done);
- `channel`: the client has an identity on that channel not marked unreachable (for email
  and SMS the address or number on the card counts too: that is how the hub reaches them).

Two conditions are not filters but always hold: the client gave marketing consent, and the
card was not merged into another one (its history lives on the card it was merged into).

Everything is one SQL statement that runs on SQLite and PostgreSQL alike. Tags are a JSON
list in a column; the only per-database part is the name of the function that opens a JSON
list into rows (`json_each` on SQLite, `json_array_elements_text` on PostgreSQL); the query
around it is the same.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, and_, exists, func, literal, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import get_business
from crm_store.models import Appointment, ChannelIdentity, Client

# The channels of hub.messages.ChannelName (crm_store does not import hub).
CHANNELS = ("telegram", "instagram", "viber", "sms", "email", "webchat")
MAX_TAGS = 50
MAX_TAG_LENGTH = 100


class Segment(BaseModel):
    """The filters of a segment; stored on a broadcast as JSON (`model_dump(mode="json")`).

    There is deliberately no consent field: marketing consent is always required.
    """

    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    visited_before: date | None = None
    visited_after: date | None = None
    service_id: int | None = Field(default=None, ge=1)
    channel: str | None = None

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        cleaned: list[str] = []
        for tag in tags:
            tag = " ".join(tag.split())
            if not tag:
                raise ValueError("a tag can't be empty")
            if len(tag) > MAX_TAG_LENGTH:
                raise ValueError(f"a tag is at most {MAX_TAG_LENGTH} characters")
            if tag.lower() not in (t.lower() for t in cleaned):
                cleaned.append(tag)
        return cleaned

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, channel: str | None) -> str | None:
        if channel is not None and channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        return channel

    @model_validator(mode="after")
    def _dates_in_order(self) -> Segment:
        if self.visited_before and self.visited_after:
            if self.visited_after >= self.visited_before - timedelta(days=1):
                raise ValueError("visited_after must be at least a day before visited_before")
        return self

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


async def segment_client_ids(
    session: AsyncSession, segment: Segment, *, now: datetime, tz: ZoneInfo | None = None
) -> list[int]:
    """The ids of the segment's clients, in card order."""
    where = await _conditions(session, segment, now=now, tz=tz)
    rows = await session.exec(select(Client.id).where(*where).order_by(col(Client.id)))
    return [int(client_id) for client_id in rows.all() if client_id is not None]


async def count(
    session: AsyncSession, segment: Segment, *, now: datetime, tz: ZoneInfo | None = None
) -> int:
    where = await _conditions(session, segment, now=now, tz=tz)
    return int((await session.exec(select(func.count()).select_from(Client).where(*where))).one())


async def sample_names(
    session: AsyncSession,
    segment: Segment,
    *,
    now: datetime,
    tz: ZoneInfo | None = None,
    limit: int = 10,
) -> list[str]:
    """The names of the first few clients, for a preview ("" for a card without a name)."""
    where = await _conditions(session, segment, now=now, tz=tz)
    rows = await session.exec(
        select(Client.name).where(*where).order_by(col(Client.id)).limit(limit)
    )
    return [name or "" for name in rows.all()]


async def _conditions(
    session: AsyncSession, segment: Segment, *, now: datetime, tz: ZoneInfo | None
) -> list[ColumnElement[bool]]:
    # `now` is part of the signature for filters relative to today; today's are not.
    del now
    if tz is None and (segment.visited_before or segment.visited_after):
        tz = ZoneInfo((await get_business(session)).timezone)
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    where: list[ColumnElement[bool]] = [
        col(Client.marketing_consent).is_(True),
        col(Client.merged_into_id).is_(None),
    ]
    if segment.tags:
        where.append(_has_any_tag(segment.tags, dialect))
    if segment.visited_before is not None:
        assert tz is not None
        where.append(col(Client.last_visit_at) < _day_start(segment.visited_before, tz))
    if segment.visited_after is not None:
        assert tz is not None
        next_day = segment.visited_after + timedelta(days=1)
        where.append(col(Client.last_visit_at) >= _day_start(next_day, tz))
    if segment.service_id is not None:
        where.append(
            exists().where(
                col(Appointment.client_id) == col(Client.id),
                col(Appointment.service_id) == segment.service_id,
                col(Appointment.status) == "done",
            )
        )
    if segment.channel is not None:
        where.append(_reachable_on(segment.channel))
    return where


def _has_any_tag(tags: list[str], dialect: str) -> ColumnElement[bool]:
    """EXISTS (SELECT 1 FROM <the card's tags as rows> WHERE lower(value) IN (...))."""
    opener = func.json_array_elements_text if dialect == "postgresql" else func.json_each
    items = opener(col(Client.tags)).table_valued("value").alias("tag")
    # lower() on both sides: SQLite's is replaced by a Unicode one (crm_store.db), so
    # "ВІП" and "віп" are one tag there as on PostgreSQL.
    wanted = [literal(tag.lower()) for tag in tags]
    return exists(
        select(literal(1)).select_from(items).where(func.lower(items.c.value).in_(wanted))
    )


def _reachable_on(channel: str) -> ColumnElement[bool]:
    identity = exists().where(
        col(ChannelIdentity.client_id) == col(Client.id),
        col(ChannelIdentity.channel) == channel,
        col(ChannelIdentity.unreachable_at).is_(None),
    )
    # The hub writes emails and texts to the address and number on the card as well.
    on_card = {"email": col(Client.email), "sms": col(Client.phone)}.get(channel)
    if on_card is None:
        return identity
    return or_(identity, and_(on_card.is_not(None), on_card != ""))


def _day_start(day: date, tz: ZoneInfo) -> datetime:
    # In UTC: SQLite keeps the wall time without its offset, so only UTC values compare.
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)
