"""The pure layout of `status`: whatever the names, counts and holds, every line fits the
terminal it is printed on, and the numbers are the grouped counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer import summary
from sequencer.holds import MailboxView
from sequencer.states import Hold, Inbox, State

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
names = st.text(st.characters(codec="utf-8", categories=["L", "N", "Pd"]), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(80, 200),
    boxes=st.lists(names, min_size=1, max_size=4, unique=True),
    holds=st.lists(st.sampled_from([None, *Hold]), min_size=4, max_size=4),
    n=st.integers(0, 2 * 10**6),
    email=names,
)
def test_every_summary_line_fits_the_width(
    width: int, boxes: list[str], holds: list[Hold | None], n: int, email: str
) -> None:
    views = {
        b: MailboxView(b, Inbox.WATCHING, h, NOW, "a long error " * 8 if h else None)
        for b, h in zip(boxes, holds, strict=False)
    }
    tallies = [
        (b, str(s), str(h) if h else None, n)
        for b in boxes
        for s, h in zip(State, holds, strict=False)
    ]
    facts = summary.Facts(
        tallies=tallies,
        views=views,
        next_send=summary.NextSend(NOW + timedelta(hours=3), email, "x" * 40, 2, boxes[0]),
        due_now=n,
        sent_day={boxes[0]: n},
        now=NOW,
        zone=ZoneInfo("Europe/Paris"),
        zones={},
    )
    lines = summary.summary_lines(facts, width)
    assert summary.lines_fit(lines, width), "\n".join(lines)


def test_the_summary_counts_by_state_by_mailbox_and_by_hold() -> None:
    views = {
        "sales": MailboxView("sales", Inbox.WATCHING, None, NOW, None),
        "support": MailboxView("support", Inbox.WATCHING, Hold.MANUAL_PAUSE, NOW, "until Fri"),
    }
    tallies = [
        ("sales", "active", None, 1200),
        ("sales", "active", "uncertain_send", 2),
        ("sales", "replied", None, 30),
        ("support", "active", None, 10),
        ("support", "failed", None, 1),
    ]
    facts = summary.Facts(tallies, views, None, 5, {"sales": 48}, NOW, ZoneInfo("UTC"), {})
    lines = summary.summary_lines(facts, 80)
    text = "\n".join(lines)
    assert lines[0].startswith("1,243 enrollment(s), 2 mailbox(es)")
    assert "By state: active 1,212, replied 30, failed 1" in text
    assert "Held contacts (active, not sent to): uncertain_send 2" in text
    sales = next(x for x in lines if x.startswith("sales"))
    assert sales.split() == ["sales", "1,200", "2", "30", "48", "ok"]
    support = next(x for x in lines if x.startswith("support"))
    assert support.split() == ["support", "10", "0", "1", "0", "HELD:", "manual_pause"]
    assert "Due now: 5" in text
    assert "Mailbox support is held: manual_pause (until Fri)" in " ".join(text.split())


@settings(max_examples=60, deadline=None)
@given(width=st.integers(60, 200), email=names, sequence=names, why=st.text(max_size=300))
def test_every_row_line_fits_the_width(width: int, email: str, sequence: str, why: str) -> None:
    cols = summary.Columns.for_width(width)
    row = {
        "id": 123456,
        "email": email,
        "sequence": sequence,
        "state": "unsubscribed",
        "steps_sent": 3,
        "steps_total": 12,
        "local_next_send_at": (NOW + timedelta(days=400)).isoformat(),
        "timezone": "America/Argentina/Buenos_Aires",
    }
    lines = summary.header(cols) + summary.row_lines(row, " ".join(why.split()), cols, NOW)
    assert summary.lines_fit(lines, width), "\n".join(lines)
