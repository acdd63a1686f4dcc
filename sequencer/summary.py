"""Pure: what `sequencer status` prints, as lines that fit the terminal (80 columns and up).

The summary is built from grouped counts, the next send and each mailbox's hold, never from
every row, so it costs the same at a thousand enrollments and at a million. The row view is
two lines an enrollment (the facts in columns, then why), so a page can be printed as soon
as it is read, with columns that line up from one page to the next.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from rich.cells import cell_len, set_cell_size

from sequencer.holds import ADVICE, MailboxView
from sequencer.states import State

#: (mailbox, state, hold, count): one row of the grouped count.
Tally = tuple[str, str, str | None, int]

HINT = (
    "Rows: sequencer status EMAIL, or --state failed, --mailbox NAME, --sequence ID, "
    "--limit 50; --json for every row; --watch to follow"
)


@dataclass(frozen=True)
class NextSend:
    at: datetime
    email: str
    sequence: str
    step: int
    mailbox: str


@dataclass(frozen=True)
class Facts:
    """What the summary says, gathered by the caller with a few grouped queries."""

    tallies: list[Tally]
    views: Mapping[str, MailboxView]
    next_send: NextSend | None
    due_now: int
    sent_day: Mapping[str, int]  # on the wire in the last 24 hours, by mailbox
    now: datetime
    zone: ZoneInfo  # the installation's zone, for the clock in the title
    zones: Mapping[str, ZoneInfo]  # each mailbox's zone: times as its salesperson reads them


def _n(value: int) -> str:
    return f"{value:,}"


def _fit(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis, or padded to it."""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def when(at: datetime, zone: ZoneInfo, now: datetime) -> str:
    """`Tue 08 Dec 09:00 CET`, with the year when it is not this one."""
    local = at.astimezone(zone)
    year = "" if local.year == now.astimezone(zone).year else f" {local.year}"
    return f"{local:%a %d %b}{year} {local:%H:%M} {local.tzname()}"


def until(at: datetime, now: datetime) -> str:
    """`in 3h 05m`, `in 2d 4h`: how far off a time is."""
    left = max(at - now, timedelta(0))
    days, rest = divmod(int(left.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"in {days}d {hours}h"
    if hours:
        return f"in {hours}h {rest // 60:02d}m"
    return f"in {max(rest // 60, 1)}m" if rest >= 60 else "in under a minute"


def _chop(word: str, width: int) -> list[str]:
    """A word wider than `width` cells, in pieces that fit."""
    pieces, piece = [], ""
    for ch in word:
        if piece and cell_len(piece + ch) > width:
            pieces.append(piece)
            piece = ""
        piece += ch
    return [*pieces, piece]


def _wrap(text: str, width: int, indent: str = "  ") -> list[str]:
    """`text` in lines of at most `width` cells (a wide character counts two), the lines
    after the first indented."""
    room = max(width - cell_len(indent), 1)
    lines: list[str] = []
    line = ""
    for word in text.split():
        for part in [word] if cell_len(word) <= room else _chop(word, room):
            if not line:
                line = (indent if lines else "") + part
            elif cell_len(line) + 1 + cell_len(part) <= width:
                line += " " + part
            else:
                lines.append(line)
                line = indent + part
    return [*lines, line]


def summary_lines(facts: Facts, width: int = 80) -> list[str]:
    """The summary, every line at most `width` cells (80 and up: narrower terminals wrap)."""
    width = max(width, 80)
    by_state: Counter[str] = Counter()
    held: Counter[str] = Counter()
    boxes: dict[str, Counter[str]] = defaultdict(Counter)
    for mailbox, state, hold, n in facts.tallies:
        by_state[state] += n
        column = "ended" if state != State.ACTIVE else "held" if hold else "active"
        boxes[mailbox][column] += n
        if state == State.ACTIVE and hold:
            held[hold] += n
    total = sum(by_state.values())
    local = facts.now.astimezone(facts.zone)
    lines = _wrap(
        f"{_n(total)} enrollment(s), {len(facts.views)} mailbox(es), "
        f"{local:%a %d %b %Y %H:%M} {local.tzname()}",
        width,
    )
    lines.append("")
    states = [s for s in State if by_state[s]] + sorted(set(by_state) - set(State))
    cells = [f"{s} {_n(by_state[s])}" for s in states] or ["none yet: sequencer enroll"]
    lines += _wrap("By state: " + ", ".join(cells), width)
    if held:
        parts = ", ".join(f"{reason} {_n(n)}" for reason, n in held.most_common())
        lines += _wrap(f"Held contacts (active, not sent to): {parts}", width)
    lines.append("")
    # The counts take 45 cells (up to 9,999,999 each); `sending` gets what is left.
    longest = max([len("mailbox"), *(cell_len(m) for m in [*boxes, *facts.views])])
    name_w = min(longest, 18 + (width - 80) // 2)
    head = f"{_fit('mailbox', name_w)}  {'active':>10} {'held':>8} {'ended':>10}  {'sent 24h':>9}  "
    lines.append(head + "sending")
    status_w = width - cell_len(head)
    for name in sorted(set(facts.views) | set(boxes)):
        count, view = boxes[name], facts.views.get(name)
        state = "not in the settings"
        if view is not None:
            state = "ok" if view.hold is None else f"HELD: {view.hold}"
        row = (
            f"{_fit(name, name_w)}  {_n(count['active']):>10} {_n(count['held']):>8} "
            f"{_n(count['ended']):>10}  {_n(facts.sent_day.get(name, 0)):>9}  "
        )
        lines.append(row + _fit(state, status_w).rstrip())
    lines.append("")
    nxt = facts.next_send
    if nxt is not None:
        zone = facts.zones.get(nxt.mailbox, facts.zone)
        lines += _wrap(
            f"Next send: {when(nxt.at, zone, facts.now)} ({until(nxt.at, facts.now)}), step "
            f"{nxt.step} of {nxt.sequence} to {nxt.email}, from {nxt.mailbox}",
            width,
        )
    elif not facts.due_now:
        why = (
            "every active contact, or its mailbox, is held"
            if by_state[State.ACTIVE]
            else ("no active contact")
        )
        lines.append(f"Next send: nothing is planned ({why})")
    if facts.due_now:
        lines += _wrap(
            f"Due now: {_n(facts.due_now)} (sent as the daemon, the mailbox's pace and the "
            "sending window allow)",
            width,
        )
    stuck = [v for v in facts.views.values() if v.hold is not None]
    for view in stuck:
        assert view.hold is not None
        detail = f" ({view.last_error})" if view.last_error else ""
        lines += _wrap(
            f"Mailbox {view.mailbox} is held: {view.hold}{detail}: {ADVICE[view.hold]}", width
        )
    lines.append("")
    lines += _wrap(HINT, width)
    return lines


# --- rows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Widths of the row view's columns, fixed for the whole listing so pages line up."""

    email: int
    sequence: int
    width: int

    @classmethod
    def for_width(cls, width: int) -> Columns:
        width = max(width, 60)
        spare = width - 80
        return cls(
            email=24 + min(max(spare, 0) * 2 // 3, 24),
            sequence=13 + min(max(spare, 0) // 3, 16),
            width=width,
        )


STATE_W, SENT_W = 12, 5


def header(cols: Columns) -> list[str]:
    line = (
        f"{_fit('email', cols.email)} {_fit('sequence', cols.sequence)} "
        f"{_fit('state', STATE_W)} {'sent':>{SENT_W}}  next (their time)"
    )
    return [_fit(line, cols.width).rstrip(), "-" * min(cell_len(line), cols.width)]


def row_lines(row: Mapping[str, object], why: str, cols: Columns, now: datetime) -> list[str]:
    """One enrollment (a `status --json` object): its facts on one line, then `#id` and why,
    wrapped and indented."""
    total = row.get("steps_total") or "?"
    nxt = ""
    local = row.get("local_next_send_at")
    if isinstance(local, str) and isinstance(row.get("timezone"), str):
        at = datetime.fromisoformat(local)
        nxt = when(at, ZoneInfo(str(row["timezone"])), now)
    first = (
        f"{_fit(str(row['email']), cols.email)} {_fit(str(row['sequence']), cols.sequence)} "
        f"{_fit(str(row['state']), STATE_W)} {str(row['steps_sent']) + '/' + str(total):>{SENT_W}}"
        f"  {nxt}"
    )
    lines = [_fit(first, cols.width).rstrip()]
    lines += ["  " + x for x in _wrap(f"#{row['id']} {why}", cols.width - 2, indent="    ")]
    return lines


def count_line(shown: int, more: bool) -> str:
    return f"{_n(shown)} enrollment(s)" + (" (more: raise --limit)" if more else "")


def lines_fit(lines: Iterable[str], width: int) -> bool:
    """Every line within `width` cells (tests and callers check what they print)."""
    return all(cell_len(line) <= width for line in lines)
