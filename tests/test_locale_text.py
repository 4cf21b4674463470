"""bots/locale_text.py: prices, plurals, weekdays, dates, times and durations per language."""

from __future__ import annotations

import tempfile
from datetime import date, time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from bots.locale_text import clock, day_month, duration, money, plural, weekday_name

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "salon-hub-hypothesis")

NBSP = "\xa0"
DAYS_UK = {"one": "день", "few": "дні", "many": "днів", "other": "дня"}
MINUTES_RU = {"one": "минута", "few": "минуты", "many": "минут", "other": "минуты"}


@pytest.mark.parametrize(
    ("amount", "currency", "lang", "expected"),
    [
        (750, "UAH", "uk", "750 грн"),
        (750.0, "UAH", "ru", "750 грн"),
        (750, "uah", "en", "750 UAH"),
        (3500, "UAH", "uk", "3500 грн"),  # as salons write it in chats: no group under 10 000
        (12000, "UAH", "uk", "12 000 грн"),
        (12000, "UAH", "en", "12,000 UAH"),
        (750.5, "UAH", "uk", "750,50 грн"),
        (50, "EUR", "en", "€50"),
        (50, "EUR", "ru", f"50{NBSP}€"),
        (50.5, "EUR", "en", "€50.50"),
    ],
)
def test_money(amount: float, currency: str, lang: str, expected: str) -> None:
    assert money(amount, currency, lang) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "word"),
    [(1, "день"), (2, "дні"), (5, "днів"), (21, "день"), (11, "днів"), (0, "днів"), (104, "дні")],
)
def test_plural_uk(n: int, word: str) -> None:
    assert plural(n, DAYS_UK, "uk") == word


def test_plural_ru_and_en() -> None:
    assert plural(1, MINUTES_RU, "ru") == "минута"
    assert plural(3, MINUTES_RU, "ru") == "минуты"
    assert plural(25, MINUTES_RU, "ru") == "минут"
    assert plural(1, {"one": "day", "other": "days"}, "en") == "day"
    assert plural(5, {"one": "day", "other": "days"}, "en") == "days"
    assert plural(5, {"one": "день", "other": "дня"}, "uk") == "дня"  # missing "many"


def test_weekdays() -> None:
    sunday = date(2025, 3, 2)
    assert weekday_name(sunday, "uk") == "неділя"
    assert weekday_name(sunday, "ru", context="stand-alone") == "воскресенье"
    assert weekday_name(sunday, "en") == "Sunday"
    assert weekday_name(sunday, "uk", abbreviated=True) == "нд"
    assert weekday_name(date(2025, 3, 3), "en", abbreviated=True) == "Mon"


def test_day_month_and_clock() -> None:
    day = date(2025, 3, 2)
    assert day_month(day, "uk") == "2 березня"
    assert day_month(day, "ru") == "2 марта"
    assert day_month(day, "en") == "2 March"
    assert day_month(date(2024, 2, 29), "uk") == "29 лютого"
    for lang in ("uk", "ru", "en"):
        assert clock(time(14, 0), lang) == "14:00"  # type: ignore[arg-type]
        assert clock(time(9, 5), lang) == "09:05"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minutes", "lang", "expected"),
    [
        (90, "uk", "1 год 30 хв"),
        (45, "uk", "45 хв"),
        (120, "uk", "2 год"),
        (90, "ru", "1 ч 30 мин"),
        (90, "en", "1 hr 30 mins"),
    ],
)
def test_duration(minutes: int, lang: str, expected: str) -> None:
    assert duration(minutes, lang) == expected  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True)),
    st.sampled_from(["UAH", "EUR", "USD", "XXX", "", "zz"]),
    st.sampled_from(["uk", "ru", "en"]),
)
def test_money_never_raises(amount: float, currency: str, lang: str) -> None:
    assert isinstance(money(amount, currency, lang), str)  # type: ignore[arg-type]
