"""Send path: the real daemon sending N due steps, against a bare aiosmtplib loop.

    .venv/bin/python bench/send_path.py                  # 500 messages, SQLite
    .venv/bin/python bench/send_path.py -n 2000 --db postgres
    .venv/bin/python bench/send_path.py --mailboxes 5    # 5 mailboxes against 5 connections

Both sides send to the same aiosmtpd sink on loopback. The daemon runs with pacing off through
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
from sequencer.devservers import Pymap, SmtpSink  # noqa: E402
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


async def _daemon_run(cfg: Path, n: int, mailboxes: int, sink: SmtpSink) -> float:
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
            before = len(sink.received)
            started = time.perf_counter()
            while len(sink.received) - before < n:
                await daemon.check_inboxes()
                if not await daemon.run_once():
                    await asyncio.sleep(0.01)
            return time.perf_counter() - started


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

    started = time.perf_counter()
    await asyncio.gather(*(one(batch) for batch in messages))
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
    args = parser.parse_args()
    sink = SmtpSink().start()
    imap = Pymap(user="sales", password="bench-pass").start()  # noqa: S106 - loopback only
    os.environ["BENCH_IMAP_PASSWORD"] = imap.password
    pg_name = None
    try:
        with tempfile.TemporaryDirectory() as folder:
            if args.db == "postgres":
                pg_name, database = await _postgres_db()
            else:
                database = f"sqlite://{folder}/bench.db"
            boxes = args.mailboxes
            cfg = _config(Path(folder), sink.port, imap, database, boxes)
            bare = await _bare_run(sink.port, _messages(args.messages, boxes))
            daemon = await _daemon_run(cfg, args.messages, boxes, sink)
    finally:
        if pg_name:
            await _drop(pg_name)
        sink.stop()
        imap.stop()
    n = args.messages
    m = args.mailboxes
    print(f"send path, {n} messages, {m} mailbox(es), {args.db}, one aiosmtpd sink on loopback")
    print(f"{'':24}{'seconds':>10}{'msg/s':>10}{'ratio':>8}")
    label = "bare aiosmtplib loop" if m == 1 else f"{m} bare connections"
    print(f"{label:24}{bare:>10.2f}{n / bare:>10.0f}{1:>8.2f}")
    print(f"{'sequencer daemon':24}{daemon:>10.2f}{n / daemon:>10.0f}{bare / daemon:>8.2f}")


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:  # the daemon's log lines would swamp the table
        logs.configure(stream=quiet, level="warning")
        asyncio.run(main())
