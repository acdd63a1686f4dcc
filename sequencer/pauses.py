"""Pure: the rules of a pause by hand (`sequencer pause`): which day `--until` names, when
that pause ends, and which of a person's enrollments a command means.

The date is read in the contact's zone (or the mailbox's, for a mailbox) and the pause ends
at the start of that day there: "until Monday" means nothing goes out before their Monday
morning, and the usual window and gap rules then pick the first time it may go.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sequencer.schedule import wall_to_instant

UNTIL_EXAMPLES = '2027-01-04, "4 January 2027", "next monday", "in 2 weeks"'


def parse_day(text: str, now: datetime, zone: ZoneInfo) -> date:
    """The day `--until` names, read in `zone`: an ISO date, or words dateparser reads
    ("next monday", "4 Jan"), taken in the future. ValueError says what was expected."""
    cleaned = text.strip()
    try:
        return date.fromisoformat(cleaned)
    except ValueError:
        pass
    import dateparser  # costly to import; only `pause` needs it

    local = now.astimezone(zone).replace(tzinfo=None)
    found = dateparser.parse(
        cleaned,
        languages=["en"],
        settings={"PREFER_DATES_FROM": "future", "RELATIVE_BASE": local},
    )
    if found is None:
        raise ValueError(f"--until {text!r}: not a date (try {UNTIL_EXAMPLES})")
    day: date = found.date()
    return day


def pause_end(day: date, zone: ZoneInfo) -> datetime:
    """The pause ends at the start of `day` in `zone` (the instant the clocks jump, when
    midnight falls in a DST gap)."""
    return wall_to_instant(day, time(0), zone)


def until_in_future(day: date, end: datetime, now: datetime, zone: ZoneInfo) -> str | None:
    """Why a pause end cannot be used, or None: a day that has already begun there."""
    if end <= now:
        today = now.astimezone(zone).date()
        return (
            f"--until {day.isoformat()} has already begun in {zone.key} (today there is "
            f"{today.isoformat()}); give a later day, or `sequencer resume` to lift a pause now"
        )
    return None


def pick(sequences: Sequence[str], wanted: str | None, email: str, what: str) -> list[str]:
    """The sequences a command about `email` means: `wanted`, which must be one of theirs
    (ValueError with 'did you mean'), or all of them."""
    if wanted is None:
        return list(sequences)
    if wanted in sequences:
        return [wanted]
    close = difflib.get_close_matches(wanted, sorted(sequences), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    theirs = ", ".join(sorted(sequences)) or "none"
    raise ValueError(f"{email} has no {what} enrollment in '{wanted}'{hint}; theirs: {theirs}")
