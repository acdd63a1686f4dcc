"""A reply's meaning acted on, end to end on real servers (aiosmtpd, pymap and Dovecot, SQLite
and PostgreSQL), with the daemon reading its inbox as it runs.

The replies are read by the real classifier: what they ask (not now, until March; erase my
data; a demo, please) is in their words, as a person would write it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import ImapServer
from world import SALES, START, cli, reply, world

from sequencer import suppression
from sequencer.devservers import SmtpSink
from sequencer.store import queries
from sequencer.store.models import Enrollment, Suppression

pytestmark = pytest.mark.e2e
JO, ANN = "jo@prospect.test", "ann@prospect.test"
BERLIN = ZoneInfo("Europe/Berlin")

OUTREACH = """mailbox: sales
on_reply:
  not_now: {enroll: later}
steps:
  - wait: 0s
    subject: "Hello {{ contact.first_name }}"
    body: "Hi {{ contact.first_name }}, a short note."
  - wait: 2d
    body: "Hi {{ contact.first_name }}, the pricing page."
  - wait: 3d
    breakup: true
    body: "Hi {{ contact.first_name }}, I'll stop here."
"""
LATER = """mailbox: sales
window: {days: [tue, wed, thu], hours: "10:00-11:30"}
steps:
  - wait: 0s
    subject: "As you asked, {{ contact.first_name }}"
    body: "Hi {{ contact.first_name }}, you asked me to write again in March."
  - wait: 3bd
    breakup: true
    body: "Hi {{ contact.first_name }}, I'll stop here."
"""


@pytest.fixture
def setup(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    (tmp_path / "sequences").mkdir()
    (tmp_path / "sequences" / "outreach.yaml").write_text(OUTREACH)
    (tmp_path / "sequences" / "later.yaml").write_text(LATER)
    return world(
        tmp_path, smtp, imap, database, monkeypatch, top="timezone: Europe/Berlin\ncountry: DE"
    )


async def test_not_now_try_me_in_march_stops_and_writes_again_in_march_in_their_window(
    setup: Any,
) -> None:
    async with setup as w:
        await w.enroll(JO, "outreach")
        await w.tick()
        [first] = w.sent_to(JO)
        await w.imap.deliver(reply(first, "Not now, we're swamped with year-end. Try me in March?"))
        await w.tick(timedelta(minutes=5))
        replied = await w.enrollment(JO, "outreach")
        assert (replied.state, replied.reply_intent) == ("replied", "not_now")
        assert replied.follow_up_on == date(2027, 3, 1)
        later = await w.enrollment(JO, "later")
        assert later.state == "active" and later.variables["first_name"] == "Jo"
        # 1 March 2027 is a Monday, outside the Tue-Thu window: Tuesday 2 March, 10:00 Berlin.
        opening = datetime(2027, 3, 2, 10, 0, tzinfo=BERLIN)
        assert later.next_at == opening
        await w.tick_at(datetime(2027, 3, 2, 8, 59, tzinfo=UTC))
        assert len(w.sent_to(JO)) == 1  # nothing between the reply and March
        await w.tick_at(opening.astimezone(UTC))
        [_, again] = w.sent_to(JO)
        assert str(again["Subject"]) == "As you asked, Jo"
        assert "In-Reply-To" not in again  # a new thread, not step 2 of the old one
        assert w.sent_times(JO)[-1] == opening


async def test_gdpr_request_as_a_new_message_suppresses_and_agenda_lists_an_interested_reply(
    setup: Any,
) -> None:
    async with setup as w:
        await w.enroll(JO, "outreach")
        await w.enroll(ANN, "outreach", first_name="Ann")
        await w.tick()
        ask = EmailMessage()  # a new message: no thread headers, a new subject
        ask["From"], ask["To"] = f"Jo Park <{JO}>", SALES
        ask["Subject"] = "Request under the GDPR"
        ask["Date"], ask["Message-ID"] = format_datetime(START), make_msgid("prospect.test")
        ask.set_content(
            "Dear Sir or Madam,\n\nUnder Article 17 of the GDPR I request that you erase all "
            "personal data you hold about me, and that you do not contact me again.\n\nJo Park"
        )
        await w.imap.deliver(ask.as_bytes())
        yes = "Yes! Could you show us a demo, Thursday at 10?"
        await w.imap.deliver(reply(w.sent_to(ANN)[0], yes))
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "unsubscribed"
        assert await Suppression.filter(email=JO).exists()
        assert (await w.enrollment(ANN)).state == "replied"
        cfg = w.settings.source
        res = await asyncio.to_thread(cli, cfg, "agenda", "--json")
        assert res.returncode == 0, res.stderr
        items = json.loads(res.stdout)
        assert sorted((i["kind"], i["email"]) for i in items) == [
            ("erasure", JO),
            ("interested", ANN),
        ]
        assert next(i for i in items if i["kind"] == "interested")["excerpt"] == yes
        # Erase Jo: nothing stays but a hash, which still blocks the send itself.
        res = await asyncio.to_thread(cli, cfg, "forget", JO, "--yes")
        assert res.returncode == 0, res.stderr
        assert await Enrollment.filter(email=JO).count() == 0
        assert [s.email for s in await Suppression.all()] == [suppression.hashed(JO)]
        forced = queries.NewEnrollment(JO, "outreach", "sales", {"first_name": "Jo"}, w.clock.now())
        await queries.enroll([forced], allow_overlap=False, now=w.clock.now(), again=True)
        sent = len(w.smtp.received)
        await w.tick(timedelta(days=3))
        assert [m["To"] for m in w.sent_to(JO)] == [JO]  # only the first note, before it all
        assert len(w.smtp.received) == sent
        row = await w.enrollment(JO)
        assert row.state == "stopped" and row.reason == "address suppressed (forgotten)"
