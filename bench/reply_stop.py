"""Reply to stop: from a human reply's APPEND to its enrollment `replied` in the database, against
the bare IDLE push for the same APPEND on the same server.

    .venv/bin/python bench/reply_stop.py                         # pymap and Dovecot, 200 replies
    .venv/bin/python bench/reply_stop.py --server dovecot -r 50 -m 200
    .venv/bin/python bench/reply_stop.py --server pymap --profile /tmp/reply.txt

Per server: step 1 is sent to M contacts (in-process, before anything is timed), so each has a
Message-ID to answer and step 2 thirty days away. Then the real daemon, `sequencer run` as a
subprocess, watches the inbox via IDLE; beside it a bare aioimaplib client IDLEs on the same
INBOX. One reply at a time is APPENDed (From the contact, In-Reply-To the step's Message-ID)
over a connection opened beforehand, and two times are taken from just before the APPEND:

- bare push: the bare client reads the untagged `N EXISTS` for that message;
- daemon: the bench reads the daemon's `reply.detected` log line for that contact on its
  stdout (a pipe; JSON lines). The line is written after the transaction that sets the
  enrollment to `replied` has committed (`replies.act_on`), so it is the moment the state is
  in the database, at the cost of one JSON render and a pipe write (tens of microseconds);
  polling the database instead would add its own interval and load the 2 shared cores. After
  each reply the enrollment's state is read from the database (untimed) and must be
  `replied`.

Targets (issue 14): p99 <= 1 s; median <= 1.2x the bare push on Dovecot, the push + 10 ms
on pymap. `--profile PATH` runs the same daemon in the bench's own process instead, profiles it
with pyinstrument from the second reply on (the first one pays the classifier's one-time set-up;
the profiler's overhead is included in the times then) and writes the text report to PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aioimaplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dovecot import Dovecot  # noqa: E402

from sequencer import contacts, enrolment, logs  # noqa: E402
from sequencer.clock import SystemClock  # noqa: E402
from sequencer.config import load_settings  # noqa: E402
from sequencer.devservers import LOOPBACK, Pymap, SmtpSink  # noqa: E402
from sequencer.sequences import load_all  # noqa: E402
from sequencer.store import db  # noqa: E402
from sequencer.worker import Daemon  # noqa: E402

USER, PASSWORD = "sales", "bench-Pass-14"
TWO_STEPS = """mailbox: sales
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes from our call, and the next step.
  - wait: 30d
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes.
"""
_EXISTS = re.compile(rb"^(\d+) EXISTS")


def machine() -> str:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def config(root: Path, smtp: int, imap_port: int, database: str) -> Path:
    (root / "sequences").mkdir()
    (root / "sequences" / "bench.yaml").write_text(TWO_STEPS)
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: {database}
sequences: ./sequences
min_gap: 0s
mailboxes:
  sales:
    address: sales@vendor.test
    display_name: Sam Seller
    pace: {{daily_limit: 100000, spacing: 0s}}
    sent_copy: "off"
    smtp: {{host: 127.0.0.1, port: {smtp}, security: none}}
    imap: {{host: 127.0.0.1, port: {imap_port}, security: none, username: {USER},
           password_env: BENCH_IMAP_PASSWORD}}
"""
    )
    return cfg


async def send_first_steps(cfg: Path, m: int, sink: SmtpSink) -> list[tuple[str, str]]:
    """Step 1 to m contacts through the daemon (untimed); (address, Message-ID) of each."""
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    async with db.connected(settings.database):
        clock = SystemClock()
        async with Daemon(settings, seqs, clock) as daemon:
            seq = seqs["bench"]
            people = [
                contacts.contact(seq, f"c{i}@prospect.test", {"first_name": f"C{i}"})
                for i in range(m)
            ]
            await enrolment.enroll(daemon.etiquette, seq, people, clock.now())
            while len(sink.received) < m:
                if not await daemon.run_once():
                    await asyncio.sleep(0.01)
    parser = BytesHeaderParser()
    sent = []
    for item in sink.received:
        headers = parser.parsebytes(item.data)
        sent.append((item.rcpt_tos[0], str(headers["Message-ID"])))
    return sent


def human_reply(contact: str, message_id: str) -> bytes:
    return (
        f"From: {contact.split('@')[0].upper()} <{contact}>\r\n"
        "To: Sam Seller <sales@vendor.test>\r\n"
        "Subject: Re: Notes from our call\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain='prospect.test')}\r\n"
        f"In-Reply-To: {message_id}\r\n"
        f"References: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Thanks Sam, this looks useful. Could we talk on Tuesday afternoon?\r\n"
        "\r\n"
        f"> Hi, here are the notes from our call, and the next step.\r\n"
    ).encode()


@dataclass
class Events:
    """When each awaited thing was seen, on the bench's clock (perf_counter)."""

    exists: dict[int, float] = field(default_factory=dict)
    replied: dict[str, float] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        self.changed.set()


async def read_log(stream: asyncio.StreamReader, events: Events, keep: list[str]) -> None:
    while line := await stream.readline():
        note_line(line, time.perf_counter(), events, keep)


def note_line(line: bytes, at: float, events: Events, keep: list[str]) -> None:
    """One of the daemon's JSON log lines, read at `at`."""
    try:
        entry = json.loads(line)
    except ValueError:
        keep.append(line.decode(errors="replace"))
        return
    event = entry.get("event")
    if event == "reply.detected":
        events.replied[entry.get("email", "")] = at
        events.note()
    elif event == "daemon.started":
        events.started.set()
    elif entry.get("level") in ("warning", "error", "critical") and (
        event != "daemon.running_as_root"  # the bench runs as root for Dovecot
    ):
        keep.append(line.decode(errors="replace").strip())


async def bare_idle(port: int, events: Events, ready: asyncio.Event) -> None:
    """The baseline: a bare aioimaplib client in IDLE, noting each EXISTS as it comes."""
    imap = aioimaplib.IMAP4(host=LOOPBACK, port=port, timeout=30)
    await imap.wait_hello_from_server()
    await imap.login(USER, PASSWORD)
    await imap.select("INBOX")
    idle = await imap.idle_start(timeout=3600)
    ready.set()
    try:
        while True:
            try:
                lines = await imap.wait_server_push(timeout=3600)
            except TimeoutError:
                continue
            at = time.perf_counter()
            for line in lines if isinstance(lines, list) else [lines]:
                if isinstance(line, (bytes, bytearray)) and (m := _EXISTS.match(bytes(line))):
                    events.exists.setdefault(int(m.group(1)), at)
            events.note()
    finally:
        if imap.has_pending_idle():
            imap.idle_done()
        idle.cancel()
        await asyncio.gather(idle, return_exceptions=True)


async def wait_for(events: Events, n: int, address: str, within: float) -> None:
    """Until the bare client has seen EXISTS `n` and the daemon has said `address` replied."""
    deadline = time.perf_counter() + within
    while not (n in events.exists and address in events.replied):
        events.changed.clear()
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(events.changed.wait(), timeout=left)


def state_of(database: str, address: str) -> str:
    path = database.removeprefix("sqlite://")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT state FROM enrollment WHERE email = ?", (address,)).fetchone()
    return str(row[0]) if row else "missing"


@dataclass
class Result:
    server: str
    bare: list[float]
    daemon: list[float]
    wrong_state: int
    timeouts: int
    problems: list[str]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class LogTap:
    """A stream for structlog in the profiled, in-process mode: each JSON line is read as
    `read_log` reads the subprocess's stdout."""

    def __init__(self, events: Events, problems: list[str]) -> None:
        self.events, self.problems, self.buffer = events, problems, ""

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            note_line(line.encode(), time.perf_counter(), self.events, self.problems)
        return len(text)

    def flush(self) -> None:
        return None


@contextlib.asynccontextmanager
async def daemon_subprocess(
    cfg: Path, folder: str, events: Events, problems: list[str]
) -> AsyncIterator[None]:
    """`sequencer run`, as an operator starts it; its JSON log lines read from the pipe."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *["-m", "sequencer", "run", "--config", str(cfg)],
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=folder,
    )
    assert proc.stdout is not None
    reader = asyncio.create_task(read_log(proc.stdout, events, problems))
    try:
        await asyncio.wait_for(events.started.wait(), 60)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await reader


@contextlib.asynccontextmanager
async def daemon_in_process(cfg: Path, events: Events, problems: list[str]) -> AsyncIterator[None]:
    """The same daemon in the bench's own process and event loop (for the profiler only: the
    bench's clients then share its loop)."""
    logs.configure(stream=LogTap(events, problems), level="info")  # type: ignore[arg-type]
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    async with (
        db.connected(settings.database),
        Daemon(settings, seqs, SystemClock(), owns_database=True) as daemon,
    ):
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(events.started.wait(), 60)
            yield
        finally:
            daemon.stop()
            await task


async def run_server(kind: str, m: int, replies: int, profile: Path | None) -> Result:
    server: Pymap | Dovecot
    server = Pymap(USER, PASSWORD).start() if kind == "pymap" else Dovecot([USER], PASSWORD).start()
    sink = SmtpSink().start()
    os.environ["BENCH_IMAP_PASSWORD"] = PASSWORD
    try:
        with tempfile.TemporaryDirectory() as folder:
            database = f"sqlite://{folder}/bench.db"
            cfg = config(Path(folder), sink.port, server.port, database)
            sent = await send_first_steps(cfg, m, sink)
            events = Events()
            problems: list[str] = []
            profiler = None
            if profile is None:
                running = daemon_subprocess(cfg, folder, events, problems)
            else:
                from pyinstrument import Profiler

                profiler = Profiler(async_mode="disabled")
                running = daemon_in_process(cfg, events, problems)
            async with running:
                result = await measure(kind, server.port, database, sent, replies, events, profiler)
            result.problems = problems
            if profiler is not None and profile is not None:
                text = profiler.output_text(processor_options={"filter_threshold": 0.0005})
                await asyncio.to_thread(profile.write_text, text)
    finally:
        sink.stop()
        server.stop()
    return result


async def measure(
    kind: str,
    port: int,
    database: str,
    sent: list[tuple[str, str]],
    replies: int,
    events: Events,
    profiler: Any,
) -> Result:
    """APPEND the replies one at a time; time the bare push and the daemon's `replied`."""
    ready = asyncio.Event()
    baseline = asyncio.create_task(bare_idle(port, events, ready))
    await asyncio.wait_for(ready.wait(), 30)
    appender = aioimaplib.IMAP4(host=LOOPBACK, port=port, timeout=30)
    await appender.wait_hello_from_server()
    await appender.login(USER, PASSWORD)
    resp = await appender.select("INBOX")
    found = re.search(rb"(\d+) EXISTS", b" ".join(bytes(x) for x in resp.lines))
    exists = int(found.group(1)) if found else 0
    await asyncio.sleep(1.0)  # the daemon's watcher settles into IDLE
    result = Result(kind, [], [], 0, 0, [])
    rng = random.Random(14)
    for address, message_id in rng.sample(sent, replies):
        raw = human_reply(address, message_id)
        exists += 1
        n = exists
        start = time.perf_counter()
        await appender.append(raw, mailbox="INBOX")
        try:
            await wait_for(events, n, address, 10)
        except TimeoutError:
            result.timeouts += 1
            continue
        result.bare.append(events.exists[n] - start)
        result.daemon.append(events.replied[address] - start)
        if state_of(database, address) != "replied":
            result.wrong_state += 1
        if profiler is not None and not profiler.is_running:
            profiler.start()  # after the first reply: the steady state is what is profiled
        # The next reply comes once both sides are back in IDLE.
        await asyncio.sleep(0.2 + rng.random() * 0.1)
    if profiler is not None and profiler.is_running:
        profiler.stop()
    await appender.logout()
    baseline.cancel()
    await asyncio.gather(baseline, return_exceptions=True)
    return result


def table(results: list[Result], m: int, replies: int) -> list[str]:
    ms = 1000.0
    lines = [
        f"reply to stop: {replies} replies, {m} active contacts, SQLite, `sequencer run` "
        "subprocess; times from the APPEND",
        f"machine: {machine()}",
        "",
        "| server | bare push p50 | bare p99 | daemon p50 | daemon p99 | daemon max "
        "| first reply | p50 ratio | p50 extra | state ok | timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.daemon:
            lines.append(f"| {r.server} | - | - | - | - | - | - | - | - | - | {r.timeouts} |")
            continue
        b50, d50 = statistics.median(r.bare), statistics.median(r.daemon)
        lines.append(
            f"| {r.server} | {b50 * ms:.1f} ms | {pct(r.bare, 0.99) * ms:.1f} ms "
            f"| {d50 * ms:.1f} ms | {pct(r.daemon, 0.99) * ms:.1f} ms "
            f"| {max(r.daemon) * ms:.1f} ms | {r.daemon[0] * ms:.1f} ms | {d50 / b50:.2f} "
            f"| {(d50 - b50) * ms:+.1f} ms "
            f"| {len(r.daemon) - r.wrong_state}/{len(r.daemon)} | {r.timeouts} |"
        )
    lines.append("")
    for r in results:
        if not r.daemon:
            lines.append(
                f"summary: reply_stop {r.server}: no reply measured ({r.timeouts} timeouts)"
            )
            continue
        b50, d50, d99 = statistics.median(r.bare), statistics.median(r.daemon), pct(r.daemon, 0.99)
        if r.server == "dovecot":
            met = d99 <= 1.0 and d50 <= 1.2 * b50
            target = "p99 <= 1 s, p50 <= 1.2x push"
        else:
            met = d99 <= 1.0 and d50 - b50 <= 0.010
            target = "p99 <= 1 s, p50 <= push + 10 ms"
        lines.append(
            f"summary: reply_stop {r.server}: p50 {d50 * ms:.1f} ms = {d50 / b50:.2f}x the bare "
            f"push ({b50 * ms:.1f} ms), p99 {d99 * ms:.1f} ms; target {target}: "
            f"{'met' if met else 'NOT met'}"
        )
        for problem in r.problems[:5]:
            lines.append(f"  daemon said: {problem[:300]}")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["pymap", "dovecot", "both"], default="both")
    parser.add_argument("-m", "--contacts", type=int, default=1000, help="active contacts")
    parser.add_argument("-r", "--replies", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="run the daemon under pyinstrument")
    args = parser.parse_args()
    if args.replies > args.contacts:
        parser.error("--replies must not exceed --contacts")
    kinds = ["pymap", "dovecot"] if args.server == "both" else [args.server]
    results = []
    for kind in kinds:
        profile = args.profile
        if profile is not None and len(kinds) > 1:
            profile = profile.with_name(f"{profile.stem}-{kind}{profile.suffix}")
        results.append(await run_server(kind, args.contacts, args.replies, profile))
    print("\n".join(table(results, args.contacts, args.replies)))


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:  # the in-process set-up's log lines
        logs.configure(stream=quiet, level="warning")
        asyncio.run(main())
