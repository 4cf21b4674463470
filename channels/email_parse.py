"""Reading one email: text, quoted history, attachments, robots and bounces.

Everything here is pure (bytes in, a `ParsedMail` out), so the corpus in
tests/fixtures/mail/ tests it without a server. The stdlib `email` package with
`policy.default` decodes encoded-word headers, quoted-printable and base64 bodies and any
charset Python knows (koi8-u, windows-1251, …); a part in an unknown charset falls back to
UTF-8 with replacement characters rather than failing the whole message.

- Text: the text/plain body, or the HTML one turned into text when there is no plain part.
- Cleaning (`strip_reply`): the quoted history ("On … wrote:", "… пише:", "… писал(а):",
  Outlook's "-----Original Message-----" and "From:/Sent:" blocks, in English, Ukrainian and
  Russian), '>' lines, "-- " signatures and "Sent from my iPhone" lines are cut from what the
  bot and the inbox see; the full body stays in `full_text`.
- Robots (`automated_reason`): RFC 3834 Auto-Submitted, Precedence, list headers, the
  X-Autoreply family, mailer-daemon/postmaster senders and an empty Return-Path.
- Bounces (`bounce_of`): an RFC 3464 delivery-status report, or a mailer-daemon message quoting
  one of our own Message-IDs.

`parse_mail` never raises: no single mail may stop a mailbox. Mail as careless or hostile
senders write it is read as far as it can be (channels/email_repair.py): header fields are cut
to a size the `email` package parses quickly, a multipart with a wrong or missing boundary is
read by the one its body uses, a charset that does not fit the bytes gives way to UTF-8, a date
is always aware (or None), and text never carries what a database refuses (NUL). When the
`email` package cannot follow the structure at all (thousands of nested parts), the headers are
read alone and the body flat, and `defect` says so. HTML is read in linear time
(channels/email_html.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr

from channels.email_html import html_fallback, html_lines
from channels.email_repair import (
    bounded_headers,
    clean,
    decoded_words,
    flat_text,
    mail_date,
    raw_header,
    rebounded,
)

MAX_TEXT = 20_000  # InboundMessage.text's limit
MAX_FULL_TEXT = 50_000  # the whole body kept in raw: enough for any real reply chain
MAX_ID = 200  # provider_message_id's limit
MAX_SUBJECT = 1000  # a reply's "Re: <subject>" and the thread's record carry it
SENDER_HEADERS = ("From", "Sender", "Reply-To")
# The Message-IDs we generate: <32 hex>.hub@<our domain>. A bounce that quotes one is ours.
OUR_ID_RE = re.compile(r"<[0-9a-f]{32}\.hub@[^<>\s]+>")
ROBOT_LOCALPARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "maildaemon"})
BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
KEPT_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
)


@dataclass(frozen=True)
class MailPart:
    """An attachment: `index` is its position in `leaves()`, stable for the same bytes."""

    index: int
    name: str | None
    mime_type: str
    size: int


@dataclass(frozen=True)
class Bounce:
    original_message_id: str
    diagnostic: str


@dataclass(frozen=True)
class ParsedMail:
    message_id: str
    sender: str | None  # the From address (else Sender, Reply-To, Return-Path), lower-cased
    display_name: str | None
    subject: str
    sent_at: datetime | None  # aware; None when the Date is absent or unreadable
    in_reply_to: str | None
    references: list[str]
    text: str  # what the bot and the inbox see
    full_text: str  # the whole body, quotes and signature included
    attachments: list[MailPart] = field(default_factory=list)
    automated: str | None = None  # why it is machine mail, or None
    bounce: Bounce | None = None
    headers: dict[str, str] = field(default_factory=dict)
    defect: str | None = None  # what kept the mail from being read whole, or None


# Headers ----------------------------------------------------------------------------------


def header(msg: Message, name: str) -> str:
    """A header as text; a malformed one is kept as its raw characters, never an error."""
    try:
        value = msg.get(name)
    except Exception:  # the policy's parser fails on it (even RecursionError on "((((…")
        value = raw_header(msg, name)
    if value is None:
        return ""
    text = str(value)
    if not hasattr(value, "defects") and "=?" in text:  # unparsed: encoded words still in it
        text = decoded_words(text)
    return clean(" ".join(text.split()))


def message_ids(value: str) -> list[str]:
    """The <id>s of an In-Reply-To or References header, in order."""
    return re.findall(r"<[^<>\s]+>", value)


def normalized_id(value: str) -> str | None:
    ids = message_ids(value)
    found = ids[0] if ids else value.strip()
    if not found:
        return None
    if len(found) > MAX_ID:  # the store's key is bounded: a long one is kept as its hash
        return f"<{hashlib.sha256(found.encode()).hexdigest()[:40]}@long-id.invalid>"
    return found


def synthetic_id(raw: bytes) -> str:
    """A stable Message-ID for a message without one: the same bytes give the same id, so a
    re-scan stores it once."""
    return f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.invalid>"


def _address(msg: Message, name: str) -> tuple[str | None, str | None]:
    try:
        pairs = getaddresses([header(msg, name)])
    except Exception:  # the legacy address parser on a hostile value
        return None, None
    for display, address in pairs:
        if "@" in address:
            return (display.strip() or None), address.strip().lower()
    return None, None


REPLY_PREFIX_RE = re.compile(
    r"^\s*((re|ha|fwd?|aw|відп|вiдп|отв|ответ)\s*(\[\d+\])?\s*:\s*)+", re.I
)


def reply_subject(subject: str) -> str:
    """'Re: <subject>', without stacking 'Re: Re:' (nor 'Re: Відп:' and the like)."""
    base = re.sub(
        r"^\s*((re|ha|fwd?|aw|відп|вiдп|отв|ответ)\s*(\[\d+\])?\s*:\s*)+", "", subject, flags=re.I
    )
    return f"Re: {base.strip()}" if base.strip() else "Re:"


# Body -------------------------------------------------------------------------------------


def part_text(part: Message) -> str:
    """A text part's words: in its charset; else in UTF-8 when the bytes are UTF-8 (text in
    8-bit UTF-8 labelled us-ascii, or a charset name Python doesn't know); else its charset
    (or UTF-8) with replacement characters."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeError):
            continue
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def html_to_text(html: str) -> str:
    return _tidy(html_lines(html)) or html_fallback(html)


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue  # no leading or doubled blank lines
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def body_text(msg: EmailMessage) -> str:
    """The text a person wrote: text/plain, else the HTML part as text."""
    try:
        plain = msg.get_body(preferencelist=("plain",))
        html = None if plain is not None else msg.get_body(preferencelist=("html",))
    except (KeyError, ValueError, AttributeError):
        plain = html = None
    if plain is not None:
        return _tidy(part_text(plain))
    if html is not None:
        return html_to_text(part_text(html))
    if not msg.is_multipart() and msg.get_content_maintype() == "text":
        return _tidy(part_text(msg))
    if msg.is_multipart():
        return ""
    body = msg.get_payload(decode=True)  # a multipart no boundary could split: its body as text
    return _tidy(body.decode("utf-8", "replace")) if isinstance(body, bytes) else ""


# Quotes and signatures --------------------------------------------------------------------

_EMAIL = r"[^\s<>@]+@[^\s<>@]+"
# A line that introduces quoted history (the whole line, after a strip).
QUOTE_HEADER_RES = [
    re.compile(r"^on\b.{0,300}\bwrote:$", re.I),  # Gmail, Apple Mail, Thunderbird (en)
    re.compile(r"^.{0,300}\b(пише|написав|написала|написав\(ла\)):$", re.I),  # uk
    re.compile(r"^.{0,300}\b(писал|писала|писал\(а\)|пишет|написал|написала|написал\(а\)):$", re.I),
    # ru Gmail, Yandex: "пн, 30 нояб. 2026 г. в 10:15, Иван <ivan@x.ru>:" (a date, then the
    # address; a bare "<a@b>:" line, as bounces list recipients, is not one).
    re.compile(rf"^.{{0,300}}\d.{{0,300}}<{_EMAIL}>:$"),
    re.compile(
        r"^-{2,}\s*(original message|исходное сообщение|оригінальне повідомлення|"
        r"вихідне повідомлення|ursprüngliche nachricht)\s*-{2,}$",
        re.I,
    ),
    re.compile(r"^_{20,}$"),  # Outlook on the web puts a rule before its From: block
]
# Outlook's header block: "From:" (or its translation), then "Sent:"/"Date:" within 3 lines.
OUTLOOK_FROM_RE = re.compile(r"^\*?(from|від|від кого|от|от кого|von|de)\s*:\*?\s", re.I)
OUTLOOK_SENT_RE = re.compile(
    r"^\*?(sent|date|надіслано|відправлено|дата|отправлено|gesendet|envoyé)\s*:", re.I
)
SIGNATURE_RES = [
    re.compile(r"^--\s*$"),  # RFC 3676 "-- " (some clients drop the trailing space)
    re.compile(r"^(sent from my|sent from|get outlook for)\s+\S.{0,40}$", re.I),
    re.compile(r"^(надіслано з|відправлено з|надіслано із)\s+\S.{0,40}$", re.I),
    re.compile(r"^(отправлено с|отправлено из|отправлено со)\s+\S.{0,40}$", re.I),
]


# A forward: what follows is the point of the mail, not history to hide.
FORWARD_RE = re.compile(
    r"^(-{2,}\s*(forwarded message|пересланное сообщение|переслане повідомлення|"
    r"пересланий лист)\s*-{2,}|begin forwarded message:|начало переадресованного сообщения:)$",
    re.I,
)


def _quote_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        joined = f"{stripped} {lines[i + 1].strip()}" if i + 1 < len(lines) else stripped
        for pattern in QUOTE_HEADER_RES:
            if pattern.match(stripped):
                return i
            # Gmail wraps a long "On … <a@b>\nwrote:" over two lines.
            if pattern.match(joined) and not stripped.endswith(":"):
                nxt = lines[i + 1].strip()
                if nxt and len(nxt) < 40 and nxt.endswith(":"):
                    return i
        if OUTLOOK_FROM_RE.match(stripped) and any(
            OUTLOOK_SENT_RE.match(following.strip()) for following in lines[i + 1 : i + 4]
        ):
            return i
    return None


def strip_reply(text: str) -> str:
    """What the person wrote this time: quoted history, '>' lines and signature cut. If that
    leaves nothing (a bare forward, a message that is all quote), the text is kept whole."""
    lines = _tidy(text).split("\n")
    start = _quote_start(lines)
    forward = next((i for i, line in enumerate(lines) if FORWARD_RE.match(line.strip())), None)
    if forward is not None and (start is None or forward <= start):
        return _tidy(text)
    if start is not None:
        lines = lines[:start]
    kept: list[str] = []
    for line in lines:
        stripped = line.strip()
        if any(pattern.match(stripped) for pattern in SIGNATURE_RES):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line)
    cleaned = _tidy("\n".join(kept))
    return cleaned or _tidy(text)


# Attachments ------------------------------------------------------------------------------


def leaves(msg: Message) -> Iterator[tuple[int, Message]]:
    """Every non-container part with a stable index (depth first, as `walk` orders them).
    An attached message (message/rfc822) is one leaf: its own parts are not ours to list."""
    counter = 0

    def visit(part: Message) -> Iterator[tuple[int, Message]]:
        nonlocal counter
        if part.get_content_type() == "message/rfc822" or not part.is_multipart():
            counter += 1
            yield counter, part
            return
        for sub in part.get_payload():  # type: ignore[union-attr]
            if isinstance(sub, Message):
                yield from visit(sub)

    if msg.is_multipart():
        for sub in msg.get_payload():  # type: ignore[union-attr]
            if isinstance(sub, Message):
                yield from visit(sub)


NOT_ATTACHMENTS = frozenset(
    {"message/delivery-status", "text/rfc822-headers", "message/disposition-notification"}
)


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, TypeError, IndexError):
        name = None
    return name.strip() or None if name else None


def is_attachment(part: Message, body_parts: set[int]) -> bool:
    if id(part) in body_parts or part.get_content_type() in NOT_ATTACHMENTS:
        return False
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment" or _filename(part):
        return True
    # An inline text part that is not the body (a second text part of a mixed message) is
    # still text the client wrote, not a file; anything else (images, PDFs) is a file.
    return part.get_content_maintype() not in ("text", "multipart")


def leaf_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return inner[0].as_bytes(policy=policy.SMTP)
        return b""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def attachments_of(msg: EmailMessage) -> list[MailPart]:
    body_parts: set[int] = set()
    try:
        for kind in ("plain", "html"):
            found = msg.get_body(preferencelist=(kind,))
            if found is not None:
                body_parts.add(id(found))
    except (KeyError, ValueError, AttributeError):
        pass
    parts = []
    for index, part in leaves(msg):
        if not is_attachment(part, body_parts):
            continue
        name = _filename(part)
        if name is None and part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            subject = header(inner[0], "Subject") if isinstance(inner, list) and inner else ""
            name = f"{subject or 'message'}.eml"
        size = len(leaf_bytes(part))
        parts.append(
            MailPart(index, clean(name) if name else None, clean(part.get_content_type()), size)
        )
    return parts


def find_leaf(raw: bytes, index: int) -> Message | None:
    """The leaf `index` of the mail, read as `parse_mail` reads it (so indexes agree)."""
    try:
        msg, _ = _message(bounded_headers(raw))
        return next((part for i, part in leaves(msg) if i == index), None)
    except Exception:  # a structure the email package cannot follow
        return None


# Robots and bounces -----------------------------------------------------------------------


def automated_reason(msg: Message, sender: str | None) -> str | None:
    """Why this mail was written by a machine (None if a person wrote it)."""
    auto = header(msg, "Auto-Submitted").lower()[:100]
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    precedence = header(msg, "Precedence").lower()
    if precedence in BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("List-Id", "List-Unsubscribe"):
        if name in msg:
            return f"{name} present"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autogenerated"):
        if name in msg:
            return f"{name} present"
    if sender and sender.split("@", 1)[0] in ROBOT_LOCALPARTS:
        return f"sender {sender.split('@', 1)[0]}"
    return_path = header(msg, "Return-Path")
    if "Return-Path" in msg and return_path.strip() in ("<>", ""):
        return "empty Return-Path"
    if _content_type(msg) == "multipart/report":
        return "delivery report"
    return None


def _content_type(msg: Message) -> str:
    try:
        return msg.get_content_type()
    except Exception:  # a Content-Type the policy's parser fails on (RecursionError on "((…")
        return "text/plain"


def _status_fields(report: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (per-message, per-recipient)."""
    payload = report.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        message_from_bytes(chunk.encode(), policy=policy.default) for chunk in text.split("\n\n")
    ]


def _original_id(msg: Message) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                found = normalized_id(header(inner[0], "Message-ID"))
                if found:
                    return found
        elif ctype == "text/rfc822-headers":
            headers = message_from_bytes(part_text(part).encode(), policy=policy.default)
            found = normalized_id(header(headers, "Message-ID"))
            if found:
                return found
    return None


def _quoted_our_id(text: str) -> str | None:
    match = OUR_ID_RE.search(text)
    return match.group(0) if match else None


def bounce_of(msg: EmailMessage, sender: str | None, full_text: str) -> Bounce | None:
    """A permanent delivery failure of a message we sent, with the server's diagnostic."""
    if msg.get_content_type() == "multipart/report":
        if msg.get_param("report-type", header="content-type") != "delivery-status":
            return None
        diagnostic, failed = "", False
        for part in msg.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in _status_fields(part):
                action = header(block, "Action").lower()
                status = header(block, "Status")
                if action == "failed" or status.startswith("5"):
                    failed = True
                    code = header(block, "Diagnostic-Code")
                    code = code.split(";", 1)[1].strip() if ";" in code else code
                    diagnostic = diagnostic or code or f"status {status}"
        original = _original_id(msg) or _quoted_our_id(full_text)
        if failed and original:
            return Bounce(original, diagnostic or "delivery failed")
        return None
    robot = sender is not None and sender.split("@", 1)[0] in ROBOT_LOCALPARTS
    if robot:
        original = _quoted_our_id(msg.as_string()) if not full_text else _quoted_our_id(full_text)
        original = original or _quoted_our_id(msg.as_string())
        if original:
            return Bounce(original, _diagnostic_line(full_text))
    return None


def _diagnostic_line(text: str) -> str:
    for line in text.split("\n"):
        if re.search(r"\b5\d\d\b|\b5\.\d{1,3}\.\d{1,3}\b", line):
            return line.strip()[:500]
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    return first[:500] or "delivery failed"


# The whole message ------------------------------------------------------------------------


def parse_mail(raw: bytes, *, zone: tzinfo = UTC) -> ParsedMail:
    """Read one mail; never raises. `zone` is the salon's: a Date without one is read in it."""
    bounded = bounded_headers(raw)
    try:
        msg, defect = _message(bounded)
        full = body_text(msg)
        attachments = attachments_of(msg)
    except Exception as exc:  # RecursionError on thousands of nested parts, or a bug
        msg = _headers_only(bounded)
        defect = f"a structure the email package cannot follow ({type(exc).__name__})"
        full, attachments = _tidy(flat_text(bounded)), []
    display, sender = _sender(msg)
    automated = automated_reason(msg, sender)
    try:
        bounce = bounce_of(msg, sender, full) if automated else None
    except Exception:  # a report too broken to name what it reports: a robot's mail all the same
        bounce = None
    if bounce is not None:
        bounce = Bounce(clean(bounce.original_message_id), clean(bounce.diagnostic))
    references = [i for i in message_ids(header(msg, "References")) if len(i) <= MAX_ID]
    return ParsedMail(
        message_id=normalized_id(header(msg, "Message-ID")) or synthetic_id(raw),
        sender=sender,
        display_name=display,
        subject=header(msg, "Subject")[:MAX_SUBJECT],
        # As written: the policy's own reading turns a date without a zone into "-0000".
        sent_at=mail_date(" ".join((raw_header(msg, "Date") or "").split()), zone),
        in_reply_to=normalized_id(header(msg, "In-Reply-To")),
        references=references,
        text=clean(strip_reply(full[:MAX_FULL_TEXT])[:MAX_TEXT]),
        full_text=clean(full[:MAX_FULL_TEXT]),
        attachments=attachments,
        automated=automated,
        bounce=bounce,
        headers={name: header(msg, name)[:1000] for name in KEPT_HEADERS if name in msg},
        defect=defect,
    )


def _message(raw: bytes) -> tuple[EmailMessage, str | None]:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)  # policy.default builds EmailMessage
    return rebounded(msg)


def _headers_only(raw: bytes) -> Message:
    """The headers alone; with plain-string headers (compat32) when the policy's parser fails
    on one even then (a Content-Type of "((((…" fails as the parser closes the message)."""
    try:
        return BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    except Exception:
        return BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)


def _sender(msg: Message) -> tuple[str | None, str | None]:
    """(display name, address): From, else Sender, Reply-To, the envelope's Return-Path."""
    for name in SENDER_HEADERS:
        display, sender = _address(msg, name)
        if sender is not None:
            return display, sender
    try:
        _, return_path = parseaddr(header(msg, "Return-Path"))
    except Exception:
        return None, None
    return None, (return_path.lower() or None if "@" in return_path else None)
