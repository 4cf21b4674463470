"""An .xlsx client export's rows, read within the bounds of crm_store.import_source.

An .xlsx is a zip of XML parts. The small ones (which sheets there are and where, which cell
styles are dates) are read by openpyxl once their unpacked size is checked. The sheet and its
shared strings are read here, with expat, a piece at a time: openpyxl's read-only mode keeps
every element of the sheet it has passed until the end and builds a cell's whole text before
anyone can measure it, so its memory follows the XML rather than the rows (a 50 KB file of
five million empty rows takes half a gigabyte there).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.parsers import expat

from openpyxl.packaging.manifest import Manifest
from openpyxl.packaging.relationship import get_rels_path
from openpyxl.reader.workbook import WorkbookParser
from openpyxl.styles.stylesheet import Stylesheet
from openpyxl.utils.cell import column_index_from_string
from openpyxl.utils.datetime import from_excel, from_ISO8601
from openpyxl.xml.constants import (
    ARC_CONTENT_TYPES,
    ARC_STYLE,
    ARC_WORKBOOK,
    SHARED_STRINGS,
    XLSM,
    XLSX,
    XLTM,
    XLTX,
)
from openpyxl.xml.functions import fromstring

from crm_store.import_source import (
    MAX_CELL_CHARS,
    MAX_COLUMNS,
    MAX_XLSX_PART_BYTES,
    MAX_XLSX_XML_BYTES,
    MAX_XML_RUN_BYTES,
    READ_CHUNK,
    BoundedRows,
    ClientImportError,
    megabytes,
)

__all__ = ["read_xlsx_rows"]


_WORKBOOK_TYPES = (XLTM, XLTX, XLSM, XLSX)  # openpyxl's order of preference
# SpreadsheetML's namespace, and the one of ISO's "strict" flavour; some writers use none.
_MAIN_NAMESPACES = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://purl.oclc.org/ooxml/spreadsheetml/main",
)


def _tags(*names: str) -> dict[str, str]:
    """Element names as expat reports them (namespace, a space, the name), to the name."""
    tags = {name: name for name in names}
    tags.update({f"{ns} {name}": name for ns in _MAIN_NAMESPACES for name in names})
    return tags


def read_xlsx_rows(path: Path, sheet: str | None) -> list[list[Any]]:
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            book = _Workbook(archive, name)
            part = book.sheet_part(sheet)
            shared = book.shared_strings()
            rows = BoundedRows(name)
            book.stream(part, _SheetReader(rows, shared, book).handlers())
            return rows.rows
    except ClientImportError:
        raise
    except Exception as exc:  # zipfile, expat and openpyxl fail on a damaged file in many ways
        raise ClientImportError(f"{name}: not a readable .xlsx file ({exc})") from None


class _Workbook:
    """What is needed to read a sheet's values: where each sheet is, the shared strings'
    part, which cell styles are dates, and the calendar (1900 or 1904)."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        self.archive = archive
        self.name = name
        manifest = Manifest.from_tree(fromstring(self._small(ARC_CONTENT_TYPES)))
        found = next(filter(None, map(manifest.find, _WORKBOOK_TYPES)), None)
        workbook = found.PartName[1:] if found is not None else ARC_WORKBOOK
        self._small(workbook)  # openpyxl reads these two itself
        self._small(get_rels_path(workbook))
        parser = WorkbookParser(archive, workbook, keep_links=False)
        parser.parse()
        self.epoch = parser.wb.epoch
        parts = set(archive.namelist())
        self.sheets = {
            sheet.name: rel.target
            for sheet, rel in parser.find_sheets()
            if "chartsheet" not in rel.Type and rel.target in parts
        }
        strings = manifest.find(SHARED_STRINGS)
        self.strings_part = strings.PartName[1:] if strings is not None else None
        self.date_styles: set[int] = set()
        self.timedelta_styles: set[int] = set()
        if ARC_STYLE in parts:
            styles = Stylesheet.from_tree(fromstring(self._small(ARC_STYLE)))
            self.date_styles = styles.date_formats
            self.timedelta_styles = styles.timedelta_formats

    def _small(self, part: str) -> bytes:
        """A part openpyxl parses whole, once its size is known to be small. zipfile unpacks
        no more than the size the zip declares (more is a CRC error), so the check holds."""
        size = self.archive.getinfo(part).file_size
        if size > MAX_XLSX_PART_BYTES:
            raise ClientImportError(
                f"{self.name}: {part} unpacks to {megabytes(size)}; a part other than a sheet and "
                f"its shared strings may unpack to at most {megabytes(MAX_XLSX_PART_BYTES)}"
            )
        return self.archive.read(part)

    def sheet_part(self, sheet: str | None) -> str:
        if sheet is None:
            if not self.sheets:
                raise ClientImportError(f"{self.name}: the workbook has no sheets")
            return next(iter(self.sheets.values()))
        if sheet not in self.sheets:
            names = ", ".join(repr(n) for n in self.sheets)
            raise ClientImportError(f"{self.name}: no sheet {sheet!r} (the sheets: {names})")
        return self.sheets[sheet]

    def shared_strings(self) -> list[str]:
        if self.strings_part is None or self.strings_part not in self.archive.namelist():
            return []
        reader = _SharedStrings(self.name)
        self.stream(self.strings_part, reader.handlers())
        return reader.strings

    def stream(self, part: str, handlers: _Handlers) -> None:
        """Feed a sheet or the shared strings to expat a piece at a time."""
        size = self.archive.getinfo(part).file_size
        if size > MAX_XLSX_XML_BYTES:
            raise ClientImportError(
                f"{self.name}: {part} unpacks to {megabytes(size)}; a sheet and its shared strings "
                f"may unpack to at most {megabytes(MAX_XLSX_XML_BYTES)} each"
            )
        parser = _parser(handlers)
        run = 0  # bytes since the last "<"
        with self.archive.open(part) as source:
            while chunk := source.read(READ_CHUNK):
                longest, run = _runs(run, chunk)
                if longest > MAX_XML_RUN_BYTES:
                    raise ClientImportError(
                        f"{self.name}: {part} has a tag or a text of more than "
                        f"{megabytes(MAX_XML_RUN_BYTES)}, the most one may have"
                    )
                parser.Parse(chunk, False)
            parser.Parse(b"", True)


def _runs(run: int, chunk: bytes) -> tuple[int, int]:
    """The longest run of bytes without a "<" as far as the end of `chunk`, and the run it
    ends with, given the run the chunk before ended with."""
    pieces = chunk.split(b"<")
    if len(pieces) == 1:
        return run + len(chunk), run + len(chunk)
    return max(run + len(pieces[0]), max(map(len, pieces[1:]))), len(pieces[-1])


_Handlers = tuple[
    Callable[[str, dict[str, str]], None], Callable[[str], None], Callable[[str], None]
]


def _parser(handlers: _Handlers) -> expat.XMLParserType:
    parser = expat.ParserCreate(namespace_separator=" ")
    # Text comes in pieces of up to 8 KB rather than one per line or entity.
    parser.buffer_text = True
    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = handlers
    parser.StartDoctypeDeclHandler = _no_doctype
    return parser


def _no_doctype(*_: object) -> None:
    # A spreadsheet part never has a DTD; entity tricks need one.
    raise ValueError("a DTD in a spreadsheet part")


class _CellText:
    """One cell's text, gathered piece by piece as the parser hands it over, refused past
    MAX_CELL_CHARS before it is held."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chars = 0

    def add(self, text: str) -> bool:
        """False (nothing kept) once the cell would be longer than a cell may be."""
        self.chars += len(text)
        if self.chars > MAX_CELL_CHARS:
            return False
        self.parts.append(text)
        return True

    def value(self) -> str:
        return "".join(self.parts)


class _SharedStrings:
    """xl/sharedStrings.xml: the text of each <si>, its runs joined, without the phonetic
    guide (<rPh>), as openpyxl reads it."""

    TAGS = _tags("si", "t", "rPh")

    def __init__(self, name: str) -> None:
        self.name = name
        self.strings: list[str] = []
        self.text = _CellText()
        self.collect = False
        self.item = False
        self.phonetic = 0

    def handlers(self) -> _Handlers:
        return self.start, self.end, self.data

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = self.TAGS.get(name)
        if tag == "t":
            self.collect = self.item and not self.phonetic
        elif tag == "si":
            self.item = True
            self.text = _CellText()
        elif tag == "rPh":
            self.phonetic += 1

    def end(self, name: str) -> None:
        tag = self.TAGS.get(name)
        if tag == "t":
            self.collect = False
        elif tag == "si":
            self.strings.append(self.text.value().replace("x005F_", ""))
            self.item = False
        elif tag == "rPh":
            self.phonetic -= 1

    def data(self, text: str) -> None:
        if self.collect and not self.text.add(text):
            raise ClientImportError(
                f"{self.name}: shared string {len(self.strings) + 1:,} (a cell's text) "
                f"has more than {MAX_CELL_CHARS:,} characters, the most a cell may hold"
            )


class _SheetReader:
    """A worksheet's <row>s and <c>ells as values, the way openpyxl's read-only mode with
    data_only reads them: shared strings looked up, numbers in a date style as dates,
    formulas as the value Excel last computed."""

    TAGS = _tags("row", "c", "v", "is", "t", "rPh")

    def __init__(self, rows: BoundedRows, shared: list[str], book: _Workbook) -> None:
        self.rows = rows
        self.shared = shared
        self.book = book
        self.row = 0
        self.cells: list[tuple[int, Any]] = []
        self.column = 0
        self.kind = "n"
        self.style: str | None = None
        self.text = _CellText()
        self.collect = False
        self.inline = False
        self.has_inline = False
        self.phonetic = 0

    def handlers(self) -> _Handlers:
        return self.start, self.end, self.data

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = self.TAGS.get(name)
        if tag == "c":
            ref = attrs.get("r")
            self.column = (
                column_index_from_string(ref.rstrip("0123456789")) if ref else self.column + 1
            )
            self.kind = attrs.get("t", "n")
            self.style = attrs.get("s")
            self.text = _CellText()
            self.has_inline = False
        elif tag == "v":
            self.collect = True
        elif tag == "t":
            self.collect = self.inline and not self.phonetic
        elif tag == "is":
            self.inline = self.has_inline = True
        elif tag == "rPh":
            self.phonetic += 1
        elif tag == "row":
            ref = attrs.get("r")
            number = _row_number(ref) if ref else self.row + 1
            if number <= self.row:
                raise ValueError(f"row {number} after row {self.row}")
            self.row = number
            self.cells = []
            self.column = 0

    def end(self, name: str) -> None:
        tag = self.TAGS.get(name)
        if tag == "v" or tag == "t":
            self.collect = False
        elif tag == "c":
            value = self._value()
            if value is not None and value != "":
                # Checked cell by cell: one row may hold millions of them.
                if self.column > MAX_COLUMNS or len(self.cells) == MAX_COLUMNS:
                    raise self.rows.too_wide(self.row, max(self.column, MAX_COLUMNS + 1))
                self.cells.append((self.column, value))
        elif tag == "row":
            row: list[Any] = [None] * max((column for column, _ in self.cells), default=0)
            for column, value in self.cells:
                row[column - 1] = value
            self.rows.add(self.row, row)
        elif tag == "is":
            self.inline = False
        elif tag == "rPh":
            self.phonetic -= 1

    def data(self, text: str) -> None:
        if self.collect and not self.text.add(text):
            raise self.rows.cell_too_long(self.row, self.column)

    def _value(self) -> Any:
        text = self.text.value()
        kind = self.kind
        if kind == "inlineStr":
            return text if self.has_inline else None
        if not text:
            return None
        if kind == "n":
            number = float(text) if "." in text or "E" in text or "e" in text else int(text)
            style = int(self.style) if self.style else 0
            if style in self.book.date_styles:
                try:
                    timedelta = style in self.book.timedelta_styles
                    return from_excel(number, self.book.epoch, timedelta=timedelta)
                except (OverflowError, ValueError):
                    return number  # out of the calendar's range: not a date after all
            return number
        if kind == "s":
            return self.shared[int(text)]
        if kind == "b":
            return bool(int(text))
        if kind == "d":
            return from_ISO8601(text)
        return text  # "str", a formula's text, and "e", an error such as #N/A


def _row_number(ref: str) -> int:
    # Some writers put "5.0"; openpyxl takes it, so does this.
    try:
        return int(ref)
    except ValueError:
        number = float(ref)
        if not number.is_integer():
            raise ValueError(f"{ref} is not a row number") from None
        return int(number)
