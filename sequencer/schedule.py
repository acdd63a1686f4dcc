"""Pure scheduling rules: when each step goes. The clock is always an argument.

Owns: waits (durations and business days), sending windows in the contact's zone, public
holidays (the `holidays` package), the minimum gap between two emails to one address, and
out-of-office pauses. `plan` turns the previous send into the next send time; `settle` re-checks
a due step at claim time. Every rule only ever moves a send later, so they compose. Mailbox
pacing is applied at claim time (pacing.py). Must not import asyncio, tortoise or networking.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import BaseModel, ConfigDict, model_validator

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}
#: Long unit names that may also be written in the plural ("3 days"); "ms" is not "m" plural.
_PLURAL = frozenset({"sec", "second", "min", "minute", "hour", "day", "week"})
_MAX_WAIT = 3653 * 86400
_PART = re.compile(r"\s*([0-9]+)\s*([a-z]+)", re.ASCII)


@dataclass(frozen=True)
class Wait:
    """How long after the previous step (or the enrolment) a step falls due: a duration, or a
    number of business days in the contact's country (weekends and public holidays skipped)."""

    delta: timedelta
    text: str
    business_days: int = 0

    def __str__(self) -> str:
        return self.text

    @property
    def minimum(self) -> timedelta:
        """The shortest this wait can ever be (a business day is at least a day)."""
        return self.delta + timedelta(days=self.business_days)


_BUSINESS = re.compile(r"^([0-9]+)\s*(bd|business\s*days?|working\s*days?)$", re.ASCII)
_UNIT_HINT = "use s, m, h, d, w, or bd for business days"


def parse_wait(text: str | int) -> Wait:
    """`0s`, `90m`, `3d`, `1w`, `1d12h`, `3 days`, `3bd`, `3 business days`.
    Raises ValueError with a hint."""
    raw = str(text).strip().lower()
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f'wait "{text}" is not a duration (try "3d", "12h" or "3bd")')
    if isinstance(text, int) or (raw.isascii() and raw.isdigit()):
        raise ValueError(f'wait "{text}" has no unit (try "{raw}d", "{raw}bd" or "{raw}h")')
    business = _BUSINESS.match(raw)
    if business:
        days = int(business.group(1))
        if days > 2600:
            raise ValueError(f'wait "{text}" is longer than ten years (use a shorter wait)')
        return Wait(timedelta(0), str(text).strip(), days)
    pos, total = 0, 0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        unit = match.group(2)
        unit = unit[:-1] if unit.endswith("s") and unit[:-1] in _PLURAL else unit
        if unit == "bd" or unit.startswith("business"):
            raise ValueError(
                f'wait "{text}": business days cannot be mixed with other units '
                '(write "3bd" on its own)'
            )
        if unit not in _UNITS:
            raise ValueError(f'wait "{text}" has an unknown unit "{match.group(2)}" ({_UNIT_HINT})')
        total += int(match.group(1)) * _UNITS[unit]
        pos = match.end()
    if pos == 0 or raw[pos:].strip():
        raise ValueError(f'wait "{text}" is not a duration (try "3d", "12h" or "3bd")')
    if total > _MAX_WAIT:
        # Also keeps timedelta arithmetic away from OverflowError.
        raise ValueError(f'wait "{text}" is longer than ten years (use a shorter wait)')
    return Wait(timedelta(seconds=total), str(text).strip())


def parse_duration(text: str | int, what: str) -> timedelta:
    """A plain duration for settings such as `min_gap` (business days make no sense there)."""
    wait = parse_wait(text)
    if wait.business_days:
        raise ValueError(f'{what} "{text}" must be a plain duration such as "2d" or "36h"')
    return wait.delta


# ---------------------------------------------------------------------------------------------
# Sending windows.

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"^\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*$", re.ASCII)


@dataclass(frozen=True)
class Window:
    """When a contact may receive email: some weekdays, some hours, in the contact's zone.
    An hours range ending at 24:00 runs to midnight (`end` is None)."""

    days: frozenset[int]  # 0 = Monday
    hours: tuple[tuple[time, time | None], ...]
    text: str

    def __str__(self) -> str:
        return self.text

    def open_at(self, wall: datetime) -> bool:
        """Is this local wall-clock time (weekday and time of day) inside the window?"""
        if wall.weekday() not in self.days:
            return False
        now = wall.time().replace(tzinfo=None)
        return any(start <= now and (end is None or now < end) for start, end in self.hours)


def _day(name: str) -> int:
    key = name.strip().lower()
    if key in DAY_NAMES:
        return DAY_NAMES.index(key)
    if key in _LONG_DAYS:
        return _LONG_DAYS.index(key)
    raise ValueError(f"'{name}' is not a day (use mon, tue, wed, thu, fri, sat or sun)")


def parse_days(days: str | list[str]) -> frozenset[int]:
    """`[mon, tue]`, `"mon-fri"`, `"mon, wed, fri"`."""
    items = days if isinstance(days, list) else str(days).split(",")
    found: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"'{item}' is not a day (use mon, tue, wed, thu, fri, sat or sun)")
        if "-" in item:
            first, last = (_day(x) for x in item.split("-", 1))
            if last < first:
                raise ValueError(f"'{item.strip()}' runs backwards (write it as mon-fri)")
            found.update(range(first, last + 1))
        elif item.strip():
            found.add(_day(item))
    if not found:
        raise ValueError("a window needs at least one day (e.g. days: [mon, tue, wed, thu])")
    return frozenset(found)


def parse_hours(hours: str | list[str]) -> tuple[tuple[time, time | None], ...]:
    """`"09:00-11:30"`, `"09:00-11:30, 14:00-16:00"` or a list of such ranges."""
    items = hours if isinstance(hours, list) else str(hours).split(",")
    ranges: list[tuple[time, time | None]] = []
    for item in items:
        match = _HOURS.match(str(item))
        if not match:
            raise ValueError(f"hours '{str(item).strip()}' must look like \"09:00-11:30\"")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ValueError(f"hours '{str(item).strip()}' is not a time of day range")
        start = time(h1, m1)
        end = None if h2 == 24 else time(h2, m2)
        if end is not None and end <= start:
            raise ValueError(
                f"hours '{str(item).strip()}' ends before it starts (a window cannot run past "
                'midnight; split it: "22:00-24:00, 00:00-02:00")'
            )
        ranges.append((start, end))
    if not ranges:
        raise ValueError('a window needs hours (e.g. hours: "09:00-11:30")')
    ranges.sort(key=lambda r: r[0])
    for (_, end), (start, _) in itertools.pairwise(ranges):
        if end is None or end > start:
            raise ValueError("hours ranges overlap (merge them into one)")
    return tuple(ranges)


def make_window(days: str | list[str], hours: str | list[str]) -> Window:
    day_set = parse_days(days)
    ranges = parse_hours(hours)
    day_text = ", ".join(DAY_NAMES[d] for d in sorted(day_set))
    hour_text = ", ".join(
        f"{s:%H:%M}-{'24:00' if e is None else format(e, '%H:%M')}" for s, e in ranges
    )
    return Window(day_set, ranges, f"{day_text} {hour_text}")


class WindowModel(BaseModel):
    """`window: {days: [mon, tue, wed, thu], hours: "09:00-11:30"}` as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    days: str | list[str] = "mon-fri"
    hours: str | list[str]

    @model_validator(mode="after")
    def _valid(self) -> WindowModel:
        self.window()
        return self

    def window(self) -> Window:
        return make_window(self.days, self.hours)


# ---------------------------------------------------------------------------------------------
# Where the contact is: their zone and their public holidays.


def check_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{name}' (use an IANA name such as Europe/London)"
        ) from None


def check_country(country: str, subdivision: str | None = None) -> tuple[str, str | None]:
    """Normalise and check a country code (and subdivision) against the holidays package."""
    code = country.strip().upper()
    supported = holidays.list_supported_countries()
    if code not in supported:
        raise ValueError(
            f"no public-holiday calendar for country '{country}' "
            "(use an ISO 3166 code such as GB, DE, FR, US)"
        )
    if subdivision is None or not subdivision.strip():
        return code, None
    sub = subdivision.strip().upper()
    known = {s.upper(): s for s in supported[code]}
    if sub not in known:
        sample = ", ".join(supported[code][:6]) or "none are defined"
        raise ValueError(
            f"'{subdivision}' is not a subdivision of {code} (known ones include: {sample})"
        )
    return code, known[sub]


@lru_cache(maxsize=256)
def _calendar(country: str, subdivision: str | None) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision)


@dataclass(frozen=True)
class Place:
    """The contact's time zone and, where known, the country whose holidays they keep."""

    zone: ZoneInfo
    country: str | None = None
    subdivision: str | None = None

    def holiday(self, day: date) -> str | None:
        if self.country is None:
            return None
        name = _calendar(self.country, self.subdivision).get(day)
        return str(name).split(";")[0].strip() if name else None

    def business_day(self, day: date) -> bool:
        return day.weekday() < 5 and self.holiday(day) is None


def place_of(
    values: Mapping[str, str], default_zone: str, default_country: str | None = None
) -> Place:
    """A contact's place from their reserved fields, the settings' defaults filling gaps.
    Values were checked at enrolment; a zone that has since vanished falls back to UTC."""
    try:
        zone = ZoneInfo(values.get("timezone") or default_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    country = values.get("country") or default_country
    sub = values.get("subdivision") if values.get("country") else None
    if country:
        try:
            country, sub = check_country(country, sub)
        except ValueError:
            country, sub = None, None
    return Place(zone, country or None, sub)


def wall_to_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The earliest instant whose wall-clock time on `day` in `zone` is `at` or later.

    A wall time inside a spring-forward gap does not exist: the answer is then the moment the
    clocks jump. An ambiguous one (autumn) gives its first occurrence."""
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)  # its wall time is before `at`
    high = first  # its wall time is after `at`
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).replace(tzinfo=None) >= naive:
            high = mid
        else:
            low = mid
    return high


# ---------------------------------------------------------------------------------------------
# When a step goes.


@dataclass(frozen=True)
class Planned:
    """A send time and why it is then rather than earlier (`window`, `weekend`,
    `holiday:<name>`, `min_gap`, `out_of_office`, `promise`, ...)."""

    at: datetime
    reasons: tuple[str, ...] = ()


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def is_open(at: datetime, place: Place, window: Window | None) -> bool:
    """May an email land at this instant: inside the window, and not on a public holiday."""
    wall = at.astimezone(place.zone)
    if place.holiday(wall.date()) is not None:
        return False
    return window is None or window.open_at(wall)


_SEARCH_DAYS = 800  # a window opens at least once a week; holidays cannot fill two years


def next_opening(at: datetime, place: Place, window: Window | None) -> Planned:
    """The earliest instant at or after `at` when an email may land (never earlier)."""
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    reasons: list[str] = []
    cursor = at
    for _ in range(_SEARCH_DAYS):
        found = _opening_from(cursor, place, window, reasons)
        if found is None:
            break
        if is_open(found, place, window):
            if found > at and not reasons:
                reasons.append("window")
            return Planned(found, tuple(reasons))
        # Autumn: clocks went back and the wall time repeats below the window's start.
        # Walk forward by the shortfall (wall time moves with real time inside the repeat).
        wall = found.astimezone(place.zone).replace(tzinfo=None)
        target = _window_start_after(wall, window)
        cursor = found + max(target - wall, timedelta(seconds=1))
    raise ValueError("no sending window opens within two years (check the window's days)")


def _window_start_after(wall: datetime, window: Window | None) -> datetime:
    if window is None:
        return wall
    for start, _ in window.hours:
        candidate = datetime.combine(wall.date(), start)
        if candidate > wall:
            return candidate
    return wall


def _opening_from(
    at: datetime, place: Place, window: Window | None, reasons: list[str]
) -> datetime | None:
    """Scan the days from `at`: the first interval of the window, not on a holiday, that has
    not closed yet; returns max(at, its opening)."""
    wall = at.astimezone(place.zone)
    ranges = window.hours if window is not None else ((time(0), None),)
    for offset in range(_SEARCH_DAYS):
        day = wall.date() + timedelta(days=offset)
        if window is not None and day.weekday() not in window.days:
            _add(reasons, "weekend" if day.weekday() >= 5 else "window")
            continue
        holiday = place.holiday(day)
        if holiday is not None:
            _add(reasons, f"holiday:{holiday}")
            continue
        for start, end in ranges:
            opens = wall_to_instant(day, start, place.zone)
            closes = (
                wall_to_instant(day + timedelta(days=1), time(0), place.zone)
                if end is None
                else wall_to_instant(day, end, place.zone)
            )
            if at < closes and opens < closes:
                if opens > at and offset == 0:
                    _add(reasons, "window")
                return max(at, opens)
        if offset == 0:
            _add(reasons, "window")
    return None


def add_business_days(start: datetime, days: int, place: Place) -> Planned:
    """`days` business days after `start`, at the same wall-clock time, in the contact's
    zone; weekends and the contact's public holidays do not count."""
    wall = start.astimezone(place.zone)
    day = wall.date()
    reasons: list[str] = []
    counted = 0
    while counted < days:
        day += timedelta(days=1)
        if day.weekday() >= 5:
            _add(reasons, "weekend")
            continue
        holiday = place.holiday(day)
        if holiday is not None:
            _add(reasons, f"holiday:{holiday}")
            continue
        counted += 1
    if days == 0:
        return Planned(start)
    return Planned(
        wall_to_instant(day, wall.time().replace(tzinfo=None), place.zone), tuple(reasons)
    )


def plan(
    *,
    after: datetime,
    wait: Wait,
    place: Place,
    window: Window | None,
    min_gap: timedelta = timedelta(0),
    last_contact: datetime | None = None,
    paused_until: datetime | None = None,
    promise: datetime | None = None,
    business_days_only: bool = False,
    not_before: datetime | None = None,
) -> Planned:
    """When a step goes: a promise exactly as given; otherwise its wait after `after` (the
    previous send, or the enrolment), then no sooner than `min_gap` after the last email to
    this address, the end of an out-of-office pause and `not_before` (the day a reply asked to
    be contacted again), then the next window opening that is not a public holiday. Every rule
    only ever moves the time later."""
    if after.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    if promise is not None:
        return Planned(promise, ("promise",))
    reasons: list[str] = []
    at = after + wait.delta
    if wait.business_days:
        counted = add_business_days(after, wait.business_days, place)
        # The same wall time n business days on is at least n days later, except across a
        # spring-forward night (from a Sunday 01:30, Monday 01:30 is 23 hours away): a
        # business day is never shorter than a day (`Wait.minimum`).
        at = max(counted.at, after + wait.minimum)
        reasons += counted.reasons
    if last_contact is not None and min_gap > timedelta(0) and last_contact + min_gap > at:
        at = last_contact + min_gap
        _add(reasons, "min_gap")
    if paused_until is not None and paused_until > at:
        at = paused_until
        _add(reasons, "out_of_office")
    if not_before is not None and not_before > at:
        at = not_before
        _add(reasons, "follow_up_on")
    return _land(
        at, place, window, reasons, business_days_only=business_days_only or wait.business_days > 0
    )


def _land(
    at: datetime,
    place: Place,
    window: Window | None,
    reasons: list[str],
    *,
    business_days_only: bool,
) -> Planned:
    """The first opening at or after `at`; a step timed in business days also lands on one
    (a gap or a pause may have pushed it onto a weekend)."""
    for _ in range(_SEARCH_DAYS):
        opening = next_opening(at, place, window)
        for reason in opening.reasons:
            _add(reasons, reason)
        at = opening.at
        day = at.astimezone(place.zone).date()
        if not business_days_only or place.business_day(day):
            return Planned(at, tuple(reasons))
        _add(reasons, "weekend" if day.weekday() >= 5 else f"holiday:{place.holiday(day)}")
        at = wall_to_instant(day + timedelta(days=1), time(0), place.zone)
    raise ValueError("no business day opens within two years")


def settle(
    now: datetime,
    *,
    place: Place,
    window: Window | None,
    min_gap: timedelta = timedelta(0),
    last_contact: datetime | None = None,
    paused_until: datetime | None = None,
    business_days_only: bool = False,
) -> Planned:
    """The claim-time check of a due step: `now` itself when every rule allows it, else the
    first moment that does (with why). Work that waited (downtime, pacing) is re-checked here,
    so it never lands outside the window or too close to another email."""
    return plan(
        after=now,
        wait=NO_WAIT,
        business_days_only=business_days_only,
        place=place,
        window=window,
        min_gap=min_gap,
        last_contact=last_contact,
        paused_until=paused_until,
    )


def first_business_day_after(day: date, place: Place) -> datetime:
    """The start (local midnight) of the first business day after `day`: when a contact who
    is back on `day` can be written to again without landing in their first-morning pile."""
    nxt = day + timedelta(days=1)
    while not place.business_day(nxt):
        nxt += timedelta(days=1)
    return wall_to_instant(nxt, time(0), place.zone)


NO_WAIT = Wait(timedelta(0), "0s")
