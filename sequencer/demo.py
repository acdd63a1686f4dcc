"""`sequencer demo`: the whole story on loopback servers, in a temporary folder, in seconds.

Starts pymap (IMAP) and an aiosmtpd sink, writes a config for them, enrolls five contacts in
the packaged after-meeting sequence (waits of seconds), runs the real daemon, and plays the
contacts' parts: one stays silent, one replies, one bounces, one is out of office, and one
asks to be removed. Then it shows what was sent and why each contact stopped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sequencer import contacts, enrolment, logs
from sequencer.clock import SystemClock
from sequencer.config import load_settings
from sequencer.devservers import Pymap, SmtpSink, delivery_report, imap_append
from sequencer.errors import SequencerError
from sequencer.etiquette import Etiquette
from sequencer.sequences import load_all
from sequencer.store import db, queries
from sequencer.store.models import Enrollment, SentMessage
from sequencer.worker import Daemon

SALES = "sales@vendor.test"
CAST = [
    ("ada@prospect.test", "Ada", "Acme", "stays silent: gets every step and the break-up"),
    ("ben@prospect.test", "Ben", "Bolt", "replies to the first email"),
    ("cy@nowhere.test", "Cy", "Cargo", "address does not exist: the email bounces"),
    ("dee@prospect.test", "Dee", "Delta", "is out of office: the sequence goes on"),
    ("eve@prospect.test", "Eve", "Echo", "asks to be removed after the second email"),
]


def _reply(to_id: str, sender: str, subject: str, body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SALES
    msg["Subject"] = subject
    msg["Date"] = format_datetime(SystemClock().now())
    msg["Message-ID"] = make_msgid(domain="prospect.test")
    msg["In-Reply-To"] = to_id
    msg["References"] = to_id
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def _bounce(original_id: str, rcpt: str) -> bytes:
    return delivery_report(
        to=SALES,
        rcpt=rcpt,
        original_id=original_id,
        diagnostic=f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
        date=format_datetime(SystemClock().now()),
    )


async def run_demo(out: Console) -> None:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sequencer-demo-"))
    sink = SmtpSink().start()
    imap = Pymap(user="sales", password="demo-pass")  # noqa: S106 - a throwaway local server
    try:
        imap.start()
        out.print(
            f"[bold]sequencer demo[/]: SMTP sink on 127.0.0.1:{sink.port}, "
            f"pymap IMAP on 127.0.0.1:{imap.port}, working in {tmp}"
        )
        await _play(out, tmp, sink, imap)
    finally:
        imap.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out.print(f"\ndone in {time.monotonic() - started:.1f} s; the temporary folder is removed.")


async def _play(out: Console, tmp: Path, sink: SmtpSink, imap: Pymap) -> None:
    seq_dir = tmp / "sequences"
    seq_dir.mkdir()
    source = resources.files("sequencer").joinpath("demo_data/after-meeting.yaml")
    (seq_dir / "after-meeting.yaml").write_text(source.read_text(encoding="utf-8"))
    (tmp / "sequencer.yaml").write_text(
        f"""database: sqlite://demo.db
sequences: ./sequences
timezone: Europe/London
# The demo plays days in seconds, so the etiquette's real-time rules are off here: by default
# two emails to one address are 2 days apart, and one mailbox waits 60-180 s between sends.
min_gap: 0s
mailboxes:
  sales:
    address: {SALES}
    display_name: Sam Seller
    pace: {{daily_limit: 1000, spacing: 0s}}
    smtp: {{host: 127.0.0.1, port: {sink.port}, security: none}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: sales,
           password_env: SEQUENCER_DEMO_IMAP_PASSWORD}}
"""
    )
    os.environ["SEQUENCER_DEMO_IMAP_PASSWORD"] = imap.password
    settings = load_settings(tmp / "sequencer.yaml")
    seqs = load_all(settings.sequences, settings.mailboxes)
    seq = seqs["after-meeting"]
    log_path = tmp / "daemon.log"
    clock = SystemClock()
    with log_path.open("w") as log_file:
        logs.configure(log_file, secrets=settings.secrets())
        async with db.connected(settings.database):
            people = [
                contacts.contact(seq, e, {"first_name": n, "company": c}) for e, n, c, _ in CAST
            ]
            await enrolment.enroll(Etiquette(settings), seq, people, clock.now())
            out.print(
                "\n[bold]Enrolled[/] five contacts in 'after-meeting' "
                "(4 steps, 2 s apart instead of days):"
            )
            for email, _, _, part in CAST:
                out.print(f"  {email:<20} {part}")
            out.print()
            daemon = Daemon(settings, seqs, clock, max_sleep=0.3)
            await daemon.start()
            runner = asyncio.create_task(daemon.run())
            try:
                await _act_the_contacts(out, sink, imap)
            finally:
                daemon.stop()
                await runner
            await _report(out, len(seq.steps))
        lines = sum(1 for _ in log_path.open())
    out.print(f"\nThe daemon wrote {lines} JSON log lines (what `sequencer run` prints on stdout).")


async def _act_the_contacts(out: Console, sink: SmtpSink, imap: Pymap) -> None:
    """Watch the sink and answer as each contact would."""
    done: set[tuple[str, int]] = set()
    t0 = time.monotonic()
    seen = 0
    deadline = t0 + 45
    while time.monotonic() < deadline:
        while seen < len(sink.received):
            got = sink.received[seen]
            seen += 1
            rcpt = got.rcpt_tos[0]
            subject = _header(got.data, "Subject")
            out.print(f"[green]→[/] {time.monotonic() - t0:4.1f}s  sent to {rcpt:<20} {subject}")
            mid = _header(got.data, "Message-ID")
            step = (await SentMessage.get(message_id=mid)).step
            await _respond(out, imap, rcpt, step, mid, subject, done)
        if not await Enrollment.filter(state="active").exists():
            return
        await asyncio.sleep(0.1)
    raise SequencerError("the demo did not finish within 45 s (see the log lines above)")


async def _respond(
    out: Console,
    imap: Pymap,
    rcpt: str,
    step: int,
    mid: str,
    subject: str,
    done: set[tuple[str, int]],
) -> None:
    script = {
        ("ben@prospect.test", 1): (
            "Ben <ben@prospect.test>",
            "Sounds good, let's talk Thursday.",
            'replies: "Sounds good, let\'s talk Thursday."',
            {},
        ),
        ("dee@prospect.test", 1): (
            "Dee <dee@prospect.test>",
            "I am out of the office with limited access to email. For anything urgent, "
            "please call the front desk.",
            "sends an out-of-office (no return date: nothing to wait for)",
            {"Auto_Submitted": "auto-replied"},
        ),
        ("eve@prospect.test", 2): (
            "Eve <eve@prospect.test>",
            "Please remove me from your list.",
            "asks to be removed",
            {},
        ),
    }
    key = (rcpt, step)
    if key in done:
        return
    done.add(key)
    if rcpt == "cy@nowhere.test":
        raw = _bounce(mid, rcpt)
        what = "bounces (550 5.1.1 user unknown)"
    elif key in script:
        sender, body, what, headers = script[key]
        subj = ("Automatic reply: " if headers else "Re: ") + subject.removeprefix("Re: ")
        raw = _reply(mid, sender, subj, body, **headers)
    else:
        return
    await imap_append(imap.port, imap.user, imap.password, raw)
    out.print(f"[cyan]←[/]        {rcpt:<20} {what}")


def _header(data: bytes, name: str) -> str:
    from email import message_from_bytes
    from email.policy import default

    value = message_from_bytes(data, policy=default).get(name, "")
    return str(value)


async def _report(out: Console, steps: int) -> None:
    table = Table(title="\nWhere each contact ended")
    for col in ("contact", "state", "sent", "why"):
        table.add_column(col)
    for e in await Enrollment.all().order_by("id"):
        table.add_row(e.email, e.state, f"{e.steps_sent}/{steps}", e.reason or "")
    out.print(table)
    sent = await SentMessage.filter(enrollment__email="ada@prospect.test").order_by("step")
    out.print("\nAda's thread, as her mail client shows it (one conversation):")
    for s in sent:
        out.print(f"  step {s.step}: {s.message_id}  {s.subject}")
    out.print("\nWhat needs you (`sequencer agenda`): what the replies asked for")
    for item in await queries.agenda(None):
        out.print(f"  {item.kind:<11} {item.email:<20} {item.excerpt!r}")
