"""The hot queries stay on their indexes as the tables grow (issue 14): on 12,000 enrollments
and their sent-log, after ANALYZE on SQLite and PostgreSQL (and before it on SQLite, which
never analyzes by itself), the plan of each statement the
query functions actually run (captured from tortoise's connection log, not a copy of their
SQL) reads the index made for it. A query that drifts off its index costs nothing at test
size and seconds at a million rows, so the plan is what is asserted, not a time."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from sequencer.states import Hold
from sequencer.store import db, queries, sending
from sequencer.store.models import Enrollment

N = 12_000  # enrollments; issue 14 asks for at least 10,000 rows
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
MAILBOXES = ("sales1", "sales2", "sales3")
ENROLLMENT = (
    "email", "sequence", "mailbox", "variables", "state", "steps_sent", "next_at", "attempts",
    "next_reasons", "promises", "promised", "enrolled_at", "finished_at", "hold", "hold_since",
    "hold_until", "referral",
)  # fmt: skip
SENT = (
    "enrollment_id", "step", "email", "mailbox", "message_id", "subject", "status",
    "created_at", "attempted_at", "sent_at", "copied_at",
)  # fmt: skip


def _tables() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """70% active, 1% due within the hour, 1% paused by hand, 0.2% promised, 30% ended;
    one to three messages sent to half of them over the last month."""
    enrollments, sent = [], []
    for i in range(N):
        email, mailbox = f"c{i}@p{i % 700}.test", MAILBOXES[i % 3]
        active = i % 10 < 7 or i % 100 == 0
        next_at = hold = hold_since = hold_until = finished = None
        if i % 100 == 0:
            next_at = NOW + timedelta(minutes=i % 60)
        elif active:
            next_at = NOW + timedelta(days=1 + i % 29, minutes=i % 1440)
            if i % 100 == 1:
                hold, hold_since, hold_until = "manual_pause", NOW, NOW + timedelta(days=i % 20)
        else:
            finished = NOW - timedelta(days=i % 30)
        steps = (i % 4) if i % 2 else 0
        enrollments.append(
            (
                email, "s", mailbox, json.dumps({"first_name": f"C{i}"}),
                "active" if active else ("completed", "replied", "stopped")[i % 3],
                steps, next_at, 0, "[]", "{}", active and i % 500 == 3,
                NOW - timedelta(days=40), finished, hold, hold_since, hold_until, "[]",
            )
        )  # fmt: skip
        for step in range(1, steps + 1):
            at = NOW - timedelta(days=30 - step, minutes=i % 1440)
            copied = None if i % 97 == 0 else at  # a few copies a crash left out
            message_id = f"<{i}.{step}@vendor.test>"
            sent.append((i + 1, step, email, mailbox, message_id, "Hi", "sent", at, at, at, copied))
    return enrollments, sent


def _insert(client: BaseDBAsyncClient, table: str, columns: tuple[str, ...]) -> str:
    marks = (
        ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        if client.capabilities.dialect == "postgres"
        else ", ".join("?" * len(columns))
    )
    names = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({marks})'  # noqa: S608 - constants


class _Statements(logging.Handler):
    """Every statement tortoise runs, with its parameters, from its db_client log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, list[Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
            self.seen.append((args[0], list(args[1] or [])))


@contextmanager
def _captured() -> Iterator[_Statements]:
    log = logging.getLogger("tortoise.db_client")
    handler, level = _Statements(), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


async def _plan(client: BaseDBAsyncClient, sql: str, values: list[Any]) -> str:
    if client.capabilities.dialect == "postgres":
        rows = await client.execute_query_dict("EXPLAIN " + sql, values)
        return "\n".join(r["QUERY PLAN"] for r in rows)
    rows = await client.execute_query_dict("EXPLAIN QUERY PLAN " + sql, values)
    return "\n".join(r["detail"] for r in rows)


async def _plans_of(
    client: BaseDBAsyncClient, call: Callable[[], Awaitable[object]]
) -> list[tuple[str, str]]:
    """(statement, plan) for each SELECT the call ran."""
    with _captured() as statements:
        await call()
    selects = [
        (s, v) for s, v in statements.seen if s.lstrip().upper().startswith(("SELECT", "UPDATE"))
    ]
    assert selects, "the query function ran no SELECT through tortoise's connection"
    return [(sql, await _plan(client, sql, values)) for sql, values in selects]


#: Each hot query, and the index (any of them) every SELECT it runs on that index's table
#: must read (issue 14's list, with the ended manual pauses and uncertain sends the daemon
#: looks for each tick).
#: PostgreSQL may read the due rows on the plain next_at index instead (a small range sorted
#: costs it about the same); that index is also what its generic plan for a prepared
#: statement uses, which cannot prove a partial index's condition from `state = $2`. Either
#: is a range over the rows due by then: never the state index and a sort of every active row.
DUE = ("enrollment_due_idx", "idx_enrollment_next_at_")
#: The send path's due query: one seek a mailbox (PostgreSQL may use the plain next_at index
#: for so small a range, as above).
MAILBOX_DUE = ("enrollment_mailbox_due_idx", "enrollment_due_idx", "idx_enrollment_next_at_")
HOT: dict[str, tuple[Callable[[], Awaitable[object]], tuple[str, ...]]] = {
    "due": (lambda: sending.due(NOW + timedelta(hours=1), 100, MAILBOXES), MAILBOX_DUE),
    # A send batch's reads: the last email to each address (gap), its enrollments' rows.
    "batch context": (
        lambda: _batch_context(),
        ("sent_message_gap_idx", "uid_sent_messag_", "sqlite_autoindex_sent_message_"),
    ),
    "next_due_at": (queries.next_due_at, DUE),
    "promised_active": (queries.promised_active, ("enrollment_promised_idx",)),
    "sent_since": (
        lambda: queries.sent_since("sales2", NOW - timedelta(days=1)),
        ("sent_message_pace_idx",),
    ),
    "last_contact": (lambda: queries.last_contact("c9@p9.test"), ("sent_message_gap_idx",)),
    "end_pauses": (lambda: queries.end_pauses(NOW + timedelta(days=3)), ("enrollment_held_idx",)),
    "held": (lambda: queries.held(Hold.UNCERTAIN_SEND), ("enrollment_held_idx",)),
    # Start-up: a dead daemon's claims let go, the Sent copies a crash left out.
    "release_claims": (queries.release_claims, ("enrollment_claimed_idx",)),
    "uncopied": (lambda: queries.uncopied("sales2"), ("sent_message_uncopied_idx",)),
}


async def _batch_context() -> sending.Context:
    batch = await Enrollment.filter(id__in=[10, 20, 30])
    return await sending.context(batch)


async def _fill(client: BaseDBAsyncClient) -> None:
    enrollments, sent = _tables()
    await client.execute_many(_insert(client, "enrollment", ENROLLMENT), enrollments)
    await client.execute_many(_insert(client, "sent_message", SENT), sent)


async def _off_their_index(client: BaseDBAsyncClient) -> list[str]:
    def ok(indexes: tuple[str, ...]) -> tuple[str, ...]:
        if client.capabilities.dialect == "postgres":
            return indexes
        return tuple(i for i in indexes if not i.startswith("idx_"))  # SQLite: ours only

    wrong = []
    for name, (call, indexes) in HOT.items():
        table = indexes[0].split("_idx")[0].rsplit("_", 1)[0]  # enrollment, sent_message
        for sql, plan in await _plans_of(client, call):
            reads = f'FROM "{table}"' in sql or sql.lstrip().startswith(f'UPDATE "{table}"')
            by_key = "PRIMARY KEY" in plan or f"{table}_pkey" in plan  # rows found by id
            if reads and not by_key and not any(i in plan for i in ok(indexes)):
                wrong.append(f"{name}: {sql}\n  plan: {plan}\n  expected {' or '.join(indexes)}")
    return wrong


async def test_hot_queries_read_their_index(database: str) -> None:
    async with db.connected(database):
        client = Tortoise.get_connection("default")
        await _fill(client)
        wrong = []
        if client.capabilities.dialect == "sqlite":
            # SQLite never analyzes by itself: the plans must hold without statistics too.
            wrong += [f"before ANALYZE: {w}" for w in await _off_their_index(client)]
        await client.execute_script("ANALYZE")
        wrong += await _off_their_index(client)
        assert not wrong, "\n".join(wrong)


async def test_the_hot_queries_still_answer_right(database: str) -> None:
    """The plans above are of queries that still answer right on the same rows: the due
    contacts in order, the next one, the promised ones and the last contact."""
    async with db.connected(database):
        await _fill(Tortoise.get_connection("default"))
        due = await sending.due(NOW + timedelta(minutes=30), 1000, MAILBOXES)
        assert [d.id for d in due] == [
            i + 1 for i in sorted(range(0, N, 100), key=lambda i: (i % 60, i)) if i % 60 <= 30
        ]
        assert await queries.next_due_at() == NOW
        assert {e.id for e in await queries.promised_active()} == {
            i + 1 for i in range(N) if i % 10 < 7 and i % 500 == 3
        }
        assert await queries.last_contact("c9@p9.test") == NOW - timedelta(days=29, minutes=9)
