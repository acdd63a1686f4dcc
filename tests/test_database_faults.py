"""The daemon survives database faults, proved on real servers.

SQLite: another process holds the write lock while a reply comes in (15 s), while the
daemon starts, and right after a send. PostgreSQL, a private cluster: restarted, stopped
while a reply lands, while a send's outcome or a refusal is being written, and its
sessions ended with the hang-up arriving late (a TCP relay), under the daemon and under
transactions. Each asserts what a user would notice: the reply stops the sequence, nothing
goes twice or after the reply, due work resumes, the pacing holds, the daemon keeps
running, `status --json` tells the truth. A unit test pins `db.transient` to the
exceptions the drivers really raise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from conftest import ImapServer
from structlog.testing import capture_logs
from tortoise import connections
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction
from world import reply, world

from sequencer.devservers import LOOPBACK, SmtpSink, free_port, wait_until
from sequencer.inbox import WatchTuning
from sequencer.sender import Sender
from sequencer.states import Inbox, Send
from sequencer.store import db
from sequencer.store.models import Enrollment, MailboxState, SentMessage, Suppression

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"
ANN = "ann@prospect.test"
#: Inbound retries come quickly here: the tests wait for the database, not for the backoff.
QUICK = WatchTuning(retry_min=0.1, retry_max=0.5)


# --- a PostgreSQL server of our own --------------------------------------------------------
def _pg_bin() -> Path | None:
    """The newest PostgreSQL whose initdb and pg_ctl are installed."""
    found = [
        b
        for b in Path("/usr/lib/postgresql").glob("*/bin")
        if (b / "initdb").exists() and (b / "pg_ctl").exists()
    ]
    if not found:
        return None
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)


class Cluster:
    """A PostgreSQL cluster in a short temp folder on a free loopback port, to stop and
    restart at will. The shared server on 5432 is never touched."""

    db_url = ""  # the current test's database (the `pg` fixture's)

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(dir="/tmp", prefix="pgf"))  # socket path < 108
        shutil.chown(self.dir, "postgres")
        self.port = free_port()
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> int:
        res = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {res.stderr[-500:]}")
        return res.returncode

    def ctl(self, *args: str, wait: bool = True) -> None:
        opts = f"-c listen_addresses={LOOPBACK} -p {self.port} -k {self.dir} -c fsync=off"
        data, logfile = str(self.dir / "data"), str(self.dir / "pg.log")
        self._run("pg_ctl", "-D", data, "-l", logfile, "-w" if wait else "-W", "-o", opts, *args)

    def start(self, wait: bool = True) -> None:
        self.ctl("start", wait=wait)

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "stop")

    def restart(self) -> None:
        """A fast restart: every open connection is cut, the server is back in ~0.2 s."""
        self.ctl("-m", "fast", "restart")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.dir / "data"), "status", check=False) == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{LOOPBACK}:{self.port}/{database}"

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no initdb/pg_ctl under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    if shutil.which("runuser") is None:
        pytest.skip("runuser is missing: the private PostgreSQL cluster runs as user postgres")
    if os.geteuid() != 0:
        pytest.skip("the private PostgreSQL cluster is started as root through runuser")
    server = Cluster(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
async def pg(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster, up, with a fresh database whose URL is `pg.db_url`."""
    if not cluster.running():
        cluster.start()
    name = f"seqtest_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(cluster.url(), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    cluster.db_url = cluster.url(name)
    yield cluster
    if not cluster.running():
        cluster.start()
    admin = await asyncpg.connect(cluster.url(), timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class LateHangUp:
    """A TCP relay to the cluster that passes every byte on at once, but the server's
    hang-up only `delay` seconds later, as a network may. A session the server terminates
    then looks, for a moment, like this: its last words (FATAL) have been read and the
    connection still seems open. What a client then does with it is what this shows.
    `hold()` keeps what the server says until `let_go()`, which passes it on at once: the
    client then reads a reply and the FATAL that followed it together."""

    def __init__(self, port: int, delay: float = 1.0) -> None:
        self.port = port
        self.delay = delay
        self.relays: set[asyncio.Task[Any]] = set()
        self.held: dict[asyncio.StreamWriter, bytearray] | None = None

    def hold(self) -> None:
        self.held = {}

    def holding(self) -> int:
        return sum(len(data) for data in (self.held or {}).values())

    def let_go(self) -> None:
        held, self.held = self.held or {}, None
        for writer, data in held.items():
            writer.write(data)

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._relay, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self.relays:
            task.cancel()
        await asyncio.gather(*self.relays, return_exceptions=True)
        await self.server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        server_w: asyncio.StreamWriter | None = None

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, late: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if late and self.held is not None:
                        self.held.setdefault(dst, bytearray()).extend(data)
                        continue
                    dst.write(data)
                    await dst.drain()
            if late:
                await asyncio.sleep(self.delay)
            dst.close()

        try:
            server_r, server_w = await asyncio.open_connection(LOOPBACK, self.port)
            await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))
        except asyncio.CancelledError:
            pass  # the relay is shut down; a cancelled handler task would be logged as an error
        finally:
            self.relays.discard(task)
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await asyncio.shield(writer.wait_closed())


async def _terminate_sessions(pg: Cluster, database: str) -> int:
    """End every session on `database` from the server's side (FATAL 57P01, as a fast
    shutdown sends), then give the client time to read it."""
    admin = await asyncpg.connect(pg.url(), timeout=5)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            database,
        )
    finally:
        await admin.close()
    await asyncio.sleep(0.2)
    return int(ended)


# --- helpers -------------------------------------------------------------------------------
def status(cfg: Path) -> Any:
    """`sequencer status --json` as a user runs it, in another process."""
    res = subprocess.run(
        [sys.executable, "-m", "sequencer", "status", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert res.returncode == 0, res.stderr
    return {row["email"]: row for row in json.loads(res.stdout)}


def _state_is(address: str, state: str) -> Any:
    async def check() -> bool:
        return await Enrollment.filter(email=address, state=state).exists()

    return check


def _idling(w: Any) -> Any:
    async def check() -> bool:
        return all(
            x.imap is not None and x.imap.has_pending_idle() for x in w.daemon.watchers.values()
        )

    return check


def _sent_count(w: Any, n: int) -> Any:
    async def check() -> bool:
        return len(w.smtp.received) >= n

    return check


def _supervisors() -> list[asyncio.Task[Any]]:
    """The daemon's inbox watcher tasks (Daemon._supervise), as `run` started them."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "Daemon._supervise"
    ]


def _crashes(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bad = {"inbox.watcher_died", "inbox.crashed", "email.crashed", "maintenance.failed"}
    return [e for e in logs if e["event"] in bad]


def _event(logs: list[dict[str, Any]], name: str) -> bool:
    return any(e["event"] == name for e in logs)


def _down(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The daemon's "database.unavailable" warnings."""
    return [e for e in logs if e["event"] == "database.unavailable"]


async def _async(value: bool) -> bool:
    return value


# --- SQLite --------------------------------------------------------------------------------
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


class Locks:
    """Other processes that take SQLite's write lock, hold it a while, then commit."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def take(self, path: Path, seconds: float) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(path), str(seconds), stdout=asyncio.subprocess.PIPE
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"locked\n"
        return proc


@pytest.fixture
async def locks() -> AsyncIterator[Locks]:
    held = Locks()
    yield held
    for proc in held.procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_sqlite_locked_by_another_process_for_15s_while_a_reply_is_handled(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    locks: Locks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reply waits for the lock (its handling is retried, the cursor stays), step 2 is
    due during the lock and does not go, and afterwards the contact is `replied`. A short
    busy timeout makes the lock bite at once: with SQLite's 5 s, each tick's blocked write
    held the one database thread for 5 s ahead of the reply's, so on a loaded machine the
    first retry could come after the test had stopped waiting."""
    path = tmp_path / "state.db"
    url = f"sqlite://{path}?busy_timeout=500"
    async with world(tmp_path, smtp, pymap, url, monkeypatch, tuning=QUICK) as w:
        w.daemon.max_sleep = 0.05
        await w.enroll(JO)
        assert await w.tick() == 1
        runner = asyncio.create_task(w.daemon.run())
        with capture_logs() as logs:
            try:
                await wait_until(_idling(w), within=10)
                cursor = w.daemon.watchers["sales"].last_uid
                locker = await locks.take(path, 15)
                await pymap.deliver(reply(w.sent_to(JO)[0], "Yes, let's talk on Thursday."))
                w.clock.advance(timedelta(days=2))  # step 2 is due now
                await wait_until(lambda: _async(_event(logs, "inbound.retrying")), within=10)
                assert locker.returncode is None  # still locked: the retry is the lock's doing
                assert (await w.enrollment(JO)).state == "active"
                assert w.daemon.watchers["sales"].last_uid == cursor  # the reply is not skipped
                assert await locker.wait() == 0
                await wait_until(_state_is(JO, "replied"), within=10)
                await asyncio.sleep(0.3)  # a tick or two after the reply
                assert not runner.done()
                assert [t for t in _supervisors() if not t.done()]
                assert w.daemon.watchers["sales"].state is Inbox.WATCHING
            finally:
                w.daemon.stop()
                await asyncio.wait_for(runner, timeout=15)
        assert len(w.sent_to(JO)) == 1  # nothing after the reply
        assert not _crashes(logs)
        retries = [e for e in logs if e["event"] == "inbound.retrying"]
        assert all("locked" in e["error"] for e in retries)
        rows = await asyncio.to_thread(status, tmp_path / "sequencer.yaml")
        assert rows[JO]["state"] == "replied"
        assert rows[JO]["steps_sent"] == 1


async def test_the_daemon_starts_while_another_process_takes_the_sqlite_write_lock(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    locks: Locks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process takes the write lock while the daemon logs in to SMTP at start-up:
    recording the login (and the rest of start-up) waits for the lock instead of making the
    daemon exit. A short busy timeout makes the lock bite at once."""
    path = tmp_path / "state.db"
    url = f"sqlite://{path}?busy_timeout=50"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
    login = Sender.login

    async def login_then_lock(self: Sender) -> None:
        await login(self)
        if not locks.procs:
            await locks.take(path, 1.5)

    monkeypatch.setattr(Sender, "login", login_then_lock)
    with capture_logs() as logs:
        async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
            assert locks.procs, "start-up logged in to SMTP"
            assert await locks.procs[0].wait() == 0
            assert w.daemon.watchers["sales"].state is Inbox.WATCHING
            assert await w.tick() == 1
    assert any(e["doing"] == "mailbox state" for e in _down(logs))  # the lock did bite


async def test_a_lock_right_after_a_send_keeps_the_mailbox_spacing(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write lock is taken the moment a send is recorded. The mailbox's pacing (when it
    may send next) was taken in the transaction that recorded DATA starting, before the
    send: nothing is left to write, so the lock cannot lose it and the next contact still
    waits out the spacing instead of going at once."""
    path = tmp_path / "state.db"
    box = 'pace: {daily_limit: 50, spacing: 10m}\n    sent_copy: "off"'
    holder = sqlite3.connect(path, isolation_level=None)
    loop = asyncio.get_running_loop()
    taken: list[asyncio.TimerHandle] = []

    def lock_after_first_send(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        if event["event"] == "email.sent" and not taken:
            holder.execute("BEGIN IMMEDIATE")  # another connection takes the write lock
            taken.append(loop.call_later(1.0, holder.execute, "COMMIT"))
        return event

    url = f"sqlite://{path}?busy_timeout=50"
    async with world(tmp_path, smtp, pymap, url, monkeypatch, box=box) as w:
        w.daemon.max_sleep = 0.05
        await w.enroll(JO)
        await w.enroll(ANN)
        with capture_logs():
            processors = structlog.get_config()["processors"]
            structlog.configure(processors=[lock_after_first_send, *processors])
            runner = asyncio.create_task(w.daemon.run())
            try:
                await wait_until(_sent_count(w, 1), within=10)
                await wait_until(lambda: _async(not holder.in_transaction), within=5)
                await asyncio.sleep(0.5)  # ticks after the lock
                assert len(smtp.received) == 1  # the second waits for the spacing
                w.clock.advance(timedelta(minutes=10, seconds=1))
                await wait_until(_sent_count(w, 2), within=10)
                assert not runner.done()
            finally:
                w.daemon.stop()
                await asyncio.wait_for(runner, timeout=15)
                holder.close()
        assert len(smtp.received) == 2
        state = await MailboxState.get(mailbox="sales")
        assert state.day_count == 2  # both sends counted in the mailbox's day


# --- PostgreSQL ----------------------------------------------------------------------------
async def test_a_postgresql_restart_and_a_reply_delivered_while_it_is_down(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast restart cuts every pooled connection; then the server is stopped, a reply
    lands and step 2 falls due; once it is back the reply is handled, the other contact's
    due step goes (once), and the daemon never stopped."""
    url = pg.db_url
    async with world(tmp_path, smtp, pymap, url, monkeypatch, tuning=QUICK) as w:
        w.daemon.max_sleep = 0.05
        await w.enroll(JO)
        await w.enroll(ANN)
        assert await w.tick() == 2
        runner = asyncio.create_task(w.daemon.run())
        with capture_logs() as logs:
            try:
                await wait_until(_idling(w), within=10)
                await asyncio.to_thread(pg.restart)
                await asyncio.sleep(0.3)  # the scheduler meets the cut connections
                await asyncio.to_thread(pg.stop)
                await pymap.deliver(reply(w.sent_to(JO)[0], "Thursday works, call me."))
                w.clock.advance(timedelta(days=2))  # step 2 is due for both now
                await asyncio.sleep(1.0)
                assert len(smtp.received) == 2  # nothing goes while the database is away
                assert not runner.done()
                await asyncio.to_thread(pg.start)
                await wait_until(_state_is(JO, "replied"), within=10)
                await wait_until(_sent_count(w, 3), within=10)  # Ann's step 2: work resumes
                await asyncio.sleep(0.3)
                assert not runner.done()
                assert [t for t in _supervisors() if not t.done()]
                assert w.daemon.watchers["sales"].state is Inbox.WATCHING
            finally:
                w.daemon.stop()
                await asyncio.wait_for(runner, timeout=15)
        assert len(w.sent_to(JO)) == 1  # nothing after the reply
        assert len(w.sent_to(ANN)) == 2  # step 2 once
        assert not _crashes(logs)
        assert _down(logs)  # the restart and the outage were met, and waited out
        rows = await asyncio.to_thread(status, tmp_path / "sequencer.yaml")
        assert (rows[JO]["state"], rows[JO]["steps_sent"]) == ("replied", 1)
        assert (rows[ANN]["state"], rows[ANN]["steps_sent"]) == ("active", 2)


async def test_a_send_whose_outcome_write_meets_a_postgresql_outage_is_recorded_once(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is stopped while the SMTP server takes its time answering DATA: the send
    is recorded as sent once the database is back, and never sent again."""
    url = pg.db_url
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        w.daemon.max_sleep = 0.05
        await w.enroll(JO)
        smtp.handler.delay = 1.5  # the message is stored, the answer comes 1.5 s later
        runner = asyncio.create_task(w.daemon.run())
        with capture_logs() as logs:
            try:
                await wait_until(_sent_count(w, 1), within=10)
                await asyncio.to_thread(pg.stop)
                # DATA is answered while the database is down: the outcome waits.
                await wait_until(
                    lambda: _async(any(e["doing"] == "recording a send" for e in _down(logs))),
                    within=5,
                )
                await asyncio.sleep(0.5)
                await asyncio.to_thread(pg.start)
                smtp.handler.delay = 0

                async def recorded() -> bool:
                    enr = await w.enrollment(JO)
                    return enr.steps_sent == 1

                await wait_until(recorded, within=15)
                row = await SentMessage.get(step=1)
                assert row.status == Send.SENT
                await asyncio.sleep(0.3)
                assert len(smtp.received) == 1  # not sent twice
                w.clock.advance(timedelta(days=2))
                await wait_until(_sent_count(w, 2), within=10)  # due work resumes
                await asyncio.sleep(0.3)
                assert not runner.done()
            finally:
                w.daemon.stop()
                await asyncio.wait_for(runner, timeout=15)
        assert len(w.sent_to(JO)) == 2
        assert not _crashes(logs)
        rows = await asyncio.to_thread(status, tmp_path / "sequencer.yaml")
        assert (rows[JO]["state"], rows[JO]["steps_sent"]) == ("active", 2)


async def test_a_refusal_that_meets_a_postgresql_outage_is_recorded_once_it_is_back(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses the address (550 5.1.1) while the database is down: once it is
    back the contact is bounced and the address suppressed."""
    url = pg.db_url
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        w.daemon.max_sleep = 0.05
        await w.enroll(JO)
        smtp.handler.stage_delay = 1.5  # RCPT is answered 1.5 s later...
        smtp.handler.refuse[JO] = "550 5.1.1 <jo@prospect.test>: Recipient address rejected"
        runner = asyncio.create_task(w.daemon.run())
        with capture_logs() as logs:
            try:
                await wait_until(lambda: SentMessage.filter(step=1).exists(), within=10)
                await asyncio.to_thread(pg.stop)  # ...while the database is down
                await asyncio.sleep(2.0)
                await asyncio.to_thread(pg.start)
                await wait_until(_state_is(JO, "bounced"), within=10)
                await asyncio.sleep(0.3)
                assert not runner.done()
            finally:
                w.daemon.stop()
                await asyncio.wait_for(runner, timeout=15)
        assert smtp.received == []
        assert await Suppression.filter(email=JO, reason="hard_bounce").exists()
        assert not _crashes(logs)
        assert [e for e in logs if e["event"] == "email.refused"] != []
        rows = await asyncio.to_thread(status, tmp_path / "sequencer.yaml")
        assert rows[JO]["state"] == "bounced"


async def test_sessions_ended_by_the_server_with_a_late_hang_up_do_not_stop_the_daemon(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends every session (as a restart or an administrator does) and the
    hang-up reaches the daemon a second late: a query made meanwhile on an idle connection
    fails with asyncpg's internal error ("another operation is in progress"), which used to
    stop the daemon. It is waited out like any connection fault; the daemon goes on, and a
    reply that lands afterwards still stops the sequence."""
    name = pg.db_url.rsplit("/", 1)[1]
    async with LateHangUp(pg.port) as port:
        url = f"postgres://postgres@{LOOPBACK}:{port}/{name}"
        async with world(tmp_path, smtp, pymap, url, monkeypatch, tuning=QUICK) as w:
            w.daemon.max_sleep = 0.2  # idle between ticks: the FATAL comes between queries
            await w.enroll(JO)
            assert await w.tick() == 1
            runner = asyncio.create_task(w.daemon.run())
            with capture_logs() as logs:
                try:
                    await wait_until(_idling(w), within=10)
                    assert await _terminate_sessions(pg, name) >= 1
                    await asyncio.sleep(1.5)  # the late hang-up, and some ticks after it
                    assert not runner.done()
                    await pymap.deliver(reply(w.sent_to(JO)[0], "Got it, thanks. Talk soon."))
                    w.clock.advance(timedelta(days=2))
                    await wait_until(_state_is(JO, "replied"), within=10)
                    await asyncio.sleep(0.3)
                    assert not runner.done()
                finally:
                    w.daemon.stop()
                    await asyncio.wait_for(runner, timeout=15)
            assert len(w.sent_to(JO)) == 1
            assert not _crashes(logs)
            assert _down(logs)  # the cut sessions were met, and waited out


async def test_transactions_the_server_cut_leave_their_task_a_working_connection(
    pg: Cluster,
) -> None:
    """The server ends the session under a transaction, before its BEGIN or just after its
    COMMIT: the same task's next queries and transactions get a live connection, not the
    dead one for ever (tortoise alone left the task bound to it: after a PostgreSQL restart
    the inbox watcher, or a send's outcome being retried, would have failed for good)."""
    name = pg.db_url.rsplit("/", 1)[1]
    port = LateHangUp(pg.port)
    async with port as number, db.connected(f"postgres://postgres@{LOOPBACK}:{number}/{name}"):
        await MailboxState.create(mailbox="sales")

        async def works() -> None:
            await asyncio.sleep(1.0)  # the hang-up arrives
            assert await MailboxState.all().count() == 1
            async with in_transaction():
                await MailboxState.filter(mailbox="sales").update(inbox_error="back")
            assert (await MailboxState.get(mailbox="sales")).inbox_error == "back"

        assert await _terminate_sessions(pg, name) >= 1
        with pytest.raises(asyncpg.InternalClientError, match="another operation") as cut:
            async with in_transaction():  # BEGIN fails
                await MailboxState.all().count()
        assert db.transient(cut.value)
        await works()

        # COMMIT is answered, and the FATAL that follows is read with the answer: the work
        # stands, but asyncpg cannot reset the connection to put it back in the pool.
        async def end_the_session_after_commit() -> None:
            await wait_until(lambda: _async(port.holding() > 0), within=5)  # COMMIT's answer
            assert await _terminate_sessions(pg, name) >= 1
            port.let_go()

        async with in_transaction():
            await MailboxState.filter(mailbox="sales").update(inbox_error="committed")
            port.hold()
            cutter = asyncio.create_task(end_the_session_after_commit())
        await cutter
        assert (await MailboxState.get(mailbox="sales")).inbox_error == "committed"
        await works()


# --- what the drivers really raise ---------------------------------------------------------
async def test_transient_is_pinned_to_what_the_drivers_raise(tmp_path: Path, pg: Cluster) -> None:
    seen: dict[str, BaseException] = {}

    async def catch(tag: str, aw: Any) -> None:
        try:
            await aw
        except Exception as exc:
            seen[tag] = exc
        else:
            raise AssertionError(f"{tag}: no error")

    # SQLite write-locked by another connection, through tortoise (a short busy timeout).
    path = tmp_path / "state.db"
    async with db.connected(f"sqlite://{path}?busy_timeout=20"):
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        await catch("sqlite write", MailboxState.create(mailbox="sales"))

        async def in_tx() -> None:
            async with in_transaction():
                await MailboxState.all().count()
                await MailboxState.create(mailbox="sales")

        await catch("sqlite transaction", in_tx())
        holder.execute("COMMIT")
        holder.close()
        await MailboxState.create(mailbox="sales")
        await catch("sqlite unique", MailboxState.create(mailbox="sales"))

    # PostgreSQL restarted, stopped, shutting down and starting up.
    url = pg.db_url
    async with db.connected(url):
        await MailboxState.create(mailbox="sales")
        # A query running when the server restarts (one idle in the pool is noticed and
        # replaced by asyncpg itself).
        await catch("pg restart", _during(pg.restart, _sleep_query()))
        await MailboxState.all().count()  # the pool reconnected by itself

        async def across_restart() -> None:
            async with in_transaction():
                await MailboxState.all().count()
                await _during(pg.restart, _sleep_query())

        await catch("pg transaction", across_restart())
        await asyncio.to_thread(pg.stop)
        await catch("pg down", MailboxState.all().count())
        await asyncio.to_thread(pg.start)
        await catch("pg unique", MailboxState.create(mailbox="sales"))
        await catch("pg syntax", MailboxState.raw("SELEC 1"))
        # A session the server ended, its FATAL read before its hang-up: asyncpg refuses the
        # next query with an internal error.
        name = url.rsplit("/", 1)[1]
        async with LateHangUp(pg.port) as port:
            conn = await asyncpg.connect(host=LOOPBACK, port=port, user="postgres", database=name)
            assert await _terminate_sessions(pg, name) >= 1
            await catch("pg ended, hang-up late", conn.fetch("SELECT 1"))
            conn.terminate()
        # A misuse (a bug): two queries at once on one connection.
        conn = await asyncpg.connect(pg.url(), timeout=5)
        try:
            await catch("pg misuse", asyncio.gather(conn.fetch("SELECT 1"), conn.fetch("SELECT 2")))
        finally:
            await conn.close()

    # A smart shutdown waits for the open sessions, and turns new ones away meanwhile.
    session = await asyncpg.connect(pg.url(), timeout=5)
    await asyncio.to_thread(pg.ctl, "-m", "smart", "stop", wait=False)
    await asyncio.sleep(0.3)
    await catch("pg shutting down", asyncpg.connect(pg.url(), timeout=5))
    await session.close()
    await wait_until(lambda: _async(not pg.running()), within=10)
    await asyncio.to_thread(pg.start)

    async with db.connected(url):
        # Crash recovery: connections are turned away while the server starts up.
        await _write_wal(pg)
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.to_thread(pg.start, False)
        starting: list[BaseException] = []
        for _ in range(2000):
            try:
                await MailboxState.all().count()
                break
            except Exception as exc:
                starting.append(exc)
            await asyncio.sleep(0.002)
        await MailboxState.all().count()

    def kind(tag: str) -> str:
        return type(seen[tag]).__name__

    assert isinstance(seen["sqlite write"], OperationalError)
    assert "database is locked" in str(seen["sqlite write"])
    assert isinstance(seen["sqlite transaction"], OperationalError)
    assert kind("pg restart") == "ConnectionDoesNotExistError"
    assert kind("pg transaction") == "InterfaceError"  # the rollback on a closed connection
    assert isinstance(seen["pg down"], ConnectionRefusedError)
    assert kind("pg shutting down") == "CannotConnectNowError"
    assert kind("pg ended, hang-up late") == "InternalClientError"
    assert db.transient(seen["pg ended, hang-up late"])
    names = {type(e).__name__ for e in starting}
    assert "CannotConnectNowError" in names, names
    for tag in ("sqlite write", "sqlite transaction", "pg restart", "pg transaction", "pg down"):
        assert db.transient(seen[tag]), (tag, seen[tag])
    assert db.transient(seen["pg shutting down"])
    assert all(db.transient(e) for e in starting), starting
    assert isinstance(seen["sqlite unique"], IntegrityError)
    assert isinstance(seen["pg unique"], IntegrityError)
    assert isinstance(seen["pg syntax"], OperationalError)
    assert kind("pg misuse") == "InterfaceError"
    for tag in ("sqlite unique", "pg unique", "pg syntax", "pg misuse"):
        assert not db.transient(seen[tag]), (tag, seen[tag])


async def _sleep_query() -> None:
    await connections.get("default").execute_query("SELECT pg_sleep(5)")


async def _during(action: Any, aw: Any) -> None:
    """Start `aw`, do the blocking `action` in a thread meanwhile, then await `aw`."""
    task = asyncio.ensure_future(aw)
    await asyncio.sleep(0.2)
    await asyncio.to_thread(action)
    await task


async def _write_wal(pg: Cluster) -> None:
    """Enough unflushed work that crash recovery takes a moment."""
    conn = await asyncpg.connect(pg.url(), timeout=5)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS filler (x int)")
        await conn.execute("INSERT INTO filler SELECT generate_series(1, 200000)")
    finally:
        await conn.close()
