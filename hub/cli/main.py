"""The `hub` command's entry point: the parser, built from one module per command group,
and the run of the chosen command. Nothing in hub.cli imports this module (only
`python -m hub.cli`), so the groups share their helpers through hub.cli.common instead."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hub.cli import bench, broadcast, database, dead, import_clients, serve, staff
from hub.cli import eval as cli_eval
from hub.cli.common import CliError

# In the order `hub --help` lists them.
GROUPS = (serve, database, staff, dead, import_clients, cli_eval, broadcast, bench)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # SQLAlchemy's engine logs every statement at INFO, and these drivers their parameters at
    # DEBUG (password hashes, saved channel sessions): only their warnings reach the log.
    for chatty in ("aiosqlite", "asyncpg", "sqlalchemy.engine"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Omnichannel salon messaging hub")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
