"""Many mailboxes: N inboxes idling in one daemon on one Dovecot, against N bare aioimaplib IDLE
connections in one process.

    .venv/bin/python bench/many_mailboxes.py                       # 500 mailboxes, 125 s window
    .venv/bin/python bench/many_mailboxes.py -n 100 --window 10
    .venv/bin/python bench/many_mailboxes.py --profile /tmp/many   # in-process, pyinstrument

One Dovecot on loopback with N users (a passwd-file; `default_process_limit` and
`mail_max_userip_connections` raised, see bench/dovecot.py; login processes in performance
mode and the imap processes started beforehand, LOGIN_EXTRA), each user's INBOX created by one
login before anything is timed. Each side is a subprocess, measured from outside as an operator
would see it:

- daemon: `sequencer run` with N mailboxes (one SMTP sink on loopback, `sent_copy: off`,
  SQLite, no contact enrolled), with the YAML loader's bound of 10,000 values raised (a file
  of 500 mailboxes holds about 12,500; as shipped it is refused, see RUN). Start-up is from
  spawning it to its `daemon.started` line, by which time every inbox has logged in and
  caught up (the database then says `watching` for all N; checked);
- bare: this file with `--bare-child`: N aioimaplib clients that log in, SELECT INBOX and IDLE,
  all at once; start-up is from spawning it to its `ready` line.

Then, after `--settle` seconds: RSS (VmRSS in /proc/PID/status), and the CPU it uses over
`--window` seconds of idling (utime + stime from /proc/PID/stat, as a share of one core).
Targets (issue 14): RSS <= 150 MB, idle CPU < 1% of a core, start-up <= 5 s.

`--profile PREFIX` runs the daemon in this process instead (pyinstrument, its overhead
included) and writes PREFIX-startup.txt and PREFIX-idle.txt: where start-up and the idle
window go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioimaplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# Only the standard library and aioimaplib at the top: the bare child imports nothing else, so
# its start-up and RSS are the library's alone. The rest is imported where the parent needs it.
LOOPBACK = "127.0.0.1"
#: `sequencer run`, with one bound raised: yamlfile.MAX_NODES (10,000 values) refuses a settings
#: file with about 400 mailboxes or more (some 25 values each). Everything else is as shipped.
RUN = (
    "import sequencer.yamlfile as y; y.MAX_NODES = 100_000; from sequencer.cli import main; main()"
)
#: Dovecot serving hundreds of logins at once: login processes in "performance mode" and the
#: imap processes started beforehand, so the server's forks weigh on neither side's start-up.
LOGIN_EXTRA = "  service_count = 0\n  process_min_avail = 2\n"
PASSWORD = "bench-Pass-14"  # noqa: S105 - loopback only
HERE = os.path.abspath(__file__)
TICK = os.sysconf("SC_CLK_TCK")
BUCKET = 5.0  # seconds: the idle window's CPU is also read in slices this long
ONE_STEP = """mailbox: m000
steps:
  - wait: 0s
    subject: "Notes from our call"
    body: |
      Hi {{ contact.first_name }}, here are the notes from our call.
  - wait: 30d
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here.
"""


def users(n: int) -> list[str]:
    return [f"u{i:03d}" for i in range(n)]


def config(root: Path, n: int, smtp: int, imap: int) -> Path:
    (root / "sequences").mkdir()
    (root / "sequences" / "bench.yaml").write_text(ONE_STEP)
    boxes = "".join(
        f"""  m{i:03d}:
    address: {user}@vendor.test
    sent_copy: "off"
    smtp: {{host: 127.0.0.1, port: {smtp}, security: none}}
    imap: {{host: 127.0.0.1, port: {imap}, security: none, username: {user},
           password_env: BENCH_IMAP_PASSWORD}}
"""
        for i, user in enumerate(users(n))
    )
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"database: sqlite://{root}/bench.db\nsequences: ./sequences\nmailboxes:\n{boxes}"
    )
    return cfg


async def idle_client(port: int, user: str) -> aioimaplib.IMAP4:
    imap = aioimaplib.IMAP4(host=LOOPBACK, port=port, timeout=60)
    await imap.wait_hello_from_server()
    resp = await imap.login(user, PASSWORD)
    if resp.result != "OK":
        raise RuntimeError(f"{user}: login refused: {resp.lines}")
    await imap.select("INBOX")
    return imap


async def create_inboxes(port: int, n: int) -> None:
    """One login per user first, so neither side pays for Dovecot creating the Maildirs."""

    async def once(user: str) -> None:
        imap = await idle_client(port, user)
        await imap.logout()

    for chunk in range(0, n, 100):
        await asyncio.gather(*(once(u) for u in users(n)[chunk : chunk + 100]))


async def bare_child(port: int, n: int) -> None:
    """The baseline process: N clients in IDLE, each reading its pushes, until killed."""
    clients = await asyncio.gather(*(idle_client(port, u) for u in users(n)))
    idles = [await c.idle_start(timeout=3600) for c in clients]

    async def listen(imap: aioimaplib.IMAP4) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await imap.wait_server_push(timeout=3600)

    readers = [asyncio.create_task(listen(c)) for c in clients]
    print("ready", flush=True)
    await asyncio.gather(*readers, *idles)


@dataclass
class Side:
    name: str
    startup: float = 0.0
    rss_mb: float = 0.0
    cpu: float = 0.0  # share of one core over the window
    watching: int | None = None
    events: dict[str, int] = field(default_factory=dict)  # log events during the window
    phases: dict[str, float] = field(default_factory=dict)  # seconds from spawn
    buckets: list[float] = field(default_factory=list)  # CPU share in each 5 s of the window
    problems: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def watch(
    command: list[str], ready: str, side: Side, settle: float, window: float, **kwargs: Any
) -> None:
    """Spawn, time start-up to the `ready` line, then RSS and CPU over the idle window."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )
    assert proc.stdout is not None
    up = asyncio.Event()
    counting = False

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").strip()
            try:
                entry = json.loads(text)
            except ValueError:
                entry = {"event": text}
            event = str(entry.get("event", ""))
            if event == "inbox.connected":
                side.phases.setdefault("first inbox.connected", time.perf_counter() - started)
                side.phases["last inbox.connected"] = time.perf_counter() - started
            if event == ready and not up.is_set():
                side.startup = time.perf_counter() - started
                up.set()
            if counting:
                side.events[event] = side.events.get(event, 0) + 1
            if entry.get("level") in ("warning", "error", "critical") and (
                event != "daemon.running_as_root"
            ):
                side.problems.append(text[:300])

    reader = asyncio.create_task(read())
    try:
        try:
            await asyncio.wait_for(up.wait(), 300)
        except TimeoutError:
            side.startup = float("inf")
            side.problems.append(f"no {ready!r} line within 300 s")
            return
        side.watching = after_startup(side)
        await asyncio.sleep(settle)
        side.rss_mb = rss_mb(proc.pid)
        counting = True
        before, at = cpu_seconds(proc.pid), time.perf_counter()
        last, last_at = before, at
        while (left := at + window - time.perf_counter()) > 0:
            await asyncio.sleep(min(BUCKET, left))
            now, now_at = cpu_seconds(proc.pid), time.perf_counter()
            side.buckets.append((now - last) / (now_at - last_at))
            last, last_at = now, now_at
        side.cpu = (cpu_seconds(proc.pid) - before) / (time.perf_counter() - at)
        counting = False
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


_DATABASE: list[str] = []


def after_startup(side: Side) -> int | None:
    """How many inboxes the database says are watched (the daemon only)."""
    if not side.name.startswith("daemon") or not _DATABASE:
        return None
    with sqlite3.connect(f"file:{_DATABASE[0]}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM mailbox_state WHERE inbox = 'watching'").fetchone()
    return int(row[0])


def flat(profiler: Any) -> str:
    """The functions with the most time of their own (what the tree spreads thin)."""
    text = profiler.output_text(flat=True, show_all=True)
    return "\n\nFlat, own time:\n" + "\n".join(text.splitlines()[:60])


async def profile_in_process(cfg: Path, prefix: str, settle: float, window: float) -> Side:
    """The daemon in this process under pyinstrument: start-up, then the idle window."""
    from pyinstrument import Profiler

    from sequencer import yamlfile
    from sequencer.clock import SystemClock
    from sequencer.config import load_settings
    from sequencer.sequences import load_all
    from sequencer.store import db
    from sequencer.worker import Daemon

    side = Side("daemon (in-process, profiled)")
    yamlfile.MAX_NODES = 100_000  # as RUN does
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    options = {"filter_threshold": 0.002}
    profiler = Profiler(async_mode="disabled")
    profiler.start()
    started = time.perf_counter()
    async with (
        db.connected(settings.database),
        Daemon(settings, seqs, SystemClock(), owns_database=True) as daemon,
    ):
        side.startup = time.perf_counter() - started
        profiler.stop()
        text = profiler.output_text(processor_options=options) + flat(profiler)
        await asyncio.to_thread(Path(f"{prefix}-startup.txt").write_text, text)
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(settle)
        side.rss_mb = rss_mb(os.getpid())
        profiler = Profiler(async_mode="disabled")
        profiler.start()
        before, at = cpu_seconds(os.getpid()), time.perf_counter()
        await asyncio.sleep(window)
        side.cpu = (cpu_seconds(os.getpid()) - before) / (time.perf_counter() - at)
        profiler.stop()
        text = profiler.output_text(processor_options=options) + flat(profiler)
        await asyncio.to_thread(Path(f"{prefix}-idle.txt").write_text, text)
        daemon.stop()
        await task
    return side


def table(sides: list[Side], n: int, settle: float, window: float) -> list[str]:
    from reply_stop import machine

    bare = sides[0]
    lines = [
        f"many mailboxes: {n} inboxes on one Dovecot, IDLE; RSS after start-up + {settle:.0f} s, "
        f"CPU over a {window:.0f} s idle window",
        f"machine: {machine()}",
        "",
        "| process | start-up | x bare | RSS | x bare | idle CPU (one core) | x bare | watching |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sides:
        lines.append(
            f"| {s.name} | {s.startup:.2f} s | {s.startup / bare.startup:.2f} "
            f"| {s.rss_mb:.0f} MB | {s.rss_mb / bare.rss_mb:.2f} "
            f"| {100 * s.cpu:.2f}% | {f'{s.cpu / bare.cpu:.1f}' if bare.cpu else '-'} "
            f"| {'-' if s.watching is None else f'{s.watching}/{n}'} |"
        )
    lines.append("")
    for s in sides[1:]:
        if s.phases:
            lines.append(
                f"{s.name} start-up, seconds from spawn: "
                + ", ".join(f"{k} {v:.2f}" for k, v in s.phases.items())
                + f", {s.startup:.2f} daemon.started"
            )
        if len(s.buckets) > 2:
            typical = sorted(s.buckets)[len(s.buckets) // 2]
            burst = sum(max(0.0, b - typical) for b in s.buckets) * BUCKET
            lines.append(
                f"{s.name} idle CPU by {BUCKET:.0f} s slice: median {100 * typical:.2f}%, "
                f"max {100 * max(s.buckets):.2f}%; above the median in all: {burst:.2f} CPU-s "
                f"over the window (the keepalive round's burst, when the window covers it): "
                + " ".join(f"{100 * b:.1f}" for b in s.buckets)
            )
        if s.events:
            busiest = sorted(s.events.items(), key=lambda kv: -kv[1])[:6]
            lines.append(
                f"{s.name} log lines in the window: "
                + ", ".join(f"{event} {count}" for event, count in busiest)
            )
        for problem in s.problems[:5]:
            lines.append(f"  {s.name} said: {problem}")
    for s in sides[1:]:
        met = s.rss_mb <= 150 and s.cpu < 0.01 and s.startup <= 5
        lines.append(
            f"summary: many_mailboxes {n}: {s.name} start-up {s.startup:.2f} s "
            f"({s.startup / bare.startup:.2f}x bare), RSS {s.rss_mb:.0f} MB "
            f"({s.rss_mb / bare.rss_mb:.2f}x), idle CPU {100 * s.cpu:.2f}% of a core "
            f"(bare {100 * bare.cpu:.2f}%); targets <= 5 s, <= 150 MB, < 1%: "
            f"{'met' if met else 'NOT met'}"
        )
    return lines


def _wide(sink: Any, backlog: int) -> Any:
    """The sink's server, listening with room for every mailbox's SMTP login at once, as the
    Dovecot above is set up for every IMAP login. asyncio's default listen backlog is 100:
    with 500 logins arriving together, the kernel drops the handshakes past it, and those
    clients wait out SYN-ACK retransmissions (tens of seconds, past the SMTP timeout)."""
    from aiosmtpd.controller import Controller

    class Wide(Controller):
        def _create_server(self) -> Any:
            return self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, backlog=backlog
            )

    return Wide(sink.handler, hostname=LOOPBACK, port=sink.port, server_hostname="localhost")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--mailboxes", type=int, default=500)
    parser.add_argument(
        "--window",
        type=float,
        default=125.0,
        help="idle CPU window, seconds (the default covers one keepalive round: 2m)",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start-up")
    parser.add_argument("--profile", help="PREFIX: the daemon in-process under pyinstrument")
    parser.add_argument("--bare-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.mailboxes
    if args.bare_child:
        await bare_child(args.bare_child, n)
        return
    from dovecot import Dovecot

    from sequencer.devservers import SmtpSink

    imap_extra = f"service imap {{\n  process_min_avail = {n + 10}\n}}\n"
    server = Dovecot(users(n), PASSWORD, n, extra=imap_extra, login_extra=LOGIN_EXTRA).start()
    sink = SmtpSink()
    sink.controller = _wide(sink, n + 10)
    sink.start()
    os.environ["BENCH_IMAP_PASSWORD"] = PASSWORD
    try:
        await create_inboxes(server.port, n)
        with tempfile.TemporaryDirectory() as folder:
            cfg = config(Path(folder), n, sink.port, server.port)
            _DATABASE[:] = [f"{folder}/bench.db"]
            bare = Side("bare aioimaplib IDLE x N")
            command = [sys.executable, HERE, "-n", str(n), "--bare-child", str(server.port)]
            await watch(command, "ready", bare, args.settle, args.window)
            if args.profile:
                daemon = await profile_in_process(cfg, args.profile, args.settle, args.window)
            else:
                daemon = Side("daemon (`sequencer run`)")
                command = [sys.executable, "-c", RUN, "run", "--config", str(cfg)]
                await watch(command, "daemon.started", daemon, args.settle, args.window, cwd=folder)
    finally:
        sink.stop()
        server.stop()
    print("\n".join(table([bare, daemon], n, args.settle, args.window)))


if __name__ == "__main__":
    if "--bare-child" in sys.argv:
        asyncio.run(main())
    else:
        from sequencer import logs

        with open(os.devnull, "w") as quiet:
            logs.configure(stream=quiet, level="warning")
            asyncio.run(main())
