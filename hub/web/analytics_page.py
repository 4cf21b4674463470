"""The analytics page, /inbox/analytics (owners and admins): every figure of docs/metrics.md
written for people (durations, percentages, money in the reader's language) with server-drawn
charts from hub/web/charts.py. It reads the query as the API does (hub.analytics_api.read_query),
so a CSV link on the page exports exactly the table shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from markupsafe import Markup

from crm_store import analytics
from crm_store.analytics import COLUMNS, Query, Table
from crm_store.analytics.report import MAX_DAYS
from crm_store.timeutil import as_utc
from hub.state import Hub
from hub.web.analytics_api import (
    CHANNELS,
    MAX_LOST_DAYS,
    QueryError,
    csv_url,
    read_query,
)
from hub.web.charts import (
    bar_chart,
    column_chart,
    duration_text,
    money_text,
    number_text,
    percent_text,
    share_bar,
)

# What the page's tables show of each table: the ids stay in the CSV (a name links instead).
PAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c for c in columns if not c.endswith("_id")) for name, columns in COLUMNS.items()
}
# Columns of words, aligned left; the rest are figures, aligned right.
WORD_COLUMNS = frozenset(
    {"dimension", "key", "date", "week", "channel", "source", "master", "service", "name",
     "phone", "email", "text", "asked_at", "last_reply_at"}
)  # fmt: skip
# Long tables are folded under their chart (a <details>: no script needed to open them).
FOLDED = frozenset({"volume", "occupancy_days"})


@dataclass(frozen=True)
class Look:
    """How the page writes a value: in the reader's language, money in the salon's currency,
    times on the salon's clock."""

    t: Mapping[str, str]
    language: str
    currency: str
    tz: ZoneInfo

    def say(self, key: str, **values: Any) -> str:
        return self.t[key].format(**values)

    def number(self, value: float | int | None) -> str:
        return number_text(value, self.language)

    def percent(self, value: float | int | None) -> str:
        return percent_text(value, self.language)

    def money(self, minor: float | int | None) -> str:
        return money_text(None if minor is None else int(minor), self.currency, self.language)

    def seconds(self, value: float | int | None) -> str:
        units = {unit: self.t[f"unit_{unit}"] for unit in ("s", "min", "h", "d")}
        return duration_text(value, units)

    def hours(self, minutes: float | int | None) -> str:
        """Working time in hours and minutes, never in days: "37 h 30 min"."""
        if minutes is None:
            return "—"
        hours, rest = divmod(round(float(minutes)), 60)
        if hours == 0:
            return f"{rest} {self.t['unit_min']}"
        text = f"{self.number(hours)} {self.t['unit_h']}"
        return text if rest == 0 else f"{text} {rest} {self.t['unit_min']}"

    def when(self, value: datetime | None) -> str:
        return as_utc(value).astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if value else "—"

    def channel(self, name: str | None) -> str:
        if name in (None, "all"):
            return self.t["key_all"]
        return self.t.get(f"channel_{name}", str(name))

    def key(self, dimension: str, key: str) -> str:
        """A row of the response times: a channel, bot or staff, in or out of hours, all."""
        if dimension == "channel":
            return self.channel(key)
        return self.t.get(f"key_{key}", key)

    def master(self, row: Mapping[str, Any]) -> str:
        if row.get("master_id") is None:
            return self.t["all_masters"]
        return row.get("master") or f"#{row['master_id']}"

    def heading(self, table: str, column: str) -> str:
        # A table may name a column its own way ("rate" is a conversion, a no-show rate, ...).
        return self.t.get(f"col_{table}_{column}") or self.t[f"col_{column}"]

    def error(self, exc: QueryError) -> str:
        return self.say(f"err_{exc.code}", max=MAX_LOST_DAYS if exc.code == "days" else MAX_DAYS)


async def page_view(
    hub: Hub, params: Mapping[str, str], *, language: str, texts: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    """What the analytics page shows for a query string, and its HTTP status (400 for a query
    it can't answer: the form comes back with the reason)."""
    now = hub.clock()
    async with hub.sessions() as session:
        rules = await hub.rules(session)
        look = Look(texts, language, rules.currency, rules.tz)
        today = now.astimezone(rules.tz).date()
        try:
            query = read_query(params, tz=rules.tz, now=now, language=language)
        except QueryError as exc:
            form = {name: params.get(name, "") for name in ("from", "to", "channel", "days")}
            return 400, {
                "error": look.error(exc),
                "form": form,
                "channels": CHANNELS,
                "presets": _presets(today, form, look),
                "period": "",
                "kpis": [],
                "sections": [],
            }
        tables = await analytics.dashboard(session, query)
    form = {
        "from": query.first.isoformat(),
        "to": query.last.isoformat(),
        "channel": query.channel or "",
        "days": str(query.lost_days),
    }
    period = look.say("period_text", **{"from": form["from"], "to": form["to"], "tz": rules.tz.key})
    return 200, {
        "error": None,
        "form": form,
        "channels": CHANNELS,
        "presets": _presets(today, form, look),
        "period": period,
        "kpis": _kpis(tables, look, query),
        "sections": _sections(tables, look, query),
    }


def _presets(today: date, form: Mapping[str, str], look: Look) -> list[dict[str, Any]]:
    """Links to common periods, keeping the channel and the lost-leads days."""
    month = today.replace(day=1)
    last_month_end = month - timedelta(days=1)
    spans = [
        ("preset_7", today - timedelta(days=6), today),
        ("preset_30", today - timedelta(days=29), today),
        ("preset_90", today - timedelta(days=89), today),
        ("preset_this_month", month, today),
        ("preset_last_month", last_month_end.replace(day=1), last_month_end),
    ]
    keep = {name: form[name] for name in ("channel", "days") if form.get(name)}
    found = []
    for key, first, last in spans:
        params = {"from": first.isoformat(), "to": last.isoformat(), **keep}
        current = (form.get("from"), form.get("to")) == (params["from"], params["to"])
        found.append(
            {
                "label": look.t[key],
                "url": f"/inbox/analytics?{urlencode(params)}",
                "current": current,
            }
        )
    return found


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _first(table: Table, **match: Any) -> dict[str, Any]:
    return next((r for r in table.rows if all(r.get(k) == v for k, v in match.items())), {})


def _kpis(tables: Mapping[str, Table], look: Look, query: Query) -> list[dict[str, str]]:
    """The figures at a glance, each with what it is made of."""
    asked = _first(tables["responses"], dimension="all")
    converted = _first(tables["conversion"], channel="all")
    alone = _first(tables["containment"], channel="all")
    missed = _first(tables["no_shows"], master_id=None)
    weeks = tables["occupancy_weeks"].rows
    working = sum(r.get("working_min") or 0 for r in weeks)
    booked = sum(r.get("booked_min") or 0 for r in weeks)
    revenue = tables["revenue_masters"].rows
    came_back = _first(tables["returns"])
    n = look.number

    def kpi(name: str, value: str, note: str) -> dict[str, str]:
        return {"name": name, "label": look.t[f"kpi_{name}"], "value": value, "note": note}

    return [
        kpi(
            "inquiries",
            n(asked.get("inquiries", 0)),
            look.say(
                "kpi_inquiries_note",
                answered=n(asked.get("answered", 0)),
                unanswered=n(asked.get("unanswered", 0)),
            ),
        ),
        kpi(
            "response",
            look.seconds(asked.get("median_s")),
            look.say("kpi_response_note", p90=look.seconds(asked.get("p90_s"))),
        ),
        kpi(
            "conversion",
            look.percent(converted.get("rate")),
            look.say(
                "kpi_conversion_note",
                converted=n(converted.get("converted", 0)),
                inquiries=n(converted.get("inquiries", 0)),
            ),
        ),
        kpi(
            "bot",
            look.percent(alone.get("containment_rate")),
            look.say(
                "kpi_bot_note",
                contained=n(alone.get("contained", 0)),
                bot_answered=n(alone.get("bot_answered", 0)),
            ),
        ),
        kpi(
            "no_shows",
            look.percent(missed.get("rate")),
            look.say(
                "kpi_no_shows_note",
                no_shows=n(missed.get("no_shows", 0)),
                visits=n(missed.get("done", 0) + missed.get("no_shows", 0)),
            ),
        ),
        kpi(
            "occupancy",
            look.percent(_share(booked, working)),
            look.say("kpi_occupancy_note", booked=look.hours(booked), working=look.hours(working)),
        ),
        kpi(
            "revenue",
            look.money(sum(r.get("revenue_minor") or 0 for r in revenue)),
            look.say("kpi_revenue_note", visits=n(sum(r.get("visits") or 0 for r in revenue))),
        ),
        kpi(
            "returns",
            look.percent(came_back.get("rate")),
            look.say(
                "kpi_returns_note",
                returned=n(came_back.get("returned", 0)),
                first_visits=n(came_back.get("first_visits", 0)),
            ),
        ),
        kpi(
            "lost",
            n(len(tables["lost_leads"].rows)),
            look.say("kpi_lost_note", days=query.lost_days),
        ),
    ]


def _sections(tables: Mapping[str, Table], look: Look, query: Query) -> list[dict[str, Any]]:
    t = look.t
    empty = t["no_data"]

    def section(
        name: str, charts: list[Markup], names: tuple[str, ...], hint: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": name,
            "title": t[f"sec_{name}"],
            "hint": hint if hint is not None else t[f"hint_{name}"],
            "charts": charts,
            "tables": [
                _page_table(tables[n], look, query, captioned=len(names) > 1) for n in names
            ],
        }

    responses = tables["responses"].rows

    def response_chart(dimension: str, title: str) -> Markup:
        rows = [r for r in responses if r["dimension"] == dimension]
        return bar_chart(
            [(look.key(dimension, r["key"]), r["median_s"]) for r in rows],
            title=title,
            texts=[
                look.say(
                    "response_text",
                    median=look.seconds(r["median_s"]),
                    p90=look.seconds(r["p90_s"]),
                )
                for r in rows
            ],
            empty=empty,
        )

    by_channel = [r for r in tables["conversion"].rows if r["channel"] != "all"]
    contained = [r for r in tables["containment"].rows if r["channel"] != "all"]
    alone = _first(tables["containment"], channel="all")
    masters = [r for r in tables["no_shows"].rows if r.get("master_id") is not None]
    sources = tables["sources"].rows
    return [
        section(
            "responses",
            [
                response_chart("channel", t["chart_response_channel"]),
                response_chart("responder", t["chart_response_responder"]),
                response_chart("hours", t["chart_response_hours"]),
            ],
            ("responses",),
        ),
        section("volume", [_volume_chart(tables["volume"], look, query)], ("volume",)),
        section(
            "sources",
            [
                bar_chart(
                    [
                        (
                            f"{look.channel(r['channel'])} · {r['source'] or t['no_source']}",
                            r["inquiries"],
                        )
                        for r in sources
                    ],
                    title=t["chart_sources"],
                    texts=[
                        look.say(
                            "sources_text",
                            inquiries=look.number(r["inquiries"]),
                            converted=look.number(r["converted"]),
                        )
                        for r in sources
                    ],
                    empty=empty,
                )
            ],
            ("sources",),
        ),
        section(
            "conversion",
            [
                bar_chart(
                    [(look.channel(r["channel"]), r["rate"]) for r in by_channel],
                    title=t["chart_conversion"],
                    texts=[
                        look.say(
                            "conversion_text",
                            rate=look.percent(r["rate"]),
                            converted=look.number(r["converted"]),
                            inquiries=look.number(r["inquiries"]),
                        )
                        for r in by_channel
                    ],
                    empty=empty,
                )
            ],
            ("conversion",),
        ),
        section(
            "containment",
            [
                share_bar(
                    [
                        (t["share_contained"], alone.get("contained", 0)),
                        (t["share_handed_off"], alone.get("handed_off", 0)),
                        (
                            t["share_staff_joined"],
                            alone.get("bot_answered", 0)
                            - alone.get("contained", 0)
                            - alone.get("handed_off", 0),
                        ),
                    ],
                    title=t["chart_containment_share"],
                    value_text=look.number,
                    empty=empty,
                ),
                bar_chart(
                    [(look.channel(r["channel"]), r["containment_rate"]) for r in contained],
                    title=t["chart_containment"],
                    texts=[
                        look.say(
                            "containment_text",
                            rate=look.percent(r["containment_rate"]),
                            contained=look.number(r["contained"]),
                            bot_answered=look.number(r["bot_answered"]),
                        )
                        for r in contained
                    ],
                    empty=empty,
                ),
            ],
            ("containment",),
        ),
        section(
            "no_shows",
            [
                bar_chart(
                    [(look.master(r), r["rate"]) for r in masters],
                    title=t["chart_no_shows"],
                    texts=[
                        look.say(
                            "no_shows_text",
                            rate=look.percent(r["rate"]),
                            no_shows=look.number(r["no_shows"]),
                            visits=look.number(r["done"] + r["no_shows"]),
                        )
                        for r in masters
                    ],
                    empty=empty,
                )
            ],
            ("no_shows",),
        ),
        section(
            "occupancy",
            [_occupancy_chart(tables["occupancy_weeks"], look)],
            ("occupancy_weeks", "occupancy_days"),
        ),
        section("returns", [], ("returns",)),
        section(
            "revenue",
            [
                bar_chart(
                    [
                        (r.get("service") or f"#{r['service_id']}", r["revenue_minor"])
                        for r in tables["revenue_services"].rows
                    ],
                    title=t["chart_revenue_services"],
                    value_text=look.money,
                    empty=empty,
                ),
                bar_chart(
                    [(look.master(r), r["revenue_minor"]) for r in tables["revenue_masters"].rows],
                    title=t["chart_revenue_masters"],
                    value_text=look.money,
                    empty=empty,
                ),
            ],
            ("revenue_services", "revenue_masters"),
        ),
        section(
            "lost_leads",
            [],
            ("lost_leads",),
            hint=look.say("hint_lost_leads", days=query.lost_days),
        ),
    ]


def _volume_chart(volume: Table, look: Look, query: Query) -> Markup:
    """Every day of the period (the table leaves out days without inquiries), a part per
    channel."""
    counts: dict[str, dict[date, float]] = {}
    for row in volume.rows:
        per_day = counts.setdefault(row["channel"], {})
        per_day[row["date"]] = per_day.get(row["date"], 0) + row["inquiries"]
    days = query.days
    order = [c for c in CHANNELS if c in counts] + sorted(set(counts) - set(CHANNELS))
    return column_chart(
        [day.strftime("%d.%m") for day in days],
        [(look.channel(c), [counts[c].get(day, 0) for day in days]) for c in order],
        title=look.t["sec_volume"],
        full_labels=[day.isoformat() for day in days],
        value_text=look.number,
        empty=look.t["no_data"],
    )


def _occupancy_chart(weeks: Table, look: Look) -> Markup:
    """Each master's occupancy over the whole period: the weeks' minutes summed."""
    totals: dict[int, list[float]] = {}
    names: dict[int, str] = {}
    for row in weeks.rows:
        total = totals.setdefault(row["master_id"], [0.0, 0.0])
        total[0] += row.get("working_min") or 0
        total[1] += row.get("booked_min") or 0
        names[row["master_id"]] = look.master(row)
    items = [(names[m], _share(booked, working)) for m, (working, booked) in totals.items()]
    return bar_chart(
        items,
        title=look.t["chart_occupancy"],
        texts=[
            look.say(
                "occupancy_text",
                rate=look.percent(_share(booked, working)),
                booked=look.hours(booked),
                working=look.hours(working),
            )
            for working, booked in totals.values()
        ],
        empty=look.t["no_data"],
    )


def _page_table(table: Table, look: Look, query: Query, *, captioned: bool) -> dict[str, Any]:
    columns = PAGE_COLUMNS[table.name]
    return {
        "name": table.name,
        "caption": look.t[f"table_{table.name}"] if captioned else None,
        "headers": [(look.heading(table.name, c), c not in WORD_COLUMNS) for c in columns],
        "rows": [
            [(_cell(table.name, c, row, look), c not in WORD_COLUMNS, c) for c in columns]
            for row in table.rows
        ],
        "csv": csv_url(table.name, query),
        "folded": table.name in FOLDED,
    }


def _cell(table: str, column: str, row: Mapping[str, Any], look: Look) -> str | Markup:
    """One value as the page writes it."""
    value = row.get(column)
    if column in ("median_s", "p90_s"):
        return look.seconds(value)
    if column.endswith("rate"):
        return look.percent(value)
    if column.endswith("_min"):
        return look.hours(value)
    if column == "revenue_minor":
        return look.money(value)
    if column == "asked_at":
        return look.when(value)
    if column == "last_reply_at":
        return look.when(value) if value else look.t["never"]
    if column == "week" and isinstance(value, date):
        return look.say("week_label", n=value.isocalendar().week, date=value.isoformat())
    if column == "channel":
        return look.channel(value)
    if column == "dimension":
        return look.t.get(f"dim_{value}", str(value))
    if column == "key":
        return look.key(row.get("dimension", ""), value)
    if column == "source":
        return value or look.t["no_source"]
    if column == "master":
        return look.master(row)
    if column == "service":
        return value or f"#{row.get('service_id')}"
    if column == "name" and table == "lost_leads":
        # The client's conversation opens in the inbox (/inbox?c=<id>).
        return Markup('<a href="/inbox?c={}" title="{}">{}</a>').format(
            row.get("conversation_id"), look.t["open_conversation"], value or look.t["no_name"]
        )
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int | float):
        return look.number(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
