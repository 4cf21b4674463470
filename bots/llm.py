"""The LLM brain: an OpenAI-compatible chat model acting through the typed tools.

Each turn reads the salon's facts and the conversation from the database, asks the model,
runs the tools it calls (as the conversation's own client, whatever the arguments say) and
loops until the model answers in words. Whatever goes wrong — the model is down, slow, or
answers nonsense — the client gets one honest reply and the conversation goes to staff:
the brain never stays silent and never raises.

Small local models are held by guards around the model, not by the prompt alone:

- a message asking for a person, complaining or asking a medical/legal question goes to
  staff before the model is asked (NLU intents `human`, `complaint`, `sensitive`);
- tool calls written as text are run like native ones (bots/tool_text.py);
- `book`, `reschedule` and `cancel` are held: the client gets a summary built here from the
  catalogue and says yes first (bots/llm_writes.py), giving a name and phone on the web chat;
- what reaches the client has no markers, calls, JSON or code, and no price the price list
  does not hold (bots/reply_guard.py).
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
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bots import nlu, reply_guard
from bots.base import Reply, Turn
from bots.catalog_cache import CatalogCache
from bots.llm_writes import (
    ANONYMOUS_CHANNELS,
    CONTACT_KEY,
    PENDING_KEY,
    WRITES,
    Pending,
    find_contact,
    is_yes,
    money_text,
    slot_at,
    when_text,
)
from bots.state import Memory, recall, remember
from bots.tokens import REPLY_PRIMING, count_message, count_messages, count_tokens
from bots.tool_text import parse_tool_calls
from bots.tools import Language, ModelTools, ToolContext, ToolResult, Tools
from crm_store.business import get_business
from crm_store.catalog import list_masters, list_services
from crm_store.models import Business, Client, Message, ScheduledMessage
from prompts import ROOT, load_json

log = logging.getLogger(__name__)

LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT_TIMEOUT = 30.0  # seconds per model request: a chat client should not wait longer
DEFAULT_RETRIES = 2  # the client's own retries, with backoff, on 408/409/429/5xx and timeouts
# A chat answer is a few sentences; a cap keeps a rambling (or looping) small model from
# holding a CPU for minutes. HUB_LLM_MAX_TOKENS.
DEFAULT_MAX_TOKENS = 400
# Intents that go to staff without asking the model: a small model answered "no" to "can I
# talk to a person?".
SAFETY_INTENTS = {
    "human": "the client asked for a person",
    "complaint": "the client complains",
    "sensitive": "a medical or legal question",
}
MAX_FAILURES = 2  # answers with nothing to send in a row before a person takes over
MAX_BUTTONS = 6
TIME = re.compile(r"(?<![\d:])([01]?\d|2[0-3])[:.]([0-5]\d)(?![\d])")
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
    retries: int = 0  # the client's attempts after the first one (5xx, 429, timeouts)
    timeouts: int = 0  # requests that ran out of time after every retry
    text_calls: int = 0  # tool calls the model wrote as text
    held: int = 0  # writes held for the client's yes
    guarded: int = 0  # answers replaced: nothing sendable left, or an invented price

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.rounds += other.rounds
        self.tool_calls += other.tool_calls
        self.turns += other.turns
        self.estimated = self.estimated or other.estimated
        self.retries += other.retries
        self.timeouts += other.timeouts
        self.text_calls += other.text_calls
        self.held += other.held
        self.guarded += other.guarded

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


@dataclass(frozen=True)
class Catalogue:
    """The price list as the guards need it: names in every language, and every price a
    service or a master's own offer has (whole hryvnias)."""

    names: dict[int, list[str]] = field(default_factory=dict)
    localized: dict[int, dict[str, str]] = field(default_factory=dict)
    prices: dict[int, float] = field(default_factory=dict)  # service id → list price
    offers: dict[tuple[int, int], float] = field(default_factory=dict)  # (service, master)

    @property
    def amounts(self) -> set[int]:
        return {round(p) for p in (*self.prices.values(), *self.offers.values())}

    def amounts_of(self, service_id: int) -> set[int]:
        prices = [self.prices.get(service_id)]
        prices += [p for (service, _), p in self.offers.items() if service == service_id]
        return {round(p) for p in prices if p is not None}

    def price(self, service_id: int, master_id: int | None) -> float | None:
        if master_id is not None and (service_id, master_id) in self.offers:
            return self.offers[(service_id, master_id)]
        return self.prices.get(service_id)

    def name(self, service_id: int, language: Language) -> str:
        names = self.localized.get(service_id, {})
        return names.get(language) or names.get("uk") or str(service_id)


@dataclass(frozen=True)
class _Call:
    """A tool call, native or written as text, as the brain runs it."""

    id: str
    name: str
    arguments: str | Mapping[str, Any] | None
    native: bool = True


@dataclass
class _TurnState:
    turn: Turn
    language: Language
    usage: Usage
    messages: list[dict[str, Any]] = field(default_factory=list)
    handoff: str | None = None  # set when the model called the `handoff` tool
    memory: Memory | None = None
    catalogue: Catalogue = field(default_factory=Catalogue)
    has_contact: bool = False  # the card has a phone, or the client gave one in this chat
    slots: list[dict[str, Any]] = field(default_factory=list)  # this turn's find_slots

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
        max_tokens: int = DEFAULT_MAX_TOKENS,
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
        self.max_tokens = max_tokens
        self.specs = self.tools.specs()
        self.parameters = {
            spec["function"]["name"]: set(spec["function"]["parameters"].get("properties", {}))
            for spec in self.specs
        }
        self.last_usage = Usage()
        self.usage_total = Usage()
        self._catalogues = CatalogCache(sessions, self._read_catalogue)

    async def respond(self, turn: Turn) -> list[Reply]:
        state = _TurnState(turn, pick_language(turn.language, turn.text), Usage(turns=1))
        self.last_usage = state.usage
        try:
            reply = await self._respond(state)
        except ModelFailure as exc:
            log.warning("LLM gave no answer in conversation %s: %s", turn.conversation_id, exc)
            reply = self._apology(state, f"model error: {exc.reason}")
        except Exception:
            # A database or programming error: still answer the client, and say why in the log.
            log.exception("LLM turn failed in conversation %s", turn.conversation_id)
            reply = self._apology(state, "model error: internal error")
        await self._save(state)
        self.usage_total.add(state.usage)
        return [reply]

    async def _respond(self, state: _TurnState) -> Reply:
        state.memory = await recall(self.sessions, state.turn.conversation_id)
        # A held write lives for one message: whatever the client says next settles it.
        pending = Pending.from_state(state.memory.state.pop(PENDING_KEY, None))
        intents = _intents(state.turn.text)
        for intent, reason in SAFETY_INTENTS.items():
            if intent in intents:
                return Reply(
                    text=_words(state.language, "handoff"), handoff=True, handoff_reason=reason
                )
        await self._prepare(state)
        if pending is not None:
            settled = await self._settle(state, pending, intents)
            if settled is not None:
                return settled
        return await self._converse(state)

    async def _save(self, state: _TurnState) -> None:
        if state.memory is None:
            return
        try:
            await remember(self.sessions, state.memory)
        except Exception:
            # The reply still goes out; a lost pending write only means asking again.
            log.exception("bot state not saved in conversation %s", state.turn.conversation_id)

    # The conversation with the model ---------------------------------------------------

    async def _converse(self, state: _TurnState) -> Reply:
        for _ in range(self.max_rounds):
            message = await self._complete(state)
            calls = self._calls(state, message)
            if calls:
                held = await self._run_tools(state, message, calls)
                if held is not None:
                    return held
                continue
            return self._answer(state, message)
        reason = state.handoff or f"the model did not finish in {self.max_rounds} rounds"
        return Reply(
            text=_words(state.language, "too_many_steps"), handoff=True, handoff_reason=reason
        )

    async def _complete(self, state: _TurnState) -> ChatCompletionMessage:
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=state.messages,  # type: ignore[arg-type]
                tools=self.specs,  # type: ignore[arg-type]
                tool_choice="auto",
                max_tokens=self.max_tokens,
            )
            completion = raw.parse()
        except openai.OpenAIError as exc:
            # After the client's own retries; only the kind of failure is kept, never the
            # request or the server's message (which may echo a key).
            state.usage.retries += self._retries_spent(exc)
            if isinstance(exc, openai.APITimeoutError):
                state.usage.timeouts += 1
            raise ModelFailure(_failure(exc)) from exc
        state.usage.retries += getattr(raw, "retries_taken", 0) or 0
        state.usage.rounds += 1
        message = _message_of(completion)
        self._count(state, completion, message)
        if message is None:
            raise ModelFailure("the response has no message")
        return message

    def _calls(self, state: _TurnState, message: ChatCompletionMessage) -> list[_Call]:
        """The native calls, else the calls written in the text (a small model's habit)."""
        if message.tool_calls:
            calls = []
            for native in message.tool_calls:
                function = getattr(native, "function", None)
                name = function.name if function is not None else ""
                arguments = function.arguments if function is not None else None
                calls.append(_Call(native.id, name, arguments))
            return calls
        written = parse_tool_calls(message.content, known=self.tools.names)
        state.usage.text_calls += len(written)
        return [
            _Call(
                f"call_text_{state.usage.rounds}_{n}",
                call.name,
                self._known_arguments(call.name, call.arguments),
                native=False,
            )
            for n, call in enumerate(written, start=1)
        ]

    def _known_arguments(self, name: str, arguments: dict[str, Any] | str) -> dict[str, Any] | str:
        """A written call's arguments without keys the tool does not have: a small model
        adds them freely, and the tool would refuse the whole call for one."""
        known = self.parameters.get(name)
        if known is None or not isinstance(arguments, dict):
            return arguments
        return {k: v for k, v in arguments.items() if k in known}

    async def _run_tools(
        self, state: _TurnState, message: ChatCompletionMessage, calls: Sequence[_Call]
    ) -> Reply | None:
        """Every call gets its `role: tool` answer (the API rejects a history without one);
        bad arguments come back as error results the model can correct. A write the client
        has to agree to ends the turn with its summary (the calls after it are not run)."""
        state.messages.append(
            {
                # Words beside a written call are dropped: the model answers again after it.
                "role": "assistant",
                "content": message.content if message.tool_calls else None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": _arguments_json(c.arguments)},
                    }
                    for c in calls
                ],
            }
        )
        for call in calls:
            if call.name in WRITES and call.name in self.tools.names:
                held, result = await self._hold(state, call)
                if held is not None:
                    return held
            else:
                result = await self._run_tool(state, call)
            state.messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": result.to_json()}
            )
        return None

    async def _run_tool(self, state: _TurnState, call: _Call) -> ToolResult:
        state.usage.tool_calls += 1
        if not call.name:  # a custom (free-text) tool call: we offer none
            return ToolResult(False, error="only the listed function tools exist")
        result = await self.tools.call(call.name, call.arguments, state.context)
        log.info("conversation %s: tool %s ok=%s", state.turn.conversation_id, call.name, result.ok)
        if result.handoff:
            state.handoff = result.handoff
        if call.name == "find_slots" and result.ok:
            state.slots = list(result.data.get("slots") or [])
        if call.name == "update_contact" and result.ok and result.data.get("phone"):
            self._contact_given(state)
        return result

    # Writes held for a yes --------------------------------------------------------------

    async def _hold(self, state: _TurnState, call: _Call) -> tuple[Reply | None, ToolResult]:
        """Check the write with the read-only tools; when it would work, the summary to ask
        the client with, else the refusal for the model to correct."""
        state.usage.tool_calls += 1
        model = self.tools.tools.registry[call.name][0]
        try:
            raw = (
                json.loads(call.arguments or "{}")
                if isinstance(call.arguments, str)
                else call.arguments
            )
            args = model.model_validate(raw or {})
        except (ValueError, ValidationError) as exc:
            return None, ToolResult(False, error=f"invalid arguments: {_short(exc)}")
        arguments = args.model_dump(mode="json", exclude_none=True)
        if call.name == "book":
            pending = await self._pending_book(state, arguments)
        else:
            pending = await self._pending_change(state, call.name, arguments)
        if isinstance(pending, ToolResult):
            return None, pending
        state.usage.held += 1
        assert state.memory is not None
        state.memory.state[PENDING_KEY] = pending.as_state()
        key = f"confirm_{call.name}" + ("_contact" if pending.ask_contact else "")
        table = _table(state.language)
        buttons = [] if pending.ask_contact else [str(table["yes"]), str(table["no"])]
        return Reply(
            text=_template(state.language, key, pending.summary), quick_replies=buttons
        ), ToolResult(True)

    async def _pending_book(
        self, state: _TurnState, arguments: dict[str, Any]
    ) -> Pending | ToolResult:
        start = datetime.fromisoformat(arguments["start"])
        master_id = arguments.get("master_id")
        day = start.date().isoformat()
        query = {
            "service_id": arguments["service_id"],
            "date_from": day,
            "date_to": day,
            "limit": 100,
        }
        if master_id is not None:
            query["master_id"] = master_id
        found = await self.tools.call("find_slots", query, state.context)
        if not found.ok:
            return found
        slots = list(found.data.get("slots") or [])
        slot = slot_at(slots, start, master_id)
        if slot is None:
            free = ", ".join(s["time"] for s in slots[:8]) or "none"
            state.slots = slots
            return ToolResult(
                False,
                error=f"{start:%Y-%m-%d %H:%M} is not free; free times that day: {free}. "
                "Offer free times, or call find_slots for another day.",
            )
        arguments = {**arguments, "master_id": slot["master_id"], "start": slot["start"]}
        summary = self._summary(state, arguments["service_id"], slot, found.data.get("service"))
        ask = state.turn.channel in ANONYMOUS_CHANNELS and not state.has_contact
        return Pending("book", arguments, summary, ask_contact=ask)

    async def _pending_change(
        self, state: _TurnState, tool: str, arguments: dict[str, Any]
    ) -> Pending | ToolResult:
        listed = await self.tools.call("my_appointments", None, state.context)
        mine = [
            a
            for a in listed.data.get("appointments") or []
            if a.get("id") == arguments["appointment_id"]
        ]
        if not listed.ok or not mine:
            return ToolResult(
                False,
                error=f"the client has no upcoming appointment {arguments['appointment_id']}; "
                "call my_appointments",
            )
        appointment = mine[0]
        old = self._when(state, appointment["date"], appointment["time"])
        if tool == "cancel":
            summary = self._summary(
                state, appointment["service_id"], appointment, appointment["service"]
            )
            return Pending("cancel", arguments, summary)
        start = datetime.fromisoformat(arguments["start"])
        master_id = arguments.get("master_id") or appointment["master_id"]
        day = start.date().isoformat()
        query = {
            "service_id": appointment["service_id"],
            "master_id": master_id,
            "date_from": day,
            "date_to": day,
            "limit": 100,
        }
        found = await self.tools.call("find_slots", query, state.context)
        slot = slot_at(found.data.get("slots") or [], start, master_id) if found.ok else None
        if slot is None and day != appointment["date"]:
            # On its own day the appointment itself hides the times around it: the write checks.
            free = ", ".join(s["time"] for s in (found.data.get("slots") or [])[:8]) or "none"
            return ToolResult(
                False, error=f"{start:%Y-%m-%d %H:%M} is not free; free times that day: {free}"
            )
        target = slot or {
            "date": day,
            "time": f"{start:%H:%M}",
            "master": appointment["master"],
            "master_id": master_id,
        }
        summary = self._summary(state, appointment["service_id"], target, appointment["service"])
        summary["old"] = old
        return Pending("reschedule", {**arguments, "start": f"{start:%Y-%m-%dT%H:%M}"}, summary)

    def _summary(
        self, state: _TurnState, service_id: int, at: Mapping[str, Any], name: object
    ) -> dict[str, str]:
        catalogue = state.catalogue
        price = catalogue.price(service_id, at.get("master_id"))
        return {
            "service": str(name or catalogue.name(service_id, state.language)),
            "master": str(at.get("master") or "—"),
            "when": self._when(state, at["date"], at["time"]),
            "price": money_text(price, _table(state.language)) if price is not None else "—",
        }

    def _when(self, state: _TurnState, day: str, clock: str) -> str:
        return when_text(
            datetime.fromisoformat(day).date(), clock, state.language, _table(state.language)
        )

    async def _settle(self, state: _TurnState, pending: Pending, intents: set[str]) -> Reply | None:
        """The client's answer to a held write: a phone (with a name) or a yes runs it;
        anything else drops it (None: the model answers the message as usual)."""
        assert state.memory is not None
        table = _table_all()
        contact = find_contact(state.turn.text, table["name_intros"], table["yes_words"])
        if contact is not None:
            saved = await self._save_contact(state, contact.phone, contact.name)
            state.has_contact = state.has_contact or saved
        elif not is_yes(
            state.turn.text, intents, [*table["yes_words"], str(_table(state.language)["yes"])]
        ):
            return None
        if pending.tool == "book" and pending.ask_contact and not state.has_contact:
            state.memory.state[PENDING_KEY] = pending.as_state()
            return Reply(text=_words(state.language, "ask_contact"))
        state.usage.tool_calls += 1
        result = await self.tools.call(pending.tool, pending.arguments, state.context)
        log.info(
            "conversation %s: held %s ok=%s", state.turn.conversation_id, pending.tool, result.ok
        )
        if result.ok:
            return self._done(state, pending, result)
        # Taken meanwhile, or no longer possible: the model offers what is left.
        call = _Call("call_held_1", pending.tool, pending.arguments)
        state.messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": _arguments_json(call.arguments),
                        },
                    }
                ],
            }
        )
        state.messages.append(
            {"role": "tool", "tool_call_id": call.id, "content": result.to_json()}
        )
        return await self._converse(state)

    async def _save_contact(self, state: _TurnState, phone: str, name: str | None) -> bool:
        arguments = {"phone": phone, **({"name": name} if name else {})}
        state.usage.tool_calls += 1
        result = await self.tools.call("update_contact", arguments, state.context)
        if not result.ok and name:  # the number was not valid: keep at least the name
            await self.tools.call("update_contact", {"name": name}, state.context)
        if result.ok:
            self._contact_given(state)
        return result.ok

    def _contact_given(self, state: _TurnState) -> None:
        state.has_contact = True
        if state.memory is not None:
            state.memory.state[CONTACT_KEY] = True

    def _done(self, state: _TurnState, pending: Pending, result: ToolResult) -> Reply:
        described = next(
            (
                result.data[k]
                for k in ("booked", "moved", "cancelled")
                if isinstance(result.data.get(k), dict)
            ),
            None,
        )
        values = dict(pending.summary)
        if described is not None:
            values.update(
                self._summary(state, described["service_id"], described, described.get("service"))
            )
        address = str(result.data.get("address") or "")
        # A salon that has not filled in its address gets no "see you at: —".
        values["address"] = (
            _words(state.language, "address_part").format(address=address) if address else ""
        )
        return Reply(text=_template(state.language, f"done_{pending.tool}", values))

    def _answer(self, state: _TurnState, message: ChatCompletionMessage) -> Reply:
        raw = (message.content or "").strip()
        cleaned = reply_guard.clean(raw)
        if cleaned.empty:
            if state.handoff:  # the model handed off and said nothing: say it for it
                return Reply(
                    text=_words(state.language, "handoff"),
                    handoff=True,
                    handoff_reason=state.handoff,
                )
            if not raw:
                raise ModelFailure("refused" if message.refusal else "empty answer")
            return self._nothing_to_send(state, raw)
        if cleaned.changed:
            log.info("conversation %s: markup taken out of the answer", state.turn.conversation_id)
        text = reply_guard.local_money(cleaned.text, state.language, _money_word(state.language))
        invented = self._invented_prices(state, text)
        if invented:
            log.info(
                "conversation %s: prices not in the list %s", state.turn.conversation_id, invented
            )
            state.usage.guarded += 1
            text = self._price_answer(state, text, raw)
        if state.memory is not None:
            state.memory.failures = 0
        return Reply(
            text=text[:REPLY_MAX],
            quick_replies=self._slot_buttons(state, text),
            handoff=state.handoff is not None,
            handoff_reason=state.handoff or "",
        )

    def _nothing_to_send(self, state: _TurnState, raw: str) -> Reply:
        """The answer was only markers, calls or code: an honest short answer instead, and
        after the second such answer in a row, a person."""
        state.usage.guarded += 1
        log.info("conversation %s: nothing sendable in %r", state.turn.conversation_id, raw[:120])
        failures = 1
        if state.memory is not None:
            state.memory.failures += 1
            failures = state.memory.failures
        if failures >= MAX_FAILURES:
            return Reply(
                text=_words(state.language, "handoff"),
                handoff=True,
                handoff_reason="the bot failed to understand twice in a row",
            )
        return Reply(text=_words(state.language, "unclear"))

    def _invented_prices(self, state: _TurnState, text: str) -> list[int]:
        """Amounts no service costs; in a sentence naming one service, amounts that service
        does not cost ("a men's haircut is 450" when 450 is the manicure's price)."""
        catalogue = state.catalogue
        invented = []
        for sentence in reply_guard.sentences(text):
            named = reply_guard.match_service([sentence], catalogue.names)
            known = catalogue.amounts if named is None else catalogue.amounts_of(named)
            invented += reply_guard.unknown_prices(sentence, known)
        return invented

    def _price_answer(self, state: _TurnState, text: str, raw: str) -> str:
        """The answer with each sentence naming an unknown price replaced by the real price
        of the service the client (or the model) named, or dropped; a safe answer when
        nothing is left."""
        catalogue = state.catalogue
        found = reply_guard.match_service([state.turn.text, raw], catalogue.names)
        fact = None
        if found is not None:
            price = money_text(catalogue.prices[found], _table(state.language))
            values = {"service": catalogue.name(found, state.language), "price": price}
            fact = _template(state.language, "price_fact", values)
        kept: list[str] = []
        for sentence in reply_guard.sentences(text):
            if not self._invented_prices(state, sentence):
                kept.append(sentence)
            elif fact is not None and fact not in kept:
                kept.append(fact)
        answer = " ".join(kept).strip()
        if reply_guard.clean(answer).empty:
            return _words(state.language, "price_unknown")
        return answer

    def _slot_buttons(self, state: _TurnState, text: str) -> list[str]:
        """The free times of this turn's last `find_slots` that the answer offers."""
        if not state.slots:
            return []
        said = {f"{int(h):02d}:{m}" for h, m in TIME.findall(text)}
        weekdays = _table(state.language)["weekdays"]
        buttons: list[str] = []
        for slot in state.slots:
            if slot.get("time") not in said:
                continue
            day = datetime.fromisoformat(slot["date"]).date()
            label = f"{weekdays[day.weekday()]} {day:%d.%m} {slot['time']}"
            if label not in buttons:
                buttons.append(label)
        return buttons[:MAX_BUTTONS]

    def _retries_spent(self, exc: openai.OpenAIError) -> int:
        """The client's retries before it gave up: all of them for what it retries."""
        retried = isinstance(exc, openai.APIConnectionError) or (
            isinstance(exc, openai.APIStatusError)
            and (exc.status_code in (408, 409, 429) or exc.status_code >= 500)
            and exc.response.headers.get("x-should-retry") != "false"
        )
        return int(self.client.max_retries) if retried else 0

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
        business, state.catalogue = await self._catalogues.get()
        async with self.sessions() as session:
            stored = await recent_messages(session, state.turn.conversation_id, HISTORY_LIMIT)
            notes = await reminder_notes(session, stored)
            client = await session.get(Client, state.turn.client_id)
        given = bool(state.memory and state.memory.state.get(CONTACT_KEY))
        state.has_contact = given or bool(client is not None and client.phone)
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

    async def _read_catalogue(self, session: AsyncSession) -> tuple[Business, Catalogue]:
        business = await get_business(session, timezone=self.timezone, currency=self.currency)
        return business, await read_catalogue(session)


async def read_catalogue(session: AsyncSession) -> Catalogue:
    services = await list_services(session)
    masters = await list_masters(session)
    return Catalogue(
        names={
            s.id: [n for n in (s.name_uk, s.name_en, s.name_ru) if n]  # type: ignore[misc]
            for s in services
        },
        localized={
            s.id: {"uk": s.name_uk, "en": s.name_en, "ru": s.name_ru or s.name_uk}  # type: ignore[misc]
            for s in services
        },
        prices={s.id: s.price_minor / 100 for s in services},  # type: ignore[misc]
        offers={
            (offer.service_id, offer.master_id): offer.price_minor / 100
            for card in masters
            for offer in card.offers
        },
    )


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


def _table(language: Language) -> dict[str, Any]:
    table = load_json("llm/replies.json")
    return {**table["uk"], **table.get(language, {})}


def _table_all() -> dict[str, Any]:
    return dict(load_json("llm/replies.json"))


def _template(language: Language, key: str, values: Mapping[str, str]) -> str:
    return fill(_words(language, key), values)


def _money_word(language: Language) -> str:
    return _words(language, "money").replace("{amount}", "").strip()


def _intents(text: str) -> set[str]:
    """The NLU's intents; none when it fails (it is the offline brain's, changed apart)."""
    try:
        return set(nlu.detect_intents(text))
    except Exception:
        log.exception("intent detection failed")
        return set()


def _arguments_json(arguments: str | Mapping[str, Any] | None) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(dict(arguments or {}), ensure_ascii=False)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)[:200]


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
