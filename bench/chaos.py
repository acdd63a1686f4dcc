"""Chaos benchmark: the real daemon SIGKILLed and restarted hundreds of times mid-work.

Run from the repository root:

    .venv/bin/python bench/chaos.py [--rounds 100] [--seed N] [--database sqlite|postgres]

Everything is on loopback: an aiosmtpd sink in a thread of this process (it also tells the
bench when a session reaches RCPT or DATA), pymap in a subprocess (inbox and Sent folder),
and `sequencer run` in a subprocess. Contacts are enrolled in a three-step sequence (now, 1 s
later, the break-up 2 s after that), a few each round while the daemon is down. Each round
starts the daemon and SIGKILLs it at a moment picked at random:

- `anytime`: 0.2-4 s after the start;
- `startup`: within 1.2 s (imports, database, IMAP login);
- `rcpt`: the sink waits 0.8 s at RCPT; killed 0-0.6 s after a session reaches it;
- `data`: the sink stores the message and waits 0.8 s before answering DATA; killed
  0-0.6 s after it stored one (the daemon cannot know whether it went);
- `sent`: killed 0-30 ms after an `email.sent` log line (the Sent copy is usually in flight).

A round whose moment does not come within a few seconds is killed anyway. At the end the
daemon runs undisturbed until every contact has finished, and is stopped with SIGTERM.

The config uses `on_uncertain_send: skip`: a send killed during the data exchange counts as
not delivered and the sequence goes on. `resend` would deliver those the server did take a
second time (the duplicate this bench counts), and `hold` would leave them for a person.

Printed: runs (daemon processes), kills, steps expected (contacts x 3), sent (steps that
reached the sink, by recipient and step), duplicates (a step received more than once: must be
0), uncertain (steps the daemon settled as uncertain), lost (steps that never reached the
sink: must not exceed uncertain, and each must be one of them), and the longest stall: from a
start at which work was due to the first message at the sink (must be under 60 s). Also the
Sent folder: every step recorded as sent has exactly one copy. Exit code 1 if any bar fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aioimaplib  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from sequencer import contacts, enrolment  # noqa: E402
from sequencer.config import load_settings  # noqa: E402
from sequencer.devservers import LOOPBACK, Pymap, SinkHandler, free_port  # noqa: E402
from sequencer.etiquette import Etiquette  # noqa: E402
from sequencer.sequences import load_all  # noqa: E402
from sequencer.store import db  # noqa: E402
from sequencer.store.models import Enrollment, SentMessage  # noqa: E402

PG_ADMIN = os.environ.get("SEQUENCER_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
IMAP_USER, IMAP_PASSWORD = "sales", "chaos-Secret-7"
STEPS = 3
WAITS = {1: 0.0, 2: 1.0, 3: 2.0}  # seconds, as in SEQUENCE
SEQUENCE = """mailbox: sales
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes. [step 1]
  - wait: 1s
    body: |
      Hi {{ contact.first_name }}, the pricing page I promised. [step 2]
  - wait: 2s
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes. [step 3]
"""
MODES = {"anytime": 3, "startup": 1, "rcpt": 2, "data": 2, "sent": 2}
STALL_LIMIT = 60.0
_STEP = re.compile(r"\[step (\d+)\]")


# --- the sink -------------------------------------------------------------------------------
@dataclass
class Sink(SinkHandler):
    """The fault-injecting sink, also telling the bench where a session has got to."""

    at_rcpt: threading.Event = field(default_factory=threading.Event)
    stored: threading.Event = field(default_factory=threading.Event)
    arrivals: list[float] = field(default_factory=list)  # monotonic, one per message stored

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        self.at_rcpt.set()
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    def reset(self, *, stage_delay: float = 0.0, delay: float = 0.0) -> None:
        self.stage_delay, self.delay = stage_delay, delay
        self.at_rcpt.clear()
        self.stored.clear()


# --- the daemon -----------------------------------------------------------------------------
class Run:
    """One `sequencer run` process; a thread reads its JSON log lines as they come."""

    def __init__(self, cfg: Path, env: dict[str, str], errors: Path) -> None:
        self._errors = errors.open("a")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[dict[str, Any]] = []
        self.sent = threading.Event()  # an email.sent line was read
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                self.lines.append(event)
                if event.get("event") == "email.sent":
                    self.sent.set()

    def end(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._errors.close()


# --- the database, read and written between runs -------------------------------------------
@dataclass
class Snapshot:
    due: bool = False  # an active, unheld step is due now
    active: int = 0
    # Rows (by id) as a kill left them: the data exchange started and never answered; recorded
    # sent without the Sent copy recorded; written before SMTP, the enrollment still claimed.
    sending: set[int] = field(default_factory=set)
    uncopied: set[int] = field(default_factory=set)
    before_data: set[int] = field(default_factory=set)


async def _look() -> Snapshot:
    now = datetime.now(UTC)
    active = await Enrollment.filter(state="active")
    claimed = {e.id for e in active if e.claimed_until is not None}
    pending = await SentMessage.filter(status="pending")
    return Snapshot(
        due=any(e.hold is None and e.next_at is not None and e.next_at <= now for e in active),
        active=len(active),
        sending={r.id for r in await SentMessage.filter(status="sending")},
        uncopied={r.id for r in await SentMessage.filter(status="sent", copied_at__isnull=True)},
        before_data={r.id for r in pending if r.enrollment_id in claimed},  # type: ignore[attr-defined]
    )


class Store:
    def __init__(self, url: str, cfg: Path) -> None:
        self.url = url
        self.settings = load_settings(cfg)
        self.sequence = load_all(self.settings.sequences, self.settings.mailboxes)["chaos"]
        self.etiquette = Etiquette(self.settings)
        self.enrolled = 0

    def between_runs(self, new: int) -> Snapshot:
        """What the last kill left, then enrol `new` contacts; returns the state after."""
        return asyncio.run(self._between(new))

    async def _between(self, new: int) -> Snapshot:
        async with db.connected(self.url):
            left = await _look()
            people = []
            for _ in range(new):
                self.enrolled += 1
                address = f"c{self.enrolled:05d}@prospect.test"
                people.append(contacts.contact(self.sequence, address, {"first_name": "Jo"}))
            if people:
                await enrolment.enroll(self.etiquette, self.sequence, people, datetime.now(UTC))
            after = await _look()
        after.sending, after.uncopied, after.before_data = (
            left.sending,
            left.uncopied,
            left.before_data,
        )
        return after

    def look(self) -> Snapshot:
        async def go() -> Snapshot:
            async with db.connected(self.url):
                return await _look()

        return asyncio.run(go())

    def rows(self) -> tuple[list[SentMessage], list[Enrollment]]:
        async def go() -> tuple[list[SentMessage], list[Enrollment]]:
            async with db.connected(self.url):
                return list(await SentMessage.all()), list(await Enrollment.all())

        return asyncio.run(go())


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _sent_folder(port: int) -> Counter[str]:
    """Message-ID -> how many copies the Sent folder holds."""
    client = aioimaplib.IMAP4(host=LOOPBACK, port=port, timeout=30)
    await client.wait_hello_from_server()
    await client.login(IMAP_USER, IMAP_PASSWORD)
    found: Counter[str] = Counter()
    try:
        if (await client.select("Sent")).result != "OK":
            return found
        resp = await client.uid("fetch", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for line in resp.lines:
            if isinstance(line, bytearray):
                header = email.message_from_bytes(bytes(line), policy=email.policy.default)
                if header["Message-ID"]:
                    found[str(header["Message-ID"]).strip()] += 1
    finally:
        await client.logout()
    return found


# --- the rounds -----------------------------------------------------------------------------
@dataclass
class Tally:
    runs: int = 0
    kills: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    timed_out: int = 0  # rounds whose moment never came (killed anyway)
    # Rows a kill left in each state (distinct: a row left twice by two kills counts once).
    landed_data: set[int] = field(default_factory=set)
    landed_copy: set[int] = field(default_factory=set)
    landed_before_data: set[int] = field(default_factory=set)
    stalls: list[float] = field(default_factory=list)  # start with work due -> first arrival
    censored: int = 0  # starts with work due, killed before their first arrival

    def landed(self, left: Snapshot) -> None:
        self.landed_data |= left.sending
        self.landed_copy |= left.uncopied
        self.landed_before_data |= left.before_data


def wait_for(flag: threading.Event, run: Run, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if flag.wait(0.01):
            return True
        if run.proc.poll() is not None:
            return False
    return False


def one_round(
    rng: random.Random, sink: Sink, start: Callable[[], Run], due: bool, tally: Tally
) -> None:
    """Start the daemon, kill it at a moment picked by the round's mode."""
    mode = rng.choices(list(MODES), weights=list(MODES.values()))[0]
    if mode == "rcpt":
        sink.reset(stage_delay=0.8)
    elif mode == "data":
        sink.reset(delay=0.8)
    else:
        sink.reset()
    arrived_before = len(sink.arrivals)
    run = start()
    # Wait long enough for work that is due to go: a stall shows as a long wait here.
    patience = STALL_LIMIT + 5 if due and mode == "sent" else 6.0
    if mode == "anytime":
        time.sleep(rng.uniform(0.2, 4.0))
    elif mode == "startup":
        time.sleep(rng.uniform(0.0, 1.2))
    else:
        flag = {"rcpt": sink.at_rcpt, "data": sink.stored, "sent": run.sent}[mode]
        if wait_for(flag, run, patience):
            time.sleep(rng.uniform(0.0, 0.6) if mode != "sent" else rng.uniform(0.0, 0.03))
        else:
            tally.timed_out += 1
    run.end(signal.SIGKILL)
    tally.runs += 1
    tally.kills += 1
    tally.modes[mode] += 1
    if due:
        after = [t for t in sink.arrivals[arrived_before:] if t >= run.started]
        if after:
            tally.stalls.append(after[0] - run.started)
        else:
            tally.censored += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="kill/restart rounds (100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    work = Path(tempfile.mkdtemp(prefix="sequencer-chaos-"))
    pg_name = f"chaos_{uuid.uuid4().hex[:12]}"
    if args.database == "postgres":
        asyncio.run(_pg(f'CREATE DATABASE "{pg_name}"'))
        url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{pg_name}"
    else:
        url = f"sqlite://{work / 'state.db'}"

    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname=LOOPBACK, port=smtp_port, server_hostname="localhost")
    controller.start()
    sink.on_message = _arrival_stamper(sink)
    imap = Pymap(IMAP_USER, IMAP_PASSWORD).start()
    (work / "sequences").mkdir()
    (work / "sequences" / "chaos.yaml").write_text(SEQUENCE)
    cfg = work / "sequencer.yaml"
    cfg.write_text(
        f"""database: {url}
sequences: ./sequences
min_gap: 0s
on_uncertain_send: skip
mailboxes:
  sales:
    address: sales@vendor.test
    display_name: Sam Seller
    pace: {{daily_limit: 100000, spacing: 0s}}
    smtp: {{host: {LOOPBACK}, port: {smtp_port}, security: none}}
    imap: {{host: {LOOPBACK}, port: {imap.port}, security: none, username: {IMAP_USER},
           password_env: CHAOS_IMAP_PASSWORD}}
"""
    )
    env = {**os.environ, "CHAOS_IMAP_PASSWORD": IMAP_PASSWORD}
    errors = work / "daemon-stderr.log"

    def start() -> Run:
        return Run(cfg, env, errors)

    tally = Tally()
    began = time.monotonic()
    try:
        store = Store(url, cfg)
        for n in range(args.rounds):
            state = store.between_runs(rng.choice((0, 1, 1, 2)))
            tally.landed(state)
            one_round(rng, sink, start, state.due, tally)
            if (n + 1) % 25 == 0:
                print(
                    f"  round {n + 1}/{args.rounds}: {tally.kills} kills, "
                    f"{len(sink.received)} messages, {time.monotonic() - began:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
        state = store.between_runs(0)
        tally.landed(state)
        drained = drain(sink, start, store, state.due, tally)
        sent_rows, enrollments = store.rows()
        copies = asyncio.run(_sent_folder(imap.port))
    finally:
        controller.stop()
        imap.stop()
        if args.database == "postgres":
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    return report(
        args,
        seed,
        url,
        time.monotonic() - began,
        tally,
        sink,
        sent_rows,
        enrollments,
        copies,
        drained,
        work,
    )


def _arrival_stamper(sink: Sink) -> Any:
    async def stamp(data: bytes) -> None:
        sink.arrivals.append(time.monotonic())
        sink.stored.set()

    return stamp


def drain(sink: Sink, start: Callable[[], Run], store: Store, due: bool, tally: Tally) -> bool:
    """Run undisturbed until every contact has finished (or 120 s); stop with SIGTERM."""
    sink.reset()
    arrived_before = len(sink.arrivals)
    run = start()
    tally.runs += 1
    deadline = time.monotonic() + 120
    finished = False
    while time.monotonic() < deadline and run.proc.poll() is None:
        time.sleep(0.5)
        if store.look().active == 0:
            finished = True
            break
    run.end(signal.SIGTERM)
    if due:
        after = [t for t in sink.arrivals[arrived_before:] if t >= run.started]
        if after:
            tally.stalls.append(after[0] - run.started)
        else:
            tally.censored += 1
    return finished


def lateness(sent_rows: list[SentMessage], enrollments: list[Enrollment]) -> list[float]:
    """How long after its due time each step's data exchange started, in seconds: what a kill
    costs a contact (a restart, a lease running out, a step skipped and the next planned)."""
    started = {
        (r.enrollment_id, r.step): r.attempted_at  # type: ignore[attr-defined]
        for r in sent_rows
        if r.attempted_at is not None
    }
    out = []
    for e in enrollments:
        base = e.enrolled_at
        for step in range(1, STEPS + 1):
            at = started.get((e.id, step))
            if at is None:
                break
            out.append((at - base).total_seconds() - WAITS[step])
            base = at
    return out


def report(
    args: argparse.Namespace,
    seed: int,
    url: str,
    elapsed: float,
    tally: Tally,
    sink: Sink,
    sent_rows: list[SentMessage],
    enrollments: list[Enrollment],
    copies: Counter[str],
    drained: bool,
    work: Path,
) -> int:
    by_id = {r.message_id: r for r in sent_rows}
    emails = {e.id: e.email for e in enrollments}
    received: Counter[tuple[str, int]] = Counter()
    unknown = 0
    for r in sink.received:
        msg = email.message_from_bytes(r.data, policy=email.policy.default)
        row = by_id.get(str(msg["Message-ID"]))
        body = msg.get_body(("plain",))
        marker = _STEP.search(body.get_content() if body is not None else "")
        if row is None or marker is None or int(marker.group(1)) != row.step:
            unknown += 1
            continue
        received[(r.rcpt_tos[0], row.step)] += 1
    expected = len(enrollments) * STEPS
    sent = len(received)
    duplicates = sum(n - 1 for n in received.values())
    settled = {
        (emails[r.enrollment_id], r.step)  # type: ignore[attr-defined]
        for r in sent_rows
        if r.status in ("skipped", "uncertain")
    }
    held = sum(1 for e in enrollments if e.hold == "uncertain_send")
    uncertain = len(settled) + held
    missing = {(e.email, s) for e in enrollments for s in range(1, STEPS + 1)} - set(received)
    lost = len(missing)
    unaccounted = len(missing - settled)
    unfinished = sum(1 for e in enrollments if e.state != "completed")
    recorded_sent = [r.message_id for r in sent_rows if r.status == "sent"]
    copies_missing = sum(1 for m in recorded_sent if copies[m] == 0)
    copies_doubled = sum(1 for n in copies.values() if n > 1)
    stall = max(tally.stalls, default=0.0)
    late = lateness(sent_rows, enrollments)

    print(
        f"\nchaos: {args.rounds} rounds on {args.database}, seed {seed}, "
        f"{elapsed:.0f}s, nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
    )
    print(
        "| runs | kills | steps expected | sent | duplicates | uncertain | lost | longest stall |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {tally.runs} | {tally.kills} | {expected} | {sent} | {duplicates} | {uncertain} "
        f"| {lost} | {stall:.1f} s |"
    )
    modes = ", ".join(f"{m} {tally.modes[m]}" for m in MODES)
    print(f"\nkills by moment: {modes} ({tally.timed_out} whose moment never came)")
    print(
        f"steps a kill caught: {len(tally.landed_data)} during the data exchange (row "
        f"`sending`), {len(tally.landed_copy)} before their Sent copy was recorded, "
        f"{len(tally.landed_before_data)} with their row written and not yet on the wire"
    )
    if tally.stalls:
        print(
            f"start -> first message when work was due: {len(tally.stalls)} measured, median "
            f"{statistics.median(tally.stalls):.1f} s, max {stall:.1f} s "
            f"({tally.censored} starts killed before their first message)"
        )
    if late:
        worst = max(late)
        print(
            f"how late steps went (DATA start - (previous step's DATA start, or enrolment, + "
            f"its wait)): median {statistics.median(late):.1f} s, max {worst:.1f} s, "
            f"{sum(1 for x in late if x >= 30)} of {len(late)} 30 s or more"
        )
    print(
        f"contacts: {len(enrollments)} enrolled, {len(enrollments) - unfinished} completed, "
        f"{unfinished} unfinished; messages at the sink: {len(sink.received)} "
        f"({unknown} not matching a recorded step)"
    )
    print(
        f"lost steps not settled as uncertain: {unaccounted}; uncertain steps that did arrive: "
        f"{len(settled & set(received))}"
    )
    print(
        f"Sent folder: {len(recorded_sent)} steps recorded sent, {copies_missing} without a "
        f"copy, {copies_doubled} with more than one"
    )
    failures = []
    if duplicates:
        failures.append(f"{duplicates} duplicate(s)")
    if lost > uncertain or unaccounted:
        failures.append(f"{lost} lost for {uncertain} uncertain ({unaccounted} unaccounted)")
    if stall >= STALL_LIMIT:
        failures.append(f"a stall of {stall:.0f}s")
    if unknown:
        failures.append(f"{unknown} message(s) matching no recorded step")
    if unfinished or not drained:
        failures.append(f"{unfinished} contact(s) unfinished after the final run")
    if copies_missing or copies_doubled:
        failures.append(f"Sent copies: {copies_missing} missing, {copies_doubled} doubled")
    if args.keep:
        print(f"\nworking folder kept: {work}")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nOK: no duplicate, every lost step accounted as uncertain, no stall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
