"""A reply's meaning acted on, end to end on real servers (aiosmtpd, pymap and Dovecot, SQLite
and PostgreSQL), with the daemon reading its inbox as it runs.

Until the classifier reads intents, `reading` wraps the real classifier and adds to its
reading of these messages what the intent rules are to add (intent, follow_up_on, suppress,
erasure); everything else (matching, the handler, the store, the scheduler, SMTP) is real."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import ImapServer
from world import SALES, START, cli, reply, world

from sequencer import replies, suppression
from sequencer.classify import Classification, Intent, Verdict
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


def reading(monkeypatch: pytest.MonkeyPatch, **by_phrase: dict[str, Any]) -> list[tuple[int, int]]:
    """The real classifier, plus what the intent rules will read in messages containing each
    phrase. Returns the fiscal_year_start each call was given."""
    real: Callable[..., Classification] = replies.classify
    seen: list[tuple[int, int]] = []

    def classify(raw: bytes, *, fiscal_year_start: tuple[int, int] = (1, 1)) -> Classification:
        seen.append(fiscal_year_start)
        c = real(raw, fiscal_year_start=fiscal_year_start)
        for phrase, what in by_phrase.items():
            if phrase.encode() in raw:
                return replace(c, **what)
        return c

    monkeypatch.setattr(replies, "classify", classify)
    return seen


async def test_not_now_try_me_in_march_stops_and_writes_again_in_march_in_their_window(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = reading(
        monkeypatch,
        try_me_in_March={"intent": Intent.NOT_NOW, "follow_up_on": date(2027, 3, 1)},
    )
    async with setup as w:
        await w.enroll(JO, "outreach")
        await w.tick()
        [first] = w.sent_to(JO)
        await w.imap.deliver(reply(first, "Not now, busy with year-end. try_me_in_March please."))
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO, "outreach")).state == "replied"
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
        assert seen and set(seen) == {(1, 1)}


async def test_gdpr_request_as_a_new_message_suppresses_and_agenda_lists_an_interested_reply(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading(
        monkeypatch,
        Article_17={
            "verdict": Verdict.UNSUBSCRIBE_REQUEST,
            "suppress": (JO,),
            "erasure": True,
        },
        demo_please={"intent": Intent.INTERESTED},
    )
    async with setup as w:
        await w.enroll(JO, "outreach")
        await w.enroll(ANN, "outreach", first_name="Ann")
        await w.tick()
        ask = EmailMessage()  # a new message: no thread headers, a new subject
        ask["From"], ask["To"] = f"Jo Park <{JO}>", SALES
        ask["Subject"] = "Request under the GDPR"
        ask["Date"], ask["Message-ID"] = format_datetime(START), make_msgid("prospect.test")
        ask.set_content("Under Article_17 I ask you to erase my data and never write again.")
        await w.imap.deliver(ask.as_bytes())
        await w.imap.deliver(reply(w.sent_to(ANN)[0], "Yes! A demo_please, Thursday at 10?"))
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
        assert next(i for i in items if i["kind"] == "interested")["excerpt"] == (
            "Yes! A demo_please, Thursday at 10?"
        )
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
