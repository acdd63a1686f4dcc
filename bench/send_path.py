"""Send path: the real daemon sending N due steps, against a bare aiosmtplib loop.

    .venv/bin/python bench/send_path.py                  # 500 messages, SQLite
    .venv/bin/python bench/send_path.py -n 2000 --db postgres

Both sides send to the same aiosmtpd sink on loopback. The daemon runs with pacing off through
the settings users already have (`min_gap: 0s`, `spacing: 0s`, `daily_limit: 100000`, no
window) and `sent_copy: off`, its inbox watched on pymap, on the real clock. The baseline sends
the same messages, built before its clock starts, over one connection. The figure that matters
is the ratio, measured in the same run (absolute times on a shared machine vary); issue 14's
target is >= 0.8 on SQLite and >= 0.6 on PostgreSQL.
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

ONE_STEP = """mailbox: sales
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


def _config(root: Path, smtp: int, imap: Pymap, database: str) -> Path:
    (root / "sequences").mkdir()
    (root / "sequences" / "bench.yaml").write_text(ONE_STEP)
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
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: {imap.user},
           password_env: BENCH_IMAP_PASSWORD}}
"""
    )
    return cfg


async def _daemon_run(cfg: Path, n: int, sink: SmtpSink) -> float:
    """Seconds for the daemon to send step 1 to n enrolled contacts."""
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    async with db.connected(settings.database):
        clock = SystemClock()
        async with Daemon(settings, seqs, clock) as daemon:
            seq = seqs["bench"]
            people = [
                contacts.contact(seq, f"c{i}@prospect.test", {"first_name": f"C{i}"})
                for i in range(n)
            ]
            await enrolment.enroll(daemon.etiquette, seq, people, clock.now())
            before = len(sink.received)
            started = time.perf_counter()
            while len(sink.received) - before < n:
                await daemon.check_inboxes()
                if not await daemon.run_once():
                    await asyncio.sleep(0.01)
            return time.perf_counter() - started


def _messages(n: int) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    built = []
    for i in range(n):
        out = render.build_message(
            from_address="sales@vendor.test",
            from_name="Sam Seller",
            to_address=f"c{i}@prospect.test",
            subject=f"Notes from our call, C{i}",
            body=f"Hi C{i}, here are the notes from our call, and the next step.\n\nSam Seller",
            message_id=render.new_message_id("vendor.test"),
            date=now,
        )
        built.append((f"c{i}@prospect.test", out.data))
    return built


async def _bare_run(port: int, messages: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
        for to, data in messages:
            await smtp.sendmail("sales@vendor.test", [to], data)
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
            cfg = _config(Path(folder), sink.port, imap, database)
            bare = await _bare_run(sink.port, _messages(args.messages))
            daemon = await _daemon_run(cfg, args.messages, sink)
    finally:
        if pg_name:
            await _drop(pg_name)
        sink.stop()
        imap.stop()
    n = args.messages
    print(f"send path, {n} messages, {args.db}, one aiosmtpd sink on loopback")
    print(f"{'':24}{'seconds':>10}{'msg/s':>10}{'ratio':>8}")
    print(f"{'bare aiosmtplib loop':24}{bare:>10.2f}{n / bare:>10.0f}{1:>8.2f}")
    print(f"{'sequencer daemon':24}{daemon:>10.2f}{n / daemon:>10.0f}{bare / daemon:>8.2f}")


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:  # the daemon's log lines would swamp the table
        logs.configure(stream=quiet, level="warning")
        asyncio.run(main())
