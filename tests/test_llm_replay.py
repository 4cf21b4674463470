"""The real LLM brain (the `openai` client over real HTTP) against a replay of how a small
local model answers: the recorded real-model fixture and hand-written recordings in the same
style (tool calls as text, the prompt's markers, invented prices). Every recorded answer is
played, and whole dialogues must end booked, moved, cancelled or handed off with nothing a
client must not see.

The fixture is the shared checkout's (`../shared/fixtures/llm/`); without it the tests that
need it are skipped."""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import openai
import pytest

from bots import tokens
from bots.llm import LlmBrain
from bots.tools import Tools
from hub.eval.outcomes import Outcome
from hub.eval.runner import evaluate
from hub.eval.scenarios import TIMEZONE
from tests.fakes.replay_server import FIXTURE, RECORDINGS, ReplayServer, key_of, load

MODEL = "qwen2.5-coder-1.5b-instruct"  # the fixture's model: its recordings win a tie
OURS = sorted(RECORDINGS.glob("*.jsonl"))
# What must never reach a client: code fences, JSON, call tags, bracketed markers.
UNSENDABLE = re.compile(r"```|[{}]|<[/|a-z]|\[\s*[^\W\d_][\w .\-]*\]|\"name\"\s*:|TOOL_CALLS", re.I)

needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason="no shared LLM fixture here")


@pytest.fixture(autouse=True)
def estimated_tokens() -> object:
    tokens.set_encoding(None)  # never let tiktoken download its file
    yield
    tokens.reset_encoding()


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer.from_files() as server:
        yield server


def factory(server: ReplayServer):
    def make(sessions, clock):
        client = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="test", max_retries=0, timeout=5.0
        )
        tools = Tools(sessions, clock=clock, timezone=TIMEZONE, currency="UAH")
        return LlmBrain(tools, sessions, client, MODEL, clock, timezone=TIMEZONE)

    return make


async def run(server: ReplayServer, scenarios: dict[str, str]) -> dict[str, Outcome]:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in scenarios.items():
            (Path(tmp) / f"{name}.toml").write_text(text, encoding="utf-8")
        outcomes = await evaluate(Path(tmp), factory(server))
    return {o.scenario.name: o for o in outcomes}


def said(outcome: Outcome) -> list[str]:
    return [r.text for log in outcome.turns for r in log.replies]


def assert_clean(texts: Sequence[str]) -> None:
    for text in texts:
        assert not UNSENDABLE.search(text), text


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Whole dialogues --------------------------------------------------------------------------

ME = """
[me]
name = "Наталія Савчук"
phone = "+380502223344"
"""

DIALOGUES = {
    # Hermes tags, then a fenced `book`: held, summed up, booked by the name and phone.
    "uk-book-gel-olena": """
language = "uk"
turns = ["Хочу на манікюр з покриттям до Олени в середу о 12", "Оксана 0671234567"]

[[expect.booked]]
service = "gel_manicure"
master = "Олена"
date = "2027-03-03"
time = "12:00"
""",
    # A bare JSON call, offered times with an invented price and a marker, a <tools> call
    # with string arguments: held, then yes, then the name and phone.
    "en-book-mens-cut-friday": """
language = "en"
turns = [
  "Hi, a men's haircut on Friday after 5 pm please",
  "17:45 please",
  "yes",
  "Kate +380501112233",
]

[[expect.booked]]
service = "mens_cut"
date = "2027-03-05"
time = "17:45"
""",
    # Llama's <function=…> tag: the model hands off itself.
    "en-gift-certificates-handoff": """
language = "en"
turns = ["Do you sell gift certificates?"]

[expect]
handoff = true
""",
    # The safety net: the fixture's model said "no" to this one.
    "uk-live-person": """
language = "uk"
turns = ["Можна поговорити з живою людиною?"]

[expect]
handoff = true
nothing_booked = true
""",
    # Mistral's [TOOL_CALLS], then `reschedule` with its arguments as a JSON string.
    "en-move-haircut": """
language = "en"
turns = ["Can you move my haircut to Friday at 17:00?", "yes"]
"""
    + ME
    + """
[[appointments]]
key = "cut"
service = "mens_cut"
master = "Андрій"
start = "2027-03-04T12:00"

[[expect.moved]]
appointment = "cut"
date = "2027-03-05"
time = "17:00"
""",
    # <|python_tag|>, then Qwen3-Coder's <parameter=…> tags; "так" cancels.
    "uk-cancel-wednesday": """
language = "uk"
turns = ["Скасуйте мій запис на середу, будь ласка", "так"]
"""
    + ME
    + """
[[appointments]]
key = "gel"
service = "gel_manicure"
master = "Олена"
start = "2027-03-03T11:00"

[[expect.cancelled]]
appointment = "gel"
""",
    # An invented price: the real one is sent instead.
    "ru-lash-lift-price": """
language = "ru"
turns = ["А сколько у вас стоит ламинирование ресниц?"]

[expect]
nothing_booked = true

[[expect.replies]]
turn = 1
contains = ["700 грн"]
""",
    # A held booking and a "no": nothing is written.
    "uk-book-then-no": """
language = "uk"
turns = ["Хочу на манікюр з покриттям до Олени в середу о 12", "ні, не треба"]

[expect]
nothing_booked = true
""",
}


async def test_dialogues_end_as_a_good_administrator_would(replay: ReplayServer) -> None:
    outcomes = await run(replay, DIALOGUES)
    failed = {name: o.failures for name, o in outcomes.items() if not o.passed}
    assert not failed, failed
    for outcome in outcomes.values():
        assert_clean(said(outcome))
    book = outcomes["uk-book-gel-olena"].turns
    # The summary the brain built, with the name-and-phone question of the web chat.
    assert "750 грн" in book[0].replies[0].text and "Вт" not in book[0].replies[0].text
    assert "Ср 03.03 о 12:00" in book[0].replies[0].text
    assert "телефону" in book[0].replies[0].text
    mens = outcomes["en-book-mens-cut-friday"].turns
    # 450 UAH was made up: the real 500 UAH goes out, the offered times stay, as buttons.
    assert "500 UAH" in mens[0].replies[0].text and "450" not in mens[0].replies[0].text
    assert "Fri 05.03 17:45" in mens[0].replies[0].quick_replies
    # A stranger on the web chat: the summary asks for a name and phone, not for a tap.
    assert "Fri 05.03 at 17:45" in mens[1].replies[0].text
    assert "name and phone" in mens[1].replies[0].text and not mens[1].replies[0].quick_replies
    assert "name and phone" in mens[2].replies[0].text  # yes, but no phone yet
    assert outcomes["en-move-haircut"].turns[0].replies[0].quick_replies == ["Yes", "No"]
    assert not replay.misses, replay.misses


@needs_fixture
async def test_every_recorded_answer_is_played_and_nothing_raw_reaches_the_client(
    replay: ReplayServer,
) -> None:
    """Each recording's first message as a dialogue of its own (with an appointment on the
    card, for the cancel and "what have I booked" ones); recordings of later rounds are
    reached by the model's own text calls."""
    recordings = load([FIXTURE, *OURS])
    firsts = sorted({r.key[0] for r in recordings if r.key[1] == 0})
    scenarios = {
        f"recorded-{n:02d}": f'language = "uk"\nturns = [{toml_string(text)}]\n'
        + ME
        + '\n[[appointments]]\nkey = "gel"\nservice = "gel_manicure"\nmaster = "Олена"\n'
        'start = "2027-03-03T12:00"\n'
        for n, text in enumerate(firsts)
    }
    outcomes = await run(replay, scenarios)
    for outcome in outcomes.values():
        assert not any("raised" in f for f in outcome.failures), outcome.failures
        replies = said(outcome)
        assert replies, outcome.scenario.name
        assert_clean(replies)
    # Every recording was answered with, except those a same-key recording of the same
    # model shadows, and the later rounds of dialogues only the dialogue test plays.
    played = set(replay.hits)
    unplayed = [
        r.source
        for r in recordings
        if r.source not in played and replay.find({"model": MODEL, **_request(r.key)}) is r
    ]
    later = {r.source for r in recordings if r.key[1] > 0}
    assert set(unplayed) <= later, unplayed


def _request(key: tuple[str, int]) -> dict[str, object]:
    text, rounds = key
    messages: list[dict[str, object]] = [{"role": "user", "content": text}]
    messages += [{"role": "assistant", "content": "x"}] * rounds
    return {"messages": messages}


@needs_fixture
def test_the_fixture_is_read_in_its_own_format() -> None:
    recordings = load([FIXTURE])
    assert len(recordings) >= 10
    assert ("how much is balayage?", 0) in {r.key for r in recordings}
    assert all(r.status == 200 for r in recordings)


def test_a_request_is_keyed_by_its_last_client_message_and_round() -> None:
    messages = [
        {"role": "system", "content": "long prompt"},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "  Book   me "},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "c", "content": "{}"},
    ]
    assert key_of({"messages": messages}) == ("book me", 1)
    assert key_of({"messages": messages[:4]}) == ("book me", 0)
