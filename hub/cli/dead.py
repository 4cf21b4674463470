"""`hub dead list|replay`: the dead-letter stream (hub:dead) read and put back, optionally
with fixed data. The rules of what may be replayed are hub.pipeline.bus's."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hub.cli.common import CliError, with_bus
from hub.config import Settings

if TYPE_CHECKING:
    from hub.pipeline.bus import Bus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dead` to the `hub` command's subparsers."""
    dead = sub.add_parser("dead", help="dead-letter entries")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True)
    dead_list = dead_sub.add_parser("list", help="list dead letters")
    dead_list.add_argument("--count", type=int, default=100)
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dead_list.set_defaults(func=cmd_dead_list)
    replay = dead_sub.add_parser("replay", help="put dead letters back on their streams")
    replay.add_argument("id", nargs="?", help="the dead letter's id (from `hub dead list`)")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.add_argument(
        "--data", help="replace the entry's data with this file's content (- for stdin)"
    )
    replay.set_defaults(func=cmd_dead_replay)


def cmd_dead_list(args: argparse.Namespace) -> int:
    rows = asyncio.run(with_bus(Settings(), lambda bus: bus.dead_letters(args.count)))
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print("no dead letters")
        return 0
    for row in rows:
        failed = datetime.fromtimestamp(row["failed_at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{row['id']}  {row['stream']}  {failed}Z  deliveries={row['deliveries']}")
        print(f"    error: {row['error']}")
        data = str(row["fields"].get("data", ""))
        print(f"    data:  {data[:200]}{'…' if len(data) > 200 else ''}")
    return 0


def cmd_dead_replay(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.all):
        raise CliError("give a dead letter id or --all")
    if args.all and args.data:
        raise CliError("--data replaces one entry's data: give an id with it")
    data = None
    if args.data:
        data = sys.stdin.read() if args.data == "-" else Path(args.data).read_text(encoding="utf-8")

    from hub.pipeline.bus import NotReplayable

    async def action(bus: Bus) -> list[str]:
        if args.all:
            return await bus.replay_all()
        try:
            return [await bus.replay(args.id, data)]
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        except NotReplayable as exc:
            raise CliError(str(exc)) from None

    ids = asyncio.run(with_bus(Settings(), action))
    print(f"replayed {len(ids)} entr{'y' if len(ids) == 1 else 'ies'}")
    return 0
