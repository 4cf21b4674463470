"""What a responder sees of a conversation turn and what it answers."""

from __future__ import annotations

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
