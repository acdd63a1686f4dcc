"""CSV files as people have them -> rows, each with the line it starts on.

Shared by contact lists (`enroll --csv`) and suppression lists (`suppress import`), so both
read a BOM, quoted values over several lines and ragged rows alike, and point at the same
line for the same row.

Files come from Excel and CRMs, not from a spec: Excel in much of Europe saves with semicolons
(the comma is the decimal sign there) in Windows-1252, "Unicode Text" is tab-separated, and
"CSV UTF-8" starts with a BOM. `load` takes the bytes as saved (`decode`), `read` sniffs the
delimiter from the header row. `decode` and `read` are pure; `load` is the one file read.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    line: int  # where the record starts (a quoted value may go on over several lines)
    fields: dict[str, str]  # by lower-cased header name
    problem: str | None = None  # why the record cannot be read (then `fields` is empty)


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


def decode(data: bytes, name: str) -> tuple[str, str | None]:
    """The text of a CSV as saved, and a note when it was not UTF-8 (so the user can check
    the accents). UTF-8 with or without BOM, UTF-16 with BOM (Excel's "Unicode Text");
    anything else is read as Windows-1252, or Latin-1 for the five bytes it leaves undefined
    (both decode any byte, so a wrong guess shows as odd letters, never a lost row)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), f"{name}: read as UTF-16 (from its byte order mark)"
        except UnicodeDecodeError:
            pass  # not really UTF-16: read as bytes below, so line 1 gets a clear error
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    try:
        text, encoding = data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "Latin-1"
    return text, (
        f"{name}: not UTF-8, read as {encoding} (as Excel saves CSV in Western Europe); "
        'check the accents, or save it as "CSV UTF-8" to be sure'
    )


def load(path: Path) -> tuple[str, str | None]:
    """`decode` of the file at `path`; ValueError (`path: cannot read it: ...`) if it cannot be
    read at all."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return decode(data, str(path))


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
    # A BOM is normally removed by `decode`; never let it hide the email column.
    text = text.removeprefix("\ufeff")
    delimiter = sniff(re.split(r"\r\n|\r|\n", text[: _SNIFF_MAX + 1], maxsplit=1)[0], name)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ValueError(f"{name}:1: not a readable CSV header row: {exc}") from None
    if required not in header:
        raise ValueError(
            f"{name}:1: the header row needs an '{required}' column "
            f"(found: {', '.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    rows: list[Row] = []
    end = 1  # the last line of the previous record
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a cell over the csv module's size limit
            rows.append(Row(reader.line_num, {}, f"not readable as CSV: {exc}"))
            break
        # line_num is the record's last line; a quoted value may span lines: point at its first.
        cells = [v for v in row.values() if isinstance(v, str)] + list(row.get(None) or [])
        line = max(end + 1, reader.line_num - sum(_line_breaks(v) for v in cells))
        end = reader.line_num
        if None in row:
            rows.append(Row(line, {}, _ragged(delimiter)))
            continue
        fields = {k: (v or "") for k, v in row.items() if k}
        if any(v.strip() for v in fields.values()):  # else a blank line
            rows.append(Row(line, fields))
    return header, rows


def _line_breaks(value: str) -> int:
    return value.count("\n") + value.count("\r") - value.count("\r\n")
