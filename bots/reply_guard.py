"""What of a model's answer may reach a client.

A small model repeats the prompt's own markers ("[automatic message]", "[reminder of
appointment 1]", "[confirm]"), writes tool calls, JSON or code fences as its answer, and
invents prices. `clean` strips the first kinds and says when nothing worth sending is left;
`unknown_prices` finds amounts of money that are not in the salon's price list. Both are pure
and never raise; the brain decides what to send instead (bots/llm.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

# A bracketed word or words, maybe with a number: the prompt's markers and any a model makes
# up in their image ("[confirm]", "[підтвердження]", "[TOOL_CALLS]").
MARKER = re.compile(r"\[\s*[^\W\d_][\w .'’\-]{0,48}?(?:\s+\d+)?\s*\]")
FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
CALL_TAGS = re.compile(
    r"<(tool_call|tools|tool_calls|function_call|tool_response|think)>.*?(?:</\1>|\Z)"
    r"|<function=[^>]*>.*?(?:</function>|\Z)"
    r"|<\|[^|>]{0,40}\|>"
    r"|</?[A-Za-z_][\w\-]{0,30}(?:=[^>]{0,60})?>",
    re.S | re.I,
)
INLINE_CODE = re.compile(r"`([^`\n]{0,200})`")
MIN_LETTERS = 2  # fewer letters than this left: the answer said nothing
_LETTER = re.compile(r"[^\W\d_]")
_CURRENCY = r"грн\.?|гривень|гривні|гривня|гривен|гривны|гривна|uah|₴|hryvnias?|hrn|uah\.?"
_NUMBER = r"\d{1,3}(?:[ \u00a0\u202f,.]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_AFTER = re.compile(rf"({_NUMBER})\s*(?:{_CURRENCY})(?![\w])", re.I)
_BEFORE = re.compile(rf"(?<![\w])(?:{_CURRENCY})\s*({_NUMBER})", re.I)
_UAH = re.compile(r"(?<=\d)(\s*)(?:UAH|₴)(?![\w])", re.I)
_WORD = re.compile(r"[^\W\d_]+", re.U)
STEM = 5  # letters compared of each word: "манікюр"/"манікюру", "ресниц"/"ресницы"


@dataclass(frozen=True)
class Cleaned:
    text: str
    # Something was taken out (a marker, a call, JSON, a fence): worth a log line.
    changed: bool

    @property
    def empty(self) -> bool:
        return len(_LETTER.findall(self.text)) < MIN_LETTERS


def clean(text: object) -> Cleaned:
    """The answer without markers, call syntax, JSON or code; whitespace tidied."""
    if not isinstance(text, str):
        return Cleaned("", True)
    out = FENCE.sub(" ", text)
    out = CALL_TAGS.sub(" ", out)
    out = _without_json(out)
    out = MARKER.sub(" ", out)
    out = INLINE_CODE.sub(r"\1", out)
    out = re.sub(r"[ \t]+", " ", out)
    out = re.sub(r" *\n[ \n]*", "\n", out).strip(" \n:;,-—")
    return Cleaned(out, out != text.strip())


def _without_json(text: str) -> str:
    """Remove every JSON object or array (as a model writes a call or a tool result) but not
    plain brackets in words."""
    decoder = json.JSONDecoder()
    pieces: list[str] = []
    position = 0
    while position < len(text):
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            value, end = None, -1
        if end > start and isinstance(value, dict | list) and _jsonish(text[start:end]):
            pieces.append(text[position:start])
            position = end
            continue
        if text[start] == "{":  # a broken object ("{"name": …" cut short): drop to its end
            close = text.find("}", start)
            if '":' in text[start : close if close >= 0 else len(text)]:
                pieces.append(text[position:start])
                position = close + 1 if close >= 0 else len(text)
                continue
        pieces.append(text[position : start + 1])
        position = start + 1
    pieces.append(text[position:])
    return "".join(pieces)


def _jsonish(raw: str) -> bool:
    # "[1, 2]" in words is rare, but a list of numbers is no message either; only "[]"-like
    # things without a quote or digit (e.g. "[ ]") are kept as they are.
    return any(ch in raw for ch in '":0123456789')


def amounts(text: str) -> list[int]:
    """Sums of money in the text, in whole hryvnias: "750 грн", "1 200 UAH", "₴450"."""
    found = []
    for pattern in (_AFTER, _BEFORE):
        for match in pattern.finditer(text):
            value = _number(match[1])
            if value is not None:
                found.append(value)
    return found


def _number(raw: str) -> int | None:
    digits = re.sub(r"[ \u00a0\u202f]", "", raw)
    if re.fullmatch(r"\d{1,3}(?:[,.]\d{3})+", digits):
        digits = re.sub(r"[,.]", "", digits)
    digits = digits.replace(",", ".")
    try:
        return round(float(digits))
    except ValueError:
        return None


def unknown_prices(text: str, known: Collection[int]) -> list[int]:
    """Amounts of money in the text that no service or master's offer costs."""
    return [a for a in amounts(text) if a not in known]


def local_money(text: str, language: str, word: str) -> str:
    """ "750 UAH" as "750 грн" in Ukrainian and Russian replies."""
    if language not in ("uk", "ru"):
        return text
    return _UAH.sub(lambda m: f" {word}", text)


def sentences(text: str) -> list[str]:
    """The text cut after each . ! ? (a price like "1.200" is not cut)."""
    return [s for s in re.split(r"(?<=[.!?…])\s+", text.strip()) if s]


def stems(text: str) -> set[str]:
    return {w[:STEM] for w in _WORD.findall(text.casefold()) if len(w) >= 3}


def match_service(texts: Sequence[str], names: Mapping[int, Iterable[str]]) -> int | None:
    """The one service whose name the texts name best (most words in common), looking at
    each text in turn; None when none or several fit equally."""
    for text in texts:
        said = stems(text)
        if not said:
            continue
        scores: dict[int, float] = {}
        for service_id, variants in names.items():
            best = 0.0
            for name in variants:
                words = stems(name)
                if words:
                    hit = len(words & said)
                    best = max(best, hit + hit / len(words))  # a full match beats a part
            if best:
                scores[service_id] = best
        if scores:
            top = max(scores.values())
            winners = [s for s, v in scores.items() if v == top]
            if len(winners) == 1:
                return winners[0]
    return None
