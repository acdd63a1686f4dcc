"""systemd's notify protocol against a real notify socket the test binds (AF_UNIX, datagrams,
$NOTIFY_SOCKET), with `sequencer run` as a subprocess against aiosmtpd and pymap: READY only
after every login (or its mailbox held), STATUS a person can read, WATCHDOG from the loop,
RELOADING/READY around SIGHUP, STOPPING on SIGTERM. The interval logic is tested pure."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import ImapServer
from world import FOLLOW_UP

from sequencer.devservers import Pymap, SmtpSink, free_port
from sequencer.sdnotify import Notifier, Watchdog, ping_every, socket_address
from sequencer.states import Hold
from sequencer.statusline import status_line

SMTP_USER, SMTP_PASSWORD = "relay", "smtp-Secret-7"


# --- pure -----------------------------------------------------------------------------------
def test_ping_interval_is_half_the_watchdog_and_only_for_this_process() -> None:
    assert ping_every({"WATCHDOG_USEC": "400000"}, pid=42) == 0.2
    assert ping_every({"WATCHDOG_USEC": "300000000", "WATCHDOG_PID": "42"}, pid=42) == 150.0
    assert ping_every({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert ping_every({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert ping_every({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert ping_every({}, pid=42) is None


def test_watchdog_pings_at_most_once_per_interval() -> None:
    dog = Watchdog(0.25)
    assert [dog.due(t) for t in (10.0, 10.125, 10.2, 10.25, 10.375, 10.5)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert not Watchdog(None).due(10.0)  # no watchdog asked: never


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify-7") == b"\0sd-notify-7"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("") is None


def test_without_notify_socket_nothing_is_sent_and_nothing_breaks() -> None:
    env: dict[str, str] = {"WATCHDOG_USEC": "400000"}
    notifier = Notifier(env)
    assert not notifier.enabled
    notifier.ready("1 active")
    notifier.alive()
    notifier.stopping()
    assert env == {}  # read and cleared, so children cannot speak for the daemon


def test_status_line_reads_as_a_sentence() -> None:
    london = ZoneInfo("Europe/London")
    now = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    line = status_line(
        active=42,
        next_sends={"sales": datetime(2026, 12, 7, 9, 0, tzinfo=UTC), "jo": now},
        held={"jo": Hold.IMAP_AUTH_FAILED},
        zones={"sales": london, "jo": london},
        now=now,
    )
    assert (
        line == "42 active · next send 09:00 Europe/London (sales) · held: jo (IMAP login refused)"
    )
    later = status_line(
        active=1,
        next_sends={"sales": datetime(2026, 12, 8, 9, 0, tzinfo=UTC)},
        held={},
        zones={"sales": london},
        now=now,
    )
    assert later == "1 active · next send Tue 8 Dec 09:00 Europe/London (sales)"
    assert status_line(active=0, next_sends={}, held={}, zones={}, now=now) == "0 active"


# --- a real notify socket ---------------------------------------------------------------------
class NotifySocket:
    """The systemd side: a datagram socket; each datagram is kept with when it arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._seen = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._seen:
                self.messages.append((time.monotonic(), fields))
                self._seen.notify_all()

    def wait_for(
        self, test: Callable[[dict[str, str]], bool], after: int = 0, timeout: float = 30
    ) -> tuple[int, float, dict[str, str]]:
        """The first datagram from index `after` on that passes `test`: (index, time, fields)."""

        def find() -> tuple[int, float, dict[str, str]] | None:
            for i, (at, fields) in enumerate(self.messages[after:], start=after):
                if test(fields):
                    return i, at, fields
            return None

        with self._seen:
            self._seen.wait_for(lambda: find() is not None, timeout=timeout)
            found = find()
        if found is None:
            raise AssertionError(f"nothing matching within {timeout}s; got {self.messages}")
        return found

    def close(self) -> None:
        self._closed = True
        self._reader.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    folder = tempfile.mkdtemp(dir="/tmp", prefix="sdn")  # AF_UNIX paths are < 108 bytes
    sock = NotifySocket(f"{folder}/notify")
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


class SlowLoginSink(SmtpSink):
    """Each SMTP login takes a moment and is timed, so READY can be shown to come after."""

    def __init__(self) -> None:
        super().__init__(credentials=(SMTP_USER, SMTP_PASSWORD))
        self.logged_in: list[float] = []

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        time.sleep(0.3)
        result = super()._auth(server, session, envelope, mechanism, data)
        self.logged_in.append(time.monotonic())
        return result


def _mailbox(name: str, smtp_port: int, imap_port: int, imap_env: str, auth: bool) -> str:
    login = f"username: {SMTP_USER}, password_env: TEST_SMTP_PASSWORD" if auth else ""
    return f"""  {name}:
    address: {name}@vendor.test
    display_name: {name.title()}
    pace: {{daily_limit: 50, spacing: 0s}}
    smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, {login}}}
    imap: {{host: 127.0.0.1, port: {imap_port}, security: none, username: sales,
           password_env: {imap_env}}}
"""


def _install(
    root: Path, smtp_port: int, boxes: list[tuple[str, int, str]], auth: bool = True
) -> Path:
    (root / "sequences").mkdir()
    for name, _, _ in boxes:
        seq = FOLLOW_UP.replace("mailbox: sales", f"mailbox: {name}")
        (root / "sequences" / f"{name}-follow-up.yaml").write_text(seq)
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"database: sqlite://{root / 'state.db'}\nsequences: {root / 'sequences'}\nmailboxes:\n"
        + "".join(_mailbox(name, smtp_port, port, env, auth) for name, port, env in boxes)
    )
    return cfg


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


class Daemon:
    """`sequencer run` with $NOTIFY_SOCKET; stdout (JSON lines) read by a thread."""

    def __init__(self, cfg: Path, env: dict[str, str]) -> None:
        self.errors = (cfg.parent / "stderr.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env={**os.environ, **env},
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line["event"] == event]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.errors.seek(0)
        err = self.errors.read()
        self.errors.close()
        return err


@pytest.fixture
def second_pymap() -> Iterator[Pymap]:
    server = Pymap("sales", "other-Secret-5").start()
    try:
        yield server
    finally:
        server.stop()


def test_ready_after_logins_with_held_mailboxes_named_and_the_rest_sending(
    tmp_path: Path,
    notify_socket: NotifySocket,
    pymap: ImapServer,
    second_pymap: Pymap,
) -> None:
    """sales logs in; jo's IMAP password is wrong; ann's IMAP server is not there. READY=1
    still comes, after every SMTP login, and STATUS names jo and ann as held and why; sales
    sends, jo and ann send nothing. SIGHUP: RELOADING=1 then READY=1. SIGTERM: STOPPING=1."""
    sink = SlowLoginSink().start()
    try:
        cfg = _install(
            tmp_path,
            sink.port,
            [
                ("sales", pymap.port, "TEST_IMAP_PASSWORD"),
                ("jo", second_pymap.port, "TEST_WRONG_PASSWORD"),
                ("ann", free_port(), "TEST_IMAP_PASSWORD"),
            ],
        )
        env = {
            "TEST_IMAP_PASSWORD": pymap.password,
            "TEST_WRONG_PASSWORD": "wrong-Secret-99",
            "TEST_SMTP_PASSWORD": SMTP_PASSWORD,
        }
        for box in ("sales", "jo", "ann"):
            enrolled = _cli(
                "enroll",
                f"{box}-follow-up",
                f"lead-{box}@prospect.test",
                "--var",
                "first_name=Lee",
                "--config",
                str(cfg),
                env=env,
            )
            assert enrolled.returncode == 0, enrolled.stderr
        daemon = Daemon(cfg, {**env, "NOTIFY_SOCKET": notify_socket.address})
        try:
            i, ready_at, ready = notify_socket.wait_for(lambda f: f.get("READY") == "1")
            # Every mailbox's SMTP login (three, each held up 0.3 s) was over before READY.
            assert len(sink.logged_in) == 3
            assert max(sink.logged_in) < ready_at
            starting = [f for _, f in notify_socket.messages[:i]]
            assert any(f.get("STATUS", "").startswith("starting") for f in starting)
            assert ready["STATUS"].startswith("3 active")
            assert ready["STATUS"].endswith(
                "held: ann (its inbox is not watched), jo (IMAP login refused)"
            )

            # sales still sends; STATUS then shows its next step.
            j, _, after_send = notify_socket.wait_for(
                lambda f: "next send" in f.get("STATUS", "") and "(sales)" in f["STATUS"],
                after=i + 1,
            )
            assert re.match(
                r"3 active · next send \w{3} \d+ \w{3} \d\d:\d\d UTC \(sales\) · held: ann",
                after_send["STATUS"],
            )
            assert [m.rcpt_tos for m in sink.received] == [["lead-sales@prospect.test"]]

            daemon.proc.send_signal(signal.SIGHUP)
            k, _, reloading = notify_socket.wait_for(lambda f: "RELOADING" in f, after=j + 1)
            assert reloading["RELOADING"] == "1"
            usec = int(reloading["MONOTONIC_USEC"])
            assert 0 < usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            notify_socket.wait_for(lambda f: f.get("READY") == "1", after=k + 1)

            daemon.proc.send_signal(signal.SIGTERM)
            notify_socket.wait_for(lambda f: f.get("STOPPING") == "1", after=k + 1)
        finally:
            err = daemon.stop()
        assert daemon.proc.returncode == 0, err
        assert daemon.events("sequences.reloaded")
        # Nothing ever went from the held mailboxes.
        assert [m.rcpt_tos for m in sink.received] == [["lead-sales@prospect.test"]]
        # Until the stop (when the watchers log out), jo and ann were held from the start, for
        # the reason READY named, and never released; sales never was.
        running = daemon.lines[: [x["event"] for x in daemon.lines].index("daemon.stopping")]
        first: dict[str, str] = {}
        for line in running:
            if line["event"] == "mailbox.held":
                first.setdefault(line["mailbox"], line["hold"])
        assert first == {"jo": "imap_auth_failed", "ann": "inbox_unavailable"}
        assert not [x for x in running if x["event"] == "mailbox.released"]
    finally:
        sink.stop()


def test_watchdog_pings_come_from_the_running_loop(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer
) -> None:
    """WATCHDOG_USEC=400000: pings every 0.2 s or so while the loop runs, over an abstract
    socket address ('@...')."""
    sock = NotifySocket(f"@sequencer-test-{uuid.uuid4().hex}")
    cfg = _install(tmp_path, smtp.port, [("sales", pymap.port, "TEST_IMAP_PASSWORD")], auth=False)
    env = {"TEST_IMAP_PASSWORD": pymap.password, "NOTIFY_SOCKET": sock.address}
    daemon = Daemon(cfg, {**env, "WATCHDOG_USEC": "400000"})
    try:
        i, _, _ = sock.wait_for(lambda f: f.get("READY") == "1")
        seen = i
        for _ in range(5):  # one after another, while the loop idles between ticks
            # 3 s each, though the loop idles up to 5 s between ticks: the idle wait pings too.
            seen, _, _ = sock.wait_for(
                lambda f: f.get("WATCHDOG") == "1", after=seen + 1, timeout=3
            )
        daemon.proc.send_signal(signal.SIGTERM)
        sock.wait_for(lambda f: f.get("STOPPING") == "1", after=seen)
    finally:
        err = daemon.stop()
        sock.close()
    assert daemon.proc.returncode == 0, err
