"""`hub eval` through its real command line: the whole scenario suite against the offline
brain (the bar CI holds it to), a failing scenario, bad input, and the LLM brain against the
local fake OpenAI server with a scripted model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bots import tokens
from hub.cli.eval import pick_brain
from hub.cli.main import main
from hub.config import Settings
from hub.eval import scenarios as hub_eval
from tests.fakes.openai_server import Calls, FakeOpenAI, Step, Text, ToolCall, last_user_text
from tests.fakes.openai_server import tool_results as results_since_client

SUITE = Path(__file__).parent / "scenarios"


def run_eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_eval(capsys, *args, "--json")
    return code, json.loads(out)


def test_the_suite_against_the_offline_brain(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "--brain", "offline")
    whole = report["totals"]
    assert code == 0
    assert whole["brain"] == "offline" and whole["llm"] is None
    # The bar is held on the seen part: the unseen one (tests/scenarios/unseen/, when it is
    # there) is reported beside it, not tuned for.
    seen, unseen = len(list(SUITE.glob("*.toml"))), len(list(SUITE.glob("unseen/*.toml")))
    assert whole["scenarios"] == seen + unseen and seen >= 45
    totals = whole["seen"] or whole
    assert totals["scenarios"] == seen
    assert (whole["unseen"] or {"scenarios": 0})["scenarios"] == unseen
    failed = [s["name"] for s in report["scenarios"] if not s["passed"] and s["part"] == "seen"]
    assert totals["completion"] >= 0.9, failed
    assert totals["handoff_precision"] >= 0.9 and totals["handoff_recall"] >= 0.9
    assert totals["handoff_expected"] >= 8
    assert 1 <= totals["turns_per_booking"] <= 5 and totals["bookings_passed"] >= 15
    # Roughly a third of the suite in each language.
    counts = {lang: v["scenarios"] for lang, v in totals["by_language"].items()}
    assert set(counts) == {"uk", "en", "ru"}
    assert min(counts.values()) >= totals["scenarios"] // 4, counts
    scenario = report["scenarios"][0]
    assert set(scenario) >= {"name", "language", "passed", "failures", "turns", "handoff_turn"}


def test_a_failing_scenario_says_which_expectation_failed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "greeting-is-not-a-booking.toml").write_text(
        'language = "uk"\nturns = ["Привіт!"]\n\n'
        '[[expect.booked]]\nservice = "balayage"\nmaster = "Ірина"\ndate = "2027-03-02"\n',
        encoding="utf-8",
    )
    (tmp_path / "prices.toml").write_text(
        'language = "en"\nturns = ["How much is a pedicure?"]\n\n'
        '[[expect.replies]]\nturn = 1\ncontains = ["900"]\n',
        encoding="utf-8",
    )
    code, out, _ = run_eval(
        capsys, "--brain", "offline", "--scenarios", str(tmp_path), "--min-completion", "90"
    )
    assert code == 1
    assert "FAIL  greeting-is-not-a-booking" in out and "PASS  prices" in out
    assert "booked: expected balayage with Ірина Мельник on 2027-03-02; got nothing" in out
    assert "task completion     1/2  50.0 %" in out

    code, report = run_json(capsys, "--brain", "offline", "--scenarios", str(tmp_path))
    assert code == 0  # no bar asked for
    failed = next(s for s in report["scenarios"] if not s["passed"])
    assert failed["failures"] == [
        "booked: expected balayage with Ірина Мельник on 2027-03-02; got nothing"
    ]


def test_dialogues_are_printed_with_v(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_eval(capsys, "--brain", "offline", "--only", "uk-silent-after", "-v")
    assert code == 0
    assert "1. client: Покличте адміністратора" in out
    assert "→ hand-off: the client asked for a person" in out
    assert "the conversation is with staff: the bot is not asked" in out
    assert "task completion     1/1  100.0 %" in out


def test_missing_or_bad_scenarios_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run_eval(capsys, "--brain", "offline", "--scenarios", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in err

    monkeypatch.setattr(hub_eval, "default_scenarios_dir", lambda: tmp_path / "gone")
    code, _, err = run_eval(capsys, "--brain", "offline")
    assert code == 2 and "no scenario directory" in err and "--scenarios" in err

    (tmp_path / "typo.toml").write_text(
        'language = "uk"\nturns = ["hi"]\n\n[expect]\nhandof = true\n', encoding="utf-8"
    )
    code, _, err = run_eval(capsys, "--brain", "offline", "--scenarios", str(tmp_path))
    assert code == 2 and "typo.toml" in err and "handof" in err

    (tmp_path / "typo.toml").write_text(
        'language = "uk"\nturns = ["hi"]\n\n[[expect.booked]]\nservice = "nails"\n',
        encoding="utf-8",
    )
    code, _, err = run_eval(capsys, "--brain", "offline", "--scenarios", str(tmp_path))
    assert code == 2 and "unknown service 'nails'" in err


def test_auto_is_the_offline_brain_without_a_key() -> None:
    assert pick_brain("auto", Settings(_env_file=None, openai_api_key=None)) == "offline"  # type: ignore[call-arg]
    assert pick_brain("auto", Settings(_env_file=None, openai_api_key="sk-x")) == "llm"  # type: ignore[call-arg]


# The LLM brain against the fake server ------------------------------------------------------

LLM_SCENARIOS = {
    "llm-book": """
language = "uk"
turns = ["Хочу на манікюр з покриттям завтра після 3", "Ірина, 067 123 45 67", "Дякую!"]

[[expect.booked]]
service = "gel_manicure"
master = "Олена"
date = "2027-03-02"
after = "15:00"
""",
    "llm-price": """
language = "en"
turns = ["How much is balayage?"]

[expect]
nothing_booked = true

[[expect.replies]]
turn = 1
contains = ["3500"]
""",
    "llm-handoff": """
language = "uk"
turns = ["Покличте адміністратора", "Алло?"]

[expect]
handoff = true

[[expect.replies]]
turn = 2
silent = true
""",
}


def scripted_model(body: dict[str, Any]) -> Step:
    """A model with a script, not a mind: list_services → find_slots → book for a booking,
    list_services for a price, the handoff tool for a person; then it says what it did."""
    said = last_user_text(body).lower()
    done = results_since_client(body)
    if not done:
        if "адміністратор" in said:
            return Calls((ToolCall("handoff", {"reason": "the client asked for a person"}),))
        if "дякую" in said:
            return Text("Будь ласка!")
        return Calls((ToolCall("list_services", {}),))
    name, result = done[-1]
    if name == "list_services":
        wanted = "balayage" if "balayage" in said else "гель-лак"
        service = next(s for s in result["services"] if wanted in s["name"].lower())
        if "how much" in said:
            return Text(f"{service['name']}: {service['price']:.0f} {result['currency']}.")
        query = {"service_id": service["id"], "date_from": "2027-03-02", "after": "15:00"}
        return Calls((ToolCall("find_slots", query),))
    if name == "find_slots":
        slot = result["slots"][0]
        service_id = next(a for n, a in tool_calls(body) if n == "find_slots")["service_id"]
        return Calls((ToolCall("book", {"service_id": service_id, "start": slot["start"]}),))
    if name == "book":
        return Text(f"Готово! {result['booked']['date']} о {result['booked']['time']}.")
    return Text("Передаю вашу розмову адміністратору.")


def tool_calls(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (call["function"]["name"], json.loads(call["function"]["arguments"]))
        for message in body["messages"]
        for call in message.get("tool_calls") or []
    ]


@contextmanager
def fake_in_thread(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The fake on a loop of its own: `hub eval` runs its own loop with asyncio.run."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_llm_brain_against_the_fake_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in LLM_SCENARIOS.items():
        (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")
    tokens.set_encoding(None)  # never let tiktoken download its file
    try:
        with fake_in_thread(FakeOpenAI(policy=scripted_model)) as fake:
            monkeypatch.setenv("OPENAI_API_KEY", "test")
            monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
            monkeypatch.setenv("HUB_LLM_RETRIES", "0")
            monkeypatch.setenv("HUB_LLM_MODEL", "gpt-4o-mini")
            code, report = run_json(
                capsys, "--scenarios", str(tmp_path), "--min-completion", "1", "--jobs", "2"
            )
            reported = sum(u["prompt_tokens"] for u in fake.usage)  # what the server said
            code_table, out, _ = run_eval(capsys, "--scenarios", str(tmp_path), "--only", "book")
    finally:
        tokens.reset_encoding()
    totals = report["totals"]
    assert code == 0, report["scenarios"]
    assert totals["brain"] == "llm" and totals["completion"] == 1.0
    assert totals["handoff_precision"] == 1.0 and totals["handoff_recall"] == 1.0
    assert not fake.unexpected
    llm = totals["llm"]
    # Bot turns: three for the booking (the summary, the name and phone that book it, the
    # thanks), one for the price, one before the hand-off.
    assert llm["bot_turns"] == 5 and llm["estimated"] is False
    assert llm["prompt_tokens"] == reported
    assert llm["prompt_tokens_per_turn_mean"] == pytest.approx(llm["prompt_tokens"] / 5)
    assert llm["prompt_tokens_per_turn_p50"] > 0
    cost = (llm["prompt_tokens"] * 0.15 + llm["completion_tokens"] * 0.60) / 1e6
    assert llm["cost_usd"] == pytest.approx(cost)
    assert llm["cost_per_resolved_usd"] == pytest.approx(cost / 3)
    assert code_table == 0
    assert "prompt tokens/turn  mean" in out and "cost per resolved   $" in out
