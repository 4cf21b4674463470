"""What every provider channel's webhook shares: a refusal that becomes a 4xx, the inbox
names that go into webhook paths (/webhooks/<channel>/<inbox>), and reading a JSON body."""

from __future__ import annotations

import json
import re
from typing import Any

INBOX_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
# What JSON can carry (as \u escapes) but the hub can't keep: a lone surrogate (no UTF-8
# for it: the stream entry can't be written) and NUL (PostgreSQL refuses it in text).
_UNKEEPABLE = re.compile("[\x00\ud800-\udfff]")


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


def parse_json(body: bytes | str) -> Any:
    """The body as JSON, with a lone surrogate made U+FFFD and NUL dropped wherever a string
    holds one (keys too), so whatever is accepted can be published and stored. Raises what
    json.loads raises (ValueError, RecursionError) for a body that is not JSON, and a
    ValueError for one that is not UTF-8 (json.loads would let encoded surrogates through)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    doc = json.loads(text)
    # Past strict UTF-8, only an escape can put either in.
    return _cleaned(doc) if "\\u" in text else doc


def clean_text(text: str) -> str:
    """`text` without NUL, a lone surrogate made U+FFFD (see parse_json)."""
    return _UNKEEPABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def _cleaned(doc: Any) -> Any:
    # Iterative: a body nested as deep as json.loads allows must not overflow the stack here.
    root = [doc]
    stack: list[list[Any] | dict[str, Any]] = [root]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict) and any(_UNKEEPABLE.search(k) for k, _ in items):
            node.clear()
            items = [(clean_text(k), v) for k, v in items]
            node.update(items)
        for key, value in items:
            if isinstance(value, str):
                if _UNKEEPABLE.search(value):
                    node[key] = clean_text(value)  # type: ignore[index]
            elif isinstance(value, dict | list):
                stack.append(value)
    return root[0]
