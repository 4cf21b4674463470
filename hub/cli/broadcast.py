"""`hub broadcast ...`: list, preview a segment, create (and send), watch, cancel.

The rules are crm_store.broadcasts' (the same as the inbox's Broadcasts page); this module
reads options, prints, and draws the progress bar. Sending itself is the scheduler's, in the
running hub: a broadcast created here goes out from there. See docs/broadcasts.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from hub.cli.common import CliError, with_database
from hub.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlmodel.ext.asyncio.session import AsyncSession

    from crm_store.broadcasts import Progress
    from crm_store.models import Broadcast
    from crm_store.segments import Segment

BAR_WIDTH = 30
FINISHED = ("done", "cancelled")
# Kept in step with crm_store.segments.CHANNELS (not imported: `hub --help` stays light).
CHANNELS = ("telegram", "instagram", "viber", "sms", "email", "webchat")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `broadcast` to the `hub` command's subparsers."""
    parser = sub.add_parser(
        "broadcast",
        help="messages to a segment of clients (with marketing consent)",
        description="Broadcasts go only to clients who gave marketing consent, always.",
    )
    what = parser.add_subparsers(dest="broadcast_command", required=True)

    listing = what.add_parser("list", help="broadcasts, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_list)

    preview = what.add_parser("preview", help="how many clients a segment has")
    _segment_options(preview)
    preview.set_defaults(func=cmd_preview)

    create = what.add_parser("create", help="write a broadcast; --send sends it")
    create.add_argument("--title", help="default: the template's title or the text's start")
    text = create.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the message; {name} is the client's first name")
    text.add_argument("--template", help="a ready text (see `hub broadcast templates`)")
    create.add_argument(
        "--lang", default="uk", choices=["uk", "en", "ru"], help="the template's language"
    )
    _segment_options(create)
    create.add_argument("--send", action="store_true", help="send (at --at, or now)")
    create.add_argument(
        "--at", type=_moment, help="when to send: ISO time; without an offset, the salon's time"
    )
    create.set_defaults(func=cmd_create)

    status = what.add_parser("status", help="a broadcast's progress")
    status.add_argument("id", type=int)
    status.add_argument("--watch", action="store_true", help="redraw until it has finished")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    status.set_defaults(func=cmd_status)

    cancel = what.add_parser("cancel", help="stop a broadcast: nothing more is sent")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(func=cmd_cancel)

    templates = what.add_parser("templates", help="the ready texts")
    templates.add_argument("--lang", choices=["uk", "en", "ru"])
    templates.set_defaults(func=cmd_templates)


def _segment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tag", action="append", default=[], help="has this tag (repeat: any of them)"
    )
    parser.add_argument("--visited-before", type=_day, help="last visit before this day")
    parser.add_argument("--visited-after", type=_day, help="last visit after this day")
    parser.add_argument("--service", help="had this service done (its id or name)")
    parser.add_argument("--channel", choices=CHANNELS, help="reachable on this channel")


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date, YYYY-MM-DD") from None


def _moment(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO time") from None


# Commands ---------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    async def action(session: AsyncSession, tz: ZoneInfo) -> list[str]:
        from crm_store.broadcasts import counts_of, list_broadcasts

        found = await list_broadcasts(session, limit=max(1, args.limit))
        counts = await counts_of(session, [b.id for b in found if b.id is not None])
        return [_list_line(b, counts.get(b.id or 0, {}), tz) for b in found]

    lines = _run(action)
    print("\n".join(lines) if lines else "no broadcasts yet")
    return 0


def _list_line(broadcast: Broadcast, counts: dict[str, int], tz: ZoneInfo) -> str:
    when = broadcast.scheduled_at or broadcast.started_at or broadcast.created_at
    return (
        f"#{broadcast.id:<4} {broadcast.status:<9} {_local(when, tz)}  "
        f"sent {counts.get('sent', 0)}/{broadcast.total}  {broadcast.title}"
    )


def cmd_preview(args: argparse.Namespace) -> int:
    async def action(session: AsyncSession, tz: ZoneInfo) -> tuple[int, list[str]]:
        from crm_store import segments

        segment = await _segment(session, args)
        now = datetime.now(UTC)
        return (
            await segments.count(session, segment, now=now, tz=tz),
            await segments.sample_names(session, segment, now=now, tz=tz),
        )

    found, sample = _run(action)
    print(f"{found} client{'s' if found != 1 else ''} (with marketing consent) in the segment")
    if sample:
        print(
            "  " + ", ".join(name or "(no name)" for name in sample) + (", …" if found > 10 else "")
        )
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    text, title = args.text, args.title
    if args.template:
        template = _template(args.template, args.lang)
        text, title = template["text"], title or template["title"]
    if args.at is not None and not args.send:
        raise CliError("--at says when to send: give --send with it")

    async def action(session: AsyncSession, tz: ZoneInfo) -> str:
        from crm_store import broadcasts

        now = datetime.now(UTC)
        at = args.at.replace(tzinfo=tz) if args.at and args.at.tzinfo is None else args.at
        draft = await broadcasts.create_draft(
            session,
            title=title or _title_of(text),
            text=text,
            segment=await _segment(session, args),
            scheduled_at=at,
            now=now,
        )
        if not args.send:
            return f"draft #{draft.id} saved: {draft.title}"
        sent = await broadcasts.launch(session, draft.id, now=now, tz=tz)  # type: ignore[arg-type]
        if sent.status == "scheduled":
            return (
                f"broadcast #{sent.id} scheduled for {_local(sent.scheduled_at, tz)}: "
                f"{_recipients(sent.total)}"
            )
        return f"broadcast #{sent.id} is sending to {_recipients(sent.total)}"

    print(_run(action, write=True))
    return 0


def _recipients(n: int) -> str:
    return f"{n} recipient{'s' if n != 1 else ''}"


def _title_of(text: str) -> str:
    first = " ".join(text.split())
    return first if len(first) <= 60 else first[:59] + "…"


def _template(template_id: str, language: str) -> dict[str, str]:
    from hub.jobs.broadcasts import templates

    found = {t["id"]: t for t in templates(language)}
    if template_id not in found:
        raise CliError(f"no template {template_id!r}; there are: {', '.join(found)}")
    return found[template_id]


def cmd_templates(args: argparse.Namespace) -> int:
    from hub.jobs.broadcasts import templates

    for template in templates(args.lang):
        print(f"{template['id']} [{template['language']}] {template['title']}")
        print(f"    {template['text']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The progress once, or (--watch) a bar redrawn until nothing is left to send."""
    out = sys.stdout
    tty = out.isatty()

    async def action(session_of: Callable[[], Any], tz: ZoneInfo) -> str:
        last = ""
        while True:
            async with session_of() as session:
                broadcast, progress = await _state(session, args.id)
            finished = broadcast.status in FINISHED or (
                broadcast.status != "draft" and progress.open == 0
            )
            if not args.watch or broadcast.status == "draft":
                return _status_text(broadcast, progress, tz)
            # On a terminal the bar is redrawn in place; in a log, a line when it changes.
            line = _bar_line(broadcast, progress)
            if tty:
                out.write("\r" + line + ("\n" if finished else ""))
            elif line != last:
                out.write(line + "\n")
            out.flush()
            last = line
            if finished:
                return _status_text(broadcast, progress, tz)
            await asyncio.sleep(max(args.interval, 0.05))

    print(_run(action, per_poll=True))
    return 0


async def _state(session: AsyncSession, broadcast_id: int) -> tuple[Broadcast, Progress]:
    from crm_store import broadcasts

    return (
        await broadcasts.get_broadcast(session, broadcast_id),
        await broadcasts.progress(session, broadcast_id),
    )


def cmd_cancel(args: argparse.Namespace) -> int:
    async def action(session: AsyncSession, tz: ZoneInfo) -> str:
        from crm_store import broadcasts

        del tz
        await broadcasts.cancel(session, args.id, now=datetime.now(UTC))
        broadcast, progress = await _state(session, args.id)
        return (
            f"broadcast #{broadcast.id} cancelled: {progress.counts['cancelled']} not sent, "
            f"{progress.counts['sent']} sent before"
        )

    print(_run(action, write=True))
    return 0


# Printing ---------------------------------------------------------------------------------


def _bar_line(broadcast: Broadcast, progress: Progress) -> str:
    counts = progress.counts
    total = sum(counts.values())
    handled = total - progress.open
    percent = handled * 100 // total if total else 100
    filled = BAR_WIDTH * percent // 100
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (
        f"#{broadcast.id} [{bar}] {percent:3d}%  sent {counts['sent']}  "
        f"failed {counts['failed']}  skipped {counts['skipped']}  pending {progress.open}"
    )


def _status_text(broadcast: Broadcast, progress: Progress, tz: ZoneInfo) -> str:
    counts = progress.counts
    lines = [
        f"#{broadcast.id} {broadcast.title}",
        f"  status:    {broadcast.status}",
        f"  recipients: {broadcast.total}",
    ]
    if broadcast.scheduled_at:
        lines.append(f"  scheduled: {_local(broadcast.scheduled_at, tz)}")
    if broadcast.started_at:
        lines.append(f"  started:   {_local(broadcast.started_at, tz)}")
    if broadcast.finished_at:
        lines.append(f"  finished:  {_local(broadcast.finished_at, tz)}")
    lines.append(
        f"  sent {counts['sent']} · failed {counts['failed']} · skipped {counts['skipped']} · "
        f"pending {progress.open} · cancelled {counts['cancelled']}"
    )
    for channel, by_status in sorted(progress.channels.items()):
        spread = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items()))
        lines.append(f"    {channel or 'not routed yet'}: {spread}")
    return "\n".join(lines)


def _local(moment: datetime | None, tz: ZoneInfo) -> str:
    from crm_store.timeutil import aware

    moment = aware(moment)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else "-"


# Plumbing ---------------------------------------------------------------------------------


async def _segment(session: AsyncSession, args: argparse.Namespace) -> Segment:
    """The segment of the options; --service by id or by name (any language)."""
    from pydantic import ValidationError
    from sqlalchemy import func, or_
    from sqlmodel import select

    from crm_store.broadcasts import BroadcastError
    from crm_store.models import Service
    from crm_store.segments import Segment

    service_id = None
    if args.service:
        if args.service.isdigit():
            service_id = int(args.service)
        else:
            wanted = args.service.strip().lower()
            matches = (
                await session.exec(
                    select(Service.id).where(
                        or_(
                            func.lower(Service.name_uk) == wanted,
                            func.lower(Service.name_en) == wanted,
                            func.lower(Service.name_ru) == wanted,
                        )
                    )
                )
            ).all()
            if len(matches) != 1:
                raise BroadcastError(f"--service: no one service is named {args.service!r}")
            service_id = matches[0]
    try:
        return Segment(
            tags=args.tag,
            visited_before=args.visited_before,
            visited_after=args.visited_after,
            service_id=service_id,
            channel=args.channel,
        )
    except ValidationError as exc:
        raise BroadcastError(exc.errors()[0]["msg"]) from None


def _run(
    action: Callable[[Any, ZoneInfo], Any], *, write: bool = False, per_poll: bool = False
) -> Any:
    """`action(session, salon time zone)` in one transaction on the configured database (or,
    `per_poll`, `action(session factory, zone)` for a loop that reads afresh each time). A
    refusal (crm_store.broadcasts.BroadcastError) is the CLI's error, and nothing is saved."""
    from crm_store.broadcasts import BroadcastError
    from crm_store.business import get_business
    from crm_store.db import session_factory, transaction

    settings = Settings()

    async def run(engine: AsyncEngine) -> Any:
        sessions = session_factory(engine)
        try:
            async with sessions() as session:
                business = await get_business(session, timezone=settings.hub_timezone)
            tz = ZoneInfo(business.timezone)
            if per_poll:
                return await action(sessions, tz)
            async with transaction(sessions) if write else sessions() as session:
                return await action(session, tz)
        except BroadcastError as exc:
            raise CliError(str(exc)) from None

    return asyncio.run(with_database(settings, run))
