"""`run --log-format auto | json | console`: a person at a terminal reads structlog's console
lines, a pipe (or journald) gets JSON lines; secrets are scrubbed in both. The daemon runs as a
subprocess on a real pseudo-terminal (the `pty` module) or a pipe."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog
from conftest import ImapServer
from world import write_config

from sequencer import logs
from sequencer.devservers import SmtpSink


@pytest.fixture
def cfg(tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", pymap.password)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    return write_config(tmp_path, smtp.port, pymap, "sqlite://state.db")


def _run_on_tty(cfg: Path, *extra: str) -> str:
    """Start the daemon with a pty as stdout, read until it has started, stop it; the text."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sequencer", "run", "--config", str(cfg), *extra],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        cwd=cfg.parent,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"daemon.started" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # the daemon exited: the pty is closed
                    break
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert "daemon.started" in text, text
    return text


def _started_line(text: str) -> str:
    return next(line for line in text.splitlines() if "daemon.started" in line)


def test_a_terminal_gets_readable_lines(cfg: Path) -> None:
    line = _started_line(_run_on_tty(cfg))
    assert "\x1b[" in line  # in colour
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain)
    assert "[info     ] daemon.started" in plain  # the console renderer's columns
    assert "mailboxes=['sales']" in plain


def test_json_is_kept_on_a_terminal_when_asked(cfg: Path) -> None:
    line = _started_line(_run_on_tty(cfg, "--log-format", "json"))
    started = json.loads(line.strip())
    assert started["event"] == "daemon.started" and started["mailboxes"] == ["sales"]


def test_a_pipe_gets_json_lines_and_console_can_be_forced(cfg: Path) -> None:
    def first_lines(*extra: str) -> list[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sequencer", "run", "--config", str(cfg), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=cfg.parent,
        )
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "daemon.started" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return lines

    piped = first_lines()
    assert [json.loads(line)["event"] for line in piped][-1] == "daemon.started"
    forced = first_lines("--log-format", "console")
    with pytest.raises(json.JSONDecodeError):
        json.loads(_started_line("".join(forced)))


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_scrubbed_in_both_forms(fmt: logs.Format) -> None:
    out = io.StringIO()
    logs.configure(out, secrets=["imap-Secret-42"], fmt=fmt)
    try:
        structlog.get_logger("t").error("inbox.failed", error="login imap-Secret-42 refused")
        try:
            raise RuntimeError("password imap-Secret-42")
        except RuntimeError:
            structlog.get_logger("t").exception("inbox.crashed")
    finally:
        logs.configure(io.StringIO())
    assert "imap-Secret-42" not in out.getvalue()
    assert out.getvalue().count(logs.REDACTED) >= 2


def test_auto_means_console_only_on_a_terminal_outside_the_journal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve("auto", Tty(), {}) == "console"
    assert logs.resolve("auto", Tty(), {"JOURNAL_STREAM": "8:1234"}) == "json"
    assert logs.resolve("auto", io.StringIO(), {}) == "json"
    assert logs.resolve("json", Tty(), {}) == "json"
    assert logs.resolve("console", io.StringIO(), {}) == "console"
