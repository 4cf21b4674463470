"""Writes the model asked for, held until the client says yes.

A small model books on a misunderstanding ("is Thursday free?" → `book`). So `book`,
`reschedule` and `cancel` from the model are not run at once: the brain checks them with the
read-only tools, builds the summary itself from the catalogue and the arguments (never the
model's words: "Gel polish manicure with Olena, Tue 02.03 at 14:00, 750 UAH — shall I book
it?") and keeps the action in the conversation's bot state. The client's next message runs it
(a yes, or a message giving a phone) or drops it (anything else). Pure helpers here; the
brain (bots/llm.py) does the reading and the writing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from bots.tools import Language

WRITES = ("book", "reschedule", "cancel")
PENDING_KEY = "llm_pending"  # in the conversation's bot state (bots/state.py)
CONTACT_KEY = "llm_contact_given"
# Channels where the bot does not know who writes: a booking needs a name and a phone.
ANONYMOUS_CHANNELS = ("webchat", "email")
PHONE = re.compile(r"(?<![\d+])\+?\d(?:[\s\-().]*\d){8,13}(?!\d)")
_NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'’\-]*", re.U)
MAX_NAME_WORDS = 3


@dataclass(frozen=True)
class Pending:
    tool: str
    arguments: dict[str, Any]
    summary: dict[str, str]  # the values the templates are filled with
    ask_contact: bool = False

    def as_state(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "arguments": self.arguments,
            "summary": self.summary,
            "ask_contact": self.ask_contact,
        }

    @classmethod
    def from_state(cls, raw: object) -> Pending | None:
        """What was stored, or None for anything else (an older shape, a hand edit)."""
        if not isinstance(raw, Mapping):
            return None
        tool, arguments, summary = raw.get("tool"), raw.get("arguments"), raw.get("summary")
        if tool not in WRITES or not isinstance(arguments, dict) or not isinstance(summary, dict):
            return None
        return cls(
            tool,
            arguments,
            {str(k): str(v) for k, v in summary.items()},
            bool(raw.get("ask_contact")),
        )


@dataclass(frozen=True)
class Contact:
    phone: str
    name: str | None = None


def find_contact(text: str, intros: Sequence[str], ignored: Sequence[str] = ()) -> Contact | None:
    """A phone number in the message, and the name written beside it if any:
    "Ірина, 067 123 45 67", "Maria +380501112233", "мене звати Оля 0671234567"."""
    match = PHONE.search(text)
    if match is None:
        return None
    digits = re.sub(r"\D", "", match[0])
    if len(digits) < 9:
        return None
    rest = (text[: match.start()] + " " + text[match.end() :]).casefold()
    for intro in sorted(intros, key=len, reverse=True):
        rest = re.sub(rf"(?<!\w){re.escape(intro.casefold())}(?!\w)", " ", rest)
    skip = {w.casefold() for w in ignored}
    words = [w for w in _NAME_WORD.findall(rest) if w not in skip and len(w) > 1]
    original = {w.casefold(): w for w in _NAME_WORD.findall(text)}
    name = None
    if 1 <= len(words) <= MAX_NAME_WORDS:
        name = " ".join(_titled(original.get(w, w)) for w in words)
    return Contact(match[0].strip(), name)


def _titled(word: str) -> str:
    return word if word[:1].isupper() else word[:1].upper() + word[1:]


def is_yes(text: str, intents: set[str], words: Sequence[str]) -> bool:
    if "no" in intents:
        return False
    if "yes" in intents:
        return True
    said = re.sub(r"[\s!.,]+", " ", text.casefold()).strip()
    return said in {w.casefold() for w in words} or any(
        w in text for w in words if not w.isascii() and not w.isalpha()
    )


def when_text(day: date, clock: str, language: Language, words: Mapping[str, Any]) -> str:
    """ "Tue 02.03 at 14:00" in the client's language."""
    weekdays = words["weekdays"]
    return str(words["when"]).format(
        weekday=weekdays[day.weekday()], date=f"{day:%d.%m}", time=clock
    )


def money_text(amount: float, words: Mapping[str, Any]) -> str:
    whole = int(amount) if float(amount).is_integer() else amount
    return str(words["money"]).format(amount=whole)


def slot_at(
    slots: Sequence[Mapping[str, Any]], start: datetime, master_id: int | None
) -> dict[str, Any] | None:
    """The free slot starting exactly then (with that master when one is named)."""
    wanted = start.strftime("%Y-%m-%dT%H:%M")
    for slot in slots:
        if slot.get("start") == wanted and (
            master_id is None or slot.get("master_id") == master_id
        ):
            return dict(slot)
    return None
