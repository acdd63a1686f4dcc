"""Period arithmetic for "contact me later" replies: the first day of the period a person named.

Owns: turning a period rule (the values of the `intent_periods` table in `lang/<code>.yaml`)
and the reply's date into a calendar date. Pure and total: every function takes the reply's
date and returns a day strictly after it, at most 15 months later (a span a person counted,
days:N or months:N, at most two years), so a follow-up is never in the past and never absurdly
far off.

The rule vocabulary (one value per phrase in the table; `README`-level documentation lives in
`RULES` below, which is also what a broken table entry's error lists):

    month:MM        the next 1 MM (month:09 = the next 1 September)
    month:next      the 1st of the next month
    quarter:N       the next start of quarter N (fiscal quarters when fiscal_year_start is set)
    quarter:next    the start of the quarter after the current one
    half:N          the next start of half-year N (fiscal)
    half:next       the start of the half-year after the current one
    year:next       the next 1 January
    fiscal_year:next  the next start of the fiscal year
    week:next       the next Monday
    days:N          N days after the reply (1..400)
    months:N        N calendar months after the reply, on the same day of the month (the
                    month's last day when it is shorter; 1..24)
    holidays        "after the holidays": the next 1 January when written in Oct-Dec, the next
                    1 September when written in May-Aug, else the 1st of the next month
    month:this, quarter:this, half:this, year:this, fiscal_year:this
                    the period the reply is written in; alone it resolves to the day after it,
                    but the reader only reads it with +end or +after ("the end of this
                    quarter", "after this year"): "not this year" says why, not when
    easter, pentecost, carnival
                    a moveable feast (dateutil's Western Easter): the first day after its last
                    holiday (Easter Monday, Whit Monday, Shrove Tuesday) of the next one; "at
                    Easter" and "after Easter" are both the Tuesday after Easter Monday, when a
                    salesperson can write again

A rule may carry one modifier, written in the table or found by the reader in the words
before a period ("end of Q2", "after the first quarter", "before Easter"):

    +end      the first day of the last part of the period that is still ahead: of a year its
              last quarter (the end of the year is 1 October), of a half its last quarter, of a
              quarter its last month (the end of Q2 is 1 June), of a month its 21st (as
              `intent_month_part` reads "end of March"). Written when that part has begun, the
              next narrower part still ahead is taken (the end of the year, written in November,
              is 1 December; on 22 December the 21st has passed too, so it is 1 January, the
              day the period is over). A named period that is over is next year's ("the end of
              Q1" written in May is next 1 March).
    +after    the first day after the period (after Q1 is 1 April; after the end of the year
              is 1 January; after Easter is the Tuesday after Easter Monday); a ":next"
              period keeps its first day ("after the new year" is 1 January)
    +before   feasts only: the Monday two weeks before the feast's Sunday, or the Monday of the
              week before it when that has passed, or, when the feast is too close for either,
              the day after its last holiday (a "before" that can no longer be met)
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta

from dateutil.easter import easter  # type: ignore[import-untyped]  # via dateparser/holidays

RULES = (
    "month:01..month:12",
    "month:next",
    "quarter:1..quarter:4",
    "quarter:next",
    "half:1",
    "half:2",
    "half:next",
    "year:next",
    "fiscal_year:next",
    "week:next",
    "days:N (1..400)",
    "months:N (1..24)",
    "holidays",
    "month:this, quarter:this, half:this, year:this, fiscal_year:this",
    "easter, pentecost, carnival",
    "any of these with +end or +after; a feast with +after or +before",
)

_BASE = re.compile(
    r"month:(?:0?[1-9]|1[0-2]|next|this)|quarter:(?:[1-4]|next|this)|half:(?:[12]|next|this)"
    r"|year:(?:next|this)|fiscal_year:(?:next|this)|week:next|days:(?:[1-9]\d{0,2})"
    r"|months:(?:[1-9]\d?)|holidays|easter|pentecost|carnival"
)
_CALENDAR = ("month", "quarter", "half", "year", "fiscal_year")  # periods with a start and end
_LENGTH = {"month": 1, "quarter": 3, "half": 6, "year": 12, "fiscal_year": 12}
# A moveable feast: (its Sunday, its last holiday), in days from Western Easter Sunday.
FEASTS = {"easter": (0, 1), "pentecost": (49, 50), "carnival": (-49, -47)}


def check_fiscal_year_start(value: tuple[int, int]) -> tuple[int, int]:
    """`value` if it is a real (month, day) in every year, else ValueError saying the fix."""
    month, day = value
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2001, month)[1]:
        raise ValueError(
            f"fiscal_year_start {month:02d}-{day:02d} is not a day of every year; "
            'write "MM-DD", for example "04-01"'
        )
    return value


def split_rule(rule: str) -> tuple[str, str]:
    """(base rule, modifier or ""): "quarter:2+end" is ("quarter:2", "end")."""
    base, _, modifier = rule.partition("+")
    return base, modifier


def valid_rule(rule: str) -> bool:
    """Whether `rule` is in the vocabulary above (days up to 400, months up to 24)."""
    base, modifier = split_rule(rule)
    if not _BASE.fullmatch(base):
        return False
    kind, _, arg = base.partition(":")
    if kind in FEASTS:
        return modifier in ("", "after", "before")
    if modifier == "before" or (modifier and kind not in _CALENDAR):
        return False
    if modifier not in ("", "end", "after"):
        return False
    limit = {"days": 400, "months": 24}.get(kind)
    return limit is None or int(arg) <= limit


def on_day(year: int, month: int, day: int) -> date:
    """`day` of that month, or its last day when the month is shorter (a fiscal year that
    starts on the 31st still has quarters)."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


_on = on_day


def next_on(sent: date, month: int, day: int = 1) -> date:
    """The first `day`/`month` strictly after `sent` (this year's or next year's)."""
    this_year = _on(sent.year, month, day)
    return this_year if this_year > sent else _on(sent.year + 1, month, day)


def add_months(start: date, months: int, day: int = 1) -> date:
    index = start.month - 1 + months
    return _on(start.year + index // 12, index % 12 + 1, day)


def _starts(fiscal_year_start: tuple[int, int], length: int) -> list[int]:
    """Months on which each fiscal period of `length` months begins, first period first."""
    first = fiscal_year_start[0]
    return [(first - 1 + length * i) % 12 + 1 for i in range(12 // length)]


def quarter_start(sent: date, quarter: int, fiscal_year_start: tuple[int, int] = (1, 1)) -> date:
    """The next first day of quarter 1..4 (quarter 1 begins at `fiscal_year_start`)."""
    month = _starts(fiscal_year_start, 3)[quarter - 1]
    return next_on(sent, month, fiscal_year_start[1])


def half_start(sent: date, half: int, fiscal_year_start: tuple[int, int] = (1, 1)) -> date:
    month = _starts(fiscal_year_start, 6)[half - 1]
    return next_on(sent, month, fiscal_year_start[1])


def next_period_start(sent: date, length: int, fiscal_year_start: tuple[int, int]) -> date:
    """The first day of the next fiscal period of `length` months (3 quarter, 6 half, 12 year)."""
    day = fiscal_year_start[1]
    return min(next_on(sent, month, day) for month in _starts(fiscal_year_start, length))


def resolve(rule: str, sent: date, fiscal_year_start: tuple[int, int] = (1, 1)) -> date:
    """The date a period rule names, seen from the reply's date. Raises ValueError for a rule
    outside the vocabulary (the phrase files are checked when first read, so that is a bug)."""
    if not valid_rule(rule):
        raise ValueError(f"{rule!r} is not a period rule; rules: {', '.join(RULES)}")
    base, modifier = split_rule(rule)
    kind, _, arg = base.partition(":")
    if kind in FEASTS:
        return feast(kind, modifier or "after", sent)
    if modifier == "end":
        return end(base, sent, fiscal_year_start)
    if modifier == "after" or arg == "this":  # "this year" alone: the day it is over
        return after(base, sent, fiscal_year_start)
    if kind == "month":
        return add_months(sent, 1) if arg == "next" else next_on(sent, int(arg))
    if kind == "quarter":
        if arg == "next":
            return next_period_start(sent, 3, fiscal_year_start)
        return quarter_start(sent, int(arg), fiscal_year_start)
    if kind == "half":
        if arg == "next":
            return next_period_start(sent, 6, fiscal_year_start)
        return half_start(sent, int(arg), fiscal_year_start)
    if kind == "year":
        return next_on(sent, 1)
    if kind == "fiscal_year":
        return next_on(sent, *fiscal_year_start)
    if kind == "week":
        return sent + timedelta(days=7 - sent.weekday())
    if kind == "days":
        return sent + timedelta(days=int(arg))
    if kind == "months":
        return add_months(sent, int(arg), sent.day)
    # holidays: the season decides which holidays a person means.
    if sent.month >= 10:
        return next_on(sent, 1)
    if 5 <= sent.month <= 8:
        return next_on(sent, 9)
    return add_months(sent, 1)


def after(rule: str, sent: date, fiscal_year_start: tuple[int, int] = (1, 1)) -> date:
    """The first day after the period `rule` names, seen from the reply's date: "after Q3" is
    the next 1 October (this year's when written in Q3), "after March" the next 1 April.
    Periods that already name a first day after something (days, weeks, holidays, next year)
    are unchanged."""
    base, modifier = split_rule(rule)
    kind, _, arg = base.partition(":")
    if kind in FEASTS:
        return feast(kind, "after", sent)
    if kind in _CALENDAR and (arg == "this" or modifier == "end"):
        return span(base, sent, fiscal_year_start)[1]  # after (the end of) it: when it is over
    if kind == "quarter" and arg != "next":
        return quarter_start(sent, int(arg) % 4 + 1, fiscal_year_start)
    if kind == "half" and arg != "next":
        return half_start(sent, 3 - int(arg), fiscal_year_start)
    if kind == "month" and arg != "next":
        return next_on(sent, int(arg) % 12 + 1)
    return resolve(base, sent, fiscal_year_start)


def span(base: str, sent: date, fiscal_year_start: tuple[int, int] = (1, 1)) -> tuple[date, date]:
    """[first day, day after the last) of the calendar period `base` names, seen from `sent`:
    ":this" the one in progress, ":next" the one after it, and a named one (quarter:2,
    month:03) the one in progress when it is, else the next."""
    kind, _, arg = base.partition(":")
    length = _LENGTH[kind]
    if kind == "month":
        day = 1
        current = date(sent.year, sent.month, 1)
    else:
        day = 1 if kind == "year" else fiscal_year_start[1]
        fiscal = (1, 1) if kind == "year" else fiscal_year_start
        following = next_period_start(sent, length, fiscal)
        current = add_months(following, -length, day)
    if arg == "next":
        start = add_months(current, length, day)
    elif arg == "this" or kind in ("year", "fiscal_year"):
        start = current
    else:
        number = int(arg)
        if kind == "month":
            start = current if sent.month == number else next_on(sent, number)
        else:
            starts = _starts(fiscal_year_start, length)
            if starts.index(current.month) + 1 == number:
                start = current
            elif kind == "quarter":
                start = quarter_start(sent, number, fiscal_year_start)
            else:
                start = half_start(sent, number, fiscal_year_start)
    return start, add_months(start, length, day)


def end(base: str, sent: date, fiscal_year_start: tuple[int, int] = (1, 1)) -> date:
    """The first day of the last part of the period `base` names that is still ahead (see
    +end above); the day after the period once every part has begun."""
    kind = base.partition(":")[0]
    start, stop = span(base, sent, fiscal_year_start)
    length = _LENGTH[kind]
    day = start.day
    last_month = add_months(start, length - 1, day)
    parts = [add_months(start, length - 3, day)] if length >= 6 else []
    if length >= 3:
        parts.append(last_month)
    parts += [last_month + timedelta(days=20), stop]
    # `stop` is always ahead: span() gives the period in progress or the next one.
    return next(part for part in parts if part > sent)


def feast(name: str, modifier: str, sent: date) -> date:
    """A moveable feast seen from `sent` (see the vocabulary above): "after" the day after
    its last holiday, "before" the Monday two weeks before its Sunday (or one week, or, too
    late for both, "after")."""
    sunday, last = FEASTS[name]
    for year in (sent.year, sent.year + 1):
        base: date = easter(year)
        after_it = base + timedelta(days=last + 1)
        if after_it <= sent:
            continue  # this year's is over: next year's
        if modifier == "before":
            for weeks in (2, 1):
                monday = base + timedelta(days=sunday - 7 * weeks + 1)
                if monday > sent:
                    return monday
        return after_it
    raise AssertionError("a feast falls every year")  # pragma: no cover
