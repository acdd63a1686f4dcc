"""Pure mailbox pacing: how many emails one mailbox may send in its day, and how far apart.

Owns the deliverability side of "never hassle": a daily limit counted in the mailbox's own
day, and a random spacing between two sends from one mailbox, so a burst of due work goes out
like a person typing rather than like a bulk sender. Applied when work is claimed, never by
rewriting scheduled rows: a mailbox that reached its limit is simply closed until its next
day, and its due work goes then, oldest first. Must not import asyncio, tortoise or networking.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sequencer.schedule import parse_duration, wall_to_instant

_RANGE = re.compile(r"^\s*([^-]+?)\s*(?:-\s*([^-]+?)\s*)?$")


@dataclass(frozen=True)
class Pace:
    daily_limit: int = 50
    spacing_min: timedelta = timedelta(seconds=60)
    spacing_max: timedelta = timedelta(seconds=180)

    @staticmethod
    def parse_spacing(text: str) -> tuple[timedelta, timedelta]:
        """`60s-180s`, `90s` (always that), `0s` (off)."""
        match = _RANGE.match(text)
        if not match:
            raise ValueError(f'spacing "{text}" must look like "60s-180s" or "0s"')
        low = parse_duration(match.group(1), "spacing")
        high = parse_duration(match.group(2), "spacing") if match.group(2) else low
        if high < low:
            raise ValueError(f'spacing "{text}" runs backwards (write the shorter gap first)')
        if high > timedelta(hours=6):
            raise ValueError(f'spacing "{text}" is longer than 6 hours (use a shorter gap)')
        return low, high

    def spacing(self, rng: random.Random) -> timedelta:
        """A random gap in [min, max], to the second."""
        low, high = int(self.spacing_min.total_seconds()), int(self.spacing_max.total_seconds())
        return timedelta(seconds=rng.randint(low, high) if high > low else low)


def day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The instant the mailbox's current local day began."""
    return wall_to_instant(now.astimezone(zone).date(), time(0), zone)


def next_day_start(now: datetime, zone: ZoneInfo) -> datetime:
    return wall_to_instant(now.astimezone(zone).date() + timedelta(days=1), time(0), zone)


@dataclass(frozen=True)
class Load:
    """What a mailbox has done: sends counted since its local midnight, and the earliest
    time its spacing allows the next one."""

    sent_today: int = 0
    next_free: datetime | None = None
    paused_until: datetime | None = None  # a reputation problem halted the mailbox


@dataclass(frozen=True)
class Gate:
    """None-like when open; else when the mailbox opens again, and why."""

    opens_at: datetime
    reason: str  # "pace:daily_limit" | "pace:spacing" | "reputation"


def closed_until(now: datetime, pace: Pace, zone: ZoneInfo, load: Load) -> Gate | None:
    """None when the mailbox may send at `now`; else when it may next, and why. A
    reputation pause holds even promised steps: they would only be refused too."""
    if load.paused_until is not None and load.paused_until > now:
        return Gate(load.paused_until, "reputation")
    if load.sent_today >= pace.daily_limit:
        return Gate(next_day_start(now, zone), "pace:daily_limit")
    if load.next_free is not None and load.next_free > now:
        return Gate(load.next_free, "pace:spacing")
    return None


def after_send(now: datetime, pace: Pace, load: Load, rng: random.Random) -> Load:
    """The load once one more email went at `now` (a new local day starts the count again)."""
    gap = pace.spacing(rng)
    return Load(load.sent_today + 1, now + gap if gap else None, load.paused_until)


def room(now: datetime, pace: Pace, zone: ZoneInfo, load: Load) -> int:
    """How many unpromised steps the mailbox may send in one go from `now`: none while it is
    closed, one at a time while a spacing applies (the next waits for its gap), else what is
    left of its day."""
    if closed_until(now, pace, zone, load) is not None:
        return 0
    if pace.spacing_max > timedelta(0):
        return 1
    return pace.daily_limit - load.sent_today
