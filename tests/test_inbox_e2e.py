"""What each kind of inbound mail does to a running sequence, on real servers: aiosmtpd for
SMTP, pymap and Dovecot for IMAP, SQLite and PostgreSQL; the clock is frozen and moved by hand.
Soft bounces pause and retry, repeated ones over days (or a later hard one) stop; a refusal
for our reputation halts the mailbox, not the contact; a recipient's policy fails only that
contact; complaints suppress; read receipts change nothing; an accepted invite is a reply."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from world import SALES, START, dsn, world

from sequencer.devservers import SmtpSink
from sequencer.store.models import InboundMessage, MailboxState, Suppression

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"
ANN = "ann@prospect.test"
FULL = "552 5.2.2 <jo@prospect.test>: Mailbox full, quota exceeded"
BLOCKED = (
    "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org; "
    "https://www.spamhaus.org/query/ip/127.0.0.1"
)
INTERNAL_ONLY = (
    "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required: this group only accepts "
    "messages from people within its own organization"
)


@pytest.fixture
def setup(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    return world(tmp_path, smtp, imap, database, monkeypatch)


async def test_soft_bounce_pauses_then_a_later_hard_bounce_stops(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.imap.deliver(dsn(w.sent_to(JO)[0], status="5.2.2", diagnostic=FULL))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "active"  # a full mailbox is not a bad address
        assert enr.paused_until == w.clock.now() + timedelta(days=1)
        assert enr.next_reasons[0] == "soft_bounce"
        assert enr.next_at is not None and enr.next_at >= enr.paused_until
        assert not await Suppression.exists(email=JO)
        # Step 2 was due after 2 days anyway: it goes, and the sequence carries on.
        assert await w.tick(timedelta(days=2)) == 1
        await w.imap.deliver(dsn(w.sent_to(JO)[1]))  # 5.1.1 user unknown: now it is over
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert (enr.state, enr.reason.startswith("address bad (user_unknown)")) == (
            "bounced",
            True,
        )
        assert (await Suppression.get(email=JO)).reason == "hard_bounce"
        await w.tick(timedelta(days=30))
        assert len(w.sent_to(JO)) == 2


async def test_soft_bounce_holds_the_next_step_a_day(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        w.clock.advance(timedelta(days=1, hours=23))  # step 2 is due in an hour
        await w.imap.deliver(dsn(w.sent_to(JO)[0], status="4.2.2", diagnostic=FULL))
        await w.tick()
        enr = await w.enrollment(JO)
        assert enr.paused_until == w.clock.now() + timedelta(days=1)
        assert await w.tick(timedelta(hours=23)) == 0  # would have gone without the bounce
        assert await w.tick(timedelta(hours=1, minutes=1)) == 1


async def test_soft_bounces_repeated_over_days_mark_the_address_bounced(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, sqlite_url: str, monkeypatch: Any
) -> None:
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch) as w:
        await w.enroll(JO)
        await w.tick()
        for n in range(3):  # steps 1, 2 and 3 each come back "mailbox full"
            await w.imap.deliver(dsn(w.sent_to(JO)[n], status="5.2.2", diagnostic=FULL))
            await w.tick(timedelta(minutes=5))
            if n < 2:
                assert (await w.enrollment(JO)).state == "active"
                while len(w.sent_to(JO)) == n + 1:
                    await w.tick(timedelta(hours=6))
        enr = await w.enrollment(JO)
        assert enr.state == "bounced"
        assert enr.reason.startswith("3 soft bounces over ")
        assert (await Suppression.get(email=JO)).reason == "soft_bounces"


async def test_refusal_for_our_reputation_halts_the_mailbox_not_the_contact(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.enroll(ANN)  # due now, but the mailbox is about to be halted
        await w.imap.deliver(dsn(w.sent_to(JO)[0], status="5.7.1", diagnostic=BLOCKED))
        await w.daemon.check_inboxes()
        state = await MailboxState.get(mailbox="sales")
        assert state.paused_until is not None and state.paused_until > w.clock.now()
        assert await w.tick() == 0  # Ann waits too: the block is ours, not hers
        assert (await w.enrollment(JO)).state == "active"
        assert not await Suppression.exists(email=JO)
        assert await w.tick(timedelta(hours=6, minutes=1)) == 1  # the pause ends
        assert len(w.sent_to(ANN)) == 1
        inbound = await InboundMessage.get(verdict="bounce")
        assert inbound.action.startswith("refused for our reputation: mailbox paused until")
        logged = [line for line in capsys.readouterr().out.splitlines() if "mailbox.paused" in line]
        assert len(logged) == 1 and "error" in logged[0]


async def test_recipient_policy_fails_that_contact_only(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.enroll(ANN)
        await w.tick()
        await w.imap.deliver(dsn(w.sent_to(JO)[0], status="5.7.1", diagnostic=INTERNAL_ONLY))
        await w.tick(timedelta(minutes=5))
        jo, ann = await w.enrollment(JO), await w.enrollment(ANN)
        assert (jo.state, jo.reason.startswith("policy: ")) == ("failed", True)
        assert not await Suppression.exists(email=JO)  # the address is fine; the rule is theirs
        assert ann.state == "active"
        assert await w.tick(timedelta(days=2)) == 1
        assert len(w.sent_to(ANN)) == 2 and len(w.sent_to(JO)) == 1


async def test_abuse_complaint_suppresses_the_reported_address(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.imap.deliver(_arf(w.sent_to(JO)[0]))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "unsubscribed" and enr.reason.startswith("abuse complaint")
        assert (await Suppression.get(email=JO)).reason == "complaint"


async def test_read_receipt_and_success_report_change_nothing(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        first = w.sent_to(JO)[0]
        await w.imap.deliver(_read_receipt(first))
        await w.imap.deliver(dsn(first, status="2.0.0", action="delivered", diagnostic="250 OK"))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert (enr.state, enr.paused_until) == ("active", None)
        assert await w.tick(timedelta(days=2)) == 1


async def test_accepted_calendar_invite_is_a_reply(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.imap.deliver(_calendar_accept())
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "replied"
        await w.tick(timedelta(days=10))
        assert len(w.sent_to(JO)) == 1


async def test_bounce_without_our_message_id_is_matched_by_its_recipient(setup: Any) -> None:
    """qmail quotes neither our Message-ID nor headers: the failed address is the evidence."""
    async with setup as w:
        await w.enroll(JO)
        await w.enroll(ANN)
        await w.tick()
        await w.imap.deliver(_qmail_bounce(JO))
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "bounced"
        assert (await w.enrollment(ANN)).state == "active"


# ---------------------------------------------------------------------------------------------
# The messages, as real clients and providers send them.


def _qmail_bounce(rcpt: str) -> bytes:
    return f"""From: MAILER-DAEMON@mx.prospect.test
To: {SALES}
Subject: failure notice
Date: {format_datetime(START)}
Message-ID: {make_msgid(domain="mx.prospect.test")}

Hi. This is the qmail-send program at mx.prospect.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{rcpt}>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is the first part of the message.

Hi Jo, here are the notes.
""".replace("\n", "\r\n").encode()


def _arf(original: EmailMessage) -> bytes:
    """An RFC 5965 feedback report, as a mailbox provider's feedback loop sends it."""
    return f"""From: Feedback Loop <fbl@isp.test>
To: {SALES}
Subject: Abuse report
Date: {format_datetime(START)}
Message-ID: {make_msgid(domain="isp.test")}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain; charset=us-ascii

This is an email abuse report for an email message received from IP 127.0.0.1.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ISP-FBL/1.0
Version: 1
Original-Mail-From: <{SALES}>
Original-Rcpt-To: <{JO}>
Arrival-Date: {format_datetime(START)}

--ARF
Content-Type: text/rfc822-headers

From: {original["From"]}
To: {original["To"]}
Subject: {original["Subject"]}
Message-ID: {original["Message-ID"]}

--ARF--
""".replace("\n", "\r\n").encode()


def _read_receipt(original: EmailMessage) -> bytes:
    """An RFC 8098 read receipt, as Outlook sends it when the contact opens the message."""
    return f"""From: Jo <{JO}>
To: {SALES}
Subject: Read: {original["Subject"]}
Date: {format_datetime(START)}
Message-ID: {make_msgid(domain="prospect.test")}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="MDN"

--MDN
Content-Type: text/plain; charset=us-ascii

Your message was read on Tuesday, 1 December 2026 09:30:00 (UTC).

--MDN
Content-Type: message/disposition-notification

Reporting-UA: prospect.test; Microsoft Outlook 16.0
Final-Recipient: rfc822;{JO}
Original-Message-ID: {original["Message-ID"]}
Disposition: manual-action/MDN-sent-manually; displayed

--MDN--
""".replace("\n", "\r\n").encode()


def _calendar_accept() -> bytes:
    """Outlook's answer to the salesperson's invite (sent from their calendar, not by us)."""
    text = (Path(__file__).parent / "mail" / "calendar-accept.eml").read_bytes()
    return text.replace(b"sam@vendor.test", SALES.encode())


async def test_a_removal_request_from_someone_not_enrolled_still_suppresses_them(
    setup: Any,
) -> None:
    """A person we never wrote to (a colleague, a forwarded thread) asks to be left alone:
    they are suppressed, so no later enrolment reaches them."""
    stranger = "pat@elsewhere.test"
    async with setup as w:
        ask = EmailMessage()
        ask["From"], ask["To"] = f"Pat Lee <{stranger}>", SALES
        ask["Subject"] = "Please remove me"
        ask["Date"], ask["Message-ID"] = format_datetime(START), make_msgid("elsewhere.test")
        ask.set_content("Hi, please remove me from your mailing list. Thanks, Pat")
        await w.imap.deliver(ask.as_bytes())
        await w.tick(timedelta(minutes=5))
        row = await Suppression.get(email=stranger)
        assert row.reason == "unsubscribe"
        recorded = await InboundMessage.get(from_address=stranger)
        assert recorded.verdict == "unsubscribe_request" and recorded.enrollment_id is None
        assert w.smtp.received == []
