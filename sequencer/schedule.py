"""Pure scheduling rules: when each step falls due. The clock is always an argument.

Owns: turning a wait and the time of the previous actual send (or the enrolment) into the
earliest send time. Later rules (windows, holidays, gaps, pacing) only ever move a send later,
so they compose by taking the maximum. Must not import asyncio, tortoise or networking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    """How long after the previous step (or the enrolment) a step falls due."""

    delta: timedelta
    text: str

    def __str__(self) -> str:
        return self.text


def parse_wait(text: str | int) -> Wait:
    """`0s`, `90m`, `3d`, `1w`, `1d12h`, `3 days`. Raises ValueError with a hint."""
    raw = str(text).strip().lower()
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f'wait "{text}" is not a duration (try "3d", "12h" or "1w")')
    if isinstance(text, int) or (raw.isascii() and raw.isdigit()):
        raise ValueError(f'wait "{text}" has no unit (try "{raw}d" or "{raw}h")')
    pos, total = 0, 0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        unit = match.group(2)
        unit = unit[:-1] if unit.endswith("s") and unit[:-1] in _PLURAL else unit
        if unit not in _UNITS:
            raise ValueError(
                f'wait "{text}" has an unknown unit "{match.group(2)}" (use s, m, h, d or w)'
            )
        total += int(match.group(1)) * _UNITS[unit]
        pos = match.end()
    if pos == 0 or raw[pos:].strip():
        raise ValueError(f'wait "{text}" is not a duration (try "3d", "12h" or "1w")')
    if total > _MAX_WAIT:
        # Also keeps timedelta and `due_after` away from OverflowError.
        raise ValueError(f'wait "{text}" is longer than ten years (use a shorter wait)')
    return Wait(timedelta(seconds=total), str(text).strip())


def due_after(previous: datetime, wait: Wait) -> datetime:
    """The earliest time a step may go: its wait after the previous actual send."""
    if previous.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return previous + wait.delta
