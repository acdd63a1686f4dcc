"""The daemon: composition root and scheduler loop.

Owns: building the senders and inbox watchers, the loop that sleeps until the next due send
(or a few seconds, so enrolments made by other processes are noticed), claim -> render -> send
-> record for each due step, SIGHUP reloads, and the two-phase shutdown (stop claiming, give
the send in flight a deadline, then cancel; log out of IMAP).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from structlog.contextvars import bound_contextvars

from sequencer import pacing, render, replies
from sequencer.clock import Clock
from sequencer.config import Settings
from sequencer.errors import (
    AuthenticationError,
    DeliveryError,
    RecipientRefused,
    SequencerError,
)
from sequencer.etiquette import Etiquette, promises_of
from sequencer.inbox import Handler, InboxWatcher, WatchTuning
from sequencer.sender import Sender
from sequencer.sequences import Sequence
from sequencer.store import queries
from sequencer.store.models import Enrollment, SentMessage

log = structlog.get_logger("sequencer.worker")

MAX_BACKOFF = timedelta(hours=1)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        sequences: dict[str, Sequence],
        clock: Clock,
        *,
        reload: Callable[[], dict[str, Sequence]] | None = None,
        lease: timedelta = timedelta(minutes=10),
        max_sleep: float = 5.0,
        batch: int = 100,
        shutdown_grace: float = 8.0,
        tuning: WatchTuning | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.etiquette = Etiquette(settings)
        self.rng = rng or random.Random()
        self._busy: set[str] = set()  # addresses being written to right now
        self.sequences = sequences
        self.clock = clock
        self._reload = reload
        self.lease = lease
        self.max_sleep = max_sleep
        self.batch = batch
        self.shutdown_grace = shutdown_grace
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[int]] = set()
        self.senders = {name: Sender(box) for name, box in settings.mailboxes.items()}
        self.own_addresses = {box.address for box in settings.mailboxes.values()}
        self.watchers = {
            name: InboxWatcher(box, self._inbound_handler(name), tuning)
            for name, box in settings.mailboxes.items()
        }

    # --- inbound ---------------------------------------------------------------------------
    def _inbound_handler(self, mailbox: str) -> Handler:
        async def handle(uidvalidity: int, uid: int, raw: bytes) -> None:
            try:
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
            except SequencerError as exc:
                log.error("inbound.failed", mailbox=mailbox, uid=uid, error=str(exc))

        return handle

    async def check_inboxes(self) -> None:
        """Connect where needed and handle everything new (tests and start-up use this)."""
        for watcher in self.watchers.values():
            if watcher.imap is None:
                await watcher.connect()
            await watcher.catch_up()

    # --- outbound --------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Send everything due now that the etiquette allows; returns how many went.

        Mailboxes drain in parallel, each in order (oldest due first) so its pacing holds;
        one address is never written to twice at once."""
        now = self.clock.now()
        loads = {name: await self._load(name, now) for name in self.settings.mailboxes}
        gates = {
            name: gate
            for name, load in loads.items()
            if (gate := pacing.closed_until(now, self.etiquette.pace(name), self._zone(name), load))
        }
        work: dict[str, list[queries.Due]] = defaultdict(list)
        for item in await queries.due(now, self.batch, gates):
            gate = gates.get(item.mailbox)
            if gate is None or gate.reason != "reputation":  # a halted mailbox sends nothing
                work[item.mailbox].append(item)
        results = await asyncio.gather(
            *(self._drain(box, items, loads.get(box, pacing.Load())) for box, items in work.items())
        )
        return sum(results)

    def _zone(self, mailbox: str) -> ZoneInfo:
        return self.etiquette.mailbox_zone(mailbox)

    async def _load(self, mailbox: str, now: datetime) -> pacing.Load:
        return await queries.mailbox_load(mailbox, pacing.day_start(now, self._zone(mailbox)))

    async def _drain(self, mailbox: str, items: list[queries.Due], load: pacing.Load) -> int:
        pace = self.etiquette.pace(mailbox)
        sent = 0
        for item in items:
            now = self.clock.now()
            gate = pacing.closed_until(now, pace, self._zone(mailbox), load)
            held = gate is not None and (not item.promised or gate.reason == "reputation")
            if held or item.email in self._busy:
                continue
            self._busy.add(item.email)
            try:
                went = await self._process(item.id)
            finally:
                self._busy.discard(item.email)
            if went:
                sent += 1
                load = pacing.after_send(self.clock.now(), pace, load, self.rng)
                await queries.set_next_free(mailbox, load.next_free)
                gate = pacing.closed_until(self.clock.now(), pace, self._zone(mailbox), load)
                if gate and gate.reason == "pace:daily_limit":
                    log.info(
                        "mailbox.daily_limit_reached",
                        mailbox=mailbox,
                        limit=pace.daily_limit,
                        opens_at=gate.opens_at.isoformat(),
                    )
        return sent

    async def _process(self, enrollment_id: int) -> int:
        enr = await queries.claim(enrollment_id, self.clock.now(), self.lease)
        if enr is None:
            return 0
        seq = self.sequences.get(enr.sequence)
        step_no = enr.steps_sent + 1
        with bound_contextvars(
            enrollment_id=enr.id,
            email=enr.email,
            sequence=enr.sequence,
            mailbox=enr.mailbox,
            step=step_no,
        ):
            try:
                return await self._send_step(enr, seq, step_no)
            except Exception as exc:
                # Isolate each item: one broken enrollment must not stop the others, and must
                # not be retried every tick either: back off as for a transient failure.
                log.exception("email.crashed")
                await queries.retry_later(enr, f"internal error: {exc!r}", self._backoff(enr))
                return 0

    async def _held(self, enr: Enrollment, seq: Sequence, step_no: int, now: datetime) -> bool:
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
            last_contact=await queries.last_contact(enr.email),
            paused_until=enr.paused_until,
            step=step_no,
        )
        if planned.at <= now:
            return False
        await queries.defer(enr.id, planned.at, planned.reasons)
        log.info("email.deferred", until=planned.at.isoformat(), reasons=list(planned.reasons))
        return True

    async def _send_step(self, enr: Enrollment, seq: Sequence | None, step_no: int) -> int:
        now = self.clock.now()
        if seq is None or step_no > len(seq.steps):
            why = f"sequence '{enr.sequence}' no longer has step {step_no}"
            if seq is None:
                why = f"sequence file '{enr.sequence}.yaml' is gone"
            await queries.finish(enr.id, "failed", why, now)
            log.error("email.failed", error=why)
            return 0
        step = seq.steps[step_no - 1]
        if blocked := await queries.suppressed([enr.email]):
            reason = f"address suppressed ({blocked[enr.email].reason})"
            await queries.finish(enr.id, "stopped", reason, now)
            log.info("sequence.stopped", reason=reason)
            return 0
        earlier = await queries.pending_send(enr.id, step_no)
        if earlier is None and await self._held(enr, seq, step_no, now):
            return 0
        if earlier is not None:
            # A previous run died between recording and confirming this send. It may have
            # gone out: never send it again; carry on as if it had.
            log.warning("email.uncertain", message_id=earlier.message_id)
            await self._advance(enr, seq, earlier, "uncertain", earlier.created_at)
            return 0
        box = self.settings.mailboxes[enr.mailbox]
        sender_vars = {"name": box.display_name, "address": box.address}
        try:
            contact = seq.contact_values(enr.email, enr.variables)
            if step_no == 1:
                subject = render.render(step.subject or "", contact, sender_vars).strip()
            else:
                subject = render.reply_subject(enr.thread_subject or "")
            body = render.render(step.body, contact, sender_vars)
            message_id = render.new_message_id(box.domain)
            out = render.build_message(
                from_address=box.address,
                from_name=box.display_name,
                to_address=enr.email,
                subject=subject,
                body=body,
                message_id=message_id,
                date=now,
                thread=await queries.thread(enr.id),
                unsubscribe=box.address if box.list_unsubscribe == "mailto" else None,
            )
        except SequencerError as exc:
            await queries.finish(enr.id, "failed", f"cannot render step {step_no}: {exc}", now)
            log.error("email.failed", error=str(exc))
            return 0
        sent = await queries.record_pending(enr, step_no, message_id, subject, now)
        try:
            await self.senders[enr.mailbox].send(enr.email, out.data)
        except RecipientRefused as exc:
            await queries.forget_pending(sent.id)
            await queries.suppress(enr.email, "hard_bounce", str(exc), now)
            await queries.finish_address(enr.email, "bounced", f"refused by server: {exc}", now)
            log.warning("email.refused", error=str(exc), code=exc.code)
            return 0
        except DeliveryError as exc:
            await queries.forget_pending(sent.id)
            if exc.transient:
                retry_at = self._backoff(enr)
                await queries.retry_later(enr, str(exc), retry_at)
                event = (
                    "smtp.auth_failed" if isinstance(exc, AuthenticationError) else "email.retry"
                )
                log.warning(
                    event,
                    error=str(exc),
                    code=exc.code,
                    attempt=enr.attempts + 1,
                    retry_at=retry_at.isoformat(),
                )
            else:
                await queries.finish(enr.id, "failed", f"step {step_no} refused: {exc}", now)
                log.error("email.failed", error=str(exc), code=exc.code)
            return 0
        sent_at = self.clock.now()
        await self._advance(enr, seq, sent, "sent", sent_at)
        log.info("email.sent", message_id=message_id, breakup=step.breakup)
        return 1

    def _backoff(self, enr: Enrollment) -> datetime:
        """1 minute, doubling with each consecutive failure, at most an hour."""
        doublings = min(int(enr.attempts), 6)  # 2**6 minutes is already past the cap
        return self.clock.now() + min(timedelta(minutes=2**doublings), MAX_BACKOFF)

    async def _advance(
        self, enr: Enrollment, seq: Sequence, sent: SentMessage, status: str, at: datetime
    ) -> None:
        step = seq.steps[sent.step - 1]
        following = sent.step + 1 if sent.step < len(seq.steps) else None
        planned, promised = None, False
        if following is not None:
            planned, promised = self.etiquette.step_time(
                seq,
                following,
                enr.variables,
                after=at,
                last_contact=at,
                paused_until=enr.paused_until,
                promises=promises_of(enr.promises),
            )
        still_active = await queries.record_sent(
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

    # --- the loop --------------------------------------------------------------------------
    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("daemon.stopping")
        self.stopping.set()
        self._wake.set()

    def reload_sequences(self) -> None:
        if self._reload is None:
            return
        try:
            self.sequences = self._reload()
        except SequencerError as exc:
            log.error("sequences.reload_failed", error=str(exc), kept=sorted(self.sequences))
            return
        log.info("sequences.reloaded", sequences=sorted(self.sequences))
        self._wake.set()

    async def start(self) -> None:
        """Start-up checks: every inbox must log in (a wrong password stops us here), and
        what arrived while we were down is read before anything is sent."""
        for watcher in self.watchers.values():
            await watcher.connect()
            await watcher.catch_up()
        await self.refresh_promises()

    async def refresh_promises(self) -> None:
        """Work promised times out again: a tzdata update may have moved an instant, and a
        promise keeps its local time."""
        for enr in await queries.promised_active():
            promise = promises_of(enr.promises).get(enr.steps_sent + 1)
            if promise is not None and promise.at != enr.next_at:
                await queries.defer(enr.id, promise.at, ("promise",))

    async def run(self) -> None:
        """Run until stop(): inbox watchers plus the scheduler loop."""
        watchers = [asyncio.create_task(w.run(self.stopping)) for w in self.watchers.values()]
        log.info("daemon.started", mailboxes=sorted(self.senders), sequences=sorted(self.sequences))
        try:
            while not self.stopping.is_set():
                task = asyncio.create_task(self.run_once_guarded())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                await asyncio.wait({task})
                if self.stopping.is_set():
                    break
                if not task.result():  # something went: there may be more due right away
                    await self._sleep()
        finally:
            await self._shutdown(watchers)

    async def run_once_guarded(self) -> int:
        try:
            return await self.run_once()
        except SequencerError as exc:
            log.error("scheduler.failed", error=str(exc))
            return 0

    async def _sleep(self) -> None:
        nxt = await queries.next_due_at()
        seconds = self.max_sleep
        if nxt is not None and nxt <= self.clock.now():
            nxt = None  # due but held back by pacing: look again after max_sleep
        if nxt is not None:
            seconds = max(0.0, min(seconds, (nxt - self.clock.now()).total_seconds()))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _shutdown(self, watchers: list[asyncio.Task[None]]) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("daemon.abandoned_send", tasks=len(pending))
        self.stopping.set()
        await asyncio.wait(watchers, timeout=3)
        for watcher in watchers:
            watcher.cancel()
        for sender in self.senders.values():
            await sender.close()
        log.info("daemon.stopped")
