"""A CSV client export's rows, read a line at a time within the bounds of
crm_store.import_source: a row too long is refused as its lines come in, before the csv module
holds it."""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from crm_store.import_source import (
    MAX_CELL_CHARS,
    MAX_ROW_CHARS,
    READ_CHUNK,
    BoundedRows,
    ClientImportError,
)

__all__ = ["read_csv_rows", "sniff_delimiter"]

_SNIFF_LINES = 50


def read_csv_rows(path: Path) -> list[list[Any]]:
    """UTF-8 (with or without a BOM), UTF-16 with a BOM (Excel's "Unicode text"), else
    Windows-1251: what Excel in a Ukrainian or Russian Windows saves as "CSV"."""
    name = path.name
    encoding, declared = _csv_encoding(path)
    rows = BoundedRows(name)
    number = 0
    try:
        with path.open(encoding=encoding, newline="") as stream:
            sample = [stream.readline(MAX_ROW_CHARS) for _ in range(_SNIFF_LINES)]
        delimiter = sniff_delimiter("".join(sample))
        with path.open(encoding=encoding, newline="") as stream:
            lines = _Lines(stream)
            for number, cells in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
                lines.chars = 0
                while cells and not cells[-1]:
                    cells.pop()
                if cells and max(map(len, cells)) > MAX_CELL_CHARS:
                    column = next(i for i, c in enumerate(cells, 1) if len(c) > MAX_CELL_CHARS)
                    raise rows.cell_too_long(number, column)
                rows.add(number, cells)
    except _RowTooLong:
        raise ClientImportError(
            f"{name}: row {number + 1:,} is longer than {MAX_ROW_CHARS:,} characters, "
            "the most a row may have"
        ) from None
    except UnicodeDecodeError:
        if declared:
            raise ClientImportError(
                f"{name}: the text is not in the encoding it declares"
            ) from None
        raise ClientImportError(
            f"{name}: can't decode the text (tried UTF-8 and Windows-1251); "
            "save the file as CSV UTF-8"
        ) from None
    except csv.Error as exc:
        raise ClientImportError(f"{name}: not a readable CSV file ({exc})") from None
    return rows.rows


def _csv_encoding(path: Path) -> tuple[str, bool]:
    """The encoding to read the file in, and whether the file says so itself (a BOM)."""
    with path.open("rb") as raw:
        head = raw.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig", True
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16", True
        raw.seek(0)
        utf8 = codecs.getincrementaldecoder("utf-8")()
        valid = True
        while chunk := raw.read(READ_CHUNK):
            if b"\x00" in chunk:
                raise ClientImportError(f"{path.name}: not a text file")
            if valid:
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError:
                    valid = False
        if valid:
            try:
                utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                valid = False
    return ("utf-8" if valid else "cp1251"), False


class _RowTooLong(Exception):
    pass


class _Lines:
    """The file's lines for csv.reader, refused as soon as the row they make (a row goes on
    over several lines inside quotes) is longer than MAX_ROW_CHARS; the reader sets `chars`
    back to 0 at each row."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        readline = self.stream.readline
        while line := readline(MAX_ROW_CHARS + 1):
            self.chars += len(line)
            if self.chars > MAX_ROW_CHARS:
                raise _RowTooLong
            yield line


def sniff_delimiter(text: str) -> str:
    """The one of `,` `;` tab that splits the first lines into the same number of fields.

    csv.Sniffer guesses from character frequencies and is easily fooled by commas inside
    notes, so each candidate is tried and the most consistent split wins."""
    sample = [line for line in text.splitlines()[:_SNIFF_LINES] if line.strip()][:20]
    best, best_score = ",", (False, 0, 0)
    for delimiter in (",", ";", "\t"):
        counts = Counter(len(row) for row in csv.reader(sample, delimiter=delimiter))
        if not counts:
            continue
        fields, lines = counts.most_common(1)[0]
        score = (fields > 1, lines, fields)
        if score > best_score:
            best, best_score = delimiter, score
    return best
