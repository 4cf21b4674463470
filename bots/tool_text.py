"""Tool calls a model wrote as text instead of the API's `tool_calls`.

Small local models (Qwen, Llama, Hermes and Mistral fine-tunes behind llama.cpp or Ollama)
often answer a tool-calling request with the call written out in their own template's
syntax. The shapes accepted here:

- a JSON object `{"name": …, "arguments": {…}}` ("parameters" for "arguments"; arguments
  as a JSON string; `{"function": {…}}` and `{"tool_calls": […]}` wrappers; a list of
  calls), bare or in a ``` fence;
- Hermes / Qwen: `<tool_call>{…}</tool_call>`, and `<tools>…</tools>` as Qwen-Coder writes it;
- Llama 3.1: `<function=name>{…}</function>`, `<|python_tag|>{…}`;
- Qwen3-Coder: `<function=name><parameter=key>value</parameter></function>`;
- Mistral: `[TOOL_CALLS] [{…}]` and `[TOOL_CALLS]name[ARGS]{…}`.

`parse_tool_calls` is pure and never raises, whatever the text. The words around a call are
not kept: the brain runs the calls and asks the model again with their results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 20_000  # longer answers are not scanned: no model reply of ours is that long
MAX_CALLS = 8
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_TAGGED = re.compile(r"<(tool_call|tools|tool_calls|function_call)>(.*?)(?:</\1>|\Z)", re.S | re.I)
_FUNCTION = re.compile(r"<function=([A-Za-z_][\w.\-]*)>(.*?)(?:</function>|\Z)", re.S)
_PARAMETER = re.compile(r"<parameter=([A-Za-z_]\w*)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.S)
_MISTRAL_ARGS = re.compile(r"\[TOOL_CALLS\]\s*([A-Za-z_][\w.\-]*)\s*\[ARGS\]", re.S)
_MARKERS = ("[TOOL_CALLS]", "<|python_tag|>")
_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input")


@dataclass(frozen=True)
class TextCall:
    name: str
    # A dict when the arguments were JSON (or absent); the raw string when they were not,
    # so the tool answers "arguments are not JSON" and the model can correct itself.
    arguments: dict[str, Any] | str = field(default_factory=dict)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


def parse_tool_calls(text: object, known: Collection[str] | None = None) -> list[TextCall]:
    """The calls written in `text`, in order; empty when there is none.

    An object counts as a call when it has a name and arguments, or a name alone that is one
    of the `known` tools: `{"name": "Olena"}` in an answer is not a call."""
    try:
        if not isinstance(text, str) or not text.strip():
            return []
        return _parse(text[:MAX_TEXT], known)[:MAX_CALLS]
    except (RecursionError, ValueError, TypeError, AttributeError):
        return []


def looks_like_call(text: object) -> bool:
    """Whether the text holds call syntax at all, parsed or not (for the reply guard)."""
    if not isinstance(text, str):
        return False
    return bool(
        _TAGGED.search(text)
        or _FUNCTION.search(text)
        or any(marker in text for marker in _MARKERS)
        or re.search(r'"(name|function)"\s*:', text)
    )


def _parse(text: str, known: Collection[str] | None) -> list[TextCall]:
    calls: list[TextCall] = []
    for match in _FUNCTION.finditer(text):
        calls.append(_function_tag(match[1], match[2]))
    for match in _TAGGED.finditer(text):
        if "<function=" not in match[2]:  # Qwen3's tags inside <tool_call>: read above
            calls += _from_json_text(match[2], known)
    for match in _MISTRAL_ARGS.finditer(text):
        value = _first_json(text[match.end() :])
        calls.append(TextCall(match[1], value if isinstance(value, dict) else {}))
    if calls:
        return calls
    for match in _FENCE.finditer(text):
        calls += _from_json_text(match[2], known)
    if calls:
        return calls
    for marker in _MARKERS:
        if marker in text:
            calls += _from_json_text(text.split(marker, 1)[1], known)
    if calls:
        return calls
    # A bare object anywhere in the words: "Sure! {"name": "book", "arguments": {…}}".
    return _from_json_text(text, known)


def _function_tag(name: str, body: str) -> TextCall:
    parameters = {m[1]: _scalar(m[2].strip()) for m in _PARAMETER.finditer(body)}
    if parameters:
        return TextCall(name, parameters)
    value = _first_json(body)
    if isinstance(value, dict):
        inner = _arguments(value)
        return TextCall(name, inner if inner is not None else value)
    return TextCall(name, body.strip() if body.strip() else {})


def _scalar(raw: str) -> Any:
    """A parameter's value: JSON where it parses (numbers, lists), else the text itself."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _from_json_text(text: str, known: Collection[str] | None) -> list[TextCall]:
    calls: list[TextCall] = []
    for value in _json_values(text):
        calls += _calls_in(value, known)
    return calls


def _json_values(text: str) -> Iterator[Any]:
    """Every top-level JSON value in the text, skipping what is not JSON (a model may write
    several objects one per line, or words between them)."""
    position = 0
    decoder = json.JSONDecoder()
    while position < len(text):
        start = _next_open(text, position)
        if start < 0:
            return
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        yield value
        position = end


def _next_open(text: str, position: int) -> int:
    starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
    return min(starts) if starts else -1


def _first_json(text: str) -> Any:
    return next(_json_values(text), None)


def _calls_in(value: Any, known: Collection[str] | None, depth: int = 0) -> list[TextCall]:
    if depth > 4:
        return []
    if isinstance(value, list):
        return [c for item in value for c in _calls_in(item, known, depth + 1)]
    if not isinstance(value, dict):
        return []
    for wrapper in ("tool_calls", "calls", "tool_uses"):
        if isinstance(value.get(wrapper), list):
            return _calls_in(value[wrapper], known, depth + 1)
    if isinstance(value.get("function"), dict):
        return _calls_in(value["function"], known, depth + 1)
    call = _call(value, known)
    return [call] if call is not None else []


def _call(value: dict[str, Any], known: Collection[str] | None) -> TextCall | None:
    name = value.get("name", value.get("function", value.get("tool")))
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        return None
    name = name.strip()
    arguments = _arguments(value)
    if arguments is None:
        if known is None or name not in known:
            return None
        arguments = {}
    return TextCall(name, arguments)


def _arguments(value: dict[str, Any]) -> dict[str, Any] | str | None:
    for key in _ARGUMENT_KEYS:
        if key not in value:
            continue
        raw = value[key]
        if raw is None:
            return {}
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, str):
            try:
                decoded = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return raw
            return decoded if isinstance(decoded, dict) else raw
        return json.dumps(raw, ensure_ascii=False)  # a list or number: let the tool refuse it
    return None
