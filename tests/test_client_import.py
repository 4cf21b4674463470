"""`hub import clients`: CSV and XLSX exports into client cards, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import client_import, import_source
from crm_store.client_import import (
    ClientImportError,
    SourceTable,
    detect_layout,
    load_clients_file,
    parse_visit,
    run_import,
    split_tags,
)
from crm_store.db import create_engine, is_sqlite, transaction
from crm_store.import_csv import sniff_delimiter
from crm_store.import_source import (
    MAX_CELL_CHARS,
    MAX_FILE_BYTES,
    MAX_ROW_CHARS,
    MAX_ROWS,
    MAX_XLSX_PART_BYTES,
)
from crm_store.models import AuditEntry, Client
from crm_store.timeutil import aware
from hub.cli.import_clients import ProgressBar
from hub.cli.main import main
from tests.support import on_db

KYIV = ZoneInfo("Europe/Kyiv")
T = TypeVar("T")


# Helpers ---------------------------------------------------------------------------------


def cards(db: str) -> list[dict[str, Any]]:
    async def read(session: AsyncSession) -> list[dict[str, Any]]:
        rows = await session.exec(select(Client).order_by(col(Client.id)))
        return [
            {
                "id": c.id,
                "name": c.name,
                "phone": c.phone,
                "email": c.email,
                "tags": c.tags,
                "notes": c.notes,
                "last_visit_at": aware(c.last_visit_at),
                "source_channel": c.source_channel,
                "first_contact_at": c.first_contact_at,
                "merged_into_id": c.merged_into_id,
            }
            for c in rows
        ]

    return on_db(db, read)


def audit_entries(db: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    async def read(session: AsyncSession) -> list[tuple[int, str, str, dict[str, Any]]]:
        rows = await session.exec(select(AuditEntry).order_by(col(AuditEntry.id)))
        return [(e.entity_id, e.actor, e.action, e.changes) for e in rows]

    return on_db(db, read)


def add_cards(db: str, *clients: Client) -> list[int]:
    async def add(session: AsyncSession) -> list[int]:
        session.add_all(clients)
        await session.flush()
        return [c.id for c in clients]  # type: ignore[misc]

    return on_db(db, add)


def run_cli(monkeypatch: pytest.MonkeyPatch, db: str, tmp_path: Path, *args: str | Path) -> int:
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "hub-data"))
    monkeypatch.setenv("HUB_TIMEZONE", "Europe/Kyiv")
    monkeypatch.setenv("HUB_DEFAULT_REGION", "UA")
    return main(["import", "clients", *(str(a) for a in args)])


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def card(**values: Any) -> dict[str, Any]:
    """What an imported card looks like, unless said otherwise."""
    base = {
        "name": None,
        "phone": None,
        "email": None,
        "tags": [],
        "notes": "",
        "last_visit_at": None,
        "source_channel": "import",
        "first_contact_at": None,
        "merged_into_id": None,
    }
    return base | values


def without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


# A messy CSV through the command ---------------------------------------------------------

MESSY_CSV = "\n".join(
    [
        "ПІБ;Тел.;E-mail;Примітки;Останній візит;Теги",
        "Олена Коваленко;+380 67 123 45 67;olena@example.com;алергія на латекс;05.03.2024;"
        "VIP, манікюр",
        ";;;;;",
        "Олена К.;067-123-45-67;;любить каву;12/04/2024 15:30;vip|педикюр",
        "Іван Петренко;12345;;;;",
        'Петро Бондар;80501234567;;"стрижка; борода";2024-01-02;',
        "Марія Шевченко;(067)7654321;maria@example.com;a;b;c;d",
        "",
        "Марія Шевченко;80677654321;MARIA@Example.com;;;",
        ";;ira@example.com;перший візит;;брови",
        "Ірина;;IRA@example.com;;01.02.2024;",
        "Без контактів;;;;;",
        "Оксана;(050)1112233;oksana@;;;",
        "Конфлікт;+380501234567;maria@example.com;;;",
    ]
)

MESSY_CARDS = [
    card(
        name="Олена Коваленко",
        phone="+380671234567",
        email="olena@example.com",
        tags=["VIP", "манікюр", "педикюр"],
        notes="алергія на латекс\nлюбить каву",
        last_visit_at=utc(2024, 4, 12, 12, 30),  # 15:30 in Kyiv, summer time
    ),
    card(
        name="Петро Бондар",
        phone="+380501234567",
        notes="стрижка; борода",
        last_visit_at=utc(2024, 1, 1, 22, 0),  # local midnight of 2 January, winter time
    ),
    card(name="Марія Шевченко", phone="+380677654321", email="maria@example.com"),
    card(
        name="Ірина",
        email="ira@example.com",
        tags=["брови"],
        notes="перший візит",
        last_visit_at=utc(2024, 1, 31, 22, 0),
    ),
    card(name="Оксана", phone="+380501112233"),
]


def test_messy_csv_imports_exact_cards_and_reports_every_row(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clients.csv"
    source.write_text(MESSY_CSV + "\n", encoding="utf-8")
    report = tmp_path / "report.csv"

    assert run_cli(monkeypatch, db, tmp_path, source, "--report", report) == 0

    assert without_ids(cards(db)) == MESSY_CARDS
    out = capsys.readouterr().out
    assert "imported: 5\nupdated:  2\nrejected: 4\nskipped:  2\n" in out
    assert (
        "row 5: phone '12345' is not a valid number\n"
        "row 7: row has 7 fields, the header 6\n"
        "row 12: no phone and no email\n"
        "row 14: phone matches the card of row 6, email the card of row 9\n"
    ) in out
    ids = [c["id"] for c in cards(db)]
    olena, petro, maria, ira, oksana = (str(i) for i in ids)
    assert [(r["row"], r["outcome"], r["client_id"]) for r in read_report(report)] == [
        ("2", "created", olena),
        ("3", "skipped", ""),
        ("4", "updated", olena),
        ("5", "rejected", ""),
        ("6", "created", petro),
        ("7", "rejected", ""),
        ("8", "skipped", ""),
        ("9", "created", maria),
        ("10", "created", ira),
        ("11", "updated", ira),
        ("12", "rejected", ""),
        ("13", "created", oksana),
        ("14", "rejected", ""),
    ]
    reasons = {r["row"]: r["reason"] for r in read_report(report)}
    assert reasons["13"] == "email 'oksana@' is not a valid address: ignored"
    assert reasons["3"] == "empty row"

    # One entry per card, however many rows it was built from.
    entries = audit_entries(db)
    assert [(e[0], e[1], e[2]) for e in entries] == [(i, "import", "import_create") for i in ids]
    assert entries[0][3]["rows"] == [2, 4]
    assert entries[0][3]["tags"] == ["VIP", "манікюр", "педикюр"]
    assert entries[0][3]["file"] == "clients.csv"


def test_importing_the_same_file_again_changes_nothing(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clients.csv"
    source.write_text(MESSY_CSV, encoding="utf-8")
    assert run_cli(monkeypatch, db, tmp_path, source) == 0
    first, entries = cards(db), audit_entries(db)
    capsys.readouterr()

    assert run_cli(monkeypatch, db, tmp_path, source) == 0

    assert cards(db) == first
    assert audit_entries(db) == entries  # nothing changed, nothing to audit
    assert "imported: 0\nupdated:  7\nrejected: 4\nskipped:  2\n" in capsys.readouterr().out


async def test_cp1251_csv_with_russian_header_and_commas(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(
        "\r\n".join(
            [
                "ФИО,Телефон,Почта,Комментарий,Последний визит,Метки",
                'Анна Мельник,+38 (063) 555-44-33,Anna@Example.com,"любит чай, без сахара",'
                '31.12.2023 18:00,"VIP; постоянная"',
                "Анна,0635554433,,,,vip",
            ]
        ).encode("cp1251")
    )

    plan = load_clients_file(source, region="UA", tz=KYIV)
    report = await run_import(sessions, plan)

    assert [(o.row, o.outcome) for o in report.outcomes] == [(2, "created"), (3, "updated")]
    async with sessions() as session:
        (anna,) = (await session.exec(select(Client))).all()
    assert (anna.name, anna.phone, anna.email, anna.tags, anna.notes) == (
        "Анна Мельник",
        "+380635554433",
        "anna@example.com",
        ["VIP", "постоянная"],
        "любит чай, без сахара",
    )
    assert aware(anna.last_visit_at) == utc(2023, 12, 31, 16, 0)


# XLSX ------------------------------------------------------------------------------------


def write_workbook(path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Клієнти"
    sheet.append(["Клієнти салону «Лілея»"])
    sheet.append([])
    sheet.append(["Прізвище", "Ім'я", "Мобільний", "Пошта", "Останній візит", "Мітки"])
    sheet.append(
        [
            "Коваленко",
            "Олена",
            380671234567,  # typed into a number cell
            "olena@example.com",
            datetime(2024, 3, 5, 14, 30),
            "VIP, манікюр",
        ]
    )
    sheet.append(["Ткаченко", "Андрій", "0931112233", None, 45000, None])  # a bare serial date
    sheet.append(["Бойко", None, "067 000", None, None, None])
    sheet.cell(row=8, column=2, value="Світлана")
    sheet.cell(row=8, column=4, value="svitlana@example.com")
    sheet.cell(row=8, column=5, value=date(2024, 7, 1))
    old = book.create_sheet("Старі")
    old.append(["Name", "Phone"])
    old.append(["Stepan", "+48 512 345 678"])
    book.save(path)


def test_xlsx_first_sheet_then_another_by_name(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clients.xlsx"
    write_workbook(source)

    assert run_cli(monkeypatch, db, tmp_path, source) == 0

    assert without_ids(cards(db)) == [
        card(
            name="Олена Коваленко",
            phone="+380671234567",
            email="olena@example.com",
            tags=["VIP", "манікюр"],
            last_visit_at=utc(2024, 3, 5, 12, 30),
        ),
        card(
            name="Андрій Ткаченко",
            phone="+380931112233",
            last_visit_at=utc(2023, 3, 14, 22, 0),  # serial 45000 is 15 March 2023
        ),
        card(name="Світлана", email="svitlana@example.com", last_visit_at=utc(2024, 6, 30, 21, 0)),
    ]
    out = capsys.readouterr().out
    assert "imported: 3\nupdated:  0\nrejected: 1\nskipped:  3\n" in out
    assert "row 6: phone '067 000' is not a valid number" in out
    assert (
        'first_name = "Ім\'я", last_name = "Прізвище", phone = "Мобільний", email = "Пошта", '
        'last_visit = "Останній візит", tags = "Мітки"'
    ) in out

    assert run_cli(monkeypatch, db, tmp_path, source, "--sheet", "Старі") == 0
    assert [(c["name"], c["phone"]) for c in cards(db)][-1] == ("Stepan", "+48512345678")


# Existing cards --------------------------------------------------------------------------


def test_rows_update_existing_cards_by_phone_and_by_email(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    by_phone, by_email, merged_away = add_cards(
        db,
        Client(
            phone="+380671234567",
            tags=["постійна"],
            notes="любить каву",
            last_visit_at=utc(2024, 5, 1, 9, 0),
            source_channel="telegram",
        ),
        Client(name="Ірина", email="ira@example.com", source_channel="instagram"),
        Client(name="Стара картка", phone="+380931112233", source_channel="viber"),
    )
    on_db(db, lambda s: _merge_into(s, merged_away, by_email))
    source = tmp_path / "clients.csv"
    source.write_text(
        "Name,Phone,Email,Notes,Last visit,Tags\n"
        'Олена,067 123 45 67,olena@example.com,алергія,01.03.2024,"VIP, постійна"\n'
        "Ірина Бондар,0931112233,IRA@example.com,,10.06.2024,\n",
        encoding="utf-8",
    )

    assert run_cli(monkeypatch, db, tmp_path, source) == 0

    assert "imported: 0\nupdated:  2\nrejected: 0\nskipped:  0\n" in capsys.readouterr().out
    after = {c["id"]: c for c in cards(db)}
    assert len(after) == 3  # no duplicates
    assert after[by_phone] == {
        "id": by_phone,
        "name": "Олена",
        "phone": "+380671234567",
        "email": "olena@example.com",
        "tags": ["постійна", "VIP"],
        "notes": "любить каву\nалергія",
        "last_visit_at": utc(2024, 5, 1, 9, 0),  # the card's own visit is the later one
        "source_channel": "telegram",
        "first_contact_at": None,
        "merged_into_id": None,
    }
    # The merged-away card holds the phone, but only live cards are matched.
    assert after[by_email]["name"] == "Ірина"
    assert after[by_email]["phone"] == "+380931112233"
    assert after[by_email]["last_visit_at"] == utc(2024, 6, 9, 21, 0)
    assert after[merged_away]["name"] == "Стара картка"

    updates = [e for e in audit_entries(db) if e[2] == "import_update"]
    assert [(e[0], e[1]) for e in updates] == [(by_phone, "import"), (by_email, "import")]
    assert {k: v for k, v in updates[0][3].items() if k not in ("file", "rows")} == {
        "name": "Олена",
        "email": "olena@example.com",
        "tags": ["постійна", "VIP"],
        "notes": "любить каву\nалергія",
    }
    assert updates[1][3]["phone"] == "+380931112233"


async def _merge_into(session: AsyncSession, card_id: int, into: int) -> None:
    merged = await session.get(Client, card_id)
    assert merged is not None
    merged.merged_into_id = into


async def test_row_matching_two_cards_is_rejected(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with transaction(sessions) as session:
        first = Client(name="A", phone="+380671234567")
        second = Client(name="B", email="b@example.com")
        session.add_all([first, second])
    source = tmp_path / "clients.csv"
    source.write_text("Телефон;Email\n0671234567;b@example.com\n", encoding="utf-8")

    report = await run_import(sessions, load_clients_file(source, tz=KYIV))

    assert [(o.row, o.outcome, o.reason) for o in report.outcomes] == [
        (2, "rejected", f"phone matches card #{first.id}, email card #{second.id}")
    ]
    async with sessions() as session:
        stored = (await session.exec(select(Client).order_by(col(Client.id)))).all()
    assert [(c.name, c.phone, c.email) for c in stored] == [
        ("A", "+380671234567", None),
        ("B", None, "b@example.com"),
    ]


# Options ---------------------------------------------------------------------------------


def test_map_overrides_detection(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clients.csv"
    # "Телефон" is detected as the phone, but here it is the home landline; the name column
    # has a header nobody would guess.
    source.write_text(
        "Хто,Телефон,Мобільний\nОлена,044 123 45 67,067 123 45 67\n", encoding="utf-8"
    )

    args = ["--map", "phone=мобільний", "--map", "name=1", "--map", "notes=Телефон"]
    assert run_cli(monkeypatch, db, tmp_path, source, *args) == 0

    assert without_ids(cards(db)) == [
        card(name="Олена", phone="+380671234567", notes="044 123 45 67")
    ]
    assert 'name = "Хто", phone = "Мобільний", notes = "Телефон"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("phon=2", "unknown field 'phon'"),
        ("phone=Факс", 'no column "Факс"'),
        ("phone=9", "there is no column 9"),
        ("phone", "write it as FIELD=COLUMN"),
    ],
)
def test_map_mistakes_are_clear_errors(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mapping: str,
    message: str,
) -> None:
    source = tmp_path / "clients.csv"
    source.write_text("Ім'я,Телефон\nОлена,0671234567\n", encoding="utf-8")

    assert run_cli(monkeypatch, db, tmp_path, source, "--map", mapping) == 2

    assert message in capsys.readouterr().err
    assert cards(db) == []


def test_dry_run_reports_and_changes_nothing(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (existing,) = add_cards(db, Client(name="Олена", phone="+380671234567"))
    before = cards(db)
    source = tmp_path / "clients.csv"
    source.write_text(
        "Ім'я;Телефон;Теги\nОлена;0671234567;VIP\nПетро;0501234567;\n;;\nХтось;123;\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.csv"

    assert run_cli(monkeypatch, db, tmp_path, source, "--dry-run", "--report", report) == 0

    out = capsys.readouterr().out
    assert "imported: 1\nupdated:  1\nrejected: 1\nskipped:  1\n" in out
    assert "row 5: phone '123' is not a valid number" in out
    assert "dry run: nothing was saved" in out
    assert cards(db) == before
    assert audit_entries(db) == []
    assert [(r["row"], r["outcome"], r["client_id"]) for r in read_report(report)] == [
        ("2", "updated", str(existing)),
        ("3", "created", ""),  # the id it got is gone with the rollback
        ("4", "skipped", ""),
        ("5", "rejected", ""),
    ]


# Files that can't be imported --------------------------------------------------------------


def _corrupt_xlsx(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is not a workbook")


def _no_columns(path: Path) -> None:
    path.write_text("Колір,Розмір\nчервоний,M\nсиній,L\n", encoding="utf-8")


def _binary(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _workbook(path: Path) -> None:
    write_workbook(path)


@pytest.mark.parametrize(
    ("name", "make", "extra", "message"),
    [
        ("missing.csv", None, [], "no such file"),
        ("clients.xls", _no_columns, [], "use a .csv or .xlsx file"),
        ("clients.xlsx", _corrupt_xlsx, [], "not a readable .xlsx file"),
        ("clients.csv", _no_columns, [], "found no phone or email column"),
        ("clients.csv", _binary, [], "not a text file"),
        ("clients.csv", _empty, [], "the file is empty"),
        ("clients.xlsx", _workbook, ["--sheet", "Нема"], "no sheet 'Нема'"),
        ("clients.csv", _no_columns, ["--region", "XX"], "unknown region 'XX'"),
    ],
)
def test_unreadable_file_exits_2_and_changes_nothing(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], None] | None,
    extra: list[str],
    message: str,
) -> None:
    add_cards(db, Client(name="Олена", phone="+380671234567"))
    before = cards(db)
    source = tmp_path / name
    if make is not None:
        make(source)

    assert run_cli(monkeypatch, db, tmp_path, source, *extra) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert cards(db) == before
    assert audit_entries(db) == []


def test_a_failure_midway_saves_nothing(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Cards go in chunks of two, so two chunks are written before the third one fails.
    monkeypatch.setattr(client_import, "WRITE_CHUNK", 2)
    source = tmp_path / "clients.csv"
    rows = [f"Клієнт {n};067{n:07d}" for n in range(4)] + ["Збій;0670000099"]
    source.write_text("ПІБ;Телефон\n" + "\n".join(rows) + "\n", encoding="utf-8")
    asyncio.run(_failing_trigger(db, create=True))
    try:
        assert run_cli(monkeypatch, db, tmp_path, source) == 2
    finally:
        asyncio.run(_failing_trigger(db, create=False))

    assert "the import failed and nothing was saved" in capsys.readouterr().err
    assert cards(db) == []
    assert audit_entries(db) == []


async def _failing_trigger(db: str, *, create: bool) -> None:
    """A trigger that refuses a client named "Збій": a database error in the middle."""
    engine: AsyncEngine = create_engine(db)
    sqlite = is_sqlite(engine)
    if create and sqlite:
        statements = [
            "CREATE TRIGGER import_test_fail BEFORE INSERT ON clients "
            "WHEN NEW.name = 'Збій' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
    elif create:
        statements = [
            "CREATE FUNCTION import_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.name = 'Збій' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER import_test_fail BEFORE INSERT ON clients "
            "FOR EACH ROW EXECUTE FUNCTION import_test_fail()",
        ]
    elif sqlite:
        statements = ["DROP TRIGGER IF EXISTS import_test_fail"]
    else:
        statements = [
            "DROP TRIGGER IF EXISTS import_test_fail ON clients",
            "DROP FUNCTION IF EXISTS import_test_fail()",
        ]
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


# Files past a bound ------------------------------------------------------------------------
#
# Built here, small on disk: a CSV of 65 MB is a sparse file, a part of an .xlsx that unpacks
# to 70 MB is 300 KB of zip. openpyxl writes what it can; the rest is XML by hand.

MB = 1024 * 1024
Part = bytes | Callable[[IO[bytes]], None]  # a part's bytes, or what writes them
SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
STRINGS = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"


def inline(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{escape(text)}</t></is></c>'


def sheet_xml(*rows: str) -> bytes:
    header = inline("A1", "Name") + inline("B1", "Phone") + inline("C1", "Notes")
    body = f'<row r="1">{header}</row>' + "".join(rows)
    return f'<worksheet xmlns="{SHEET_NS}"><sheetData>{body}</sheetData></worksheet>'.encode()


def client_row(number: int, *cells: str) -> str:
    name, phone = inline(f"A{number}", "Олена"), inline(f"B{number}", "0671234567")
    return f'<row r="{number}">{name}{phone}{"".join(cells)}</row>'


def huge(head: str, size: int, tail: str) -> Callable[[IO[bytes]], None]:
    """A part of `size` letters between `head` and `tail`, written a megabyte at a time."""

    def write(out: IO[bytes]) -> None:
        out.write(head.encode())
        for start in range(0, size, MB):
            out.write(b"A" * min(MB, size - start))
        out.write(tail.encode())

    return write


def workbook(target: Path | IO[bytes], parts: Mapping[str, Part]) -> None:
    """A workbook openpyxl writes (a header and one client), with `parts` put in or over it."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone", "Notes"])
    sheet.append(["Олена", "0671234567", "перший візит"])
    base = io.BytesIO()
    book.save(base)
    with (
        zipfile.ZipFile(base) as source,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out,
    ):
        names = source.namelist()
        for name in [*names, *(n for n in parts if n not in names)]:
            part = parts[name] if name in parts else source.read(name)
            if name == "[Content_Types].xml" and "xl/sharedStrings.xml" in parts:
                override = f'<Override PartName="/xl/sharedStrings.xml" ContentType="{STRINGS}"/>'
                part = source.read(name).replace(b"</Types>", override.encode() + b"</Types>")
            with out.open(name, "w") as stream:
                if callable(part):
                    part(stream)
                else:
                    stream.write(part)


@functools.cache
def strings_bomb() -> bytes:
    """A workbook of 300 KB whose one shared string, a client's notes, unpacks to 70 MB."""
    out = io.BytesIO()
    strings = huge(f'<sst xmlns="{SHEET_NS}"><si><t>', 70 * MB, "</t></si></sst>")
    sheet = sheet_xml(client_row(2, '<c r="C2" t="s"><v>0</v></c>'))
    workbook(out, {"xl/sharedStrings.xml": strings, "xl/worksheets/sheet1.xml": sheet})
    return out.getvalue()


def declaring(data: bytes, part: str, size: int) -> bytes:
    """The zip with `part`'s unpacked size in its central directory said to be `size`: a lie
    that makes the part look small."""
    entry = data.rindex(part.encode()) - 46  # the central directory comes last
    assert data[entry : entry + 4] == b"PK\x01\x02"
    patched = bytearray(data)
    struct.pack_into("<I", patched, entry + 24, size)
    return bytes(patched)


def _sparse_csv(path: Path) -> None:
    path.write_text("Name,Phone\nОлена,0671234567\n", encoding="utf-8")
    with path.open("r+b") as stream:
        stream.truncate(MAX_FILE_BYTES + MB)


def _long_row(path: Path) -> None:
    # Short fields, many of them: no cell is too long, the row is.
    row = "Олена,0671234567" + ",x" * (MAX_ROW_CHARS // 2)
    path.write_text(f"Name,Phone\n{row}\n", encoding="utf-8")


def _long_csv_cell(path: Path) -> None:
    note = "x" * (MAX_CELL_CHARS + 1)
    path.write_text(f'Name,Phone,Notes\nОлена,0671234567,"{note}"\n', encoding="utf-8")


def _wide_csv(path: Path) -> None:
    header = ["Name", "Phone", *(f"Field {n}" for n in range(3, 301))]
    path.write_text(",".join(header) + "\nОлена,0671234567\n", encoding="utf-8")


def _long_csv(path: Path) -> None:
    # A client on row 100,002, after a header and empty lines.
    path.write_text("Name,Phone\n" + "\n" * MAX_ROWS + "Олена,0671234567\n", encoding="utf-8")


def _many_cells(path: Path) -> None:
    rows = [f"Клієнт {n},067{n:07d},{n}" for n in range(8)]
    path.write_text("Name,Phone,Notes\n" + "\n".join(rows) + "\n", encoding="utf-8")


def _long_inline_cell(path: Path) -> None:
    # openpyxl cuts a longer text to Excel's 32,767 characters when it writes one.
    note = inline("C2", "x" * (MAX_CELL_CHARS + 1))
    workbook(path, {"xl/worksheets/sheet1.xml": sheet_xml(client_row(2, note))})


def _long_shared_string(path: Path) -> None:
    strings = f'<sst xmlns="{SHEET_NS}"><si><t>{"x" * (MAX_CELL_CHARS + 1)}</t></si></sst>'
    sheet = sheet_xml(client_row(2, '<c r="C2" t="s"><v>0</v></c>'))
    workbook(path, {"xl/sharedStrings.xml": strings.encode(), "xl/worksheets/sheet1.xml": sheet})


def _long_tag(path: Path) -> None:
    # A tag of 4 MB (a cell type nobody knows): expat reads a tag again with every piece.
    head = f'<worksheet xmlns="{SHEET_NS}"><sheetData><row r="2"><c r="C2" t="'
    tail = '"><v>1</v></c></row></sheetData></worksheet>'
    workbook(path, {"xl/worksheets/sheet1.xml": huge(head, 4 * MB, tail)})


def _last_column(path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone"])
    sheet.append(["Олена", "0671234567"])
    sheet.cell(row=2, column=16_384, value="XFD is the last column there is")
    book.save(path)


def _row_past_the_last(path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone"])
    sheet.cell(row=MAX_ROWS + 1, column=1, value="Олена")
    sheet.cell(row=MAX_ROWS + 1, column=2, value="0671234567")
    book.save(path)


def _strings_bomb(path: Path) -> None:
    path.write_bytes(strings_bomb())


def _bloated_styles(path: Path) -> None:
    # Every style a format, as years of copy and paste leave it; here a million bytes' worth.
    xfs = "<xf/>" * (MAX_XLSX_PART_BYTES // 5 + 1)
    styles = f'<styleSheet xmlns="{SHEET_NS}"><cellXfs>{xfs}</cellXfs></styleSheet>'
    workbook(path, {"xl/styles.xml": styles.encode()})


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("clients.csv", _sparse_csv, "the file is 65 MB; a file may be at most 64 MB"),
        ("clients.csv", _long_row, "row 2 is longer than 100,000 characters"),
        (
            "clients.csv",
            _long_csv_cell,
            "the cell in row 2, column C holds more than 32,767 characters",
        ),
        (
            "clients.csv",
            _wide_csv,
            "row 1 has a value in column KN (300); a file may have at most 256 columns",
        ),
        (
            "clients.csv",
            _long_csv,
            "row 100,002 has data; a file may have at most 100,000 rows",
        ),
        ("clients.csv", _many_cells, "more than 20 cells by row 7; a file may have at most 20"),
        (
            "clients.xlsx",
            _long_inline_cell,
            "the cell in row 2, column C holds more than 32,767 characters",
        ),
        (
            "clients.xlsx",
            _long_shared_string,
            "shared string 1 (a cell's text) has more than 32,767 characters",
        ),
        (
            "clients.xlsx",
            _long_tag,
            "xl/worksheets/sheet1.xml has a tag or a text of more than 1 MB, the most one may "
            "have",
        ),
        (
            "clients.xlsx",
            _last_column,
            "row 2 has a value in column XFD (16,384); a file may have at most 256 columns",
        ),
        (
            "clients.xlsx",
            _row_past_the_last,
            "row 100,001 has data; a file may have at most 100,000 rows",
        ),
        (
            "clients.xlsx",
            _strings_bomb,
            "xl/sharedStrings.xml unpacks to 70.0 MB; a sheet and its shared strings may "
            "unpack to at most 64 MB each",
        ),
        (
            "clients.xlsx",
            _bloated_styles,
            "xl/styles.xml unpacks to 1.0 MB; a part other than a sheet and its shared "
            "strings may unpack to at most 1 MB",
        ),
    ],
    ids=[
        "csv-file-size", "csv-row", "csv-cell", "csv-columns", "csv-rows", "csv-cells",
        "xlsx-cell", "xlsx-shared-string", "xlsx-tag", "xlsx-columns", "xlsx-rows",
        "xlsx-zip-bomb", "xlsx-styles",
    ],
)  # fmt: skip
def test_a_file_past_a_bound_exits_2_names_the_bound_and_imports_nothing(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], None],
    message: str,
) -> None:
    if make is _many_cells:
        monkeypatch.setattr(import_source, "MAX_CELLS", 20)  # four million would take seconds
    add_cards(db, Client(name="Олена", phone="+380671234567"))
    before = cards(db)
    source = tmp_path / name
    make(source)

    assert run_cli(monkeypatch, db, tmp_path, source) == 2

    err = capsys.readouterr().err
    assert err.startswith(f"error: {name}: {message}") and err.count("\n") == 1, err
    assert cards(db) == before
    assert audit_entries(db) == []


# The importer's memory on hostile files, measured in a process of its own: it runs the
# command on each file in turn, and its peak resident memory must stay within MARGIN of what
# a small, harmless file took. Before the bounds, four of them took 0.2 to 0.9 GB (and a
# probe's 310 KB workbook 3.8 GB). An address-space limit makes a runaway fail here rather
# than on the machine.
MARGIN = 64 * MB
ADDRESS_SPACE = 1024 * MB
CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]),) * 2)
from hub.cli.main import main
for path in sys.argv[2:]:
    code = main(["import", "clients", path])
    print("run", code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""


def test_hostile_files_are_refused_within_bounded_memory(tmp_path: Path) -> None:
    harmless = tmp_path / "harmless.csv"  # read whole, and refused for its columns
    harmless.write_text("Колір,Розмір\n" + "червоний,M\n" * 1_000, encoding="utf-8")
    files = {
        # A client's notes, a shared string, unpack to 70 MB (0.9 GB of memory before).
        "bomb.xlsx": "xl/sharedStrings.xml unpacks to 70.0 MB",
        # A cell of 60 MB in a sheet within its bound: refused after its first 32,767.
        "cell.xlsx": "the cell in row 2, column C holds more than 32,767 characters",
        # 5,000 rows with a value in the last column (each held 16,384 columns wide before).
        "wide.xlsx": "row 2 has a value in column XFD (16,384)",
        "styles.xlsx": "xl/styles.xml unpacks to 1.0 MB",
        # Shared strings that say they unpack to 1 KB and unpack to 70 MB.
        "lying.xlsx": "not a readable .xlsx file (Bad CRC-32 for file 'xl/sharedStrings.xml')",
    }
    (tmp_path / "bomb.xlsx").write_bytes(strings_bomb())
    head = f'<worksheet xmlns="{SHEET_NS}"><sheetData><row r="2"><c r="C2" t="inlineStr"><is><t>'
    cell = huge(head, 60 * 1000 * 1000, "</t></is></c></row></sheetData></worksheet>")
    workbook(tmp_path / "cell.xlsx", {"xl/worksheets/sheet1.xml": cell})
    wide = sheet_xml(*(client_row(n, inline(f"XFD{n}", "x")) for n in range(2, 5_002)))
    workbook(tmp_path / "wide.xlsx", {"xl/worksheets/sheet1.xml": wide})
    _bloated_styles(tmp_path / "styles.xlsx")
    (tmp_path / "lying.xlsx").write_bytes(declaring(strings_bomb(), "xl/sharedStrings.xml", 1_000))
    assert max((tmp_path / n).stat().st_size for n in files) < 400_000

    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'never.sqlite3'}",  # refused before it
        "HUB_DATA_DIR": str(tmp_path / "hub-data"),
    }
    paths = [str(harmless), *(str(tmp_path / n) for n in files)]
    with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ADDRESS_SPACE), *paths],
            stdout=out,
            stderr=err,
            env=env,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        runs = [tuple(map(int, line.split()[1:])) for line in out if line.startswith("run ")]
        errors = err.read()

    assert child.returncode == 0, errors
    assert [code for code, _ in runs] == [2] * len(paths), errors
    refusals = [line for line in errors.splitlines() if line.startswith("error: ")]
    assert refusals[0].startswith("error: harmless.csv: found no phone or email column")
    for refusal, (name, message) in zip(refusals[1:], files.items(), strict=True):
        assert refusal.startswith(f"error: {name}: {message}"), refusal
    harmless_kb = runs[0][1]
    grown = {
        name: f"{(kb - harmless_kb) // 1024} MB"
        for name, (_, kb) in zip(files, runs[1:], strict=True)
    }
    assert (usage.ru_maxrss - harmless_kb) * 1024 < MARGIN, grown
    assert not (tmp_path / "never.sqlite3").exists()  # no file got as far as the database


# Progress ----------------------------------------------------------------------------------


def test_big_file_shows_progress_every_tenth_off_a_terminal(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clients.csv"
    lines = [f"Клієнт {n},+38067{n:07d}" for n in range(2_500)]
    source.write_text("Name,Phone\n" + "\n".join(lines) + "\n", encoding="utf-8")

    assert run_cli(monkeypatch, db, tmp_path, source) == 0

    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err if line.startswith("reading")] == [
        f"reading: {p}%" for p in range(10, 101, 10)
    ]
    assert err[-1] == "saving: 100% (2500/2500)"
    assert len(cards(db)) == 2_500


def test_small_file_shows_no_progress(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clients.csv"
    source.write_text("Name,Phone\nОлена,0671234567\n", encoding="utf-8")

    assert run_cli(monkeypatch, db, tmp_path, source) == 0

    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_in_place_on_a_terminal() -> None:
    stream = _Terminal()
    bar = ProgressBar(stream)
    for done in range(0, 5_001, 50):
        bar("reading", done, 5_000)

    output = stream.getvalue()
    assert output.count("\n") == 1 and output.endswith("100% 5000/5000\n")
    frames = output.split("\r")[1:]
    assert len(frames) == 101  # one per percent, not one per call
    assert frames[50].startswith("reading  [" + "#" * 15 + "." * 15 + "]  50%")


# Reading and detection, directly -------------------------------------------------------------

NAME_HEADERS = ["Ім'я", "ІМ’Я", "ПІБ", "Клієнт", "Имя", "ФИО", "Name", "Full name", "full_name"]
PHONE_HEADERS = ["Телефон", "Тел.", " тел ", "Мобільний", "Phone", "Mobile", "PHONE NUMBER"]
EMAIL_HEADERS = ["E-mail", "e mail", "Пошта", "Почта", "Email"]
NOTES_HEADERS = ["Примітки", "Коментар", "Комментарий", "Notes"]
VISIT_HEADERS = ["Останній візит", "Последний визит", "Last visit", "last-visit"]
TAG_HEADERS = ["Теги", "Мітки", "Метки", "Tags"]


@pytest.mark.parametrize(
    ("header", "field"),
    [(h, "name") for h in NAME_HEADERS]
    + [(h, "email") for h in EMAIL_HEADERS]
    + [(h, "notes") for h in NOTES_HEADERS]
    + [(h, "last_visit") for h in VISIT_HEADERS]
    + [(h, "tags") for h in TAG_HEADERS],
)
def test_headers_in_three_languages(header: str, field: str) -> None:
    table = SourceTable("t.csv", "csv", [["Телефон", header], ["0671234567", "x"]])
    assert detect_layout(table).columns == {"phone": 0, field: 1}


@pytest.mark.parametrize("header", PHONE_HEADERS)
def test_phone_headers(header: str) -> None:
    table = SourceTable("t.csv", "csv", [["Ім'я", header], ["Олена", "0671234567"]])
    assert detect_layout(table).columns == {"name": 0, "phone": 1}


@pytest.mark.parametrize(
    ("surname", "given"),
    [("Прізвище", "Ім'я"), ("Фамилия", "Имя"), ("Last name", "First name"), ("Surname", "Name")],
)
def test_first_and_last_name_columns_are_joined(surname: str, given: str) -> None:
    table = SourceTable(
        "t.csv", "csv", [[surname, given, "Phone"], ["Коваленко", "Олена", "0671234567"]]
    )
    plan = client_import.check_rows(table, detect_layout(table))
    assert [(r.name, r.phone) for r in plan.rows] == [("Олена Коваленко", "+380671234567")]


def test_without_a_header_phone_email_and_name_are_found_by_content() -> None:
    rows = [
        ["1", "Олена Коваленко", "olena@example.com", "+380671234567"],
        ["2", "Петро", "", "050 123 45 67"],
        ["3", "Ірина", "ira@example.com", ""],
    ]
    table = SourceTable("t.csv", "csv", rows)
    layout = detect_layout(table)
    plan = client_import.check_rows(table, layout)

    assert layout.header_row is None
    assert layout.columns == {"phone": 3, "email": 2, "name": 1}
    assert [(r.row, r.name, r.phone, r.email) for r in plan.rows] == [
        (1, "Олена Коваленко", "+380671234567", "olena@example.com"),
        (2, "Петро", "+380501234567", None),
        (3, "Ірина", None, "ira@example.com"),
    ]


def test_a_header_in_another_language_is_not_taken_for_a_client(tmp_path: Path) -> None:
    source = tmp_path / "clienti.csv"
    source.write_text(
        "Nome\tTelefono\tPosta\nGiulia\t+39 312 345 6789\tg@example.it\n", encoding="utf-8"
    )

    plan = load_clients_file(source)

    assert plan.settled == []
    assert [(r.row, r.name, r.phone, r.email) for r in plan.rows] == [
        (2, "Giulia", "+393123456789", "g@example.it")
    ]


def test_utf8_bom_and_old_long_distance_prefix(tmp_path: Path) -> None:
    source = tmp_path / "clients.csv"
    source.write_bytes("\ufeffКлієнт\tТелефон\nОлена\t8 067 123 45 67\n".encode())

    (row,) = load_clients_file(source).rows
    assert (row.name, row.phone) == ("Олена", "+380671234567")


def test_region_applies_to_numbers_without_a_country_code(tmp_path: Path) -> None:
    source = tmp_path / "clients.csv"
    source.write_text("Name,Phone\nAnna,512 345 678\nOlena,+380671234567\n", encoding="utf-8")

    plan = load_clients_file(source, region="PL")
    assert [r.phone for r in plan.rows] == ["+48512345678", "+380671234567"]


def test_several_numbers_in_one_cell_keep_the_rest_in_the_notes(tmp_path: Path) -> None:
    source = tmp_path / "clients.csv"
    source.write_text('Name,Phone\nOlena,"067 123 45 67, 050 765 43 21"\n', encoding="utf-8")

    (row,) = load_clients_file(source).rows
    assert (row.phone, row.other_phones) == ("+380671234567", ("+380507654321",))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("05.03.2024", utc(2024, 3, 4, 22, 0)),
        ("5.3.2024 9:15", utc(2024, 3, 5, 7, 15)),
        ("05/03/2024", utc(2024, 3, 4, 22, 0)),
        ("12/07/2024 15:30:10", utc(2024, 7, 12, 12, 30, 10)),
        ("2024-07-12", utc(2024, 7, 11, 21, 0)),
        ("2024-07-12 15:30", utc(2024, 7, 12, 12, 30)),
        ("2024-07-12T15:30:00+00:00", utc(2024, 7, 12, 15, 30)),
        ("05.03.24", utc(2024, 3, 4, 22, 0)),
        (45000, utc(2023, 3, 14, 22, 0)),
        (45000.5, utc(2023, 3, 15, 10, 0)),
        ("45000", utc(2023, 3, 14, 22, 0)),
        (datetime(2024, 3, 5, 14, 30), utc(2024, 3, 5, 12, 30)),
        (date(2024, 7, 1), utc(2024, 6, 30, 21, 0)),
        ("31.02.2024", None),
        ("вчора", None),
        ("", None),
        (None, None),
        (380671234567, None),
    ],
)
def test_last_visit_dates(value: object, expected: datetime | None) -> None:
    assert parse_visit(value, KYIV) == expected


def test_tags_split_trimmed_and_deduplicated() -> None:
    assert split_tags(" VIP ;манікюр| vip ,, педикюр ,манікюр") == ("VIP", "манікюр", "педикюр")


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("a,b,c\n1,2,3\n", ","),
        ("a;b;c\n1;2,5;3\n", ";"),
        ("a\tb\tc\n1\t2, 3\t4\n", "\t"),
        ('Name;Notes\nOlena;"one, two, three"\n', ";"),
    ],
)
def test_delimiter_is_sniffed(sample: str, delimiter: str) -> None:
    assert sniff_delimiter(sample) == delimiter


def test_errors_are_client_import_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientImportError, match="no such file"):
        load_clients_file(tmp_path / "nope.xlsx")


def test_help_names_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["import", "clients", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in client_import.FIELDS)
