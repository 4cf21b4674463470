"""The LLM brain: an OpenAI-compatible chat model acting through the typed tools.

Each turn reads the salon's facts and the conversation from the database, asks the model,
runs the tools it calls (as the conversation's own client, whatever the arguments say) and
loops until the model answers in words. Whatever goes wrong — the model is down, slow, or
answers nonsense — the client gets one honest reply and the conversation goes to staff:
the brain never stays silent and never raises.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bots import nlu
from bots.base import Reply, Turn
from bots.tokens import REPLY_PRIMING, count_message, count_messages, count_tokens
from bots.tools import Language, ModelTools, ToolContext, ToolResult, Tools
from crm_store.business import get_business
from crm_store.models import Business, Message, ScheduledMessage
from prompts import ROOT, load_json

log = logging.getLogger(__name__)

LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT_TIMEOUT = 30.0  # seconds per model request: a chat client should not wait longer
DEFAULT_RETRIES = 2  # the client's own retries, with backoff, on 408/409/429/5xx and timeouts
# Read from the database before trimming to the token budget: far more than a budget of a
# few thousand tokens keeps, so trimming, not this, decides what the model sees.
HISTORY_LIMIT = 100
# Markers the model reads in the history; prompts/llm/system.md explains STAFF_MARKER.
STAFF_MARKER = "[administrator]"
# The hub's own messages (reminders, confirmations): the model did not write them, and a
# reminder's marker names the appointment a "Confirm" or "Cancel" after it is about.
AUTO_MARKER = "[automatic message]"
REMINDER_MARKER = "[reminder of appointment {id}]"
ATTACHMENT_MARKER = "[attachment]"
MISSING = "—"  # a fact the salon has not filled in; the prompt tells the model not to guess
REPLY_MAX = 4000  # Reply.text's limit
DAYS_LISTED = 8  # today and the next week, so the model need not do calendar arithmetic
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass
class Usage:
    """Tokens and steps of one turn (`LlmBrain.last_usage`) or of all turns so far
    (`LlmBrain.usage_total`), for `hub eval` to report prompt size and cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    rounds: int = 0  # model calls
    tool_calls: int = 0
    turns: int = 0
    # Some counts are our own estimate: the server reported no usage.
    estimated: bool = False

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.rounds += other.rounds
        self.tool_calls += other.tool_calls
        self.turns += other.turns
        self.estimated = self.estimated or other.estimated

    def cost(self, prompt_per_million: float, completion_per_million: float) -> float:
        return (
            self.prompt_tokens * prompt_per_million
            + self.completion_tokens * completion_per_million
        ) / 1_000_000


class ModelFailure(Exception):
    """The model gave no usable answer; `reason` is safe to log and to show staff."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _TurnState:
    turn: Turn
    language: Language
    usage: Usage
    messages: list[dict[str, Any]] = field(default_factory=list)
    handoff: str | None = None  # set when the model called the `handoff` tool

    @property
    def context(self) -> ToolContext:
        return ToolContext(self.turn.conversation_id, self.language)


def build_client(
    api_key: str,
    base_url: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> openai.AsyncOpenAI:
    """The hub's client; an empty base URL means OpenAI itself (OPENAI_BASE_URL unset)."""
    return openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=retries
    )


def _limited(
    client: openai.AsyncOpenAI, timeout: float | None, retries: int | None
) -> openai.AsyncOpenAI:
    options: dict[str, Any] = {}
    if timeout is not None:
        options["timeout"] = timeout
    if retries is not None:
        options["max_retries"] = retries
    return client.with_options(**options) if options else client


class LlmBrain:
    def __init__(
        self,
        tools: Tools,
        sessions: async_sessionmaker[AsyncSession],
        client: openai.AsyncOpenAI,
        model: str,
        clock: Callable[[], datetime],
        *,
        timezone: str = "Europe/Kyiv",
        currency: str = "UAH",
        max_rounds: int = 6,
        history_tokens: int = 3000,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> None:
        # Only the model's surface: a tool it is not shown is one it cannot run.
        self.tools: ModelTools = tools.for_model()
        self.sessions = sessions
        # The hub builds the client with its configured timeout and retries (build_client);
        # given here, they override the client's, e.g. for a client built elsewhere with the
        # library's default of ten minutes, far too long for a chat.
        self.client = _limited(client, timeout, retries)
        self.model = model
        self.clock = clock
        self.timezone = timezone
        self.currency = currency
        self.max_rounds = max_rounds
        self.history_tokens = history_tokens
        self.specs = self.tools.specs()
        self.last_usage = Usage()
        self.usage_total = Usage()

    async def respond(self, turn: Turn) -> list[Reply]:
        state = _TurnState(turn, pick_language(turn.language, turn.text), Usage(turns=1))
        self.last_usage = state.usage
        try:
            await self._prepare(state)
            reply = await self._converse(state)
        except ModelFailure as exc:
            log.warning("LLM gave no answer in conversation %s: %s", turn.conversation_id, exc)
            reply = self._apology(state, f"model error: {exc.reason}")
        except Exception:
            # A database or programming error: still answer the client, and say why in the log.
            log.exception("LLM turn failed in conversation %s", turn.conversation_id)
            reply = self._apology(state, "model error: internal error")
        self.usage_total.add(state.usage)
        return [reply]

    # The conversation with the model ---------------------------------------------------

    async def _converse(self, state: _TurnState) -> Reply:
        for _ in range(self.max_rounds):
            message = await self._complete(state)
            if message.tool_calls:
                await self._run_tools(state, message)
                continue
            return self._answer(state, message)
        reason = state.handoff or f"the model did not finish in {self.max_rounds} rounds"
        return Reply(
            text=_words(state.language, "too_many_steps"), handoff=True, handoff_reason=reason
        )

    async def _complete(self, state: _TurnState) -> ChatCompletionMessage:
        try:
            completion = await self.client.chat.completions.create(
                model=self.model,
                messages=state.messages,  # type: ignore[arg-type]
                tools=self.specs,  # type: ignore[arg-type]
                tool_choice="auto",
            )
        except openai.OpenAIError as exc:
            # After the client's own retries; only the kind of failure is kept, never the
            # request or the server's message (which may echo a key).
            raise ModelFailure(_failure(exc)) from exc
        state.usage.rounds += 1
        message = _message_of(completion)
        self._count(state, completion, message)
        if message is None:
            raise ModelFailure("the response has no message")
        return message

    async def _run_tools(self, state: _TurnState, message: ChatCompletionMessage) -> None:
        """Every call gets its `role: tool` answer (the API rejects a history without one);
        bad arguments come back as error results the model can correct."""
        calls = message.tool_calls or []
        state.messages.append(
            {
                "role": "assistant",
                "content": message.content,
                "tool_calls": [c.model_dump(mode="json", exclude_none=True) for c in calls],
            }
        )
        for call in calls:
            result = await self._run_tool(state, call)
            state.messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": result.to_json()}
            )

    async def _run_tool(self, state: _TurnState, call: Any) -> ToolResult:
        state.usage.tool_calls += 1
        function = getattr(call, "function", None)
        if function is None:  # a custom (free-text) tool call: we offer none
            return ToolResult(False, error="only the listed function tools exist")
        result = await self.tools.call(function.name, function.arguments, state.context)
        log.info(
            "conversation %s: tool %s ok=%s", state.turn.conversation_id, function.name, result.ok
        )
        if result.handoff:
            state.handoff = result.handoff
        return result

    def _answer(self, state: _TurnState, message: ChatCompletionMessage) -> Reply:
        text = (message.content or "").strip()
        if not text:
            if state.handoff:  # the model handed off and said nothing: say it for it
                return Reply(
                    text=_words(state.language, "handoff"),
                    handoff=True,
                    handoff_reason=state.handoff,
                )
            raise ModelFailure("refused" if message.refusal else "empty answer")
        return Reply(
            text=text[:REPLY_MAX],
            handoff=state.handoff is not None,
            handoff_reason=state.handoff or "",
        )

    def _apology(self, state: _TurnState, reason: str) -> Reply:
        # A hand-off the model already asked for keeps its own reason: staff need that one.
        return Reply(
            text=_words(state.language, "model_error"),
            handoff=True,
            handoff_reason=state.handoff or reason,
        )

    def _count(
        self, state: _TurnState, completion: object, message: ChatCompletionMessage | None
    ) -> None:
        usage = getattr(completion, "usage", None)
        if isinstance(usage, CompletionUsage):
            state.usage.prompt_tokens += usage.prompt_tokens or 0
            state.usage.completion_tokens += usage.completion_tokens or 0
            return
        # Some OpenAI-compatible servers report nothing: estimate, and say so.
        state.usage.estimated = True
        state.usage.prompt_tokens += count_messages(state.messages, self.model) + count_tokens(
            json.dumps(self.specs), self.model
        )
        if message is not None:
            state.usage.completion_tokens += count_message(
                message.model_dump(exclude_none=True), self.model
            )

    # What the model is told ------------------------------------------------------------

    async def _prepare(self, state: _TurnState) -> None:
        async with self.sessions() as session:
            business = await get_business(session, timezone=self.timezone, currency=self.currency)
            stored = await recent_messages(session, state.turn.conversation_id, HISTORY_LIMIT)
            notes = await reminder_notes(session, stored)
        earlier, current = split_current(stored, state.turn)
        history = trim_history(
            [m for m in (as_chat(x, notes.get(x.public_id)) for x in earlier) if m is not None],
            current,
            budget=self.history_tokens,
            model=self.model,
        )
        system = {"role": "system", "content": self.system_prompt(business, state.language)}
        state.messages = [system, *history]

    def system_prompt(self, business: Business, language: Language) -> str:
        tz = _zone(business.timezone, self.timezone)
        now = self.clock().astimezone(tz)
        days = (now.date() + timedelta(days=n) for n in range(DAYS_LISTED))
        values = {
            "business_name": business.name or MISSING,
            "address": _localized(business.address, language),
            "phone": business.phone or MISSING,
            "hours": _localized(business.hours_text, language),
            "currency": business.currency or self.currency,
            "timezone": tz.key,
            "now": f"{now:%Y-%m-%d} ({WEEKDAYS[now.weekday()]}), {now:%H:%M}",
            "days": ", ".join(f"{WEEKDAYS[d.weekday()][:3]} {d.isoformat()}" for d in days),
            "language": language,
            "language_name": _words(language, "language_name"),
        }
        return fill(system_template(), values)


# History ----------------------------------------------------------------------------------


async def recent_messages(session: AsyncSession, conversation_id: int, limit: int) -> list[Message]:
    """The conversation's newest messages, oldest first. (crm_store's conversation_messages
    pages from the oldest, which in a long conversation would miss the current message.)"""
    rows = await session.exec(
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    return list(reversed(rows.all()))


async def reminder_notes(session: AsyncSession, stored: Sequence[Message]) -> dict[str, str]:
    """The marker of each reminder among the hub's own messages, by message id."""
    ids = [m.public_id for m in stored if m.author == "system"]
    if not ids:
        return {}
    rows = await session.exec(
        select(ScheduledMessage.message_id, ScheduledMessage.appointment_id).where(
            col(ScheduledMessage.message_id).in_(ids),
            ScheduledMessage.kind == "reminder",
            col(ScheduledMessage.appointment_id).is_not(None),
        )
    )
    return {
        message_id: REMINDER_MARKER.replace("{id}", str(appointment_id))
        for message_id, appointment_id in rows.all()
        if message_id
    }


def split_current(stored: Sequence[Message], turn: Turn) -> tuple[list[Message], dict[str, Any]]:
    """The messages before the one being answered, and that one as a chat message.

    The current message is already stored: it is found by its id so it is sent once, and
    anything the client wrote after it is left for the turns that answer it."""
    for index, message in enumerate(stored):
        if message.public_id == turn.message_id:
            current = as_chat(message) or {"role": "user", "content": ATTACHMENT_MARKER}
            return list(stored[:index]), current
    # Not found by id (the worker and the store disagree): the last stored message, when it
    # is the same inbound text, is the current one.
    if stored and stored[-1].direction == "in" and stored[-1].text == turn.text:
        stored = stored[:-1]
    return list(stored), {"role": "user", "content": turn.text or ATTACHMENT_MARKER}


def as_chat(message: Message, note: str | None = None) -> dict[str, Any] | None:
    """A stored message as the model sees it; staff words and the hub's own messages are
    marked (`note`: a reminder's marker), not passed as the model's own."""
    text = message.text.strip() or (ATTACHMENT_MARKER if message.attachments else "")
    if not text:
        return None
    if message.direction == "in":
        return {"role": "user", "content": text}
    if message.author == "staff":
        return {"role": "assistant", "content": f"{STAFF_MARKER} {text}"}
    if message.author == "system":
        return {"role": "assistant", "content": f"{note or AUTO_MARKER} {text}"}
    return {"role": "assistant", "content": text}


def trim_history(
    earlier: Sequence[Mapping[str, Any]], current: dict[str, Any], *, budget: int, model: str
) -> list[dict[str, Any]]:
    """The newest messages that fit in `budget` tokens, oldest first; the current message is
    always kept, even alone over the budget (answering it is the point of the turn)."""
    kept = [current]
    used = REPLY_PRIMING + count_message(current, model)
    for message in reversed(earlier):
        used += count_message(message, model)
        if used > budget:
            break  # stop at the first gap: a history with holes would mislead the model
        kept.append(dict(message))
    kept.reverse()
    return kept


# Language and prompt files ----------------------------------------------------------------


def pick_language(declared: str | None, text: str) -> Language:
    """The client card's language when it is one we speak, else a guess from the text."""
    code = (declared or "")[:2].lower()
    if code in LANGUAGES:
        return cast(Language, code)
    return detect_language(text)


def detect_language(text: str) -> Language:
    """The offline brain's detector: one notion of the client's language in both brains."""
    return nlu.detect_language(text, default="uk")


@cache
def system_template() -> str:
    return (ROOT / "llm" / "system.md").read_text(encoding="utf-8")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace known {placeholders} only, so the prompt may show braces (JSON) freely."""
    return PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), template)


def _words(language: Language, key: str) -> str:
    table = load_json("llm/replies.json")
    return str(table.get(language, table["uk"]).get(key) or table["uk"][key])


def _localized(texts: Mapping[str, str] | None, language: Language) -> str:
    texts = texts or {}
    return texts.get(language) or texts.get("uk") or next(iter(texts.values()), "") or MISSING


def _zone(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def _message_of(completion: object) -> ChatCompletionMessage | None:
    """The first choice's message; servers that are only nearly compatible send a string,
    no choices or a choice without a message, all of which the client passes through."""
    if not isinstance(completion, ChatCompletion):
        return None
    choices = completion.choices or []
    message = getattr(choices[0], "message", None) if choices else None
    return message if isinstance(message, ChatCompletionMessage) else None


def _failure(exc: openai.OpenAIError) -> str:
    """What failed, for the log and for staff: the error's kind, status and code only."""
    kind = type(exc).__name__
    if isinstance(exc, openai.APIStatusError):
        code = getattr(exc, "code", None)
        return f"{kind} {exc.status_code}" + (f" {str(code)[:60]}" if code else "")
    return kind
