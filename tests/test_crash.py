"""The daemon killed mid-send: `sequencer run` in a subprocess, SIGKILLed at a chosen moment of
a send (at RCPT, during the data exchange, just after it, during the Sent copy), restarted,
and what the contact then receives and what `sequencer status` says.

The moment is made wide enough to hit by the servers, never by the daemon: the sink waits at
RCPT (`stage_delay`) or before answering DATA (`delay`), and an IMAP proxy holds back the Sent
folder's APPEND. Each test runs the daemon's real tick (max_sleep 5 s). The claim a killed
daemon leaves is released at start-up only on SQLite (one daemon owns the file); on
PostgreSQL it is a 45 s lease, so the crashes that leave one are run on SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
import pytest
from conftest import ImapServer
from world import write_config

from sequencer.devservers import LOOPBACK, SmtpSink

JO = "jo@prospect.test"

SEQUENCE = """mailbox: sales
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes from our call.
  - wait: %s
    body: |
      Hi {{ contact.first_name }}, the pricing page I promised.
  - wait: %s
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes.
"""


# --- the daemon as a process ----------------------------------------------------------------
class Run:
    """`sequencer run` in a subprocess; a thread reads its JSON log lines as they come."""

    def __init__(self, cfg: Path, env: dict[str, str]) -> None:
        self.errors = (cfg.parent / "stderr.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env={**os.environ, **env},
        )
        self.started = time.monotonic()
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append((time.monotonic(), json.loads(line)))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def _find(self, event: str, fields: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        for at, line in self.lines:
            if line["event"] == event and all(line.get(k) == v for k, v in fields.items()):
                return at, line
        return None

    def wait_for(
        self, event: str, timeout: float = 20, **fields: Any
    ) -> tuple[float, dict[str, Any]]:
        """The first log line with this event (and these fields), and when it was read."""
        with self._seen:
            self._seen.wait_for(
                lambda: self._find(event, fields) is not None or self.proc.poll() is not None,
                timeout=timeout,
            )
            found = self._find(event, fields)
        if found is None:
            events = [line["event"] for _, line in self.lines]
            raise AssertionError(f"no {event} {fields} within {timeout}s; log: {events}")
        return found

    def events(self, event: str) -> list[dict[str, Any]]:
        with self._seen:
            return [line for _, line in self.lines if line["event"] == event]

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing of the daemon runs after it."""
        self.proc.kill()
        self._reap()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self._reap()
        assert self.proc.returncode == 0, self.proc.returncode

    def _reap(self) -> None:
        self.proc.wait(20)
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.errors.close()


class Install:
    """A configured installation: the config, the sink, and the daemon runs made on it."""

    def __init__(self, cfg: Path, database: str, sink: SmtpSink, imap: ImapServer) -> None:
        self.cfg = cfg
        self.database = database
        self.sink = sink
        self.imap = imap
        self.env = {"TEST_IMAP_PASSWORD": imap.password}
        self.runs: list[Run] = []
        self.arrived: list[float] = []  # when the sink stored each message (monotonic)

        async def stamp(data: bytes) -> None:
            self.arrived.append(time.monotonic())

        sink.handler.on_message = stamp

    def start(self) -> Run:
        run = Run(self.cfg, self.env)
        self.runs.append(run)
        return run

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sequencer", *args, "--config", str(self.cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.env},
        )

    def enroll(self, address: str = JO) -> None:
        res = self.cli("enroll", "follow-up", address, "--var", "first_name=Jo")
        assert res.returncode == 0, res.stderr

    def status(self, address: str = JO) -> dict[str, Any]:
        res = self.cli("status", address, "--json")
        assert res.returncode == 0, res.stderr
        [row] = json.loads(res.stdout)
        return row  # type: ignore[no-any-return]

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(r.data, policy=email.policy.default)  # type: ignore[misc]
            for r in self.sink.received
        ]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """What the daemon recorded, read straight from its database."""
        if self.database.startswith("sqlite://"):
            with contextlib.closing(sqlite3.connect(self.database.removeprefix("sqlite://"))) as c:
                return c.execute(sql).fetchall()
        return asyncio.run(_pg_rows(self.database, sql))

    def sent_row(self, step: int) -> tuple[str, str, Any] | None:
        """(Message-ID, status, copied_at) of the step's message row, once it is written."""
        rows = self.rows("SELECT step, message_id, status, copied_at FROM sent_message")
        return next((tuple(r[1:]) for r in rows if r[0] == step), None)  # type: ignore[misc]


async def _pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def poll(predicate: Any, within: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def installed(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    database: str,
    waits: tuple[str, str] = ("2s", "1h"),
    via: ImapServer | None = None,
) -> Iterator[Install]:
    """A config whose sequence goes step 1 now, then step 2 and the break-up after `waits`;
    no minimum gap and no spacing, so the schedule alone decides. `via`: the IMAP address the
    daemon is given (a proxy in front of `imap`)."""
    cfg = write_config(tmp_path, smtp.port, via or imap, database, top="min_gap: 0s")
    (tmp_path / "sequences" / "follow-up.yaml").write_text(SEQUENCE % waits)
    install = Install(cfg, database, smtp, imap)
    try:
        yield install
    finally:
        for run in install.runs:
            if run.proc.poll() is None:
                run.kill()


# --- the crashes ----------------------------------------------------------------------------
def test_killed_at_rcpt_sends_the_step_once_with_its_message_id(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, sqlite_url: str
) -> None:
    """Nothing was on the wire: after the restart the step goes at once, exactly once, with
    the Message-ID its row was given before SMTP was spoken."""
    # Step 2 waits an hour: under load the status check below can outlast a short wait, and
    # step 2 would then (rightly) go too.
    with installed(tmp_path, smtp, pymap, sqlite_url, waits=("1h", "1h")) as world:
        world.enroll()
        smtp.handler.stage_delay = 5.0  # the server sits at RCPT: wide enough to kill in
        first = world.start()
        poll(lambda: world.sent_row(1) is not None, what="step 1's row written")
        first.kill()
        row = world.sent_row(1)
        assert row is not None
        message_id, status, _ = row
        assert status == "pending" and smtp.received == []

        smtp.handler.stage_delay = 0.0
        second = world.start()
        at, sent = second.wait_for("email.sent", timeout=60, step=1)
        # A claim left by the dead daemon would hold the contact for its 45 s lease.
        assert at - second.started < 10, f"first send {at - second.started:.1f}s after restart"
        assert sent["message_id"] == message_id
        poll(lambda: len(smtp.received) == 1, what="the message at the sink")
        now = world.status()  # while the daemon runs (a stopped one holds the mailbox)
        assert (now["state"], now["steps_sent"], now["hold"]) == ("active", 1, None)
        second.stop()

    [msg] = world.messages()
    assert msg["Message-ID"] == message_id and msg["To"] == JO
    assert world.sent_row(1)[:2] == (message_id, "sent")  # type: ignore[index]


def test_killed_during_data_holds_the_contact_until_resumed(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, sqlite_url: str
) -> None:
    """The server has the message but the daemon died before hearing so: after the restart the
    contact is held `uncertain_send` and nothing is sent again; `resume --sent` records step 1,
    and step 2 (its wait long over) then goes as a reply to it."""
    with installed(tmp_path, smtp, pymap, sqlite_url) as world:
        world.enroll()
        smtp.handler.delay = 10.0  # stored, the answer to DATA not given yet
        first = world.start()
        poll(lambda: len(smtp.received) == 1, what="the message stored by the sink")
        first.kill()
        row = world.sent_row(1)
        assert row is not None and row[1] == "sending"
        message_id = row[0]

        smtp.handler.delay = 0.0
        second = world.start()
        _, held = second.wait_for("contact.held")
        assert (held["hold"], held["message_id"]) == ("uncertain_send", message_id)
        status = world.status()
        assert (status["hold"], status["steps_sent"]) == ("uncertain_send", 0)
        assert "sequencer resume" in status["hold_detail"]
        assert second.events("email.sent") == [] and len(smtp.received) == 1

        res = world.cli("resume", JO, "--sent")
        assert res.returncode == 0, res.stderr
        assert "step 1 recorded as sent" in res.stdout
        _, sent = second.wait_for("email.sent", timeout=15, step=2)
        poll(lambda: len(smtp.received) == 2, what="step 2 at the sink")
        now = world.status()
        assert (now["state"], now["steps_sent"], now["hold"]) == ("active", 2, None)
        second.stop()

    step1, step2 = world.messages()
    assert step1["Message-ID"] == message_id
    assert step2["Message-ID"] == sent["message_id"] != message_id
    assert step2["In-Reply-To"] == message_id and message_id in step2["References"]
    assert step2["Subject"] == f"Re: {step1['Subject']}"


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_killed_after_the_send_sends_no_duplicate_and_keeps_the_schedule(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    db: str,
    request: pytest.FixtureRequest,
) -> None:
    """Killed right after `email.sent`: the restart sends nothing twice, and the next steps go
    when they were planned (2 s after step 1, then the break-up 1 s later)."""
    database = request.getfixturevalue(f"{db}_url")
    with installed(tmp_path, smtp, pymap, database, waits=("2s", "1s")) as world:
        world.enroll()
        first = world.start()
        _, sent = first.wait_for("email.sent", step=1)
        first.kill()
        assert len(smtp.received) == 1
        # The plan the restart must keep: step 2 two seconds after step 1 went.
        killed = world.status()
        planned = datetime.fromisoformat(killed["next_send_at"])
        assert planned - datetime.fromisoformat(killed["last_sent_at"]) == timedelta(seconds=2)

        second = world.start()
        second.wait_for("sequence.completed", timeout=20)
        second.stop()

    assert second.events("email.sent")[0]["step"] == 2
    messages = world.messages()
    assert messages[0]["Message-ID"] == sent["message_id"]
    assert len({m["Message-ID"] for m in messages}) == len(messages) == 3
    one, two, three = world.arrived
    # On schedule: not before its wait (how soon after depends on the machine's load, so the
    # plan itself is what is checked above), and the restart kept the plan it found.
    assert two - one >= 2.0 and three - two >= 1.0, (one, two, three)
    assert datetime.fromisoformat(second.events("email.sent")[0]["timestamp"]) >= planned
    assert world.status()["state"] == "completed"


# --- the Sent copy --------------------------------------------------------------------------
class HoldingProxy:
    """A TCP proxy in front of an IMAP server that holds back, once, the first chunk carrying
    a marker: the APPEND command on its way in (the server never gets it) or the APPEND's
    completion on its way out (the server has the copy; the client never hears so)."""

    def __init__(self, target: int, *, hold_in: bytes | None, hold_out: bytes | None) -> None:
        self.target = target
        self.markers = {"in": hold_in, "out": hold_out}
        self.held = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection((LOOPBACK, self.target))
            self._sockets += [client, server]
            for src, dst, way in ((client, server, "in"), (server, client, "out")):
                thread = threading.Thread(target=self._pipe, args=(src, dst, way), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                marker = self.markers[way]
                if marker is not None and marker in data:
                    self.markers = {"in": None, "out": None}
                    self.held.set()
                    return  # this way goes silent: the chunk is never delivered
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the hang-up on

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            sock.close()
        for thread in self._threads:
            thread.join(5)


async def _sent_copies(imap: ImapServer, message_id: str) -> int:
    """How many messages with this Message-ID the Sent folder holds (straight to the server)."""
    client = aioimaplib.IMAP4(host=LOOPBACK, port=imap.port, timeout=10)
    await client.wait_hello_from_server()
    await client.login(imap.user, imap.password)
    try:
        resp = await client.select("Sent")
        if resp.result != "OK":
            return 0
        resp = await client.uid_search("HEADER", "Message-ID", aioimaplib.quoted(message_id))
        return len(resp.lines[0].split()) if resp.lines and resp.lines[0] else 0
    finally:
        await client.logout()
        if client.protocol is not None and client.protocol.transport is not None:
            client.protocol.transport.close()


@pytest.mark.parametrize(
    ("db", "server_has_it"),
    [("sqlite", True), ("sqlite", False), ("postgres", True)],
    ids=["sqlite-appended", "sqlite-not-appended", "postgres-appended"],
)
def test_killed_during_the_sent_copy_leaves_exactly_one_copy(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    db: str,
    server_has_it: bool,
    request: pytest.FixtureRequest,
) -> None:
    """Killed after `email.sent` while the copy was being appended to Sent: at the restart the
    copy is looked up and appended only if it is missing, so Sent holds it exactly once,
    whether or not the server had taken the APPEND when the daemon died."""
    database = request.getfixturevalue(f"{db}_url")
    proxy = HoldingProxy(
        pymap.port,
        hold_in=None if server_has_it else b" APPEND ",
        hold_out=b"APPEND completed" if server_has_it else None,
    )
    try:
        via = ImapServer("pymap", proxy.port, pymap.user, pymap.password)
        with installed(tmp_path, smtp, pymap, database, ("1h", "1h"), via) as world:
            world.enroll()
            first = world.start()
            _, sent = first.wait_for("email.sent", step=1)
            assert proxy.held.wait(10), "the daemon never appended its copy"
            first.kill()
            message_id = sent["message_id"]
            assert asyncio.run(_sent_copies(pymap, message_id)) == (1 if server_has_it else 0)
            assert world.sent_row(1)[1:] == ("sent", None)  # type: ignore[index]

            second = world.start()
            second.wait_for("daemon.started")
            # The copy pass runs before the scheduler starts.
            copied = world.sent_row(1)
            failed = second.events("sentbox.append_failed")
            assert copied is not None and copied[2] is not None, f"copy not settled: {failed}"
            assert asyncio.run(_sent_copies(pymap, message_id)) == 1
            second.stop()
        assert len(smtp.received) == 1
    finally:
        proxy.close()
