"""The send path's statements, batched: a constant number per batch and per send, whatever
the size of the tables (tests/test_statement_counts.py counts them).

Per tick: the due work of every mailbox in one statement (each mailbox its own oldest, so
mailboxes drain side by side), and the pacing state of every mailbox in one. Per batch (one
mailbox's claimed work): the claim in one conditional UPDATE (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so daemons sharing a database never wait on each other's rows), then what every
send of the batch needs read together (suppressions, the last email to each address, the
step rows and threads), and the new steps' rows written together. Per send, two write
transactions: `start` just before DATA (the contact is still active and unheld, nobody wrote
to the address since we looked, the mailbox's pace has room: taken under locks shared by every
daemon on the database), and `record_sent` once the server answered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Max
from tortoise.transactions import in_transaction

from sequencer.pacing import Load
from sequencer.states import ON_THE_WIRE, Send, State
from sequencer.store import queries
from sequencer.store.models import ACTIVE, Enrollment, MailboxState, SentMessage, Suppression

# Raw SQL here is built from constants and `?` placeholders only (ruff's S608 cannot tell):
# every value travels as a parameter.

#: Written as a literal, not a parameter: a query shows it is within the due index's rows
#: (`state = 'active' AND hold IS NULL`) only so, to PostgreSQL's cached generic plans too.
_ACTIVE = f"state = '{ACTIVE.value}'"

#: Mailboxes per due statement (SQLite allows 500 parts to a UNION ALL).
DUE_MAILBOXES_PER_STATEMENT = 200


def _dialect(client: BaseDBAsyncClient) -> str:
    return str(client.capabilities.dialect)


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`."""
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


async def _query(
    sql: str, values: Sequence[Any], client: BaseDBAsyncClient | None = None
) -> list[dict[str, Any]]:
    client = client or connections.get("default")
    if _dialect(client) == "postgres":
        sql = _numbered(sql)
    return list(await client.execute_query_dict(sql, [_plain(v) for v in values]))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _marks(n: int) -> str:
    return ", ".join("?" * n)


@dataclass(frozen=True)
class Due:
    id: int
    mailbox: str
    email: str
    promised: bool


async def due(
    now: datetime,
    per_mailbox: int,
    mailboxes: Iterable[str],
    closed: Iterable[str] = (),
    held: Iterable[str] = (),
) -> list[Due]:
    """Each mailbox's oldest due enrollments (at most `per_mailbox`), not held and not
    claimed by a live lease, oldest first. Mailboxes in `closed` (paced out) yield only
    promised steps, which no pacing rule moves; mailboxes in `held` yield nothing. One seek a
    mailbox on its own due rows (enrollment_mailbox_due_idx), UNION ALL'd into one statement
    (a few for hundreds of mailboxes): the cost is the rows returned, not the rows due, so a
    backlog of one mailbox neither slows the query nor starves another mailbox."""
    stopped, shut = set(held), set(closed)
    boxes = sorted(set(mailboxes) - stopped)
    found: list[tuple[datetime | None, Due]] = []
    for start in range(0, len(boxes), DUE_MAILBOXES_PER_STATEMENT):
        parts: list[str] = []
        values: list[Any] = []
        for box in boxes[start : start + DUE_MAILBOXES_PER_STATEMENT]:
            promised = " AND promised" if box in shut else ""
            parts.append(
                "SELECT * FROM (SELECT id, mailbox, email, promised, next_at"  # noqa: S608
                f' FROM "enrollment" WHERE {_ACTIVE} AND hold IS NULL AND mailbox = ?'
                f" AND next_at <= ? AND (claimed_until IS NULL OR claimed_until < ?){promised}"
                f" ORDER BY next_at, id LIMIT ?) AS m{len(parts)}"
            )
            values += [box, now, now, per_mailbox]
        rows = await _query(" UNION ALL ".join(parts) + " ORDER BY next_at, id", values)
        found += [
            (
                _instant(r["next_at"]),
                Due(int(r["id"]), str(r["mailbox"]), str(r["email"]), bool(r["promised"])),
            )
            for r in rows
        ]
    if len(boxes) > DUE_MAILBOXES_PER_STATEMENT:  # each statement's rows are in order
        found.sort(key=lambda pair: (pair[0], pair[1].id))
    return [item for _, item in found]


async def claim(ids: Sequence[int], now: datetime, lease: timedelta) -> list[Enrollment]:
    """Take these enrollments with one conditional UPDATE (those still due, unheld and not
    claimed by a live lease: on PostgreSQL, rows another daemon is claiming right now are
    skipped, not waited for), then read them whole; in the order of `ids`."""
    if not ids:
        return []
    client = connections.get("default")
    keep = (
        f"{_ACTIVE} AND hold IS NULL AND next_at <= ?"
        " AND (claimed_until IS NULL OR claimed_until < ?)"
    )
    if _dialect(client) == "postgres":
        sql = (
            'UPDATE "enrollment" SET claimed_until = ? WHERE id IN (SELECT id FROM "enrollment"'  # noqa: S608
            f" WHERE id IN ({_marks(len(ids))}) AND {keep} FOR UPDATE SKIP LOCKED) RETURNING id"
        )
    else:
        sql = (
            f'UPDATE "enrollment" SET claimed_until = ? WHERE id IN ({_marks(len(ids))})'  # noqa: S608
            f" AND {keep} RETURNING id"
        )
    taken = {int(r["id"]) for r in await _query(sql, [now + lease, *ids, now, now], client)}
    if not taken:
        return []
    rows = {row.id: row for row in await Enrollment.filter(id__in=sorted(taken))}
    return [rows[i] for i in ids if i in rows]


async def release(ids: Iterable[int]) -> None:
    """Let go of claims a batch did not use (the mailbox's pace closed, the daemon stops)."""
    if wanted := sorted(set(ids)):
        await Enrollment.filter(id__in=wanted, claimed_until__isnull=False).update(
            claimed_until=None
        )


@dataclass
class Context:
    """What the sends of one batch read, fetched together."""

    suppressed: dict[str, Suppression] = field(default_factory=dict)
    last_contact: dict[str, datetime] = field(default_factory=dict)
    rows: dict[tuple[int, int], SentMessage] = field(default_factory=dict)  # (enrollment, step)

    def thread(self, enrollment_id: int) -> list[str]:
        """Message-IDs confirmed sent in this enrollment, oldest first."""
        mine = [
            row
            for (enr, _), row in self.rows.items()
            if enr == enrollment_id and row.status is Send.SENT
        ]
        return [row.message_id for row in sorted(mine, key=lambda r: r.step)]


async def context(batch: Sequence[Enrollment]) -> Context:
    """Suppressions, the last email to each address, and every step row of these
    enrollments: three statements for the whole batch."""
    emails = sorted({enr.email for enr in batch})
    found = Context(suppressed=await queries.suppressed(emails))
    rows = (
        await SentMessage.filter(email__in=emails, status__in=ON_THE_WIRE)
        .group_by("email")
        .annotate(last=Max("attempted_at"))
        .values_list("email", "last")
    )
    found.last_contact = {str(e): at for e, at in rows if isinstance(at, datetime)}
    rows_of = SentMessage.filter(enrollment_id__in=[enr.id for enr in batch])
    # Not the bytes kept for the Sent copy: only what a send decides by.
    for row in await rows_of.only(
        "id", "enrollment_id", "step", "status", "message_id", "subject", "attempted_at", "sent_at"
    ):
        found.rows[(row.enrollment_id, row.step)] = row  # type: ignore[attr-defined]
    return found


@dataclass(frozen=True)
class Draft:
    enrollment: Enrollment
    step: int
    message_id: str
    subject: str


async def record_pending(drafts: Sequence[Draft], now: datetime) -> dict[int, SentMessage]:
    """The new steps' rows, with their Message-IDs, before anything is sent: one INSERT for
    the batch and one read for their ids. Keyed by enrollment id. A step whose row another
    daemon wrote first (it took the step over after our lease ran out) keeps that row: the
    caller sees its Message-ID is not the draft's, and leaves the step alone."""
    if not drafts:
        return {}
    await SentMessage.bulk_create(
        [
            SentMessage(
                enrollment_id=d.enrollment.id,
                email=d.enrollment.email,
                mailbox=d.enrollment.mailbox,
                step=d.step,
                message_id=d.message_id,
                subject=d.subject,
                status=Send.PENDING,
                created_at=now,
            )
            for d in drafts
        ],
        ignore_conflicts=True,
    )
    steps = {d.enrollment.id: d.step for d in drafts}
    rows = await SentMessage.filter(enrollment_id__in=sorted(steps)).only(
        "id", "enrollment_id", "step", "status", "message_id", "subject", "attempted_at", "sent_at"
    )
    return {
        row.enrollment_id: row  # type: ignore[attr-defined]
        for row in rows
        if steps[row.enrollment_id] == row.step  # type: ignore[attr-defined]
    }


@dataclass(frozen=True)
class Slot:
    """A mailbox's pace, as `start` checks and takes it for one send."""

    mailbox: str
    day_start: datetime
    daily_limit: int | None  # None: a promised step, counted but never refused
    next_free: datetime | None  # when the mailbox may send again after this one


class Refused(Enum):
    ENDED = "the contact's sequence ended or is held"
    WRITTEN_TO = "the address was written to since the batch looked"
    PACED = "the mailbox's pace is used up (another daemon sent)"
    TAKEN = "another daemon took this step (our lease ran out)"


class _Undone(Exception):
    """Rolls `start`'s transaction back, carrying why the send may not go."""

    def __init__(self, why: Refused | datetime) -> None:
        self.why = why


async def start(
    sent: SentMessage,
    *,
    enrollment_id: int,
    email: str,
    not_after: datetime | None,
    slot: Slot,
    now: datetime,
    data: bytes | None,
) -> Refused | datetime | None:
    """DATA is about to start: check, take and record it in one transaction. None when
    recorded; else why not, or (a datetime) the last email to the address when it is
    later than `not_after` (the gap would be broken; None: a promise keeps its time).

    The step's row is marked `sending` by one conditional UPDATE (still `pending`, the
    contact still active and unheld) that returns the last email to the address, then the
    pace is taken: two statements when it goes; a refusal rolls back. On PostgreSQL the
    address's advisory lock and the enrollment's row lock make the check and the write one
    step for every daemon, and the pace's row is updated only where it still has room."""
    try:
        async with in_transaction() as client:
            postgres = _dialect(client) == "postgres"
            if postgres:  # the gap per address, across daemons: one writer at a time
                await _query("SELECT pg_advisory_xact_lock(hashtext(?))", [email], client)
            lock = " FOR UPDATE" if postgres else ""
            marked = await _query(
                'UPDATE "sent_message" SET status = ?, attempted_at = ?, data = ?'  # noqa: S608
                f' WHERE id = ? AND status = ? AND EXISTS (SELECT 1 FROM "enrollment" e'
                f" WHERE e.id = ? AND e.{_ACTIVE} AND e.hold IS NULL{lock})"
                ' RETURNING (SELECT max(s.attempted_at) FROM "sent_message" s WHERE s.email = ?'
                f" AND s.status IN ({_marks(len(ON_THE_WIRE))}) AND s.id <> ?) AS last",
                [
                    *(Send.SENDING, now, data),  # SET
                    *(sent.id, Send.PENDING, enrollment_id),  # WHERE
                    *(email, *ON_THE_WIRE, sent.id),  # RETURNING
                ],
                client,
            )
            if not marked:
                return await _refusal(sent, enrollment_id, client)
            last = _instant(marked[0]["last"])
            if last is not None and not_after is not None and last > not_after:
                raise _Undone(last)
            if not await _take(slot, now, client):
                raise _Undone(Refused.PACED)
    except _Undone as undone:
        return undone.why
    return None


async def _refusal(sent: SentMessage, enrollment_id: int, client: BaseDBAsyncClient) -> Refused:
    """Why `start` could not mark the step's row (nothing was written)."""
    found = await _query(
        'SELECT e.state, e.hold, (SELECT m.status FROM "sent_message" m WHERE m.id = ?)'
        ' AS mine FROM "enrollment" e WHERE e.id = ?',
        [sent.id, enrollment_id],
        client,
    )
    if not found or found[0]["state"] != ACTIVE.value or found[0]["hold"] is not None:
        return Refused.ENDED
    # Not `pending` any more: a daemon stalled past its lease (paused, swapping, a long
    # database outage) while another took the step and started or finished it: never a
    # second copy.
    return Refused.TAKEN


def _instant(value: Any) -> datetime | None:
    """A timestamp read by raw SQL (SQLite gives text)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


async def _take(slot: Slot, now: datetime, client: BaseDBAsyncClient) -> bool:
    """One send from the mailbox's day: refused when the day's count or the spacing says no
    (a promised step is counted and never refused)."""
    sql = (
        'UPDATE "mailbox_state" SET day_count = day_count + 1, next_free_at = ?'
        " WHERE mailbox = ? AND count_since = ?"
    )
    values: list[Any] = [slot.next_free, slot.mailbox, slot.day_start]
    if slot.daily_limit is not None:
        sql += " AND day_count < ? AND (next_free_at IS NULL OR next_free_at <= ?)"
        values += [slot.daily_limit, now]
    if _dialect(client) == "postgres":
        sql = _numbered(sql)
    count, _ = await client.execute_query(sql, values)
    return bool(count)


async def loads(day_starts: Mapping[str, datetime]) -> dict[str, Load]:
    """Every mailbox's pacing state in one statement. A mailbox whose count is of an earlier
    day (or never counted) is counted afresh from the sent log, once a day."""
    states = {row.mailbox: row for row in await MailboxState.all()}  # one row a mailbox
    found: dict[str, Load] = {}
    for name, start_of_day in day_starts.items():
        row = states.get(name)
        if row is None or row.count_since != start_of_day:
            count = await queries.sent_since(name, start_of_day)
            await _new_day(name, start_of_day, count)
            found[name] = Load(
                count, row.next_free_at if row else None, row.paused_until if row else None
            )
            continue
        found[name] = Load(row.day_count, row.next_free_at, row.paused_until)
    return found


async def _new_day(mailbox: str, start_of_day: datetime, count: int) -> None:
    """Start the mailbox's count for its new day, unless another daemon has already (and
    may have counted sends on it since: those are never overwritten)."""
    changed = await (
        MailboxState.filter(mailbox=mailbox)
        .filter(Q(count_since__isnull=True) | ~Q(count_since=start_of_day))
        .update(day_count=count, count_since=start_of_day)
    )
    if changed or await MailboxState.exists(mailbox=mailbox):
        return
    with contextlib.suppress(IntegrityError):  # another daemon created it just now
        await MailboxState.create(mailbox=mailbox, day_count=count, count_since=start_of_day)


async def record_sent(
    enr: Enrollment,
    sent: SentMessage,
    *,
    status: Send,
    sent_at: datetime,
    next_at: datetime | None,
    breakup: bool,
    next_reasons: Sequence[str] = (),
    promised: bool = False,
) -> bool:
    """Confirm a send and move the enrollment on, in one transaction of two UPDATEs (three
    when the enrollment ended meanwhile: a reply during DATA keeps its state, the send is
    still recorded). False in that case."""
    moved: dict[str, Any] = {
        "steps_sent": sent.step,
        "last_sent_at": sent_at,
        "attempts": 0,
        "last_error": None,
        "claimed_until": None,
    }
    if sent.step == 1:
        moved["thread_subject"] = sent.subject
    ahead: dict[str, Any] = (
        {
            "state": State.COMPLETED,
            "reason": "break-up sent",
            "next_at": None,
            "finished_at": sent_at,
        }
        if breakup
        else {"next_at": next_at, "next_reasons": list(next_reasons), "promised": promised}
    )
    async with in_transaction() as client:
        # Fixed SQL for the statement the send path runs most (the ORM builds it each time).
        await _query(
            'UPDATE "sent_message" SET status = ?, sent_at = ? WHERE id = ?',
            [status, sent_at if status is Send.SENT else None, sent.id],
            client,
        )
        changed = await _update_enrollment(client, enr.id, {**moved, **ahead}, only_active=True)
        if not changed:
            await _update_enrollment(client, enr.id, moved, only_active=False)
    return bool(changed)


async def _update_enrollment(
    client: BaseDBAsyncClient, enrollment_id: int, values: Mapping[str, Any], *, only_active: bool
) -> int:
    """One UPDATE of these columns, written out rather than built by the ORM for every send
    (that was most of the send's CPU); each value converted as the ORM converts it."""
    fields = Enrollment._meta.fields_map
    sets = ", ".join(f'"{name}" = ?' for name in values)  # names from our own code
    where = f"id = ? AND {_ACTIVE}" if only_active else "id = ?"
    sql = f'UPDATE "enrollment" SET {sets} WHERE {where}'  # noqa: S608
    params = [fields[name].to_db_value(value, Enrollment) for name, value in values.items()]
    if _dialect(client) == "postgres":
        sql = _numbered(sql)
    count, _ = await client.execute_query(sql, [*params, enrollment_id])
    return int(count)
