"""Every database query, by name. No network I/O happens here, and no transaction is held
across a network call (tortoise serialises SQLite transactions within one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from tortoise.backends.base.client import TransactionalDBClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from sequencer import suppression
from sequencer.pacing import Load
from sequencer.states import ON_THE_WIRE, Agenda, Hold, Inbound, Inbox, Send, State
from sequencer.store.models import (
    ACTIVE,
    FINAL_STATES,
    AgendaItem,
    Enrollment,
    InboundMessage,
    MailboxCursor,
    MailboxState,
    SentMessage,
    Suppression,
    SuppressionLift,
)

#: Final states that mean "leave this address alone": all but `failed`, whose cause (a broken
#: template, a sequence file gone) is ours and may be fixed.
ENDED_FOR_GOOD = tuple(s for s in FINAL_STATES if s is not State.FAILED)
T = TypeVar("T")
#: Bound parameters one statement may carry on every database we run on: SQLite builds before
#: 3.32 allow 999 (SQLITE_MAX_VARIABLE_NUMBER; 32766 since), PostgreSQL 32767. Every IN (...)
#: list below is cut to fit under it with room for the statement's other parameters.
MAX_PARAMS = 999
_CHUNK = 500  # addresses per IN (...) list: half of MAX_PARAMS, the rest for other conditions


@dataclass(frozen=True)
class NewEnrollment:
    email: str
    sequence: str
    mailbox: str
    variables: dict[str, str]
    next_at: datetime
    next_reasons: tuple[str, ...] = ()
    promises: dict[str, dict[str, str]] = field(default_factory=dict)
    promised: bool = False


@dataclass(frozen=True)
class Previous:
    """How an address's last enrollment that ended for good ended."""

    email: str
    state: str
    sequence: str
    at: datetime  # when it ended
    reason: str | None
    subject: str | None  # of the inbound message that ended it, when one did


@dataclass
class EnrollOutcome:
    created: list[int] = field(default_factory=list)
    skipped_active: list[str] = field(default_factory=list)
    skipped_before: dict[str, Previous] = field(default_factory=dict)


@dataclass
class BulkOutcome:
    created: int = 0
    skipped_active: list[str] = field(default_factory=list)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    return (items[i : i + size] for i in range(0, len(items), size))


async def _by_email(
    model: type[Model], emails: Iterable[str], *columns: str
) -> list[tuple[str, ...]]:
    """(email, *columns) of every row of `model` for these addresses: one statement per
    MAX_PARAMS addresses, on the email index.

    Raw SQL on purpose: building an IN list of 500 parameters through the query builder
    costs ten times the query itself (1.6 ms against 0.15 ms on SQLite), and enrolling a
    long list asks three such questions per chunk. The condition is on the address alone
    (the state or status is filtered here): with `state = 'active'` beside it, SQLite picks
    the state index and reads every active row for each chunk, a cost that grows with the
    table. What comes back is text (nothing to convert); rows needing more are then read
    through the ORM, for the few addresses that matched."""
    client = model._meta.db
    sqlite = client.capabilities.dialect == "sqlite"
    names = ", ".join(f'"{c}"' for c in ("email", *columns))
    found: list[tuple[str, ...]] = []
    for chunk in _chunks(list(set(emails)), MAX_PARAMS):
        marks = ",".join("?" if sqlite else f"${i}" for i in range(1, len(chunk) + 1))
        sql = f'SELECT {names} FROM "{model._meta.db_table}" WHERE "email" IN ({marks})'  # noqa: S608 - names are ours
        _, rows = await client.execute_query(sql, list(chunk))
        found += [tuple(str(v) for v in row) for row in rows]
    return found


async def suppressed(emails: Iterable[str]) -> dict[str, Suppression]:
    """The entry that blocks each of these addresses: its own, else its domain's. Keyed by
    the address asked about, whatever the entry's form."""
    wanted = {e: suppression.keys(e) for e in set(emails)}
    hits = await _by_email(Suppression, {k for ks in wanted.values() for k in ks})
    entries: dict[str, Suppression] = {}
    for chunk in _chunks(sorted(h[0] for h in hits)):
        entries.update((row.email, row) for row in await Suppression.filter(email__in=chunk))
    found: dict[str, Suppression] = {}
    for address, candidates in wanted.items():
        hit = next((entries[k] for k in candidates if k in entries), None)
        if hit is not None:
            found[address] = hit
    return found


async def contacted_before(emails: Iterable[str]) -> dict[str, Previous]:
    """Addresses with no active enrollment that some sequence ended for good (replied,
    completed, bounced, unsubscribed, stopped), each with its latest such ending: who
    `enroll` leaves alone unless told `--again`."""
    return await _ended(await _by_email(Enrollment, emails, "state"))


async def _ended(states: Iterable[tuple[str, ...]]) -> dict[str, Previous]:
    """`contacted_before`, from (email, state, ...) of every enrollment of the addresses."""
    rows = list(states)
    active = {row[0] for row in rows if row[1] == ACTIVE}
    ended = {row[0] for row in rows if row[1] in ENDED_FOR_GOOD} - active
    found: dict[str, Previous] = {}
    for chunk in _chunks(sorted(ended)):
        latest: dict[str, Enrollment] = {}
        for enr in await Enrollment.filter(email__in=chunk).order_by("id"):
            if enr.state not in ENDED_FOR_GOOD:
                continue
            ended_at = enr.finished_at or enr.enrolled_at
            kept = latest.get(enr.email)
            if kept is None or ended_at >= (kept.finished_at or kept.enrolled_at):
                latest[enr.email] = enr
        ids = [r.ended_by_id for r in latest.values() if r.ended_by_id is not None]
        subjects = dict(
            await InboundMessage.filter(id__in=ids).values_list("id", "subject") if ids else []
        )
        for address, enr in latest.items():
            subject = subjects.get(enr.ended_by_id) if enr.ended_by_id is not None else None
            found[address] = Previous(
                address,
                enr.state,
                enr.sequence,
                enr.finished_at or enr.enrolled_at,
                enr.reason,
                str(subject) if subject else None,
            )
    return found


async def active_emails(emails: Iterable[str]) -> set[str]:
    return {e for e, state in await _by_email(Enrollment, emails, "state") if state == ACTIVE}


async def _active_in(emails: Iterable[str]) -> set[tuple[str, str]]:
    """(address, sequence) of each active enrollment of these addresses."""
    rows = await _by_email(Enrollment, emails, "state", "sequence")
    return {(e, seq) for e, state, seq in rows if state == ACTIVE}


@dataclass
class Screen:
    """What the database says of the addresses of one chunk of a long list, read inside the
    writing transaction: one statement per question (suppressed? enrolled, how? last
    written to when?), and the ORM only for the few that match."""

    blocked: dict[str, Suppression]
    before: dict[str, Previous]  # ended for good, not active (none asked with `again`)
    last: dict[str, datetime]  # of the others
    active: set[tuple[str, str]]  # (address, sequence) active now


async def for_a_long_list() -> None:
    """Inside the transaction that writes a long list: its look-ups go by address on an index
    (email, or the suppression list's key), also on PostgreSQL, whose statistics cannot know
    the rows this transaction is adding. An empty table's statistics make a sequential scan
    look cheaper, and then every chunk reads every row written before it (235 ms a chunk
    at 20,000 rows). SET LOCAL: for this transaction only."""
    client = Enrollment._meta.db
    if client.capabilities.dialect == "postgres":
        await client.execute_script("SET LOCAL enable_seqscan = off")


async def screen(emails: Sequence[str], *, again: bool) -> Screen:
    blocked = await suppressed(emails)
    rest = [e for e in emails if e not in blocked]
    states = await _by_email(Enrollment, rest, "state", "sequence")
    before = {} if again else await _ended(states)
    last = await last_contacts(e for e in rest if e not in before)
    active = {(e, seq) for e, state, seq in states if state == ACTIVE}
    return Screen(blocked, before, last, active)


def _admitted(
    items: Sequence[NewEnrollment],
    busy: set[str],
    same: set[tuple[str, str]] | None,
    skipped_active: list[str],
) -> list[NewEnrollment]:
    """The items to write: not active now (`busy`), or with overlap allowed (`same` given)
    not active in the same sequence; and each address once. The others go to
    `skipped_active`."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.email in busy or item.email in seen:
            skipped_active.append(item.email)
        elif same is not None and (item.email, item.sequence) in same:
            # Even with overlap allowed, never the same sequence twice at once.
            skipped_active.append(item.email)
        else:
            seen.add(item.email)
            kept.append(item)
    return kept


async def enroll(
    items: Sequence[NewEnrollment], *, allow_overlap: bool, now: datetime, again: bool = False
) -> EnrollOutcome:
    """Create enrollments in one transaction: all of them or none. An address active now is
    skipped (unless `allow_overlap`); one that a sequence ended for good is skipped unless
    `again`. Both are decided inside the transaction, so a reply recorded meanwhile counts."""
    outcome = EnrollOutcome()
    async with in_transaction():
        busy = set() if allow_overlap else await active_emails(i.email for i in items)
        before = {} if again else await contacted_before(i.email for i in items)
        same = await _active_in(i.email for i in items) if allow_overlap else None
        # An address ended for good has no active enrollment: set aside before the others.
        for item in items:
            if item.email in before:
                outcome.skipped_before[item.email] = before[item.email]
        todo = [i for i in items if i.email not in before]
        for item in _admitted(todo, busy, same, outcome.skipped_active):
            row = await Enrollment.create(
                email=item.email,
                sequence=item.sequence,
                mailbox=item.mailbox,
                variables=item.variables,
                next_at=item.next_at,
                next_reasons=list(item.next_reasons),
                promises=item.promises,
                promised=item.promised,
                enrolled_at=now,
            )
            outcome.created.append(row.id)
    return outcome


async def enroll_bulk(
    items: Sequence[NewEnrollment],
    active: set[tuple[str, str]],
    *,
    allow_overlap: bool,
    now: datetime,
) -> BulkOutcome:
    """`enroll` for one chunk of a long list, inside the caller's transaction (the whole list
    is one: all or nothing), with what `screen` found in it (`active`: who is active now,
    in which sequence; suppressed and contacted-before addresses already left out). One
    INSERT executed for all the rows (executemany: one row's parameters per execution, far
    below any parameter limit). Rows written by earlier chunks of the same transaction are
    active, so an address repeated in the list is skipped as it always was."""
    outcome = BulkOutcome()
    busy = set() if allow_overlap else {e for e, _ in active}
    kept = _admitted(items, busy, active if allow_overlap else None, outcome.skipped_active)
    if kept:
        await _insert(kept, now)
    outcome.created = len(kept)
    return outcome


async def _insert(items: Sequence[NewEnrollment], now: datetime) -> None:
    """One INSERT executed for every row (executemany), with the values tortoise would write
    (`to_db_value` of each field, as `bulk_create` does) but without a model object per row:
    what every new enrollment shares (the model's defaults, `enrolled_at`) is converted once,
    and what a plan gives (sequence, mailbox, time, reasons, promises: one plan per place)
    once per plan; only the address and the variables are converted row by row."""
    client = Enrollment._meta.db
    executor = client.executor_class(model=Enrollment, db=client)
    fields = Enrollment._meta.fields_map
    template = Enrollment(email="", sequence="", mailbox="", enrolled_at=now)
    columns: list[str] = list(executor.regular_columns)
    shared = [fields[c].to_db_value(getattr(template, c), template) for c in columns]
    planned: dict[tuple[Any, ...], list[Any]] = {}
    email, variables = fields["email"], fields["variables"]
    at_email, at_variables = columns.index("email"), columns.index("variables")
    encode = _json_encoder(variables, template)
    rows = []
    for item in items:
        # A plan's promises are one dict shared by its rows (all alive here: ids are unique).
        key = (item.sequence, item.mailbox, item.next_at, item.next_reasons, id(item.promises))
        base = planned.get((*key, item.promised))
        if base is None:
            base = planned[(*key, item.promised)] = shared.copy()
            for column, value in (
                ("sequence", item.sequence),
                ("mailbox", item.mailbox),
                ("next_at", item.next_at),
                ("next_reasons", list(item.next_reasons)),
                ("promises", item.promises),
                ("promised", item.promised),
            ):
                base[columns.index(column)] = fields[column].to_db_value(value, template)
        row = base.copy()
        row[at_email] = email.to_db_value(item.email, template)
        row[at_variables] = encode(item.variables)
        rows.append(row)
    await client.execute_many(executor.insert_query, rows)


def _json_encoder(field: Any, instance: Enrollment) -> Callable[[Any], Any]:
    """`field.to_db_value` for a dict. When that is the standard library's json.dumps with
    fixed options (tortoise's default), one encoder with those options, made once: json.dumps
    with options builds a new encoder per call, a third of a row's conversion time."""
    encoder = getattr(field, "encoder", None)
    if (
        isinstance(encoder, functools.partial)
        and encoder.func is json.dumps
        and not encoder.args
        and not field.validators
    ):
        return json.JSONEncoder(**encoder.keywords).encode
    return lambda value: field.to_db_value(value, instance)


async def next_due_at() -> datetime | None:
    """The earliest next send of a contact nothing holds: the first entry of the due index
    (a held contact waits for its hold, which the tick releases, not for its time)."""
    row = (
        await Enrollment.filter(state=ACTIVE, hold__isnull=True, next_at__not_isnull=True)
        .order_by("next_at")
        .first()
        .values_list("next_at", flat=True)
    )
    return row if isinstance(row, datetime) else None


async def defer(enrollment_id: int, at: datetime, reasons: Sequence[str]) -> None:
    """A claimed step may not go yet (window, gap, out-of-office): move it and let go."""
    await Enrollment.filter(id=enrollment_id, state=ACTIVE).update(
        next_at=at, next_reasons=list(reasons), claimed_until=None
    )


async def last_contact(email: str) -> datetime | None:
    """When this address was last written to, by any sequence or mailbox (or is being)."""
    row = (
        await SentMessage.filter(email=email, status__in=ON_THE_WIRE)
        .order_by("-attempted_at")
        .first()
        .values_list("attempted_at", flat=True)
    )
    return row if isinstance(row, datetime) else None


async def last_contacts(emails: Iterable[str]) -> dict[str, datetime]:
    """The last email to each of these addresses, for the gap at enrolment."""
    rows = await _by_email(SentMessage, emails, "status")
    wanted = sorted({e for e, status in rows if status in ON_THE_WIRE})
    found: dict[str, datetime] = {}
    for chunk in _chunks(wanted):
        rows = await SentMessage.filter(email__in=chunk, status__in=ON_THE_WIRE).values_list(
            "email", "attempted_at"
        )
        for address, at in rows:
            if isinstance(at, datetime) and (str(address) not in found or at > found[str(address)]):
                found[str(address)] = at
    return found


async def sent_since(mailbox: str, since: datetime) -> int:
    return await SentMessage.filter(
        mailbox=mailbox, attempted_at__gte=since, status__in=ON_THE_WIRE
    ).count()


async def mailbox_load(mailbox: str, day_start: datetime) -> Load:
    """What pacing needs to know of a mailbox: sends since its local midnight, when its
    spacing frees it, and any reputation pause."""
    row = await MailboxState.get_or_none(mailbox=mailbox)
    return Load(
        await sent_since(mailbox, day_start),
        row.next_free_at if row else None,
        row.paused_until if row else None,
    )


async def _upsert(model: Any, mailbox: str, **values: Any) -> None:
    """Update the mailbox's row, or create it; a daemon racing us to create it wins, and we
    update what it wrote."""
    if await model.filter(mailbox=mailbox).update(**values):
        return
    try:
        await model.create(mailbox=mailbox, **values)
    except IntegrityError:
        await model.filter(mailbox=mailbox).update(**values)


class _Together:
    """Group commit for the rows each mailbox's watcher keeps (its state, its catch-up, its
    cursor): what is asked for while a write is under way goes in the next one, all of it in
    one transaction, one `INSERT ... ON CONFLICT DO UPDATE` per table and set of columns.

    500 watchers starting at once, or their keepalive round, are then a few statements
    instead of thousands, each of which waited its turn on SQLite's one connection (and its
    own commit). Each caller still returns only once its values are committed, and gets the
    error if the write failed (so `db.retrying` retries it as before). Two writes of the same
    row are merged, the later one's values winning: what writing them in turn would leave."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[tuple[type[Model], str], tuple[dict[str, Any], list[Waiter]]] = {}
        self._writer: asyncio.Task[None] | None = None

    async def upsert(self, model: type[Model], mailbox: str, values: dict[str, Any]) -> None:
        if isinstance(model._meta.db, TransactionalDBClient):
            await _upsert(model, mailbox, **values)  # part of the caller's own transaction
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): nothing carries over
            self._loop, self._pending, self._writer = loop, {}, None
        done: Waiter = loop.create_future()
        merged, waiting = self._pending.get((model, mailbox), ({}, []))
        self._pending[(model, mailbox)] = ({**merged, **values}, [*waiting, done])
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            waiting = [w for _, ws in batch.values() for w in ws]
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for w in waiting + [w for _, ws in self._pending.values() for w in ws]:
                    w.cancel()
                raise
            except Exception as exc:  # every caller of this batch gets it, and may retry
                for w in waiting:
                    if not w.done():
                        w.set_exception(exc)
                continue
            for w in waiting:
                if not w.done():
                    w.set_result(None)

    @staticmethod
    async def _commit(batch: dict[tuple[type[Model], str], tuple[dict[str, Any], Any]]) -> None:
        groups: dict[tuple[type[Model], tuple[str, ...]], list[Model]] = {}
        for (model, mailbox), (values, _) in batch.items():
            key = (model, tuple(sorted(values)))
            groups.setdefault(key, []).append(model(mailbox=mailbox, **values))
        async with in_transaction():
            for (model, columns), rows in groups.items():
                await model.bulk_create(rows, on_conflict=["mailbox"], update_fields=columns)


Waiter = asyncio.Future[None]
_together = _Together()


async def mailbox_states() -> dict[str, MailboxState]:
    return {row.mailbox: row for row in await MailboxState.all()}


#: The columns that can hold a mailbox (`Daemon.holds`): a row with all of them empty holds
#: nothing, exactly as no row at all.
_HOLD_COLUMNS = (
    "manual_since",
    "manual_until",
    "smtp_failed_since",
    "smtp_retry_at",
    "smtp_error",
    "paused_until",
    "pause_reason",
)


#: What a daemon that does not watch a mailbox's inbox reads of the watcher's record.
_WATCH_COLUMNS = ("inbox", "inbox_error", "caught_up_at", "watcher")


async def mailbox_holds(watched_elsewhere: Iterable[str] = ()) -> dict[str, MailboxState]:
    """The rows of the mailboxes something may hold (paused by hand, a refused SMTP login, a
    reputation pause), and of those whose inbox another daemon watches (its record says
    whether it is watching), with those columns only. Every tick asks; with hundreds of
    mailboxes, one daemon and none held it reads no row, where reading them all whole parsed
    ten dates a mailbox."""
    held = (
        Q(manual_since__isnull=False)
        | Q(smtp_failed_since__isnull=False)
        | Q(smtp_error__isnull=False)
        | Q(paused_until__isnull=False)
    )
    columns = ["mailbox", *_HOLD_COLUMNS]
    if elsewhere := sorted(set(watched_elsewhere)):
        held |= Q(mailbox__in=elsewhere)
        columns += _WATCH_COLUMNS
    rows = await MailboxState.filter(held).only(*columns)
    return {row.mailbox: row for row in rows}


async def set_inbox(
    mailbox: str, state: Inbox, now: datetime, error: str | None, watcher: str | None = None
) -> None:
    """The inbox watcher's state, for `status --mailboxes` (written when it changes)."""
    values = {"inbox": state, "inbox_since": now, "inbox_error": error, "watcher": watcher}
    await _together.upsert(MailboxState, mailbox, values)


async def caught_up(mailbox: str, at: datetime) -> None:
    await _together.upsert(MailboxState, mailbox, {"caught_up_at": at})


async def smtp_refused_login(mailbox: str, error: str, now: datetime, retry_at: datetime) -> bool:
    """Hold the mailbox: its SMTP login was refused. True when it was not held already (the
    caller logs the news once)."""
    row = await MailboxState.get_or_none(mailbox=mailbox)
    fresh = row is None or row.smtp_failed_since is None
    since = now if fresh or row is None else row.smtp_failed_since
    await _upsert(
        MailboxState,
        mailbox,
        smtp_failed_since=since,
        smtp_retry_at=retry_at,
        smtp_error=error,
    )
    return fresh


async def smtp_login_ok(mailbox: str) -> bool:
    """The SMTP login works: release the hold. True when there was one."""
    return bool(
        await MailboxState.filter(mailbox=mailbox, smtp_failed_since__isnull=False).update(
            smtp_failed_since=None, smtp_retry_at=None, smtp_error=None
        )
    )


async def mailbox_pause(mailbox: str) -> tuple[datetime | None, str | None]:
    row = await MailboxState.get_or_none(mailbox=mailbox)
    return (row.paused_until, row.pause_reason) if row else (None, None)


async def pause_mailbox(mailbox: str, until: datetime, reason: str, now: datetime) -> bool:
    """Hold all sending from a mailbox until `until`. True when it was not already paused
    (so the caller logs the news once, not for every bounce that repeats it)."""
    current, _ = await mailbox_pause(mailbox)
    fresh = current is None or current <= now
    if current is not None and current >= until:
        return fresh
    await _upsert(MailboxState, mailbox, paused_until=until, pause_reason=reason)
    return fresh


async def soft_bounces(email: str, since: datetime) -> list[datetime]:
    """When soft bounces (not delays, not policy) for this address's enrollments arrived."""
    rows = await InboundMessage.filter(
        enrollment__email=email,
        verdict="bounce",
        kind__in=["mailbox_full", "other"],
        received_at__gte=since,
    ).values_list("received_at", flat=True)
    return sorted(r for r in list[Any](rows) if isinstance(r, datetime))


async def pause(
    enrollment_id: int, until: datetime, next_at: datetime | None, reasons: Sequence[str]
) -> None:
    """An out-of-office or a soft bounce: nothing goes before `until`."""
    await Enrollment.filter(id=enrollment_id, state=ACTIVE).update(
        paused_until=until, next_at=next_at, next_reasons=list(reasons)
    )


async def active_of(email: str) -> list[Enrollment]:
    return list(await Enrollment.filter(email=email, state=ACTIVE).order_by("id"))


async def promised_active() -> list[Enrollment]:
    """Active contacts with a promised time (an equality on the (state, promised) index),
    with only what checking the promise needs: at start-up, not every column of each."""
    query = Enrollment.filter(state=ACTIVE, promised=True).order_by("id")
    return list(await query.only("id", "promises", "steps_sent", "next_at"))


async def release_claim(enrollment_id: int) -> None:
    """Let go of a claim without changing anything else (the mailbox, not the contact, is
    why it cannot go now)."""
    await Enrollment.filter(id=enrollment_id).update(claimed_until=None)


async def renew_claims(enrollment_ids: Iterable[int], until: datetime) -> None:
    """Extend the leases of sends in progress (a crashed daemon's leases run out soon)."""
    ids = list(enrollment_ids)
    if ids:
        await Enrollment.filter(id__in=ids, claimed_until__isnull=False).update(claimed_until=until)


async def release_claims() -> int:
    """Let go of every claim: the caller owns the whole database (SQLite's one daemon), so
    any claim left is a dead process's, and holding it would stall its contacts."""
    return await Enrollment.filter(claimed_until__isnull=False).update(claimed_until=None)


async def step_message(enrollment_id: int, step: int) -> SentMessage | None:
    """This step's message row, if one was written: its Message-ID is reused by any retry."""
    return await SentMessage.get_or_none(enrollment_id=enrollment_id, step=step)


async def record_pending(
    enr: Enrollment, step: int, message_id: str, subject: str, now: datetime
) -> SentMessage:
    """The step's message row, with its Message-ID, before anything is sent."""
    return await SentMessage.create(
        enrollment_id=enr.id,
        email=enr.email,
        mailbox=enr.mailbox,
        step=step,
        message_id=message_id,
        subject=subject,
        status=Send.PENDING,
        created_at=now,
    )


async def data_started(sent_id: int, now: datetime, data: bytes | None = None) -> None:
    """DATA is about to start: from here, only a definite answer says what happened. `data`:
    the bytes, kept until their copy is in the Sent folder."""
    await SentMessage.filter(id=sent_id).update(status=Send.SENDING, attempted_at=now, data=data)


async def not_sent(sent_id: int) -> None:
    """The server refused the message for sure: nothing was delivered; a retry of the step
    reuses the row and its Message-ID."""
    await SentMessage.filter(id=sent_id).update(status=Send.PENDING, attempted_at=None)


async def set_send_status(sent_id: int, status: Send) -> None:
    await SentMessage.filter(id=sent_id).update(status=status)


async def copied(sent_id: int, now: datetime) -> None:
    await SentMessage.filter(id=sent_id).update(copied_at=now, data=None)


async def uncopied(mailbox: str, limit: int = 100) -> list[SentMessage]:
    """Sent messages whose copy has not reached the Sent folder yet, oldest first."""
    return list(
        await SentMessage.filter(mailbox=mailbox, status=Send.SENT, copied_at__isnull=True)
        .order_by("id")
        .limit(limit)
    )


async def hold(enrollment_id: int, reason: Hold, detail: str, now: datetime) -> bool:
    """Hold one active contact; a hold already in place stays (it is released first)."""
    return bool(
        await Enrollment.filter(id=enrollment_id, state=ACTIVE, hold__isnull=True).update(
            hold=reason, hold_since=now, hold_detail=detail, claimed_until=None
        )
    )


async def release_hold(
    enrollment_ids: Iterable[int], reason: Hold, next_at: datetime | None = None
) -> int:
    """Release holds of this reason; a failed inbound message that still concerns one of
    them holds it again at once (one hold is stored at a time, and none is lost). A failed
    message being settled must be marked handled or deleted first."""
    ids = list(enrollment_ids)
    if not ids:
        return 0
    values: dict[str, Any] = {
        "hold": None,
        "hold_since": None,
        "hold_detail": None,
        "hold_until": None,
    }
    if next_at is not None:
        values["next_at"] = next_at
    released = await Enrollment.filter(id__in=ids, hold=reason).update(**values)
    for failed in await InboundMessage.filter(status=Inbound.FAILED):
        for held_id in set(failed.held) & set(ids):
            await hold(held_id, Hold.INBOUND_FAILED, _failed_detail(failed), failed.received_at)
    return released


def _failed_detail(row: InboundMessage) -> str:
    return f"message {row.message_id or '(no Message-ID)'} could not be handled: {row.error}"


async def held(reason: Hold) -> list[Enrollment]:
    """The active contacts held for `reason`, by id. Sorted here: an ORDER BY id leads
    SQLite without statistics to read every active row in id order rather than the few
    held ones on the held index."""
    rows = await Enrollment.filter(hold=reason, state=ACTIVE)
    return sorted(rows, key=lambda r: r.id)


async def retry_later(enr: Enrollment, error: str, at: datetime) -> None:
    await Enrollment.filter(id=enr.id, state=ACTIVE).update(
        next_at=at, attempts=enr.attempts + 1, last_error=error, claimed_until=None
    )


async def finish(
    enrollment_id: int, state: State, reason: str, now: datetime, inbound_id: int | None = None
) -> bool:
    changed = await Enrollment.filter(id=enrollment_id, state=ACTIVE).update(
        state=state,
        reason=reason,
        next_at=None,
        claimed_until=None,
        finished_at=now,
        ended_by_id=inbound_id,
        hold=None,
        hold_since=None,
        hold_detail=None,
        hold_until=None,
    )
    return bool(changed)


async def finish_address(
    email: str,
    state: State,
    reason: str,
    now: datetime,
    inbound_id: int | None = None,
    sequence: str | None = None,
) -> list[int]:
    """End every active enrollment of an address (optionally of one sequence): the ids it
    ended, in order. One `UPDATE ... RETURNING` (SQLite 3.35+, PostgreSQL), on the email
    index: no read before it, and a row another daemon ends first is simply not returned."""
    values: list[Any] = [state.value, reason, now, inbound_id, email, ACTIVE.value]
    where = "email = ? AND state = ?"
    if sequence is not None:
        where += " AND sequence = ?"
        values.append(sequence)
    sql = (
        'UPDATE "enrollment" SET state = ?, reason = ?, next_at = NULL, claimed_until = NULL,'  # noqa: S608
        " finished_at = ?, ended_by_id = ?, hold = NULL, hold_since = NULL,"
        f" hold_detail = NULL, hold_until = NULL WHERE {where} RETURNING id"
    )
    client = Enrollment._meta.db
    if client.capabilities.dialect == "postgres":
        sql = _numbered(sql)
    # execute_query_dict: tortoise's asyncpg client drops the rows of an UPDATE otherwise.
    rows = await client.execute_query_dict(sql, values)
    return sorted(int(row["id"]) for row in rows)


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`."""
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


async def suppress(
    email: str, reason: str, detail: str, now: datetime, *, source: str | None = None
) -> bool:
    """Put an address (or an @domain) on the suppression list. True when it is new; when it
    was already there the first reason stands. `source` defaults from the daemon's reason
    codes (hard_bounce -> bounce, unsubscribe -> reply, complaint -> complaint)."""
    try:
        await Suppression.create(
            email=email.strip().lower(),
            reason=reason[: suppression.REASON_MAX],
            detail=detail,
            source=source or suppression.source_for(reason),
            created_at=now,
        )
    except IntegrityError:
        return False
    return True


async def suppression_entry(entry: str) -> Suppression | None:
    return await Suppression.get_or_none(email=entry)


async def suppression_list() -> list[Suppression]:
    return list(await Suppression.all().order_by("email"))


async def suppression_lifts() -> list[SuppressionLift]:
    return list(await SuppressionLift.all().order_by("lifted_at", "id"))


async def stop_suppressed(entries: Iterable[str], reason: str, now: datetime) -> list[Enrollment]:
    """Stop every active enrollment these entries (addresses or @domains) cover."""
    wanted = set(entries)
    addresses = sorted(
        e for e in wanted if not (suppression.is_domain(e) or suppression.is_hashed(e))
    )
    ids: set[int] = set()
    for chunk in _chunks(addresses):
        found = await Enrollment.filter(email__in=chunk, state=ACTIVE).values_list("id", flat=True)
        ids |= {int(str(i)) for i in found}
    if len(addresses) < len(wanted):
        # @domains and hashed entries are matched here rather than in SQL: the active set is
        # small and indexed by state.
        for enrollment_id, address in await Enrollment.filter(state=ACTIVE).values_list(
            "id", "email"
        ):
            if set(suppression.keys(str(address))[1:]) & wanted:
                ids.add(int(str(enrollment_id)))
    ended = []
    for chunk_ids in _chunks(sorted(ids)):
        for row in await Enrollment.filter(id__in=chunk_ids).order_by("id"):
            if await finish(row.id, State.STOPPED, reason, now):
                ended.append(row)
    return ended


@dataclass
class Imported:
    added: int = 0  # distinct entries
    present: int = 0  # distinct entries already on the list
    stopped: list[Enrollment] = field(default_factory=list)


async def import_suppressions(
    entries: Sequence[tuple[str, str, str]], source: str, now: datetime, stop_reason: str
) -> Imported:
    """Add (entry, reason, detail) rows in one transaction, entries already there left as
    they are, and stop the active enrollments the new ones cover."""
    result = Imported()
    async with in_transaction():
        present: set[str] = set()
        for chunk in _chunks(sorted({e for e, _, _ in entries})):
            present |= {
                str(e)
                for e in await Suppression.filter(email__in=chunk).values_list("email", flat=True)
            }
        new: dict[str, Suppression] = {}
        for entry, reason, detail in entries:
            if entry not in present and entry not in new:
                new[entry] = Suppression(
                    email=entry, reason=reason, detail=detail, source=source, created_at=now
                )
        result.present = len(present)
        # A daemon suppressing one of them at this very moment is not an error.
        await Suppression.bulk_create(list(new.values()), batch_size=_CHUNK, ignore_conflicts=True)
        result.added = len(new)
        result.stopped = await stop_suppressed(new, stop_reason, now)
    return result


async def lift(entry: str, reason: str, now: datetime) -> Suppression | None:
    """Take an entry off the suppression list, logging what it was and why it went; None
    when it was not there."""
    async with in_transaction():
        row = await Suppression.get_or_none(email=entry)
        if row is None or not await Suppression.filter(email=entry).delete():
            return None
        await SuppressionLift.create(
            email=entry,
            reason=reason,
            lifted_at=now,
            suppressed_reason=row.reason,
            suppressed_detail=row.detail,
            suppressed_source=row.source or suppression.source_for(row.reason),
            suppressed_at=row.created_at,
        )
    return row


async def enrollment_for_message_ids(message_ids: Iterable[str]) -> Enrollment | None:
    ids = list(message_ids)
    if not ids:
        return None
    sent = await SentMessage.filter(message_id__in=ids).order_by("-step").first()
    if sent is None:
        return None
    return await Enrollment.get(id=sent.enrollment_id)  # type: ignore[attr-defined]


async def thread_of(
    message_id: str | None, related: Sequence[str]
) -> tuple[bool, Enrollment | None]:
    """For an inbound message: whether it is one of ours (its own Message-ID is one we sent),
    and else the enrollment its thread headers answer (the latest step among them). One read
    of the sent log for both, then the enrollment."""
    ids = [*([message_id] if message_id else []), *related]
    if not ids:
        return False, None
    sent = await (
        SentMessage.filter(message_id__in=ids)
        .order_by("-step")
        .values_list("message_id", "enrollment_id")
    )
    if any(found == message_id for found, _ in sent):
        return True, None
    if not sent:
        return False, None
    return False, await Enrollment.get(id=sent[0][1])


async def was_handled(message_id: str) -> bool:
    """A message with this Message-ID was handled already (UIDVALIDITY re-reads skip it)."""
    return await InboundMessage.exists(message_id=message_id, status=Inbound.HANDLED)


async def enrollments_of(email: str) -> list[Enrollment]:
    """Active first, then the most recent: who a message from this address is about."""
    rows = await Enrollment.filter(email=email).order_by("-enrolled_at")
    return sorted(rows, key=lambda r: r.state != ACTIVE)


async def record_inbound(replaces: int | None = None, **values: Any) -> InboundMessage | None:
    """Insert the inbound log row; None when this (mailbox, uidvalidity, uid) was handled.
    `replaces`: the failed row of the same message, now handled (call in a transaction)."""
    if replaces is not None:
        await InboundMessage.filter(id=replaces, status=Inbound.FAILED).delete()
    try:
        return await InboundMessage.create(**values)
    except IntegrityError:
        return None


async def record_failed_inbound(
    *,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    error: str,
    message_id: str | None,
    from_address: str | None,
    subject: str,
    held: Sequence[int],
    now: datetime,
) -> InboundMessage:
    """Keep a message whose handling raised, and hold every enrollment it may concern."""
    async with in_transaction():
        row = await InboundMessage.get_or_none(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid)
        if row is None:
            row = await InboundMessage.create(
                mailbox=mailbox,
                uidvalidity=uidvalidity,
                uid=uid,
                message_id=message_id,
                from_address=from_address,
                subject=subject,
                verdict="",
                status=Inbound.FAILED,
                error=error,
                attempts=1,
                content=raw,
                held=list(held),
                received_at=now,
            )
        else:
            row.error, row.attempts = error, row.attempts + 1
            row.held = sorted(set(row.held) | set(held))
            await row.save(update_fields=["error", "attempts", "held"])
        for enrollment_id in held:
            await hold(enrollment_id, Hold.INBOUND_FAILED, _failed_detail(row), now)
    return row


async def dismiss_inbound_hold(enrollment_id: int) -> None:
    """A person read the message themselves: it holds this contact no more (the message
    stays recorded as failed, and is still retried for the others it concerns)."""
    async with in_transaction():
        for row in await InboundMessage.filter(status=Inbound.FAILED):
            if enrollment_id in row.held:
                row.held = [i for i in row.held if i != enrollment_id]
                await row.save(update_fields=["held"])
        await release_hold([enrollment_id], Hold.INBOUND_FAILED)


async def drop_failed_inbound(inbound_id: int) -> list[int]:
    """Forget a failed message that concerns nobody after all; the ids it held."""
    row = await InboundMessage.get_or_none(id=inbound_id, status=Inbound.FAILED)
    if row is None:
        return []
    await row.delete()
    return list(row.held)


async def failed_inbound() -> list[InboundMessage]:
    return list(await InboundMessage.filter(status=Inbound.FAILED).order_by("id"))


async def set_inbound_action(inbound_id: int, action: str) -> None:
    await InboundMessage.filter(id=inbound_id).update(action=action)


async def get_cursor(mailbox: str) -> MailboxCursor | None:
    return await MailboxCursor.get_or_none(mailbox=mailbox)


async def set_cursor(mailbox: str, uidvalidity: int, last_uid: int) -> None:
    """Move the cursor on, never back: with several daemons, one's last look may run behind
    the watcher's (a new UIDVALIDITY always replaces the old)."""
    moved = Q(mailbox=mailbox) & (~Q(uidvalidity=uidvalidity) | Q(last_uid__lt=last_uid))
    if await MailboxCursor.filter(moved).update(uidvalidity=uidvalidity, last_uid=last_uid):
        return
    with contextlib.suppress(IntegrityError):  # there already, and as far on
        await MailboxCursor.create(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid)


async def listing(email: str | None = None) -> list[tuple[Enrollment, InboundMessage | None]]:
    """Enrollments, each with the inbound message that ended it (if one did)."""
    query = Enrollment.all() if email is None else Enrollment.filter(email=email)
    rows = list(await query.order_by("id"))
    ids = [r.ended_by_id for r in rows if r.ended_by_id is not None]
    inbound = {m.id: m for m in await InboundMessage.filter(id__in=ids)} if ids else {}
    return [(r, inbound.get(r.ended_by_id) if r.ended_by_id else None) for r in rows]


async def stop_by_hand(email: str, sequence: str | None, now: datetime) -> list[int]:
    return await finish_address(email, State.STOPPED, "manual", now, sequence=sequence)


async def active_at_domain(domain: str) -> list[Enrollment]:
    """Every active enrollment of an address at exactly this domain."""
    suffix = "@" + domain.lower()
    rows = await Enrollment.filter(state=ACTIVE, email__endswith=suffix).order_by("id")
    return [r for r in rows if r.email.endswith(suffix)]  # LIKE may fold case or wildcards


async def record_reply(
    enrollment_id: int,
    intent: str | None,
    follow_up_on: date | None,
    referral: list[dict[str, str | None]],
) -> None:
    """What a human reply asked for, kept with the enrollment it answered."""
    await Enrollment.filter(id=enrollment_id).update(
        reply_intent=intent, follow_up_on=follow_up_on, referral=referral
    )


async def add_agenda(
    kind: Agenda,
    email: str,
    *,
    received_at: datetime,
    sequence: str | None = None,
    enrollment_id: int | None = None,
    inbound_id: int | None = None,
    follow_up_on: date | None = None,
    referral: list[dict[str, str | None]] | None = None,
    excerpt: str = "",
    note: str = "",
) -> AgendaItem:
    return await AgendaItem.create(
        kind=kind,
        email=email,
        sequence=sequence,
        enrollment_id=enrollment_id,
        inbound_id=inbound_id,
        received_at=received_at,
        follow_up_on=follow_up_on,
        referral=referral or [],
        excerpt=excerpt,
        note=note,
    )


async def agenda(due_by: date | None) -> list[AgendaItem]:
    """Open items, newest first. `due_by`: a not-now item with a date shows only from 14 days
    before it (the caller's horizon); None shows every item."""
    query = AgendaItem.all()
    if due_by is not None:
        query = query.filter(
            Q(kind__not=Agenda.NOT_NOW) | Q(follow_up_on__isnull=True) | Q(follow_up_on__lte=due_by)
        )
    return list(await query.order_by("-received_at", "-id"))


async def agenda_done(item_id: int) -> AgendaItem | None:
    """Clear one item; None when there is no such item."""
    async with in_transaction():
        row = await AgendaItem.get_or_none(id=item_id)
        if row is None:
            return None
        await AgendaItem.filter(id=item_id).delete()
    return row


@dataclass
class Forgotten:
    """What `forget` erased, by kind, and the hashed entry that keeps them suppressed."""

    entry: str
    enrollments: int = 0
    sent_messages: int = 0
    inbound_messages: int = 0
    agenda_items: int = 0
    suppressions: int = 0
    referrals: int = 0  # entries naming them in other people's referral lists, removed
    mentions: int = 0  # other rows whose text named them (an action, a reason, a note)


async def forget(email: str, now: datetime) -> Forgotten:
    """Erase everything stored about an address, in one transaction, and keep only its hashed
    suppression entry so it is never written to again (GDPR Art. 17 with Art. 21 kept)."""
    entry = suppression.hashed(email)
    done = Forgotten(entry)
    async with in_transaction():
        ids = [
            int(str(i)) for i in await Enrollment.filter(email=email).values_list("id", flat=True)
        ]
        inbound = InboundMessage.filter(Q(from_address=email) | Q(enrollment_id__in=ids or [-1]))
        gone = [int(str(i)) for i in await inbound.values_list("id", flat=True)]
        if gone:
            # Other people's enrollments a message of theirs ended (a colleague's reply that
            # stopped the whole domain) keep their state, not a pointer to erased mail.
            await Enrollment.filter(ended_by_id__in=gone).update(ended_by_id=None)
        done.inbound_messages = await InboundMessage.filter(id__in=gone or [-1]).delete()
        done.agenda_items = await AgendaItem.filter(
            Q(email=email) | Q(enrollment_id__in=ids or [-1]) | Q(inbound_id__in=gone or [-1])
        ).delete()
        done.sent_messages = await SentMessage.filter(
            Q(email=email) | Q(enrollment_id__in=ids or [-1])
        ).delete()
        done.enrollments = await Enrollment.filter(id__in=ids or [-1]).delete()
        done.suppressions = await Suppression.filter(email=email).delete()
        await SuppressionLift.filter(email=email).delete()
        done.referrals = await _scrub_referrals(email)
        done.mentions = await _scrub_mentions(email, now)
        if not await Suppression.exists(email=entry):
            await Suppression.create(
                email=entry,
                reason="forgotten",
                detail="erased on request; kept hashed so they are never written to again",
                source="forget",
                created_at=now,
            )
    return done


async def _scrub_referrals(email: str) -> int:
    """Remove an address from the referral lists of other people's replies and agenda items
    (a referral item left naming nobody is dropped)."""
    removed = 0
    for enr in await Enrollment.filter(reply_intent__isnull=False):
        kept = [r for r in enr.referral if r.get("address") != email]
        if len(kept) != len(enr.referral):
            removed += len(enr.referral) - len(kept)
            await Enrollment.filter(id=enr.id).update(referral=kept)
    for item in await AgendaItem.all():
        kept = [r for r in item.referral if r.get("address") != email]
        if len(kept) == len(item.referral):
            continue
        removed += len(item.referral) - len(kept)
        if not kept and item.kind is Agenda.REFERRAL:
            await AgendaItem.filter(id=item.id).delete()
        else:
            await AgendaItem.filter(id=item.id).update(referral=kept)
    return removed


ERASED = "[erased]"


#: The variable that records who referred a contact (`referred_by` holds their name).
REFERRED_BY_EMAIL = "referred_by_email"


async def _scrub_mentions(email: str, now: datetime) -> int:
    """Their address where other rows mention it in text: what the daemon did about a message
    (`suppressed pat@...`), why an enrollment ended, an agenda note, a referral's referred_by."""
    changed = 0
    for inbound in await InboundMessage.filter(action__contains=email):
        await InboundMessage.filter(id=inbound.id).update(
            action=inbound.action.replace(email, ERASED)
        )
        changed += 1
    for enr in await Enrollment.filter(reason__contains=email):
        await Enrollment.filter(id=enr.id).update(reason=(enr.reason or "").replace(email, ERASED))
        changed += 1
    for item in await AgendaItem.filter(Q(note__contains=email) | Q(excerpt__contains=email)):
        await AgendaItem.filter(id=item.id).update(
            note=item.note.replace(email, ERASED), excerpt=item.excerpt.replace(email, ERASED)
        )
        changed += 1
    for enrollment_id, values in await Enrollment.all().values_list("id", "variables"):
        if isinstance(values, dict) and values.get(REFERRED_BY_EMAIL) == email:
            # A colleague they referred: the messages would name someone who asked to be
            # erased, so the sequence stops (fail closed) and the name goes.
            await finish(int(str(enrollment_id)), State.STOPPED, "referrer forgotten", now)
            await Enrollment.filter(id=enrollment_id).update(
                variables={**values, "referred_by": ERASED, REFERRED_BY_EMAIL: ERASED}
            )
            changed += 1
    return changed


async def service_summary() -> tuple[int, dict[str, datetime]]:
    """For systemd's STATUS= line: how many enrollments are active, and the earliest next
    send of each mailbox among contacts not held one by one. One grouped query over the
    active entries of the tally index (state, mailbox, hold, next_at), never the rows."""
    from tortoise.functions import Min

    rows = (
        await Enrollment.filter(state=ACTIVE)
        .annotate(n=Count("id"), first=Min("next_at"))
        .group_by("mailbox", "hold")
        .values_list("mailbox", "hold", "n", "first")
    )
    active = 0
    firsts: dict[str, datetime] = {}
    for mailbox, hold, n, first in rows:
        active += int(str(n))
        if hold is None and isinstance(first, datetime):
            firsts[str(mailbox)] = first
    return active, firsts


# --- pause, resume, retry ----------------------------------------------------------------


async def pause_contact(
    enrollment_id: int,
    *,
    until: datetime | None,
    next_at: datetime | None,
    reasons: Sequence[str],
    detail: str,
    now: datetime,
    keep_promise: bool,
) -> bool:
    """Hold one active contact by hand (`sequencer pause`), until `until` or until resumed.
    A pause replaces an earlier pause; any other hold stays (it is settled first)."""
    values: dict[str, Any] = {
        "hold": Hold.MANUAL_PAUSE,
        "hold_since": now,
        "hold_detail": detail,
        "hold_until": until,
        "claimed_until": None,
    }
    if next_at is not None:
        values.update(next_at=next_at, next_reasons=list(reasons))
    if not keep_promise:
        values["promised"] = False
    query = Enrollment.filter(id=enrollment_id, state=ACTIVE)
    return bool(
        await query.filter(Q(hold__isnull=True) | Q(hold=Hold.MANUAL_PAUSE)).update(**values)
    )


async def end_pauses(now: datetime) -> int:
    """Release the manual pauses whose end has come (one range of the held index: only
    active contacts are held)."""
    ids = await Enrollment.filter(
        hold=Hold.MANUAL_PAUSE, state=ACTIVE, hold_until__lte=now
    ).values_list("id", flat=True)
    return await release_hold([int(str(i)) for i in ids], Hold.MANUAL_PAUSE)


async def resume_contact(enrollment_id: int, next_at: datetime | None) -> bool:
    """Lift a manual pause; `next_at`: a time worked out again (the old one passed during
    the pause, and a promise that passed can no longer be kept exactly)."""
    if next_at is not None:
        await Enrollment.filter(id=enrollment_id, hold=Hold.MANUAL_PAUSE).update(
            promised=False, next_reasons=["manual_pause"]
        )
    return bool(await release_hold([enrollment_id], Hold.MANUAL_PAUSE, next_at=next_at))


async def pause_mailbox_by_hand(mailbox: str, until: datetime | None, now: datetime) -> None:
    """Nothing from this mailbox until `until` (None: until resumed); its inbox is still
    watched, so replies meanwhile stop their sequences as always."""
    await _upsert(MailboxState, mailbox, manual_since=now, manual_until=until)


async def resume_mailbox_by_hand(mailbox: str) -> bool:
    """Lift a manual pause; True when there was one."""
    return bool(
        await MailboxState.filter(mailbox=mailbox, manual_since__isnull=False).update(
            manual_since=None, manual_until=None
        )
    )


async def retry_failed(enrollment_id: int, next_at: datetime, reasons: Sequence[str]) -> bool:
    """Put a failed enrollment back where it failed: active, the same step, no attempts."""
    return bool(
        await Enrollment.filter(id=enrollment_id, state=State.FAILED).update(
            state=ACTIVE,
            reason=None,
            finished_at=None,
            attempts=0,
            last_error=None,
            next_at=next_at,
            next_reasons=list(reasons),
            claimed_until=None,
            hold=None,
            hold_since=None,
            hold_detail=None,
            hold_until=None,
        )
    )


async def similar_addresses(email: str, limit: int = 2000) -> list[str]:
    """Addresses that may be what a mistyped `email` meant: at the same domain, or with the
    same local part (bounded reads, for 'did you mean' only)."""
    local, _, domain = email.rpartition("@")
    found: set[str] = set()
    for query in (
        Enrollment.filter(email__endswith="@" + domain) if domain else None,
        Enrollment.filter(email__startswith=local + "@") if local else None,
    ):
        if query is not None:
            found.update(str(e) for e in await query.limit(limit).values_list("email", flat=True))
    return sorted(found)


# --- status: grouped counts and pages, never the whole table ----------------------------


@dataclass(frozen=True)
class Tally:
    mailbox: str
    state: str
    hold: str | None
    n: int


async def counts() -> list[Tally]:
    """Enrollments by mailbox, state and hold: one grouped query over the tally index (a
    covering scan: no row is read), a few dozen rows out."""
    rows = (
        await Enrollment.annotate(n=Count("id"))
        .group_by("state", "mailbox", "hold")
        .values_list("mailbox", "state", "hold", "n")
    )
    return [
        Tally(str(m), str(s), str(h) if h is not None else None, int(str(n))) for m, s, h, n in rows
    ]


async def next_sends(
    now: datetime, held: Iterable[str], mailboxes: Iterable[str]
) -> tuple[Enrollment | None, int]:
    """The next send that nothing holds, and how many are due now, among the active contacts
    of `mailboxes` (those of `held` left out). Contacts with no hold are read on the tally
    index (state, mailbox, hold, next_at), one seek per mailbox, so a held mailbox's
    contacts cost nothing; those whose manual pause has ended (released at the daemon's
    next tick) on the held index. An OR of the two kinds would read neither index."""
    boxes = sorted(set(mailboxes) - set(held))
    if not boxes:
        return None, 0
    unheld = Enrollment.filter(state=ACTIVE, mailbox__in=boxes, hold__isnull=True)
    resumed = Enrollment.filter(
        hold_until__lte=now, hold=Hold.MANUAL_PAUSE, state=ACTIVE, mailbox__in=boxes
    )
    due_now = 0
    for query in (unheld, resumed):
        due_now += await query.filter(next_at__lte=now).count()
    later = [
        *(
            Enrollment.filter(state=ACTIVE, mailbox=box, hold__isnull=True, next_at__gt=now)
            for box in boxes
        ),
        resumed.filter(next_at__gt=now),
    ]
    firsts = [row for query in later if (row := await query.order_by("next_at", "id").first())]
    first = min(firsts, key=lambda r: (r.next_at, r.id), default=None)
    return first, due_now


async def sent_by_mailbox(since: datetime, mailboxes: Iterable[str]) -> dict[str, int]:
    """Messages on the wire since `since` from each of `mailboxes` (one grouped query, a
    range of the pace index per mailbox)."""
    rows = (
        await SentMessage.filter(
            mailbox__in=sorted(set(mailboxes)), attempted_at__gte=since, status__in=ON_THE_WIRE
        )
        .annotate(n=Count("id"))
        .group_by("mailbox")
        .values_list("mailbox", "n")
    )
    return {str(m): int(str(n)) for m, n in rows}


async def page(
    after_id: int,
    size: int,
    *,
    email: str | None = None,
    sequence: str | None = None,
    state: str | None = None,
    mailbox: str | None = None,
) -> list[tuple[Enrollment, InboundMessage | None]]:
    """One page of enrollments after `after_id` (keyset: memory stays flat at any size),
    each with the inbound message that ended it."""
    query = Enrollment.filter(id__gt=after_id)
    if email is not None:
        query = query.filter(email=email)
    if sequence is not None:
        query = query.filter(sequence=sequence)
    if state is not None:
        query = query.filter(state=state)
    if mailbox is not None:
        query = query.filter(mailbox=mailbox)
    rows = list(await query.order_by("id").limit(size))
    ids = [r.ended_by_id for r in rows if r.ended_by_id is not None]
    inbound = {m.id: m for m in await InboundMessage.filter(id__in=ids)} if ids else {}
    return [(r, inbound.get(r.ended_by_id) if r.ended_by_id else None) for r in rows]
