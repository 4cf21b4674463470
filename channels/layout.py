"""How a reply is laid out for a provider: long texts cut into parts, buttons into rows."""

from __future__ import annotations


def split_text(text: str, limit: int, *, utf16: bool = True) -> list[str]:
    """Parts of at most `limit` units each: UTF-16 code units (Telegram's and Viber's count,
    where an emoji outside the BMP is two) or, with `utf16=False`, characters (Twilio's)."""
    parts: list[str] = []
    rest = text.strip()
    while _units(rest, utf16) > limit:
        fits = _fitting(rest, limit, utf16)
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


def _units(text: str, utf16: bool) -> int:
    return len(text.encode("utf-16-le")) // 2 if utf16 else len(text)


def _fitting(text: str, limit: int, utf16: bool) -> int:
    """How many characters of `text` fit in `limit` units."""
    if not utf16:
        return min(len(text), limit)
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
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
