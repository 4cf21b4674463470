"""The "time for your next visit" message (kind `reengage`), rendered just before it is sent.

It offers real free times of the service, found the way the bot finds them (any master, the
salon's booking window). Each quick reply names the service as well as the time ("Манікюр
класичний: Вт 02.12 о 10:00"), so the answer stands on its own: whichever brain reads it,
with no memory of this message, books that service at that time (the offline brain books a
named service on a named day and time at once). The last button asks for other times of the
same service. Planning is crm_store.reengage; importing this module registers the renderer.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.business import Rules
from crm_store.catalog import offers_for
from crm_store.models import Service
from crm_store.reengage import last_visit_of, still_due
from crm_store.slots import Slot, find_slots
from hub.jobs.notices import (
    RENDERERS,
    Notice,
    RenderContext,
    Skip,
    fill,
    first_name,
    local_day_time,
    service_name,
    texts,
)

OFFERED = 3  # free times in the message
SEARCH_DAYS = 14  # how far ahead they are looked for
BUTTON_MAX = 64  # the longest quick reply a channel takes (hub.messages.QuickReply)


async def render_reengage(ctx: RenderContext) -> Notice:
    row = ctx.row
    service = await ctx.session.get(Service, row.service_id) if row.service_id else None
    planned = (row.payload or {}).get("last_visit")
    why = await still_due(
        ctx.session, client=ctx.client, service=service, last_visit=planned, now=ctx.now
    )
    if why:
        raise Skip(why)
    assert service is not None and service.id is not None
    if not await offers_for(ctx.session, service.id, None):
        raise Skip("no master does the service any more")
    last = datetime.fromisoformat(planned) if planned else None
    last = last or await last_visit_of(
        ctx.session,
        client_id=ctx.client.id,  # type: ignore[arg-type]
        service_id=service.id,
        now=ctx.now,
    )
    if last is None:
        raise Skip("the client has no visit of the service")
    words = texts("reengage", ctx.language)
    name = service_name(service, ctx.language)
    values: dict[str, Any] = {
        "name": first_name(ctx.client),
        "service": name,
        "weeks": since(ctx.now - last, words),
    }
    slots = await free_times(ctx.session, service.id, ctx.rules, ctx.now)
    suffix = "" if ctx.client.name else "_no_name"
    if not slots:
        text = fill(words["text_no_slots" + suffix], **values)
        return Notice(text=text, quick_replies=[button(words["book_button"], name)])
    lines = []
    buttons = []
    for slot in slots:
        day, clock = local_day_time(slot.start, ctx.rules, ctx.language)
        lines.append(fill(words["slot_line"], day=day, time=clock))
        local = slot.start.astimezone(ctx.rules.tz)
        buttons.append(
            button(
                words["slot_button"],
                name,
                weekday=words["weekdays_short"][local.weekday()],
                day=local.day,
                month=local.month,
                month_name=words.get("months_short", [""] * 12)[local.month - 1],
                time=clock,
            )
        )
    text = fill(words["text" + suffix], list="\n".join(lines), **values)
    return Notice(text=text, quick_replies=[*buttons, button(words["other_button"], name)])


async def free_times(
    session: AsyncSession, service_id: int, rules: Rules, now: datetime
) -> list[Slot]:
    """Up to OFFERED free starts in the next SEARCH_DAYS days, each on a day of its own
    (the first free time of the day), so the client sees a choice of days."""
    earliest, latest = rules.window(now)
    today = earliest.astimezone(rules.tz).date()
    found = await find_slots(
        session,
        service_id=service_id,
        rules=rules,
        first_day=today,
        last_day=today + timedelta(days=SEARCH_DAYS - 1),
        earliest=earliest,
        latest=latest,
    )
    chosen: list[Slot] = []
    days: set[date] = set()
    for slot in found:
        day = slot.start.astimezone(rules.tz).date()
        if day not in days:
            days.add(day)
            chosen.append(slot)
        if len(chosen) == OFFERED:
            return chosen
    # Fewer free days than times to offer: later times of those days, in order.
    for slot in found:
        if len(chosen) == OFFERED:
            break
        if slot not in chosen:
            chosen.append(slot)
    return sorted(chosen)


def since(elapsed: timedelta, words: dict[str, Any]) -> str:
    """ "5 тижнів", "10 days": weeks from two weeks on, days before."""
    days = max(elapsed.days, 1)
    if days < 14:
        return plural(days, words["days"])
    return plural(days // 7, words["weeks"])


def plural(n: int, forms: list[str]) -> str:
    """The form for n: [one, other] (English) or [one, few, many] (Ukrainian, Russian)."""
    if len(forms) == 2:
        form = forms[0] if n == 1 else forms[1]
    elif n % 10 == 1 and n % 100 != 11:
        form = forms[0]
    elif 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        form = forms[1]
    else:
        form = forms[2]
    return fill(form, n=n)


def button(template: str, service: str, **values: Any) -> str:
    """A quick reply with the service's name, the name cut short to fit a button."""
    label = fill(template, service=service, **values)
    if len(label) <= BUTTON_MAX:
        return label
    room = max(len(service) - (len(label) - BUTTON_MAX) - 1, 1)
    short = service[:room].rsplit(" ", 1)[0] if " " in service[:room] else service[:room]
    return fill(template, service=short.rstrip(" ,.-") + "…", **values)[:BUTTON_MAX]


RENDERERS["reengage"] = render_reengage
