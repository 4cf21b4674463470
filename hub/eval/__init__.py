"""`hub eval`'s engine: the AI administrator against scripted client dialogues (docs/eval.md).
May import every room but hub.cli and hub.bench; the command itself is hub/cli/eval.py."""
