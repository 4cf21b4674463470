"""Mail as careless or hostile senders write it, made readable: headers cut to a size the
`email` package parses quickly, a multipart read by the boundary its body really uses, dates
made aware, text made storable. Pure functions, used by channels/email_parse.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from email import errors, message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime

# The `email` package parses a header field in time worse than linear in its length (a 400 KB
# Subject of encoded words: 26 s; a 400 KB address list: 12 s). No real field comes near these
# (RFC 5322 lines stop at 998 characters; a long References is a few KB), so longer ones are
# cut before parsing, and a header block past Postfix's header_size_limit (100 KB) loses the
# fields beyond it, as Postfix does.
MAX_HEADER_FIELD = 8 * 1024
MAX_HEADER_BLOCK = 100 * 1024
HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
# A boundary delimiter line (RFC 2046 §5.1.1: up to 70 of these characters after "--").
BOUNDARY_LINE_RE = re.compile(rb"^--([0-9A-Za-z'()+_,./:=?-]{1,70})[ \t]*\r?$", re.M)
# What structure leaves in a body read flat: delimiter lines and part headers.
MIME_LINE_RE = re.compile(r"^(--\S*|content-[a-z-]+:.*|mime-version:.*)$", re.I)
MISSING_BOUNDARY = (errors.StartBoundaryNotFoundDefect, errors.NoBoundaryInMultipartDefect)
# "-0000" (RFC 5322 §3.3) and the obsolete military zones, which §4.3 says to read as
# "-0000", mean "this is UTC; the sender's own zone is unknown".
UTC_UNKNOWN_RE = re.compile(r"(-0000|\b[A-IK-Za-ik-z])\s*(\([^()]*\))?\s*$")


def bounded_headers(raw: bytes) -> bytes:
    """`raw` with each header field cut to MAX_HEADER_FIELD bytes and the header block to
    MAX_HEADER_BLOCK; the body untouched."""
    end = HEADER_END_RE.search(raw)
    head, body = (raw[: end.start()], raw[end.start() :]) if end else (raw, b"")
    if len(head) <= MAX_HEADER_FIELD:
        return raw  # nothing can be too long
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line  # a folded continuation
        else:
            fields.append(line)
    kept, size = [], 0
    for field in fields:
        if len(field) > MAX_HEADER_FIELD:
            field = field[:MAX_HEADER_FIELD].rstrip(b"\r\n") + b"\r\n"
        size += len(field)
        if size > MAX_HEADER_BLOCK:
            break
        kept.append(field)
    return b"".join(kept).rstrip(b"\r\n") + body


def mail_date(value: str, zone: tzinfo) -> datetime | None:
    """The Date header as an aware datetime; None when absent or unreadable.

    `parsedate_to_datetime` gives a naive time for "-0000" (what `email.utils.formatdate()`
    writes), for a military zone, and for a date with no zone or an unknown zone name. The
    first two are UTC by RFC 5322. The others are read in the salon's zone: a sender that
    leaves the zone out (or names one nobody knows, "EET", "MSK") writes its own wall
    clock, and a salon's clients live where the salon is; UTC would be off by its offset."""
    if not value:
        return None
    try:
        found = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if found.tzinfo is not None:
        return found
    return found.replace(tzinfo=UTC if UTC_UNKNOWN_RE.search(value) else zone)


def clean(text: str) -> str:
    """Text every store takes: no NUL (PostgreSQL refuses it in text and JSON) and no lone
    surrogate (not encodable as UTF-8: pydantic and the JSON on the bus refuse it)."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def rebounded(msg: EmailMessage) -> tuple[EmailMessage, str | None]:
    """A multipart whose body does not use the boundary its Content-Type names (a mailer cut
    it short), or that names none (a script wrote `boundary=` on a line of its own), read
    again by the first delimiter line of its body. Returns the message and what was wrong."""
    if msg.get_content_maintype() != "multipart":
        return msg, None
    if not any(isinstance(defect, MISSING_BOUNDARY) for defect in msg.defects):
        return msg, None
    body = msg.get_payload(decode=True)  # the body's bytes: no part was split off
    found = BOUNDARY_LINE_RE.search(body) if isinstance(body, bytes) else None
    if found is None or found.group(1).endswith(b"--"):
        return msg, "a multipart without its boundary"
    boundary = found.group(1).decode("ascii")
    # Written back as the bytes they were (the parser keeps 8-bit bytes as surrogates).
    head = b"".join(
        f"{name}: {value}\r\n".encode("ascii", "surrogateescape")
        for name, value in msg.raw_items()
        if name.lower() != "content-type"
    )
    head += f'Content-Type: {msg.get_content_type()}; boundary="{boundary}"\r\n'.encode()
    reread = message_from_bytes(head + b"\r\n" + body, policy=policy.default)
    assert isinstance(reread, EmailMessage)  # policy.default builds EmailMessage
    if not reread.is_multipart() or not reread.get_payload():
        return msg, "a multipart without its boundary"
    return reread, "a multipart whose body used another boundary"


def flat_text(raw: bytes) -> str:
    """The body of `raw` read as text, MIME delimiters and part headers dropped: what is left
    of a mail whose structure no parser can follow."""
    end = HEADER_END_RE.search(raw)
    body = raw[end.end() :] if end else b""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n")
    return "\n".join(line for line in text.split("\n") if not MIME_LINE_RE.match(line.strip()))


def raw_header(msg: Message, name: str) -> str | None:
    """A header's value as written, unparsed: for a value the policy's parser fails on."""
    wanted = name.lower()
    return next((str(v) for k, v in msg.raw_items() if k.lower() == wanted), None)


def decoded_words(value: str) -> str:
    """An unparsed header with its RFC 2047 encoded words decoded, as far as they can be."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # an unknown charset, a broken word: the value as written
        return value
