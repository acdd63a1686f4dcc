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
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta

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
)

_RULE = re.compile(
    r"month:(?:0?[1-9]|1[0-2]|next)|quarter:(?:[1-4]|next)|half:(?:[12]|next)"
    r"|year:next|fiscal_year:next|week:next|days:(?:[1-9]\d{0,2})|months:(?:[1-9]\d?)|holidays"
)


def check_fiscal_year_start(value: tuple[int, int]) -> tuple[int, int]:
    """`value` if it is a real (month, day) in every year, else ValueError saying the fix."""
    month, day = value
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2001, month)[1]:
        raise ValueError(
            f"fiscal_year_start {month:02d}-{day:02d} is not a day of every year; "
            'write "MM-DD", for example "04-01"'
        )
    return value


def valid_rule(rule: str) -> bool:
    """Whether `rule` is in the vocabulary above (days up to 400, months up to 24)."""
    if not _RULE.fullmatch(rule):
        return False
    kind, _, arg = rule.partition(":")
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
    kind, _, arg = rule.partition(":")
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
    kind, _, arg = rule.partition(":")
    if kind == "quarter" and arg != "next":
        return quarter_start(sent, int(arg) % 4 + 1, fiscal_year_start)
    if kind == "half" and arg != "next":
        return half_start(sent, 3 - int(arg), fiscal_year_start)
    if kind == "month" and arg != "next":
        return next_on(sent, int(arg) % 12 + 1)
    return resolve(rule, sent, fiscal_year_start)
