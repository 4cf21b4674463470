"""`hub import clients FILE`: client cards from another system's CSV or XLSX export.

The logic is crm_store.client_import; this module reads the options and the settings, shows
progress and the report. See docs/import.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

from hub.cli.common import CliError, with_database
from hub.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from crm_store.client_import import ImportPlan, ImportReport

PROGRESS_MIN_ROWS = 2_000  # smaller files are done before a bar would be worth reading
BAR_WIDTH = 30


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `import clients` to the `hub` command's subparsers."""
    parser = sub.add_parser("import", help="import data from other systems' exports")
    what = parser.add_subparsers(dest="import_command", required=True)
    clients = what.add_parser(
        "clients",
        help="import client cards from a .csv or .xlsx file",
        description="Import client cards; rows matching a card by phone or email update it.",
    )
    clients.add_argument("file", type=Path, help="a .csv or .xlsx file")
    clients.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        # The fields are crm_store.client_import.FIELDS, spelled out so `hub --help` does not
        # import the spreadsheet readers.
        help="take FIELD (name, first_name, last_name, phone, email, notes, last_visit, tags) "
        "from COLUMN: its header text or its number (1 is the first); repeatable",
    )
    clients.add_argument("--sheet", help="the .xlsx sheet to read (default: the first)")
    clients.add_argument(
        "--region", help="country for numbers without a +code (default: HUB_DEFAULT_REGION)"
    )
    clients.add_argument("--report", type=Path, help="write every row's outcome to this CSV")
    clients.add_argument(
        "--dry-run", action="store_true", help="check and report, but save nothing"
    )
    clients.set_defaults(func=cmd_import_clients)


def cmd_import_clients(args: argparse.Namespace) -> int:
    from crm_store.client_import import (
        ClientImportError,
        format_report,
        load_clients_file,
        parse_mapping,
    )

    settings = Settings()
    progress = ProgressBar(sys.stderr)
    try:
        plan = load_clients_file(
            args.file,
            sheet=args.sheet,
            mapping=parse_mapping(args.map),
            region=(args.region or settings.hub_default_region).upper(),
            tz=ZoneInfo(settings.hub_timezone),
            progress=progress,
        )
        if args.report is not None:
            _check_writable(args.report)
        report = asyncio.run(_import(settings, plan, dry_run=args.dry_run, progress=progress))
    except ClientImportError as exc:
        raise CliError(str(exc)) from None
    except MemoryError:
        # The bounds on a file (crm_store.import_source) keep an import to a few hundred MB; a
        # machine with less than that still gets an error and the exit code, not a traceback.
        raise CliError(f"not enough memory to import {args.file.name}; nothing was saved") from None
    finally:
        progress.close()
    print(format_report(report))
    if args.report is not None:
        _write_report(args.report, report)
    return 0


async def _import(
    settings: Settings, plan: ImportPlan, *, dry_run: bool, progress: ProgressBar
) -> ImportReport:
    from sqlalchemy.exc import SQLAlchemyError

    from crm_store.client_import import run_import
    from crm_store.db import session_factory

    async def action(engine: AsyncEngine) -> ImportReport:
        try:
            return await run_import(
                session_factory(engine), plan, dry_run=dry_run, progress=progress
            )
        except SQLAlchemyError as exc:
            raise CliError(f"the import failed and nothing was saved: {exc}") from None

    return await with_database(settings, action)


def _check_writable(path: Path) -> None:
    """Fail before the import, not after it was saved."""

    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CliError(f"--report: can't write {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise CliError(f"--report: can't write {path}")


def _write_report(path: Path, report: ImportReport) -> None:
    from crm_store.client_import import write_report_csv

    try:
        # With a BOM Excel opens the file as UTF-8, so Cyrillic reasons stay readable.
        with path.open("w", encoding="utf-8-sig", newline="") as stream:
            write_report_csv(report, stream)
    except OSError as exc:
        saved = "nothing was saved" if report.dry_run else "the import was saved"
        raise CliError(f"--report: can't write {path} ({exc.strerror}); {saved}") from None
    print(f"report: {path}")


class ProgressBar:
    """Progress on stderr for big files: redrawn in place on a terminal; on anything else
    (a log, CI) a line every 10%, since carriage returns would pile up there."""

    def __init__(self, stream: TextIO, min_rows: int = PROGRESS_MIN_ROWS) -> None:
        self.stream = stream
        self.min_rows = min_rows
        self.tty = stream.isatty()
        self.shown = False
        self._open_line = False  # a bar drawn on the terminal, not yet ended by a newline
        self._last: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "reading":
            self.shown = total > self.min_rows
        if not self.shown or total <= 0:
            return
        percent = min(100, done * 100 // total)
        step = percent if self.tty else percent // 10 * 10
        if self._last.get(stage) == step or (not self.tty and step == 0):
            return
        self._last[stage] = step
        if self.tty:
            filled = BAR_WIDTH * percent // 100
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{stage:<8} [{bar}] {percent:3d}% {done}/{total}{end}")
            self._open_line = not end
        else:
            self.stream.write(f"{stage}: {percent}% ({done}/{total})\n")
        self.stream.flush()

    def close(self) -> None:
        """End a half-drawn bar, so an error message starts on a line of its own."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
