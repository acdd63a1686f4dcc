"""Enrolment: `sequencer enroll SEQUENCE --csv FILE` of N contacts, against a plain executemany.

    .venv/bin/python bench/enrolment.py                  # 100,000 contacts, SQLite
    .venv/bin/python bench/enrolment.py --db postgres    # on 127.0.0.1:5432 (its own database)
    .venv/bin/python bench/enrolment.py --full           # 100,000 and 1,000,000
    .venv/bin/python bench/enrolment.py -n 20000         # any size

Each size runs --rounds times (3; once at 1,000,000) and the best time of each side counts:
the machine is shared, and the best run is the one least disturbed.

The enroll side is what a user runs: the `sequencer` command in its own process, reading the
CSV (validation, planning, suppression and contacted-before look-ups included) into a fresh
database. The baseline is a plain `executemany` of the same rows (read back from the enroll
run's table) into the same, empty table of a second fresh database, in one transaction, with
the rows built before its clock starts: what the bare driver (sqlite3, asyncpg) does with no
CSV, no checks and no plan. The figure that matters is the ratio, measured in the same run;
issue 14's target is >= 0.25, and a 1,000,000-row CSV enrolled in flat memory (the peak RSS of
the enroll process should not grow with N).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sequencer.store import db  # noqa: E402

SEQUENCE = """mailbox: sales
window: {days: [mon, tue, wed, thu], hours: "09:00-11:30"}
variables:
  company: "your team"
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes from our call with {{ contact.company }}.
  - wait: 3 business days
    body: |
      Hi {{ contact.first_name }}, one more thing that makes the next step worth more.
  - wait: 1w
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes.
"""
#: Where the contacts are: a sales team's real spread of zones and holiday calendars.
PLACES = [
    ("America/New_York", "US"),
    ("America/Chicago", "US"),
    ("America/Los_Angeles", "US"),
    ("Europe/London", "GB"),
    ("Europe/Berlin", "DE"),
    ("Europe/Paris", "FR"),
    ("Asia/Tokyo", "JP"),
    ("Australia/Sydney", "AU"),
    ("", ""),  # the settings' defaults
]
PG_ADMIN = os.environ.get("SEQUENCER_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
SEQUENCER = Path(sys.executable).with_name("sequencer")


def _write_csv(path: Path, n: int) -> None:
    rng = random.Random(14)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,company,timezone,country\n")
        for i in range(n):
            zone, country = PLACES[rng.randrange(len(PLACES))]
            out.write(
                f"person{i}@company{i % 997}.test,Name{i},Company {i % 997},{zone},{country}\n"
            )


def _config(root: Path, database: str) -> Path:
    (root / "sequences").mkdir(exist_ok=True)
    (root / "sequences" / "bench.yaml").write_text(SEQUENCE)
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: {database}
sequences: ./sequences
min_gap: 2d
mailboxes:
  sales:
    address: sales@vendor.test
    display_name: Sam Seller
    smtp: {{host: 127.0.0.1, port: 2525, security: none}}
    imap: {{host: 127.0.0.1, port: 1143, security: none, username: sales,
           password_env: BENCH_IMAP_PASSWORD}}
"""
    )
    return cfg


def peak_kib(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> int:
    """A child's peak RSS (KiB), its own high-water mark (VmHWM in /proc) read until it
    exits: wait4's ru_maxrss would also count the memory of this process, which the child
    starts as a copy of before it execs."""
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            lines = status.read_text().splitlines()
        except OSError:
            break
        for line in lines:
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        time.sleep(0.02)
    proc.wait()
    return peak


def _enroll(cfg: Path, csv_file: Path) -> tuple[float, int, str]:
    """Seconds and peak RSS (KiB) of `sequencer enroll bench --csv FILE` in its own process."""
    out_file, err_file = csv_file.with_suffix(".out"), csv_file.with_suffix(".err")
    with out_file.open("w") as out, err_file.open("w") as errs:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(SEQUENCER), "enroll", "bench", "--csv", str(csv_file), "--config", str(cfg)],
            stdout=out,
            stderr=errs,
        )
        peak = peak_kib(proc)
        elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"enroll failed ({proc.returncode}):\n{out_file.read_text()}\n{err_file.read_text()}"
        )
    return elapsed, peak, out_file.read_text().strip()


async def _schema(url: str) -> None:
    async with db.connected(url):
        pass


def _columns_sqlite(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[1] for r in conn.execute("PRAGMA table_info(enrollment)") if r[1] != "id"]


def _baseline_sqlite(source: Path, target: Path) -> tuple[float, int]:
    columns = _columns_sqlite(source)
    names = ", ".join(f'"{c}"' for c in columns)
    with sqlite3.connect(source) as conn:
        rows = conn.execute(f"SELECT {names} FROM enrollment ORDER BY id").fetchall()  # noqa: S608
    sql = f"INSERT INTO enrollment ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")  # as tortoise's client opens it
    try:
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - started, len(rows)
    finally:
        conn.close()


async def _baseline_postgres(source: str, target: str) -> tuple[float, int]:
    conn = await asyncpg.connect(source)
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'enrollment' AND column_name <> 'id' ORDER BY ordinal_position"
            )
        ]
        names = ", ".join(f'"{c}"' for c in columns)
        rows: Sequence[Any] = await conn.fetch(f"SELECT {names} FROM enrollment ORDER BY id")  # noqa: S608
        rows = [tuple(r) for r in rows]
    finally:
        await conn.close()
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    sql = f"INSERT INTO enrollment ({names}) VALUES ({marks})"  # noqa: S608
    conn = await asyncpg.connect(target)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(sql, rows)
        return time.perf_counter() - started, len(rows)
    finally:
        await conn.close()


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


async def _one(n: int, kind: str, folder: Path) -> tuple[float, float, int, str]:
    """(enroll seconds, baseline seconds, enroll peak RSS KiB, enroll's summary line)."""
    csv_file = folder / f"contacts-{n}.csv"
    _write_csv(csv_file, n)
    names = [f"bench_enrol_{os.getpid()}_{n}_a", f"bench_enrol_{os.getpid()}_{n}_b"]
    try:
        if kind == "postgres":
            enrolled, bare = [await _pg_create(name) for name in names]
        else:
            enrolled = f"sqlite://{folder}/enrolled-{n}.db"
            bare = f"sqlite://{folder}/bare-{n}.db"
        await _schema(enrolled)
        await _schema(bare)
        cfg = _config(folder, enrolled)
        seconds, rss, summary = _enroll(cfg, csv_file)
        if kind == "postgres":
            base, rows = await _baseline_postgres(enrolled, bare)
        else:
            base, rows = _baseline_sqlite(
                Path(f"{folder}/enrolled-{n}.db"), Path(f"{folder}/bare-{n}.db")
            )
        if rows != n:
            raise SystemExit(f"enroll wrote {rows} rows for {n} contacts: {summary}")
        return seconds, base, rss, summary
    finally:
        if kind == "postgres":
            for name in names:
                await _pg_drop(name)
        csv_file.unlink(missing_ok=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--contacts", type=int, action="append")
    parser.add_argument("--full", action="store_true", help="also 1,000,000 contacts")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each side; the best time of each counts"
    )
    args = parser.parse_args()
    sizes = args.contacts or ([100_000, 1_000_000] if args.full else [100_000])
    print(f"enroll --csv against a plain executemany of the same rows, {args.db}")
    print(f"{'rows':>9}  {'':22}{'seconds':>9}{'rows/s':>9}{'ratio':>7}{'peak RSS':>10}")
    for n in sizes:
        runs = []
        for _ in range(args.rounds if n <= 100_000 else 1):
            with tempfile.TemporaryDirectory() as folder:
                runs.append(await _one(n, args.db, Path(folder)))
        seconds = min(r[0] for r in runs)
        base = min(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        print(f"{n:>9}  {'executemany (baseline)':22}{base:>9.2f}{n / base:>9.0f}{1:>7.2f}{'':>10}")
        print(
            f"{n:>9}  {'sequencer enroll --csv':22}{seconds:>9.2f}{n / seconds:>9.0f}"
            f"{base / seconds:>7.2f}{rss / 1024:>8.0f} MB"
        )


if __name__ == "__main__":
    asyncio.run(main())
