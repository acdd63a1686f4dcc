"""`sequencer status` as an operator reads it, run as a real process: a summary that fits 80
columns by default, rows on request read a page at a time, `--json` unchanged but streamed,
and `--watch` refreshing until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from world import write_config

from sequencer.config import load_settings
from sequencer.devservers import free_port
from sequencer.states import Inbox
from sequencer.store import db
from sequencer.store.models import Enrollment, MailboxState

JO = "jo@prospect.test"
SEQUENCER = [sys.executable, "-m", "sequencer"]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]


def cli(cfg: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"},
    )


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings on SQLite; no mail server is contacted by `status`."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "unused")
    return write_config(
        tmp_path, free_port(), ImapServer("pymap", free_port()), f"sqlite://{tmp_path / 's.db'}"
    )


def enroll_many(cfg: Path, n: int) -> None:
    leads = cfg.parent / "leads.csv"
    rows = [f"person{i}@company{i % 7}.test,P{i},Acme {i},{ZONES[i % 4]}" for i in range(n)]
    leads.write_text("email,first_name,company,timezone\n" + "\n".join(rows) + "\n")
    res = cli(cfg, "enroll", "follow-up", "--csv", str(leads))
    assert res.returncode == 0, res.stderr


async def _db(cfg: Path, change: Any) -> None:
    async with db.connected(load_settings(cfg).database):
        await change()


def fits(text: str, width: int = 80) -> bool:
    return all(len(line) <= width for line in text.splitlines())


def test_status_without_arguments_is_a_summary_that_fits_80_columns(cfg: Path) -> None:
    enroll_many(cfg, 40)

    async def shape() -> None:
        await Enrollment.filter(email="person1@company1.test").update(
            state="failed", reason="cannot render step 1", next_at=None
        )
        await Enrollment.filter(email="person2@company2.test").update(state="replied")
        # A daemon watches the inbox (as `run` records it), so the mailbox may send.
        now = datetime.now(UTC)
        await MailboxState.create(
            mailbox="sales", inbox=Inbox.WATCHING, inbox_since=now, caught_up_at=now
        )
        await Enrollment.filter(email="person3@company3.test").update(
            next_at=now + timedelta(minutes=1)
        )
        await Enrollment.exclude(email="person3@company3.test").update(
            next_at=now + timedelta(days=3)
        )

    asyncio.run(_db(cfg, shape))
    assert cli(cfg, "pause", "person0@company0.test").returncode == 0
    res = cli(cfg, "status")
    assert res.returncode == 0, res.stderr
    assert fits(res.stdout), res.stdout
    text = res.stdout
    assert text.startswith("40 enrollment(s), 1 mailbox(es)")
    assert "By state: active 38, replied 1, failed 1" in text
    assert "Held contacts (active, not sent to): manual_pause 1" in text
    line = next(x for x in text.splitlines() if x.startswith("sales"))
    assert line.split() == ["sales", "37", "1", "2", "0", "ok"]
    flat = " ".join(text.split())  # wrapped lines joined
    assert "Next send: " in flat and "step 1 of follow-up to person3@company3.test" in flat
    assert "Rows: sequencer status EMAIL" in text
    assert "person5@" not in text  # no rows
    # A salesperson's holiday shows in the summary, with what to do.
    assert cli(cfg, "pause", "--mailbox", "sales", "--until", "in 2 weeks").returncode == 0
    text = cli(cfg, "status").stdout
    assert fits(text), text
    line = next(x for x in text.splitlines() if x.startswith("sales"))
    assert line.endswith("HELD: manual_pause")
    flat = " ".join(text.split())
    assert "Mailbox sales is held: manual_pause (mailbox paused by hand until" in flat
    assert "Next send: nothing is planned (every active contact, or its mailbox, is held)" in flat


def test_rows_are_read_in_pages_and_json_streams_the_same_array(cfg: Path) -> None:
    """More rows than a page (500): nothing is lost or repeated at the page boundaries, and
    `--json` is byte for byte the array it always was."""
    enroll_many(cfg, 1203)
    res = cli(cfg, "status", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == list(range(1, 1204))
    assert res.stdout == json.dumps(rows, indent=2) + "\n"
    some = json.loads(cli(cfg, "status", "--json", "--state", "active", "--limit", "501").stdout)
    assert [r["id"] for r in some] == list(range(1, 502))
    one = json.loads(cli(cfg, "status", "person600@company5.test", "--json").stdout)
    assert [(r["email"], r["timezone"]) for r in one] == [
        ("person600@company5.test", "Europe/Paris")
    ]
    assert cli(cfg, "status", "--json", "--mailbox", "other").stdout == "[]\n"

    table = cli(cfg, "status", "--sequence", "follow-up", "--limit", "501")
    assert table.returncode == 0, table.stderr
    assert fits(table.stdout), table.stdout
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["email", "sequence", "state", "sent", "next"]
    assert lines[-1] == "501 enrollment(s) (more: raise --limit)"
    assert sum(1 for x in lines if x.startswith("person")) == 501
    assert "  #501 " in table.stdout and "#502" not in table.stdout
    wide = cli(cfg, "status", "person1@company1.test", columns=160)
    assert "person1@company1.test" in wide.stdout and " EST" in wide.stdout


def test_a_misspelt_state_filter_is_refused_with_the_state_meant(cfg: Path) -> None:
    res = cli(cfg, "status", "--state", "faild")
    assert res.returncode == 2
    assert "--state faild: not a state (did you mean 'failed'?)" in res.stderr
    assert cli(cfg, "status", "--state", "failed").stdout == "no enrollments match\n"


def test_watch_refreshes_on_a_terminal_until_ctrl_c(cfg: Path) -> None:
    """A real terminal (a pty): the first frame appears, Ctrl-C ends it cleanly."""
    enroll_many(cfg, 3)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*SEQUENCER, "status", "--watch", "--interval", "1", "--config", str(cfg)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "80", "LINES": "30", "TERM": "xterm"},
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"By state" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 65536)
        assert b"By state: active 3" in seen, seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) in (0, 130)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"Traceback" not in seen and b"KeyboardInterrupt" not in seen


def test_watch_off_a_terminal_prints_frames(cfg: Path) -> None:
    proc = subprocess.Popen(
        [
            *SEQUENCER,
            "status",
            "--watch",
            "--interval",
            "0.5",
            "--limit",
            "5",
            "--config",
            str(cfg),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(4)]
    proc.send_signal(signal.SIGINT)
    _, errors = proc.communicate(timeout=20)
    assert first[0] == "every 0.5s; Ctrl-C to stop\n"
    assert first[1].split()[:2] == ["email", "sequence"]
    assert proc.returncode in (0, 130) and "Traceback" not in errors
