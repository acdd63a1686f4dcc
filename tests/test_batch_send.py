"""Sending in batches keeps the promises made one send at a time: a batch is claimed and read
together, but each message is checked again, in the transaction that records DATA starting,
against what happened since (a reply, another email to the same address), and a message
that may no longer go is withdrawn before DATA (RSET), never sent."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from structlog.testing import capture_logs
from world import FOLLOW_UP, START, world

from sequencer import pacing
from sequencer.devservers import SmtpSink
from sequencer.states import Send
from sequencer.store import sending
from sequencer.store.models import Enrollment, MailboxState, SentMessage

JO = "jo@prospect.test"
ANN = "ann@prospect.test"
BOB = "bob@prospect.test"


async def test_a_reply_after_the_claim_withdraws_the_message_before_data(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ann, Jo and Bob are claimed in one batch. While Ann's message is on the wire, Jo's
    reply is handled (here written as the inbox watcher would, from another connection):
    Jo's message, already rendered, is withdrawn; Bob's goes."""
    path = tmp_path / "state.db"

    async def jo_replies(_: bytes) -> None:
        if len(smtp.received) == 1:  # Ann's message has just arrived
            with sqlite3.connect(path, timeout=5) as other:
                other.execute(
                    "UPDATE enrollment SET state = 'replied', next_at = NULL WHERE email = ?",
                    (JO,),
                )

    smtp.handler.on_message = jo_replies
    async with world(tmp_path, smtp, pymap, f"sqlite://{path}", monkeypatch) as w:
        for address in (ANN, JO, BOB):
            await w.enroll(address)
        with capture_logs() as logs:
            assert await w.tick() == 2
        assert [len(w.sent_to(a)) for a in (ANN, JO, BOB)] == [1, 0, 1]
        assert [e["event"] for e in logs].count("email.withdrawn") == 1
        jo = await w.enrollment(JO)
        assert jo.state == "replied" and jo.steps_sent == 0
        # Nothing is left claimed: the next tick sends nothing to anyone.
        assert await w.tick() == 0
        assert len(smtp.received) == 2


async def test_an_address_in_two_sequences_gets_one_email_then_waits_its_gap(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: Any
) -> None:
    """Jo is in two sequences, both due in the same batch. The first goes; the second is
    not sent on its heels: it waits the gap between two emails to one person."""
    url = f"sqlite://{tmp_path / 'state.db'}"
    (tmp_path / "sequences").mkdir()
    (tmp_path / "sequences" / "second.yaml").write_text(FOLLOW_UP)
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll(JO, sequence="second", allow_overlap=True)
        assert await w.tick() == 1
        assert await w.tick() == 0
        assert len(w.sent_to(JO)) == 1
        rows = await Enrollment.filter(email=JO).order_by("id")
        sent, waiting = sorted(rows, key=lambda r: -r.steps_sent)
        assert sent.steps_sent == 1 and waiting.steps_sent == 0
        gap = w.daemon.etiquette.min_gap
        assert waiting.next_at is not None and waiting.next_at >= START + gap
        assert "min_gap" in waiting.next_reasons
        assert waiting.claimed_until is None


async def test_data_is_not_started_when_the_address_was_written_to_since_the_batch_read(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: Any
) -> None:
    """The check another daemon's send is caught by: `sending.start` finds a later email
    to the address than the gap allows, says when, and writes nothing (the row stays
    pending, the mailbox's day count is untouched)."""
    url = f"sqlite://{tmp_path / 'state.db'}"
    (tmp_path / "sequences").mkdir()
    (tmp_path / "sequences" / "second.yaml").write_text(FOLLOW_UP)
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll(JO, sequence="second", allow_overlap=True)
        first, second = await Enrollment.filter(email=JO).order_by("id")
        now = w.clock.now()
        day = pacing.day_start(now, w.daemon.etiquette.mailbox_zone("sales"))
        await sending.loads({"sales": day})  # the mailbox's day, counted
        drafts = [sending.Draft(e, 1, f"<{e.id}@vendor.test>", "Hi") for e in (first, second)]
        rows = await sending.record_pending(drafts, now)
        slot = sending.Slot("sales", day, 100, None)
        assert (
            await sending.start(
                rows[first.id],
                enrollment_id=first.id,
                email=JO,
                not_after=now,
                slot=slot,
                now=now,
                data=None,
            )
            is None
        )
        later = now + timedelta(seconds=5)
        refused = await sending.start(
            rows[second.id],
            enrollment_id=second.id,
            email=JO,
            not_after=later - timedelta(hours=1),
            slot=slot,
            now=later,
            data=None,
        )
        assert refused == now  # the first one's DATA, which the gap counts from
        assert (await SentMessage.get(id=rows[second.id].id)).status == Send.PENDING
        assert (await MailboxState.get(mailbox="sales")).day_count == 1


async def test_data_is_not_started_when_the_pace_is_used_or_the_step_taken_or_ended(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: Any, database: str
) -> None:
    """Each other refusal of `sending.start` says why and writes nothing: the mailbox's
    day is used up (by another daemon), the step's row is no longer pending (another
    daemon took it), the contact's sequence ended. Then, with room, it goes."""
    async with world(tmp_path, smtp, pymap, database, monkeypatch) as w:
        await w.enroll(JO)
        (jo,) = await Enrollment.filter(email=JO)
        now = w.clock.now()
        day = pacing.day_start(now, w.daemon.etiquette.mailbox_zone("sales"))
        await sending.loads({"sales": day})
        rows = await sending.record_pending([sending.Draft(jo, 1, "<1@vendor.test>", "Hi")], now)
        row = rows[jo.id]

        async def start(limit: int) -> sending.Refused | object:
            slot = sending.Slot("sales", day, limit, None)
            return await sending.start(
                row, enrollment_id=jo.id, email=JO, not_after=now, slot=slot, now=now, data=None
            )

        await MailboxState.filter(mailbox="sales").update(day_count=3)
        assert await start(limit=3) is sending.Refused.PACED
        assert (await SentMessage.get(id=row.id)).status == Send.PENDING
        assert (await MailboxState.get(mailbox="sales")).day_count == 3

        await SentMessage.filter(id=row.id).update(status=Send.SENDING)
        assert await start(limit=10) is sending.Refused.TAKEN
        await SentMessage.filter(id=row.id).update(status=Send.PENDING)

        await Enrollment.filter(id=jo.id).update(state="replied")
        assert await start(limit=10) is sending.Refused.ENDED
        await Enrollment.filter(id=jo.id).update(state="active")
        assert (await SentMessage.get(id=row.id)).status == Send.PENDING
        assert (await MailboxState.get(mailbox="sales")).day_count == 3

        assert await start(limit=10) is None
        assert (await SentMessage.get(id=row.id)).status == Send.SENDING
        assert (await MailboxState.get(mailbox="sales")).day_count == 4
