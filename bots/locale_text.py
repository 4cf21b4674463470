"""Money, plurals, weekdays, dates, clock times and durations in the bot's languages, via babel.

Pure functions over CLDR data. Language codes are the bot's ("uk", "en", "ru"); English is
formatted as en_GB because the salon is in Kyiv: day before month ("2 March") and a 24-hour
clock ("14:00"), as the Ukrainian and Russian replies write them, so a time means the same
in every language. Anything babel cannot make from an unexpected value falls back to plain
text instead of raising: a reply must still go out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from functools import cache
from typing import Literal

from babel import Locale
from babel.dates import format_date, format_time, get_day_names
from babel.numbers import format_currency, format_decimal
from babel.units import format_unit

from prompts import load_json

__all__ = ["Language", "clock", "day_month", "duration", "money", "plural", "weekday_name"]

Language = Literal["uk", "en", "ru"]
Context = Literal["format", "stand-alone"]

# en_GB: see the module docstring. ru_UA and uk_UA differ from ru/uk only in ways that do
# not matter here, so the plain locales are used.
_LOCALES: dict[str, str] = {"uk": "uk", "ru": "ru", "en": "en_GB"}
_NBSP = "\xa0"
NARROW_NBSP = "\u202f"


@cache
def _locale(lang: str) -> Locale:
    return Locale.parse(_LOCALES.get(lang, "uk"))


@cache
def _currency_words() -> dict[str, dict[str, str]]:
    table = load_json("language/currency.json")
    return {code: words for code, words in table.items() if not code.startswith("_")}


def _is_whole(amount: float | int) -> bool:
    return float(amount).is_integer()


@cache
def _currency_pattern(lang: str, whole: bool) -> str:
    pattern = _locale(lang).currency_formats["standard"].pattern.split(";")[0]
    # A price list shows "750 грн", not "750,00 грн": whole amounts drop CLDR's fraction.
    return pattern.replace(".00", "") if whole else pattern


def money(amount: float | int, currency: str, lang: Language) -> str:
    """A price as a salon writes it: "750 грн" (uk, ru), "750 UAH" (en), "€50" / "50 €".

    UAH is written with the word from prompts/language/currency.json after the amount, in
    every language: English clients of a Kyiv salon read "UAH" on price
    tags, and babel's English "UAH750.00" glues the code to the number. Other currencies
    follow babel's pattern and symbol for the locale (uk's CLDR writes "50 EUR", not "€").
    """
    code = (currency or "").upper()
    try:
        value = float(amount)
        if value != value or value in (float("inf"), float("-inf")):
            return f"{amount} {code}".strip()
        whole = _is_whole(value)
        shown: float | int = int(value) if whole else value
        word = _currency_words().get(code, {}).get(lang)
        if word:
            # Chat, not print: plain spaces (what a client types back and searches for), and
            # no group separator under 10 000 ("3500 грн", as salons write it in chats; CLDR's
            # minimum-grouping-digits rule of pl and es does the same).
            grouping = "#,##0" if abs(value) >= 10_000 else "0"
            number = format_decimal(
                shown, format=grouping if whole else grouping + ".00", locale=_locale(lang)
            )
            return f"{number.replace(_NBSP, ' ').replace(NARROW_NBSP, ' ')} {word}"
        return format_currency(
            shown,
            code,
            format=_currency_pattern(lang, whole),
            currency_digits=False,
            locale=_locale(lang),
        )
    except (ValueError, TypeError, OverflowError, ArithmeticError):
        return f"{amount} {code}".strip()


_PLURAL_FALLBACK = ("other", "many", "few", "one")


def plural(n: int, forms: Mapping[str, str], lang: Language) -> str:
    """The form of a word for n by the language's CLDR rule: 1 день, 2 дні, 5 днів, 21 день.

    `forms` maps CLDR categories ("one", "few", "many", "other") to words; a category the
    caller left out falls back to "other", then "many", so English can pass one/other only.
    """
    category = _plural_category(abs(int(n)), lang)
    if category in forms:
        return forms[category]
    for key in _PLURAL_FALLBACK:
        if key in forms:
            return forms[key]
    return next(iter(forms.values()), "")


@cache
def _plural_category(n: int, lang: str) -> str:
    return _locale(lang).plural_form(n)


def weekday_name(
    day: date, lang: Language, *, context: Context = "format", abbreviated: bool = False
) -> str:
    """The weekday's name: "format" is the form inside a date, "stand-alone" the one on its own.

    In uk, ru and en the two contexts give the same words today; asking for the right one
    keeps us correct if CLDR starts to tell them apart (it does for months).
    """
    return _day_names(lang, context, abbreviated)[day.weekday()]


@cache
def _day_names(lang: str, context: str, abbreviated: bool) -> tuple[str, ...]:
    width = "abbreviated" if abbreviated else "wide"
    names = get_day_names(width, context, _locale(lang))
    return tuple(str(names[i]) for i in range(7))


def day_month(day: date, lang: Language) -> str:
    """Day and month without the year: "2 березня", "2 марта", "2 March"."""
    return _day_month(day.day, day.month, lang)


@cache
def _day_month(dd: int, mm: int, lang: str) -> str:
    # Any leap year carries every day, 29 February included.
    return format_date(date(2024, mm, dd), "d MMMM", locale=_locale(lang))


def clock(t: time, lang: Language) -> str:
    """A time of day on the 24-hour clock, "14:00", in every language (en is en_GB)."""
    return _clock(t.hour, t.minute, lang)


@cache
def _clock(hour: int, minute: int, lang: str) -> str:
    return format_time(time(hour, minute), "short", locale=_locale(lang))


def duration(minutes: int, lang: Language) -> str:
    """A service's length for a price list line: "45 хв", "1 год 30 хв", "2 год", "1 hr 30 mins".

    Hours and minutes in CLDR's short units, joined by a space: babel's format_timedelta
    rounds 90 minutes to "2 години", and its list pattern says "1 год і 30 хв", neither of
    which a price list says.
    """
    return _duration(max(0, int(minutes)), lang)


@cache
def _duration(minutes: int, lang: str) -> str:
    hours, rest = divmod(minutes, 60)
    loc = _locale(lang)
    parts = []
    if hours:
        parts.append(format_unit(hours, "duration-hour", length="short", locale=loc))
    if rest or not hours:
        parts.append(format_unit(rest, "duration-minute", length="short", locale=loc))
    return " ".join(parts)
