"""Return dates in absence notices: the first date stated after a return cue ("back on",
"bis", "de retour le") or before one that follows its date (Japanese "1月5日まで"), read from
lowered text; None when unsure, never a guess.

Owns: month and weekday names (tables in the language files), the date shapes (year first,
numeric, day-month, month-day, Japanese 年月日, a bare weekday) and filling in the year from
the notice's own Date. A numeric date such as 02/01/2027 is read in the order of the language
its cue is written in (`numeric_dates` in the language file); where both orders are in use
(English: `any`) it is read only when one order is impossible or the weekday written before
it picks one. Pure: the reference date is the message's Date header, passed in; never the
clock.
"""

from __future__ import annotations

import functools
import re
import unicodedata
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
RETURN_CUE_AFTER = lexicon.section(
    "return_cue_after",
    "phrases",
    'words that follow the return date instead of preceding it (Japanese "まで", "より")',
)

_WINDOW = 60  # characters read after a return cue
_WINDOW_BEFORE = 30  # characters read before a cue that follows its date
# Year first is read as year-month-day in every language (nobody writes year-day-month).
_DATE_YMD = re.compile(r"\b(\d{4})([-/.])(\d{1,2})\2(\d{1,2})\b")
_DATE_NUM = re.compile(r"\b(\d{1,2})([./-])(\d{1,2})(?:\2(\d{4}|\d{2}))?(?!\d)")
# Japanese and Chinese: 2027年1月5日, 1月5日 (full-width digits are folded first, by NFKC).
_DATE_CJK = re.compile(r"(?:(\d{4})\s*年\s*)?(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")


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
    """The first date stated with a return cue in a lowered text; None when unsure."""
    cues = [(m.start(), m.end(), m.group(0), False) for m in _cues(RETURN_CUE, lowered)]
    cues += [(m.start(), m.end(), m.group(0), True) for m in _cues(RETURN_CUE_AFTER, lowered)]
    for start, end, cue, after in sorted(cues):
        order = _order(RETURN_CUE_AFTER if after else RETURN_CUE, cue)
        if after:
            window = lowered[max(0, start - _WINDOW_BEFORE) : start]
            found = _candidates(window, sent, order)
            chosen = max(found)[1] if found else None  # the date nearest the cue
        else:
            found = _candidates(lowered[end : end + _WINDOW], sent, order)
            chosen = min(found)[1] if found else _weekday(lowered[end : end + _WINDOW], sent)
        if chosen:
            return chosen
    return None


def _cues(section: str, lowered: str) -> list[re.Match[str]]:
    return list(lexicon.phrases(section).finditer(lowered))


@functools.lru_cache(maxsize=256)
def _order(section: str, cue: str) -> str:
    """How numeric dates read after (or before) `cue`: the `numeric_dates` of the languages
    that list it, when they agree; "any" when they do not."""
    orders = {
        lang.numeric_dates
        for code, lang in lexicon.languages().items()
        if (found := lexicon.phrases(section, code).pattern) and found.fullmatch(cue)
    }
    return orders.pop() if len(orders) == 1 else "any"


def _candidates(window: str, sent: date | None, order: str) -> list[tuple[int, date]]:
    """Every date written in `window` with its position; unsure readings left out."""
    window = unicodedata.normalize("NFKC", window)  # full-width digits and signs
    shapes = _shapes()
    found: list[tuple[int, date | None]] = []
    taken: list[tuple[int, int]] = []
    for match in _DATE_YMD.finditer(window):
        found.append((match.start(), _mkdate(int(match[1]), int(match[3]), int(match[4]))))
        taken.append(match.span())
    for match in _DATE_CJK.finditer(window):
        year = int(match[1]) if match[1] else None
        found.append((match.start(), _year_fill(year, int(match[2]), int(match[3]), sent)))
        taken.append(match.span())
    for match in shapes.dmy.finditer(window):
        year = int(match[3]) if match[3] else None
        month = shapes.months[match[2]]
        found.append((match.start(), _year_fill(year, month, int(match[1]), sent)))
    for match in shapes.mdy.finditer(window):
        year = int(match[3]) if match[3] else None
        month = shapes.months[match[1]]
        found.append((match.start(), _year_fill(year, month, int(match[2]), sent)))
    for match in _DATE_NUM.finditer(window):
        if any(start <= match.start() < end for start, end in taken):
            continue
        found.append((match.start(), _numeric(match, window, sent, order)))
    return [(pos, d) for pos, d in found if d is not None]


def _weekday(window: str, sent: date | None) -> date | None:
    """A bare weekday ("back on Monday") means the next such day after the Date."""
    shapes = _shapes()
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


def _numeric(match: re.Match[str], window: str, sent: date | None, order: str) -> date | None:
    """d.m.(y) everywhere; d/m/y or m/d/y in the cue language's order. Where both orders are
    in use ("any"), a reading that cannot be a date or lies before the Date is dropped, and
    the weekday written just before picks between the rest; two readings left means unsure."""
    a, sep, b = int(match[1]), match[2], int(match[3])
    if match[4] is None and sep != ".":
        return None  # "9/11" or "10-12" without a year is more often not a date
    year = int(match[4]) if match[4] else None
    if year is not None and year < 100:
        year += 2000
    if sep == "." or order == "dmy":
        readings = [(a, b)]
    elif order == "mdy":
        readings = [(b, a)]
    else:  # any, or a year-first language writing the year last: both orders
        readings = [(a, b), (b, a)]
    options = list(
        dict.fromkeys(d for d in (_year_fill(year, m, dd, sent) for dd, m in readings) if d)
    )
    if len(options) > 1 and sent:
        options = [d for d in options if d >= sent] or options
    weekday = _shapes().weekday.search(window[: match.start()][-20:])
    if weekday and len(options) > 1:
        named = _shapes().weekdays[weekday[1]]
        options = [d for d in options if d.weekday() == named] or options
    return options[0] if len(options) == 1 else None
