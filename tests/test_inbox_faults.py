"""Fail closed on the inbox, proved by injecting faults into real IMAP servers (pymap and
Dovecot): a server killed mid-IDLE and a reply delivered while it was down, a UIDVALIDITY
change with a reply already in the folder, a reply landing just before a due step, and an
inbound handler that raises. Each asserts what the contact receives (at the SMTP sink) and
what `status --json` says."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from world import reply, status, world

from sequencer import replies
from sequencer.devservers import SmtpSink, wait_until
from sequencer.inbox import WatchTuning
from sequencer.states import Hold, Inbox
from sequencer.store.models import Enrollment, InboundMessage, MailboxState

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"
ANN = "ann@prospect.test"


def _state_is(address: str, state: str) -> Any:
    async def check() -> bool:
        return await Enrollment.filter(email=address, state=state).exists()

    return check


async def test_a_killed_server_is_noticed_at_once_and_a_reply_that_landed_meanwhile_stops_it(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAP killed mid-IDLE: the mailbox is held at once (not after the IDLE timeout); the
    reply that lands before the daemon is back is handled before step 2 could go."""
    tuning = WatchTuning(reconnect_min=2.0, reconnect_max=2.0)
    url = f"sqlite://{tmp_path / 'state.db'}"
    async with world(tmp_path, smtp, imap, url, monkeypatch, tuning=tuning) as w:
        w.daemon.max_sleep = 0.05
        await w.enroll(JO)
        assert await w.tick() == 1
        watcher = w.daemon.watchers["sales"]
        runner = asyncio.create_task(w.daemon.run())
        try:
            await wait_until(_idling(w), within=10)
            imap.kill()
            # At once: not after the keepalive (2 minutes); a loaded CI machine gets a few seconds.
            await wait_until(_async(lambda: watcher.state is not Inbox.WATCHING), within=5)
            row = await MailboxState.get(mailbox="sales")
            assert row.inbox in {Inbox.DOWN, Inbox.CONNECTING}
            w.clock.advance(timedelta(days=2))  # step 2 is due now, and may not go
            await asyncio.sleep(0.3)
            assert len(w.sent_to(JO)) == 1
            assert (await w.daemon.holds())["sales"][0] is Hold.INBOX_UNAVAILABLE
            answer = reply(w.sent_to(JO)[0], "Yes, Thursday works. Talk then.")
            if imap.kind == "dovecot":
                imap.server.deliver_file(answer)  # delivered while IMAP is down
                imap.restart()
            else:
                imap.restart()  # pymap is in memory: it comes back empty, renumbered
                await imap.deliver(answer)
            await wait_until(_state_is(JO, "replied"), within=15)
            await asyncio.sleep(0.3)
        finally:
            w.daemon.stop()
            await asyncio.wait_for(runner, timeout=15)
        assert len(w.sent_to(JO)) == 1  # nothing after the reply
        inbound = await InboundMessage.get(from_address=JO)
        assert inbound.verdict == "human_reply"


async def test_uidvalidity_change_with_a_reply_already_in_the_folder(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    async with world(tmp_path, smtp, imap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll(ANN)
        assert await w.tick() == 2
        before = w.daemon.watchers["sales"].uidvalidity
        answer = reply(w.sent_to(JO)[0], "Thanks, please send the proposal.")
        if imap.kind == "dovecot":
            imap.server.stop()
            imap.server.deliver_file(answer)
            imap.server.renumber()  # a restored backup or a rebuilt index
            imap.restart()
        else:
            imap.restart()
            await imap.deliver(answer)
        assert await w.tick(timedelta(days=2)) == 1  # Ann's step 2; nothing for Jo
        assert w.daemon.watchers["sales"].uidvalidity != before
        assert (await w.enrollment(JO)).state == "replied"
        assert len(w.sent_to(JO)) == 1 and len(w.sent_to(ANN)) == 2
        # Read again after the change, the reply is not handled twice.
        imap_reconnects = w.daemon.watchers["sales"]
        await imap_reconnects.sync()
        assert await InboundMessage.filter(from_address=JO).count() == 1


async def test_a_reply_landing_just_before_a_due_step_stops_that_step(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No IDLE push has arrived yet (Dovecot's comes about 0.5 s late): the last look at the
    inbox before the batch finds the reply."""
    url = f"sqlite://{tmp_path / 'state.db'}"
    async with world(tmp_path, smtp, imap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.tick()
        w.clock.advance(timedelta(days=2))
        await imap.deliver(reply(w.sent_to(JO)[0], "Not now, thanks."))
        assert await w.daemon.run_once() == 0  # straight to the scheduler: no catch-up first
        assert (await w.enrollment(JO)).state == "replied"
        assert len(w.sent_to(JO)) == 1


async def test_an_inbound_handler_that_raises_holds_the_contact_and_the_watcher_goes_on(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = replies.classify_parsed  # what the daemon's handler calls

    def broken(raw: bytes, **options: Any) -> Any:
        if b"BOOM" in raw:
            raise RuntimeError("a bug in the classifier")
        return real(raw, **options)

    async with world(tmp_path, smtp, imap, database, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll(ANN)
        await w.tick()
        monkeypatch.setattr(replies, "classify_parsed", broken)
        await imap.deliver(reply(w.sent_to(JO)[0], "BOOM. Call me tomorrow."))
        await imap.deliver(reply(w.sent_to(ANN)[0], "Thanks, not interested."))
        assert await w.tick(timedelta(days=2)) == 0  # Jo held, Ann replied
        jo = await w.enrollment(JO)
        assert (jo.state, jo.hold) == ("active", Hold.INBOUND_FAILED)
        assert (await w.enrollment(ANN)).state == "replied"
        failed = await InboundMessage.get(from_address=JO)
        assert failed.status == "failed" and "a bug in the classifier" in (failed.error or "")
        rows = {r["email"]: r for r in await status(tmp_path / "sequencer.yaml")}
        assert rows[JO]["hold"] == "inbound_failed"
        assert rows[JO]["state"] == "active"
        assert await w.tick(timedelta(days=5)) == 0
        assert len(w.sent_to(JO)) == 1
        # The bug is fixed (an upgrade): the kept message is handled on the next retry.
        monkeypatch.setattr(replies, "classify_parsed", real)
        assert await w.daemon.retry_failed_inbound() == 1
        jo = await w.enrollment(JO)
        assert (jo.state, jo.hold) == ("replied", None)
        handled = await InboundMessage.get(from_address=JO)
        assert (handled.status, handled.verdict) == ("handled", "human_reply")
        await w.tick(timedelta(days=5))
        assert len(w.sent_to(JO)) == 1


def _idling(w: Any) -> Any:
    async def check() -> bool:
        return all(
            x.imap is not None and x.imap.has_pending_idle() for x in w.daemon.watchers.values()
        )

    return check


def _async(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


@pytest.mark.parametrize("threaded", [True, False])
async def test_a_reply_too_complex_to_parse_is_matched_by_its_headers_and_stops_it(
    tmp_path: Path,
    smtp: SmtpSink,
    dovecot: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
    threaded: bool,
) -> None:
    """When in doubt, stop: a message the classifier cannot read that answers our thread
    is taken as their reply."""
    url = f"sqlite://{tmp_path / 'state.db'}"
    async with world(tmp_path, smtp, dovecot, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.tick()
        ours = w.sent_to(JO)[0]
        nested = b"Content-Type: text/plain\r\n\r\nhi\r\n"
        for _ in range(1200):  # deeper than the classifier's parser will follow
            nested = b"Content-Type: message/rfc822\r\n\r\n" + nested
        raw = (
            f"From: {JO}\r\nTo: sales@vendor.test\r\n"
            + ("Subject: Re: notes\r\n" if threaded else "Subject: Quick question\r\n")
            + "Message-ID: <deep@prospect.test>\r\n"
            + (f"In-Reply-To: {ours['Message-ID']}\r\n" if threaded else "")
        ).encode() + nested
        assert replies.classify(raw).rules == ("unparseable",)
        dovecot.server.deliver_file(raw)  # pymap's own parser gives up on it first
        assert await w.tick(timedelta(days=2)) == 0
        enr = await w.enrollment(JO)
        assert enr.state == "replied"
        inbound = await InboundMessage.get(from_address=JO)
        assert inbound.verdict == "human_reply" and "unparseable" in inbound.rules
