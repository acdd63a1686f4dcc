"""The etiquette rules hold for any contact, any window and any clock.

Each test states one rule in plain words and lets hypothesis look for a counterexample:
random waits, windows, zones (with their DST changes), countries (with their public
holidays), gaps, pauses and promises; and, for pacing, a mailbox draining a random stream of
due work the way `Daemon.run_once` does, but with pure functions and a simulated clock.

Random instants are drawn near the zone's clock changes half of the time: that is where a
wall-clock rule can go wrong, and a uniform draw over seven years would almost never land there.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st

from sequencer.config import Settings
from sequencer.etiquette import Etiquette, Promise, timeline
from sequencer.pacing import Load, Pace, after_send, closed_until, day_start
from sequencer.schedule import (
    DAY_NAMES,
    Place,
    Planned,
    Wait,
    Window,
    is_open,
    make_window,
    next_opening,
    parse_wait,
    place_of,
    plan,
    settle,
    wall_to_instant,
)
from sequencer.sequences import Sequence, Step

# Zones whose clocks change in 2024-2030 (north and south), some that never change, and three
# whose clocks change at midnight, so that a local day can begin at 01:00 or repeat its last hour.
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Auckland",
    "UTC",
    "Asia/Tokyo",
    "America/Santiago",
    "America/Havana",
    "Asia/Beirut",
)
COUNTRIES = (
    ("DE", "BY"),
    ("US", None),
    ("GB", None),
    ("FR", None),
    ("AU", None),
    ("JP", None),
    ("IN", None),
    ("BR", None),
    (None, None),  # a contact whose country is not known keeps no holidays
)
FIRST, LAST = datetime(2024, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)


@cache
def clock_changes(zone_name: str) -> tuple[datetime, ...]:
    """Every instant in 2024-2030 at which the zone's UTC offset changes (to the second)."""
    zone = ZoneInfo(zone_name)
    found = []
    day = FIRST
    while day < LAST:
        low, high = day, day + timedelta(days=1)
        if low.astimezone(zone).utcoffset() != high.astimezone(zone).utcoffset():
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) // 2
                if mid.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = mid
                else:
                    high = mid
            found.append(high.replace(microsecond=0))
        day += timedelta(days=1)
    return tuple(found)


def local(at: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock time of an instant, as a naive datetime."""
    return at.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


def opens_on_a_weekday(window: Window | None) -> bool:
    return window is None or min(window.days) < 5


# ---------------------------------------------------------------------------------------------
# Strategies.

zone_names = st.sampled_from(ZONES)
countries = st.sampled_from(COUNTRIES)


@st.composite
def instants(draw: st.DrawFn, zone_name: str) -> datetime:
    """An aware UTC instant in 2024-2030; half of the time within days of a clock change."""
    changes = clock_changes(zone_name)
    near_a_change = draw(st.booleans())
    if changes and near_a_change:
        change = draw(st.sampled_from(changes))
        offset = draw(
            st.one_of(
                st.integers(-3 * 3600, 3 * 3600),  # the night of the change
                st.integers(-26 * 3600, 2 * 3600),  # the day before it
                st.integers(-6 * 86400, 86400),  # the week before it
            )
        )
        return change + timedelta(seconds=offset)
    naive = draw(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)))
    return naive.replace(tzinfo=UTC)


@st.composite
def contacts(draw: st.DrawFn) -> dict[str, str]:
    """A contact's reserved fields: their zone, and maybe their country."""
    country, subdivision = draw(countries)
    values = {"timezone": draw(zone_names)}
    if country is not None:
        values["country"] = country
    if subdivision is not None:
        values["subdivision"] = subdivision
    return values


# A contact's place, worked out from their fields the way the etiquette does.
places = contacts().map(lambda values: place_of(values, "UTC"))


# Waits as authors write them: hours, days, mixed units, and business days.
waits = st.one_of(
    st.integers(0, 72).map(lambda n: parse_wait(f"{n}h")),
    st.integers(0, 14).map(lambda n: parse_wait(f"{n}d")),
    st.tuples(st.integers(0, 6), st.integers(0, 23), st.integers(0, 59)).map(
        lambda t: parse_wait(f"{t[0]}d{t[1]}h{t[2]}m")
    ),
    st.integers(0, 12).map(lambda n: parse_wait(f"{n}bd")),
)

# Window edges in minutes after midnight: any quarter hour, but often the hours when clocks
# change (00:00-03:30) and the ends of the day.
_EDGES = (0, 30, 60, 90, 120, 150, 180, 210, 540, 1020, 1380, 1440)
window_edges = st.one_of(st.sampled_from(_EDGES), st.integers(0, 96).map(lambda q: q * 15))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def windows(draw: st.DrawFn, edges_from: st.SearchStrategy[int] = window_edges) -> Window:
    """Some days of the week (at least one), and one or two hour ranges."""
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    ranges = draw(st.sampled_from([1, 2]))
    edges = sorted(
        draw(st.lists(edges_from, min_size=2 * ranges, max_size=2 * ranges, unique=True))
    )
    hours = ", ".join(
        f"{_hhmm(a)}-{_hhmm(b)}" for a, b in zip(edges[::2], edges[1::2], strict=True)
    )
    return make_window([DAY_NAMES[d] for d in sorted(days)], hours)


optional_windows = st.one_of(st.none(), windows())
gaps = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 96).map(lambda h: timedelta(hours=h)),
    st.integers(1, 7 * 86400).map(lambda s: timedelta(seconds=s)),
)
# How far another event lies from the step's starting point (before or after it).
around = st.integers(-10 * 86400, 20 * 86400).map(lambda s: timedelta(seconds=s))


@dataclass(frozen=True)
class Ask:
    """Everything `plan` is asked about one step."""

    place: Place
    window: Window | None
    after: datetime
    wait: Wait
    min_gap: timedelta
    last_contact: datetime | None
    paused_until: datetime | None
    business_days_only: bool

    def plan(self) -> Planned:
        return plan(
            after=self.after,
            wait=self.wait,
            place=self.place,
            window=self.window,
            min_gap=self.min_gap,
            last_contact=self.last_contact,
            paused_until=self.paused_until,
            business_days_only=self.business_days_only,
        )

    @property
    def business_days(self) -> bool:
        return self.business_days_only or self.wait.business_days > 0


@st.composite
def asks(draw: st.DrawFn) -> Ask:
    place = draw(places)
    after = draw(instants(place.zone.key))
    last_contact = draw(st.one_of(st.none(), around.map(lambda d: after + d)))
    paused_until = draw(
        st.one_of(st.none(), around.map(lambda d: after + d), instants(place.zone.key))
    )
    ask = Ask(
        place=place,
        window=draw(optional_windows),
        after=after,
        wait=draw(waits),
        min_gap=draw(gaps),
        last_contact=last_contact,
        paused_until=paused_until,
        business_days_only=draw(st.booleans()),
    )
    # A window open only at weekends can never hold a business-day step (plan raises).
    assume(not ask.business_days or opens_on_a_weekday(ask.window))
    return ask


# ---------------------------------------------------------------------------------------------
# 1-4: where `plan` may put a step.

PLAN = settings(max_examples=200, deadline=None)


@PLAN
@given(ask=asks())
def test_a_planned_send_is_always_inside_the_window(ask: Ask) -> None:
    """No step is planned outside the contact's sending window (in their zone, DST or not)."""
    planned = ask.plan()
    note(f"planned {planned} = {local(planned.at, ask.place.zone)} local")
    assert is_open(planned.at, ask.place, ask.window)
    if ask.window is not None:
        assert ask.window.open_at(planned.at.astimezone(ask.place.zone))


@PLAN
@given(ask=asks())
def test_a_send_never_lands_on_a_public_holiday(ask: Ask) -> None:
    """No email lands on a public holiday of the contact's place, whatever the wait, window or
    no window."""
    planned = ask.plan()
    day = planned.at.astimezone(ask.place.zone).date()
    assert ask.place.holiday(day) is None, f"{planned} lands on {day}, {ask.place.holiday(day)}"


@PLAN
@given(ask=asks())
def test_a_business_day_step_lands_on_a_business_day(ask: Ask) -> None:
    """A step timed in business days (or asked to keep to them) never lands on a weekend or a
    public holiday, even after a gap, a pause or a window pushed it later."""
    planned = ask.plan()
    day = planned.at.astimezone(ask.place.zone).date()
    if ask.business_days:
        assert ask.place.business_day(day), f"{planned} lands on {day:%A %Y-%m-%d}"


@PLAN
@given(ask=asks())
def test_two_emails_to_one_address_are_never_closer_than_the_gap(ask: Ask) -> None:
    """A step never goes sooner than `min_gap` after the last email to that address."""
    planned = ask.plan()
    if ask.last_contact is not None and ask.min_gap:
        assert planned.at >= ask.last_contact + ask.min_gap


# Found by this file: from Sunday 01:30 in Berlin, the night the clocks went forward, one
# business day at the same wall time (Monday 01:30) was only 23 hours later.
SUNDAY_BEFORE_SPRING = Ask(
    place=place_of({"timezone": "Europe/Berlin", "country": "DE", "subdivision": "BY"}, "UTC"),
    window=None,
    after=datetime(2025, 3, 30, 0, 30, tzinfo=UTC),
    wait=parse_wait("1bd"),
    min_gap=timedelta(0),
    last_contact=None,
    paused_until=None,
    business_days_only=False,
)


@PLAN
@given(ask=asks())
@example(ask=SUNDAY_BEFORE_SPRING)
def test_a_step_never_goes_before_its_wait_or_during_a_pause(ask: Ask) -> None:
    """A step goes no earlier than its wait after the previous send (a business day counting
    as at least a day, DST or not) and no earlier than the end of an out-of-office pause."""
    planned = ask.plan()
    note(f"planned {planned}, {planned.at - ask.after} after {ask.after}")
    assert planned.at >= ask.after + ask.wait.minimum
    if ask.paused_until is not None:
        assert planned.at >= ask.paused_until


@PLAN
@given(place=places, days=st.integers(1, 6), window=optional_windows, data=st.data())
def test_a_business_day_is_never_shorter_than_a_day(
    place: Place, days: int, window: Window | None, data: st.DataObject
) -> None:
    """`n` business days after a send is at least `n` whole days later, also across the night
    the clocks go forward (the same rule as above, drawn where it is hardest to keep)."""
    assume(opens_on_a_weekday(window))
    after = data.draw(instants(place.zone.key), label="after")
    planned = plan(after=after, wait=parse_wait(f"{days}bd"), place=place, window=window)
    note(f"{local(after, place.zone)} -> {local(planned.at, place.zone)} local")
    assert planned.at >= after + timedelta(days=days)


@settings(max_examples=500, deadline=None)  # the repeated hour is a narrow target
@given(place=places, data=st.data())
def test_the_night_the_clocks_change_is_no_loophole(place: Place, data: st.DataObject) -> None:
    """Asked on the night the clocks change (an hour skipped, or an hour lived twice), the next
    opening is still inside the window by the wall clock, off the holidays, and not earlier."""
    changes = clock_changes(place.zone.key)
    assume(changes)
    change = data.draw(st.sampled_from(changes), label="change")
    at = change + timedelta(seconds=data.draw(st.integers(-2 * 3600, 2 * 3600), label="offset"))
    # Window edges within two hours of the change, by the wall clock.
    wall_change = local(change, place.zone)
    minute = wall_change.hour * 60 + wall_change.minute
    near = st.integers(-8, 8).map(lambda q: min(max(minute + 15 * q, 0), 1440))
    window = data.draw(windows(near), label="window")
    opening = next_opening(at, place, window)
    wall = local(opening.at, place.zone)
    note(f"{local(at, place.zone)} -> {wall} local")
    assert opening.at >= at
    assert window.open_at(wall)
    assert place.holiday(wall.date()) is None


@PLAN
@given(ask=asks(), data=st.data())
def test_a_promise_is_kept_exactly_as_given(ask: Ask, data: st.DataObject) -> None:
    """A promised time goes exactly then, whatever the window, holidays, gap or pause say."""
    when = data.draw(instants(ask.place.zone.key), label="promise")
    planned = plan(
        after=ask.after,
        wait=ask.wait,
        place=ask.place,
        window=ask.window,
        min_gap=ask.min_gap,
        last_contact=ask.last_contact,
        paused_until=ask.paused_until,
        promise=when,
        business_days_only=ask.business_days_only,
    )
    assert planned == Planned(when, ("promise",))


@PLAN
@given(ask=asks())
def test_claim_time_agrees_with_the_plan(ask: Ask) -> None:
    """A step claimed exactly when it was planned is not moved again by the claim-time check
    (else the worker would defer it forever, or late)."""
    planned = ask.plan()
    again = settle(
        planned.at,
        place=ask.place,
        window=ask.window,
        min_gap=ask.min_gap,
        last_contact=ask.last_contact,
        paused_until=ask.paused_until,
        business_days_only=ask.business_days,
    )
    assert again.at == planned.at, again


@PLAN
@given(ask=asks())
def test_work_that_waited_is_settled_into_the_window(ask: Ask) -> None:
    """Work claimed late (downtime, pacing) is re-checked: it goes now if every rule allows,
    else later, and then inside the window, past the gap and the pause, never on a holiday."""
    now = ask.after
    settled = settle(
        now,
        place=ask.place,
        window=ask.window,
        min_gap=ask.min_gap,
        last_contact=ask.last_contact,
        paused_until=ask.paused_until,
        business_days_only=ask.business_days_only,
    )
    assert settled.at >= now
    assert is_open(settled.at, ask.place, ask.window)
    if ask.last_contact is not None and ask.min_gap:
        assert settled.at >= ask.last_contact + ask.min_gap
    if ask.paused_until is not None:
        assert settled.at >= ask.paused_until
    if ask.business_days_only:
        assert ask.place.business_day(settled.at.astimezone(ask.place.zone).date())


# ---------------------------------------------------------------------------------------------
# 6: a whole sequence, through the etiquette as `enroll` and `preview` see it.


def _sequence(step_waits: list[Wait], window: Window | None) -> Sequence:
    steps = tuple(
        Step(number=n, wait=wait, subject="Hi" if n == 1 else None, body="…", breakup=False, line=n)
        for n, wait in enumerate(step_waits, start=1)
    )
    return Sequence(
        id="props",
        path=Path("props.yaml"),
        mailbox="sales",
        variables={},
        steps=steps,
        fields_used=frozenset(),
        window=window,
    )


@settings(max_examples=120, deadline=None)
@given(
    step_waits=st.lists(waits, min_size=1, max_size=6),
    window=optional_windows,
    values=contacts(),
    gap_hours=st.one_of(st.just(0), st.integers(1, 96)),
    written_before=st.one_of(st.none(), st.integers(0, 10 * 86400)),
    start=st.data(),
)
def test_a_whole_sequence_goes_in_order_apart_and_open(
    step_waits: list[Wait],
    window: Window | None,
    values: dict[str, str],
    gap_hours: int,
    written_before: int | None,
    start: st.DataObject,
) -> None:
    """Over a whole sequence, each step goes after the one before it (at least `min_gap` after
    it, and after the last email to the address, when a gap is set), and every step is inside
    the window and off the holidays."""
    assume(opens_on_a_weekday(window) or not any(w.business_days for w in step_waits))
    etiquette = Etiquette(Settings(min_gap=f"{gap_hours}h"))
    seq = _sequence(step_waits, window)
    place = etiquette.place(values)
    now = start.draw(instants(place.zone.key), label="now")
    gap = timedelta(hours=gap_hours)
    last = None if written_before is None else now - timedelta(seconds=written_before)
    steps = timeline(etiquette, seq, values, now, last_contact=last)
    times = [item.planned.at for item in steps]
    note(f"times (local): {[str(local(t, place.zone)) for t in times]}")
    assert len(times) == len(seq.steps)
    assert times[0] >= now
    if last is not None:
        assert times[0] >= last + gap
    for item in steps:
        assert not item.promised
        assert is_open(item.planned.at, place, window)
    for n, (earlier, later) in enumerate(itertools.pairwise(times), start=2):
        assert later >= earlier + gap
        if gap or seq.steps[n - 1].wait.minimum:
            assert later > earlier, f"step {n} goes with step {n - 1}"


@settings(max_examples=120, deadline=None)
@given(
    step_waits=st.lists(waits, min_size=2, max_size=5),
    window=optional_windows,
    values=contacts(),
    data=st.data(),
)
def test_a_promised_step_goes_when_promised(
    step_waits: list[Wait],
    window: Window | None,
    values: dict[str, str],
    data: st.DataObject,
) -> None:
    """A promise (a wall-clock time where the contact is) that is still ahead when its turn
    comes is kept to the second; one that has passed is marked missed and follows the rules."""
    assume(opens_on_a_weekday(window) or not any(w.business_days for w in step_waits))
    etiquette = Etiquette(Settings(min_gap="2d"))
    seq = _sequence(step_waits, window)
    place = etiquette.place(values)
    after = data.draw(instants(place.zone.key), label="after")
    promised_at = data.draw(instants(place.zone.key), label="promised")
    promise = Promise(local(promised_at, place.zone).replace(microsecond=0), place.zone.key)
    step = data.draw(st.integers(1, len(seq.steps)), label="step")
    planned, kept = etiquette.step_time(
        seq, step, values, after=after, last_contact=after, promises={step: promise}
    )
    if promise.at >= after:
        assert kept
        assert planned == Planned(promise.at, ("promise",))
        assert local(promise.at, place.zone) >= promise.local  # a gap time moves to the change
    else:
        assert not kept
        assert planned.reasons[0] == "promise_missed"
        assert is_open(planned.at, place, window)
        assert planned.at >= after + etiquette.min_gap


# ---------------------------------------------------------------------------------------------
# 5: mailbox pacing, simulated the way `Daemon.run_once` drains a mailbox.

BATCH = 100  # Daemon(batch=100): how many due rows one tick reads


@dataclass(order=True, frozen=True)
class Due:
    at: datetime
    id: int


@dataclass
class Mailbox:
    """What the database holds for one mailbox: what went and when, and `next_free`."""

    zone: ZoneInfo
    pace: Pace
    sent: list[tuple[datetime, Due]] = field(default_factory=list)
    next_free: datetime | None = None

    def sent_since(self, since: datetime) -> int:
        """`queries.sent_since`: rows created at or after `since` (sends go in time order)."""
        return len(self.sent) - bisect.bisect_left(self.sent, since, key=lambda row: row[0])

    def load(self, now: datetime) -> Load:
        """`Daemon._load`: sends since the local midnight, and the stored `next_free`."""
        return Load(self.sent_since(day_start(now, self.zone)), self.next_free)


def run_once(box: Mailbox, pending: list[Due], now: datetime, rng: random.Random) -> datetime:
    """`Daemon.run_once` for one mailbox, with non-promised work: read the load, skip a closed
    mailbox, take the oldest due rows, and drain them in order, each send taking a few seconds
    of the clock. Returns the clock after the tick."""
    load = box.load(now)
    if closed_until(now, box.pace, box.zone, load):
        return now
    due = [item for item in pending[:BATCH] if item.at <= now]
    clock = now
    for item in due:
        if closed_until(clock, box.pace, box.zone, load):
            continue
        clock += timedelta(seconds=rng.uniform(0.05, 3.0))  # claim, render, SMTP, record
        box.sent.append((clock, item))
        pending.remove(item)
        load = after_send(clock, box.pace, load, rng)
        box.next_free = load.next_free
    return clock


def wake_up(box: Mailbox, pending: list[Due], now: datetime, rng: random.Random) -> datetime:
    """When a tick that sent nothing looks again. The real loop polls every few seconds while
    work waits; polling that often for days would be slow, so this looks again either at a
    random moment before the next change (to catch a gate that opens too early) or a few
    seconds after it (the next due row, or the moment the pace says the mailbox opens)."""
    if pending and pending[0].at <= now:
        gate = closed_until(now, box.pace, box.zone, box.load(now))
        assert gate is not None, "work was due, the mailbox open, and nothing went"
        nxt = gate.opens_at
    else:
        nxt = pending[0].at
    if nxt > now and rng.random() < 0.5:
        return now + (nxt - now) * rng.random()
    return max(nxt, now) + timedelta(seconds=rng.uniform(0, 5))


@st.composite
def paces(draw: st.DrawFn) -> Pace:
    limit = draw(st.integers(1, 20))
    if draw(st.booleans()):
        return Pace(limit, timedelta(0), timedelta(0))
    low = draw(st.integers(30, 120))
    high = draw(st.integers(low, 120))
    return Pace(limit, timedelta(seconds=low), timedelta(seconds=high))


@st.composite
def due_streams(draw: st.DrawFn, start: datetime) -> list[Due]:
    """Hundreds of rows falling due over a few days, some at the very same second."""
    count = draw(st.integers(50, 300))
    span = draw(st.integers(3600, 5 * 86400))
    seconds = draw(st.lists(st.integers(0, span), min_size=count, max_size=count))
    return [Due(start + timedelta(seconds=s), n) for n, s in enumerate(seconds)]


# Hundreds of rows is the point (a day's limit must be hit, several days running), so the
# smallest example is large by design.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(
    zone_name=zone_names,
    pace=paces(),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_a_mailbox_keeps_its_pace_and_loses_nothing(
    zone_name: str, pace: Pace, seed: int, data: st.DataObject
) -> None:
    """A mailbox sends at most `daily_limit` emails in each of its local days and leaves at
    least the minimum spacing between two; it sends its due work oldest first, nothing before
    it is due, and everything in the end."""
    rng = random.Random(seed)  # spacing draws, send durations and poll times
    zone = ZoneInfo(zone_name)
    start = data.draw(instants(zone_name), label="start").replace(microsecond=0)
    pending = sorted(data.draw(due_streams(start), label="stream"))
    stream = list(pending)
    box = Mailbox(zone, pace)
    now = start
    for _ in range(20 * len(stream) + 1000):
        if not pending:
            break
        before = len(box.sent)
        now = run_once(box, pending, now, rng)
        if len(box.sent) == before:  # nothing went: sleep until something can
            now = wake_up(box, pending, now, rng)
    assert not pending, f"{len(pending)} of {len(stream)} never went"

    sent = box.sent
    assert sorted(item for _, item in sent) == stream  # each exactly once
    assert [item for _, item in sent] == stream, "not sent oldest first"
    for at, item in sent:
        assert at >= item.at, f"{item} went at {at}, before it was due"
    per_day = Counter(at.astimezone(zone).date() for at, _ in sent)
    busiest = max(per_day.items(), key=lambda kv: kv[1])
    assert busiest[1] <= pace.daily_limit, f"{busiest[1]} sent on {busiest[0]}"
    for (earlier, _), (later, _) in itertools.pairwise(sent):
        assert later - earlier >= pace.spacing_min


# ---------------------------------------------------------------------------------------------
# 7: wall-clock times to instants.


@st.composite
def wall_times(draw: st.DrawFn, zone_name: str) -> tuple[date, time]:
    """A local date and time of day, often on a day the clocks change, near the change."""
    changes = clock_changes(zone_name)
    zone = ZoneInfo(zone_name)
    near_a_change = draw(st.booleans())
    if changes and near_a_change:
        change = draw(st.sampled_from(changes))
        near = local(change, zone) + timedelta(seconds=draw(st.integers(-7200, 7200)))
        return near.date(), near.time().replace(fold=0)  # as written: no fold
    day = draw(st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)))
    return day, draw(st.times())


@settings(max_examples=300, deadline=None)
@given(zone_name=zone_names, data=st.data())
def test_a_wall_time_becomes_the_instant_that_shows_it(zone_name: str, data: st.DataObject) -> None:
    """A local time that exists comes back unchanged (its first occurrence, when the clocks go
    back); one that the clocks skip becomes the moment they jump."""
    zone = ZoneInfo(zone_name)
    day, at = data.draw(wall_times(zone_name), label="wall time")
    at = at.replace(microsecond=0, fold=0)
    wall = datetime.combine(day, at)
    instant = wall_to_instant(day, at, zone)
    note(f"{wall} in {zone_name} -> {instant} = {local(instant, zone)} local")
    exists = local(wall.replace(tzinfo=zone), zone) == wall
    if exists:
        assert local(instant, zone) == wall
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        assert instant == first  # fold=0: the first of two, when the clocks go back
    else:
        assert instant in clock_changes(zone_name)
        assert local(instant, zone) > wall
        assert local(instant - timedelta(seconds=1), zone) < wall
