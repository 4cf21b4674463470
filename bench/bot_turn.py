"""The AI administrator's own cost per client message, without the model's time.

    python -m bench.bot_turn [--dialogues 40] [--postgres postgresql://user@host/db]

On the demo salon (no history, a fixed "now"), each dialogue is a new client who books a
gel manicure, looks at their appointments and cancels. The offline brain answers every turn;
the LLM brain answers against the local fake OpenAI server (tests/fakes), which replies at
once with scripted tool calls, and the time spent inside the model call is subtracted, so
what remains is the brain's own work: history, prompt, tools, database. Prints the median
and p99 per turn for each brain and backend (wall time, and the process's CPU time, which
counts the database driver's thread too), and the LLM/offline ratio of the medians. For the
offline brain it also prints the CPU time of its language rules alone (bots.nlu, bots.morph,
bots.translit, bots.locale_text), the part of a turn that is not the database, each message
read as if for the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bots import locale_text, morph, nlu, tokens, translit
from bots.base import Reply, Responder, Turn
from bots.llm import LlmBrain
from bots.offline import OfflineBrain
from bots.tools import Tools
from crm_store.conversations import InboundData, record_inbound
from crm_store.db import create_engine, session_factory, transaction
from crm_store.demo import load_demo_salon
from crm_store.identity import Hints
from hub.cli.bench.databases import fresh_database, label
from tests.fakes.openai_server import Calls, FakeOpenAI, Text, ToolCall, last_user_text

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=ZoneInfo("Europe/Kyiv"))
OFFLINE_TURNS = [
    "Привіт! Хочу на манікюр з покриттям завтра після 3",
    "{first}",
    "Оксана, 0671234567",  # the name and phone the web chat asks for: the yes that books
    "мої записи",
    "pryvit, a mozhna shche na pedykiur u subotu?",  # Latin-script Ukrainian
    "скасувати запис",
    "так",
]


def llm_policy(body: dict[str, Any]) -> Any:
    """An instant model: one tool call per client message, then a short answer."""
    if body["messages"][-1]["role"] == "tool":
        return Text("Готово.")
    said = last_user_text(body)
    if "записи" in said:
        return Calls((ToolCall("my_appointments", "{}"),))
    return Calls((ToolCall("find_slots", '{"service_id": 2, "date_from": "2027-03-02"}'),))


async def dialogue(
    sessions: Any, brain: Responder, number: int, turns: list[str], samples: list[float]
) -> None:
    last: list[Reply] = []
    for n, text in enumerate(turns):
        if text == "{first}":
            text = last[0].quick_replies[0] if last and last[0].quick_replies else "1"
        async with transaction(sessions) as session:
            record = await record_inbound(
                session,
                InboundData(
                    channel="webchat",
                    inbox="site",
                    chat_id=f"bench-{number}",
                    sender_id=f"bench-{number}",
                    provider_message_id=f"bench-{number}-{n}",
                    sent_at=NOW,
                    text=text,
                    hints=Hints(),
                ),
                now=NOW,
            )
        turn = Turn(
            conversation_id=record.conversation.id,  # type: ignore[arg-type]
            client_id=record.client.id,  # type: ignore[arg-type]
            channel="webchat",
            message_id=record.message.public_id,
            text=text,
            language="uk",
        )
        rules_ms[0] = 0.0
        for clear in text_caches:
            clear()
        began, cpu = time.perf_counter(), time.process_time()
        last = await brain.respond(turn)
        model = model_ms.pop()
        samples.append((time.perf_counter() - began) * 1000 - model)
        cpu_samples.append((time.process_time() - cpu) * 1000 - model)
        rules_samples.append(rules_ms[0])


model_ms: list[float] = []
rules_ms = [0.0]  # the current turn's CPU time inside the language rules
rules_samples: list[float] = []
# While the rules are timed, what they remember of whole messages is forgotten before each
# turn: the dialogues repeat their texts, a client's message is new. What they remember of
# single words stays, as it does in a running hub.
TEXT_CACHES = (
    (nlu, "normalize"),
    (nlu, "_tokens"),
    (nlu, "_word_tuple"),
    (translit, "_cyrillic_reading"),
)
text_caches: list[Callable[[], None]] = []
cpu_samples: list[float] = []  # the same turns' CPU time (the fake model's own CPU subtracted
# as an upper bound: it runs in this process, and its wall time covers its CPU time)


def timed_model(create: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap the client's create call: its time is the model's, not the brain's."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await create(*args, **kwargs)
        finally:
            model_ms[-1] += (time.perf_counter() - began) * 1000

    return wrapper


@contextmanager
def rules_timed() -> Iterator[None]:
    """Count the CPU time spent in the rule modules' functions, outermost calls only (the
    rules call one another through the same module globals)."""
    depth = [0]

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return function(*args, **kwargs)
            depth[0] += 1
            began = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                rules_ms[0] += (time.process_time() - began) * 1000
                depth[0] -= 1

        return wrapper

    text_caches[:] = [
        getattr(module, name).cache_clear
        for module, name in TEXT_CACHES
        if hasattr(getattr(module, name, None), "cache_clear")
    ]
    patched = []
    for module in (nlu, morph, translit, locale_text):
        for name, value in vars(module).items():
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                patched.append((module, name, value))
                setattr(module, name, timed(value))
    try:
        yield
    finally:
        for module, name, value in patched:
            setattr(module, name, value)
        text_caches.clear()


class Measured:
    """Starts each turn's model time at zero."""

    def __init__(self, brain: Responder) -> None:
        self.brain = brain

    async def respond(self, turn: Turn) -> list[Reply]:
        model_ms.append(0.0)
        return await self.brain.respond(turn)


async def measure(url: str, dialogues: int) -> dict[str, list[float]]:
    tokens.set_encoding(None)  # the estimate: no download, the same on every machine
    engine = create_engine(url)
    sessions = session_factory(engine)
    results: dict[str, list[float]] = {}
    try:
        async with transaction(sessions) as session:
            await load_demo_salon(session, now=NOW, history=False)
        tools = Tools(sessions, clock=lambda: NOW)
        offline = OfflineBrain(tools, sessions, clock=lambda: NOW)
        samples: list[float] = []
        cpu_samples.clear()
        for number in range(dialogues):
            await dialogue(sessions, Measured(offline), number, OFFLINE_TURNS, samples)
        results["offline"] = samples[len(OFFLINE_TURNS) :]  # the first dialogue warms up
        results["offline cpu"] = cpu_samples[len(OFFLINE_TURNS) :]
        # Timed apart: the wrappers' own cost would otherwise be in the figures above.
        rules_samples.clear()
        with rules_timed():
            for number in range(dialogues):
                await dialogue(sessions, Measured(offline), 5_000 + number, OFFLINE_TURNS, [])
        results["offline rules cpu"] = rules_samples[len(OFFLINE_TURNS) :]
        async with FakeOpenAI(policy=llm_policy) as fake:
            client = fake.client()
            client.chat.completions.create = timed_model(client.chat.completions.create)  # type: ignore[method-assign]
            brain = LlmBrain(tools, sessions, client=client, model="bench", clock=lambda: NOW)
            samples = []
            turns = ["Хочу на манікюр з покриттям завтра", "мої записи", "дякую"]
            for number in range(dialogues):
                await dialogue(sessions, Measured(brain), 10_000 + number, turns, samples)
            results["llm"] = samples[len(turns) :]
    finally:
        await engine.dispose()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialogues", type=int, default=40)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (an admin database on it)")
    args = parser.parse_args()
    print(f"bot overhead per turn, model time excluded: {args.dialogues} dialogues per brain")
    for admin in [None, args.postgres] if args.postgres else [None]:
        async with fresh_database(admin) as url:
            results = await measure(url, args.dialogues)
            medians = {}
            for brain, samples in results.items():
                medians[brain] = statistics.median(samples)
                p99 = statistics.quantiles(samples, n=100)[-1]
                print(
                    f"  {label(url):<10} {brain:<17} median {medians[brain]:6.1f} ms   "
                    f"p99 {p99:6.1f} ms   ({len(samples)} turns)"
                )
            ratio = medians["llm"] / medians["offline"]
            print(f"  {label(url):<10} llm/offline median ratio: {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
