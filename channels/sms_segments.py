"""How many billed SMS parts a text takes (what the salon pays per message).

GSM 03.38 "GSM-7" when every character is in its basic table or extension table (an extension
character is sent as ESC + char: two septets), else UCS-2, counted in UTF-16 code units (an
emoji outside the BMP is a surrogate pair: two units).

    one part:      160 septets (GSM-7) / 70 units (UCS-2)
    several parts: 153 / 67 each (the rest of a part carries the concatenation header)

Parts are packed greedily and a two-unit character (an escape pair, a surrogate pair) is never
split across parts, as phones and carriers do; for ordinary text that is plain ceil(n / 153).
Twilio's own count (`num_segments`) wins when it gives one; this is the fallback and the
estimate shown before sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The GSM 03.38 basic character set, in table order (0x1B, the escape, is left out: it is not a
# character of its own).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as ESC + char, so it costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SegmentCount:
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _costs(text: str) -> tuple[Encoding, list[int]]:
    if is_gsm7(text):
        return "GSM-7", [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return "UCS-2", [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _pack(costs: list[int], part: int) -> int:
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def measure(text: str) -> SegmentCount:
    encoding, costs = _costs(text)
    units = sum(costs)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    # An empty body is still one (billed) message.
    segments = 1 if units <= single else _pack(costs, part)
    return SegmentCount(encoding, units, segments)


def count_segments(text: str) -> int:
    return measure(text).segments
