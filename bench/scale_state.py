"""Scale of state: the daemon and `status` at 10 k, 100 k and (--full) 1 M enrollments.

    .venv/bin/python bench/scale_state.py                  # 10 k and 100 k, SQLite
    .venv/bin/python bench/scale_state.py --full           # and 1 M
    .venv/bin/python bench/scale_state.py --db postgres

Each database is filled in bulk (executemany on SQLite, COPY on PostgreSQL; not the ORM row
by row): a share of the enrollments active, 1% of them due in the next hour (from 15 minutes
on, so the daemon is idle while it is measured), a few held or promised, the others ended,
and a sent-log of one to three messages for half of them. Then, for each size: the real
`sequencer run` as a subprocess (three mailboxes on a loopback aiosmtpd and pymap) for its
start-up time (to the daemon.started line), its RSS and its idle CPU over a window (from
/proc); the due query called directly at the time the due rows are due; `status` and
`status --json` as subprocesses, their time and peak RSS. Every figure is also given as a
ratio to the 10 k figure of the same run (issue 14's targets are ratios at 1 M).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sequencer import logs  # noqa: E402
from sequencer.devservers import Pymap, SmtpSink  # noqa: E402
from sequencer.store import db, queries, sending  # noqa: E402

PG_ADMIN = os.environ.get("SEQUENCER_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
MAILBOXES = ("sales1", "sales2", "sales3")
SEQUENCE = """mailbox: sales1
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes from our call.
  - wait: 3d
    body: |
      Hi {{ contact.first_name }}, did you have a look?
  - wait: 4d
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here.
"""
ENROLLMENT_COLUMNS = (
    "email", "sequence", "mailbox", "variables", "state", "reason", "steps_sent", "next_at",
    "attempts", "next_reasons", "promises", "promised", "enrolled_at", "last_sent_at",
    "finished_at", "hold", "hold_since", "hold_detail", "hold_until", "referral",
)  # fmt: skip
SENT_COLUMNS = (
    "enrollment_id", "step", "email", "mailbox", "message_id", "subject", "status",
    "created_at", "attempted_at", "sent_at", "copied_at",
)  # fmt: skip
ENDED = ("completed", "replied", "stopped", "bounced")


def rows(
    n: int, now: datetime, seed: int = 14
) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """Enrollment i (id i + 1) and its sent messages: 70% active, of which 1/70 of the table
    (1% of it) due between now + 15 min and now + 75 min, 1% held by a manual pause, 0.2%
    promised; 30% ended; half with one to three messages sent (under a thousand of them in
    the last day, whatever the size)."""
    rng = random.Random(seed)
    due_every = 100  # 1% of all enrollments
    for i in range(n):
        email = f"c{i}@p{i % 5000}.test"
        mailbox = MAILBOXES[i % len(MAILBOXES)]
        enrolled = now - timedelta(days=rng.uniform(1, 60))
        active = i % 10 < 7
        steps = rng.choice((0, 1, 2, 3)) if i % 2 else 0
        if active:
            steps = min(steps, 2)
        hold = hold_since = hold_until = hold_detail = None
        finished = next_at = None
        promised = False
        if i % due_every == 0:
            active = True
            next_at = now + timedelta(minutes=15 + 60 * rng.random())
        elif active:
            next_at = now + timedelta(days=rng.uniform(1, 30))
            if i % 100 == 1:
                hold, hold_since, hold_detail = "manual_pause", now, "on holiday"
                hold_until = now + timedelta(days=10)
            elif i % 500 == 3:
                promised = True
        else:
            finished = enrolled + timedelta(days=rng.uniform(0, 20))
        state = "active" if active else ENDED[i % len(ENDED)]
        last_sent = enrolled + timedelta(hours=1) if steps else None
        enrollment = (
            email, "bench", mailbox, json.dumps({"first_name": f"C{i}"}), state,
            None if active else "bench", steps, next_at, 0, "[]", "{}", promised, enrolled,
            last_sent, finished, hold, hold_since, hold_detail, hold_until, "[]",
        )  # fmt: skip
        sent = []
        for step in range(1, steps + 1):
            # The sent-log of a day is bounded by the mailboxes' pace, not by the table: the
            # first 900 messages in the last day, the others before it.
            at = enrolled + timedelta(days=step - 1, hours=1) - timedelta(days=62)
            if i < 600:
                at = now - timedelta(hours=rng.uniform(0, 23))
            sent.append(
                (
                    i + 1, step, email, mailbox, f"<{i}.{step}@vendor.test>",
                    f"Notes from our call, C{i}", "sent", at, at, at, at,
                )
            )  # fmt: skip
        yield enrollment, sent


def _batches(n: int, now: datetime, size: int = 20_000) -> Iterator[tuple[list[Any], list[Any]]]:
    enr: list[Any] = []
    sent: list[Any] = []
    for e, s in rows(n, now):
        enr.append(e)
        sent.extend(s)
        if len(enr) >= size:
            yield enr, sent
            enr, sent = [], []
    if enr:
        yield enr, sent


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ",".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({",".join("?" * len(columns))})'  # noqa: S608


async def build(url: str, n: int, now: datetime) -> None:
    """An empty database at the current schema (as `sequencer run` makes it), then n
    enrollments and their sent-log in bulk. PostgreSQL is then analyzed, as its autovacuum
    does after a bulk load; SQLite is not: it never analyzes by itself, so its users'
    databases have no statistics."""
    async with db.connected(url):
        pass
    path = db.sqlite_path(url)
    if path is not None:
        conn = sqlite3.connect(path)
        try:
            for enr, sent in _batches(n, now):
                with conn:
                    conn.executemany(_insert_sql("enrollment", ENROLLMENT_COLUMNS), enr)
                    conn.executemany(_insert_sql("sent_message", SENT_COLUMNS), sent)
        finally:
            conn.close()
        return
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        for enr, sent in _batches(n, now):
            await conn.copy_records_to_table("enrollment", records=enr, columns=ENROLLMENT_COLUMNS)
            await conn.copy_records_to_table("sent_message", records=sent, columns=SENT_COLUMNS)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# --- measuring ------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _config(root: Path, database: str, smtp: int, imap: Pymap) -> Path:
    (root / "sequences").mkdir(exist_ok=True)
    (root / "sequences" / "bench.yaml").write_text(SEQUENCE)
    boxes = "".join(
        f"""  {name}:
    address: {name}@vendor.test
    display_name: Sam Seller
    pace: {{daily_limit: 100000, spacing: 0s}}
    sent_copy: "off"
    smtp: {{host: 127.0.0.1, port: {smtp}, security: none}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: {imap.user},
           password_env: BENCH_IMAP_PASSWORD}}
"""
        for name in MAILBOXES
    )
    cfg = root / f"sequencer-{abs(hash(database))}.yaml"
    cfg.write_text(
        f"database: {database}\nsequences: ./sequences\nmin_gap: 0s\nmailboxes:\n{boxes}"
    )
    return cfg


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _sequencer(*args: str) -> list[str]:
    return [sys.executable, "-m", "sequencer", *args]


def daemon(cfg: Path, idle: float) -> dict[str, float]:
    """`sequencer run`: seconds to its daemon.started line, its RSS then, and its CPU over
    `idle` seconds with nothing due (the due rows start 15 minutes on)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        _sequencer("run", "--config", str(cfg)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=cfg.parent,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if b"daemon.started" in line:
                break
            if b"daemon.failed" in line:
                raise RuntimeError(line.decode())
        else:
            raise RuntimeError(f"sequencer run ended with {proc.wait()} before starting")
        startup = time.perf_counter() - started
        rss = _rss_mb(proc.pid)
        cpu = _cpu_seconds(proc.pid)
        time.sleep(idle)
        idle_cpu = (_cpu_seconds(proc.pid) - cpu) / idle * 100 if idle else 0.0
        return {"startup": startup, "rss": rss, "rss_idle": _rss_mb(proc.pid), "cpu": idle_cpu}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def command(cfg: Path, *args: str, out: Path | None = None) -> tuple[float, float]:
    """Seconds and peak RSS (MB, from /usr/bin/time: a forked child's own getrusage would
    count the benchmark's memory before exec) of one `sequencer` command, its output to
    `out` or nowhere."""
    with tempfile.NamedTemporaryFile("r") as peak, open(out or os.devnull, "wb") as sink:
        started = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, *_sequencer(*args)]
            + (["--config", str(cfg)] if args and args[0] != "--help" else []),
            stdout=sink,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "100"},
            cwd=cfg.parent,
            check=False,
        )
        took = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"sequencer {' '.join(args)}: {done.stderr.decode()[-500:]}")
        return took, int(peak.read().split()[-1]) / 1024


async def _best(call: Any, times: int = 20) -> float:
    """The median of `times` calls, in milliseconds, after one to warm the caches."""
    await call()
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        spent.append(time.perf_counter() - started)
    return sorted(spent)[len(spent) // 2] * 1000


async def _summary(cfg: Path, now: datetime) -> list[str]:
    """What `sequencer status` does once the process has started and connected."""
    from sequencer import cli, summary
    from sequencer.config import load_settings

    return summary.summary_lines(await cli._facts(load_settings(cfg), now))


async def in_process(url: str, cfg: Path, now: datetime) -> dict[str, float]:
    """The due query at the hour the due rows fall in, and the queries behind STATUS= and
    'did you mean', called as the daemon and the CLI call them."""
    later = now + timedelta(hours=1, minutes=15)
    async with db.connected(url):
        return {
            # 100 due rows at every size: a third from each mailbox (at 10 k, 1% due is
            # about 100 in all), so the sizes compare the same work, not more rows returned.
            "due": await _best(lambda: sending.due(later, 100 // len(MAILBOXES) + 1, MAILBOXES)),
            "next_due": await _best(queries.next_due_at),
            "service": await _best(queries.service_summary, 5),
            "similar": await _best(lambda: queries.similar_addresses("nobody@p77.test"), 3),
            "summary": await _best(lambda: _summary(cfg, now), 3),
        }


async def _pg_create(name: str) -> str:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def _pg_drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def measure(
    n: int, kind: str, folder: Path, idle: float, smtp: int, imap: Pymap
) -> dict[str, float]:
    now = datetime.now(UTC)
    pg_name = f"bench_scale_{os.getpid()}_{n}"
    url = asyncio.run(_pg_create(pg_name)) if kind == "postgres" else f"sqlite://{folder}/{n}.db"
    try:
        started = time.perf_counter()
        asyncio.run(build(url, n, now))
        figures = {"build": time.perf_counter() - started}
        cfg = _config(folder, url, smtp, imap)
        # Start-up and the short commands: the best of three (the machine is shared; the
        # figure that matters is what the code costs, not what a neighbour took).
        runs = [daemon(cfg, idle if i == 0 else 0.0) for i in range(3)]
        figures.update(runs[0])
        figures["startup"] = min(r["startup"] for r in runs)
        figures.update(asyncio.run(in_process(url, cfg, now)))
        figures["cli"], figures["cli_rss"] = min(command(cfg, "--help") for _ in range(3))
        figures["status"], figures["status_rss"] = min(command(cfg, "status") for _ in range(3))
        dump = folder / f"{n}.json"
        figures["json"], figures["json_rss"] = command(cfg, "status", "--json", out=dump)
        with dump.open("rb") as written:
            written.seek(-2, os.SEEK_END)
            if written.read() != b"]\n":
                raise RuntimeError("status --json did not close its array")
        figures["json_mb"] = dump.stat().st_size / 2**20
        dump.unlink()
        return figures
    finally:
        if kind == "postgres":
            asyncio.run(_pg_drop(pg_name))


#: (key, label, unit, target at 1 M as text)
ROWS = (
    ("build", "bulk load (setup)", "s", ""),
    ("startup", "daemon start-up (best of 3)", "s", "<= 2 s"),
    ("rss", "daemon RSS after start", "MB", "<= 100 MB, <= 1.3x"),
    ("rss_idle", "daemon RSS after idle", "MB", ""),
    ("cpu", "daemon idle CPU", "%", "< 0.5% of a core"),
    ("due", "due query (100 due)", "ms", "<= 2x"),
    ("next_due", "next_due_at", "ms", ""),
    ("service", "STATUS= query", "ms", ""),
    ("similar", "'did you mean' lookup", "ms", ""),
    ("cli", "sequencer --help (best of 3)", "s", ""),
    ("summary", "status summary, in process", "ms", ""),
    ("status", "status (best of 3)", "s", "< 1 s"),
    ("status_rss", "status peak RSS", "MB", ""),
    ("json", "status --json", "s", ""),
    ("json_rss", "status --json peak RSS", "MB", "< 150 MB"),
)


def table(sizes: list[int], results: dict[int, dict[str, float]], kind: str) -> str:
    base = results[sizes[0]]
    head = f"{'':30}" + "".join(f"{f'{n:,}':>18}" for n in sizes) + "  target at 1 M"
    lines = [f"scale of state, {kind}; figure (ratio to {sizes[0]:,})", head]
    for key, label, unit, target in ROWS:
        cells = []
        for n in sizes:
            value = results[n][key]
            ratio = value / base[key] if base[key] else float("nan")
            digits = 2 if unit in ("s", "%") else 1
            cells.append(f"{f'{value:.{digits}f} {unit} ({ratio:.2f}x)':>18}")
        lines.append(f"{label:30}" + "".join(cells) + f"  {target}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="also 1,000,000 enrollments")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured")
    parser.add_argument(
        "--sizes", type=int, nargs="*", help="enrollment counts (default 10000 100000)"
    )
    args = parser.parse_args()
    sizes = args.sizes or [10_000, 100_000] + ([1_000_000] if args.full else [])
    sink = SmtpSink().start()
    imap = Pymap(user="sales", password="bench-pass").start()  # noqa: S106 - loopback only
    os.environ["BENCH_IMAP_PASSWORD"] = imap.password
    results: dict[int, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for n in sizes:
                results[n] = measure(n, args.db, Path(folder), args.idle, sink.port, imap)
                print(f"{n:,}: " + ", ".join(f"{k} {v:.3g}" for k, v in results[n].items()))
    finally:
        sink.stop()
        imap.stop()
    print()
    print(table(sizes, results, args.db))
    if received := len(sink.received):
        print(f"warning: the sink received {received} message(s): the daemon was not idle")


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:
        logs.configure(stream=quiet, level="warning")
        main()
