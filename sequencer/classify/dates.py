"""Return dates in absence notices: the first date stated after a return cue ("back on",
"bis", "de retour le"), read from lowered text, None when unsure.

Owns: month and weekday names (tables in the language files), the date shapes (ISO, numeric,
day-month, month-day, a bare weekday) and filling in the year from the notice's own Date.
Pure: the reference date is the message's Date header, passed in; never the clock.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, timedelta

from sequencer.classify import lexicon

RETURN_CUE = lexicon.section(
    "return_cue",
    "phrases",
    'words after which an absence notice gives its return date ("back", "until", "bis")',
)
MONTHS = lexicon.section("months", "table", "month names and abbreviations: month number 1-12")
WEEKDAYS = lexicon.section("weekdays", "table", "weekday names: 0 (Monday) to 6 (Sunday)")
ORDINAL_SUFFIX = lexicon.section(
    "ordinal_suffix", "phrases", 'what follows a day number ("3rd", "1er", "5º")'
)
DATE_JOINER = lexicon.section(
    "date_joiner", "phrases", 'words between day, month and year ("5 de enero de 2027")'
)

_SOON = timedelta(days=42)  # absences are short: a reading further off than this is doubtful
_WINDOW = 60  # characters read after a return cue
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DATE_NUM = re.compile(r"\b(\d{1,2})([./-])(\d{1,2})(?:\2(\d{4}|\d{2}))?(?!\d)")


@dataclass(frozen=True)
class _Shapes:
    """The date patterns, built once from the language files' names."""

    months: dict[str, int]
    weekdays: dict[str, int]
    dmy: re.Pattern[str]
    mdy: re.Pattern[str]
    weekday: re.Pattern[str]


@functools.cache  # the phrase files are read once per process
def _shapes() -> _Shapes:
    months = {k: int(v) for k, v in lexicon.merged_table(MONTHS).items()}
    weekdays = {k: int(v) for k, v in lexicon.merged_table(WEEKDAYS).items()}
    month = "|".join(re.escape(m) for m in sorted(months, key=len, reverse=True))
    weekday = "|".join(re.escape(w) for w in sorted(weekdays, key=len, reverse=True))
    suffixes = sorted(lexicon.phrases(ORDINAL_SUFFIX).every, key=len, reverse=True)
    suffix = "|".join([*(re.escape(s) for s in suffixes), r"\."])
    joiners = lexicon.phrases(DATE_JOINER).every
    joiner = rf"(?:{'|'.join(re.escape(j) for j in joiners)})\s+" if joiners else "(?!)"
    return _Shapes(
        months=months,
        weekdays=weekdays,
        dmy=re.compile(
            rf"\b(\d{{1,2}})(?:{suffix})?\s+(?:{joiner})?({month})\b\.?"
            rf"(?:,?\s+(?:{joiner})?(\d{{4}}))?"
        ),
        mdy=re.compile(rf"\b({month})\.?\s+(\d{{1,2}})(?:{suffix})?\b(?:,?\s+(\d{{4}}))?"),
        weekday=re.compile(rf"\b({weekday})\b"),
    )


def return_date(lowered: str, sent: date | None) -> date | None:
    """The first date stated after a return cue in a lowered text; None when unsure."""
    for cue in lexicon.phrases(RETURN_CUE).finditer(lowered):
        found = _date_in(lowered[cue.end() : cue.end() + _WINDOW], sent)
        if found:
            return found
    return None


def _date_in(window: str, sent: date | None) -> date | None:
    """The earliest date written in `window`; a bare weekday means the next such day."""
    shapes = _shapes()
    iso = _DATE_ISO.search(window)
    candidates: list[tuple[int, date | None]] = []
    if iso:
        candidates.append((iso.start(), _mkdate(int(iso[1]), int(iso[2]), int(iso[3]))))
    dmy = shapes.dmy.search(window)
    if dmy:
        year = int(dmy[3]) if dmy[3] else None
        candidates.append((dmy.start(), _year_fill(year, shapes.months[dmy[2]], int(dmy[1]), sent)))
    mdy = shapes.mdy.search(window)
    if mdy:
        year = int(mdy[3]) if mdy[3] else None
        candidates.append((mdy.start(), _year_fill(year, shapes.months[mdy[1]], int(mdy[2]), sent)))
    for match in _DATE_NUM.finditer(window):
        if iso and iso.start() <= match.start() < iso.end():
            continue
        candidates.append((match.start(), _numeric(match, window, sent)))
        break
    dated = sorted((pos, d) for pos, d in candidates if d is not None)
    if dated:
        return dated[0][1]
    weekday = shapes.weekday.search(window)
    if weekday and sent:
        ahead = (shapes.weekdays[weekday[1]] - sent.weekday()) % 7 or 7
        return sent + timedelta(days=ahead)
    return None


def _mkdate(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year_fill(year: int | None, month: int, day: int, sent: date | None) -> date | None:
    """A day and month without a year belong to the Date's year, or the next one if past."""
    if year is not None:
        return _mkdate(year, month, day)
    if sent is None:
        return None
    found = _mkdate(sent.year, month, day)
    if found and found < sent - timedelta(days=7):
        found = _mkdate(sent.year + 1, month, day)
    return found


def _numeric(match: re.Match[str], window: str, sent: date | None) -> date | None:
    """d.m.(y), or d/m/y against m/d/y: the weekday named decides, else a reading soon after
    Date when the other one is far off (absences are short); both plausible means unsure."""
    a, sep, b = int(match[1]), match[2], int(match[3])
    if match[4] is None and sep != ".":
        return None  # "9/11" or "10-12" without a year is more often not a date
    year = int(match[4]) if match[4] else None
    if year is not None and year < 100:
        year += 2000
    readings = [(a, b)] if sep == "." else [(a, b), (b, a)]
    options = list(
        dict.fromkeys(d for d in (_year_fill(year, m, dd, sent) for dd, m in readings) if d)
    )
    weekday = _shapes().weekday.search(window[: match.start()][-20:])
    if weekday and len(options) > 1:
        named = _shapes().weekdays[weekday[1]]
        options = [d for d in options if d.weekday() == named] or options
    if len(options) > 1 and sent:
        soon = [d for d in options if timedelta(0) <= d - sent <= _SOON]
        options = soon if len(soon) == 1 else []
    return options[0] if len(options) == 1 else None
