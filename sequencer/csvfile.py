"""Pure: CSV text with a header row -> rows, each with the line it starts on.

Shared by contact lists (`enroll --csv`) and suppression lists (`suppress import`), so both
read a BOM, quoted values over several lines and ragged rows alike, and point at the same
line for the same row.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    line: int  # where the record starts (a quoted value may go on over several lines)
    fields: dict[str, str]  # by lower-cased header name
    problem: str | None = None  # why the record cannot be read (then `fields` is empty)


_RAGGED = 'more cells than header columns (put a value that contains a comma in "double quotes")'


def _line_breaks(value: str) -> int:
    return value.count("\n") + value.count("\r") - value.count("\r\n")


def read(text: str, name: str, required: str = "email") -> tuple[list[str], list[Row]]:
    """The lower-cased header and the rows that are not blank, in order; a row that cannot be
    read carries its `problem`. ValueError (`name:1: ...`) when the header row is unreadable
    or has no `required` column: then no row can be understood."""
    # A BOM is normally removed by reading with utf-8-sig; never let it hide the email column.
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
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
            rows.append(Row(line, {}, _RAGGED))
            continue
        fields = {k: (v or "") for k, v in row.items() if k}
        if any(v.strip() for v in fields.values()):  # else a blank line
            rows.append(Row(line, fields))
    return header, rows
