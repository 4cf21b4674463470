"""Dates the rule reader in bots/nlu.py does not know, read by `dateparser`.

The rules come first: on the phrases clients write to a salon ("наступного вівторка", "next
Tuesday", "12-го", "на вихідних") they are right where dateparser is not (it reads "next
Tuesday" on a Monday as the next day and "the 12th" as December; docs/bot.md has the table).
dateparser then reads what the rules leave: a month named after the day ("березня 15"), a
month alone ("на початку квітня", "in April"). Only a match holding a month name or a count
with its unit is taken, never a bare number, so "на 5" stays a time. It costs about a
millisecond a call, and is called only when the rules found no day and the text has a
letter-and-digit or month-like word in it.
"""

from __future__ import annotations

import calendar
import logging
import re
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

LANGUAGES = ["uk", "ru", "en"]
# A month's name in any of the three languages, any case form: the month alone is a span.
_MONTHS = re.compile(
    r"січ|лют|берез|квіт|трав|черв|лип|серп|верес|жовт|листопад|груд"
    r"|янв|фев|март|апрел|мая|май|июн|июл|август|сентяб|октяб|ноябр|декаб"
    r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)\b"
    r"|january|february|march|april|june|july|august|september|october|november|december",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")


@cache
def _search() -> Any:
    # Imported on first use: dateparser loads its language data then (about 0.1 s).
    from dateparser.search import search_dates

    return search_dates


def read_day(text: str, today: date) -> tuple[date, date] | None:
    """The first and last day `text` names, when dateparser finds a month or a counted span
    in it; None otherwise, and for any error (the bot answers whatever the client typed)."""
    if not _MONTHS.search(text):
        return None
    try:
        found = _search()(
            text[:300],
            languages=LANGUAGES,
            settings={
                "RELATIVE_BASE": datetime.combine(today, datetime.min.time()),
                "PREFER_DATES_FROM": "future",
                "RETURN_AS_TIMEZONE_AWARE": False,
            },
        )
    except Exception:
        log.warning("dateparser failed on a message", exc_info=True)
        return None
    for said, when in found or ():
        if not _MONTHS.search(said):
            continue
        day = when.date()
        if day.year == today.year + 1 and day.month == today.month:
            day = day.replace(year=today.year)  # "in March", said in March: this one
        if _DIGIT.search(said):
            return (day, day) if day >= today else None
        # "in April": the month from today or its first day, to its end.
        last = date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])
        first = max(today, date(day.year, day.month, 1))
        if last < today:
            return None
        return first, min(last, first + timedelta(days=27))
    return None
