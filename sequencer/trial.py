"""Trying a mailbox's servers for real, before anyone is enrolled: `check --connect` (every
login, nothing sent) and `sequencer test` (a message from the mailbox to itself, sent,
seen arriving in the watched folder, then deleted).

Owns: the steps of both trials, their timing, and the lines that report them. The
connections are the daemon's own (sender.Sender, inbox.open_imap), TLS and error messages
included, so what passes here is what `sequencer run` will do. The test message carries
`X-Sequencer-Test` (replies.SELF_TEST_HEADER), by which the daemon ignores it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

import aioimaplib

from sequencer.config import Mailbox, Server
from sequencer.errors import InboxError
from sequencer.inbox import open_imap, quietly, response_text, search_uids
from sequencer.replies import SELF_TEST_HEADER
from sequencer.sender import Sender, SendFailed

#: The widest step name of each trial, for the column.
LOGIN_STEPS, TEST_STEPS = 4, 7

#: How often the folder is searched while waiting for the test message.
POLL_EVERY = 0.2

Timer = Callable[[], float]


@dataclass(frozen=True)
class Step:
    """One step of a trial, as a line: `sales  smtp  smtp.x:587 starttls  ok  0.21 s`."""

    mailbox: str
    what: str
    target: str
    seconds: float
    error: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self, width: int = 0, what_width: int = 4) -> str:
        head = f"{self.mailbox:<{width}}  {self.what:<{what_width}}  {self.target}"
        if self.error is not None:
            return f"{head}  failed after {self.seconds:.2f} s: {self.error}"
        return f"{head}  ok  {self.seconds:.2f} s" + (f"  ({self.note})" if self.note else "")


def _target(server: Server) -> str:
    return f"{server.host}:{server.port} {server.security}"


def _reason(exc: Exception, prefix: str) -> str:
    """The error without the "SMTP host:port (mailbox 'x'): " the line already says."""
    text = str(exc) or type(exc).__name__
    head, sep, rest = text.partition("): ")
    return rest if sep and head.startswith(prefix) else text


async def _smtp_login(box: Mailbox, timer: Timer) -> Step:
    sender = Sender(box)
    start = timer()
    try:
        await sender.login()
    except SendFailed as exc:
        return Step(box.name, "smtp", _target(box.smtp), timer() - start, _reason(exc, "SMTP "))
    finally:
        await sender.close()
    return Step(box.name, "smtp", _target(box.smtp), timer() - start)


async def _imap_login(box: Mailbox, timer: Timer) -> tuple[Step, aioimaplib.IMAP4 | None]:
    """Log in and open the watched folder; the connection stays open for the caller."""
    where = f"IMAP {box.imap.host}:{box.imap.port} (mailbox '{box.name}')"
    target = f"{_target(box.imap)}, folder {box.imap.folder}"
    start = timer()
    try:
        imap = await open_imap(box, where)
    except InboxError as exc:
        return Step(box.name, "imap", target, timer() - start, _reason(exc, "IMAP ")), None
    try:
        resp = await imap.select(aioimaplib.quoted(box.imap.folder))
    except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
        await quietly(imap.logout())
        return Step(
            box.name, "imap", target, timer() - start, f"cannot open the folder: {exc}"
        ), None
    if resp.result != "OK":
        await quietly(imap.logout())
        error = f"cannot open folder '{box.imap.folder}': {response_text(resp.lines)}"
        return Step(box.name, "imap", target, timer() - start, error), None
    return Step(box.name, "imap", target, timer() - start), imap


async def try_logins(boxes: list[Mailbox], timer: Timer = time.monotonic) -> AsyncIterator[Step]:
    """Each mailbox's SMTP login, then its IMAP login and folder: nothing is sent."""
    for box in boxes:
        yield await _smtp_login(box, timer)
        step, imap = await _imap_login(box, timer)
        if imap is not None:
            await quietly(imap.logout())
        yield step


def test_message(box: Mailbox, token: str, now: float) -> tuple[str, bytes]:
    """The message `sequencer test` sends from the mailbox to itself: (Message-ID, bytes)."""
    msg = EmailMessage()
    msg["From"] = formataddr((box.display_name, box.address)) if box.display_name else box.address
    msg["To"] = box.address
    msg["Subject"] = f"sequencer test {token}"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = message_id = f"<sequencer-test.{token}@{box.domain}>"
    msg[SELF_TEST_HEADER] = token
    # No auto-responder answers it, and no mail client files it as a conversation.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        "This message was sent by `sequencer test` to check that this mailbox can send, and\n"
        "that its inbox sees what arrives. sequencer deletes it once it has seen it, and\n"
        "ignores it otherwise. You can delete it.\n"
    )
    return message_id, msg.as_bytes(policy=SMTP)


async def round_trip(
    box: Mailbox,
    *,
    wait: float,
    keep: bool = False,
    timer: Timer = time.monotonic,
    wall: Timer = time.time,
) -> AsyncIterator[Step]:
    """`sequencer test`: log in to both, send to itself, wait until the message is in the
    watched folder, delete it (unless `keep`). Stops at the first failed step."""
    smtp = await _smtp_login(box, timer)
    yield smtp
    if not smtp.ok:
        return
    step, imap = await _imap_login(box, timer)
    yield step
    if imap is None:
        return
    try:
        token = uuid.uuid4().hex
        async for result in _send_and_find(box, imap, token, wait, keep, timer, wall):
            yield result
            if not result.ok:
                return
    finally:
        await quietly(imap.logout())


async def _send_and_find(
    box: Mailbox,
    imap: aioimaplib.IMAP4,
    token: str,
    wait: float,
    keep: bool,
    timer: Timer,
    wall: Timer,
) -> AsyncIterator[Step]:
    message_id, data = test_message(box, token, wall())
    sender = Sender(box)

    async def nothing() -> None:
        return None

    start = timer()
    try:
        reply = await sender.send(box.address, data, nothing)
    except SendFailed as exc:
        yield Step(box.name, "sent", message_id, timer() - start, _reason(exc, "SMTP "))
        return
    finally:
        await sender.close()
    yield Step(box.name, "sent", f"{message_id} to {box.address}", timer() - start, note=reply)
    start = timer()
    folder = box.imap.folder
    try:
        uids = await _wait_for(imap, token, wait)
    except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
        yield Step(box.name, "arrived", f"in {folder}", timer() - start, f"search failed: {exc}")
        return
    if not uids:
        yield Step(
            box.name,
            "arrived",
            f"in {folder}",
            timer() - start,
            f"not in {folder} after {wait:g} s: the SMTP server accepted it, but it has "
            f"not reached this folder (a filter moving it, slow delivery, or a server that "
            f"does not deliver to {box.address}); if it turns up later, the daemon ignores it",
        )
        return
    kept = "kept, as --keep asks" if keep else None
    yield Step(box.name, "arrived", f"in {folder}", timer() - start, note=kept)
    if keep:
        return
    start = timer()
    error, note = await _delete(imap, uids)
    yield Step(box.name, "deleted", f"from {folder}", timer() - start, error, note)


async def _wait_for(imap: aioimaplib.IMAP4, token: str, wait: float) -> list[int]:
    """The UIDs of the test message once it is in the selected folder; [] after `wait`
    seconds.
    Short polling, not IDLE: a NOOP makes every server (pymap too) refresh its view."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        await imap.noop()
        resp = await imap.uid_search("HEADER", SELF_TEST_HEADER, aioimaplib.quoted(token))
        uids = search_uids(resp.lines) if resp.result == "OK" else []
        if uids or loop.time() >= deadline:
            return uids
        await asyncio.sleep(min(POLL_EVERY, max(0.0, deadline - loop.time())))


async def _delete(imap: aioimaplib.IMAP4, uids: list[int]) -> tuple[str | None, str | None]:
    """Flag it \\Deleted and expunge only it (UID EXPUNGE, RFC 4315): (error, note). Without
    UIDPLUS it stays flagged: a plain EXPUNGE would also remove whatever else the
    salesperson had flagged."""
    uid_set = ",".join(str(u) for u in uids)
    by_hand = "; delete it by hand"
    try:
        resp = await imap.uid("store", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if resp.result != "OK":
            return f"cannot flag it \\Deleted: {response_text(resp.lines)}{by_hand}", None
        await imap.protocol.capability()  # the login's list may be partial (pymap)
        if not imap.has_capability("UIDPLUS"):
            return (
                None,
                "flagged \\Deleted: the server has no UID EXPUNGE, your mail client removes it",
            )
        resp = await imap.uid("expunge", uid_set)
    except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
        return f"cannot delete it: {exc or type(exc).__name__}{by_hand}", None
    if resp.result != "OK":
        return f"cannot expunge it: {response_text(resp.lines)}{by_hand}", None
    return None, None
