"""What every provider channel's webhook shares: a refusal that becomes a 4xx, and the
inbox names that go into webhook paths (/webhooks/<channel>/<inbox>)."""

from __future__ import annotations

import re

INBOX_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class Rejected(Exception):
    """A webhook call refused: answered with `status` and `reason`, nothing stored."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_inbox(inbox: str, setting: str) -> str:
    """An inbox name safe in a URL path, or a ValueError naming the setting to fix."""
    if not INBOX_RE.match(inbox):
        raise ValueError(f"{setting} may hold only letters, digits, '_' and '-'")
    return inbox
