"""Charts drawn on the server as inline SVG, and the number formats the analytics page shows.

The page needs no script (the CSP allows none inline, and an owner's report should print and
work without one), so every chart is markup: bars, stacked columns and a share bar. Each SVG
is an image to assistive technology (`role="img"`) with a `<title>` and a `<desc>` that states
every value in words, and each bar carries its own `<title>` as a tooltip. Every label is
escaped: names of services, masters and `/start` sources come from people.

Colours are presentation attributes (allowed by the CSP, unlike `style=`); the classes let a
stylesheet override them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

PALETTE = ("#9c3d54", "#2563eb", "#15803d", "#b45309", "#7c3aed", "#0e7490", "#be185d", "#4b5563")
TRACK = "#ece9e4"
INK = "#1f1d1a"
MUTED = "#6b665f"
GRID = "#e3dfd8"
# Average glyph width of the page's sans-serif at the charts' 12px, for sizing label columns
# (SVG text does not flow, so the room for it is reserved up front).
CHAR_W = 6.8
FONT = 12

Number = int | float


def number_text(value: Number | None, language: str = "en") -> str:
    """A count or measure for people: thousands grouped, at most one decimal."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    rounded = round(float(value), 1)
    whole = rounded == int(rounded)
    text = f"{int(rounded):,}" if whole else f"{rounded:,.1f}"
    return _localise(text, language)


def percent_text(rate: Number | None, language: str = "en") -> str:
    """0.125 → "12.5%"; one decimal only below 10%, where it still matters."""
    if rate is None:
        return "—"
    percent = float(rate) * 100
    text = f"{percent:.1f}" if percent < 10 else f"{percent:.0f}"
    text = text.removesuffix(".0")
    return _localise(text, language) + "%"


def duration_text(seconds: Number | None, units: dict[str, str]) -> str:
    """Seconds as people say them: "42 s", "3 min 5 s", "25 min", "1 h 5 min", "2 d 3 h".

    `units` maps s, min, h, d to the page language's abbreviations."""
    if seconds is None:
        return "—"
    total = max(0, round(float(seconds)))
    if total < 60:
        return f"{total} {units['s']}"
    if total < 600:
        minutes, rest = divmod(total, 60)
        return _pair(minutes, units["min"], rest, units["s"])
    if total < 3600:
        return f"{round(total / 60)} {units['min']}"
    minutes = round(total / 60)
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return _pair(hours, units["h"], rest, units["min"])
    hours = round(total / 3600)
    days, rest = divmod(hours, 24)
    return _pair(days, units["d"], rest, units["h"])


def money_text(minor: int | None, currency: str, language: str = "en") -> str:
    """Minor units (kopiykas, cents) as an amount with the currency's code: "12 500 UAH"."""
    if minor is None:
        return "—"
    amount = minor / 100
    text = f"{amount:,.0f}" if minor % 100 == 0 else f"{amount:,.2f}"
    return f"{_localise(text, language)} {currency}"


def _pair(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big} {big_unit}" if small == 0 else f"{big} {big_unit} {small} {small_unit}"


def _localise(text: str, language: str) -> str:
    """Thousands apart by a narrow no-break space; a decimal comma in Ukrainian and Russian."""
    decimal = "." if language == "en" else ","
    return text.replace(",", "\u202f").replace(".", decimal)


# Charts ---------------------------------------------------------------------------------------


def bar_chart(
    items: Sequence[tuple[str, Number | None]],
    *,
    title: str,
    value_text: Callable[[Number], str] | None = None,
    texts: Sequence[str] | None = None,
    empty: str = "—",
    width: int = 560,
    color: str = PALETTE[0],
) -> Markup:
    """Horizontal bars, one per (label, value), longest for the largest value.

    `texts` (one per item) replaces the number written after a bar, e.g. "42 s · p90 3 min";
    a value of None draws no bar and writes "—"."""
    show = value_text or number_text
    if not items:
        return _empty_svg(title, empty, width)
    labels = [label for label, _ in items]
    values = [_clean(value) for _, value in items]
    written = list(texts) if texts is not None else [_written(v, show) for v in values]
    label_w = _label_room(labels, low=60, high=200)
    value_w = min(220, max(48, int(max(len(w) for w in written) * CHAR_W) + 12))
    track_w = max(40, width - label_w - value_w)
    row_h, bar_h, top = 26, 16, 4
    height = top * 2 + row_h * len(items)
    top_value = max((v for v in values if v is not None), default=0) or 1
    parts = []
    for n, (label, value, text) in enumerate(zip(labels, values, written, strict=True)):
        y = top + n * row_h
        bar = 0.0 if value is None else track_w * max(value, 0) / top_value
        # A non-zero value gets at least a sliver, so "small" never looks like "none".
        if value and value > 0:
            bar = max(bar, 2.0)
        mid = y + row_h / 2
        parts.append(
            f'<g class="bar-row"><title>{escape(label)}: {escape(text)}</title>'
            f'<text x="{label_w - 8}" y="{mid:.1f}" text-anchor="end" '
            f'dominant-baseline="middle" class="bar-label" fill="{INK}" font-size="{FONT}">'
            f"{escape(_fit(label, label_w - 10))}</text>"
            f'<rect x="{label_w}" y="{y + (row_h - bar_h) / 2:.1f}" width="{track_w}" '
            f'height="{bar_h}" rx="3" class="bar-track" fill="{TRACK}"/>'
            f'<rect x="{label_w}" y="{y + (row_h - bar_h) / 2:.1f}" width="{bar:.1f}" '
            f'height="{bar_h}" rx="3" class="bar" fill="{escape(color)}"/>'
            f'<text x="{label_w + track_w + 6}" y="{mid:.1f}" dominant-baseline="middle" '
            f'class="bar-value" fill="{INK}" font-size="{FONT}">{escape(text)}</text></g>'
        )
    desc = "; ".join(f"{label}: {text}" for label, text in zip(labels, written, strict=True))
    return _svg("bar-chart", title, desc, width, height, "".join(parts))


def column_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[Number]]],
    *,
    title: str,
    full_labels: Sequence[str] | None = None,
    value_text: Callable[[Number], str] | None = None,
    empty: str = "—",
    width: int = 960,
    height: int = 220,
) -> Markup:
    """Stacked columns: one column per label (a day), one coloured part per series (a
    channel), a legend under the axis. Axis labels are thinned out to about ten."""
    show = value_text or number_text
    count = len(labels)
    totals = [sum(max(_clean(s[1][n]) or 0, 0) for s in series) for n in range(count)]
    if count == 0 or not series or max(totals, default=0) <= 0:
        return _empty_svg(title, empty, width)
    names = full_labels or labels
    left, right, top, axis_h = 40, 8, 10, 20
    legend_rows = _legend_rows([name for name, _ in series], width - left)
    plot_h = height - top - axis_h
    total_h = height + 18 * len(legend_rows) + 6
    plot_w = width - left - right
    step = plot_w / count
    column_w = max(1.0, step * 0.72)
    top_value = _nice_ceiling(max(totals))
    parts = []
    whole = all(float(v).is_integer() for _, values in series for v in values if v is not None)
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1" class="grid"/>'
        )
        mark = float(top_value * fraction)
        # Counts are whole: "0.5 inquiries" is no label for a line.
        if whole and not mark.is_integer():
            continue
        parts.append(
            f'<text x="{left - 6}" y="{y:.1f}" text-anchor="end" dominant-baseline="middle" '
            f'fill="{MUTED}" font-size="{FONT - 1}" class="axis">{escape(show(mark))}</text>'
        )
    every = max(1, math.ceil(count / 10))
    for n in range(count):
        x = left + n * step + (step - column_w) / 2
        base = top + plot_h
        pieces = []
        for k, (_name, values) in enumerate(series):
            value = max(_clean(values[n]) or 0, 0)
            if value <= 0:
                continue
            h = plot_h * value / top_value
            base -= h
            pieces.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{column_w:.1f}" height="{h:.1f}" '
                f'class="column s{k}" fill="{PALETTE[k % len(PALETTE)]}"/>'
            )
        detail = ", ".join(
            f"{name} {show(_clean(values[n]) or 0)}"
            for name, values in series
            if (_clean(values[n]) or 0) > 0
        )
        tip = f"{names[n]}: {show(totals[n])}" + (f" ({detail})" if detail else "")
        parts.append(f'<g class="column-day"><title>{escape(tip)}</title>{"".join(pieces)}</g>')
        if n % every == 0:
            parts.append(
                f'<text x="{x + column_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'fill="{MUTED}" font-size="{FONT - 1}" class="axis">{escape(labels[n])}</text>'
            )
    parts.append(_legend(legend_rows, left, height + 4))
    desc = "; ".join(f"{names[n]}: {show(totals[n])}" for n in range(count) if totals[n] > 0)
    return _svg("column-chart", title, desc, width, total_h, "".join(parts))


def share_bar(
    parts: Sequence[tuple[str, Number]],
    *,
    title: str,
    value_text: Callable[[Number], str] | None = None,
    empty: str = "—",
    width: int = 560,
) -> Markup:
    """One bar split into shares of a whole, with a legend of each part's value and share."""
    show = value_text or number_text
    values = [max(_clean(v) or 0, 0) for _, v in parts]
    whole = sum(values)
    if not parts or whole <= 0:
        return _empty_svg(title, empty, width)
    captions = [
        f"{name}: {show(v)} ({percent_text(v / whole)})"
        for (name, _), v in zip(parts, values, strict=True)
    ]
    legend_rows = _legend_rows(captions, width)
    bar_h, top = 20, 4
    height = top + bar_h + 8 + 18 * len(legend_rows)
    pieces = [
        f'<rect x="0" y="{top}" width="{width}" height="{bar_h}" rx="4" '
        f'class="bar-track" fill="{TRACK}"/>'
    ]
    x = 0.0
    for k, (caption, value) in enumerate(zip(captions, values, strict=True)):
        w = width * value / whole
        if w <= 0:
            continue
        pieces.append(
            f'<rect x="{x:.1f}" y="{top}" width="{w:.1f}" height="{bar_h}" class="share s{k}" '
            f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(caption)}</title></rect>'
        )
        x += w
    pieces.append(_legend(legend_rows, 0, top + bar_h + 6))
    return _svg("share-bar", title, "; ".join(captions), width, height, "".join(pieces))


# Pieces ---------------------------------------------------------------------------------------


def _svg(kind: str, title: str, desc: str, width: int, height: float, body: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" role="img" '
        f'viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}" '
        f'preserveAspectRatio="xMinYMin meet" font-family="inherit">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>{body}</svg>"
    )


def _empty_svg(title: str, empty: str, width: int) -> Markup:
    body = (
        f'<text x="0" y="18" fill="{MUTED}" font-size="{FONT + 1}" class="chart-empty">'
        f"{escape(empty)}</text>"
    )
    return _svg("chart-none", title, empty, width, 28, body)


def _legend_rows(names: Sequence[str], width: int) -> list[list[tuple[int, str]]]:
    """The legend's entries (index, name) wrapped into rows that fit the width."""
    rows: list[list[tuple[int, str]]] = [[]]
    used = 0.0
    for k, name in enumerate(names):
        need = 18 + len(name) * CHAR_W + 14
        if rows[-1] and used + need > width:
            rows.append([])
            used = 0.0
        rows[-1].append((k, name))
        used += need
    return rows


def _legend(rows: list[list[tuple[int, str]]], left: float, top: float) -> str:
    out = ['<g class="legend">']
    for r, row in enumerate(rows):
        x = left
        y = top + r * 18
        for k, name in row:
            out.append(
                f'<rect x="{x:.1f}" y="{y + 3:.1f}" width="10" height="10" rx="2" '
                f'class="s{k}" fill="{PALETTE[k % len(PALETTE)]}"/>'
                f'<text x="{x + 15:.1f}" y="{y + 8:.1f}" dominant-baseline="middle" '
                f'fill="{INK}" font-size="{FONT}">{escape(name)}</text>'
            )
            x += 18 + len(name) * CHAR_W + 14
    out.append("</g>")
    return "".join(out)


def _label_room(labels: Sequence[str], *, low: int, high: int) -> int:
    longest = max((len(label) for label in labels), default=0)
    return int(min(high, max(low, longest * CHAR_W + 14)))


def _fit(label: str, room: float) -> str:
    """A label cut with "…" to the room it has (the full one is in the bar's tooltip)."""
    most = max(3, int(room / CHAR_W))
    return label if len(label) <= most else label[: most - 1] + "…"


def _clean(value: Number | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def _written(value: float | None, show: Callable[[Number], str]) -> str:
    return "—" if value is None else show(value)


def _nice_ceiling(value: float) -> float:
    """The axis top: the next 1, 2, 2.5 or 5 times a power of ten at or above the value."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * power:
            return factor * power
    return 10 * power
