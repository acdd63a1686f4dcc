"""Scale-out: 1, 2 and 3 `sequencer run` processes on one PostgreSQL, against one sink.

    .venv/bin/python bench/scale_out.py                 # 1,500 due contacts, 15 mailboxes
    .venv/bin/python bench/scale_out.py -n 3000 --daemons 1 3

Each run gets a fresh database with N contacts due across 15 mailboxes (pacing off through
the settings users already have: `min_gap: 0s`, `spacing: 0s`, `daily_limit: 100000`, no
window, `sent_copy: off`), all watched on one pymap account. The sink is aiosmtpd in its own
process (so it does not share a daemon's GIL) and answers each message after 20 ms, as a real
server does. The daemons are started with nothing due, and once every one has said
`daemon.started` the contacts are made due and the daemons woken (SIGHUP) together, so a
slower start-up does not count. Throughput is messages per second from the first to the last
message the sink stored; duplicates are messages the sink got for a contact it had already got
one for. The daemons' CPU time per message (from /proc, from the wake-up to the end) says
whether they were short of CPU. Issue 14's target: 3 daemons >= 2.4x one daemon, 0 duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sequencer import contacts, enrolment, logs  # noqa: E402
from sequencer.config import load_settings  # noqa: E402
from sequencer.devservers import Pymap, free_port, wait_for_port  # noqa: E402
from sequencer.etiquette import Etiquette  # noqa: E402
from sequencer.sequences import load_all  # noqa: E402
from sequencer.store import db  # noqa: E402

PG_ADMIN = os.environ.get("SEQUENCER_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
MAILBOXES = 15
SEQUENCE = """mailbox: {mailbox}
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

#: The sink, run as `python -c SINK PORT LOG`: one line per stored message (the time it was
#: stored and the recipient), written before the 20 ms answer.
SINK = """
import asyncio, sys, time
from aiosmtpd.controller import Controller

class Slow:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        self.out.write(f"{time.time()} {envelope.rcpt_tos[0]}\\n")
        self.out.flush()
        await asyncio.sleep(0.020)
        return "250 2.0.0 Message accepted"

port, path = int(sys.argv[1]), sys.argv[2]
with open(path, "a") as out:
    c = Controller(Slow(out), hostname="127.0.0.1", port=port, server_hostname="localhost")
    c.start()
    try:
        sys.stdin.read()  # until the bench closes our stdin
    finally:
        c.stop()
"""


def _config(root: Path, smtp: int, imap: Pymap, database: str) -> Path:
    seqs = root / "sequences"
    seqs.mkdir(parents=True)
    boxes = []
    for m in range(MAILBOXES):
        (seqs / f"bench{m}.yaml").write_text(SEQUENCE.format(mailbox=f"sales{m}"))
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
        f"database: {database}\nsequences: ./sequences\nmin_gap: 0s\nmailboxes:\n{''.join(boxes)}"
    )
    return cfg


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _execute(url: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _enroll(cfg: Path, n: int) -> None:
    """N contacts over the mailboxes, their first step an hour ahead (made due later)."""
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    etiquette = Etiquette(settings)
    async with db.connected(settings.database):
        for m in range(MAILBOXES):
            seq = seqs[f"bench{m}"]
            people = [
                contacts.contact(seq, f"c{i}@prospect.test", {"first_name": f"C{i}"})
                for i in range(m, n, MAILBOXES)
            ]
            await enrolment.enroll(etiquette, seq, people, datetime.now(UTC))
    await _execute(
        settings.database,
        "UPDATE enrollment SET next_at = $1",
        datetime.now(UTC) + timedelta(hours=1),
    )


def _spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, **kwargs)  # our own interpreter, fixed arguments


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backends(url: str, name: str) -> list[int]:
    """The PostgreSQL server processes serving the bench's database (on this machine)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


def _started(path: Path) -> bool:
    return path.exists() and '"daemon.started"' in path.read_text()


def _stored(path: Path) -> list[tuple[float, str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(float(t), to) for t, to in (line.split(" ", 1) for line in lines)]


async def _one_run(daemons: int, n: int, imap: Pymap, work: Path) -> dict[str, float]:
    """Fresh database and sink; `daemons` processes send the N due steps."""
    root = work / f"run{daemons}"
    name = f"bench_scale_{os.getpid()}_{daemons}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    sink_log = root / "sink.log"
    root.mkdir()
    sink = _spawn([sys.executable, "-c", SINK, str(port), str(sink_log)], stdin=subprocess.PIPE)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_port(port, 15, None)
        cfg = _config(root, port, imap, url)
        await _enroll(cfg, n)
        for d in range(daemons):
            with (root / f"daemon{d}.log").open("wb") as out:
                procs.append(
                    _spawn(
                        [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "BENCH_IMAP_PASSWORD": imap.password},
                    )
                )
        deadline = time.monotonic() + 120
        while not all(_started(root / f"daemon{d}.log") for d in range(daemons)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemons did not start; see {root}")
            await asyncio.sleep(0.2)
        cpu_before = sum(_cpu(proc.pid) for proc in procs)
        backends = await _backends(url, name)  # the daemons' pools are open by now
        pg_before = {pid: _cpu(pid) for pid in backends}
        sink_before = _cpu(sink.pid)
        await _execute(url, "UPDATE enrollment SET next_at = $1", datetime.now(UTC))
        for proc in procs:
            proc.send_signal(signal.SIGHUP)  # a reload wakes the scheduler at once
        deadline = time.monotonic() + 600
        while len(_stored(sink_log)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(_stored(sink_log))} of {n} sent; see {root}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # a duplicate would come now, if at all
        cpu = sum(_cpu(proc.pid) for proc in procs) - cpu_before
        # Connections the pools opened during the run count from zero: they began in it.
        late = [pid for pid in await _backends(url, name) if pid not in pg_before]
        pg_cpu = sum(_cpu(pid) - before for pid, before in pg_before.items())
        pg_cpu += sum(_cpu(pid) for pid in late)
        sink_cpu = _cpu(sink.pid) - sink_before
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(10)
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    stored = _stored(sink_log)
    times = sorted(t for t, _ in stored)
    errors = Counter[str]()
    for d in range(daemons):
        for line in (root / f"daemon{d}.log").read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"level": "error", "event": line[:80]}  # a traceback on stderr
            if entry.get("level") in ("error", "critical"):
                errors[f"{entry['event']}: {entry.get('error') or entry.get('detail') or ''}"] += 1
    for what, count in errors.items():
        print(f"{daemons} daemon(s), {count}x {what}", file=sys.stderr)
    return {
        "seconds": times[-1] - times[0],
        "messages": len(stored),
        "duplicates": sum(c - 1 for c in Counter(to for _, to in stored).values()),
        "errors": sum(errors.values()),
        "cpu": cpu,
        "pg_cpu": pg_cpu,
        "sink_cpu": sink_cpu,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--contacts", type=int, default=1500)
    parser.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    imap = Pymap(user="sales", password="bench-pass").start()  # noqa: S106 - loopback only
    os.environ["BENCH_IMAP_PASSWORD"] = imap.password
    results: dict[int, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for k in args.daemons:
                results[k] = await _one_run(k, args.contacts, imap, Path(folder))
    finally:
        imap.stop()
    n = args.contacts
    print(
        f"scale-out, {n} due contacts, {MAILBOXES} mailboxes, PostgreSQL, "
        "one aiosmtpd sink in its own process answering after 20 ms"
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(
        f"{'daemons':>8}{'seconds':>10}{'msg/s':>10}{'ratio':>8}{'duplicates':>12}"
        f"{'errors':>8}{'CPU ms/msg: daemons':>21}{'PostgreSQL':>12}{'sink':>6}"
        f"{'all-core ceiling msg/s':>24}"
    )
    base = results[args.daemons[0]]
    base_rate = base["messages"] / base["seconds"]
    for k, r in results.items():
        rate = r["messages"] / r["seconds"]
        print(
            f"{k:>8}{r['seconds']:>10.2f}{rate:>10.0f}{rate / base_rate:>8.2f}"
            f"{int(r['duplicates']):>12}{int(r['errors']):>8}"
            f"{1000 * r['cpu'] / r['messages']:>21.1f}"
            f"{1000 * r['pg_cpu'] / r['messages']:>12.1f}"
            f"{1000 * r['sink_cpu'] / r['messages']:>6.1f}"
            f"{_ceiling(r):>24.0f}"
        )
    last = max(results)
    rate = results[last]["messages"] / results[last]["seconds"]
    print(
        f"summary: {last} daemons {rate / base_rate:.2f}x {args.daemons[0]} (target >= 2.4 for 3);"
        f" duplicates {sum(int(r['duplicates']) for r in results.values())} (target 0)"
    )


def _ceiling(r: dict[str, float]) -> float:
    """The rate at which daemons, PostgreSQL and the sink together would keep every core of
    this machine busy, from the CPU they used per message: no number of daemons goes faster."""
    per_message = (r["cpu"] + r["pg_cpu"] + r["sink_cpu"]) / r["messages"]
    return (os.cpu_count() or 1) / per_message if per_message else float("inf")


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:
        logs.configure(stream=quiet, level="warning")
        asyncio.run(main())
