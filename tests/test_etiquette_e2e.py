"""The etiquette rules as a user meets them, against real servers: aiosmtpd for SMTP, pymap and
Dovecot for IMAP, SQLite and PostgreSQL. The clock is frozen and moved by hand; what counts is
what the SMTP sink received and when (the clock at the tick that sent it), and what the
database says about each enrollment (state, next_at, next_reasons, paused_until)."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import ImapServer
from world import START, reply, world

from sequencer.devservers import SmtpSink
from sequencer.store.models import InboundMessage

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"
HANS = "hans@prospect.test"
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def local(zone: ZoneInfo, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in `zone` (December 2026 or January 2027), as the UTC instant."""
    year = 2026 if month == 12 else 2027
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return local(ZoneInfo("UTC"), month, day, hour, minute)


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    """December 2026 in New York (EST, UTC-5)."""
    return local(NEW_YORK, 12, day, hour, minute)


def write_sequence(root: Path, name: str, text: str) -> None:
    (root / "sequences").mkdir(exist_ok=True)
    (root / "sequences" / f"{name}.yaml").write_text(text)


EARLY_WEEK = 'window: {days: [mon, tue, wed, thu], hours: "09:00-11:30"}'
OFFICE_HOURS = 'window: {days: mon-fri, hours: "09:00-17:00"}'


# --- 1. sending window ----------------------------------------------------------------------


async def test_window_holds_a_step_until_the_next_opening_in_the_contacts_zone(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(tmp_path, smtp, imap, sqlite_url, monkeypatch, top=EARLY_WEEK) as w:
        # Enrolled at 09:00 UTC, which is 04:00 in New York: the first email waits for 09:00.
        await w.enroll(JO, timezone="America/New_York")
        enr = await w.enrollment(JO)
        assert (enr.next_at, enr.next_reasons) == (ny(1, 9), ["window"])
        assert await w.tick() == 0
        assert await w.tick_at(ny(1, 8, 59)) == 0
        assert w.smtp.received == []
        assert await w.tick_at(ny(1, 9)) == 1
        assert w.sent_times(JO) == [ny(1, 9)]
        assert w.sent_to(JO)[0]["Date"].datetime == ny(1, 9)

        # Step 2 falls due on Thursday 09:00 New York time, inside the window...
        enr = await w.enrollment(JO)
        assert (enr.state, enr.next_at, enr.next_reasons) == ("active", ny(3, 9), [])
        # ...but the daemon only looks at 11:31 (it was down): the window has just closed,
        # Friday is not a sending day, then comes the weekend.
        assert await w.tick_at(ny(3, 11, 31)) == 0
        enr = await w.enrollment(JO)
        assert enr.state == "active"
        assert enr.next_at == ny(7, 9)
        assert {"window", "weekend"} <= set(enr.next_reasons)
        for when in (ny(4, 9), ny(4, 10), ny(5, 10), ny(6, 10), ny(7, 8, 59)):
            assert await w.tick_at(when) == 0, when
        assert len(w.sent_to(JO)) == 1
        assert await w.tick_at(ny(7, 9)) == 1
        assert w.sent_times(JO) == [ny(1, 9), ny(7, 9)]

        # Step 3 is planned from Monday's send: three days on is Thursday 09:00, open.
        enr = await w.enrollment(JO)
        assert (enr.steps_sent, enr.next_at, enr.next_reasons) == (2, ny(10, 9), [])


# --- 2. public holidays ---------------------------------------------------------------------


async def test_step_due_on_christmas_goes_the_next_business_day(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    top = f"country: US\n{OFFICE_HOURS}"
    pat = "pat@prospect.test"
    async with world(tmp_path, smtp, imap, sqlite_url, monkeypatch, top=top) as w:
        # Tuesday 22 December, 15:00 UTC: 10:00 in New York. Pat's step 2 is due on Thursday
        # the 24th, an ordinary working day in the US.
        w.clock.advance(utc(12, 22, 15) - START)
        await w.enroll(pat, timezone="America/New_York")  # the settings' country: US
        assert await w.tick() == 1
        assert (await w.enrollment(pat)).next_at == ny(24, 10)

        # Wednesday 23 December, 15:00 UTC: 10:00 in New York, 16:00 in Munich.
        await w.tick_at(utc(12, 23, 15))
        await w.enroll(JO, timezone="America/New_York")
        await w.enroll(HANS, timezone="Europe/Berlin", country="DE", subdivision="BY")
        assert await w.tick() == 2

        # Their step 2 waits 2 days: Friday 25 December, Christmas Day in both countries.
        jo, hans = await w.enrollment(JO), await w.enrollment(HANS)
        assert jo.next_at == ny(28, 9)
        assert jo.next_reasons == ["holiday:Christmas Day", "weekend"]
        assert hans.next_at == local(BERLIN, 12, 28, 9)
        assert hans.next_reasons[0] == "holiday:Christmas Day"

        # The daemon is down all of the 24th; when it looks again it is Christmas morning.
        assert await w.tick_at(utc(12, 25, 8)) == 0
        pat_enr = await w.enrollment(pat)
        assert (pat_enr.state, pat_enr.next_at) == ("active", ny(28, 9))
        assert pat_enr.next_reasons == ["holiday:Christmas Day", "weekend"]
        for when in (utc(12, 25, 15), utc(12, 25, 20), utc(12, 26, 15), utc(12, 27, 15)):
            assert await w.tick_at(when) == 0, when
        assert await w.tick_at(utc(12, 28, 7, 59)) == 0
        assert await w.tick_at(utc(12, 28, 8)) == 1  # 09:00 in Munich
        assert await w.tick_at(utc(12, 28, 13, 59)) == 0
        assert await w.tick_at(utc(12, 28, 14)) == 2  # 09:00 in New York
        first = utc(12, 23, 15)
        assert w.sent_times(HANS) == [first, local(BERLIN, 12, 28, 9)]
        assert w.sent_times(JO) == [first, ny(28, 9)]
        assert w.sent_times(pat) == [utc(12, 22, 15), ny(28, 9)]


NUDGE = """mailbox: sales
steps:
  - wait: 0s
    subject: "Quick question, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, a quick question about your plans.
  - wait: 1bd
    breakup: true
    body: |
      Hi {{ contact.first_name }}, following up on my question.
"""


async def test_business_day_wait_skips_the_contacts_regional_holiday(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6 January is Epiphany in Bavaria, an ordinary Wednesday in Berlin."""
    write_sequence(tmp_path, "nudge", NUDGE)
    berlin = "berta@prospect.test"
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch, top="min_gap: 12h") as w:
        w.clock.advance(utc(1, 5, 9) - START)  # Tuesday 5 January 2027, 10:00 in Germany
        await w.enroll(HANS, "nudge", timezone="Europe/Berlin", country="DE", subdivision="BY")
        await w.enroll(berlin, "nudge", timezone="Europe/Berlin", country="DE")
        assert await w.tick() == 2

        hans, berta = await w.enrollment(HANS), await w.enrollment(berlin)
        assert (berta.next_at, berta.next_reasons) == (utc(1, 6, 9), [])
        assert (hans.next_at, hans.next_reasons) == (utc(1, 7, 9), ["holiday:Epiphany"])

        assert await w.tick_at(utc(1, 6, 9)) == 1
        assert w.sent_times(berlin) == [utc(1, 5, 9), utc(1, 6, 9)]
        assert await w.tick_at(utc(1, 6, 16)) == 0  # nothing for Bavaria on its holiday
        assert await w.tick_at(utc(1, 7, 8, 59)) == 0
        assert await w.tick_at(utc(1, 7, 9)) == 1
        assert w.sent_times(HANS) == [utc(1, 5, 9), utc(1, 7, 9)]
        assert (await w.enrollment(HANS)).state == "completed"


# --- 3. mailbox pace ------------------------------------------------------------------------


async def test_daily_limit_rolls_the_rest_over_to_the_mailboxs_next_day_oldest_first(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = "timezone: America/New_York\n    pace: {daily_limit: 3, spacing: 0s}"
    people = [f"c{n}@prospect.test" for n in range(7)]
    async with world(tmp_path, smtp, imap, database, monkeypatch, box=box) as w:
        for person in people:  # enrolled a minute apart: c0 is the oldest due
            await w.enroll(person)
            w.clock.advance(timedelta(minutes=1))

        def got(step: int) -> list[str]:
            return [p for p in people if len(w.sent_to(p)) >= step]

        # Tuesday 1 December 09:10 UTC (04:10 in the mailbox's New York): three go.
        assert await w.tick_at(utc(12, 1, 9, 10)) == 3
        assert got(1) == people[:3]
        for person in people[3:]:
            enr = await w.enrollment(person)
            assert enr.state == "active"  # held, not dropped
        assert await w.tick_at(utc(12, 1, 12)) == 0
        # Midnight UTC is still Tuesday evening for the mailbox.
        assert await w.tick_at(utc(12, 2, 0)) == 0
        assert await w.tick_at(ny(1, 23, 59)) == 0
        assert await w.tick_at(ny(2, 0)) == 3  # Wednesday in New York
        assert got(1) == people[:6]
        assert await w.tick_at(ny(2, 12)) == 0
        assert await w.tick_at(ny(3, 0)) == 1
        assert got(1) == people
        first = [w.sent_times(p)[0] for p in people]
        assert first == [utc(12, 1, 9, 10)] * 3 + [ny(2, 0)] * 3 + [ny(3, 0)]

        # Step 2s come due and share the same quota, oldest due first.
        assert await w.tick_at(utc(12, 3, 9, 10)) == 2  # c0, c1 (c6 already went today)
        assert got(2) == people[:2]
        assert await w.tick_at(ny(4, 0)) == 3  # c2 (due since Thursday), then c3, c4
        assert got(2) == people[:5]
        assert await w.tick_at(ny(5, 0)) == 2  # c5 (due since Friday), c6 (due now)
        assert got(2) == people

        await w.run_until_quiet(step=timedelta(hours=6))
        for person in people:
            assert len(w.sent_to(person)) == 4, person
            assert (await w.enrollment(person)).state == "completed"
        per_day = Counter(at.astimezone(NEW_YORK).date() for at in w.sent_times())
        assert max(per_day.values()) == 3, per_day
        assert sum(per_day.values()) == 28


async def test_spacing_keeps_sends_from_one_mailbox_apart(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = "pace: {daily_limit: 50, spacing: 60s-90s}"
    people = [f"c{n}@prospect.test" for n in range(3)]
    async with world(tmp_path, smtp, pymap, database, monkeypatch, box=box) as w:
        for person in people:
            await w.enroll(person)
        assert await w.tick() == 1
        for _ in range(30):
            if len(w.smtp.received) == 3:
                break
            assert await w.tick(timedelta(seconds=10)) <= 1
        times = w.sent_times()
        assert len(times) == 3
        assert [w.sent_times(p)[0] for p in people] == times  # in enrolment order
        for before, after in itertools.pairwise(times):
            assert timedelta(seconds=60) <= after - before <= timedelta(seconds=100)


# --- 4, 5. auto-replies ---------------------------------------------------------------------


def out_of_office(ours: EmailMessage, back: str) -> bytes:
    """An RFC 3834 auto-reply to one of our messages, as Exchange or Gmail sends it."""
    return reply(
        ours,
        f"I am out of the office and {back}. For urgent matters please call the front desk.",
        subject=f"Automatic reply: {ours['Subject']}",
        Auto_Submitted="auto-replied",
    )


async def test_out_of_office_pauses_until_the_first_business_day_after_the_return(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(tmp_path, smtp, imap, sqlite_url, monkeypatch, top=OFFICE_HOURS) as w:
        await w.enroll(JO)
        assert await w.tick() == 1
        enr = await w.enrollment(JO)
        assert enr.next_at == utc(12, 3, 9)
        await w.imap.deliver(out_of_office(w.sent_to(JO)[0], "back on 7 December"))
        assert await w.tick(timedelta(minutes=5)) == 0

        # Back on Monday 7 December: nothing until Tuesday 8, then the window's 09:00.
        enr = await w.enrollment(JO)
        assert enr.state == "active"
        assert enr.paused_until == utc(12, 8, 0)
        assert enr.next_at == utc(12, 8, 9)
        assert enr.next_reasons[0] == "out_of_office"
        noted = await InboundMessage.get(enrollment_id=enr.id)
        assert (noted.verdict, noted.kind) == ("auto_reply", "out_of_office")

        for when in (utc(12, 3, 9), utc(12, 4, 12), utc(12, 7, 10), utc(12, 8, 8, 59)):
            assert await w.tick_at(when) == 0, when
        assert len(w.sent_to(JO)) == 1
        assert await w.tick_at(utc(12, 8, 9)) == 1
        assert w.sent_times(JO) == [START, utc(12, 8, 9)]
        assert w.sent_to(JO)[1]["In-Reply-To"] == w.sent_to(JO)[0]["Message-ID"]

        # The sequence carries on from the resumed step: 3 days on is Friday 11 December.
        enr = await w.enrollment(JO)
        assert (enr.state, enr.steps_sent, enr.next_at) == ("active", 2, utc(12, 11, 9))


async def test_out_of_office_keeps_a_promise_and_pauses_the_steps_after_it(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch, top=OFFICE_HOURS) as w:
        await w.enroll(JO, promised={2: "2026-12-03 10:00"})
        assert await w.tick() == 1
        await w.imap.deliver(out_of_office(w.sent_to(JO)[0], "back on 7 December"))
        assert await w.tick(timedelta(minutes=5)) == 0
        enr = await w.enrollment(JO)
        assert (enr.state, enr.paused_until) == ("active", utc(12, 8, 0))
        assert (enr.next_at, enr.next_reasons, enr.promised) == (utc(12, 3, 10), ["promise"], True)

        assert await w.tick_at(utc(12, 3, 9, 59)) == 0
        assert await w.tick_at(utc(12, 3, 10)) == 1  # promised, so it goes during the absence
        enr = await w.enrollment(JO)
        assert (enr.steps_sent, enr.next_at, enr.promised) == (2, utc(12, 8, 9), False)
        assert enr.next_reasons[0] == "out_of_office"
        for when in (utc(12, 6, 10), utc(12, 7, 12), utc(12, 8, 8, 59)):
            assert await w.tick_at(when) == 0, when
        assert await w.tick_at(utc(12, 8, 9)) == 1
        assert w.sent_times(JO) == [START, utc(12, 3, 10), utc(12, 8, 9)]


async def test_left_company_notice_stops_the_sequence(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch) as w:
        await w.enroll(JO)
        assert await w.tick() == 1
        notice = reply(
            w.sent_to(JO)[0],
            "Jo Smith no longer works at Prospect Ltd. "
            "For anything else please contact alice@prospect.test.",
            subject="Automatic reply: Notes from our call, Jo",
            Auto_Submitted="auto-replied",
        )
        await w.imap.deliver(notice)
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert (enr.state, enr.reason, enr.next_at) == ("stopped", "left_company", None)
        inbound = await InboundMessage.get(id=enr.ended_by_id)
        assert (inbound.verdict, inbound.kind) == ("auto_reply", "left_company")
        assert "alice@prospect.test" in inbound.action
        for _ in range(4):
            assert await w.tick(timedelta(days=3)) == 0
        assert len(w.smtp.received) == 1


# --- 6. promises ----------------------------------------------------------------------------


async def test_promised_step_goes_exactly_when_promised_despite_window_gap_and_pace(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    top = f"{EARLY_WEEK}\nmin_gap: 3d"
    box = "pace: {daily_limit: 1, spacing: 0s}"
    pat = "pat@prospect.test"
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch, top=top, box=box) as w:
        # Thursday 16:45 in New York: after the window's 11:30, and 2 days 7h45 after step 1.
        await w.enroll(JO, promised={2: "2026-12-03 16:45"}, timezone="America/New_York")
        assert await w.tick_at(ny(1, 9)) == 1
        enr = await w.enrollment(JO)
        assert (enr.next_at, enr.next_reasons, enr.promised) == (ny(3, 16, 45), ["promise"], True)

        # Thursday's one email allowed by the mailbox's pace goes to somebody else...
        assert await w.tick_at(ny(3, 9)) == 0  # where the wait alone would have put step 2
        await w.enroll(pat, timezone="America/New_York")
        assert await w.tick() == 1
        assert len(w.sent_to(pat)) == 1
        assert len(w.sent_to(JO)) == 1
        # ...and the promise is kept all the same, to the minute.
        assert await w.tick_at(ny(3, 16, 44)) == 0
        assert await w.tick_at(ny(3, 16, 45)) == 1
        assert w.sent_times(JO) == [ny(1, 9), ny(3, 16, 45)]
        assert w.sent_to(JO)[1]["Date"].datetime == ny(3, 16, 45)

        # Back to the rules: 3 days on is Sunday, so Monday's opening.
        enr = await w.enrollment(JO)
        assert (enr.next_at, enr.promised) == (ny(7, 9), False)
        assert "weekend" in enr.next_reasons


# --- 7. minimum gap across sequences ---------------------------------------------------------

WEBINAR = """mailbox: sales
steps:
  - wait: 0s
    subject: "Webinar on Thursday, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, we are running a webinar on Thursday.
  - wait: 1d
    breakup: true
    body: |
      Hi {{ contact.first_name }}, a reminder about Thursday's webinar.
"""


async def test_min_gap_holds_across_sequences(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_sequence(tmp_path, "webinar", WEBINAR)
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch) as w:
        await w.enroll(JO)
        assert await w.tick() == 1
        await w.tick(timedelta(hours=1))
        await w.enroll(JO, "webinar", allow_overlap=True)
        webinar = await w.enrollment(JO, "webinar")
        assert (webinar.next_at, webinar.next_reasons) == (START + timedelta(days=2), ["min_gap"])

        # Both sequences' next steps fall due at the same moment: one goes, one is deferred.
        assert await w.tick_at(START + timedelta(days=2)) == 1
        follow_up, webinar = await w.enrollment(JO, "follow-up"), await w.enrollment(JO, "webinar")
        assert (follow_up.steps_sent, webinar.steps_sent) == (2, 0)
        assert webinar.state == "active"
        assert (webinar.next_at, webinar.next_reasons) == (START + timedelta(days=4), ["min_gap"])

        await w.run_until_quiet(step=timedelta(hours=3))
        assert len(w.sent_to(JO)) == 6  # four follow-ups and two webinar emails, none dropped
        times = w.sent_times(JO)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= timedelta(days=2), gaps
        subjects = [str(m["Subject"]) for m in w.sent_to(JO)]
        assert subjects.count("Webinar on Thursday, Jo") == 1


async def test_status_says_why_a_contact_waits(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `sequencer status` shows, computed at the frozen clock: pace holding due work,
    a promise, and an out-of-office pause, each in words."""
    from sequencer import cli
    from sequencer.store import queries

    box = "pace: {daily_limit: 1, spacing: 0s}"
    async with world(tmp_path, smtp, pymap, "sqlite://state.db", monkeypatch, box=box) as w:
        await w.enroll("a@prospect.test")
        await w.enroll("b@prospect.test")
        await w.enroll("c@prospect.test", promised={1: "2026-12-01 09:30"})
        assert await w.tick(timedelta(minutes=1)) == 1  # a goes; the limit holds b
        await w.imap.deliver(
            reply(
                w.sent_to("a@prospect.test")[0],
                "I am out of the office, back on 7 December.",
                Auto_Submitted="auto-replied",
            )
        )
        await w.tick(timedelta(minutes=1))
        now = w.clock.now()
        gates = await cli._pace_gates(w.daemon.etiquette, now)
        rows = {
            e.email: cli._row(
                e,
                ended,
                4,
                w.daemon.etiquette,
                cli._held_by(gates.get(e.mailbox), e, now),
            )
            for e, ended in await queries.listing()
        }
        a, b, c = rows["a@prospect.test"], rows["b@prospect.test"], rows["c@prospect.test"]
        assert a["paused_until"] == "2026-12-08T00:00:00+00:00"
        assert a["next_step"] == 2 and "out_of_office" in a["next_reasons"]
        assert cli._why(a).startswith("out of office until 2026-12-08")
        assert b["held_by"] == {
            "reason": "pace:daily_limit",
            "opens_at": "2026-12-02T00:00:00+00:00",
            "sent_today": 1,
            "daily_limit": 1,
        }
        assert "pace: 1/1 sent today, resumes 2026-12-02 00:00 UTC" in cli._why(b)
        assert c["promised"] and c["promises"] == {
            "1": {"local": "2026-12-01 09:30", "zone": "UTC"}
        }
        assert cli._why(c) == "promised: kept exactly"
