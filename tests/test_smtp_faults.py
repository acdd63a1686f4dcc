"""SMTP failures mean what they say, proved against a real aiosmtpd answering as real servers
do: 421, 451, 454, 535, 550 5.1.1, 552, 554 5.7.1 (a blocklist), a connection dropped after
DATA, a final reply that never comes in time, and a server that files submissions in Sent
itself. Each asserts what the contact receives at the sink and what `status --json` says."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from world import SALES, cli, imap_folder, status, world

from sequencer.devservers import SmtpSink, imap_append
from sequencer.states import Hold, Send
from sequencer.store import queries
from sequencer.store.models import Enrollment, MailboxState, SentMessage, Suppression

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"
BLOCKED = (
    "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org; "
    "https://www.spamhaus.org/query/ip/127.0.0.1"
)
FAST = "pace: {daily_limit: 50, spacing: 0s}"


def ids(w: Any, address: str = JO) -> list[str]:
    return [str(m["Message-ID"]) for m in w.sent_to(address)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state.db'}"


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("rcpt", "451 4.3.0 Temporary lookup failure, try again later"),
        ("data", "451 4.7.1 Greylisted, please try again in 5 minutes"),
        ("data", "421 4.7.0 mx.prospect.test closing connection"),
        ("rcpt", "454 4.7.0 Throttling failure: too many messages, slow down"),
    ],
)
async def test_temporary_refusals_retry_later_with_the_same_message_id(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    reply: str,
) -> None:
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        setattr(smtp.handler, f"{stage}_reply", reply)
        await w.enroll(JO)
        assert await w.tick() == 0
        enr = await w.enrollment(JO)
        assert (enr.state, enr.attempts, enr.hold) == ("active", 1, None)
        assert reply.split()[0] in (enr.last_error or "")
        first_id = (await SentMessage.get(enrollment_id=enr.id)).message_id
        assert not await Suppression.exists(email=JO)
        row = (await status(tmp_path / "sequencer.yaml", JO))[0]
        assert row["state"] == "active" and reply.split()[0] in row["last_error"]
        setattr(smtp.handler, f"{stage}_reply", None)
        assert await w.tick(timedelta(seconds=30)) == 0  # backoff: not before a minute
        assert await w.tick(timedelta(minutes=2)) == 1
        assert ids(w) == [first_id]  # the Message-ID assigned once is the one that went


async def test_user_unknown_at_rcpt_bounces_and_suppresses(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        smtp.handler.refuse[JO] = (
            "550 5.1.1 <jo@prospect.test>: Recipient address rejected: User unknown"
        )
        await w.enroll(JO)
        assert await w.tick() == 0
        enr = await w.enrollment(JO)
        assert enr.state == "bounced"
        assert (await Suppression.get(email=JO)).reason == "hard_bounce"
        await w.tick(timedelta(days=30))
        assert smtp.received == []


async def test_message_too_big_fails_that_contact_and_is_not_retried(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        smtp.handler.data_reply = "552 5.3.4 Message size exceeds fixed maximum message size"
        await w.enroll(JO)
        await w.tick()
        enr = await w.enrollment(JO)
        assert enr.state == "failed" and "552" in (enr.reason or "")
        assert not await Suppression.exists(email=JO)
        smtp.handler.data_reply = None
        await w.tick(timedelta(days=5))
        assert smtp.received == []


async def test_a_message_over_the_servers_size_is_not_offered(
    tmp_path: Path, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = SmtpSink(size_limit=300).start()
    try:
        async with world(tmp_path, sink, pymap, url, monkeypatch) as w:
            await w.enroll(JO)
            await w.tick()
            enr = await w.enrollment(JO)
            assert enr.state == "failed" and "SIZE" in (enr.reason or "")
            assert sink.received == []
    finally:
        sink.stop()


async def test_a_blocklist_refusal_pauses_the_mailbox_and_spares_the_contact(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        # `status` runs in another process on the real clock: run this one on it too.
        w.clock.advance(datetime.now(UTC) - w.clock.now())
        smtp.handler.rcpt_reply = BLOCKED
        await w.enroll(JO)
        await w.enroll("ann@prospect.test")
        assert await w.tick() == 0
        jo = await w.enrollment(JO)
        assert (jo.state, jo.attempts, jo.hold) == ("active", 0, None)
        assert not await Suppression.exists(email=JO)
        box = await MailboxState.get(mailbox="sales")
        assert box.paused_until == w.clock.now() + timedelta(hours=6)
        views = await status(tmp_path / "sequencer.yaml", "--mailboxes")
        assert views[0]["held_reason"] == "reputation_pause"
        smtp.handler.rcpt_reply = None
        assert await w.tick(timedelta(hours=5)) == 0  # still paused
        assert await w.tick(timedelta(hours=1, minutes=1)) == 2
        assert len(w.sent_to(JO)) == 1


async def test_a_wrong_smtp_password_holds_the_mailbox_with_one_login_per_interval(
    tmp_path: Path, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = SmtpSink(credentials=("sales", "right-Secret-1")).start()
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-Secret-2")
    extra = ", username: sales, password_env: TEST_SMTP_PASSWORD"
    try:
        async with world(tmp_path, sink, pymap, url, monkeypatch, smtp_extra=extra) as w:
            for n in range(30):
                await w.enroll(f"p{n}@prospect.test")
            assert sink.auth_attempts == 1  # the start-up check
            for _ in range(6):
                assert await w.tick(timedelta(seconds=5)) == 0
            assert sink.auth_attempts == 1  # not one per contact, not one per tick
            assert await w.tick(timedelta(minutes=1)) == 0
            assert sink.auth_attempts == 2  # one retry for the whole mailbox
            views = await status(tmp_path / "sequencer.yaml", "--mailboxes")
            assert views[0]["held_reason"] == "smtp_auth_failed"
            assert "535" in views[0]["last_error"]
            rows = await status(tmp_path / "sequencer.yaml")
            assert {r["hold"] for r in rows} == {"smtp_auth_failed"}
            assert all(r["steps_sent"] == 0 and r["state"] == "active" for r in rows)
            sink.credentials = ("sales", "wrong-Secret-2")  # the password is fixed
            assert await w.tick(timedelta(minutes=1)) == 0  # next try is 2 minutes on
            assert await w.tick(timedelta(minutes=2)) == 30
            assert (await MailboxState.get(mailbox="sales")).smtp_failed_since is None
            assert all(e.attempts == 0 for e in await Enrollment.all())
    finally:
        sink.stop()


async def test_a_connection_dropped_after_data_is_uncertain_and_held_until_resumed(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        smtp.handler.drop_after_data = True
        await w.enroll(JO)
        assert await w.tick() == 0
        assert len(smtp.received) == 1  # it did arrive; we could not know
        smtp.handler.drop_after_data = False
        enr = await w.enrollment(JO)
        assert enr.hold is Hold.UNCERTAIN_SEND
        assert (await SentMessage.get(enrollment_id=enr.id)).status is Send.UNCERTAIN
        row = (await status(cfg, JO))[0]
        assert row["hold"] == "uncertain_send" and "resume" in row["hold_detail"]
        assert await w.tick(timedelta(days=5)) == 0  # never re-sent as if it had failed
        assert len(smtp.received) == 1
        refused = await asyncio.to_thread(cli, cfg, "resume", JO)
        assert refused.returncode == 2 and "--sent" in refused.stderr
        done = await asyncio.to_thread(cli, cfg, "resume", JO, "--sent")
        assert done.returncode == 0, done.stderr
        assert await w.tick(timedelta(days=2)) == 1
        first, second = w.sent_to(JO)
        assert second["In-Reply-To"] == first["Message-ID"]


async def test_resend_after_an_uncertain_send_keeps_the_message_id(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        smtp.handler.drop_after_data = True
        await w.enroll(JO)
        await w.tick()
        smtp.handler.drop_after_data = False
        done = await asyncio.to_thread(cli, cfg, "resume", JO, "--resend")
        assert done.returncode == 0, done.stderr
        # `resume` (another process, the real clock) makes it due now: catch the clock up.
        assert await w.tick_at(max(w.clock.now(), datetime.now(UTC)) + timedelta(seconds=1)) == 1
        assert len(set(ids(w))) == 1 and len(ids(w)) == 2  # the same message, twice
        assert (await w.enrollment(JO)).hold is None


@pytest.mark.parametrize("policy", ["skip", "resend"])
async def test_a_final_reply_that_never_comes_follows_on_uncertain_send(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
) -> None:
    async with world(
        tmp_path,
        smtp,
        pymap,
        url,
        monkeypatch,
        smtp_extra=", timeout: 0.5",
        top=f"on_uncertain_send: {policy}",
    ) as w:
        smtp.handler.delay = 1.5  # stored, then answered after the client gave up
        await w.enroll(JO)
        assert await w.tick() == 0
        smtp.handler.delay = 0
        await asyncio.sleep(1.2)  # let the late answer go nowhere
        enr = await w.enrollment(JO)
        assert enr.hold is None
        if policy == "skip":
            assert enr.steps_sent == 1  # counted as not delivered; the sequence goes on
            assert (await SentMessage.get(enrollment_id=enr.id)).status is Send.SKIPPED
            assert await w.tick(timedelta(days=2)) == 1
            second = w.sent_to(JO)[1]
            assert second["In-Reply-To"] is None  # replies to the last confirmed: none
        else:
            assert await w.tick(timedelta(minutes=3)) == 1
            assert len(ids(w)) == 2 and len(set(ids(w))) == 1


@pytest.fixture
def filing(pymap: ImapServer) -> Iterator[SmtpSink]:
    """A server that files what it is submitted in Sent, as Gmail and Microsoft 365 do."""
    sink = SmtpSink()

    async def file_it(data: bytes) -> None:
        await imap_append(pymap.port, pymap.user, pymap.password, data, "Sent")

    sink.handler.on_message = file_it
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.mark.parametrize("filed", [True, False])
async def test_where_the_server_files_submissions_sent_settles_an_uncertain_send(
    tmp_path: Path,
    filing: SmtpSink,
    pymap: ImapServer,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    filed: bool,
) -> None:
    box = f'{FAST}\n    sent_copy: "off"'
    async with world(tmp_path, filing, pymap, url, monkeypatch, box=box) as w:
        await imap_folder(pymap, "Sent")
        if not filed:
            filing.handler.on_message = None  # accepted, then lost before it was filed
        filing.handler.drop_after_data = True
        await w.enroll(JO)
        await w.tick()
        filing.handler.drop_after_data = False
        assert (await w.enrollment(JO)).hold is Hold.UNCERTAIN_SEND
        assert await w.tick(timedelta(seconds=10)) == 0  # the server may still be filing
        await w.tick(timedelta(seconds=30))
        enr = await w.enrollment(JO)
        assert enr.hold is None
        if filed:
            assert (enr.steps_sent, len(ids(w))) == (1, 1)  # found in Sent: it went
            assert await w.tick(timedelta(days=2)) == 1
            assert w.sent_to(JO)[1]["In-Reply-To"] == ids(w)[0]
        else:
            assert len(ids(w)) == 2 and len(set(ids(w))) == 1  # resent, same Message-ID
        # We appended nothing ourselves: the only copies in Sent are the server's.
        assert await imap_folder(pymap, "Sent") == (len(ids(w)) if filed else 0)


async def test_each_send_is_copied_to_the_sent_folder(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path, smtp, imap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.tick()
        await w.tick(timedelta(days=2))
        sent = ids(w)
        assert len(sent) == 2
        for message_id in sent:
            assert await imap_folder(imap, "Sent", message_id) == 1
        copy = (await SentMessage.filter(enrollment_id=(await w.enrollment(JO)).id)).pop()
        assert copy.copied_at is not None and copy.data is None
        raw = smtp.received[0].data
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["From"].addresses[0].addr_spec == SALES


async def test_on_postgresql_a_send_another_daemon_may_still_be_in_is_settled_only_later(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several daemons share PostgreSQL: a claim whose lease lapsed while the database was
    away may belong to a daemon still in its data exchange. It is not settled (nor resent)
    until that exchange must have ended."""
    async with world(tmp_path, smtp, pymap, postgres_url, monkeypatch) as w:
        await w.enroll(JO)
        enr = await w.enrollment(JO)
        row = await queries.record_pending(enr, 1, "<elsewhere@vendor.test>", "Hi", w.clock.now())
        await queries.data_started(row.id, w.clock.now())  # another daemon, mid-DATA
        assert await w.tick() == 0
        enr = await w.enrollment(JO)
        assert (enr.hold, enr.next_reasons) == (None, ["send_in_progress"])
        assert await w.tick(timedelta(seconds=60)) == 0
        assert (await w.enrollment(JO)).hold is None  # not yet
        assert await w.tick(timedelta(minutes=2)) == 0
        assert (await w.enrollment(JO)).hold is Hold.UNCERTAIN_SEND  # now it is settled
        assert smtp.received == []
