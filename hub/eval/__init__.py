"""`hub eval`'s engine (docs/eval.md): scenarios, runner, checks, outcomes, figures, one job each.
May import every room but hub.cli; the command itself is hub/cli/eval.py."""
