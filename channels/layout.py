"""How a reply is laid out for a provider: long texts cut into parts, buttons into rows."""

from __future__ import annotations

from typing import Literal

Unit = Literal["utf16", "utf8", "chars"]


def split_text(text: str, limit: int, *, unit: Unit = "utf16") -> list[str]:
    """Parts of at most `limit` units each, cut at a paragraph, line or word break where one
    falls in the second half of a part. Units: UTF-16 code units (Telegram's and Viber's count,
    an emoji outside the BMP is two), UTF-8 bytes (Instagram's) or characters (Twilio's)."""
    parts: list[str] = []
    rest = text.strip()
    while _size(rest, unit) > limit:
        fits = _fitting(rest, limit, unit)
        cut = fits
        for sep in ("\n\n", "\n", " "):
            at = rest.rfind(sep, 0, fits)
            if at > fits // 2:
                cut = at
                break
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]


def _size(text: str, unit: Unit) -> int:
    if unit == "utf16":
        return len(text.encode("utf-16-le")) // 2
    if unit == "utf8":
        return len(text.encode())
    return len(text)


def _fitting(text: str, limit: int, unit: Unit) -> int:
    """How many characters of `text` fit in `limit` units (at least one, so a part is never
    empty)."""
    if unit == "chars":
        return max(1, min(len(text), limit))
    size = 0
    for i, ch in enumerate(text):
        size += _size(ch, unit)
        if size > limit:
            return max(i, 1)
    return len(text)


def button_rows(labels: list[str], short: int = 16) -> list[list[int]]:
    """Indexes of the buttons per row: two short labels share a row, longer ones stand alone."""
    rows: list[list[int]] = []
    for i, label in enumerate(labels):
        last = rows[-1] if rows else None
        if (
            last is not None
            and len(last) == 1
            and len(label) <= short
            and len(labels[last[0]]) <= short
        ):
            last.append(i)
        else:
            rows.append([i])
    return rows
