"""The IMAP edge (aioimaplib): one watcher per mailbox.

Owns: connecting and logging in, the cursor (UIDVALIDITY + last UID, so mail that arrived
while we were down is read at start), IDLE (RFC 2177) re-issued every `imap.keepalive` (a NOOP
poll where IDLE is missing), noticing a lost connection at once (aioimaplib reports it only
through `conn_lost_cb`), reconnecting with backoff, and a last look at the inbox on demand
(`sync`, before each batch a mailbox sends). The watcher records its state and when it last
caught up, because a mailbox sends only while its inbox is watched.

A message whose handling raises never stops the watcher: a transient database error retries
that same message with backoff without moving the cursor; anything else is handed to
`on_failure` (which records it and holds whoever it may concern) and the watcher moves on.

The mailbox is the salesperson's: we only FETCH with BODY.PEEK, never set flags, move or
delete. What a message means is decided elsewhere: the watcher hands raw bytes to `handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aioimaplib
import structlog

from sequencer import tls
from sequencer.clock import Clock, SystemClock
from sequencer.config import Mailbox
from sequencer.errors import ConfigError, InboxError
from sequencer.oauth import TokenError, TokenRefused, TokenRevoked, TokenSource
from sequencer.states import Inbox
from sequencer.store import db, queries

log = structlog.get_logger("sequencer.inbox")

#: Who watches: recorded with the inbox state, so that several daemons on one database can
#: later share one watcher per mailbox (and `status` can say which host runs it).
WATCHER_ID = f"{socket.gethostname()}:{os.getpid()}"

#: Handles one message: (uidvalidity, uid, raw bytes).
Handler = Callable[[int, int, bytes], Awaitable[None]]
#: Records a message whose handling raised: (uidvalidity, uid, raw, the exception).
FailureHandler = Callable[[int, int, bytes, Exception], Awaitable[None]]
#: Whether a message with this Message-ID was handled already (a UIDVALIDITY re-read).
SeenCheck = Callable[[bytes], Awaitable[bool]]

T = TypeVar("T")

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UIDNEXT = re.compile(rb"UIDNEXT (\d+)")
_SEARCH_RESULT = re.compile(rb"^\d+( \d+)*$")
_AUTH_FAILED = re.compile(rb"AUTHENTICATIONFAILED|AUTHORIZATIONFAILED|invalid credentials", re.I)


class AuthFailed(InboxError):
    """The server refused the login: a person must fix the credentials."""


class GrantRevoked(AuthFailed):
    """The mailbox's OAuth2 grant is gone: `sequencer auth MAILBOX`, nothing to retry."""


@dataclass
class WatchTuning:
    reconnect_min: float = 1.0
    reconnect_max: float = 300.0
    #: A refused login: first retry after this long, doubling up to auth_retry_max (a few
    #: attempts an hour never trips an account lockout; a loop would).
    auth_retry_min: float = 60.0
    auth_retry_max: float = 1800.0
    #: A revoked OAuth2 grant: look this often for a new refresh token on disk (a file read;
    #: nothing is sent to any server until one is there).
    revoked_poll: float = 10.0
    #: A transient database error while handling a message: first retry after this long.
    retry_min: float = 0.5
    retry_max: float = 30.0
    #: How long the last look before a batch may take before the batch is held instead.
    sync_timeout: float = 20.0
    #: After a UIDVALIDITY change, re-read at most this many of the newest messages.
    reread_max: int = 500
    reread_days: int = 7
    #: Several daemons on one PostgreSQL: how often each looks at who watches which inbox
    #: (store.inbox_duty); a dead daemon's inboxes are taken over within about this long.
    duty_every: float = 5.0


class InboxWatcher:
    def __init__(
        self,
        mailbox: Mailbox,
        handle: Handler,
        clock: Clock | None = None,
        *,
        on_failure: FailureHandler | None = None,
        seen: SeenCheck | None = None,
        tuning: WatchTuning | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self.mailbox = mailbox
        if tokens is None and mailbox.imap.auth == "oauth2":
            tokens = TokenSource(mailbox, SystemClock())
        self.tokens = tokens
        self.handle = handle
        self.on_failure = on_failure
        self.seen = seen
        self.clock = clock or SystemClock()  # liveness is wall-clock time
        self.tuning = tuning or WatchTuning()
        self.imap: aioimaplib.IMAP4 | None = None
        self.uidvalidity = 0
        self.last_uid = 0
        self.state = Inbox.DOWN
        self.caught_up_at: datetime | None = None
        self.error: str | None = None
        #: Whether this daemon is the mailbox's watcher (store.inbox_duty): only the watcher
        #: IDLEs and records the inbox's state and catch-ups for every daemon to see; another
        #: daemon's watcher object only takes the last look before its batches.
        self.on_duty = True
        self._recorded: tuple[Inbox, str | None] | None = None  # what the database holds
        self._look_retry_at = 0.0  # off duty: no login before then (a refused one backs off)
        self._look_delay = 0.0
        self._lock = asyncio.Lock()  # one IMAP command sequence at a time
        self._interrupt = asyncio.Event()  # wakes IDLE: a sync wants the connection
        self._lost = asyncio.Event()  # the connection is gone
        self._syncs = 0  # syncs waiting for the connection

    @property
    def name(self) -> str:
        return self.mailbox.name

    @property
    def keepalive(self) -> float:
        return self.mailbox.imap.keepalive_seconds

    def watched(self) -> bool:
        """Connected, logged in, and caught up within twice the keepalive: only then may the
        mailbox send (a reply could otherwise sit unseen). Measured on the watcher's own
        clock, the wall clock: this is about a live connection, not about the schedule."""
        fresh = timedelta(seconds=2 * self.keepalive)
        return (
            self.state is Inbox.WATCHING
            and self.caught_up_at is not None
            and self.clock.now() - self.caught_up_at <= fresh
        )

    def _where(self) -> str:
        i = self.mailbox.imap
        return f"IMAP {i.host}:{i.port} (mailbox '{self.name}')"

    async def _set_state(self, state: Inbox, error: str | None = None) -> None:
        self.state, self.error = state, error
        if self.on_duty and self._recorded != (state, error):
            await db.retrying(
                lambda: queries.set_inbox(self.name, state, self.clock.now(), error, WATCHER_ID),
                what="inbox state",
            )
            self._recorded = (state, error)

    def take_duty(self) -> None:
        """This daemon watches the mailbox from now on: its next state is recorded, with
        this daemon's name, even where it is the state the last look left."""
        self.on_duty, self._recorded = True, None

    def stand_down(self) -> None:
        """Another daemon watches the mailbox: record nothing more (`run` is being ended)."""
        self.on_duty = False

    async def mark_down(self, exc: BaseException) -> None:
        """Not watching (start-up failed, or the watcher died): the mailbox is held."""
        auth = isinstance(exc, AuthFailed)
        await self._set_state(Inbox.AUTH_FAILED if auth else Inbox.DOWN, str(exc) or repr(exc))

    # --- connection ----------------------------------------------------------------------
    def _connection_lost(self, exc: Exception | None) -> None:
        """aioimaplib's callback: a server killed or restarted is noticed here, at once."""
        self._lost.set()
        self._interrupt.set()

    async def connect(self) -> None:
        """Log in, select the folder and load the cursor. Raises InboxError (AuthFailed when
        the login itself is refused)."""
        i = self.mailbox.imap
        if self.state is not Inbox.AUTH_FAILED:  # stays so until a login succeeds
            await self._set_state(Inbox.CONNECTING, self.error)
        self._lost = asyncio.Event()
        imap = await open_imap(self.mailbox, self._where(), self._connection_lost, self.tokens)
        resp = await imap.select(i.folder)
        if resp.result != "OK":
            await quietly(imap.logout())
            raise InboxError(
                f"{self._where()}: cannot open folder '{i.folder}': {response_text(resp.lines)}"
            )
        blob = b" ".join(bytes(x) for x in resp.lines)
        m = _UIDVALIDITY.search(blob)
        uidvalidity = int(m.group(1)) if m else 0
        m = _UIDNEXT.search(blob)
        uidnext = int(m.group(1)) if m else None
        self.imap = imap
        cursor = await db.retrying(lambda: queries.get_cursor(self.name), what="inbox cursor")
        self.uidvalidity = uidvalidity
        if cursor is not None and cursor.uidvalidity == uidvalidity:
            self.last_uid = cursor.last_uid
        elif cursor is not None:
            log.warning(
                "inbox.uidvalidity_changed",
                mailbox=self.name,
                old=cursor.uidvalidity,
                new=uidvalidity,
            )
            await self._reread()
        else:
            # First start: what is already there predates us. Later mail is ours to read.
            self.last_uid = (uidnext - 1) if uidnext else await self._max_uid()
            await self._save_cursor()
        log.info(
            "inbox.connected",
            mailbox=self.name,
            uidvalidity=uidvalidity,
            last_uid=self.last_uid,
            idle=imap.has_capability("IDLE"),
        )

    async def _save_cursor(self) -> None:
        await db.retrying(
            lambda: queries.set_cursor(self.name, self.uidvalidity, self.last_uid),
            what="inbox cursor",
        )

    async def _reread(self) -> None:
        """The folder's UIDs were renumbered: every UID we knew means nothing now. Read the
        recent messages again (bounded), skipping those already handled (by Message-ID), so a
        reply that arrived across the change is still seen."""
        assert self.imap is not None
        since = (self.caught_up_at or self.clock.now()) - timedelta(days=self.tuning.reread_days)
        resp = await self._guard(self.imap.uid_search("SINCE", _imap_date(since)))
        uids = sorted(search_uids(resp.lines))[-self.tuning.reread_max :]
        self.last_uid = 0
        for uid in uids:
            raw = await self._fetch(uid)
            if raw is not None and not (self.seen is not None and await self.seen(raw)):
                await self._handle_one(uid, raw)
            self.last_uid = uid
        self.last_uid = max([self.last_uid, *uids]) if uids else await self._max_uid()
        await self._save_cursor()
        log.info("inbox.reread", mailbox=self.name, messages=len(uids))

    async def _max_uid(self) -> int:
        assert self.imap is not None
        resp = await self._guard(self.imap.uid_search("ALL"))
        uids = search_uids(resp.lines)
        return max(uids) if uids else 0

    async def _guard(self, aw: Coroutine[Any, Any, T]) -> T:
        """Run one IMAP command, but give up the moment the connection is lost (aioimaplib
        would otherwise wait out the command's timeout)."""
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise InboxError(f"{self._where()}: connection lost")
        return task.result()

    # --- catching up -----------------------------------------------------------------------
    async def catch_up(self) -> int:
        """Handle every message after the cursor; search again until nothing new turns up
        (some servers announce new mail only in responses to other commands)."""
        if self.imap is None or self._lost.is_set():
            raise InboxError(f"{self._where()}: not connected")
        handled = 0
        if not self.on_duty:  # the watcher may have handled more since our last look
            cursor = await db.retrying(lambda: queries.get_cursor(self.name), what="inbox cursor")
            if cursor is not None and cursor.uidvalidity == self.uidvalidity:
                self.last_uid = max(self.last_uid, cursor.last_uid)
        # Some servers (pymap) refresh a selected folder's view only on a command such as NOOP.
        await self._guard(self.imap.noop())
        while True:
            resp = await self._guard(self.imap.uid_search(f"UID {self.last_uid + 1}:*"))
            if resp.result != "OK":
                raise InboxError(f"{self._where()}: search failed: {response_text(resp.lines)}")
            new = sorted(u for u in search_uids(resp.lines) if u > self.last_uid)
            if not new:
                break
            for uid in new:
                raw = await self._fetch(uid)
                if raw is not None:
                    await self._handle_one(uid, raw)
                self.last_uid = uid
                await self._save_cursor()
                handled += 1
        self.caught_up_at = self.clock.now()
        await self._set_state(Inbox.WATCHING)
        if self.on_duty:  # what the other daemons send by
            await db.retrying(
                lambda: queries.caught_up(self.name, self.caught_up_at or self.clock.now()),
                what="inbox state",
            )
        return handled

    async def _handle_one(self, uid: int, raw: bytes) -> None:
        """Hand one message on. A transient database fault retries this same message (the
        cursor stays); any other exception is recorded by `on_failure` and we move on."""
        delay = self.tuning.retry_min
        while True:
            try:
                await self.handle(self.uidvalidity, uid, raw)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if db.transient(exc):
                    log.warning(
                        "inbound.retrying",
                        mailbox=self.name,
                        uid=uid,
                        error=str(exc) or type(exc).__name__,
                        retry_in=round(delay, 2),
                    )
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, self.tuning.retry_max)
                    continue
                log.exception("inbound.failed", mailbox=self.name, uid=uid)
                if self.on_failure is None:
                    raise
                await self._record_failure(uid, raw, exc)
                return

    async def _record_failure(self, uid: int, raw: bytes, exc: Exception) -> None:
        assert self.on_failure is not None
        on_failure = self.on_failure

        async def record() -> None:
            await on_failure(self.uidvalidity, uid, raw, exc)

        await db.retrying(record, what="failed inbound message")

    async def _fetch(self, uid: int) -> bytes | None:
        assert self.imap is not None
        resp = await self._guard(self.imap.uid("fetch", str(uid), "(BODY.PEEK[])"))
        if resp.result != "OK":
            raise InboxError(
                f"{self._where()}: fetch of UID {uid} failed: {response_text(resp.lines)}"
            )
        for line in resp.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None  # expunged meanwhile

    async def open(self) -> None:
        """Connect (if needed) and catch up: start-up and the tests use this."""
        async with self._lock:
            if self.imap is None or self._lost.is_set():
                await self.connect()
            try:
                await self.catch_up()
            except InboxError:
                if not self._lost.is_set():
                    raise
                await self.connect()  # it was lost before we heard: once more, afresh
                await self.catch_up()

    async def sync(self) -> None:
        """The last look before a batch: interrupt IDLE, handle everything new, and return
        once caught up. Raises InboxError (the batch is then held) when that cannot be done
        in time."""
        self._syncs += 1
        self._interrupt.set()
        try:
            async with asyncio.timeout(self.tuning.sync_timeout), self._lock:
                if not self.on_duty and (self.imap is None or self._lost.is_set()):
                    await self._connect_to_look()
                await self.catch_up()
        except TimeoutError:
            raise InboxError(f"{self._where()}: the inbox did not answer in time") from None
        finally:
            self._syncs -= 1

    async def _connect_to_look(self) -> None:
        """Off duty, the connection opened at start-up is kept for the last looks; when it
        is lost, the next batch opens another. A login that fails is not tried again before
        a backoff (a refused one only a few times an hour, as the watcher does)."""
        wait = self._look_retry_at - time.monotonic()
        if wait > 0:
            why = self.error or f"{self._where()}: not connected"
            raise InboxError(f"{why} (next try in {wait:.0f}s)")
        await self._drop()
        try:
            await self.connect()
        except InboxError as exc:
            auth = isinstance(exc, AuthFailed)
            floor = self.tuning.auth_retry_min if auth else self.tuning.reconnect_min
            top = self.tuning.auth_retry_max if auth else self.tuning.reconnect_max
            self._look_delay = min(max(self._look_delay * 2, floor), top)
            self._look_retry_at = time.monotonic() + self._look_delay
            await self._set_state(Inbox.AUTH_FAILED if auth else Inbox.DOWN, str(exc))
            raise
        self._look_delay = 0.0

    # --- waiting ---------------------------------------------------------------------------
    async def wait_for_mail(self, stop: asyncio.Event) -> None:
        """Block until the server says something changed, the keepalive is due, a sync wants
        the connection, the connection is lost, or stop."""
        assert self.imap is not None
        imap = self.imap
        wakers = [asyncio.ensure_future(e.wait()) for e in (stop, self._interrupt, self._lost)]
        try:
            if not imap.has_capability("IDLE"):
                await asyncio.wait(
                    wakers, timeout=self.keepalive, return_when=asyncio.FIRST_COMPLETED
                )
                return
            idle = await self._guard(imap.idle_start(timeout=self.keepalive))
            push = asyncio.ensure_future(imap.wait_server_push(timeout=self.keepalive + 5))
            try:
                await asyncio.wait({push, *wakers}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                push.cancel()
                await asyncio.gather(push, return_exceptions=True)
                if self._lost.is_set():
                    idle.cancel()
                else:
                    if imap.has_pending_idle():
                        imap.idle_done()
                    await self._guard(asyncio.wait_for(idle, timeout=self.mailbox.imap.timeout))
        finally:
            for w in wakers:
                w.cancel()
            await asyncio.gather(*wakers, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until `stop` is set, reconnecting with backoff on any failure. Never ends
        on an exception of its own: everything is logged and retried."""
        delay = self.tuning.reconnect_min
        while not stop.is_set():
            try:
                await self.open()
                delay = self.tuning.reconnect_min
                while not stop.is_set():
                    async with self._lock:
                        if self._syncs == 0:  # nobody waits for the connection: IDLE
                            self._interrupt.clear()
                            await self.wait_for_mail(stop)
                            if self._lost.is_set():
                                raise InboxError(f"{self._where()}: connection lost")
                            if not stop.is_set():
                                await self.catch_up()
                    # A waiting sync takes the connection now (asyncio locks are fair).
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                auth = isinstance(exc, AuthFailed)
                error = str(exc) or type(exc).__name__
                await self._drop()
                if not isinstance(exc, InboxError) and not db.transient(exc):
                    log.exception("inbox.crashed", mailbox=self.name)
                if isinstance(exc, GrantRevoked):
                    # Said once (the daemon's mailbox.held line); then only a file is read
                    # now and then, until `sequencer auth` has written a new token.
                    await self._set_state(Inbox.AUTH_FAILED, error)
                    renewed = self.tokens.renewed if self.tokens is not None else None
                    await _wait(stop, self.tuning.revoked_poll, renewed)
                    delay = self.tuning.reconnect_min
                    continue
                await self._set_state(Inbox.AUTH_FAILED if auth else Inbox.DOWN, error)
                log.warning(
                    "inbox.auth_failed" if auth else "inbox.reconnecting",
                    mailbox=self.name,
                    error=error,
                    retry_in=round(max(delay, self.tuning.auth_retry_min) if auth else delay, 1),
                )
                if auth:
                    # A refused login is retried slowly: repeated attempts lock accounts.
                    delay = max(delay, self.tuning.auth_retry_min)
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({stopper}, timeout=delay * random.uniform(0.8, 1.2))
                stopper.cancel()
                top = self.tuning.auth_retry_max if auth else self.tuning.reconnect_max
                delay = min(delay * 2, top)
        await self.close()

    async def _drop(self) -> None:
        imap, self.imap = self.imap, None
        self._lost.set()
        if imap is not None:
            await quietly(imap.logout(), seconds=1)

    async def close(self) -> None:
        imap, self.imap = self.imap, None
        self._lost.set()
        if imap is not None:
            await quietly(imap.logout(), seconds=3)
            log.info("inbox.logged_out", mailbox=self.name)
        with contextlib.suppress(Exception):
            await self._set_state(Inbox.DOWN, self.error)


async def open_imap(
    mailbox: Mailbox,
    where: str,
    on_lost: Callable[[Exception | None], None] | None = None,
    tokens: TokenSource | None = None,
) -> aioimaplib.IMAP4:
    """A logged-in connection to the mailbox's IMAP server, TCP keepalive on. Raises
    InboxError, or AuthFailed when the login itself is refused (GrantRevoked when the
    mailbox's OAuth2 grant is gone)."""
    i = mailbox.imap
    setting = f"mailboxes.{mailbox.name}.imap"
    if i.security == "starttls":
        raise InboxError(f"{where}: {tls.IMAP_STARTTLS}")
    oauth = i.auth == "oauth2"
    password = "" if oauth else i.password(setting) or ""
    token = ""
    if oauth:
        tokens = tokens or TokenSource(mailbox, SystemClock())
        # Before connecting: a revoked grant never knocks on the server's door.
        token = await _token(tokens.token(), where)
    try:
        context = tls.context(i, setting) if i.security == "tls" else None
    except ConfigError as exc:
        raise InboxError(f"{where}: {'; '.join(exc.problems)}") from None
    try:
        # IMAP4, not IMAP4_SSL: only IMAP4 takes conn_lost_cb (aioimaplib 2.0.3); given a
        # context it speaks TLS from the first byte, as IMAP4_SSL does.
        imap = aioimaplib.IMAP4(
            host=i.host,
            port=i.port,
            timeout=i.timeout,
            conn_lost_cb=on_lost,
            ssl_context=context,
        )
        await imap.wait_hello_from_server()
        _keepalive_socket(imap, i.keepalive_seconds)
        if oauth:
            assert tokens is not None
            offered = imap.protocol.capabilities if imap.protocol is not None else set()
            if offered and "AUTH=XOAUTH2" not in offered:
                await quietly(imap.logout())
                raise AuthFailed(
                    f"{where}: the server does not offer XOAUTH2 (it offers "
                    f"{' '.join(sorted(c for c in offered if c.startswith('AUTH='))) or 'no AUTH='}"
                    "); check imap.host and port, or use auth: password"
                )
            _answer_sasl_errors(imap)
            resp = await imap.xoauth2(i.username, token)
            if resp.result == "NO":
                # Expired or revoked since we got it: refresh once and try once more.
                token = await _token(tokens.renew(token), where, imap)
                resp = await imap.xoauth2(i.username, token)
        else:
            resp = await imap.login(i.username, password)
    except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
        if cert := tls.certificate_error(exc):
            names = []
            if cert.verify_code in tls.HOST_MISMATCH:
                names = await tls.names_on_certificate(i, setting)
            raise InboxError(f"{where}: {tls.explain(cert, i, setting, names)}") from None
        raise InboxError(f"{where}: cannot connect: {exc or type(exc).__name__}") from None
    if resp.result != "OK":
        await quietly(imap.logout())
        detail = response_text(resp.lines)
        refused = resp.result == "NO" or _AUTH_FAILED.search(detail.encode())
        source = "the oauth2: block and its grant" if oauth else "the password source"
        raise (AuthFailed if refused else InboxError)(
            f"{where}: login refused for user '{i.username}': {detail} "
            f"(check the username and {source})"
        )
    return imap


async def _token(aw: Awaitable[str], where: str, imap: aioimaplib.IMAP4 | None = None) -> str:
    """An access token, or the InboxError that says why there is none."""
    try:
        return await aw
    except TokenError as exc:
        if imap is not None:
            await quietly(imap.logout())
        if isinstance(exc, TokenRevoked):
            raise GrantRevoked(f"{where}: {exc}") from None
        if isinstance(exc, TokenRefused):
            raise AuthFailed(f"{where}: {exc}") from None
        raise InboxError(f"{where}: {exc}") from None


def _answer_sasl_errors(imap: aioimaplib.IMAP4) -> None:
    """Dovecot and Gmail answer a refused XOAUTH2 token with a continuation carrying a JSON
    error, then wait for an empty line before the tagged NO (RFC 7628 3.2.3). aioimaplib
    2.0.3 never answers it, so the login would hang until its timeout: answer it here."""
    protocol = imap.protocol
    if protocol is None:
        return
    original = protocol._continuation

    def continuation(line: bytes) -> None:
        command = protocol.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            protocol.transport.write(b"\r\n")
            return
        original(line)

    protocol._continuation = continuation


async def _wait(stop: asyncio.Event, seconds: float, *more: asyncio.Event | None) -> None:
    """Until `stop` or any of `more` is set, or `seconds` have passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (stop, *more) if e is not None]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _imap_date(at: datetime) -> str:
    """RFC 3501's date (`7-Dec-2026`), English whatever the locale (strftime's %b is not)."""
    return f"{at.day}-{_MONTHS[at.month - 1]}-{at.year}"


def _keepalive_socket(imap: aioimaplib.IMAP4, every: float) -> None:
    """TCP keepalive, so a connection whose far end vanished without a FIN is found out."""
    transport = imap.protocol.transport if imap.protocol is not None else None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(every))
    options = (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", max(1, idle // 4)), ("TCP_KEEPCNT", 4))
    for name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def search_uids(lines: list[Any]) -> list[int]:
    out: list[int] = []
    for line in lines:
        # Only the SEARCH result line: untagged replies such as "3 EXISTS" also start with a
        # number, and reading them as UIDs would fetch the wrong messages.
        if isinstance(line, (bytes, bytearray)) and _SEARCH_RESULT.match(bytes(line)):
            out.extend(int(x) for x in bytes(line).split())
    return out


def response_text(lines: list[Any]) -> str:
    return " ".join(
        bytes(x).decode(errors="replace") for x in lines if isinstance(x, (bytes, bytearray))
    )[:300]


async def quietly(aw: Awaitable[Any], seconds: float = 3) -> None:
    """Best effort (logging out of a broken connection): errors are expected and ignored."""
    with contextlib.suppress(OSError, TimeoutError, aioimaplib.AioImapException):
        await asyncio.wait_for(aw, timeout=seconds)
