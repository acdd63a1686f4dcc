"""CSV files as people have them -> rows, each with the line it starts on.

Shared by contact lists (`enroll --csv`) and suppression lists (`suppress import`), so both
read a BOM, quoted values over several lines and ragged rows alike, and point at the same
line for the same row.

Files come from Excel and CRMs, not from a spec: Excel in much of Europe saves with semicolons
(the comma is the decimal sign there) in Windows-1252, "Unicode Text" is tab-separated, and
"CSV UTF-8" starts with a BOM. `load` takes the bytes as saved (`decode`), `read` sniffs the
delimiter from the header row. `decode` and `read` are pure; `load` is the one file read.

`opened` and `stream` are the same reading for a file of any size (`enroll --csv` of a million
rows): the encoding is chosen by one pass over the bytes, then the rows are decoded and parsed
one at a time, so memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@dataclass(frozen=True)
class Row:
    line: int  # where the record starts (a quoted value may go on over several lines)
    fields: dict[str, str]  # by lower-cased header name
    # Why the record cannot be read; `fields` then holds what could be (a ragged row's cells
    # under the header, as csv.DictReader gives them; nothing when the reader gave up).
    problem: str | None = None


#: The delimiters spreadsheets and CRMs save with, and how a message names each.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}

_QUOTED = re.compile(r'"(?:[^"]|"")*"')
#: Enough of line 1 to sniff any real header; keeps the sniffer's regexes off a hostile line.
_SNIFF_MAX = 4096


def _ragged(delimiter: str) -> str:
    name = DELIMITERS[delimiter]
    return (
        f"more cells than header columns (the columns are separated by a {name}: put a value "
        f'that contains a {name} in "double quotes")'
    )


def _note(encoding: str, name: str) -> str | None:
    """What to tell the user about the encoding a file was read in (nothing for UTF-8)."""
    if encoding == "utf-16":
        return f"{name}: read as UTF-16 (from its byte order mark)"
    if encoding == "utf-8-sig":
        return None
    label = "Windows-1252" if encoding == "cp1252" else "Latin-1"
    return (
        f"{name}: not UTF-8, read as {label} (as Excel saves CSV in Western Europe); "
        'check the accents, or save it as "CSV UTF-8" to be sure'
    )


def decode(data: bytes, name: str) -> tuple[str, str | None]:
    """The text of a CSV as saved, and a note when it was not UTF-8 (so the user can check
    the accents). UTF-8 with or without BOM, UTF-16 with BOM (Excel's "Unicode Text");
    anything else is read as Windows-1252, or Latin-1 for the five bytes it leaves undefined
    (both decode any byte, so a wrong guess shows as odd letters, never a lost row)."""
    encoding = _encoding([data])
    return data.decode(encoding), _note(encoding, name)


def _decodes(encoding: str, blocks: Iterable[bytes]) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        for block in blocks:
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _encoding(blocks: Iterable[bytes] | None = None, path: Path | None = None) -> str:
    """The codec `decode` reads these bytes with (given whole, or as the blocks of `path`,
    read again for each candidate so that memory stays one block)."""

    def each() -> Iterable[bytes]:
        if blocks is not None:
            yield from blocks
            return
        assert path is not None
        with path.open("rb") as raw:
            while block := raw.read(_BLOCK):
                yield block

    first = next(iter(each()), b"")
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and _decodes("utf-16", each()):
        return "utf-16"  # else not really UTF-16: read as bytes, so line 1 gets a clear error
    if _decodes("utf-8-sig", each()):
        return "utf-8-sig"
    return "cp1252" if _decodes("cp1252", each()) else "latin-1"


#: Bytes read at a time when the encoding is chosen.
_BLOCK = 1 << 20


def load(path: Path) -> tuple[str, str | None]:
    """`decode` of the file at `path`; ValueError (`path: cannot read it: ...`) if it cannot be
    read at all."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return decode(data, str(path))


@contextmanager
def opened(path: Path) -> Iterator[tuple[TextIO, str | None]]:
    """The file at `path` as text, decoded as `decode` would (the note too), read as it is
    used rather than all at once. ValueError (`path: cannot read it: ...`) if it cannot be."""
    try:
        encoding = _encoding(path=path)
        handle = path.open(encoding=encoding, newline="")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    with handle:
        yield handle, _note(encoding, str(path))


def sniff(header_line: str, name: str) -> str:
    """The delimiter of a header row: comma, semicolon or tab. ValueError naming line 1 when
    the row mixes them, since then no reading of the rows can be trusted."""
    sample = header_line[:_SNIFF_MAX]
    seen = [d for d in DELIMITERS if d in _QUOTED.sub("", sample)]
    if not seen:
        return ","  # one column (a plain list of addresses): any delimiter reads it
    if len(seen) > 1:
        names = " and ".join(f"{DELIMITERS[d]}s" for d in seen)
        raise ValueError(
            f"{name}:1: the header row has both {names}, so the columns cannot be told apart; "
            "save the file again with one delimiter (comma, semicolon or tab), and put a "
            'column name that contains one in "double quotes"'
        )
    try:
        found = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        found = seen[0]
    return found if found in DELIMITERS else seen[0]


def read(text: str, name: str, required: str = "email") -> tuple[list[str], list[Row]]:
    """The lower-cased header and the rows that are not blank, in order; a row that cannot be
    read carries its `problem`. ValueError (`name:1: ...`) when the header row is unreadable,
    mixes delimiters or has no `required` column: then no row can be understood."""
    header, rows = stream(io.StringIO(text, newline=""), name, required)
    return header, list(rows)


def stream(
    source: TextIO, name: str, required: str | None = "email"
) -> tuple[list[str], Iterator[Row]]:
    """`read` of an open text file (opened with newline=""), the rows read as they are asked
    for. The header is read at once: its errors are raised here. `required=None` reads a
    header without the column (`check --csv` lints the rows, then reports it: `require`)."""
    source.seek(0)
    head = source.read(_SNIFF_MAX + 1)
    # A BOM is normally removed by `decode`; never let it hide the email column.
    skip = 1 if head.startswith("\ufeff") else 0
    delimiter = sniff(re.split(r"\r\n|\r|\n", head[skip:], maxsplit=1)[0], name)
    source.seek(0)
    source.read(skip)
    reader = csv.reader(source, delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error as exc:
        raise ValueError(f"{name}:1: not a readable CSV header row: {exc}") from None
    if required is not None:
        require(header, required, name)
    return header, _rows(reader, header, delimiter, name)


def require(header: list[str], required: str, name: str) -> None:
    """ValueError (`name:1: ...`) unless the header row has the `required` column."""
    if required not in header:
        raise ValueError(
            f"{name}:1: the header row needs an '{required}' column "
            f"(found: {', '.join(header) or 'nothing'})"
        )


def _rows(reader: Any, header: list[str], delimiter: str, name: str) -> Iterator[Row]:
    """The records after the header, as csv.DictReader would give them (blank lines skipped,
    missing cells empty), with the line each starts on."""
    end = 1  # the last line of the previous record
    named = [(i, h) for i, h in enumerate(header) if h]
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over the csv module's size limit
            yield Row(reader.line_num, {}, f"not readable as CSV: {exc}")
            return
        except UnicodeDecodeError:  # the file changed since its encoding was chosen
            yield Row(reader.line_num + 1, {}, f"{name} changed while it was read; try again")
            return
        if not cells:
            continue  # a blank line
        # line_num is the record's last line; a quoted value may span lines: point at its first.
        joined = "".join(cells)  # most rows have no line break at all: one look at them
        many = "\n" in joined or "\r" in joined
        line = max(end + 1, reader.line_num - (sum(map(_line_breaks, cells)) if many else 0))
        end = reader.line_num
        if len(cells) > len(header):
            yield Row(line, {h: cells[i] for i, h in named}, _ragged(delimiter))
            continue
        cells += [""] * (len(header) - len(cells))
        fields = {h: cells[i] for i, h in named}
        if any(v.strip() for v in fields.values()):  # else a blank line
            yield Row(line, fields)


def _line_breaks(value: str) -> int:
    return value.count("\n") + value.count("\r") - value.count("\r\n")
