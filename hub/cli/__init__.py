"""The `hub` command: one module per command group, shared helpers in hub.cli.common.
May import every room of hub; nothing in hub imports it (bench and eval are beside it)."""
