"""The IMAP edge (aioimaplib): one watcher per mailbox.

Owns: connecting and logging in, remembering where we got to (UIDVALIDITY + last UID, so mail
that arrived while we were down is caught up on start), IDLE (RFC 2177) re-issued before the
29-minute limit, polling where IDLE is missing, and reconnecting with backoff. The mailbox is
the salesperson's: we only ever FETCH with BODY.PEEK, never set flags, move or delete.
What a message means is decided elsewhere: the watcher hands raw bytes to `handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioimaplib
import structlog

from sequencer.config import Mailbox
from sequencer.errors import SequencerError
from sequencer.store import queries

log = structlog.get_logger("sequencer.inbox")

Handler = Callable[[int, int, bytes], Awaitable[None]]

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UIDNEXT = re.compile(rb"UIDNEXT (\d+)")
_SEARCH_RESULT = re.compile(rb"^\d+( \d+)*$")


class InboxError(SequencerError):
    """The inbox cannot be watched (login refused, folder missing, server unreachable)."""


@dataclass
class WatchTuning:
    idle_timeout: float = 25 * 60  # re-issue IDLE well before the server's 29-minute limit
    poll_interval: float = 60.0  # without IDLE
    reconnect_min: float = 1.0
    reconnect_max: float = 300.0
    timeout: float = 30.0


class InboxWatcher:
    def __init__(self, mailbox: Mailbox, handle: Handler, tuning: WatchTuning | None = None):
        self.mailbox = mailbox
        self.handle = handle
        self.tuning = tuning or WatchTuning()
        self.imap: aioimaplib.IMAP4 | None = None
        self.uidvalidity = 0
        self.last_uid = 0
        self.connected = asyncio.Event()

    def _where(self) -> str:
        i = self.mailbox.imap
        return f"IMAP {i.host}:{i.port} (mailbox '{self.mailbox.name}')"

    async def connect(self) -> None:
        """Log in, select the folder and load or set the cursor. Raises InboxError."""
        i = self.mailbox.imap
        if i.security == "starttls":
            raise InboxError(
                f"{self._where()}: IMAP STARTTLS is not supported; use security: tls "
                "(usually port 993)"
            )
        password = i.password(f"mailboxes.{self.mailbox.name}.imap") or ""
        try:
            if i.security == "tls":
                imap: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                    host=i.host,
                    port=i.port,
                    timeout=i.timeout,
                    ssl_context=ssl.create_default_context(),
                )
            else:
                imap = aioimaplib.IMAP4(host=i.host, port=i.port, timeout=i.timeout)
            await imap.wait_hello_from_server()
            resp = await imap.login(i.username, password)
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise InboxError(
                f"{self._where()}: cannot connect: {exc or type(exc).__name__}"
            ) from None
        if resp.result != "OK":
            await _quietly(imap.logout())
            raise InboxError(
                f"{self._where()}: login refused for user '{i.username}': "
                f"{_text(resp.lines)} (check the username and the password source)"
            )
        resp = await imap.select(i.folder)
        if resp.result != "OK":
            await _quietly(imap.logout())
            raise InboxError(
                f"{self._where()}: cannot open folder '{i.folder}': {_text(resp.lines)}"
            )
        blob = b" ".join(bytes(x) for x in resp.lines)
        m = _UIDVALIDITY.search(blob)
        uidvalidity = int(m.group(1)) if m else 0
        m = _UIDNEXT.search(blob)
        uidnext = int(m.group(1)) if m else None
        self.imap = imap
        cursor = await queries.get_cursor(self.mailbox.name)
        if cursor is not None and cursor.uidvalidity == uidvalidity:
            self.last_uid = cursor.last_uid
        else:
            if cursor is not None:
                log.warning(
                    "inbox.uidvalidity_changed",
                    mailbox=self.mailbox.name,
                    old=cursor.uidvalidity,
                    new=uidvalidity,
                )
            # First start: what is already there predates us. Later mail is ours to read.
            self.last_uid = (uidnext - 1) if uidnext else await self._max_uid()
            await queries.set_cursor(self.mailbox.name, uidvalidity, self.last_uid)
        self.uidvalidity = uidvalidity
        self.connected.set()
        log.info(
            "inbox.connected",
            mailbox=self.mailbox.name,
            uidvalidity=uidvalidity,
            last_uid=self.last_uid,
            idle=imap.has_capability("IDLE"),
        )

    async def _max_uid(self) -> int:
        assert self.imap is not None
        resp = await self.imap.uid_search("ALL")
        uids = _uids(resp.lines)
        return max(uids) if uids else 0

    async def catch_up(self) -> int:
        """Handle every message after the cursor; search again until nothing new turns up
        (some servers announce new mail only in responses to other commands)."""
        assert self.imap is not None
        handled = 0
        # Some servers (pymap) refresh a selected folder's view only on a command such as NOOP.
        await self.imap.noop()
        while True:
            resp = await self.imap.uid_search(f"UID {self.last_uid + 1}:*")
            if resp.result != "OK":
                raise InboxError(f"{self._where()}: search failed: {_text(resp.lines)}")
            new = sorted(u for u in _uids(resp.lines) if u > self.last_uid)
            if not new:
                return handled
            for uid in new:
                raw = await self._fetch(uid)
                if raw is not None:
                    await self.handle(self.uidvalidity, uid, raw)
                self.last_uid = uid
                await queries.set_cursor(self.mailbox.name, self.uidvalidity, uid)
                handled += 1

    async def _fetch(self, uid: int) -> bytes | None:
        assert self.imap is not None
        resp = await self.imap.uid("fetch", str(uid), "(BODY.PEEK[])")
        if resp.result != "OK":
            raise InboxError(f"{self._where()}: fetch of UID {uid} failed: {_text(resp.lines)}")
        for line in resp.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None  # expunged meanwhile

    async def wait_for_mail(self, stop: asyncio.Event) -> None:
        """Block until the server says something changed, the IDLE timer runs out, or stop."""
        assert self.imap is not None
        imap = self.imap
        if not imap.has_capability("IDLE"):
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stopper}, timeout=self.tuning.poll_interval)
            stopper.cancel()
            if not stop.is_set():
                await imap.noop()
            return
        idle = await imap.idle_start(timeout=self.tuning.idle_timeout)
        push = asyncio.ensure_future(imap.wait_server_push(timeout=self.tuning.idle_timeout + 5))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({push, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (push, stopper):
                task.cancel()
            await asyncio.gather(push, stopper, return_exceptions=True)
            if imap.has_pending_idle():
                imap.idle_done()
            await asyncio.wait_for(idle, timeout=self.tuning.timeout)

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until `stop` is set, reconnecting with backoff on any failure."""
        delay = self.tuning.reconnect_min
        while not stop.is_set():
            try:
                if self.imap is None:
                    await self.connect()
                delay = self.tuning.reconnect_min
                await self.catch_up()
                while not stop.is_set():
                    await self.wait_for_mail(stop)
                    if not stop.is_set():
                        await self.catch_up()
            except asyncio.CancelledError:
                raise
            except (InboxError, OSError, TimeoutError, aioimaplib.AioImapException) as exc:
                await self._drop()
                log.warning(
                    "inbox.reconnecting",
                    mailbox=self.mailbox.name,
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(delay, 1),
                )
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({stopper}, timeout=delay * random.uniform(0.8, 1.2))
                stopper.cancel()
                delay = min(delay * 2, self.tuning.reconnect_max)
        await self.close()

    async def _drop(self) -> None:
        imap, self.imap = self.imap, None
        self.connected.clear()
        if imap is not None:
            await _quietly(imap.logout(), seconds=1)

    async def close(self) -> None:
        imap, self.imap = self.imap, None
        if imap is not None:
            await _quietly(imap.logout(), seconds=3)
            log.info("inbox.logged_out", mailbox=self.mailbox.name)


def _uids(lines: list[Any]) -> list[int]:
    out: list[int] = []
    for line in lines:
        # Only the SEARCH result line: untagged replies such as "3 EXISTS" also start with a
        # number, and reading them as UIDs would fetch the wrong messages.
        if isinstance(line, (bytes, bytearray)) and _SEARCH_RESULT.match(bytes(line)):
            out.extend(int(x) for x in bytes(line).split())
    return out


def _text(lines: list[Any]) -> str:
    return " ".join(
        bytes(x).decode(errors="replace") for x in lines if isinstance(x, (bytes, bytearray))
    )[:300]


async def _quietly(aw: Awaitable[Any], seconds: float = 3) -> None:
    """Best effort (logging out of a broken connection): errors are expected and ignored."""
    with contextlib.suppress(OSError, TimeoutError, aioimaplib.AioImapException):
        await asyncio.wait_for(aw, timeout=seconds)
