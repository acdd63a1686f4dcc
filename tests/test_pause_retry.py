"""`sequencer pause`, `resume` and `retry` as an operator uses them: the CLI in another
process (the real clock), the real daemon on a frozen clock against real SMTP and IMAP
servers on loopback. What counts is what the contact receives, and when."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import ImapServer
from world import FOLLOW_UP, World, cli, status, world, write_config

from sequencer.config import load_settings
from sequencer.devservers import SmtpSink
from sequencer.sequences import load_all
from sequencer.states import Hold
from sequencer.store import db
from sequencer.store.models import Enrollment, SentMessage

pytestmark = pytest.mark.e2e

JO = "jo@prospect.test"
ANN = "ann@prospect.test"
BO = "bo@other.test"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state.db'}"


def later(days: int) -> date:
    """A day some days after today by the real clock (the CLI's clock)."""
    return datetime.now(UTC).date() + timedelta(days=days)


async def run(cfg: Path, *args: str) -> Any:
    return await asyncio.to_thread(cli, cfg, *args)


async def test_a_paused_contact_gets_nothing_until_resumed_then_the_next_step(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll(ANN)
        assert await w.tick() == 2
        res = await run(cfg, "pause", JO)
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"paused {JO} in 'follow-up' until `sequencer resume`\n"
        row = (await status(cfg, JO))[0]
        assert (row["state"], row["hold"]) == ("active", "manual_pause")
        # Days pass (past the real clock too): Ann gets step 2, Jo nothing.
        await w.tick_at(datetime.now(UTC) + timedelta(days=3))
        await w.tick(timedelta(days=3))
        assert len(w.sent_to(ANN)) == 3 and len(w.sent_to(JO)) == 1
        res = await run(cfg, "resume", JO)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"resumed {JO}: follow-up: pause lifted; step 2 at ")
        assert await w.tick(timedelta(seconds=1)) == 1
        second = w.sent_to(JO)[1]
        assert "the pricing page I promised" in second.get_content()  # step 2, not step 3
        assert (await w.enrollment(JO)).hold is None


async def test_pause_until_a_day_ends_at_the_start_of_that_day_in_the_contacts_zone(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO, timezone="America/New_York")
        assert await w.tick() == 1
        day = later(4)
        res = await run(cfg, "pause", JO, "--until", day.isoformat())
        assert res.returncode == 0, res.stderr
        end = datetime.combine(day, time(0), ZoneInfo("America/New_York")).astimezone(UTC)
        assert f"until {end.astimezone(ZoneInfo('America/New_York')):%a %d %b %Y} 00:00" in (
            res.stdout
        )
        row = (await status(cfg, JO))[0]
        assert row["hold"] == "manual_pause" and row["next_send_at"] == end.isoformat()
        await w.tick_at(end - timedelta(minutes=1))  # midnight in UTC has passed; not in NY
        assert len(w.sent_to(JO)) == 1
        assert await w.tick_at(end + timedelta(minutes=1)) == 1  # resumed by itself
        assert w.sent_times(JO)[1] >= end
        enr = await w.enrollment(JO)
        assert (enr.hold, enr.hold_until, enr.steps_sent) == (None, None, 2)


async def test_resume_before_the_date_sends_when_the_step_was_due_not_at_the_pause_end(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
        assert await w.tick() == 1
        day = later(20)
        assert (await run(cfg, "pause", JO, "--until", day.isoformat())).returncode == 0
        end = datetime.combine(day, time(0), UTC)
        assert (await status(cfg, JO))[0]["next_send_at"] == end.isoformat()
        res = await run(cfg, "resume", JO)
        assert res.returncode == 0, res.stderr
        # Step 2 was due two days after step 1, long ago: it goes now, not in 20 days.
        assert datetime.fromisoformat((await status(cfg, JO))[0]["next_send_at"]) < end
        assert await w.tick_at(max(w.clock.now(), datetime.now(UTC)) + timedelta(seconds=1)) == 1


async def test_a_pause_ends_at_the_first_time_the_window_allows(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause ends at midnight; the step goes when the window next opens, not then."""
    cfg = tmp_path / "sequencer.yaml"
    window = "window: {days: mon-sun, hours: '09:00-17:00'}"
    async with world(tmp_path, smtp, pymap, url, monkeypatch, top=window) as w:
        await w.enroll(JO)
        assert await w.tick() == 1
        day = later(3)
        res = await run(cfg, "pause", JO, "--until", day.isoformat())
        assert res.returncode == 0, res.stderr
        opens = datetime.combine(day, time(9), UTC)
        assert (await status(cfg, JO))[0]["next_send_at"] == opens.isoformat()
        await w.tick_at(datetime.combine(day, time(0, 1), UTC))
        assert len(w.sent_to(JO)) == 1
        assert await w.tick_at(opens) == 1


@asynccontextmanager
async def two_mailboxes(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, database: str, monkeypatch: Any
) -> AsyncIterator[World]:
    """The test world with a second mailbox, `support`, and its own sequence."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", imap.password)
    cfg = write_config(tmp_path, smtp.port, imap, database)
    text = cfg.read_text()
    sales = text[text.index("  sales:") :]
    support = sales.replace("sales:", "support:", 1).replace("sales@", "support@")
    cfg.write_text(text + support)
    (tmp_path / "sequences" / "support.yaml").write_text(
        FOLLOW_UP.replace("mailbox: sales", "mailbox: support")
    )
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    async with db.connected(settings.database):
        w = World(settings, seqs, smtp, imap)
        await w.daemon.start()
        try:
            yield w
        finally:
            await w.daemon.close()


async def test_a_mailbox_paused_for_a_holiday_holds_all_its_contacts_and_no_others(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with two_mailboxes(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll(ANN)
        await w.enroll(BO, sequence="support")
        assert await w.tick() == 3
        day = later(5)
        res = await run(cfg, "pause", "--mailbox", "sales", "--until", day.isoformat())
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"paused mailbox 'sales' until {day:%a %d %b %Y} 00:00 UTC")
        boxes = {b["mailbox"]: b for b in await status(cfg, "--mailboxes")}
        assert boxes["sales"]["held_reason"] == "manual_pause"
        assert boxes["support"]["held_reason"] is None
        end = datetime.combine(day, time(0), UTC)
        await w.tick_at(end - timedelta(days=1))
        assert len(w.sent_to(BO)) == 2  # the other mailbox goes on
        assert len(w.sent_to(JO)) == 1 and len(w.sent_to(ANN)) == 1
        assert await w.tick_at(end) == 2  # both of sales' contacts, once the holiday ends
        assert len(w.sent_to(JO)) == 2 and len(w.sent_to(ANN)) == 2
        # Without --until: paused until resumed by hand.
        res = await run(cfg, "pause", "--mailbox", "support")
        assert res.returncode == 0, res.stderr
        await w.tick(timedelta(days=10))
        assert len(w.sent_to(BO)) == 2
        res = await run(cfg, "resume", "--mailbox", "support")
        assert res.returncode == 0, res.stderr
        assert res.stdout == "mailbox 'support': sending resumes\n"
        assert await w.tick(timedelta(seconds=1)) >= 1
        assert len(w.sent_to(BO)) == 3


async def test_retry_sends_the_failed_step_again_once(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sequencer.yaml"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        smtp.handler.data_reply = "552 5.3.4 Message size exceeds fixed maximum message size"
        await w.enroll(JO)
        await w.tick()
        failed = await w.enrollment(JO)
        assert failed.state == "failed" and smtp.received == []
        first_id = (await SentMessage.get(enrollment_id=failed.id, step=1)).message_id
        smtp.handler.data_reply = None  # the cause is fixed
        res = await run(cfg, "retry", JO)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"retrying {JO} in 'follow-up': step 1 at ")
        assert "(it had failed: step 1 refused: SMTP" in res.stdout and "552 5.3.4" in res.stdout
        row = (await status(cfg, JO))[0]
        assert (row["state"], row["next_step"], row["reason"]) == ("active", 1, None)
        assert await w.tick_at(max(w.clock.now(), datetime.now(UTC)) + timedelta(seconds=1)) == 1
        await w.tick(timedelta(hours=12))
        (only,) = w.sent_to(JO)  # once, not once per tick
        assert only["Message-ID"] == first_id  # the step's own Message-ID
        again = await run(cfg, "retry", JO)
        assert again.returncode == 2
        assert "has no failed enrollment ('follow-up' is active)" in again.stderr


# --- messages and exit codes, without a daemon --------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", pymap.password)
    path = write_config(tmp_path, smtp.port, pymap, f"sqlite://{tmp_path / 'state.db'}")
    (tmp_path / "sequences" / "onboarding.yaml").write_text(FOLLOW_UP)
    return path


async def _set(cfg: Path, email: str, sequence: str, **values: Any) -> None:
    async with db.connected(load_settings(cfg).database):
        await Enrollment.filter(email=email, sequence=sequence).update(**values)


def test_pause_resume_and_retry_refuse_with_a_clear_message_and_exit_2(cfg: Path) -> None:
    for seq in ("follow-up", "onboarding"):
        res = cli(cfg, "enroll", seq, JO, "--var", "first_name=Jo", "--allow-overlap")
        assert res.returncode == 0, res.stderr
    refusals = {
        ("pause", "jo@prospect.tset"): f"no enrollment for jo@prospect.tset (did you mean '{JO}'?)",
        ("pause", JO, "--sequence", "folow-up"): f"{JO} has no active enrollment in "
        "'folow-up' (did you mean 'follow-up'?)",
        ("pause", JO, "--until", "someday soonish"): "--until 'someday soonish': not a date",
        ("pause", JO, "--until", "2020-01-01"): "--until 2020-01-01 has already begun",
        ("pause", "--mailbox", "sale"): "unknown mailbox 'sale' (did you mean 'sales'?)",
        ("pause", JO, "--mailbox", "sales"): "give either an EMAIL or --mailbox NAME",
        ("resume", JO): f"{JO} is not held",
        ("resume", "--mailbox", "sales"): "mailbox 'sales' is not paused by hand",
        ("retry", JO): f"{JO} has no failed enrollment",
    }
    for args, message in refusals.items():
        res = cli(cfg, *args)
        assert res.returncode == 2, (args, res.stdout)
        assert message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr

    asyncio.run(_set(cfg, JO, "follow-up", state="failed", reason="step 2 refused: 554"))
    asyncio.run(_set(cfg, JO, "onboarding", state="failed", reason="cannot render step 1"))
    res = cli(cfg, "retry", JO)
    assert res.returncode == 2
    assert "failed in 2 sequences" in res.stderr and "--sequence" in res.stderr
    res = cli(cfg, "resume", JO)
    assert res.returncode == 2
    assert "resume" not in res.stdout
    assert f"a failed one goes on with `sequencer retry {JO}`" in res.stderr
    asyncio.run(_set(cfg, JO, "onboarding", state="stopped", reason="manual"))
    res = cli(cfg, "pause", JO)
    assert res.returncode == 2
    assert "'onboarding' is stopped" in res.stderr
    assert "an ended one is never revived" in res.stderr and "--again" in res.stderr
    res = cli(cfg, "retry", JO, "--sequence", "onboarding")
    assert res.returncode == 2 and "has no failed enrollment in 'onboarding'" in res.stderr
    res = cli(cfg, "retry", JO, "--sequence", "follow-up")
    assert res.returncode == 0, res.stderr


def test_a_contact_held_for_another_reason_is_not_paused_over_it(cfg: Path) -> None:
    res = cli(cfg, "enroll", "follow-up", JO, "--var", "first_name=Jo")
    assert res.returncode == 0, res.stderr
    asyncio.run(_set(cfg, JO, "follow-up", hold=Hold.UNCERTAIN_SEND))
    res = cli(cfg, "pause", JO)
    assert res.returncode == 2
    assert "is held (uncertain_send)" in res.stderr and "--sent" in res.stderr
