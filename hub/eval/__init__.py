"""`hub eval`'s engine: the AI administrator against scripted client dialogues (docs/eval.md).
May import every room but hub.cli; the command itself is hub/cli/eval.py."""
