"""A sequencer installation for end-to-end tests: config file, sequences, database, real
SMTP and IMAP servers on loopback, a frozen clock, and the real daemon driven step by step."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from conftest import ImapServer

from sequencer import contacts, enrolment
from sequencer.clock import FrozenClock
from sequencer.config import Settings, load_settings
from sequencer.devservers import SmtpSink, delivery_report
from sequencer.inbox import WatchTuning, search_uids
from sequencer.sequences import Sequence, load_all
from sequencer.store import db
from sequencer.store.inbox_duty import Duty
from sequencer.store.models import Enrollment
from sequencer.worker import Daemon

SALES = "sales@vendor.test"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

FOLLOW_UP = """mailbox: sales
variables:
  company: "your team"
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes for {{ contact.company }}.
  - wait: 2d
    body: |
      Hi {{ contact.first_name }}, the pricing page I promised.
  - wait: 3d
    body: |
      Hi {{ contact.first_name }}, one case study from a team like yours.
  - wait: 4d
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes.
"""


def write_config(
    root: Path,
    smtp_port: int,
    imap: ImapServer,
    database: str,
    smtp_extra: str = "",
    top: str = "",
    box: str = "pace: {daily_limit: 50, spacing: 0s}",
) -> Path:
    (root / "sequences").mkdir(exist_ok=True)
    (root / "sequences" / "follow-up.yaml").write_text(FOLLOW_UP)
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: {database}
sequences: ./sequences
{top}
mailboxes:
  sales:
    address: {SALES}
    display_name: Sam Seller
    {box}
    smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none{smtp_extra}}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: {imap.user},
           password_env: TEST_IMAP_PASSWORD}}
"""
    )
    return cfg


class World:
    def __init__(
        self,
        settings: Settings,
        seqs: dict[str, Sequence],
        smtp: SmtpSink,
        imap: ImapServer,
        tuning: WatchTuning | None = None,
        duty: Duty | None = None,
    ) -> None:
        self.settings = settings
        self.sequences = seqs
        self.smtp = smtp
        self.imap = imap
        self.clock = FrozenClock(START)
        self.daemon = Daemon(settings, seqs, self.clock, tuning=tuning, duty=duty)
        # The clock time of the tick that sent each message in `smtp.received`, in order.
        self.stamps: list[datetime] = []

    async def enroll(
        self,
        address: str,
        sequence: str = "follow-up",
        promised: dict[int, str] | None = None,
        allow_overlap: bool = False,
        **values: str,
    ) -> None:
        seq = self.sequences[sequence]
        person = contacts.contact(seq, address, {"first_name": "Jo", **values})
        outcome = await enrolment.enroll(
            self.daemon.etiquette,
            seq,
            [person],
            self.clock.now(),
            promised=promised,
            allow_overlap=allow_overlap,
        )
        assert outcome.created, outcome

    async def tick(self, after: timedelta = timedelta(0)) -> int:
        """Let time pass, read the inbox (as IDLE would have), then run the scheduler once."""
        self.clock.advance(after)
        await self.daemon.check_inboxes()
        sent = await self.daemon.run_once()
        missing = len(self.smtp.received) - len(self.stamps)
        self.stamps += [self.clock.now()] * missing
        await self.daemon.check_inboxes()
        return sent

    async def tick_at(self, when: datetime) -> int:
        """`tick` with the clock moved to `when` (never backwards)."""
        assert when >= self.clock.now(), f"{when} is in the past ({self.clock.now()})"
        return await self.tick(when - self.clock.now())

    async def run_until_quiet(self, step: timedelta = timedelta(hours=6), limit: int = 200) -> None:
        for _ in range(limit):
            if not await Enrollment.filter(state="active").exists():
                return
            await self.tick(step)
        raise AssertionError("enrollments still active")

    def sent_to(self, address: str) -> list[EmailMessage]:
        return [
            email.message_from_bytes(r.data, policy=email.policy.default)  # type: ignore[misc]
            for r in self.smtp.received
            if address in r.rcpt_tos
        ]

    def sent_times(self, address: str | None = None) -> list[datetime]:
        """When each message (to `address`, or to anyone) went: the clock at its tick."""
        return [
            at
            for at, r in zip(self.stamps, self.smtp.received, strict=False)
            if address is None or address in r.rcpt_tos
        ]

    async def enrollment(self, address: str, sequence: str | None = None) -> Enrollment:
        query = Enrollment.filter(email=address)
        if sequence is not None:
            query = query.filter(sequence=sequence)
        return await query.order_by("-id").first()  # type: ignore[return-value]


@asynccontextmanager
async def world(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    database: str,
    monkeypatch: Any,
    tuning: WatchTuning | None = None,
    duty: Duty | None = None,
    **config: str,
) -> AsyncIterator[World]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", imap.password)
    cfg = write_config(tmp_path, smtp.port, imap, database, **config)
    settings = load_settings(cfg)
    seqs = load_all(settings.sequences, settings.mailboxes)
    async with db.connected(settings.database):
        w = World(settings, seqs, smtp, imap, tuning, duty)
        await w.daemon.start()
        try:
            yield w
        finally:
            await w.daemon.close()


def reply(
    to: EmailMessage,
    body: str,
    *,
    sender: str | None = None,
    subject: str | None = None,
    **headers: str,
) -> bytes:
    """What a contact's mail client sends back to one of our messages."""
    msg = EmailMessage()
    msg["From"] = sender or str(to["To"])
    msg["To"] = SALES
    msg["Subject"] = subject or f"Re: {str(to['Subject']).removeprefix('Re: ')}"
    msg["Date"] = format_datetime(START)
    msg["Message-ID"] = make_msgid(domain="prospect.test")
    msg["In-Reply-To"] = str(to["Message-ID"])
    msg["References"] = str(to["Message-ID"])
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def dsn(
    original: EmailMessage,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "550 5.1.1 Recipient address rejected: User unknown",
) -> bytes:
    """A Postfix-style delivery status notification for one of our messages."""
    return delivery_report(
        to=SALES,
        rcpt=str(original["To"]),
        original_id=str(original["Message-ID"]),
        original_subject=str(original["Subject"]),
        status=status,
        action=action,
        diagnostic=diagnostic,
        date=format_datetime(START),
    )


async def imap_folder(imap: ImapServer, folder: str, message_id: str | None = None) -> int:
    """Create `folder` if it is missing; the number of messages in it (with that Message-ID)."""
    import aioimaplib

    client = aioimaplib.IMAP4(host="127.0.0.1", port=imap.port, timeout=10)
    await client.wait_hello_from_server()
    await client.login(imap.user, imap.password)
    try:
        await client.create(folder)  # NO [ALREADYEXISTS] when it is there: fine
        await client.select(folder)
        criteria = ("HEADER", "Message-ID", f'"{message_id}"') if message_id else ("ALL",)
        await client.noop()  # pymap refreshes a folder's view on a command
        resp = await client.uid_search(*criteria)
        return len(search_uids(resp.lines))
    finally:
        await client.logout()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sequencer ARGS --config CFG` as a user runs it: another process, the real clock."""
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


async def status(cfg: Path, *args: str) -> Any:
    """`sequencer status ARGS --json`, parsed (from a test's event loop)."""
    res = await asyncio.to_thread(cli, cfg, "status", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)
