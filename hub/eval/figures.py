"""The figures of a `hub eval` run (docs/eval.md): task completion, hand-off precision and
recall, turns per booking, tokens and cost, failures by category, for the whole suite and for its
seen and unseen parts; and each outcome as the JSON report shows it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.eval.outcomes import Outcome, TurnLog

# Totals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    prompt: float = 0.15  # USD per million prompt tokens (gpt-4o-mini-ish)
    completion: float = 0.60


def totals(outcomes: Sequence[Outcome], brain: str, prices: Prices) -> dict[str, Any]:
    """The whole run's figures, with the seen and the unseen parts as blocks of their own
    (`unseen` is None when the suite has no unseen part)."""
    result = figures(outcomes, brain, prices)
    seen = [o for o in outcomes if o.scenario.part == "seen"]
    unseen = [o for o in outcomes if o.scenario.part == "unseen"]
    result["seen"] = figures(seen, brain, prices, parts=False) if unseen else None
    result["unseen"] = figures(unseen, brain, prices, parts=False) if unseen else None
    return result


def figures(
    outcomes: Sequence[Outcome], brain: str, prices: Prices, *, parts: bool = True
) -> dict[str, Any]:
    passed = [o for o in outcomes if o.passed]
    expected = [o for o in outcomes if o.scenario.spec.expect.handoff]
    happened = [o for o in outcomes if o.handed_off]
    right = [o for o in happened if o.scenario.spec.expect.handoff]
    booking_turns = [
        o.booking_turn for o in passed if o.scenario.bookings and o.booking_turn is not None
    ]
    languages = sorted({o.scenario.spec.language for o in outcomes})
    result: dict[str, Any] = {
        "brain": brain,
        "scenarios": len(outcomes),
        "passed": len(passed),
        "completion": _ratio(len(passed), len(outcomes)),
        "handoff_expected": len(expected),
        "handoff_happened": len(happened),
        "handoff_right": len(right),
        "handoff_precision": _ratio(len(right), len(happened)),
        "handoff_recall": _ratio(len(right), len(expected)),
        "turns_per_booking": statistics.mean(booking_turns) if booking_turns else None,
        "bookings_passed": len(booking_turns),
        "by_language": {
            lang: {
                "scenarios": sum(o.scenario.spec.language == lang for o in outcomes),
                "passed": sum(o.scenario.spec.language == lang for o in passed),
            }
            for lang in languages
        },
        "retries": sum(o.retries for o in outcomes),
        "timeouts": sum(o.timeouts for o in outcomes),
        "failures_by_category": failure_table(outcomes),
        "llm": None,
    }
    if parts:
        result["seen"] = result["unseen"] = None
    if brain == "llm":
        result["llm"] = _llm_totals(outcomes, len(passed), prices)
    return result


def _llm_totals(outcomes: Sequence[Outcome], resolved: int, prices: Prices) -> dict[str, Any]:
    per_turn = [
        log.prompt_tokens for o in outcomes for log in o.turns if log.prompt_tokens is not None
    ]
    prompt = sum(o.prompt_tokens for o in outcomes)
    completion = sum(o.completion_tokens for o in outcomes)
    cost = (prompt * prices.prompt + completion * prices.completion) / 1_000_000
    return {
        "bot_turns": len(per_turn),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_per_turn_mean": statistics.mean(per_turn) if per_turn else None,
        "prompt_tokens_per_turn_p50": statistics.median(per_turn) if per_turn else None,
        "estimated": any(o.estimated_tokens for o in outcomes),
        "price_in_per_million": prices.prompt,
        "price_out_per_million": prices.completion,
        "cost_usd": cost,
        # Failed conversations cost money too: all of it is divided by the resolved ones.
        "cost_per_resolved_usd": cost / resolved if resolved else None,
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


CATEGORIES = ("booked", "moved", "cancelled", "handoff", "nothing")
# The check a failure message comes from, by how it starts (see hub/eval/checks.py).
CHECKS: tuple[tuple[str, str], ...] = (
    ("booked:", "not booked"),
    ("forbidden booking", "wrong booking"),
    ("unexpected booking", "wrong booking"),
    ("moved:", "not moved"),
    ("cancelled:", "not cancelled"),
    ("forbidden change of another client", "other client touched"),
    ("forbidden cancel", "wrong cancel"),
    ("unexpected cancel", "wrong cancel"),
    ("forbidden change", "wrong change"),
    ("unexpected change", "wrong change"),
    ("hand-off: expected", "missed hand-off"),
    ("forbidden hand-off", "needless hand-off"),
    ("unexpected hand-off", "needless hand-off"),
    ("reply on", "reply"),
    ("forbidden text", "forbidden text"),
    ("leak:", "leak"),
    ("linked:", "link"),
)


def failed_check(failure: str) -> str:
    if failure.startswith("turn "):  # the run stopped: the brain raised, or no such button
        return "crash" if "raised" in failure else "button"
    return next((label for prefix, label in CHECKS if failure.startswith(prefix)), "other")


def failure_table(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """Per category of expected end (booked, moved, cancelled, handoff, nothing): how many
    scenarios, how many failed, and how often each kind of check failed in them."""
    table: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        mine = [o for o in outcomes if o.scenario.category == category]
        if not mine:
            continue
        checks: dict[str, int] = {}
        for o in mine:
            for label in sorted({failed_check(f) for f in o.failures}):
                checks[label] = checks.get(label, 0) + 1
        table[category] = {
            "scenarios": len(mine),
            "failed": sum(not o.passed for o in mine),
            "checks": dict(sorted(checks.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
    return table


# Output -----------------------------------------------------------------------------------


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    s = outcome.scenario
    return {
        "name": s.name,
        "file": str(s.path),
        "language": s.spec.language,
        "passed": outcome.passed,
        "failures": outcome.failures,
        "turns": len(s.spec.turns),
        "handoff_expected": s.spec.expect.handoff,
        "handoff_turn": outcome.handoff_turn,
        "booking_turn": outcome.booking_turn,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "part": s.part,
        "category": s.category,
        "failed_checks": sorted({failed_check(f) for f in outcome.failures}),
        "retries": outcome.retries,
        "timeouts": outcome.timeouts,
        "dialogue": [turn_json(log) for log in outcome.turns],
    }


def turn_json(log: TurnLog) -> dict[str, Any]:
    """One client turn as the JSON report shows it: what was said back, with buttons and
    hand-offs; `answered` false when the conversation was with staff."""
    return {
        "client": log.text,
        "answered": log.answered,
        "replies": [
            {
                "text": r.text,
                "quick_replies": list(r.quick_replies),
                "handoff": r.handoff,
                "handoff_reason": r.handoff_reason,
            }
            for r in log.replies
        ],
        "retries": log.retries,
        "timeouts": log.timeouts,
    }
