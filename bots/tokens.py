"""Counting tokens for the LLM's history budget and for usage estimates.

tiktoken is exact but downloads its BPE file on first use (cached under TIKTOKEN_CACHE_DIR).
Where that fails (no network, a locked-down host) we fall back to a deterministic estimate,
so trimming history never depends on the network. Each encoding is tried once per process.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import tiktoken

log = logging.getLogger(__name__)

FALLBACK_ENCODING = "o200k_base"  # the encoding of current OpenAI chat models
# Chat framing per OpenAI's cookbook: each message costs its role/separators on top of its text,
# and every reply is primed with a few tokens.
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3

# Loaded encodings by name; None records a failed load so it is not retried on every call.
_loaded: dict[str, tiktoken.Encoding | None] = {}
# Set by `set_encoding`: one encoding (or None: the estimate) for every model.
_override: tiktoken.Encoding | None = None
_overridden = False


def set_encoding(encoding: tiktoken.Encoding | None) -> None:
    """Count with this encoding for every model (a bundled BPE file, tests); None counts with
    the estimate and never touches tiktoken's download. `reset_encoding` undoes it."""
    global _override, _overridden
    _override, _overridden = encoding, True


def reset_encoding() -> None:
    """Back to tiktoken's own encodings, trying again those that failed to load."""
    global _override, _overridden
    _override, _overridden = None, False
    _loaded.clear()


def encoding_for(model: str) -> tiktoken.Encoding | None:
    """The model's encoding, or None when it cannot be loaded here."""
    if _overridden:
        return _override
    name = _encoding_name(model)
    if name not in _loaded:
        _loaded[name] = _load(name)
    return _loaded[name]


def count_tokens(text: str, model: str) -> int:
    if not text:
        return 0
    encoding = encoding_for(model)
    if encoding is None:
        return estimate_tokens(text)
    # disallowed_special=() : a client typing "<|endoftext|>" is text, not an error.
    return len(encoding.encode(text, disallowed_special=()))


def count_messages(messages: Sequence[Mapping[str, Any]], model: str) -> int:
    """Prompt tokens of chat messages, framing included (OpenAI cookbook's rule)."""
    return REPLY_PRIMING + sum(count_message(m, model) for m in messages)


def count_message(message: Mapping[str, Any], model: str) -> int:
    """One message's share of a prompt: its framing and every text it carries."""
    total = PER_MESSAGE
    for key, value in message.items():
        if key == "tool_calls":
            # Calls are sent as their names and JSON arguments.
            total += count_tokens(json.dumps(value, ensure_ascii=False), model)
        elif isinstance(value, str):
            total += count_tokens(value, model)
            if key == "name":
                total += PER_NAME
    return total


def estimate_tokens(text: str) -> int:
    """A deterministic, slightly generous estimate for when no encoding can be loaded.

    BPE vocabularies are trained mostly on Latin text: English averages about 4 characters
    per token, while Cyrillic (2 UTF-8 bytes a letter) takes about 2-3 letters per token, and
    CJK or emoji about one token per character. Counting ASCII as 1/4, two-byte characters as
    1/2 and longer ones as 1 token lands near (and rather above) o200k_base and cl100k_base,
    which is the safe side for a budget.
    """
    weight = 0.0
    for char in text:
        size = len(char.encode("utf-8"))
        weight += 0.25 if size == 1 else 0.5 if size == 2 else 1.0
    return math.ceil(weight)


def _encoding_name(model: str) -> str:
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        # Other OpenAI-compatible servers' models: the modern encoding is the closer guess.
        return FALLBACK_ENCODING


def _load(name: str) -> tiktoken.Encoding | None:
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # network, disk or a corrupt cache: all mean "estimate"
        log.warning(
            "tiktoken encoding %s is unavailable (%s); token counts are estimated",
            name,
            type(exc).__name__,
        )
        return None
