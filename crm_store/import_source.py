"""A client export's rows as they are read, within bounds: what the CSV and the XLSX readers
(crm_store.import_csv, crm_store.import_xlsx) share.

The file comes from another system or from someone's hands, and all of its rows are held
until they are checked (crm_store.client_import), so its size is bounded while it is read:
the first bound a file goes past refuses it with a message naming the bound, before anything
is imported. The bounds are far above what a real salon's export has (tens of thousands of
rows, a few dozen columns, notes of a few KB) and keep the importer's memory to a few hundred
MB whatever the file. See docs/import.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Literal

from openpyxl.utils.cell import get_column_letter

__all__ = [
    "CSV_SUFFIXES",
    "MAX_CELLS",
    "MAX_CELL_CHARS",
    "MAX_COLUMNS",
    "MAX_FILE_BYTES",
    "MAX_ROWS",
    "MAX_ROW_CHARS",
    "MAX_XLSX_PART_BYTES",
    "MAX_XLSX_XML_BYTES",
    "MAX_XML_RUN_BYTES",
    "MB",
    "READ_CHUNK",
    "XLSX_SUFFIXES",
    "BoundedRows",
    "ClientImportError",
    "SourceTable",
    "blank_row",
    "cell_text",
    "column_name",
    "megabytes",
    "trim_trailing_empty",
]

CSV_SUFFIXES = (".csv", ".tsv")
XLSX_SUFFIXES = (".xlsx", ".xlsm")

MB = 1024 * 1024
# Bounds. A big salon has tens of thousands of clients; this leaves room for a chain's list.
MAX_ROWS = 100_000
# Exports have one to a few dozen columns; a sheet kept by hand with a column per visit may
# have a few hundred. 256 is as wide as a sheet could be before Excel 2007.
MAX_COLUMNS = 256
# What Excel itself holds in a cell; a client's notes are a few KB.
MAX_CELL_CHARS = 32_767
# Cells held, each row counted up to its last filled cell: 100,000 rows of 40 columns. With
# the bounds above alone, a 64 MB file of two-letter cells would take over a gigabyte.
MAX_CELLS = 4_000_000
# A CSV row is a few hundred characters; one with a full cell, its quotes doubled, fits. Below
# csv's own field limit (131,072), so that limit never speaks first.
MAX_ROW_CHARS = 100_000
# The file itself, CSV or XLSX: 100,000 rows of two dozen short columns is ~40 MB of CSV.
MAX_FILE_BYTES = 64 * MB
# An .xlsx's sheet, and its shared strings, unpacked: ~36 MB for 100,000 rows of six columns
# the way openpyxl writes them (a string in every cell), Excel's way takes less.
MAX_XLSX_XML_BYTES = 64 * MB
# Any other part read (the content types, the workbook, its relationships, the styles),
# unpacked. openpyxl parses these whole, at up to 120 bytes of memory a byte of XML; a real
# one is a few KB, a styles part bloated by years of copy and paste a few hundred.
MAX_XLSX_PART_BYTES = 1 * MB

# Bytes of a sheet or the shared strings between one "<" and the next: a tag, or a text.
# Expat holds a tag whole and reads it again with each new piece of the file, so one tag of
# 60 MB took 35 s. A cell of the longest text, every character escaped, is 200 KB of XML.
MAX_XML_RUN_BYTES = 1 * MB

READ_CHUNK = 1 << 16  # bytes read from a file or a zip at a time


class ClientImportError(Exception):
    """The file or the options can't be used; nothing was imported."""


@dataclass(frozen=True)
class SourceTable:
    """The cells of a file, row by row as a spreadsheet shows them (index 0 is row 1)."""

    name: str
    kind: Literal["csv", "xlsx"]
    rows: list[list[Any]]


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        # A phone typed into a number cell comes back as 380671234567.0.
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value).replace("\x00", "").strip()


def blank_row(row: list[Any]) -> bool:
    return all(not cell_text(v) for v in row)


def trim_trailing_empty(rows: list[list[Any]]) -> list[list[Any]]:
    """Formatted but empty rows after the data are not rows anyone sees as part of it."""
    end = len(rows)
    while end and blank_row(rows[end - 1]):
        end -= 1
    return rows[:end]


def megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size % MB else f"{size // MB} MB"


class BoundedRows:
    """The rows read so far. A file is refused at the first row that goes past a bound."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[list[Any]] = []
        self.cells = 0

    def add(self, number: int, cells: list[Any]) -> None:
        """Row `number` (1 is the first), its cells from column A up to the last filled one;
        rows come in order."""
        if number > MAX_ROWS:
            # Empty rows past the bound are formatting nobody sees; rows with data are not.
            if blank_row(cells):
                return
            raise ClientImportError(
                f"{self.name}: row {number:,} has data; a file may have at most {MAX_ROWS:,} "
                "rows (split it)"
            )
        if len(cells) > MAX_COLUMNS:
            raise self.too_wide(number, len(cells))
        self.cells += len(cells)
        if self.cells > MAX_CELLS:
            raise ClientImportError(
                f"{self.name}: more than {MAX_CELLS:,} cells by row {number:,}; "
                f"a file may have at most {MAX_CELLS:,} (split it)"
            )
        if len(self.rows) < number - 1:
            self.rows.extend([] for _ in range(number - 1 - len(self.rows)))
        self.rows.append(cells)

    def too_wide(self, number: int, column: int) -> ClientImportError:
        return ClientImportError(
            f"{self.name}: row {number:,} has a value in column {column_name(column)}; "
            f"a file may have at most {MAX_COLUMNS} columns"
        )

    def cell_too_long(self, number: int, column: int) -> ClientImportError:
        return ClientImportError(
            f"{self.name}: the cell in row {number:,}, column {column_name(column)} holds "
            f"more than {MAX_CELL_CHARS:,} characters, the most a cell may hold"
        )


def column_name(column: int) -> str:
    """A column as a spreadsheet names it, with its number past Z."""
    letters = get_column_letter(column) if column <= 18_278 else "?"
    return letters if column <= 26 else f"{letters} ({column:,})"
