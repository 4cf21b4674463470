"""Client import from other systems' exports: CSV and XLSX files of client cards.

The file is read and every row checked before anything is written (`load_clients_file`);
then one transaction matches the rows to existing cards by phone or email, updates those and
inserts the rest in bulk (`run_import`). A row either creates a card, updates one, is
rejected with a reason, or is skipped (empty). The file is read by crm_store.import_csv and
crm_store.import_xlsx, within the bounds of crm_store.import_source. See docs/import.md.
"""

from __future__ import annotations

import csv
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

import phonenumbers
from openpyxl.utils.datetime import from_excel
from sqlalchemy import Table, func, insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.clients import union_tags
from crm_store.contacts import normalize_email, normalize_phone
from crm_store.csv_cells import spreadsheet_safe
from crm_store.db import transaction
from crm_store.import_csv import read_csv_rows
from crm_store.import_source import (
    CSV_SUFFIXES,
    MAX_FILE_BYTES,
    XLSX_SUFFIXES,
    ClientImportError,
    SourceTable,
    blank_row,
    cell_text,
    megabytes,
    trim_trailing_empty,
)
from crm_store.import_xlsx import read_xlsx_rows
from crm_store.models import AuditEntry, Client
from crm_store.timeutil import aware, utcnow

FIELDS = ("name", "first_name", "last_name", "phone", "email", "notes", "last_visit", "tags")

Outcome = Literal["created", "updated", "rejected", "skipped"]
# Called as progress(stage, done, total) while rows are checked and while cards are saved.
Progress = Callable[[str, int, int], None]

HEADER_SEARCH_ROWS = 10  # a title or a blank line or two may sit above the header
CONTENT_SAMPLE_ROWS = 200
CONTENT_MIN_SHARE = 0.6
LOOKUP_CHUNK = 1_000
WRITE_CHUNK = 1_000
NAME_MAX = 200  # the width of clients.name: PostgreSQL refuses longer values
EMAIL_MAX = 320

T = TypeVar("T")
_CLIENTS: Table = Client.__table__  # type: ignore[attr-defined]


# Reading ---------------------------------------------------------------------------------


def read_table(path: Path, *, sheet: str | None = None) -> SourceTable:
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + XLSX_SUFFIXES:
        hint = " (save it from Excel as .xlsx)" if suffix == ".xls" else ""
        raise ClientImportError(
            f"{path.name}: can't import a {suffix or 'file without an extension'}{hint}; "
            "use a .csv or .xlsx file"
        )
    if not path.is_file():
        raise ClientImportError(f"{path}: no such file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ClientImportError(f"{path}: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise ClientImportError(
            f"{path.name}: the file is {megabytes(size)}; a file may be at most "
            f"{megabytes(MAX_FILE_BYTES)} (split it)"
        )
    if suffix in CSV_SUFFIXES:
        if sheet is not None:
            raise ClientImportError("--sheet is for .xlsx files; a CSV file has one table")
        rows = read_csv_rows(path)
        return SourceTable(path.name, "csv", trim_trailing_empty(rows))
    return SourceTable(path.name, "xlsx", trim_trailing_empty(read_xlsx_rows(path, sheet)))


# Finding the columns ---------------------------------------------------------------------

# Header spellings seen in exports, compared after normalize_header. "given" is "Ім'я" /
# "Имя" / "Name": the full name, or the first name when there is a surname column beside it.
_ALIASES: dict[str, str] = {
    "name": (
        "ПІБ | П.І.Б. | Клієнт | Клієнтка | Ім'я клієнта | Ім'я та прізвище | Прізвище та ім'я"
        " | Прізвище ім'я | Прізвище, ім'я, по батькові | Повне ім'я | ФИО | Ф.И.О. | Клиент"
        " | Имя клиента | Имя и фамилия | Фамилия и имя | Фамилия имя | Фамилия, имя, отчество"
        " | Полное имя | Full name | Client | Client name | Customer | Customer name"
        " | Contact name | Display name"
    ),
    "given": "Ім'я | Имя | Name",
    "first_name": "First name | Given name | Forename",
    "last_name": "Прізвище | Фамилия | Last name | Surname | Family name",
    "phone": (
        "Телефон | Тел. | Телефони | Телефоны | Мобільний | Мобільний телефон | Моб."
        " | Моб. телефон | Мобильный | Мобильный телефон | Номер телефону | Номер телефона"
        " | Контактний телефон | Контактный телефон | Phone | Phones | Phone number | Mobile"
        " | Mobile phone | Mobile number | Cell | Cell phone | Tel. | Telephone | Contact phone"
    ),
    "email": (
        "E-mail | Email | Пошта | Почта | Ел. пошта | Електронна пошта | Е-мейл | Емейл | Імейл"
        " | Эл. почта | Электронная почта | Имейл | E-mail адреса | E-mail адрес"
        " | Email address | Mail"
    ),
    "notes": (
        "Примітки | Примітка | Коментар | Коментарі | Нотатки | Нотатка | Комментарий"
        " | Комментарии | Примечание | Примечания | Заметки | Notes | Note | Comment | Comments"
        " | Remarks"
    ),
    "last_visit": (
        "Останній візит | Дата останнього візиту | Останнє відвідування | Последний визит"
        " | Дата последнего визита | Последнее посещение | Last visit | Last visit date"
        " | Last appointment"
    ),
    "tags": "Теги | Тег | Мітки | Мітка | Метки | Метка | Tags | Tag | Labels",
}
# Second chance for headers such as "Телефон клієнта" or "Client e-mail".
_CONTAINS = {"phone": ("телефон", "phone", "mobile"), "email": ("email",)}


def normalize_header(text: str) -> str:
    """Case, spaces, punctuation and apostrophes (', ’, ʼ) don't matter in a header."""
    folded = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    return "".join(ch for ch in folded if ch.isalnum())


_KIND_BY_HEADER = {
    normalize_header(alias): kind
    for kind, aliases in _ALIASES.items()
    for alias in aliases.split(" | ")
}


def header_kind(text: str) -> str | None:
    key = normalize_header(text)
    if not key:
        return None
    if key in _KIND_BY_HEADER:
        return _KIND_BY_HEADER[key]
    for kind, parts in _CONTAINS.items():
        if any(part in key for part in parts):
            return kind
    return None


@dataclass(frozen=True)
class Layout:
    """Where each field is: `columns` maps a field to its 0-based column."""

    header_row: int | None  # 0-based index into the rows; None when the file has no header
    columns: dict[str, int]
    header: list[str]

    @property
    def width(self) -> int:
        """How many fields the header has: a CSV row with more is broken."""
        return len(self.header)

    def label(self, field_name: str) -> str:
        index = self.columns[field_name]
        text = self.header[index] if index < len(self.header) else ""
        return f'"{text}"' if text else f"column {index + 1}"


def parse_mapping(specs: Sequence[str]) -> dict[str, str]:
    """`--map field=Column` options as {field: column}."""
    mapping: dict[str, str] = {}
    for spec in specs:
        name, sep, column = spec.partition("=")
        name, column = name.strip().lower().replace("-", "_"), column.strip()
        if not sep or not column:
            raise ClientImportError(f"--map {spec!r}: write it as FIELD=COLUMN, e.g. phone=Тел.")
        if name not in FIELDS:
            raise ClientImportError(
                f"--map {spec!r}: unknown field {name!r}; the fields: {', '.join(FIELDS)}"
            )
        mapping[name] = column
    return mapping


def detect_layout(
    table: SourceTable, mapping: Mapping[str, str] | None = None, *, region: str = "UA"
) -> Layout:
    mapping = dict(mapping or {})
    header_row = _find_header(table.rows, [c for c in mapping.values() if not c.isdigit()])
    header = _header_cells(table.rows[header_row]) if header_row is not None else []
    columns = _columns_from_header(header)
    _apply_mapping(columns, mapping, header, table)
    first_data = header_row + 1 if header_row is not None else 0
    _detect_by_content(columns, table.rows[first_data:], region, headerless=header_row is None)
    if "phone" not in columns and "email" not in columns:
        listed = ", ".join(f'"{h}"' for h in header if h)
        raise ClientImportError(
            f"{table.name}: found no phone or email column"
            + (f" among {listed}" if listed else "")
            + "; name one with --map phone=COLUMN or --map email=COLUMN"
        )
    if header_row is None:
        header_row = _unrecognised_header(table.rows, columns, region)
        header = _header_cells(table.rows[header_row]) if header_row is not None else []
    return Layout(header_row, columns, header)


def _header_cells(row: Sequence[Any]) -> list[str]:
    cells = [cell_text(v) for v in row]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _table_width(rows: Sequence[Sequence[Any]]) -> int:
    return max((len(_header_cells(row)) for row in rows), default=0)


def _find_header(rows: Sequence[Sequence[Any]], mapped_names: Sequence[str]) -> int | None:
    """The row among the first non-empty ones with the most known headers (or all the
    column names given to --map)."""
    wanted = {normalize_header(n) for n in mapped_names}
    best: tuple[bool, int] = (False, 0)
    found: int | None = None
    seen = 0
    for index, row in enumerate(rows):
        if seen == HEADER_SEARCH_ROWS:
            break
        cells = [cell_text(v) for v in row]
        if not any(cells):
            continue
        seen += 1
        keys = {normalize_header(c) for c in cells}
        score = (bool(wanted) and wanted <= keys, sum(header_kind(c) is not None for c in cells))
        if score > best:
            best, found = score, index
    return found


def _columns_from_header(header: Sequence[str]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for index, text in enumerate(header):
        kind = header_kind(text)
        if kind is not None and kind not in kinds:
            kinds[kind] = index
    given = kinds.pop("given", None)
    if given is not None:
        if "name" not in kinds and "last_name" in kinds and "first_name" not in kinds:
            kinds["first_name"] = given
        elif "name" not in kinds:
            kinds["name"] = given
    if "name" in kinds:
        # A full name column says it best; first/last beside it are the same thing again.
        kinds.pop("first_name", None)
        kinds.pop("last_name", None)
    return kinds


def _apply_mapping(
    columns: dict[str, int], mapping: Mapping[str, str], header: Sequence[str], table: SourceTable
) -> None:
    for field_name, spec in mapping.items():
        index = _resolve_column(spec, header, table)
        for other in [f for f, i in columns.items() if i == index and f not in mapping]:
            del columns[other]
        columns[field_name] = index
    if "name" in mapping:
        for part in ("first_name", "last_name"):
            if part not in mapping:
                columns.pop(part, None)
    elif "first_name" in mapping or "last_name" in mapping:
        columns.pop("name", None)


def _resolve_column(spec: str, header: Sequence[str], table: SourceTable) -> int:
    if spec.isdigit():
        number = int(spec)
        width = _table_width(table.rows)
        if not 1 <= number <= width:
            raise ClientImportError(
                f"--map: there is no column {number} in {table.name} (it has {width} columns)"
            )
        return number - 1
    for exact in (True, False):
        for index, text in enumerate(header):
            if (text == spec) if exact else (normalize_header(text) == normalize_header(spec)):
                return index
    listed = ", ".join(f'"{h}"' for h in header if h) or "no header row"
    raise ClientImportError(f'--map: no column "{spec}" in {table.name} (its columns: {listed})')


def _detect_by_content(
    columns: dict[str, int], rows: Sequence[Sequence[Any]], region: str, *, headerless: bool
) -> None:
    """Find the phone and email columns by what is in them when the header didn't say."""
    sample = [row for row in rows if not blank_row(row)][: CONTENT_SAMPLE_ROWS + 1]
    if headerless and len(sample) > 1:
        # Without a known header the first row may still be one, in words we don't know:
        # judging by it would make a small file's columns look half wrong.
        sample = sample[1:]
    tests: list[tuple[str, Callable[[str], bool]]] = [
        ("phone", lambda v: bool(_phones(v, region)[0])),
        ("email", lambda v: bool(_emails(v)[0])),
    ]
    if headerless and not {"name", "first_name", "last_name"} & columns.keys():
        tests.append(("name", _looks_like_name))
    for field_name, test in tests:
        if field_name not in columns:
            index = _best_column(sample, set(columns.values()), test)
            if index is not None:
                columns[field_name] = index


def _best_column(
    rows: Sequence[Sequence[Any]], taken: set[int], test: Callable[[str], bool]
) -> int | None:
    width = max((len(r) for r in rows), default=0)
    best, best_hits = None, 0
    for index in range(width):
        if index in taken:
            continue
        values = [cell_text(r[index]) for r in rows if index < len(r) and cell_text(r[index])]
        hits = sum(test(v) for v in values)
        if values and hits / len(values) >= CONTENT_MIN_SHARE and hits > best_hits:
            best, best_hits = index, hits
    return best


def _looks_like_name(value: str) -> bool:
    words = value.split()
    return 0 < len(words) <= 5 and all(ch.isalpha() or ch in " '’ʼ.-" for ch in value)


def _unrecognised_header(
    rows: Sequence[Sequence[Any]], columns: Mapping[str, int], region: str
) -> int | None:
    """A first row whose phone and email cells hold no phone or email is a header in words
    we don't know ("Nome", "Telefono"), not a client."""
    first = next((i for i, row in enumerate(rows) if not blank_row(row)), None)
    if first is None:
        return None
    row = rows[first]
    phone = cell_text(_cell(row, columns.get("phone")))
    email = cell_text(_cell(row, columns.get("email")))
    if (phone or email) and not _phones(phone, region)[0] and not _emails(email)[0]:
        return first
    return None


def _cell(row: Sequence[Any], index: int | None) -> Any:
    return row[index] if index is not None and index < len(row) else None


# Checking the rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientRow:
    """One row's client, normalised."""

    row: int
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    notes: str = ""
    last_visit: datetime | None = None
    tags: tuple[str, ...] = ()
    # More valid contacts than a card holds (a cell "067…, 050…"): they go to the notes.
    other_phones: tuple[str, ...] = ()
    other_emails: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowOutcome:
    row: int
    outcome: Outcome
    client_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class ImportPlan:
    """A file read and checked: the clients to import, and the rows already settled."""

    source: str
    columns: dict[str, str]  # field -> the column it comes from, as people call it
    rows: list[ClientRow]
    settled: list[RowOutcome]  # rejected and skipped rows


def load_clients_file(
    path: Path,
    *,
    sheet: str | None = None,
    mapping: Mapping[str, str] | None = None,
    region: str = "UA",
    tz: tzinfo = UTC,
    progress: Progress | None = None,
) -> ImportPlan:
    """Read, find the columns and check every row; touches no database."""
    check_region(region)
    table = read_table(path, sheet=sheet)
    if not table.rows:
        raise ClientImportError(f"{table.name}: the file is empty")
    layout = detect_layout(table, mapping, region=region)
    return check_rows(table, layout, region=region, tz=tz, progress=progress)


def check_region(region: str) -> None:
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ClientImportError(
            f"unknown region {region!r}: use a two-letter country code such as UA, PL, GB"
        )


def check_rows(
    table: SourceTable,
    layout: Layout,
    *,
    region: str = "UA",
    tz: tzinfo = UTC,
    progress: Progress | None = None,
) -> ImportPlan:
    rows: list[ClientRow] = []
    settled: list[RowOutcome] = []
    total = len(table.rows)
    step = max(1, total // 100)
    for index, cells in enumerate(table.rows):
        if index != layout.header_row:
            result = _check_row(table, layout, index, cells, region, tz)
            (rows if isinstance(result, ClientRow) else settled).append(result)
        if progress is not None and ((index + 1) % step == 0 or index + 1 == total):
            progress("reading", index + 1, total)
    columns = {f: layout.label(f) for f in FIELDS if f in layout.columns}
    return ImportPlan(table.name, columns, rows, settled)


def _check_row(
    table: SourceTable,
    layout: Layout,
    index: int,
    cells: Sequence[Any],
    region: str,
    tz: tzinfo,
) -> ClientRow | RowOutcome:
    number = index + 1
    if blank_row(cells):
        return RowOutcome(number, "skipped", reason="empty row")
    if layout.header_row is not None and index < layout.header_row:
        return RowOutcome(number, "skipped", reason="above the header row")
    fields = len(_header_cells(cells))
    if table.kind == "csv" and layout.header_row is not None and fields > layout.width:
        return RowOutcome(
            number, "rejected", reason=f"row has {fields} fields, the header {layout.width}"
        )
    values = {f: _cell(cells, i) for f, i in layout.columns.items()}
    if all(not cell_text(v) for v in values.values()):
        return RowOutcome(number, "skipped", reason="empty row")
    return parse_client(number, values, region=region, tz=tz)


def parse_client(
    number: int, values: Mapping[str, Any], *, region: str = "UA", tz: tzinfo = UTC
) -> ClientRow | RowOutcome:
    """One row's cells by field (name, phone, …) as a client, or the reason it can't be one."""
    phone_text = cell_text(values.get("phone"))
    email_text = cell_text(values.get("email"))
    phones, bad_phone = _phones(phone_text, region)
    emails, bad_email = _emails(email_text)
    problems = []
    if bad_phone:
        problems.append(f"phone {phone_text!r} is not a valid number")
    if bad_email:
        problems.append(f"email {email_text!r} is not a valid address")
    if not phones and not emails:
        reason = "; ".join(problems) or "no phone and no email"
        return RowOutcome(number, "rejected", reason=reason)
    warnings = [f"{p}: ignored" for p in problems]
    visit_text = values.get("last_visit")
    last_visit = parse_visit(visit_text, tz)
    if last_visit is None and cell_text(visit_text):
        warnings.append(f"last visit {cell_text(visit_text)!r} is not a date: ignored")
    name = _name(values)
    if name and len(name) > NAME_MAX:
        warnings.append(f"the name is longer than {NAME_MAX} characters: cut")
        name = name[:NAME_MAX].rstrip()
    return ClientRow(
        row=number,
        name=name,
        phone=phones[0] if phones else None,
        email=emails[0] if emails else None,
        notes=_notes(values.get("notes")),
        last_visit=last_visit,
        tags=split_tags(cell_text(values.get("tags"))),
        other_phones=tuple(phones[1:]),
        other_emails=tuple(emails[1:]),
        warnings=tuple(warnings),
    )


def _name(values: Mapping[str, Any]) -> str | None:
    full = " ".join(cell_text(values.get("name")).split())
    if full:
        return full
    parts = [" ".join(cell_text(values.get(f)).split()) for f in ("first_name", "last_name")]
    return " ".join(p for p in parts if p) or None


def _notes(value: Any) -> str:
    return "\n".join(line.rstrip() for line in cell_text(value).splitlines()).strip()


_OLD_UA_TRUNK = re.compile(r"80\d{9}")


def normalize_import_phone(raw: str, region: str = "UA") -> str | None:
    """normalize_phone, plus the old Ukrainian long-distance "8 0XX…" still found in
    client lists kept since the 2000s."""
    phone = normalize_phone(raw, region)
    if phone is None and region == "UA":
        digits = re.sub(r"\D", "", raw)
        if _OLD_UA_TRUNK.fullmatch(digits):
            phone = normalize_phone(digits[1:], region)
    return phone


def _phones(text: str, region: str) -> tuple[list[str], bool]:
    """The valid numbers in a cell, and whether it held something that isn't one."""
    found: list[str] = []
    invalid = False
    for part in re.split(r"[,;/\n]+", text):
        if not part.strip():
            continue
        phone = normalize_import_phone(part, region)
        if phone is None:
            invalid = True
        elif phone not in found:
            found.append(phone)
    return found, invalid and not found


def _emails(text: str) -> tuple[list[str], bool]:
    found: list[str] = []
    invalid = False
    for part in re.split(r"[,;\s]+", text):
        if not part:
            continue
        email = normalize_email(part)
        if email is None or len(email) > EMAIL_MAX:
            invalid = True
        elif email not in found:
            found.append(email)
    return found, invalid and not found


def split_tags(text: str) -> tuple[str, ...]:
    """Tags split on , ; |, trimmed, the first spelling of each kept (VIP and vip are one)."""
    return union_tags((), re.split(r"[,;|]", text))


_DMY = re.compile(
    r"(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?"
)
_EXCEL_SERIAL = re.compile(r"\d{5}(?:\.\d+)?")


def parse_visit(value: Any, tz: tzinfo = UTC) -> datetime | None:
    """A last-visit cell as an aware UTC datetime; a date or a time without a zone is the
    salon's local time (a bare date: local midnight). None when it is not a date."""
    local = _local_datetime(value)
    if local is None:
        return None
    if local.tzinfo is None:
        local = local.replace(tzinfo=tz)
    return local.astimezone(UTC)


def _local_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _from_excel(float(value))
    text = cell_text(value)
    if not text:
        return None
    match = _DMY.fullmatch(text)
    if match:
        return _from_dmy(match)
    if _EXCEL_SERIAL.fullmatch(text):
        return _from_excel(float(text))
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None


def _from_dmy(match: re.Match[str]) -> datetime | None:
    day, month, year, hour, minute, second = match.groups()
    full_year = int(year)
    if len(year) == 2:
        # Two-digit years in a client list are this century unless that is the future.
        full_year += 2000 if full_year <= datetime.now(UTC).year % 100 else 1900
    try:
        return datetime(
            full_year, int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return None


def _from_excel(serial: float) -> datetime | None:
    # 1955..2119: a wider range is more likely a phone or a price typed in the column.
    if not 20_000 <= serial <= 80_000:
        return None
    result = from_excel(serial)
    return result if isinstance(result, datetime) else None


# Matching and writing --------------------------------------------------------------------


@dataclass(eq=False)
class _Card:
    """A card as the import leaves it: an existing one (client set) or a new one."""

    client: Client | None = None
    id: int | None = None
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    tags: tuple[str, ...] = ()
    notes: str = ""
    last_visit: datetime | None = None
    first_row: int = 0
    rows: list[int] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, client: Client) -> _Card:
        return cls(
            client=client,
            id=client.id,
            name=client.name,
            phone=client.phone,
            email=client.email,
            tags=tuple(client.tags or ()),
            notes=client.notes or "",
            last_visit=aware(client.last_visit_at),
        )

    @property
    def label(self) -> str:
        if self.client is not None:
            return f"card #{self.id}"
        return f"the card of row {self.first_row}"

    def merge(self, row: ClientRow) -> bool:
        """Take what the row adds; what the card already says stays. True if anything new."""
        self.rows.append(row.row)
        updates: dict[str, Any] = {}
        for name in ("name", "phone", "email"):
            if not getattr(self, name) and getattr(row, name):
                updates[name] = getattr(row, name)
        phone, email = updates.get("phone", self.phone), updates.get("email", self.email)
        extra = [p for p in (row.phone, *row.other_phones) if p and p != phone]
        extra += [e for e in (row.email, *row.other_emails) if e and e != email]
        tags = union_tags(self.tags, row.tags)
        if tags != self.tags:
            updates["tags"] = tags
        notes = self.notes
        for note in [row.notes, *(f"{_contact_label(c)}: {c}" for c in extra)]:
            if note and note not in notes:
                notes = f"{notes}\n{note}" if notes else note
        if notes != self.notes:
            updates["notes"] = notes
        if row.last_visit and (self.last_visit is None or row.last_visit > self.last_visit):
            updates["last_visit"] = row.last_visit
        for name, value in updates.items():
            setattr(self, name, value)
        self.changed.update(updates)
        return bool(updates)

    def values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "tags": list(self.tags),
            "notes": self.notes,
            "last_visit_at": self.last_visit,
        }


def _contact_label(contact: str) -> str:
    return "Email" if "@" in contact else "Phone"


@dataclass
class _Matched:
    row: ClientRow
    outcome: Outcome
    card: _Card | None
    reason: str


@dataclass(frozen=True)
class ImportReport:
    source: str
    columns: dict[str, str]
    outcomes: list[RowOutcome]  # one per row of the file but the header, in row order
    dry_run: bool = False

    def count(self, outcome: Outcome) -> int:
        return sum(o.outcome == outcome for o in self.outcomes)

    @property
    def rejected(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.outcome == "rejected"]


async def apply_plan(
    session: AsyncSession, plan: ImportPlan, *, progress: Progress | None = None
) -> ImportReport:
    """Write a checked file's clients in the session's transaction (the caller commits)."""
    by_phone, by_email = await _existing_cards(session, plan.rows)
    matched, new_cards = _match_rows(plan.rows, by_phone, by_email)
    updated = _unique(m.card for m in matched if m.card is not None and m.card.client is not None)
    await _save(session, new_cards, [c for c in updated if c.changed], plan.source, progress)
    outcomes = [
        RowOutcome(m.row.row, m.outcome, m.card.id if m.card else None, m.reason) for m in matched
    ]
    return ImportReport(
        plan.source, plan.columns, sorted([*outcomes, *plan.settled], key=lambda o: o.row)
    )


class _Rollback(Exception):
    def __init__(self, report: ImportReport) -> None:
        super().__init__("dry run")
        self.report = report


async def run_import(
    sessions: async_sessionmaker[AsyncSession],
    plan: ImportPlan,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """The whole import in one transaction: all of it is saved or none. A dry run does
    everything, then rolls back."""
    try:
        async with transaction(sessions) as session:
            report = await apply_plan(session, plan, progress=progress)
            if dry_run:
                raise _Rollback(report)
    except _Rollback as rollback:
        # The ids new cards got are gone with the rollback; don't show them.
        outcomes = [
            replace(o, client_id=None) if o.outcome == "created" else o
            for o in rollback.report.outcomes
        ]
        return replace(rollback.report, outcomes=outcomes, dry_run=True)
    return report


def _match_rows(
    rows: Sequence[ClientRow], by_phone: dict[str, _Card], by_email: dict[str, _Card]
) -> tuple[list[_Matched], list[_Card]]:
    """Each row to the card it belongs to, in file order; the indexes grow as new cards
    appear, so later rows of the same person merge into the card an earlier row opened."""
    matched: list[_Matched] = []
    new_cards: list[_Card] = []
    for row in rows:
        on_phone = by_phone.get(row.phone) if row.phone else None
        on_email = by_email.get(row.email) if row.email else None
        if on_phone is not None and on_email is not None and on_phone is not on_email:
            reason = f"phone matches {on_phone.label}, email {on_email.label}"
            matched.append(_Matched(row, "rejected", None, reason))
            continue
        card = on_phone or on_email
        outcome: Outcome = "updated"
        if card is None:
            card, outcome = _Card(first_row=row.row), "created"
            new_cards.append(card)
        news = card.merge(row)
        if card.phone:
            by_phone.setdefault(card.phone, card)
        if card.email:
            by_email.setdefault(card.email, card)
        reasons = list(row.warnings)
        if outcome == "updated" and not news:
            reasons.append("nothing new for the card")
        matched.append(_Matched(row, outcome, card, "; ".join(reasons)))
    return matched, new_cards


async def _existing_cards(
    session: AsyncSession, rows: Sequence[ClientRow]
) -> tuple[dict[str, _Card], dict[str, _Card]]:
    """Live cards (not merged away) holding any of the file's phones or emails."""
    clients: dict[int, Client] = {}
    for column, values in (
        (Client.phone, {r.phone for r in rows if r.phone}),
        (Client.email, {r.email for r in rows if r.email}),
    ):
        for chunk in _chunks(sorted(values), LOOKUP_CHUNK):
            found = await session.exec(
                select(Client).where(col(column).in_(chunk), col(Client.merged_into_id).is_(None))
            )
            clients.update((c.id, c) for c in found if c.id is not None)
    by_phone: dict[str, _Card] = {}
    by_email: dict[str, _Card] = {}
    # The oldest card wins where several share a contact, as in identity resolution.
    for _, client in sorted(clients.items()):
        card = _Card.of(client)
        if card.phone:
            by_phone.setdefault(card.phone, card)
        if card.email:
            by_email.setdefault(card.email, card)
    return by_phone, by_email


async def _save(
    session: AsyncSession,
    new_cards: Sequence[_Card],
    changed_cards: Sequence[_Card],
    source: str,
    progress: Progress | None,
) -> None:
    audit_ids = await _audit_ids(session)
    total = len(new_cards) + len(changed_cards)
    done = 0
    for chunk in _chunks(new_cards, WRITE_CHUNK):
        await _insert(session, chunk, source, audit_ids)
        done += len(chunk)
        if progress is not None:
            progress("saving", done, total)
    for chunk in _chunks(changed_cards, WRITE_CHUNK):
        await _update(session, chunk, source, audit_ids)
        done += len(chunk)
        if progress is not None:
            progress("saving", done, total)


async def _insert(
    session: AsyncSession, cards: Sequence[_Card], source: str, audit_ids: Iterator[int] | None
) -> None:
    """New cards in multi-row INSERTs. RETURNING hands the ids back in no set order on
    SQLite, so they are matched by contact: no two new cards share a phone or an email
    (the second would have matched the first), and each has one or the other."""
    now = utcnow()
    values = [
        {
            "name": c.name,
            "phone": c.phone,
            "email": c.email,
            "tags": list(c.tags),
            "notes": c.notes,
            "last_visit_at": c.last_visit,
            "source_channel": "import",
            "marketing_consent": False,
            "created_at": now,
        }
        for c in cards
    ]
    statement = insert(_CLIENTS).returning(_CLIENTS.c.id, _CLIENTS.c.phone, _CLIENTS.c.email)
    by_contact = {c.phone or c.email: c for c in cards}
    for client_id, phone, email in await session.exec(statement, params=values):
        by_contact[phone or email].id = client_id
    for card in cards:
        changes = {**card.values(), "file": source, "rows": card.rows}
        _audit(session, card, "import_create", changes, audit_ids)
    await session.flush()


async def _update(
    session: AsyncSession, cards: Sequence[_Card], source: str, audit_ids: Iterator[int] | None
) -> None:
    for card in cards:
        client = card.client
        assert client is not None  # only existing cards are updated
        values = card.values()
        changes: dict[str, Any] = {}
        for name in sorted(card.changed):
            column = "last_visit_at" if name == "last_visit" else name
            setattr(client, column, values[column])
            changes[column] = values[column]
        changes.update(file=source, rows=card.rows)
        _audit(session, card, "import_update", changes, audit_ids)
    await session.flush()


async def _audit_ids(session: AsyncSession) -> Iterator[int] | None:
    """Ids for the audit entries on SQLite, None elsewhere.

    SQLite can't return the ids of a multi-row INSERT in order, so SQLAlchemy would insert
    entries without ids one at a time; with ids it sends them in one executemany. These are
    the ids SQLite would pick itself (the highest plus one, and on), and no one else can
    insert meanwhile: crm_store.db begins every SQLite transaction IMMEDIATE."""
    if session.get_bind().dialect.name != "sqlite":
        return None
    highest = (await session.exec(select(func.max(col(AuditEntry.id))))).one()
    return itertools.count((highest or 0) + 1)


def _audit(
    session: AsyncSession,
    card: _Card,
    action: str,
    changes: dict[str, Any],
    ids: Iterator[int] | None,
) -> None:
    assert card.id is not None  # saved cards have ids
    entry = audit.record(
        session, actor="import", entity="client", entity_id=card.id, action=action, changes=changes
    )
    if ids is not None:
        entry.id = next(ids)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unique(cards: Iterator[_Card]) -> list[_Card]:
    return list({id(c): c for c in cards}.values())


# The report ------------------------------------------------------------------------------


def format_report(report: ImportReport) -> str:
    lines = [f"{report.source}: " + ", ".join(f"{f} = {c}" for f, c in report.columns.items())]
    lines += [
        f"imported: {report.count('created')}",
        f"updated:  {report.count('updated')}",
        f"rejected: {report.count('rejected')}",
        f"skipped:  {report.count('skipped')}",
    ]
    lines += [f"row {o.row}: {o.reason}" for o in report.rejected]
    if report.dry_run:
        lines.append("dry run: nothing was saved")
    return "\n".join(lines)


def write_report_csv(report: ImportReport, stream: TextIO) -> None:
    """Every row's outcome; a reason is quoted where a spreadsheet would take it for a
    formula (crm_store.csv_cells)."""
    writer = csv.writer(stream)
    writer.writerow(["row", "outcome", "client_id", "reason"])
    for o in report.outcomes:
        client_id = "" if o.client_id is None else o.client_id
        writer.writerow([spreadsheet_safe(v) for v in (o.row, o.outcome, client_id, o.reason)])
