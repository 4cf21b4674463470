"""What running one scenario produced: the dialogue turn by turn, the failures the checks
found, and the counts the figures add up (hand-off and booking turns, tokens, retries)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bots.base import Reply
from hub.eval.scenarios import Scenario


@dataclass
class TurnLog:
    text: str
    replies: list[Reply] = field(default_factory=list)
    answered: bool = False  # False: the conversation was with staff, the bot was not asked
    prompt_tokens: int | None = None
    retries: int = 0  # the model client's retries in this turn (LLM brain)
    timeouts: int = 0


@dataclass
class Outcome:
    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    turns: list[TurnLog] = field(default_factory=list)
    handoff_turn: int | None = None  # 1-based
    booking_turn: int | None = None  # the turn the expected bookings were all made
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: bool = False
    retries: int = 0
    timeouts: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def handed_off(self) -> bool:
        return self.handoff_turn is not None
