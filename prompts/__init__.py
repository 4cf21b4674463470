"""Prompts, reply templates and UI strings live here as files, not in code."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent
LANGUAGES = ("uk", "en", "ru")
DEFAULT_LANGUAGE = "uk"


@cache
def load_json(relative: str) -> dict[str, Any]:
    return json.loads((ROOT / relative).read_text(encoding="utf-8"))


def ui_strings(name: str, language: str) -> dict[str, str]:
    """UI strings of one screen in one language, falling back to the default language."""
    table = load_json(f"ui/{name}.json")
    base = dict(table[DEFAULT_LANGUAGE])
    base.update(table.get(language, {}))
    return base


def pick_language(*candidates: str | None) -> str:
    """The first supported language among explicit choices and Accept-Language values."""
    for candidate in candidates:
        if not candidate:
            continue
        for part in candidate.split(","):
            code = part.split(";")[0].strip().lower()[:2]
            if code in LANGUAGES:
                return code
    return DEFAULT_LANGUAGE
