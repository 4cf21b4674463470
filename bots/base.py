"""What a responder sees of a conversation turn and what it answers."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field


class Turn(BaseModel):
    """One client message to answer. The client is the conversation's; a brain acts for no
    one else."""

    conversation_id: int
    client_id: int
    channel: str
    message_id: str
    text: str
    # The client card's language, when known; a brain may detect it from the text instead.
    language: str | None = None


class Reply(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    quick_replies: list[str] = Field(default_factory=list)
    # Ask for a human: the conversation goes to `waiting` and staff are alerted.
    handoff: bool = False
    handoff_reason: str = ""


class Responder(Protocol):
    async def respond(self, turn: Turn) -> list[Reply]: ...


class SilentResponder:
    """Answers nothing: the hook stays wired until a real responder is configured."""

    async def respond(self, turn: Turn) -> list[Reply]:
        del turn
        return []


@dataclass(frozen=True)
class AppointmentChange:
    """A change the bot's tools made to one of the client's appointments, once committed."""

    appointment_id: int
    action: str  # book | reschedule | cancelled | confirmed
    status: str
    start: datetime
    master_id: int
    client_id: int


# Set by whoever runs a turn (hub/pipeline/bot_worker.py) to hear what the turn changed; the
# tools add to it after each commit, whichever brain called them.
TURN_CHANGES: ContextVar[list[AppointmentChange] | None] = ContextVar("turn_changes", default=None)
