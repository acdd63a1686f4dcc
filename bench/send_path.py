"""Send path: the real daemon sending N due steps, against a bare aiosmtplib loop.

    .venv/bin/python bench/send_path.py                  # 500 messages, SQLite
    .venv/bin/python bench/send_path.py -n 2000 --db postgres
    .venv/bin/python bench/send_path.py --mailboxes 5    # 5 mailboxes against 5 connections

Both sides send to the same aiosmtpd sink on loopback, in its own process (`--sink thread`
runs it in a thread of this one instead, where it competes for the interpreter lock with
whatever it measures). The daemon runs with pacing off through
the settings users already have (`min_gap: 0s`, `spacing: 0s`, `daily_limit: 100000`, no
window) and `sent_copy: off`, its inbox watched on pymap, on the real clock. The baseline sends
the same messages, built before its clock starts, over one connection. The figure that matters
is the ratio, measured in the same run (absolute times on a shared machine vary); issue 14's
target is >= 0.8 on SQLite and >= 0.6 on PostgreSQL. With --mailboxes M the contacts are
spread over M mailboxes (one sequence each), against M bare connections sending side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import asyncpg  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sequencer import contacts, enrolment, logs, render  # noqa: E402
from sequencer.clock import SystemClock  # noqa: E402
from sequencer.config import load_settings  # noqa: E402
from sequencer.devservers import Pymap, SmtpSink, free_port  # noqa: E402
from sequencer.sequences import load_all  # noqa: E402
from sequencer.store import db  # noqa: E402
from sequencer.worker import Daemon  # noqa: E402

ONE_STEP = """mailbox: {mailbox}
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes from our call, and the next step.
  - wait: 2d
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes.
"""
#: The sink, run as `python -c SINK PORT`: accepts everything, says "ready", and stops when
#: its stdin closes.
SINK = """
import sys, time
from aiosmtpd.controller import Controller

class Accept:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Message accepted"

sink = Controller(Accept(), hostname="127.0.0.1", port=int(sys.argv[1]))
sink.start()
print("ready", flush=True)
sys.stdin.read()
sink.stop()
"""
#: CPU seconds of this process (every thread) during each run.
CPU: dict[str, float] = {}
PG_ADMIN = os.environ.get("SEQUENCER_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")


def _config(root: Path, smtp: int, imap: Pymap, database: str, mailboxes: int) -> Path:
    (root / "sequences").mkdir()
    boxes = []
    for m in range(mailboxes):
        (root / "sequences" / f"bench{m}.yaml").write_text(ONE_STEP.format(mailbox=f"sales{m}"))
        boxes.append(
            f"""  sales{m}:
    address: sales{m}@vendor.test
    display_name: Sam Seller
    pace: {{daily_limit: 100000, spacing: 0s}}
    sent_copy: "off"
    smtp: {{host: 127.0.0.1, port: {smtp}, security: none}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: {imap.user},
           password_env: BENCH_IMAP_PASSWORD}}
"""
        )
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: {database}
sequences: ./sequences
min_gap: 0s
mailboxes:
{"".join(boxes)}"""
    )
    return cfg


async def _daemon_run(cfg: Path, n: int, mailboxes: int) -> float:
    """Seconds for the daemon to send step 1 to n enrolled contacts."""
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    async with db.connected(settings.database):
        clock = SystemClock()
        async with Daemon(settings, seqs, clock) as daemon:
            for m in range(mailboxes):
                seq = seqs[f"bench{m}"]
                people = [
                    contacts.contact(seq, f"c{i}@prospect.test", {"first_name": f"C{i}"})
                    for i in range(m, n, mailboxes)
                ]
                await enrolment.enroll(daemon.etiquette, seq, people, clock.now())
            sent = 0
            started, cpu = time.perf_counter(), time.process_time()
            while sent < n:
                await daemon.check_inboxes()
                went = await daemon.run_once()
                sent += went
                if not went:
                    await asyncio.sleep(0.01)
            CPU["daemon"] = time.process_time() - cpu
            return time.perf_counter() - started


class _Sink:
    """The aiosmtpd sink in its own process (or, with `thread`, a thread of this one)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.port = free_port()
        self.thread: SmtpSink | None = None
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> _Sink:
        if self.where == "thread":
            self.thread = SmtpSink().start()
            self.port = self.thread.port
            return self
        self.proc = subprocess.Popen(  # our own interpreter, fixed arguments
            [sys.executable, "-c", SINK, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:
            self.thread.stop()
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)


def _messages(n: int, mailboxes: int) -> list[list[tuple[str, str, bytes]]]:
    """The same messages the daemon sends, one list per mailbox."""
    now = datetime.now(UTC)
    built: list[list[tuple[str, str, bytes]]] = [[] for _ in range(mailboxes)]
    for i in range(n):
        sender = f"sales{i % mailboxes}@vendor.test"
        out = render.build_message(
            from_address=sender,
            from_name="Sam Seller",
            to_address=f"c{i}@prospect.test",
            subject=f"Notes from our call, C{i}",
            body=f"Hi C{i}, here are the notes from our call, and the next step.\n\nSam Seller",
            message_id=render.new_message_id("vendor.test"),
            date=now,
        )
        built[i % mailboxes].append((sender, f"c{i}@prospect.test", out.data))
    return built


async def _bare_run(port: int, messages: list[list[tuple[str, str, bytes]]]) -> float:
    """One connection per mailbox, sending side by side."""

    async def one(batch: list[tuple[str, str, bytes]]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            for sender, to, data in batch:
                await smtp.sendmail(sender, [to], data)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(batch) for batch in messages))
    CPU["bare"] = time.process_time() - cpu
    return time.perf_counter() - started


async def _postgres_db() -> tuple[str, str]:
    name = f"bench_{os.getpid()}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=500)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mailboxes", type=int, default=1)
    parser.add_argument("--sink", choices=["process", "thread"], default="process")
    args = parser.parse_args()
    imap = Pymap(user="sales", password="bench-pass").start()  # noqa: S106 - loopback only
    os.environ["BENCH_IMAP_PASSWORD"] = imap.password
    pg_name = None
    try:
        with tempfile.TemporaryDirectory() as folder, _Sink(args.sink) as sink:
            if args.db == "postgres":
                pg_name, database = await _postgres_db()
            else:
                database = f"sqlite://{folder}/bench.db"
            boxes = args.mailboxes
            cfg = _config(Path(folder), sink.port, imap, database, boxes)
            bare = await _bare_run(sink.port, _messages(args.messages, boxes))
            daemon = await _daemon_run(cfg, args.messages, boxes)
    finally:
        if pg_name:
            await _drop(pg_name)
        imap.stop()
    n = args.messages
    m = args.mailboxes
    print(
        f"send path, {n} messages, {m} mailbox(es), {args.db}, "
        f"one aiosmtpd sink on loopback (in a {args.sink})"
    )
    print(f"{'':24}{'seconds':>10}{'msg/s':>10}{'ratio':>8}{'CPU ms/msg':>12}")
    label = "bare aiosmtplib loop" if m == 1 else f"{m} bare connections"
    print(f"{label:24}{bare:>10.2f}{n / bare:>10.0f}{1:>8.2f}{CPU['bare'] * 1000 / n:>12.2f}")
    print(
        f"{'sequencer daemon':24}{daemon:>10.2f}{n / daemon:>10.0f}{bare / daemon:>8.2f}"
        f"{CPU['daemon'] * 1000 / n:>12.2f}"
    )


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:  # the daemon's log lines would swamp the table
        logs.configure(stream=quiet, level="warning")
        asyncio.run(main())
