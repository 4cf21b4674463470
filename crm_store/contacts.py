"""Normalising what identifies a person: phone numbers to E.164, emails to lower case."""

from __future__ import annotations

import phonenumbers


def normalize_phone(raw: str | None, region: str = "UA") -> str | None:
    """E.164 for a valid number, None for anything that is not one."""
    if not raw or not raw.strip():
        return None
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str | None) -> str | None:
    if not raw:
        return None
    text = raw.strip().lower()
    local, sep, domain = text.partition("@")
    if not sep or not local or "." not in domain or " " in text:
        return None
    return text
