"""The daemon: the scheduler loop and everything it supervises.

Owns: the loop that sleeps until the next due send (or a few seconds, so enrolments made by
other processes are noticed), claim -> render -> send -> record for each due step, the holds
that keep a mailbox or a contact from sending when we cannot be sure (the inbox is not
watched, a login was refused, an outcome is unknown), the supervised inbox watchers, the Sent
folder copies, SIGHUP reloads, and the two-phase shutdown (stop claiming, give the send in
flight a deadline, then cancel; log out of IMAP).

Fail closed: a mailbox sends only while its inbox is watched and just looked at; a send
whose outcome is unknown is never retried as if it had failed; every database call survives
the database going away for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import structlog
from structlog.contextvars import bound_contextvars

from sequencer import oauth, pacing, render, replies, statusline
from sequencer.clock import Clock
from sequencer.config import Settings
from sequencer.delivery import Action, judge
from sequencer.errors import InboxError, SequencerError, TemplateError
from sequencer.etiquette import Etiquette, promises_of
from sequencer.holds import manual_hold, paused_by_hand
from sequencer.inbox import GrantRevoked, InboxWatcher, WatchTuning
from sequencer.renderer import Renderer, RenderRequest, sample_problems
from sequencer.sdnotify import Notifier
from sequencer.sender import Sender, SendFailed, Withdrawn
from sequencer.sentbox import SentFolder
from sequencer.sequences import Sequence
from sequencer.states import Hold, Inbox, Send, State
from sequencer.store import db, inbox_duty, queries, sending
from sequencer.store.models import Enrollment, SentMessage

log = structlog.get_logger("sequencer.worker")
T = TypeVar("T")

MAX_BACKOFF = timedelta(hours=1)
#: A refused SMTP login is tried again after this long, doubling up to SMTP_AUTH_MAX.
SMTP_AUTH_MIN = timedelta(minutes=1)
SMTP_AUTH_MAX = timedelta(hours=1)
#: Where the server files submissions itself, an uncertain send is looked up in Sent once
#: this long has passed (the server may still be filing it).
SETTLE_AFTER = timedelta(seconds=30)
#: How often failed inbound messages are tried again, and missing Sent copies appended.
MAINTENANCE_EVERY = 300.0
#: How often an idle daemon refreshes systemd's STATUS= line (a send refreshes it at once).
STATUS_EVERY = 60.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        sequences: dict[str, Sequence],
        clock: Clock,
        *,
        reload: Callable[[], tuple[dict[str, Sequence], dict[str, list[str]]]] | None = None,
        lease: timedelta = timedelta(seconds=45),
        max_sleep: float = 5.0,
        batch: int = 100,
        shutdown_grace: float = 8.0,
        tuning: WatchTuning | None = None,
        rng: random.Random | None = None,
        owns_database: bool = False,
        notifier: Notifier | None = None,
        duty: inbox_duty.Duty | None = None,
    ) -> None:
        self.settings = settings
        # Which inboxes this daemon watches: all of them, unless several daemons share a
        # PostgreSQL (then one watcher a mailbox across them all).
        self.duty = duty or inbox_duty.Solo()
        self.tuning = tuning or WatchTuning()
        self._watching: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        # systemd's notify socket (READY, STATUS, WATCHDOG ...); silent outside systemd.
        self.notify = notifier or Notifier({})
        self._gates: dict[str, pacing.Gate] = {}  # the last tick's pacing, for STATUS
        self._status_at = float("-inf")  # when the STATUS= line was last worked out
        self.etiquette = Etiquette(settings)
        self.rng = rng or random.Random()
        self._busy: set[str] = set()  # addresses being written to right now
        self._claimed: set[int] = set()  # enrollments with a send in progress (leases renewed)
        self._copying: set[int] = set()  # sent rows whose Sent copy a send is appending
        # Per mailbox: sends of the batch in hand whose outcome is being recorded; and the
        # same by address.
        self._recording: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._writing: dict[str, asyncio.Future[None]] = {}
        self.sequences = sequences
        self.clock = clock
        self._reload = reload
        self.lease = lease
        self.max_sleep = max_sleep
        self.batch = batch
        self.shutdown_grace = shutdown_grace
        # SQLite: one daemon owns the file (db.daemon_lock), so a claim left at start-up is a
        # dead process's. PostgreSQL: other daemons' claims are live; short leases expire.
        self.owns_database = owns_database
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[int]] = set()
        self._holds: dict[str, Hold | None] = {}  # last logged hold per mailbox
        self._connecting: set[str] = set()  # mailboxes held only while a watcher logs in
        self._quietly_held: set[str] = set()  # ... and logged so, at info level
        self._holds_to_check = False  # a reload may bring back held contacts' sequences
        self._background: set[asyncio.Future[None]] = set()
        # One token source per OAuth2 mailbox, shared by its SMTP, inbox and Sent connections.
        self.tokens = oauth.sources(settings.mailboxes, clock)
        self.senders = {
            name: Sender(box, self.tokens.get(name)) for name, box in settings.mailboxes.items()
        }
        self.sentboxes = {
            name: SentFolder(box, self.tokens.get(name)) for name, box in settings.mailboxes.items()
        }
        self.renderer = Renderer()  # started at the first render; stopped in close()
        self.own_addresses = {box.address for box in settings.mailboxes.values()}
        self.watchers = {
            name: InboxWatcher(
                box,
                self._inbound_handler(name),
                on_failure=self._inbound_failure(name),
                seen=_seen_before,
                tuning=tuning,
                tokens=self.tokens.get(name),
            )
            for name, box in settings.mailboxes.items()
        }

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- inbound ---------------------------------------------------------------------------
    def _inbound_handler(self, mailbox: str) -> Callable[[int, int, bytes], Awaitable[None]]:
        async def handle(uidvalidity: int, uid: int, raw: bytes) -> None:
            await replies.handle(
                mailbox,
                uidvalidity,
                uid,
                raw,
                now=self.clock.now(),
                own_addresses=self.own_addresses,
                etiquette=self.etiquette,
                sequences=self.sequences,
            )

        return handle

    def _inbound_failure(
        self, mailbox: str
    ) -> Callable[[int, int, bytes, Exception], Awaitable[None]]:
        async def failed(uidvalidity: int, uid: int, raw: bytes, exc: Exception) -> None:
            """Keep the message, its error and its bytes; hold whoever it may concern."""
            facts = replies.header_facts(raw)
            held = await replies.concerned(raw)
            await queries.record_failed_inbound(
                mailbox=mailbox,
                uidvalidity=uidvalidity,
                uid=uid,
                raw=raw,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                message_id=facts.message_id,
                from_address=facts.from_address,
                subject=facts.subject[:1000],
                held=held,
                now=self.clock.now(),
            )
            log.error(
                "contact.held",
                hold=str(Hold.INBOUND_FAILED),
                mailbox=mailbox,
                uid=uid,
                message_id=facts.message_id,
                enrollments=held,
                error=str(exc) or type(exc).__name__,
            )

        return failed

    async def retry_failed_inbound(self) -> int:
        """Try each kept failed message again; returns how many are now handled."""
        settled = 0
        for row in await db.retrying(queries.failed_inbound, what="failed inbound messages"):
            try:
                await replies.handle(
                    row.mailbox,
                    row.uidvalidity,
                    row.uid,
                    bytes(row.content or b""),
                    now=self.clock.now(),
                    own_addresses=self.own_addresses,
                    etiquette=self.etiquette,
                    sequences=self.sequences,
                    replaces=row.id,
                )
            except Exception as exc:
                if db.transient(exc):
                    raise
                await queries.record_failed_inbound(
                    mailbox=row.mailbox,
                    uidvalidity=row.uidvalidity,
                    uid=row.uid,
                    raw=bytes(row.content or b""),
                    error=f"{type(exc).__name__}: {exc}"[:2000],
                    message_id=row.message_id,
                    from_address=row.from_address,
                    subject=row.subject,
                    held=row.held,
                    now=self.clock.now(),
                )
                continue
            settled += 1
            log.info("inbound.recovered", mailbox=row.mailbox, uid=row.uid, held=row.held)
        return settled

    async def check_inboxes(self) -> None:
        """Connect where needed and handle everything new (tests use this)."""
        for watcher in self.watchers.values():
            await watcher.open()

    # --- holds -----------------------------------------------------------------------------
    async def _mailbox_hold(
        self, name: str, state: Any, now: datetime
    ) -> tuple[Hold | None, str | None]:
        """Why this mailbox may not send now, if it may not, and the detail."""
        self._connecting.discard(name)
        if (revoked := await self._oauth_hold(name, state, now)) is not None:
            return Hold.OAUTH_REVOKED, revoked
        if state is not None and manual_hold(state.manual_since, state.manual_until, now):
            return Hold.MANUAL_PAUSE, paused_by_hand(state.manual_until)
        watcher = self.watchers[name]
        if not watcher.on_duty and (unwatched := _unwatched(watcher, state)) is not None:
            starting = state is None or state.watcher is None  # no watcher has written yet
            if starting or (state.inbox is Inbox.CONNECTING and not state.inbox_error):
                self._connecting.add(name)  # its watcher is logging in (another daemon's)
            return unwatched
        if watcher.state is Inbox.AUTH_FAILED and f"{oauth.REVOKED}: " in (watcher.error or ""):
            # A new grant is on disk and the watcher, woken, signs in with it: still the
            # same hold until it has (no second log line for a passing state).
            return Hold.OAUTH_REVOKED, watcher.error
        if watcher.state is Inbox.AUTH_FAILED:
            return Hold.IMAP_AUTH_FAILED, watcher.error
        if watcher.on_duty and watcher.state is not Inbox.WATCHING:
            if watcher.state is Inbox.CONNECTING and watcher.error is None:
                self._connecting.add(name)
            # Connected and logged in; whether it caught up lately is settled by the last
            # look (`sync`) each batch takes before sending.
            return Hold.INBOX_UNAVAILABLE, watcher.error or f"inbox {watcher.state}"
        if state is not None and state.smtp_failed_since is not None:
            if state.smtp_retry_at is not None and state.smtp_retry_at > now:
                return Hold.SMTP_AUTH_FAILED, state.smtp_error
            # One login attempt for the whole mailbox per interval, never one per contact.
            try:
                await self.senders[name].login()
            except SendFailed as exc:
                await self._smtp_refused(name, exc, now)
                return Hold.SMTP_AUTH_FAILED, str(exc)
            await queries.smtp_login_ok(name)
        if state is not None and state.paused_until is not None and state.paused_until > now:
            return Hold.REPUTATION_PAUSE, state.pause_reason
        return None, None

    async def _oauth_hold(self, name: str, state: Any, now: datetime) -> str | None:
        """Why the mailbox's OAuth2 grant is gone, recorded for `status` (in the SMTP login
        columns: a grant that is gone is a refused login for the whole mailbox); None once a
        new refresh token is on disk, which releases that record."""
        tokens = self.tokens.get(name)
        why = tokens.revoked() if tokens is not None else None
        recorded = state is not None and f"{oauth.REVOKED}: " in (state.smtp_error or "")
        if why is not None and not recorded:
            await queries.smtp_refused_login(name, why, now, now + SMTP_AUTH_MAX)
        elif why is None and recorded:
            await queries.smtp_login_ok(name)  # the next send logs in afresh
            state.smtp_failed_since = None
        return why

    async def _smtp_refused(self, name: str, exc: SendFailed, now: datetime) -> None:
        """The SMTP login failed: hold the mailbox, retry with a doubling interval."""
        state = (await queries.mailbox_states()).get(name)
        since = state.smtp_failed_since if state and state.smtp_failed_since else now
        wait = min(max(now - since, SMTP_AUTH_MIN), SMTP_AUTH_MAX)
        await queries.smtp_refused_login(name, str(exc), now, now + wait)

    def _log_hold(self, name: str, hold: Hold | None, detail: str | None) -> None:
        """One log line when a mailbox's hold changes, not one per tick or per contact."""
        tokens = self.tokens.get(name)
        if hold is not None and tokens is not None and (why := tokens.revoked()) is not None:
            hold, detail = Hold.OAUTH_REVOKED, why  # the cause of any login hold it brings
        before = self._holds.get(name)
        # A watcher logging in is a passing state, said at info level; if it then fails,
        # the same hold is said again as the fault it has become.
        passing = name in self._connecting
        if before is hold and not (name in self._quietly_held and not passing):
            return
        self._holds[name] = hold
        self._status_at = float("-inf")  # systemd's STATUS= line says so at the next tick
        self._quietly_held.discard(name)
        if hold is None:
            log.info("mailbox.released", mailbox=name, was=str(before) if before else None)
        else:  # a pause by hand is what a person asked for, not a fault
            quiet = hold is Hold.MANUAL_PAUSE or passing
            if passing:
                self._quietly_held.add(name)
            report = log.info if quiet else log.error
            report("mailbox.held", mailbox=name, hold=str(hold), detail=detail)

    async def holds(self) -> dict[str, tuple[Hold | None, str | None]]:
        now = self.clock.now()
        elsewhere = [name for name, w in self.watchers.items() if not w.on_duty]
        states = await queries.mailbox_holds(elsewhere)
        found = {}
        for name in self.settings.mailboxes:
            self.notify.alive()  # each may try an SMTP login (up to its timeout)
            found[name] = await self._mailbox_hold(name, states.get(name), now)
        return found

    # --- outbound --------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Send everything due now that the etiquette and the holds allow; returns how many
        went. Mailboxes drain in parallel, each in order (oldest due first) so its pacing
        holds, each after one last look at its inbox; one address is never written to twice
        at once."""
        if self._holds_to_check:
            self._holds_to_check = False
            await self.release_sequence_holds()
        await self._settle_uncertain()
        now = self.clock.now()
        if resumed := await queries.end_pauses(now):
            log.info("contacts.resumed", hold=str(Hold.MANUAL_PAUSE), count=resumed)
        holds = await self.holds()
        for name, (hold, detail) in holds.items():
            self._log_hold(name, hold, detail)
        starts = {name: pacing.day_start(now, self._zone(name)) for name in self.settings.mailboxes}
        loads = await sending.loads(starts)
        gates = {
            name: gate
            for name, load in loads.items()
            if (gate := pacing.closed_until(now, self.etiquette.pace(name), self._zone(name), load))
        }
        self._gates = gates
        held = [name for name, (hold, _) in holds.items() if hold is not None]
        work: dict[str, list[sending.Due]] = defaultdict(list)
        for item in await sending.due(now, self.batch, self.settings.mailboxes, gates, held):
            work[item.mailbox].append(item)
        results = await asyncio.gather(
            *(
                self._drain(box, items, loads.get(box, pacing.Load()), starts[box])
                for box, items in work.items()
            ),
            return_exceptions=True,  # every mailbox's drain ends before the next tick starts
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    def _zone(self, mailbox: str) -> ZoneInfo:
        return self.etiquette.mailbox_zone(mailbox)

    def _chosen(
        self, mailbox: str, items: list[sending.Due], load: pacing.Load, now: datetime
    ) -> list[int]:
        """What the mailbox's pace lets go in this batch: promised steps always (but in a
        reputation pause), the others while its day and spacing have room."""
        pace = self.etiquette.pace(mailbox)
        gate = pacing.closed_until(now, pace, self._zone(mailbox), load)
        room = pacing.room(now, pace, self._zone(mailbox), load)
        chosen: list[int] = []
        for item in items:
            if item.email in self._busy:
                continue
            if item.promised and (gate is None or gate.reason != "reputation"):
                chosen.append(item.id)
            elif room > 0 and not item.promised:
                chosen.append(item.id)
                room -= 1
        return chosen

    async def _drain(
        self, mailbox: str, items: list[sending.Due], load: pacing.Load, day: datetime
    ) -> int:
        """One mailbox's batch: the last look at its inbox, one claim, the reads every send
        needs in one go, the new steps' rows written together, then each send in order."""
        watcher = self.watchers[mailbox]
        try:
            await watcher.sync()  # a reply the server already holds is handled first
        except InboxError as exc:
            self._log_hold(mailbox, Hold.INBOX_UNAVAILABLE, str(exc))
            return 0
        if not watcher.watched():  # belt and braces: caught up just now
            self._log_hold(mailbox, Hold.INBOX_UNAVAILABLE, watcher.error)
            return 0
        now = self.clock.now()
        batch = await sending.claim(self._chosen(mailbox, items, load, now), now, self.lease)
        pending = {enr.id for enr in batch}
        self._claimed |= pending
        try:
            ctx = await sending.context(batch)
            checked: list[_Checked] = []
            for enr in batch:
                with _bound(enr):
                    found = await self._guarded(enr, self._checked(enr, ctx, now), None)
                if found is None:
                    pending.discard(enr.id)  # moved, held or ended: its claim was let go
                else:
                    checked.append(found)
            # One exchange with the render process for the whole batch.
            texts = await self.renderer.render_steps([self._request(c) for c in checked])
            ready: list[_Ready] = []
            for one, text in zip(checked, texts, strict=True):
                with _bound(one.enr):
                    made = await self._guarded(one.enr, self._built(one, text, ctx, now), None)
                if made is None:
                    pending.discard(one.enr.id)
                else:
                    ready.append(made)
            drafts = [r.draft for r in ready if r.row is None]
            rows = await sending.record_pending(drafts, now)
            sent = 0
            for item in ready:
                enr = item.draft.enrollment
                if enr.email in self._busy:
                    ours = self._writing.get(enr.email)
                    if ours is None or ours not in self._recording[mailbox]:
                        continue  # another mailbox is writing to them right now: next tick
                    await asyncio.wait([ours])  # this batch just wrote to them: then look again
                    if not item.promised and await self._held(
                        enr, item.seq, item.draft.step, now, ctx.last_contact.get(enr.email)
                    ):
                        pending.discard(enr.id)  # moved past the gap
                        continue
                if item.row is None:
                    item.row = rows.get(item.draft.enrollment.id)
                    if item.row is None or item.row.message_id != item.draft.message_id:
                        continue  # another daemon wrote this step's row: it has the step
                self.notify.alive()  # the loop is making progress: one ping per item at most
                went, load = await self._send_ready(item, load, day, ctx)
                if went is not None:
                    pending.discard(item.draft.enrollment.id)
                if went is None:
                    break  # the mailbox itself may not send now (login, reputation, pace)
                sent += went
            return sent
        finally:
            await self._records_in(mailbox)
            self._claimed -= {enr.id for enr in batch}
            if pending:  # claims this batch did not use: the next tick takes them again
                with contextlib.suppress(Exception):  # else their leases run out
                    await sending.release(pending)

    async def _guarded(self, enr: Enrollment, work: Awaitable[T], crashed: T) -> T:
        """Isolate each item: one broken enrollment must not stop the others, and must not be
        retried every tick either: back off as for a failed send (which lets go its claim)."""
        try:
            return await work
        except Exception as exc:
            if db.transient(exc):
                raise  # the database is away: the tick backs off; the lease runs out
            log.exception("email.crashed")
            await queries.retry_later(enr, f"internal error: {exc!r}", self._backoff(enr))
            return crashed

    async def _send_ready(
        self, item: _Ready, load: pacing.Load, day: datetime, ctx: sending.Context
    ) -> tuple[int | None, pacing.Load]:
        """Send one prepared message if the pace still allows: 1 sent, 0 not (and its claim
        settled), None when the mailbox must stop for now (the claim is left to release)."""
        enr = item.draft.enrollment
        pace = self.etiquette.pace(enr.mailbox)
        now = self.clock.now()
        gate = pacing.closed_until(now, pace, self._zone(enr.mailbox), load)
        if gate is not None and (not item.promised or gate.reason == "reputation"):
            return None, load
        after = pacing.after_send(now, pace, load, self.rng)
        slot = sending.Slot(
            enr.mailbox, day, None if item.promised else pace.daily_limit, after.next_free
        )
        self._busy.add(enr.email)
        went: int | None = 0
        try:
            with _bound(enr):
                went = await self._guarded(enr, self._deliver(item, slot, ctx), 0)
        finally:
            if went != 1:  # a message that went keeps it busy until it is recorded
                self._busy.discard(enr.email)
        if went == 1:
            load = after
            gate = pacing.closed_until(self.clock.now(), pace, self._zone(enr.mailbox), load)
            if gate and gate.reason == "pace:daily_limit":
                log.info(
                    "mailbox.daily_limit_reached",
                    mailbox=enr.mailbox,
                    limit=pace.daily_limit,
                    opens_at=gate.opens_at.isoformat(),
                )
        return went, load

    async def _held(
        self,
        enr: Enrollment,
        seq: Sequence,
        step_no: int,
        now: datetime,
        last_contact: datetime | None,
    ) -> bool:
        """Claim-time etiquette: a due step that may not go now is moved (and logged).
        A promise goes exactly when promised; anything else is re-checked against the
        window, holidays, the gap to the last email to this address, and a pause."""
        promise = promises_of(enr.promises).get(step_no) if enr.promised else None
        if promise is not None:
            at = promise.at  # worked out again: tzdata may have changed since enrolment
            if at > now:
                await queries.defer(enr.id, at, ("promise",))
                return True
            return False
        planned = self.etiquette.settle(
            seq,
            enr.variables,
            now,
            last_contact=last_contact,
            paused_until=enr.paused_until,
            step=step_no,
        )
        if planned.at <= now:
            return False
        await queries.defer(enr.id, planned.at, planned.reasons)
        log.info("email.deferred", until=planned.at.isoformat(), reasons=list(planned.reasons))
        return True

    async def _checked(
        self, enr: Enrollment, ctx: sending.Context, now: datetime
    ) -> _Checked | None:
        """The checks a claimed step passes before it is rendered: its sequence and step
        exist, the address is not suppressed, no earlier attempt is unsettled, the etiquette
        lets it go now. None when it is not to be sent now (moved, held, ended or settled: its
        claim is let go by the write that says so)."""
        seq = self.sequences.get(enr.sequence)
        step_no = enr.steps_sent + 1
        if seq is None or step_no > len(seq.steps):
            why = f"sequence '{enr.sequence}' has no step {step_no}"
            if seq is None:
                why = f"sequence '{enr.sequence}' is not loaded (file gone, renamed or broken)"
            await queries.hold(enr.id, Hold.SEQUENCE_MISSING, why, now)
            log.error("contact.held", hold=str(Hold.SEQUENCE_MISSING), detail=why)
            return None
        if (blocked := ctx.suppressed.get(enr.email)) is not None:
            reason = f"address suppressed ({blocked.reason})"
            await queries.finish(enr.id, State.STOPPED, reason, now)
            log.info("sequence.stopped", reason=reason)
            return None
        row = ctx.rows.get((enr.id, step_no))
        if row is not None and row.status in (Send.SENDING, Send.UNCERTAIN):
            if row.status is Send.SENDING and not self.owns_database:
                # PostgreSQL: another daemon may still be in this data exchange (its lease
                # lapsed while the database was away). Settle it only once it cannot be.
                box = self.settings.mailboxes[enr.mailbox]
                settled_by = (row.attempted_at or now) + 2 * self.lease
                settled_by += timedelta(seconds=box.smtp.timeout)
                if settled_by > now:
                    await queries.defer(enr.id, settled_by, ("send_in_progress",))
                    return None
            # A previous run died during the data exchange: it may have gone out.
            await queries.set_send_status(row.id, Send.UNCERTAIN)
            await self._uncertain(enr, seq, row, "the daemon stopped during the data exchange")
            return None
        if row is not None and row.status in (Send.SENT, Send.SKIPPED):
            await advance(self.etiquette, enr, seq, row, row.status, row.sent_at or now)
            return None
        if await self._held(enr, seq, step_no, now, ctx.last_contact.get(enr.email)):
            return None
        promised = enr.promised and promises_of(enr.promises).get(step_no) is not None
        return _Checked(enr, seq, step_no, row, promised)

    def _request(self, item: _Checked) -> RenderRequest:
        box = self.settings.mailboxes[item.enr.mailbox]
        step = item.seq.steps[item.step - 1]
        contact = item.seq.contact_values(item.enr.email, item.enr.variables)
        sender_vars = {"name": box.display_name, "address": box.address}
        # The step's subject only on step 1: later steps reply in the thread ("Re: ...").
        return ((step.subject or "") if item.step == 1 else None, step.body, contact, sender_vars)

    async def _built(
        self,
        item: _Checked,
        text: tuple[str, str] | TemplateError,
        ctx: sending.Context,
        now: datetime,
    ) -> _Ready | None:
        """The message, from the rendered step (rendered in the render process, within its
        time and size budget); None when it cannot be built: the contact fails, nothing is
        sent."""
        enr, row = item.enr, item.row
        box = self.settings.mailboxes[enr.mailbox]
        try:
            if isinstance(text, TemplateError):
                raise text
            subject, body = text
            first = item.step == 1
            subject = subject.strip() if first else render.reply_subject(enr.thread_subject or "")
            # The Message-ID is assigned once per step; every retry reuses it.
            message_id = row.message_id if row else render.new_message_id(box.domain)
            out = render.build_message(
                from_address=box.address,
                from_name=box.display_name,
                to_address=enr.email,
                subject=subject,
                body=body,
                message_id=message_id,
                date=now,
                thread=ctx.thread(enr.id),
                unsubscribe=box.address if box.list_unsubscribe == "mailto" else None,
            )
        except SequencerError as exc:
            why = f"cannot render step {item.step}: {exc}"
            await queries.finish(enr.id, State.FAILED, why, now)
            log.error("email.failed", error=str(exc))
            return None
        draft = sending.Draft(enr, item.step, message_id, subject)
        return _Ready(draft, item.seq, out, row, item.promised)

    async def _deliver(self, item: _Ready, slot: sending.Slot, ctx: sending.Context) -> int | None:
        """Send one prepared message: 1 if it went, 0 if not (its claim settled), None if the
        mailbox must stop sending for now."""
        enr, seq, out = item.draft.enrollment, item.seq, item.out
        box = self.settings.mailboxes[enr.mailbox]
        sending_row = item.row
        assert sending_row is not None
        # Kept until the copy is in the Sent folder, so a crash cannot lose the copy.
        keep = out.data if box.appends_copies else None
        refused: list[sending.Refused | datetime] = []

        async def before_data() -> None:
            now = self.clock.now()
            answer = await db.retrying(
                partial(
                    sending.start,
                    sending_row,
                    enrollment_id=enr.id,
                    email=enr.email,
                    not_after=None if item.promised else now - self.etiquette.min_gap,
                    slot=slot,
                    now=now,
                    data=keep,
                ),
                what="recording a send",
            )
            if answer is not None:
                refused.append(answer)
                raise Withdrawn(str(answer))

        try:
            await self.senders[enr.mailbox].send(enr.email, out.data, before_data)
        except Withdrawn:
            return await self._withdrawn(enr, seq, item.draft.step, refused[0])
        except SendFailed as exc:
            # Retried like a success: lost, a refusal would be forgotten and the step stay
            # claimed. Every write in _failed sets absolute values, so a repeat is harmless.
            return await db.retrying(
                partial(self._failed, enr, seq, sending_row, exc), what="recording a send"
            )
        sent_at = self.clock.now()
        if box.appends_copies:
            self._copying.add(sending_row.id)  # before it is recorded: copy_missing leaves it be
        # Recorded (and copied to Sent) while the next message of the batch goes out: the
        # address stays busy until then, and the batch ends only once every record is in.
        task = asyncio.ensure_future(self._record_sent(item, sent_at, box.appends_copies))
        self._recording[enr.mailbox].add(task)
        self._writing[enr.email] = task
        task.add_done_callback(partial(self._written, enr.email))
        ctx.last_contact[enr.email] = sent_at
        return 1

    def _written(self, email: str, task: asyncio.Future[None]) -> None:
        """A send's outcome is recorded: its address may be written to again."""
        self._busy.discard(email)
        if self._writing.get(email) is task:
            del self._writing[email]

    async def _record_sent(self, item: _Ready, sent_at: datetime, copies: bool) -> None:
        enr, row, out = item.draft.enrollment, item.row, item.out
        assert row is not None
        try:
            await db.retrying(
                lambda: advance(self.etiquette, enr, item.seq, row, Send.SENT, sent_at),
                what="recording a send",
            )
        except BaseException:
            self._copying.discard(row.id)
            raise
        breakup = item.seq.steps[item.draft.step - 1].breakup
        log.info("email.sent", message_id=out.message_id, breakup=breakup)
        if copies:
            await self._copy(enr.mailbox, row.id, out.data, sent_at)

    async def _records_in(self, mailbox: str) -> None:
        """Wait for the batch's records; one that failed for good is logged as a crash (its
        row stays `sending`, so the step is never sent again as if it had not gone)."""
        tasks = self._recording.pop(mailbox, set())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                if db.transient(result):
                    raise result
                log.error("email.crashed", error=repr(result), doing="recording a send")

    async def _withdrawn(
        self, enr: Enrollment, seq: Sequence, step_no: int, why: sending.Refused | datetime
    ) -> int | None:
        """The last check before DATA said no: nothing was sent."""
        if why is sending.Refused.PACED:
            return None  # another daemon used the mailbox's pace: the claim is let go
        if why is sending.Refused.ENDED or why is sending.Refused.TAKEN:
            log.info("email.withdrawn", reason=why.value)
            return 0  # a reply (or a hold, or another daemon) got there first
        assert isinstance(why, datetime)  # written to since the batch looked: plan again
        if not await self._held(enr, seq, step_no, self.clock.now(), why):
            await sending.release([enr.id])  # it may go after all: at the next tick
        return 0

    async def _failed(
        self, enr: Enrollment, seq: Sequence, row: SentMessage, exc: SendFailed
    ) -> int | None:
        """Carry out what delivery.judge says an SMTP failure means."""
        now = self.clock.now()
        action = judge(exc.failure)
        fields = {"error": str(exc), "code": exc.code, "stage": str(exc.failure.stage)}
        if action is Action.UNCERTAIN:
            await queries.set_send_status(row.id, Send.UNCERTAIN)
            await self._uncertain(enr, seq, row, str(exc))
            return 0
        await queries.not_sent(row.id)  # nothing was delivered; a retry reuses the Message-ID
        if action is Action.AUTH_FAILED:
            await queries.release_claim(enr.id)
            await self._smtp_refused(enr.mailbox, exc, now)
            self._log_hold(enr.mailbox, Hold.SMTP_AUTH_FAILED, str(exc))
            return None
        if action is Action.PAUSE_MAILBOX:
            await queries.release_claim(enr.id)
            until = now + replies.REPUTATION_PAUSE
            await queries.pause_mailbox(enr.mailbox, until, str(exc), now)
            self._log_hold(enr.mailbox, Hold.REPUTATION_PAUSE, str(exc))
            return None
        if action is Action.BOUNCED:
            await queries.suppress(enr.email, "hard_bounce", str(exc), now)
            await queries.finish_address(enr.email, State.BOUNCED, f"refused by server: {exc}", now)
            log.warning("email.refused", **fields)
            return 0
        if action is Action.FAIL:
            await queries.finish(enr.id, State.FAILED, f"step {row.step} refused: {exc}", now)
            log.error("email.failed", **fields)
            return 0
        retry_at = self._backoff(enr)
        if action is Action.SOFT_BOUNCE:
            retry_at = max(retry_at, now + replies.SOFT_PAUSE)
        await queries.retry_later(enr, str(exc), retry_at)
        log.warning(
            "email.retry", attempt=enr.attempts + 1, retry_at=retry_at.isoformat(), **fields
        )
        return 0

    async def _uncertain(self, enr: Enrollment, seq: Sequence, row: SentMessage, why: str) -> None:
        """A send that may or may not have reached them: never retried as if it had failed.
        Where the server files submissions itself the Sent folder settles it (shortly);
        elsewhere on_uncertain_send decides: hold for a person, skip, or resend."""
        now = self.clock.now()
        box = self.settings.mailboxes[enr.mailbox]
        policy = self.settings.uncertain_policy(enr.mailbox)
        fields = {"message_id": row.message_id, "error": why}
        if not box.appends_copies:
            await queries.hold(enr.id, Hold.UNCERTAIN_SEND, f"looking for it in Sent: {why}", now)
            log.warning("email.uncertain", settle="sent_folder", **fields)
            return
        if policy == "skip":
            await advance(self.etiquette, enr, seq, row, Send.SKIPPED, now)
            log.warning("email.uncertain", settle="skipped", **fields)
        elif policy == "resend":
            await queries.set_send_status(row.id, Send.PENDING)
            await queries.retry_later(enr, f"uncertain send, resending: {why}", self._backoff(enr))
            log.warning("email.uncertain", settle="resend", **fields)
        else:
            detail = (
                f"step {row.step} ({row.message_id}) may not have been delivered: {why}. Check "
                f"the Sent folder, then run `sequencer resume {enr.email} --sent` or --resend"
            )
            await queries.hold(enr.id, Hold.UNCERTAIN_SEND, detail, now)
            log.error("contact.held", hold=str(Hold.UNCERTAIN_SEND), **fields)

    async def _settle_uncertain(self) -> None:
        """Settle uncertain sends of self-filing mailboxes by looking for them in Sent."""
        now = self.clock.now()
        for enr in await queries.held(Hold.UNCERTAIN_SEND):
            self.notify.alive()
            box = self.settings.mailboxes.get(enr.mailbox)
            seq = self.sequences.get(enr.sequence)
            if box is None or box.appends_copies or seq is None:
                continue
            if enr.hold_since is not None and now - enr.hold_since < SETTLE_AFTER:
                continue
            row = await queries.step_message(enr.id, enr.steps_sent + 1)
            if row is None:
                continue
            try:
                found = await self.sentboxes[enr.mailbox].contains(row.message_id)
            except InboxError as exc:
                log.warning("email.uncertain", settle="sent_folder_unavailable", error=str(exc))
                continue
            await settle(self.etiquette, enr, seq, row, sent=found, now=now)
            log.info(
                "email.settled",
                email=enr.email,
                message_id=row.message_id,
                found_in_sent=found,
                then="recorded as sent" if found else "resending with the same Message-ID",
            )

    async def _copy(self, mailbox: str, sent_id: int, data: bytes, at: datetime) -> None:
        """A copy in the Sent folder, so the salesperson's client shows the whole thread.
        Never blocks sending: a failure is logged and tried again later."""
        try:
            await self.sentboxes[mailbox].append(data, at)
        except InboxError as exc:
            log.warning("sentbox.append_failed", mailbox=mailbox, error=str(exc))
            return
        finally:
            self._copying.discard(sent_id)
        await db.retrying(lambda: queries.copied(sent_id, self.clock.now()), what="Sent copy")

    async def copy_missing(self) -> int:
        """Copies a crash or an IMAP fault left out; looked up first, so none is doubled."""
        done = 0
        for name, box in self.settings.mailboxes.items():
            if not box.appends_copies:
                continue
            for row in await queries.uncopied(name):
                if row.id in self._copying:
                    continue  # its send is appending it right now
                try:
                    if not await self.sentboxes[name].contains(row.message_id) and row.data:
                        await self.sentboxes[name].append(
                            bytes(row.data), row.sent_at or row.created_at
                        )
                except InboxError as exc:
                    log.warning("sentbox.append_failed", mailbox=name, error=str(exc))
                    break
                await queries.copied(row.id, self.clock.now())
                done += 1
        return done

    def _backoff(self, enr: Enrollment) -> datetime:
        """1 minute, doubling with each consecutive failure, at most an hour, with jitter
        (so contacts refused together do not come back together)."""
        doublings = min(int(enr.attempts), 6)  # 2**6 minutes is already past the cap
        wait = min(timedelta(minutes=2**doublings), MAX_BACKOFF)
        return self.clock.now() + wait * self.rng.uniform(0.9, 1.1)

    # --- the loop --------------------------------------------------------------------------
    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("daemon.stopping")
            self.notify.stopping()
        self.stopping.set()
        self._wake.set()

    def reload_sequences(self) -> None:
        """SIGHUP: reload in the background (the signal handler must not block)."""
        if self._reload is None:
            return
        task = asyncio.ensure_future(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> None:
        """Take every file that loads and renders with sample values; a broken edit keeps
        that sequence's last good version; a file that is gone leaves its contacts held
        until it is back."""
        if self._reload is None:
            return
        self.notify.reloading()
        try:
            await self._reload_files()
        finally:
            # READY=1 again whatever the outcome: a broken file keeps the last good version.
            self.notify.ready(await self._status_text() if self.notify.enabled else None)

    async def _reload_files(self) -> None:
        assert self._reload is not None
        try:
            fresh, broken = await asyncio.to_thread(self._reload)
        except SequencerError as exc:
            log.error("sequences.reload_failed", error=str(exc), kept=sorted(self.sequences))
            return
        senders = {
            name: {"name": box.display_name, "address": box.address}
            for name, box in self.settings.mailboxes.items()
        }
        for name, seq in sorted(fresh.items()):
            if problems := await sample_problems(self.renderer, [seq], senders):
                broken[name] = problems
                del fresh[name]
        kept = {name: self.sequences[name] for name in broken if name in self.sequences}
        self.sequences = {**fresh, **kept}
        self.report_broken(broken, kept=kept)
        log.info("sequences.reloaded", sequences=sorted(self.sequences))
        self._holds_to_check = True
        self._wake.set()

    def report_broken(
        self, broken: Mapping[str, list[str]], kept: Mapping[str, Sequence] | None = None
    ) -> None:
        for name, problems in sorted(broken.items()):
            log.error(
                "sequence.broken",
                sequence=name,
                problems=problems,
                using="the last good version"
                if kept and name in kept
                else "none: its contacts are held (sequence_missing) until it loads",
            )

    async def release_sequence_holds(self) -> int:
        """Contacts held because their sequence was missing go on once it is back."""
        back = [
            enr.id
            for enr in await queries.held(Hold.SEQUENCE_MISSING)
            if (seq := self.sequences.get(enr.sequence)) is not None
            and enr.steps_sent < len(seq.steps)
        ]
        released = await queries.release_hold(back, Hold.SEQUENCE_MISSING)
        if released:
            log.info("contacts.released", hold=str(Hold.SEQUENCE_MISSING), count=released)
        return released

    async def start(self) -> None:
        """Start-up: release a dead process's claims (SQLite), log in to every inbox and
        every SMTP server, read what arrived while we were down, and settle what was left
        unsettled. A refused login holds that mailbox; it never stops the daemon (systemd
        restarting us would turn it into a login storm)."""
        self.notify.status(f"starting: logging in to {len(self.settings.mailboxes)} mailbox(es)")
        if self.owns_database:
            released = await db.retrying(queries.release_claims, what="releasing claims")
            if released:
                log.warning("claims.released", count=released)
        names = list(self.settings.mailboxes)
        mine = await self.duty.round(names)
        for name in names:
            if name not in mine:  # another daemon watches it: our login is for last looks
                self.watchers[name].stand_down()
        await asyncio.gather(
            asyncio.to_thread(replies.warm_up),  # while the servers answer the logins
            *(self._start_mailbox(name) for name in names),
        )
        # Each step is whole and safe to repeat: a database fault waits, it never exits.
        await db.retrying(self.retry_failed_inbound, what="failed inbound messages")
        await db.retrying(self.release_sequence_holds, what="releasing holds")
        await db.retrying(self.refresh_promises, what="promised times")
        # A crash between a send and its Sent copy left the copy out: fill it in now, before
        # the scheduler runs (no copy in flight to race); each copy is looked up first.
        await db.retrying(self.copy_missing, what="Sent copies")
        # Every mailbox has logged in or is held: say which, once, before READY=1.
        for name, (hold, detail) in (await db.retrying(self.holds, what="holds")).items():
            self._log_hold(name, hold, detail)

    async def _start_mailbox(self, name: str) -> None:
        try:
            await self.watchers[name].open()
        except InboxError as exc:
            if not isinstance(exc, GrantRevoked):  # said by the mailbox.held line below
                log.error("inbox.unavailable", mailbox=name, error=str(exc))
            await self.watchers[name].mark_down(exc)
        try:
            await self.senders[name].login()
        except SendFailed as exc:
            if judge(exc.failure) is Action.AUTH_FAILED:
                refused = partial(self._smtp_refused, name, exc, self.clock.now())
                await db.retrying(refused, what="mailbox state")
                self._log_hold(name, Hold.SMTP_AUTH_FAILED, str(exc))
            else:
                log.warning("smtp.unavailable", mailbox=name, error=str(exc))
        else:
            await db.retrying(partial(queries.smtp_login_ok, name), what="mailbox state")

    async def refresh_promises(self) -> None:
        """Work promised times out again: a tzdata update may have moved an instant, and a
        promise keeps its local time."""
        for enr in await queries.promised_active():
            promise = promises_of(enr.promises).get(enr.steps_sent + 1)
            if promise is not None and promise.at != enr.next_at:
                await queries.defer(enr.id, promise.at, ("promise",))

    async def run(self) -> None:
        """Run until stop(): supervised inbox watchers, lease renewal, maintenance, and the
        scheduler loop."""
        helpers = [asyncio.create_task(self._keep_duty())]
        helpers.append(asyncio.create_task(self._renew_leases()))
        helpers.append(asyncio.create_task(self._maintain()))
        log.info("daemon.started", mailboxes=sorted(self.senders), sequences=sorted(self.sequences))
        # start() has opened the database and logged in to every mailbox or held it.
        self.notify.ready(await self._status_text() if self.notify.enabled else None)
        # The tick pings the watchdog while it waits out a database outage (db.retrying):
        # waiting for the database is not a hang, and a restart would not bring it back.
        ticking = contextvars.copy_context()
        ticking.run(db.WAITING.set, self.notify.alive)
        try:
            while not self.stopping.is_set():
                self.notify.alive()
                task = asyncio.create_task(self.run_once_guarded(), context=ticking.copy())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                await asyncio.wait({task})
                if self.stopping.is_set():
                    break
                went = task.result()
                if self.notify.enabled and (went or self._status_stale()):  # systemd only
                    self.notify.status(await self._status_text())
                if not went:  # something went: there may be more due right away
                    await self._sleep()
        finally:
            await self._shutdown(helpers)

    def _status_stale(self) -> bool:
        """Whether the STATUS= line is due a refresh while nothing is sent: its counts read
        the whole active set, so an idle daemon with a million contacts redoes them once a
        minute rather than every tick."""
        now = asyncio.get_running_loop().time()
        if now - self._status_at < STATUS_EVERY:
            return False
        self._status_at = now
        return True

    async def _status_text(self) -> str:
        """The STATUS= line; on a database fault, the last one stays (it is only a view)."""
        try:
            active, firsts = await queries.service_summary()
        except Exception as exc:
            if not db.transient(exc):
                raise
            return self.notify.last_status or "database unavailable"
        now = self.clock.now()
        nexts = {
            box: max(at, gate.opens_at) if (gate := self._gates.get(box)) else at
            for box, at in firsts.items()
            if box in self.settings.mailboxes
        }
        return statusline.status_line(
            active=active,
            next_sends=nexts,
            held={box: hold for box, hold in self._holds.items() if hold is not None},
            zones={box: self._zone(box) for box in nexts},
            now=now,
        )

    async def _keep_duty(self) -> None:
        """Watch the inboxes this daemon is to watch: every few seconds, ask the duty which
        (all of them, but where several daemons share a PostgreSQL), start the watchers it
        has taken and end those it has given back."""
        names = list(self.settings.mailboxes)
        try:
            while not self.stopping.is_set():
                try:
                    mine = await self.duty.round(names)
                except Exception:  # never the end of watching: the next round tries again
                    log.exception("inbox_duty.failed")
                    mine = frozenset(self._watching)
                for name in names:
                    if name in mine and name not in self._watching:
                        self._watch(name)
                    elif name not in mine and self.watchers[name].on_duty:
                        await self._stop_watching(name)
                await self._pause(self.tuning.duty_every)
        finally:
            await asyncio.gather(*(self._stop_watching(name) for name in list(self._watching)))

    def _watch(self, name: str) -> None:
        watcher = self.watchers[name]
        if not watcher.on_duty:
            log.info("inbox.taken_over", mailbox=name)
            watcher.take_duty()
        off = asyncio.Event()
        self._watching[name] = (asyncio.create_task(self._supervise(watcher, off)), off)

    async def _stop_watching(self, name: str) -> None:
        """End this daemon's watch of the mailbox: at shutdown, or handed to another daemon
        (then nothing more is recorded from here, and the connection is closed: the next
        last look opens one)."""
        watcher = self.watchers[name]
        if not self.stopping.is_set():
            log.info("inbox.handed_over", mailbox=name)
            watcher.stand_down()
        elif self.duty.shared:  # another daemon takes over: its records, not "down" from us
            watcher.stand_down()
        found = self._watching.pop(name, None)
        if found is None:  # taken at start-up, handed over before it was watched
            await watcher.close()
            return
        task, off = found
        off.set()
        try:
            await asyncio.wait({task}, timeout=5)
        finally:  # also when shutdown cancels us: no watcher is left running on its own
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _supervise(self, watcher: InboxWatcher, off: asyncio.Event) -> None:
        """Keep a watcher running until `off`: one that ends or raises is logged and restarted
        with backoff, and its mailbox is held (not watched) meanwhile."""
        delay = 1.0
        while not off.is_set():
            try:
                await watcher.run(off)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("inbox.watcher_died", mailbox=watcher.name)
                with contextlib.suppress(Exception):
                    await watcher.mark_down(exc)
            if off.is_set():
                return
            log.error("inbox.watcher_restarting", mailbox=watcher.name, retry_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(off.wait(), timeout=delay)
            delay = min(delay * 2, 60.0)

    async def _renew_leases(self) -> None:
        """Renew the leases of sends in progress, so only a dead daemon's claims expire."""
        every = max(self.lease.total_seconds() / 3, 0.05)
        while not self.stopping.is_set():
            await self._pause(every)
            if self._claimed:
                with contextlib.suppress(Exception):
                    await queries.renew_claims(self._claimed, self.clock.now() + self.lease)

    async def _maintain(self) -> None:
        """Every few minutes: failed inbound messages tried again, missing copies settled."""
        while not self.stopping.is_set():
            await self._pause(MAINTENANCE_EVERY)
            if self.stopping.is_set():
                return
            try:
                await self.retry_failed_inbound()
                await self.copy_missing()
            except Exception as exc:
                log.warning("maintenance.failed", error=str(exc) or type(exc).__name__)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def run_once_guarded(self) -> int:
        try:
            return await self.run_once()
        except SequencerError as exc:
            log.error("scheduler.failed", error=str(exc))
            return 0
        except Exception as exc:
            if not db.transient(exc):
                raise
            log.warning("database.unavailable", doing="scheduling", error=str(exc))
            await self._pause(self.max_sleep)
            return 0

    async def _sleep(self) -> None:
        try:
            nxt = await queries.next_due_at()
        except Exception as exc:
            if not db.transient(exc):
                raise
            nxt = None
        seconds = self.max_sleep
        if nxt is not None and nxt <= self.clock.now():
            nxt = None  # due but held back by pacing or a hold: look again after max_sleep
        if nxt is not None:
            seconds = max(0.0, min(seconds, (nxt - self.clock.now()).total_seconds()))
        self._wake.clear()
        # In slices no longer than the watchdog's ping interval, pinging after each.
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(left, self._slice))
                return
            self.notify.alive()

    @property
    def _slice(self) -> float:
        return self.notify.watchdog.every or self.max_sleep

    async def _shutdown(self, helpers: list[asyncio.Task[None]]) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("daemon.abandoned_send", tasks=len(pending))
        self.stopping.set()
        await asyncio.wait(helpers, timeout=3)
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        log.info("daemon.stopped")

    async def close(self) -> None:
        for watcher in self.watchers.values():
            if self.duty.shared:
                watcher.stand_down()  # as above: the next watcher records its own state
            await watcher.close()
        await self.duty.close()  # after the watchers' last records: then the others take over
        for sender in self.senders.values():
            await sender.close()
        for box in self.sentboxes.values():
            await box.close()
        await self.renderer.close()


def _unwatched(watcher: InboxWatcher, state: Any) -> tuple[Hold, str | None] | None:
    """Why a mailbox another daemon watches may not send now: its watcher is not watching,
    or has not caught up within twice the keepalive (it may be dead or frozen, and a reply
    could sit unseen). Our own last look before the batch comes on top of this."""
    if watcher.state is Inbox.AUTH_FAILED:  # our own last look's login was refused
        return Hold.IMAP_AUTH_FAILED, watcher.error
    if state is None or state.watcher is None:
        return Hold.INBOX_UNAVAILABLE, "no daemon has started watching this inbox yet"
    if state.inbox is not Inbox.WATCHING or state.caught_up_at is None:
        seen = f"inbox {state.inbox}, watched by {state.watcher}"
        if state.inbox is Inbox.WATCHING:
            seen = f"its watcher ({state.watcher}) has not caught up yet"
        return Hold.INBOX_UNAVAILABLE, state.inbox_error or seen
    late = watcher.clock.now() - state.caught_up_at
    if late > timedelta(seconds=2 * watcher.keepalive):
        ago = f"{late.total_seconds():.0f}s ago"
        return Hold.INBOX_UNAVAILABLE, f"inbox watched by {state.watcher}, last caught up {ago}"
    return None


@dataclass(frozen=True)
class _Checked:
    """A claimed step that passed its checks and is to be rendered."""

    enr: Enrollment
    seq: Sequence
    step: int
    row: SentMessage | None  # this step's row from an earlier attempt (its Message-ID)
    promised: bool


@dataclass
class _Ready:
    """A claimed step rendered and checked, waiting for its turn on the mailbox's connection."""

    draft: sending.Draft
    seq: Sequence
    out: render.Outgoing
    row: SentMessage | None  # None until the batch's new rows are written
    promised: bool


def _bound(enr: Enrollment) -> contextlib.AbstractContextManager[Any]:
    """Every log line about a send names its contact, sequence, mailbox and step."""
    return bound_contextvars(
        enrollment_id=enr.id,
        email=enr.email,
        sequence=enr.sequence,
        mailbox=enr.mailbox,
        step=enr.steps_sent + 1,
    )


async def _seen_before(raw: bytes) -> bool:
    """A UIDVALIDITY re-read skips what was handled (by Message-ID)."""
    message_id = replies.header_facts(raw).message_id
    return message_id is not None and await queries.was_handled(message_id)


async def advance(
    etiquette: Etiquette,
    enr: Enrollment,
    seq: Sequence,
    sent: SentMessage,
    status: Send,
    at: datetime,
) -> None:
    """Record a step's outcome (sent, or skipped as not delivered) and plan the next one."""
    step = seq.steps[sent.step - 1]
    following = sent.step + 1 if sent.step < len(seq.steps) else None
    planned, promised = None, False
    if following is not None:
        planned, promised = etiquette.step_time(
            seq,
            following,
            enr.variables,
            after=at,
            last_contact=at,
            paused_until=enr.paused_until,
            promises=promises_of(enr.promises),
        )
    still_active = await sending.record_sent(
        enr,
        sent,
        status=status,
        sent_at=at,
        next_at=planned.at if planned else None,
        breakup=step.breakup or following is None,
        next_reasons=planned.reasons if planned else (),
        promised=promised,
    )
    if still_active and (step.breakup or following is None):
        log.info("sequence.completed", message_id=sent.message_id)


async def settle(
    etiquette: Etiquette,
    enr: Enrollment,
    seq: Sequence,
    row: SentMessage,
    *,
    sent: bool,
    now: datetime,
) -> None:
    """Settle an uncertain send: it went (record it and go on), or it did not (send it
    again, with the same Message-ID, as soon as the etiquette allows)."""
    if sent:
        await advance(etiquette, enr, seq, row, Send.SENT, row.attempted_at or now)
        await queries.release_hold([enr.id], Hold.UNCERTAIN_SEND)
    else:
        await queries.set_send_status(row.id, Send.PENDING)
        await queries.release_hold([enr.id], Hold.UNCERTAIN_SEND, next_at=now)
