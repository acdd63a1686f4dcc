"""Several daemons on one PostgreSQL, as real processes: three `sequencer run` subprocesses
(each with its own connections) share one database, one aiosmtpd sink and one pymap account.

What a user would notice if it went wrong: a contact getting a step twice or out of order
when one daemon dies mid-run (SIGKILL) and comes back; a mailbox's daily limit or spacing
broken because three daemons each kept their own count; a reply handled twice, or a daemon
crashing on it, because every daemon watches the same inbox.

The daemons run with a 3 s lease (`run --lease-seconds`, hidden; 45 s by default) so a dead
daemon's claims run out within the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aioimaplib
import asyncpg  # type: ignore[import-untyped]
import pytest
from conftest import ImapServer

from sequencer import contacts, enrolment
from sequencer.clock import SystemClock
from sequencer.config import load_settings
from sequencer.devservers import SmtpSink
from sequencer.etiquette import Etiquette
from sequencer.sequences import load_all
from sequencer.store import db

LEASE = 3  # seconds
#: Heavier runs: the kill test also waits for the held sends to be settled (see there).
HEAVY = os.environ.get("SEQUENCER_HEAVY_TESTS") == "1"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)

TWO_STEPS = """mailbox: {mailbox}
steps:
  - wait: 0s
    subject: "Notes from our call, {{{{ contact.first_name }}}}"
    body: |
      Hi {{{{ contact.first_name }}}}, here are the notes from our call.
  - wait: {second}
    breakup: true
    body: |
      Hi {{{{ contact.first_name }}}}, the pricing page I promised.
"""


def _config(
    root: Path, database: str, smtp: int, imap: ImapServer, mailboxes: int, pace: str, second: str
) -> Path:
    (root / "sequences").mkdir()
    boxes = []
    for m in range(mailboxes):
        (root / "sequences" / f"s{m}.yaml").write_text(
            TWO_STEPS.format(mailbox=f"sales{m}", second=second)
        )
        boxes.append(
            f"""  sales{m}:
    address: sales{m}@vendor.test
    display_name: Sam Seller
    pace: {pace}
    sent_copy: "off"
    smtp: {{host: 127.0.0.1, port: {smtp}, security: none, timeout: 5}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: {imap.user},
           password_env: TEST_IMAP_PASSWORD}}
"""
        )
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"database: {database}\nsequences: ./sequences\nmin_gap: 0s\nmailboxes:\n{''.join(boxes)}"
    )
    return cfg


@dataclass
class Fleet:
    """The daemons of one installation, their logs, and what the sink received (with the
    monotonic time each message was stored)."""

    root: Path
    cfg: Path
    imap: ImapServer
    sink: SmtpSink
    #: The database whose uncertain sends to file in Sent (see `_file_uncertain`), or None.
    files_in_sent: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    arrived: list[tuple[float, bytes]] = field(default_factory=list)
    filed: set[str] = field(default_factory=set)
    _filer: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        async def stamp(data: bytes) -> None:
            self.arrived.append((time.monotonic(), data))

        self.sink.handler.on_message = stamp

    async def _file_uncertain(self, url: str) -> None:
        """The Sent folder of a server that files what it is sent (Gmail, Microsoft 365: the
        servers `sent_copy: off` is for). The daemons read it for one thing only: to settle
        a send held as uncertain, `SETTLE_AFTER` (30 s) after the hold. So, rather than
        APPEND every message inside the SMTP reply (4,000 of them: under a loaded CI pymap
        timed those out), this files each message the sink got whose send the database
        marks uncertain, within a second of the mark, long before any daemon looks."""
        conn = await asyncpg.connect(url)
        imap: Any = None
        by_id: dict[str, bytes] = {}
        indexed = 0
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT message_id FROM sent_message WHERE status = 'uncertain'"
                )
                wanted = {r["message_id"] for r in rows} - self.filed
                if wanted:
                    new = self.arrived[indexed:]
                    indexed += len(new)
                    for _, data in new:
                        if found := _MESSAGE_ID.search(data):
                            by_id[found[1].decode()] = data
                for message_id in sorted(wanted & by_id.keys()):
                    if imap is None:
                        imap = aioimaplib.IMAP4(host="127.0.0.1", port=self.imap.port, timeout=10)
                        await imap.wait_hello_from_server()
                        await imap.login(self.imap.user, self.imap.password)
                        await imap.create("Sent")  # or NO [ALREADYEXISTS]: a daemon made it
                    resp = await imap.append(by_id[message_id], mailbox="Sent")
                    assert resp.result == "OK", resp.lines
                    self.filed.add(message_id)
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
            if imap is not None:
                await imap.logout()

    def start(self) -> subprocess.Popen[bytes]:
        if self.files_in_sent is not None and self._filer is None:
            self._filer = asyncio.create_task(self._file_uncertain(self.files_in_sent))
        n = len(self.procs)
        with (
            (self.root / f"daemon{n}.log").open("wb") as out,
            (self.root / f"daemon{n}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "sequencer", "run", "--config", str(self.cfg)),
                    *("--log-format", "json", "--lease-seconds", str(LEASE)),
                ],
                stdout=out,
                stderr=err,
                env={**os.environ, "TEST_IMAP_PASSWORD": self.imap.password},
            )
        self.procs.append(proc)
        return proc

    async def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a frozen one too
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(30)
        if self._filer is not None:
            if not self._filer.done():
                self._filer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filer  # a failed APPEND is the test's failure

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for path in sorted(self.root.glob("daemon*.log")):
            lines += [
                {**json.loads(line), "daemon": path.stem}
                for line in path.read_text().splitlines()
                if line
            ]
        return lines

    def stderr(self) -> str:
        return "".join(p.read_text() for p in sorted(self.root.glob("daemon*.err")))

    def received(self) -> list[tuple[float, str, str]]:
        """(arrival, Message-ID, recipient) of every message the sink stored, in order."""
        parser = BytesHeaderParser(policy=email.policy.default)
        out = []
        for at, data in list(self.arrived):
            headers = parser.parsebytes(data)
            out.append((at, str(headers["Message-ID"]), str(headers["To"])))
        return out


@pytest.fixture
def fleet_root(tmp_path: Path) -> Path:
    return tmp_path


async def _enroll(cfg: Path, per_mailbox: dict[str, list[str]], overlap: bool = False) -> None:
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    etiquette = Etiquette(settings)
    async with db.connected(settings.database):
        for name, addresses in per_mailbox.items():
            seq = seqs[name]
            people = [contacts.contact(seq, a, {"first_name": a[:4]}) for a in addresses]
            now = SystemClock().now()
            await enrolment.enroll(etiquette, seq, people, now, allow_overlap=overlap)


async def _three_racing(fleet: Fleet, url: str, until: int, what: str) -> None:
    """Start three daemons with nothing due, make everything due, and make them race for it:
    SIGHUP (a reload) wakes a daemon's scheduler at once, so all three tick together every
    half second, until `until` messages have arrived and for six more rounds."""
    for _ in range(3):
        fleet.start()

    async def all_started() -> bool:
        return len([x for x in fleet.logs() if x["event"] == "daemon.started"]) == 3

    async def arrived() -> bool:
        return len(fleet.arrived) >= until

    await _until(all_started, 60, "three daemons started")
    await _rows(url, "UPDATE enrollment SET next_at = $1", datetime.now(UTC))

    async def race() -> None:
        while True:
            for proc in fleet.procs:
                proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)

    racing = asyncio.create_task(race())
    try:
        await _until(arrived, 60, what)
        await asyncio.sleep(3)
    finally:
        racing.cancel()


async def _rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.5)


def _trouble(fleet: Fleet, allowed: set[str] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Log lines at error level or with a traceback, but the ones the test expects."""
    return [
        line
        for line in fleet.logs()
        if (line.get("level") in ("error", "critical") or "exception" in line)
        and line["event"] not in allowed
    ]


# --- a: 2,000 contacts, one daemon killed and restarted ---------------------------------------
# 4,000 sends: 25-50 s alone on a loaded machine, about 45 s beside another test.
@pytest.mark.timeout(300 if HEAVY else 180)
async def test_three_daemons_one_killed_each_step_once_in_order(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, fleet_root: Path
) -> None:
    boxes, people = 5, 2000
    cfg = _config(
        fleet_root,
        postgres_url,
        smtp.port,
        pymap,
        boxes,
        "{daily_limit: 100000, spacing: 0s}",
        second="1s",
    )
    addresses = [f"p{i}@prospect.test" for i in range(people)]
    await _enroll(cfg, {f"s{m}": addresses[m::boxes] for m in range(boxes)})
    fleet = Fleet(fleet_root, cfg, pymap, smtp, files_in_sent=postgres_url)
    try:
        for _ in range(3):
            fleet.start()
        total = 2 * people

        async def a_quarter_went() -> bool:
            return len(fleet.arrived) >= total // 4

        await _until(a_quarter_went, 120, "a quarter of the sends")
        fleet.procs[0].kill()  # SIGKILL mid-run: whatever it had claimed or was sending
        fleet.procs[0].wait()
        killed_at, kill_time = len(fleet.arrived), time.monotonic()
        fleet.start()  # and back

        async def settled() -> bool:
            rows = await _rows(
                postgres_url,
                "SELECT count(*) AS n FROM enrollment WHERE state = 'active'"
                " AND (hold IS NULL OR hold <> 'uncertain_send')",
            )
            return bool(rows[0]["n"] == 0)

        await _until(settled, 240, "every contact completed or held as uncertain")
        if HEAVY:
            # Heavier (about 40 s more): wait for the daemons to settle each held send by
            # the Sent folder (`SETTLE_AFTER` past the hold): recorded where the sink got it,
            # sent again (same Message-ID) where it did not; then every contact completes.
            async def all_completed() -> bool:
                rows = await _rows(
                    postgres_url, "SELECT count(*) AS n FROM enrollment WHERE state = 'active'"
                )
                return bool(rows[0]["n"] == 0)

            await _until(all_completed, 120, "every held send settled by the Sent folder")
    finally:
        await fleet.stop_all()
    assert all(p.returncode in (0, -signal.SIGKILL) for p in fleet.procs)

    sent = {
        r["message_id"]: r
        for r in await _rows(
            postgres_url,
            "SELECT s.message_id, s.enrollment_id, s.step, s.status, e.email"
            " FROM sent_message s JOIN enrollment e ON e.id = s.enrollment_id",
        )
    }
    enrollments = await _rows(
        postgres_url, "SELECT id, email, state, hold, steps_sent, claimed_until FROM enrollment"
    )
    got: dict[int, list[int]] = defaultdict(list)  # enrollment -> steps, in arrival order
    per_id = Counter[str]()
    for _, message_id, to in fleet.received():
        per_id[message_id] += 1
        row = sent[message_id]  # every message the sink got is one the database knows
        assert row["email"] == to
        got[row["enrollment_id"]].append(row["step"])
    assert [m for m, n in per_id.items() if n > 1] == []  # no message twice

    held = []
    for enr in enrollments:
        steps = got[enr["id"]]
        assert len(steps) == len(set(steps)), (enr["email"], steps)  # no step twice
        assert steps == sorted(steps), (enr["email"], steps)  # in order
        if enr["state"] == "completed":
            assert steps == [1, 2], (enr["email"], steps)
        else:
            # Killed during the data exchange: the step may have gone, so it is held.
            assert (enr["state"], enr["hold"]) == ("active", "uncertain_send"), dict(enr)
            step = enr["steps_sent"] + 1
            maybe = [r for r in sent.values() if r["enrollment_id"] == enr["id"]]
            assert {(r["step"], r["status"]) for r in maybe if r["step"] == step} == {
                (step, "uncertain")
            }
            assert steps in ([*range(1, step)], [*range(1, step + 1)]), (enr["email"], steps)
            held.append((enr["email"], step, step in steps))
        assert enr["claimed_until"] is None, dict(enr)  # nothing left claimed
    # A SIGKILL lands during at most a few data exchanges (one per mailbox at a time).
    assert len(held) <= boxes, held
    took = fleet.arrived[-1][0] - fleet.arrived[0][0]
    print(
        f"\nkilled after {killed_at} of {total} sends; held as uncertain: {held}, of which"
        f" {len(fleet.filed)} filed in Sent; last send {fleet.arrived[-1][0] - kill_time:.1f} s"
        f" after the kill, {took:.1f} s after the first; settled by the Sent folder (found):"
        f" {[line['found_in_sent'] for line in fleet.logs() if line['event'] == 'email.settled']}"
    )
    assert _trouble(fleet, {"contact.held"}) == []
    assert "Traceback" not in fleet.stderr()


# --- b: daily limit and spacing across daemons ----------------------------------------------
async def test_three_daemons_keep_one_mailboxs_daily_limit_and_spacing(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, fleet_root: Path
) -> None:
    cfg = _config(
        fleet_root, postgres_url, smtp.port, pymap, 1, "{daily_limit: 5, spacing: 2s}", "1d"
    )
    await _enroll(cfg, {"s0": [f"p{i}@prospect.test" for i in range(20)]})
    later = datetime.now(UTC) + timedelta(hours=1)
    await _rows(postgres_url, "UPDATE enrollment SET next_at = $1", later)
    fleet = Fleet(fleet_root, cfg, pymap, smtp)
    try:
        # Then six more rounds, to send a sixth if a count were local.
        await _three_racing(fleet, postgres_url, 5, "the day's five sends")
    finally:
        await fleet.stop_all()
    assert len(fleet.arrived) == 5
    rows = await _rows(
        postgres_url,
        "SELECT attempted_at FROM sent_message WHERE status <> 'pending' ORDER BY attempted_at",
    )
    assert len(rows) == 5
    taken = [r["attempted_at"] for r in rows]
    # The pace is taken just before DATA: those instants are at least the spacing apart.
    assert all(b - a >= timedelta(seconds=2) for a, b in itertools.pairwise(taken))
    # At the sink, each data exchange's own length may shift an arrival a little.
    stamps = [at for at, _ in fleet.arrived]
    assert all(b - a >= 1.75 for a, b in itertools.pairwise(stamps)), stamps
    counted = await _rows(postgres_url, "SELECT mailbox, day_count FROM mailbox_state")
    assert [(r["mailbox"], r["day_count"]) for r in counted] == [("sales0", 5)]
    waiting = await _rows(
        postgres_url,
        "SELECT count(*) AS n FROM enrollment WHERE state = 'active' AND steps_sent = 0",
    )
    assert waiting[0]["n"] == 15
    by = Counter(line["daemon"] for line in fleet.logs() if line["event"] == "email.sent")
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(stamps)]
    print(f"\nsent by {dict(by)}; gaps at the sink: {gaps}")
    assert _trouble(fleet) == []


# --- b2: the gap between two emails to one person, across daemons and mailboxes ------------
async def test_three_daemons_never_write_to_one_person_twice_within_the_gap(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, fleet_root: Path
) -> None:
    """Ten people each in two sequences from two mailboxes, both steps due at once, three
    daemons racing: each person gets one email, the other step waits out `min_gap`."""
    cfg = _config(
        fleet_root, postgres_url, smtp.port, pymap, 2, "{daily_limit: 1000, spacing: 0s}", "1d"
    )
    cfg.write_text(cfg.read_text().replace("min_gap: 0s", "min_gap: 1h"))
    people = [f"p{i}@prospect.test" for i in range(10)]
    await _enroll(cfg, {"s0": people, "s1": people}, overlap=True)
    later = datetime.now(UTC) + timedelta(hours=1)
    await _rows(postgres_url, "UPDATE enrollment SET next_at = $1", later)
    fleet = Fleet(fleet_root, cfg, pymap, smtp)
    try:  # then six more rounds, for a second email to slip through
        await _three_racing(fleet, postgres_url, 10, "one email to each person")
    finally:
        await fleet.stop_all()
    per_person = Counter(to for _, _, to in fleet.received())
    assert per_person == dict.fromkeys(people, 1)
    waiting = await _rows(
        postgres_url,
        "SELECT email, next_at FROM enrollment WHERE state = 'active' AND steps_sent = 0",
    )
    assert sorted(r["email"] for r in waiting) == people  # one of each pair, deferred
    assert all(r["next_at"] >= datetime.now(UTC) + timedelta(minutes=55) for r in waiting)
    assert _trouble(fleet) == []


# --- c: a reply seen by every daemon's watcher ------------------------------------------------
async def test_three_daemons_watching_one_inbox_handle_a_reply_once(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, fleet_root: Path
) -> None:
    cfg = _config(
        fleet_root, postgres_url, smtp.port, pymap, 1, "{daily_limit: 100, spacing: 0s}", "1d"
    )
    people = [f"p{i}@prospect.test" for i in range(3)]
    await _enroll(cfg, {"s0": people})
    fleet = Fleet(fleet_root, cfg, pymap, smtp)
    try:
        for _ in range(3):
            fleet.start()

        async def three() -> bool:
            return len(fleet.arrived) >= 3

        await _until(three, 60, "step 1 to each contact")
        first = {to: message_id for _, message_id, to in fleet.received()}
        reply = (
            f"From: P0 <{people[0]}>\r\nTo: sales0@vendor.test\r\n"
            f"Subject: Re: Notes from our call\r\nMessage-ID: {make_msgid(domain='prospect.test')}"
            f"\r\nIn-Reply-To: {first[people[0]]}\r\nReferences: {first[people[0]]}\r\n"
            f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n\r\n"
            "Thanks, let's talk on Thursday.\r\n"
        ).encode()
        await pymap.deliver(reply)

        async def replied() -> bool:
            rows = await _rows(
                postgres_url, "SELECT state FROM enrollment WHERE email = $1", people[0]
            )
            return bool(rows[0]["state"] == "replied")

        await _until(replied, 30, "the reply handled")
        # Every daemon's watcher gets the IDLE push within milliseconds; let the slowest look.
        await asyncio.sleep(2)
    finally:
        await fleet.stop_all()
    inbound = await _rows(postgres_url, "SELECT mailbox, uid, status FROM inbound_message")
    assert [(r["mailbox"], r["status"]) for r in inbound] == [("sales0", "handled")]
    handled = [line for line in fleet.logs() if line.get("uid") == inbound[0]["uid"]]
    assert len([line for line in handled if line["event"].startswith("reply.")]) == 1, handled
    assert _trouble(fleet) == []
    assert "Traceback" not in fleet.stderr()
    assert "IntegrityError" not in json.dumps(fleet.logs())


# --- d: a daemon frozen past its lease ------------------------------------------------------
async def test_a_daemon_frozen_past_its_lease_sends_nothing_twice(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, fleet_root: Path
) -> None:
    """A daemon stopped (SIGSTOP: a paused VM, a machine swapping) with a batch claimed
    loses its leases; another daemon sends those steps. When it runs again, the rest of its
    batch must not go a second time."""
    cfg = _config(
        fleet_root, postgres_url, smtp.port, pymap, 1, "{daily_limit: 100000, spacing: 0s}", "1d"
    )
    people = [f"p{i}@prospect.test" for i in range(60)]
    await _enroll(cfg, {"s0": people})
    smtp.handler.delay = 0.05  # each send takes a while: the batch is still going when frozen
    fleet = Fleet(fleet_root, cfg, pymap, smtp, files_in_sent=postgres_url)
    try:
        frozen = fleet.start()

        async def some_went() -> bool:
            return len(fleet.arrived) >= 5

        await _until(some_went, 60, "the first sends")
        frozen.send_signal(signal.SIGSTOP)
        fleet.start()

        async def others_sent_the_rest() -> bool:
            rows = await _rows(  # all but those frozen in (or just after) a data exchange
                postgres_url,
                "SELECT count(*) AS n FROM enrollment e WHERE steps_sent = 0 AND hold IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM sent_message s"
                "  WHERE s.enrollment_id = e.id AND s.status = 'sending')",
            )
            return bool(rows[0]["n"] == 0)

        await _until(others_sent_the_rest, 60, "the other daemon sending the rest")
        frozen.send_signal(signal.SIGCONT)

        async def every_step_settled() -> bool:
            rows = await _rows(
                postgres_url, "SELECT count(*) AS n FROM enrollment WHERE steps_sent = 0"
            )
            return bool(rows[0]["n"] == 0)

        await _until(every_step_settled, 60, "the frozen daemon's last send recorded")
        await asyncio.sleep(2)  # the rest of its batch, were it to go again
    finally:
        await fleet.stop_all()
    per_contact = Counter(to for _, _, to in fleet.received())
    assert {to for to, n in per_contact.items() if n > 1} == set()
    assert set(per_contact) == set(people)
    assert "Traceback" not in fleet.stderr()
