"""The etiquette rules bound to the settings and sequences: when a given enrollment's next
step may go. Pure (no I/O); the worker, `enroll`, `preview`, `status` and the inbox handler all
ask here, so they can never disagree about a send time.

Owns: which window applies (the sequence's, else the settings' default), where a contact is
(their reserved fields, else the settings' defaults), promises (stored as local wall time plus
zone), and the out-of-office pause.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sequencer.config import Settings
from sequencer.pacing import Pace
from sequencer.schedule import (
    Place,
    Planned,
    Window,
    check_zone,
    first_business_day_after,
    is_open,
    place_of,
    plan,
    settle,
    wall_to_instant,
)
from sequencer.sequences import Sequence

_LOCAL_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class Promise:
    """A send the salesperson promised: a wall-clock time where the contact is."""

    local: datetime  # naive
    zone: str

    @property
    def at(self) -> datetime:
        """The instant, worked out now (so a tzdata update keeps the local time)."""
        return wall_to_instant(self.local.date(), self.local.time(), ZoneInfo(self.zone))

    def to_json(self) -> dict[str, str]:
        return {"local": self.local.isoformat(timespec="minutes"), "zone": self.zone}

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Promise:
        return cls(datetime.fromisoformat(data["local"]), data["zone"])

    def __str__(self) -> str:
        return f"{self.local:%a %d %b %Y %H:%M} {self.zone}"


def parse_local(text: str, zone: str) -> Promise:
    """`2026-12-01 10:00` in the contact's zone; an ISO time with an offset is converted.
    Raises ValueError with the accepted forms."""
    raw = text.strip()
    for fmt in _LOCAL_FORMATS:
        try:
            return Promise(datetime.strptime(raw, fmt), zone)
        except ValueError:
            continue
    try:
        aware = datetime.fromisoformat(raw)
    except ValueError:
        aware = None
    if aware is not None and aware.tzinfo is not None:
        local = aware.astimezone(check_zone(zone)).replace(tzinfo=None, second=0, microsecond=0)
        return Promise(local, zone)
    raise ValueError(
        f"'{text}' is not a date and time (write it as \"2026-12-01 10:00\", in the "
        f"contact's time zone, {zone})"
    )


def promises_of(raw: Mapping[str, Mapping[str, str]]) -> dict[int, Promise]:
    return {int(step): Promise.from_json(p) for step, p in raw.items()}


@dataclass(frozen=True)
class Etiquette:
    settings: Settings
    # Each mailbox's pace, parsed once: the daemon asks for it every tick and every send.
    _paces: dict[str, Pace] = field(default_factory=dict, compare=False, repr=False)

    @property
    def min_gap(self) -> timedelta:
        return self.settings.gap

    def place(self, values: Mapping[str, str]) -> Place:
        return place_of(values, self.settings.timezone, self.settings.country)

    def zone_name(self, values: Mapping[str, str]) -> str:
        return values.get("timezone") or self.settings.timezone

    def window(self, seq: Sequence | None) -> Window | None:
        if seq is not None and seq.window is not None:
            return seq.window
        default = self.settings.window
        return default.window() if default is not None else None

    def pace(self, mailbox: str) -> Pace:
        if (known := self._paces.get(mailbox)) is not None:
            return known
        box = self.settings.mailboxes.get(mailbox)
        pace = self._paces[mailbox] = box.pace.pace() if box is not None else Pace()
        return pace

    def mailbox_zone(self, mailbox: str) -> ZoneInfo:
        return self.settings.mailbox_zone(mailbox)

    def step_time(
        self,
        seq: Sequence,
        step: int,
        values: Mapping[str, str],
        *,
        after: datetime,
        last_contact: datetime | None,
        paused_until: datetime | None = None,
        promises: Mapping[int, Promise] | None = None,
        not_before: datetime | None = None,
    ) -> tuple[Planned, bool]:
        """When step `step` (1-based) goes, planned from `after` (the previous send, or the
        enrolment), and whether that time is a promise. A promise that has already passed
        when its turn comes (an earlier step was held up) cannot be kept: the step then
        follows the normal rules, marked `promise_missed`."""
        promise = (promises or {}).get(step)
        if promise is not None and promise.at >= after:
            return Planned(promise.at, ("promise",)), True
        planned = plan(
            after=after,
            wait=seq.steps[step - 1].wait,
            place=self.place(values),
            window=self.window(seq),
            min_gap=self.min_gap,
            last_contact=last_contact,
            paused_until=paused_until,
            not_before=not_before,
        )
        if promise is not None:
            planned = Planned(planned.at, ("promise_missed", *planned.reasons))
        return planned, False

    def settle(
        self,
        seq: Sequence | None,
        values: Mapping[str, str],
        now: datetime,
        *,
        last_contact: datetime | None,
        paused_until: datetime | None,
        step: int | None = None,
    ) -> Planned:
        """Claim-time re-check of step `step` (its wait decides whether it must land on a
        business day)."""
        return settle(
            now,
            place=self.place(values),
            window=self.window(seq),
            min_gap=self.min_gap,
            last_contact=last_contact,
            paused_until=paused_until,
            business_days_only=bool(
                seq is not None
                and step is not None
                and 0 < step <= len(seq.steps)
                and seq.steps[step - 1].wait.business_days
            ),
        )

    def back_from_leave(self, values: Mapping[str, str], back_on: date) -> datetime:
        """Start of the first business day after the stated return."""
        return first_business_day_after(back_on, self.place(values))

    def promise_warnings(
        self, seq: Sequence, values: Mapping[str, str], promises: Mapping[int, Promise]
    ) -> list[str]:
        """A promise is kept as given; say so when it lands outside the window or on a holiday."""
        notes = []
        place, window = self.place(values), self.window(seq)
        for step, promise in sorted(promises.items()):
            at = promise.at
            wall = at.astimezone(place.zone)
            holiday = place.holiday(wall.date())
            if holiday:
                notes.append(
                    f"step {step} is promised for {promise}, a public holiday ({holiday}); "
                    "it will go then anyway, as promised"
                )
            elif not is_open(at, place, window):
                notes.append(
                    f"step {step} is promised for {promise}, outside the sending window "
                    f"({window}); it will go then anyway, as promised"
                )
        return notes


@dataclass(frozen=True)
class PlannedStep:
    step: int
    planned: Planned
    promised: bool


def timeline(
    etiquette: Etiquette,
    seq: Sequence,
    values: Mapping[str, str],
    now: datetime,
    *,
    promises: Mapping[int, Promise] | None = None,
    last_contact: datetime | None = None,
    not_before: datetime | None = None,
) -> list[PlannedStep]:
    """Every step's send time for a contact enrolled at `now`, assuming no reply and that
    each step goes when planned. What `preview` shows and what `enroll` checks promises by.
    `not_before`: step 1 goes no earlier (the day a reply asked to be contacted again)."""
    out: list[PlannedStep] = []
    after, last = now, last_contact
    for step in range(1, len(seq.steps) + 1):
        planned, promised = etiquette.step_time(
            seq,
            step,
            values,
            after=after,
            last_contact=last,
            promises=promises,
            not_before=not_before if step == 1 else None,
        )
        out.append(PlannedStep(step, planned, promised))
        after = last = planned.at
    return out


def check_promises(
    seq: Sequence, promises: Mapping[int, Promise], now: datetime, plan: list[PlannedStep]
) -> list[str]:
    """Problems that make a promise impossible to keep (each says what to change)."""
    problems = []
    last = len(seq.steps)
    for step, promise in sorted(promises.items()):
        if not 1 <= step <= last:
            problems.append(f"--promise {step}=...: '{seq.id}' has steps 1 to {last}")
        elif promise.at <= now:
            problems.append(f"step {step}: the promised time {promise} has already passed")
    ordered = sorted(promises.items())
    for (a, pa), (b, pb) in itertools.pairwise(ordered):
        if pb.at <= pa.at:
            problems.append(f"step {b} is promised for {pb}, not after step {a} ({pa})")
    if problems:
        return problems
    for item in plan:
        if item.promised or item.step == 1:
            continue
        for later, promise in sorted(promises.items()):
            if later > item.step and item.planned.at >= promise.at:
                problems.append(
                    f"step {item.step} would go on {item.planned.at:%Y-%m-%d %H:%M} UTC, after "
                    f"the promise for step {later} ({promise}): steps go in order, so that "
                    f"promise would be broken (promise a later time, or promise step "
                    f"{item.step} too)"
                )
                break
    return problems
