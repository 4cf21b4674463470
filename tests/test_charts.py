"""hub/web/charts.py: the SVG is well formed, accessible (role="img", a title, every value in the
description), escapes every label, draws bars in proportion, copes with no data, zeros and
missing values; and the number formats the analytics page uses."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from markupsafe import Markup

from hub.web.charts import (
    bar_chart,
    column_chart,
    duration_text,
    money_text,
    number_text,
    percent_text,
    share_bar,
)

SVG = "{http://www.w3.org/2000/svg}"
UNITS = {"s": "s", "min": "min", "h": "h", "d": "d"}
EVIL = '<script>alert("x")</script> & "quotes"'


def parsed(chart: Markup) -> ET.Element:
    assert isinstance(chart, Markup)
    root = ET.fromstring(str(chart))  # fails on anything not well formed
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert "style" not in str(chart)  # the CSP allows no inline style
    return root


def title_of(root: ET.Element) -> str:
    return root.find(f"{SVG}title").text or ""  # type: ignore[union-attr]


def desc_of(root: ET.Element) -> str:
    return root.find(f"{SVG}desc").text or ""  # type: ignore[union-attr]


def bars(root: ET.Element) -> list[float]:
    return [float(r.get("width", 0)) for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


def test_bars_are_in_proportion_and_say_their_values() -> None:
    root = parsed(bar_chart([("Telegram", 30), ("Web chat", 600), ("SMS", 300)], title="Median"))
    assert title_of(root) == "Median"
    assert desc_of(root) == "Telegram: 30; Web chat: 600; SMS: 300"
    small, big, half = bars(root)
    assert big > 0 and abs(half - big / 2) < 0.2 and abs(small - big / 20) < 0.2
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts == ["Telegram", "30", "Web chat", "600", "SMS", "300"]
    # Each bar has its own tooltip.
    tips = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")]  # type: ignore[union-attr]
    assert tips == ["Telegram: 30", "Web chat: 600", "SMS: 300"]


def test_written_values_may_be_given() -> None:
    root = parsed(
        bar_chart(
            [("Bot", 30.0), ("Staff", 600.0)],
            title="t",
            texts=["30 s · p90 41 s", "10 min"],
        )
    )
    assert desc_of(root) == "Bot: 30 s · p90 41 s; Staff: 10 min"
    root = parsed(bar_chart([("A", 1234.4)], title="t", value_text=lambda v: f"{v:.0f} UAH"))
    assert desc_of(root) == "A: 1234 UAH"


def test_every_label_is_escaped() -> None:
    for chart in (
        bar_chart([(EVIL, 1)], title=EVIL, texts=[EVIL]),
        column_chart(["01.11"], [(EVIL, [3])], title=EVIL, full_labels=[EVIL]),
        share_bar([(EVIL, 1), ("b", 1)], title=EVIL),
        bar_chart([], title=EVIL, empty=EVIL),
    ):
        assert "<script>" not in chart
        root = parsed(chart)
        assert title_of(root) == EVIL  # the text survives, as text
        assert any(EVIL in (t.text or "") for t in root.iter()) or EVIL in desc_of(root)


def test_no_data() -> None:
    for chart in (
        bar_chart([], title="Nothing", empty="No data"),
        column_chart([], [], title="Nothing", empty="No data"),
        column_chart(["01.11", "02.11"], [("Telegram", [0, 0])], title="Nothing", empty="No data"),
        share_bar([], title="Nothing", empty="No data"),
        share_bar([("a", 0), ("b", 0)], title="Nothing", empty="No data"),
    ):
        root = parsed(chart)
        assert title_of(root) == "Nothing"
        assert desc_of(root) == "No data"
        assert [t.text for t in root.iter(f"{SVG}text")] == ["No data"]
        assert list(root.iter(f"{SVG}rect")) == []


def test_zeros_and_missing_values() -> None:
    # All zero: no division by zero, no bar drawn, each value still written.
    root = parsed(bar_chart([("A", 0), ("B", 0.0)], title="t"))
    assert bars(root) == [0, 0]
    assert desc_of(root) == "A: 0; B: 0"
    # None draws nothing and says so; a tiny value still shows a sliver.
    root = parsed(bar_chart([("A", None), ("B", 1000), ("C", 0.001)], title="t"))
    none, full, tiny = bars(root)
    assert none == 0 and full > 100 and 0 < tiny <= 2
    assert desc_of(root).startswith("A: —; ")
    # Negative values are drawn as none (a count or a time is never below zero).
    assert bars(parsed(bar_chart([("A", -5), ("B", 5)], title="t")))[0] == 0
    # A share bar skips an empty part but keeps it in the legend.
    root = parsed(share_bar([("alone", 3), ("handed off", 0), ("joined", 1)], title="t"))
    assert desc_of(root) == "alone: 3 (75%); handed off: 0 (0%); joined: 1 (25%)"
    shares = [r for r in root.iter(f"{SVG}rect") if (r.get("class") or "").startswith("share")]
    assert len(shares) == 2


def test_columns_stack_per_day() -> None:
    days = [f"{d:02d}.11" for d in range(1, 31)]
    telegram = [1] * 30
    webchat = [0] * 29 + [3]
    root = parsed(
        column_chart(days, [("Telegram", telegram), ("Web chat", webchat)], title="Per day")
    )
    columns = [r for r in root.iter(f"{SVG}rect") if (r.get("class") or "").startswith("column")]
    assert len(columns) == 31  # a part per non-zero value
    heights = [float(r.get("height", 0)) for r in columns]
    # The last day: telegram 1 below webchat 3, three times as tall.
    assert abs(heights[-1] - 3 * heights[-2]) < 0.2
    axis = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis"]
    # Thinned to about ten day labels, plus the value grid (0, half, top).
    day_labels = [a for a in axis if a and a.endswith(".11")]
    assert 8 <= len(day_labels) <= 10 and day_labels[0] == "01.11"
    # The top is a round number above the largest day (4); half of it, 2.5, is no count.
    assert axis[:2] == ["0", "5"]
    halves = parsed(column_chart(["a", "b"], [("x", [1.5, 4.0])], title="t"))
    assert [t.text for t in halves.iter(f"{SVG}text")][:3] == ["0", "2.5", "5"]
    legend = [t.text for t in root.find(f"{SVG}g[@class='legend']").iter(f"{SVG}text")]  # type: ignore[union-attr]
    assert legend == ["Telegram", "Web chat"]
    assert "30.11: 4 (Telegram 1, Web chat 3)" in [
        g.find(f"{SVG}title").text  # type: ignore[union-attr]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "column-day"
    ]


def test_long_labels_are_cut_with_the_whole_one_in_the_tooltip() -> None:
    long = "Манікюр з покриттям гель-лаком і дизайном на всі нігті, френч"
    root = parsed(bar_chart([(long, 1)], title="t"))
    label = next(t.text for t in root.iter(f"{SVG}text") if t.get("class") == "bar-label")
    assert label is not None and label.endswith("…") and len(label) < len(long)
    assert root.find(f"{SVG}g/{SVG}title").text == f"{long}: 1"  # type: ignore[union-attr]


def test_durations() -> None:
    cases = {
        0: "0 s",
        42: "42 s",
        42.6: "43 s",
        59.4: "59 s",
        60: "1 min",
        95: "1 min 35 s",
        180: "3 min",
        599: "9 min 59 s",
        600: "10 min",
        1560: "26 min",
        3600: "1 h",
        3900: "1 h 5 min",
        86_399: "1 d",  # 23 h 59.98 min is a day, not "23 h 60 min"
        86_400: "1 d",
        2 * 86_400 + 3 * 3600: "2 d 3 h",
    }
    for seconds, text in cases.items():
        assert duration_text(seconds, UNITS) == text, seconds
    assert duration_text(None, UNITS) == "—"
    assert duration_text(90, {"s": "с", "min": "хв", "h": "год", "d": "д"}) == "1 хв 30 с"


def test_numbers_percents_and_money() -> None:
    assert number_text(1234567) == "1\u202f234\u202f567"
    assert number_text(2.34, "uk") == "2,3"
    assert number_text(2.34) == "2.3"
    assert number_text(3.0) == "3"
    assert number_text(None) == "—"
    assert percent_text(0.5) == "50%"
    assert percent_text(0.035, "uk") == "3,5%"
    assert percent_text(0.0) == "0%"
    assert percent_text(1) == "100%"
    assert percent_text(None) == "—"
    assert money_text(80_000, "UAH") == "800 UAH"
    assert money_text(1_234_550, "UAH", "ru") == "12\u202f345,50 UAH"
    assert money_text(0, "EUR") == "0 EUR"
    assert money_text(None, "UAH") == "—"
