"""The whole path against real servers: aiosmtpd for SMTP, pymap and Dovecot for IMAP, each
with SQLite and PostgreSQL. The clock is frozen and moved by hand; the servers are real."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from world import SALES, START, dsn, reply, world

from sequencer.devservers import SmtpSink, wait_until
from sequencer.store.models import Enrollment, InboundMessage, SentMessage, Suppression

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"


@pytest.fixture
def setup(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    return world(tmp_path, smtp, imap, database, monkeypatch)


async def test_silent_contact_gets_every_step_threaded_then_completes(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO, first_name="Jo", company="Acme")
        assert await w.tick() == 1
        assert await w.tick(timedelta(days=1)) == 0  # step 2 waits 2 days from step 1's send
        assert await w.tick(timedelta(days=1)) == 1
        assert await w.tick(timedelta(days=3)) == 1
        assert await w.tick(timedelta(days=3, hours=23)) == 0
        assert await w.tick(timedelta(hours=1)) == 1
        assert await w.tick(timedelta(days=30)) == 0  # nothing after the break-up

        mails = w.sent_to(JO)
        assert len(mails) == 4
        first = mails[0]
        assert first["Subject"] == "Notes from our call, Jo"
        assert first["From"].addresses[0].display_name == "Sam Seller"
        assert first["From"].addresses[0].addr_spec == SALES
        assert first["Message-ID"].endswith("@vendor.test>")
        assert first["In-Reply-To"] is None
        assert first["List-Unsubscribe"] is None  # off unless the mailbox opts in
        assert "notes for Acme" in first.get_content()
        ids = [str(m["Message-ID"]) for m in mails]
        assert len(set(ids)) == 4
        for n, mail in enumerate(mails[1:], start=1):
            assert mail["Subject"] == "Re: Notes from our call, Jo"
            assert mail["In-Reply-To"] == ids[n - 1]
            assert str(mail["References"]).split() == ids[:n]
        assert "I'll stop here" in mails[3].get_content()

        enr = await w.enrollment(JO)
        assert (enr.state, enr.reason, enr.steps_sent, enr.next_at) == (
            "completed",
            "break-up sent",
            4,
            None,
        )
        logged = await SentMessage.filter(enrollment_id=enr.id).order_by("step")
        assert [s.message_id for s in logged] == ids
        assert all(s.status == "sent" for s in logged)


async def test_human_reply_stops_the_sequence(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.imap.deliver(reply(w.sent_to(JO)[0], "Thursday works, talk then."))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "replied"
        assert enr.next_at is None
        await w.tick(timedelta(days=30))
        assert len(w.sent_to(JO)) == 1  # nothing after a reply
        inbound = await InboundMessage.get(id=enr.ended_by_id)
        assert inbound.verdict == "human_reply"
        assert inbound.from_address == JO


async def test_reply_without_thread_headers_is_matched_by_address(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        raw = reply(w.sent_to(JO)[0], "Call me on Friday instead.", subject="Friday?")
        raw = b"\r\n".join(
            line
            for line in raw.split(b"\n")
            if not line.startswith((b"In-Reply-To", b"References"))
        ).replace(b"\r\r", b"\r")
        await w.imap.deliver(raw)
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "replied"


async def test_out_of_office_does_not_stop_it(setup: Any) -> None:
    """Without a return date there is nothing to wait for: the sequence goes on."""
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        ooo = reply(
            w.sent_to(JO)[0],
            "I am out of the office with limited access to email.",
            subject="Automatic reply: Notes from our call, Jo",
            Auto_Submitted="auto-replied",
        )
        await w.imap.deliver(ooo)
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "active"
        assert await w.tick(timedelta(days=2)) == 1
        noted = await InboundMessage.get(enrollment_id=enr.id)
        assert noted.verdict == "auto_reply"


async def test_out_of_office_without_thread_headers_waits_for_their_return(setup: Any) -> None:
    """A Japanese absence notice sent as a new message (no In-Reply-To, its own subject) is
    matched by the sender's address and read for its return date: the next step waits until
    they are back, and the sequence is not stopped as if a person had replied."""
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        notice = EmailMessage()
        notice["From"], notice["To"] = f"Jo <{JO}>", SALES
        notice["Subject"] = "不在のお知らせ"
        notice["Auto-Submitted"] = "auto-generated"
        notice["Date"], notice["Message-ID"] = format_datetime(START), make_msgid("prospect.test")
        notice.set_content(
            "お世話になっております。\n誠に勝手ながら、12月1日から12月10日まで出張のため"
            "不在にしております。12月11日より出社いたします。\n"
        )
        await w.imap.deliver(notice.as_bytes())
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        noted = await InboundMessage.get(from_address=JO)
        assert (noted.verdict, noted.kind) == ("auto_reply", "out_of_office")
        assert enr.state == "active"
        assert enr.paused_until is not None
        assert enr.paused_until.date() >= date(2026, 12, 11)
        assert enr.next_at is not None and enr.next_at >= enr.paused_until
        await w.tick(timedelta(days=5))  # step 2's wait is over, but they are away
        assert len(w.sent_to(JO)) == 1


async def test_hard_bounce_stops_and_suppresses(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.imap.deliver(dsn(w.sent_to(JO)[0]))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "bounced"
        assert "user_unknown" in (enr.reason or "")
        assert await Suppression.exists(email=JO)
        await w.tick(timedelta(days=30))
        assert len(w.sent_to(JO)) == 1


async def test_delay_warning_changes_nothing(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        warning = dsn(
            w.sent_to(JO)[0],
            status="4.4.1",
            action="delayed",
            diagnostic="451 4.4.1 connection timed out",
        )
        await w.imap.deliver(warning)
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "active"
        assert not await Suppression.exists(email=JO)


async def test_removal_request_stops_and_blocks_reenrolment(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        await w.tick(timedelta(days=2))
        await w.imap.deliver(reply(w.sent_to(JO)[1], "Please remove me from your list."))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "unsubscribed"
        assert (await Suppression.get(email=JO)).reason == "unsubscribe"
        await w.tick(timedelta(days=30))
        assert len(w.sent_to(JO)) == 2


async def test_list_unsubscribe_mailto_when_asked_and_its_message_suppresses(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = "pace: {daily_limit: 50, spacing: 0s}\n    list_unsubscribe: mailto"
    async with world(tmp_path, smtp, imap, database, monkeypatch, box=box) as w:
        await w.enroll(JO)
        await w.tick()
        first = w.sent_to(JO)[0]
        assert first["List-Unsubscribe"] == f"<mailto:{SALES}?subject=unsubscribe>"
        # What a mail client's unsubscribe button sends: a new message, no thread headers.
        click = EmailMessage()
        click["From"], click["To"], click["Subject"] = JO, SALES, "unsubscribe"
        click["Date"], click["Message-ID"] = format_datetime(START), make_msgid("prospect.test")
        await w.imap.deliver(click.as_bytes())
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "unsubscribed"
        assert (await Suppression.get(email=JO)).reason == "unsubscribe"
        await w.tick(timedelta(days=30))
        assert len(w.sent_to(JO)) == 1


async def test_reply_after_the_breakup_is_still_recorded(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.run_until_quiet()
        mails = w.sent_to(JO)
        assert len(mails) == 4
        await w.imap.deliver(reply(mails[-1], "Sorry, been swamped. Yes, let's talk."))
        await w.tick(timedelta(minutes=5))
        enr = await w.enrollment(JO)
        assert enr.state == "completed"
        late = await InboundMessage.get(enrollment_id=enr.id)
        assert late.verdict == "human_reply"


async def test_copy_of_our_own_message_is_not_a_reply(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        own = w.smtp.received[0].data  # e.g. a Bcc to self lands in the inbox
        await w.imap.deliver(own)
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "active"


async def test_unrelated_mail_is_left_alone(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        other = reply(
            w.sent_to(JO)[0], "Lunch?", sender="Pat <pat@elsewhere.test>", subject="Lunch"
        )
        other = other.replace(b"In-Reply-To", b"X-Old-In-Reply-To").replace(
            b"References", b"X-Old-Ref"
        )
        await w.imap.deliver(other)
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "active"
        assert await InboundMessage.all().count() == 0


async def test_mail_that_arrived_while_down_is_caught_up(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        for watcher in w.daemon.watchers.values():
            await watcher.close()  # the daemon is "down"
        await w.imap.deliver(reply(w.sent_to(JO)[0], "Yes please, send the proposal."))
        await w.tick(timedelta(days=3))  # reconnects, resumes from the stored cursor
        assert (await w.enrollment(JO)).state == "replied"
        assert len(w.sent_to(JO)) == 1


async def test_downtime_sends_at_most_one_overdue_step(setup: Any) -> None:
    async with setup as w:
        await w.enroll(JO)
        await w.tick()
        assert await w.tick(timedelta(days=20)) == 1  # three steps overdue: one goes
        assert await w.tick(timedelta(minutes=1)) == 0  # the next waits its full 3 days
        assert await w.tick(timedelta(days=3)) == 1
        assert w.clock.now() > START


async def test_idle_push_stops_the_running_daemon(setup: Any) -> None:
    """The real loop: IDLE wakes the watcher when the reply lands, no polling tick needed."""
    async with setup as w:
        w.daemon.max_sleep = 0.2
        await w.enroll(JO)
        runner = asyncio.create_task(w.daemon.run())
        try:
            await wait_until(_sent(w, 1), within=10)
            await wait_until(_watching(w), within=10)
            await w.imap.deliver(reply(w.sent_to(JO)[0], "Got it, thanks: Thursday it is."))
            await wait_until(_state_is(JO, "replied"), within=10)
        finally:
            w.daemon.stop()
            await asyncio.wait_for(runner, timeout=10)


def _sent(w: Any, n: int) -> Any:
    async def check() -> bool:
        return len(w.smtp.received) >= n

    return check


def _watching(w: Any) -> Any:
    async def check() -> bool:
        return all(
            x.imap is not None and x.imap.has_pending_idle() for x in w.daemon.watchers.values()
        )

    return check


def _state_is(address: str, state: str) -> Any:
    async def check() -> bool:
        return await Enrollment.filter(email=address, state=state).exists()

    return check
