"""The answer shapes more than one area of the staff API shares: the error every 4xx carries,
money, a free time, a message frame, `{"ok": true}`; and not_null(), for fields that may be
missing but are never null. Each area's own shapes live next to its handlers;
hub/web/openapi.py turns all of them into the document's schemas.

Times in answers stay the strings the hub has always written (`datetime.isoformat()`, the
salon's offset, `+00:00` rather than pydantic's `Z`): they are typed `Time` (a string whose
schema says `date-time`), never `datetime`, so the JSON does not change by going through a
model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Day = Annotated[str, Field(json_schema_extra={"format": "date"})]


def not_null(**extra: Any) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` of a field that may be missing (None in Python) but is never null:
    a setting a change leaves out (its handler refuses a null with its own message), a key of
    an error that does not apply. `extra`: rules stated for the document that the store
    checks itself (with its own messages)."""

    def schema_of(schema: dict[str, Any]) -> None:
        choices = [choice for choice in schema.pop("anyOf") if choice.get("type") != "null"]
        schema.pop("default", None)
        (sent,) = choices
        schema.update(sent, **extra)

    return schema_of


class FieldError(BaseModel):
    field: str
    error: str


class Money(BaseModel):
    """An amount in the salon's currency: `amount` in units, `minor` in cents or kopecks."""

    amount: float
    minor: int
    currency: str


class FreeTime(BaseModel):
    """A free start (GET /api/slots; the alternatives of a 409 booking)."""

    start: Time
    end: Time
    master_id: int
    master_name: str | None


class ErrorBody(BaseModel):
    """Every refusal (4xx) and the 500: `error` says what is wrong. The other keys come only
    where they apply: `details` for an invalid body or query value, `retry_after` (seconds)
    with a 429 sign-in, `reason` and `alternatives` with a 409 booking (docs/booking.md),
    `tables` with an unknown analytics table."""

    # refuse() leaves out the keys it was not given; one the shape lacks fails where it is
    # made, not in a client.
    model_config = ConfigDict(extra="forbid")

    error: str
    details: list[FieldError] | None = Field(default=None, json_schema_extra=not_null())
    retry_after: int | None = Field(default=None, json_schema_extra=not_null())
    reason: str | None = Field(default=None, json_schema_extra=not_null())
    alternatives: list[FreeTime] | None = Field(default=None, json_schema_extra=not_null())
    tables: list[str] | None = Field(default=None, json_schema_extra=not_null())


class MessageFrame(BaseModel):
    """A message as the web chat, the live updates and the staff API show it."""

    # hub.pipeline.events.message_frame's keys, checked on the way out.

    id: str
    direction: Literal["in", "out"]
    author: str
    text: str
    attachments: list[dict[str, Any]]
    status: str
    at: Time


class Done(BaseModel):
    ok: Literal[True] = True
