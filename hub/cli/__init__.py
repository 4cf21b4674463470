"""The `hub` command: one module per command group, shared helpers in hub.cli.common; main.py
builds the parser from the groups and is imported by none of them (only `python -m hub.cli`).
May import every room of hub; no room imports it. `hub bench` (hub/cli/bench/) lives here too."""
