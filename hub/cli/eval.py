"""`hub eval`: run the scenario suite against a brain and print what it got right.

The runner is hub/eval/runner.py; this module reads the options, picks the brain and prints the
results. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.cli.common import CliError
from hub.config import Settings

if TYPE_CHECKING:
    from hub.eval.outcomes import Outcome
    from hub.eval.runner import Brain

# Tool refusals, model requests and migrations log at INFO: noise around the table.
QUIET_LOGGERS = ("bots", "crm_store", "hub", "httpx", "httpx2", "openai", "alembic")
NAME_WIDTH = 44


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `eval` to the `hub` command's subparsers."""
    parser = sub.add_parser(
        "eval",
        help="run the AI administrator against the scenario suite",
        description="Run client dialogues with known outcomes against a brain, each on a fresh "
        "database with the demo salon, and report task completion, hand-off precision and "
        "recall, turns per booking and, for the LLM brain, tokens and cost (docs/eval.md).",
    )
    parser.add_argument(
        "--brain",
        choices=["auto", "offline", "llm"],
        default="auto",
        help="auto (default): the LLM brain when OPENAI_API_KEY is set, else the offline one",
    )
    parser.add_argument(
        "--scenarios",
        type=Path,
        metavar="DIR",
        help="a directory of *.toml scenarios (default: tests/scenarios of the checkout)",
    )
    parser.add_argument("--only", metavar="TEXT", help="only the scenarios whose name holds TEXT")
    # Not -v's usual dest: `hub -v` (verbose logging) already owns `verbose`.
    parser.add_argument(
        "-v", "--dialogues", action="store_true", dest="dialogues", help="print each dialogue"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--min-completion",
        type=float,
        metavar="X",
        help="exit 1 when task completion is below X (a fraction such as 0.9, or a percentage)",
    )
    parser.add_argument(
        "--price-in",
        type=float,
        default=0.15,
        metavar="USD",
        help="per million prompt tokens (default 0.15)",
    )
    parser.add_argument(
        "--price-out",
        type=float,
        default=0.60,
        metavar="USD",
        help="per million completion tokens (default 0.60)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="scenarios run at once, each on its own database (worth it with the LLM)",
    )
    parser.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from hub.eval.figures import Prices, totals
    from hub.eval.runner import brain_factory, evaluate
    from hub.eval.scenarios import ScenarioError

    if not args.verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.jobs < 1:
        raise CliError("--jobs must be 1 or more")
    settings = Settings()
    brain = pick_brain(args.brain, settings)
    directory = scenarios_dir(args.scenarios)
    if not args.json:
        print(f"hub eval: the {brain} brain on {directory}\n", flush=True)
    try:
        outcomes = asyncio.run(
            evaluate(
                directory,
                brain_factory(settings, brain),
                only=args.only,
                jobs=args.jobs,
                on_done=None if args.json else _printer(dialogues=args.dialogues),
            )
        )
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    summary = totals(outcomes, brain, Prices(args.price_in, args.price_out))
    if args.json:
        print(json.dumps(_document(outcomes, summary), ensure_ascii=False, indent=2))
    else:
        print(_failures_text(outcomes) + totals_text(summary), flush=True)
    return exit_code(summary["completion"], args.min_completion)


def pick_brain(choice: str, settings: Settings) -> Brain:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if choice == "llm" and not key:
        raise CliError("--brain llm needs OPENAI_API_KEY (and OPENAI_BASE_URL for another server)")
    if choice == "auto":
        return "llm" if key else "offline"
    return "llm" if choice == "llm" else "offline"


def scenarios_dir(given: Path | None) -> Path:
    """The directory asked for (relative to the cwd, else to the checkout), or the
    checkout's tests/scenarios, so `hub eval` works from any directory."""
    from hub.eval.scenarios import default_scenarios_dir

    default = default_scenarios_dir()
    if given is None:
        if default.is_dir():
            return default
        raise CliError(
            f"no scenario directory at {default}: the suite lives in tests/scenarios of the "
            "repository checkout; give --scenarios DIR"
        )
    checkout = default.parent.parent
    for candidate in [given] if given.is_absolute() else [given, checkout / given]:
        if candidate.is_dir():
            return candidate.resolve()
    raise CliError(f"--scenarios: {given} is not a directory")


def exit_code(completion: float | None, minimum: float | None) -> int:
    if minimum is None:
        return 0
    wanted = minimum / 100 if minimum > 1 else minimum
    return 0 if (completion or 0.0) >= wanted else 1


# Printing ---------------------------------------------------------------------------------


def _printer(*, dialogues: bool) -> Callable[[Outcome], None]:
    """Each scenario's line as it finishes, so a slow LLM run shows progress."""

    def show(outcome: Outcome) -> None:
        if dialogues:
            print(dialogue_text(outcome))
        print(outcome_line(outcome), flush=True)

    return show


def _document(outcomes: list[Outcome], summary: dict[str, Any]) -> dict[str, Any]:
    from hub.eval.figures import outcome_json

    ordered = sorted(outcomes, key=lambda o: o.scenario.name)
    return {"totals": summary, "scenarios": [outcome_json(o) for o in ordered]}


def _failures_text(outcomes: list[Outcome]) -> str:
    failed = sorted((o for o in outcomes if not o.passed), key=lambda o: o.scenario.name)
    if not failed:
        return "\n"
    lines = [f"\nfailed ({len(failed)}):"]
    lines += [f"  {o.scenario.name}: " + "; ".join(o.failures) for o in failed]
    return "\n".join(lines) + "\n\n"


def outcome_line(outcome: Outcome) -> str:
    s = outcome.scenario
    mark = "PASS" if outcome.passed else "FAIL"
    turns = len(s.spec.turns)
    line = f"  {mark}  {s.name:<{NAME_WIDTH}}  {s.spec.language}  {turns} turn{'s' * (turns != 1)}"
    if outcome.handed_off:
        line += f"  hand-off on turn {outcome.handoff_turn}"
    if outcome.retries or outcome.timeouts:
        line += f"  model retries {outcome.retries}, timeouts {outcome.timeouts}"
    return line + "".join(f"\n          - {f}" for f in outcome.failures)


def dialogue_text(outcome: Outcome) -> str:
    lines = [f"── {outcome.scenario.name} ({outcome.scenario.spec.language})"]
    for n, log in enumerate(outcome.turns, start=1):
        lines.append(f"  {n}. client: {log.text}")
        if not log.answered:
            lines.append("     (the conversation is with staff: the bot is not asked)")
        for reply in log.replies:
            text = reply.text.replace("\n", "\n             ")
            lines.append(f"     bot:    {text}")
            if reply.quick_replies:
                lines.append(f"             [{' | '.join(reply.quick_replies)}]")
            if reply.handoff:
                lines.append(f"             → hand-off: {reply.handoff_reason}")
    return "\n".join(lines)


def totals_text(t: dict[str, Any]) -> str:
    """The whole run; then, when the suite has an unseen part, the seen and unseen blocks
    side by side, and the failures by category."""
    text = _block_text(t)
    if t.get("unseen"):
        text += "\n\n" + parts_text(t["seen"], t["unseen"])
    table = failure_table_text(t.get("failures_by_category") or {})
    return text + ("\n\n" + table if table else "")


def parts_text(seen: dict[str, Any], unseen: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    def num(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        ("", "seen", "unseen"),
        ("scenarios", str(seen["scenarios"]), str(unseen["scenarios"])),
        ("task completion", pct(seen["completion"]), pct(unseen["completion"])),
        ("hand-off precision", num(seen["handoff_precision"]), num(unseen["handoff_precision"])),
        ("hand-off recall", num(seen["handoff_recall"]), num(unseen["handoff_recall"])),
        (
            "turns per booking",
            num(seen["turns_per_booking"], 1),
            num(unseen["turns_per_booking"], 1),
        ),
        (
            "failed",
            str(seen["scenarios"] - seen["passed"]),
            str(unseen["scenarios"] - unseen["passed"]),
        ),
        ("model retries", str(seen["retries"]), str(unseen["retries"])),
        ("model timeouts", str(seen["timeouts"]), str(unseen["timeouts"])),
    ]
    lines = [f"{a:<20}{b:>10}{c:>10}" for a, b, c in rows]
    for part, block in (("seen", seen), ("unseen", unseen)):
        table = failure_table_text(block.get("failures_by_category") or {})
        if table:
            lines += ["", f"{part}: " + table]
    return "\n".join(lines)


def failure_table_text(table: dict[str, dict[str, Any]]) -> str:
    """ "failures by category" lines: booked 3/40 failed (not booked 2, wrong booking 1)."""
    failed = {k: v for k, v in table.items() if v["failed"]}
    if not failed:
        return ""
    lines = ["failures by category"]
    for category, row in failed.items():
        checks = ", ".join(f"{label} {n}" for label, n in row["checks"].items())
        lines.append(f"  {category:<10} {row['failed']}/{row['scenarios']} failed  ({checks})")
    return "\n".join(lines)


def _block_text(t: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    def num(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    languages = ", ".join(
        f"{lang} {v['passed']}/{v['scenarios']}" for lang, v in t["by_language"].items()
    )
    lines = [
        f"task completion     {t['passed']}/{t['scenarios']}  {pct(t['completion'])}",
        f"hand-off precision  {num(t['handoff_precision'])}  "
        f"({t['handoff_right']} of {t['handoff_happened']} hand-offs were expected)",
        f"hand-off recall     {num(t['handoff_recall'])}  "
        f"({t['handoff_right']} of {t['handoff_expected']} expected hand-offs happened)",
        f"turns per booking   {num(t['turns_per_booking'], 1)}  "
        f"(client turns until booked, {t['bookings_passed']} passed booking scenarios)",
        f"by language         {languages}",
    ]
    if t.get("retries") or t.get("timeouts") or t.get("llm"):
        lines.append(f"model retries       {t.get('retries', 0)}, timeouts {t.get('timeouts', 0)}")
    llm = t.get("llm")
    if llm:
        note = "  (estimated: the server reported no usage)" if llm["estimated"] else ""
        lines += [
            f"prompt tokens/turn  mean {num(llm['prompt_tokens_per_turn_mean'], 0)}, "
            f"p50 {num(llm['prompt_tokens_per_turn_p50'], 0)}  "
            f"({llm['bot_turns']} bot turns){note}",
            f"tokens              {llm['prompt_tokens']} prompt, "
            f"{llm['completion_tokens']} completion",
            f"cost per resolved   ${num(llm['cost_per_resolved_usd'], 5)}  "
            f"(all ${llm['cost_usd']:.5f} / {t['passed']} passed; "
            f"${llm['price_in_per_million']} in, ${llm['price_out_per_million']} out per 1M)",
        ]
    return "\n".join(lines)
