"""What a scheduled message says: one renderer per kind, texts from prompts/notices/.

A renderer gets the claimed row, the client and the salon's rules, and answers the text and
quick replies in the client's language, or raises `Skip` when the message must not go out
(the appointment moved, the client booked in the meantime). It runs just before the send, so
it sees the state of things then, not when the row was planned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bots.tools import service_name as bots_service_name
from crm_store.business import Rules
from crm_store.models import Appointment, Business, Client, ScheduledMessage, Service, Staff
from crm_store.reminders import still_valid
from crm_store.timeutil import aware
from prompts import DEFAULT_LANGUAGE, LANGUAGES, load_json


class Skip(Exception):
    """This message must not be sent; the reason is kept on the row."""


@dataclass
class Notice:
    text: str
    quick_replies: list[str] = field(default_factory=list)


@dataclass
class RenderContext:
    session: AsyncSession
    row: ScheduledMessage
    client: Client
    rules: Rules
    business: Business
    now: datetime
    language: str


Renderer = Callable[[RenderContext], Awaitable[Notice]]


def language_of(client: Client, default: str = DEFAULT_LANGUAGE) -> str:
    code = (client.language or "").lower()[:2]
    return code if code in LANGUAGES else default


def texts(kind: str, language: str) -> dict[str, Any]:
    """The templates of one kind in one language (prompts/notices/<kind>.json)."""
    table = load_json(f"notices/{kind}.json")
    return {**table[DEFAULT_LANGUAGE], **table.get(language, {})}


def fill(template: str, **values: Any) -> str:
    """A template with {placeholders}; an unknown placeholder is left as written."""
    return template.format_map(_Keep(values))


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def first_name(client: Client) -> str:
    return (client.name or "").split(" ")[0]


def service_name(service: Service | None, language: str) -> str:
    return "" if service is None else bots_service_name(service, language)


def local_day_time(moment: datetime, rules: Rules, language: str) -> tuple[str, str]:
    """("Tuesday 2 December", "10:00") in the client's language."""
    local = moment.astimezone(rules.tz)
    words = load_json("notices/calendar.json")[language]
    day = f"{words['weekdays'][local.weekday()]}, {local.day} {words['months'][local.month - 1]}"
    return day, f"{local:%H:%M}"


async def render_reminder(ctx: RenderContext) -> Notice:
    row = ctx.row
    appointment = (
        await ctx.session.get(Appointment, row.appointment_id) if row.appointment_id else None
    )
    why = still_valid(appointment, row.payload.get("start_at"), ctx.now)
    if why:
        raise Skip(why)
    assert appointment is not None
    service = await ctx.session.get(Service, appointment.service_id)
    master = await ctx.session.get(Staff, appointment.master_id)
    words = texts("reminder", ctx.language)
    start = aware(appointment.start_at)
    assert start is not None
    day, clock = local_day_time(start, ctx.rules, ctx.language)
    text = fill(
        words["text"] if ctx.client.name else words["text_no_name"],
        name=first_name(ctx.client),
        day=day,
        time=clock,
        service=service_name(service, ctx.language),
        master=master.name if master else "",
    )
    address = ctx.business.address.get(ctx.language) or ctx.business.address.get(
        DEFAULT_LANGUAGE, ""
    )
    if address:
        text += "\n" + fill(words["address"], address=address)
    buttons = [words["confirm"], words["cancel"], words["reschedule"]]
    if appointment.status == "confirmed":
        buttons = [words["cancel"], words["reschedule"]]
    return Notice(text=text, quick_replies=buttons)


# Filled in by the modules of the other kinds (hub.jobs.reengage, hub.jobs.broadcasts) at import.
RENDERERS: dict[str, Renderer] = {"reminder": render_reminder}
