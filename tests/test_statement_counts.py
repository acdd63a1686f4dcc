"""The send path's cost does not grow with the work in hand: a constant number of SQL
statements per batch and per send, and two write transactions per send (DATA started, and
its outcome), on SQLite and on PostgreSQL. Counted, not timed.

- SQLite: every statement tortoise runs is logged on `tortoise.db_client`, and every
  transaction begins through the wrapper's `begin`.
- PostgreSQL: counted where they are sent. Each pooled connection gets an asyncpg query
  logger (`Connection.add_query_logger`, attached by the pool's `init`), which sees every
  round trip, also those tortoise's log does not show: BEGIN/COMMIT (asyncpg's
  `Transaction` sends them) and the reset asyncpg runs when the pool takes a connection
  back. A write outside BEGIN..COMMIT is a transaction of its own, so it is counted as one.

A regression here (a read per item creeping back in, a write that changes nothing, one
transaction per column) shows as a slope that is no longer the same from 4 to 8 to 16
contacts, or a larger one than the budget below."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from conftest import ImapServer, new_postgres_database
from tortoise.backends.sqlite.client import SqliteTransactionWrapper
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction
from world import world

from sequencer.devservers import SmtpSink
from sequencer.states import Inbox
from sequencer.store import db, queries
from sequencer.store.db import PostgresClient
from sequencer.store.models import MailboxCursor, MailboxState

#: Statements per send (claim share aside): `start` (DATA started, checked as it is marked;
#: the pace) and the outcome (the sent row, the enrollment): 4 on SQLite. PostgreSQL's `start`
#: also takes the address's advisory lock (the gap per address, across daemons): 5.
PER_SEND_BUDGET = {"sqlite": 4, "postgres": 5}
#: Statements per tick besides the sends: the claim, the batch's reads and its new rows.
PER_TICK_BUDGET = 16
AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@dataclass
class Tally:
    statements: int = 0
    transactions: int = 0
    #: PostgreSQL only: asyncpg's reset of a connection the pool takes back (a round trip).
    resets: int = 0
    #: The statements, by their opening words, for the report.
    seen: Counter[str] = field(default_factory=Counter)


class _Counter(logging.Handler):
    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.DEBUG)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        self.tally.statements += 1
        if record.args:
            self.tally.seen[" ".join(str(record.args[0]).split()[:3])] += 1


@contextmanager
def _sqlite_counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tally]:
    tally = Tally()
    logger = logging.getLogger("tortoise.db_client")
    handler = _Counter(tally)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    begin = SqliteTransactionWrapper.begin

    async def counting_begin(self: SqliteTransactionWrapper) -> None:
        tally.transactions += 1
        await begin(self)

    monkeypatch.setattr(SqliteTransactionWrapper, "begin", counting_begin)
    try:
        yield tally
    finally:
        monkeypatch.setattr(SqliteTransactionWrapper, "begin", begin)
        logger.removeHandler(handler)
        logger.setLevel(level)


_WRITE = re.compile(r"^(WITH\b.*\)\s*)?(INSERT|UPDATE|DELETE)\b", re.IGNORECASE | re.DOTALL)


class _PostgresQueries:
    """What every pooled connection sends, from asyncpg's query loggers; counted into
    `tally` while it is set."""

    def __init__(self) -> None:
        self.tally: Tally | None = None
        self._in_transaction: set[int] = set()

    async def attach(self, conn: asyncpg.Connection) -> None:
        """The pool's `init`: runs once for each connection it opens."""
        key, reset = id(conn), conn.get_reset_query()

        def logged(record: Any) -> None:
            self._count(key, reset, record.query)

        conn.add_query_logger(logged)

    def _count(self, key: int, reset: str, query: str) -> None:
        text = query.strip()
        word = text.split(None, 1)[0].upper().rstrip(";") if text else ""
        tally = self.tally if self.tally is not None else Tally()  # the state is kept anyway
        if word == "BEGIN":
            self._in_transaction.add(key)
            tally.transactions += 1
        elif word in ("COMMIT", "ROLLBACK") and "TO" not in text.upper().split():
            self._in_transaction.discard(key)
        elif text == reset.strip():
            tally.resets += 1
        else:
            tally.statements += 1
            tally.seen[" ".join(text.split()[:3])] += 1
            if key not in self._in_transaction and _WRITE.match(text):
                tally.transactions += 1  # autocommit: a write transaction of its own
                tally.seen["(autocommit write)"] += 1


#: The kind ("sqlite" or "postgres"), a fresh database's URL for a folder, and (PostgreSQL)
#: the query loggers' counter.
Databases = tuple[str, Callable[[Path], Awaitable[str]], _PostgresQueries | None]


async def _sqlite_url(folder: Path) -> str:
    return f"sqlite://{folder / 'state.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh_databases(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Databases]:
    """SQLite, then PostgreSQL (the query loggers attached to every connection tortoise's
    pool opens), each with a fresh database per count."""
    if request.param == "sqlite":
        yield "sqlite", _sqlite_url, None
        return
    queries = _PostgresQueries()
    create_pool = PostgresClient.create_pool

    async def with_logger(self: PostgresClient, **kwargs: Any) -> asyncpg.Pool:
        return await create_pool(self, init=queries.attach, **kwargs)

    monkeypatch.setattr(PostgresClient, "create_pool", with_logger)
    async with AsyncExitStack() as stack:

        async def fresh(folder: Path) -> str:
            return await stack.enter_async_context(new_postgres_database())

        yield "postgres", fresh, queries


async def _one_tick(
    tmp_path: Path,
    smtp: SmtpSink,
    imap: ImapServer,
    monkeypatch: Any,
    fresh_databases: Databases,
    contacts: int,
) -> Tally:
    """Enroll `contacts` people, all due now in one mailbox, and count one scheduler tick."""
    _, fresh, queries = fresh_databases
    folder = tmp_path / str(contacts)
    folder.mkdir()
    url = await fresh(folder)
    box = 'pace: {daily_limit: 100000, spacing: 0s}\n    sent_copy: "off"'
    async with world(folder, smtp, imap, url, monkeypatch, box=box) as w:
        for n in range(contacts):
            await w.enroll(f"person{n}@prospect.test")
        await w.daemon.check_inboxes()
        before = len(smtp.received)
        if queries is None:
            with _sqlite_counted(monkeypatch) as tally:
                assert await w.daemon.run_once() == contacts
        else:
            await asyncio.sleep(0)  # the loggers' calls for what ran before (call_soon)
            queries.tally = tally = Tally()
            try:
                assert await w.daemon.run_once() == contacts
                await asyncio.sleep(0)
            finally:
                queries.tally = None
        assert len(smtp.received) - before == contacts  # each went, once
    return tally


async def test_statements_and_transactions_per_send_are_constant(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
    fresh_databases: Databases,
) -> None:
    tallies = {
        n: await _one_tick(tmp_path, smtp, pymap, monkeypatch, fresh_databases, n)
        for n in (4, 8, 16)
    }
    kind = fresh_databases[0]
    small, mid, large = tallies[4], tallies[8], tallies[16]
    per_send = (mid.statements - small.statements) / 4
    batch = small.statements - 4 * per_send
    print(
        f"\n{kind}: {per_send} statements per send, {batch} per tick besides; transactions"
        f" {small.transactions}/{mid.transactions}/{large.transactions} and pool resets"
        f" {small.resets}/{mid.resets}/{large.resets} for 4/8/16 sends; 16 sends:"
        f" {dict(large.seen)}"
    )
    # The same slope from 4 to 8 as from 8 to 16: the batch's own statements are constant.
    assert large.statements - mid.statements == 2 * (mid.statements - small.statements)
    assert per_send <= PER_SEND_BUDGET[kind], f"{per_send} statements per send"
    # Two write transactions per send, plus a constant few per batch (its new rows).
    assert large.transactions - mid.transactions == 2 * 8
    assert mid.transactions - small.transactions == 2 * 4
    assert batch <= PER_TICK_BUDGET, f"{batch} statements per tick besides the sends"
    if kind == "postgres":
        # Writes outside BEGIN count here too: the claim, the day's count, the catch-up
        # stamp, and the batch's new rows.
        assert small.transactions - 2 * 4 <= 4, "write transactions per tick besides the sends"
        # asyncpg resets a connection the pool takes back (a round trip): once per
        # transaction, so no statement of a send runs outside its two.
        assert large.resets - mid.resets == 2 * 8
        assert mid.resets - small.resets == 2 * 4


async def _watchers_start(names: list[str]) -> None:
    """What each inbox watcher writes as it starts, all of them at once, as at start-up."""

    async def one(i: int, name: str) -> None:
        await queries.set_inbox(name, Inbox.CONNECTING, AT, None, "w")
        await queries.set_inbox(name, Inbox.WATCHING, AT, None, "w")
        await queries.caught_up(name, AT + timedelta(seconds=i))

    await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))


@pytest.mark.parametrize("mailboxes", [10, 80])
async def test_watchers_starting_together_write_in_a_constant_number_of_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailboxes: int
) -> None:
    """Hundreds of mailboxes in one daemon: their watchers' state, written as they all start
    at once, goes together (the same statements for 10 mailboxes as for 80), and each row
    says what its own watcher wrote last. (Cursors are written one by one: each only moves
    on, which an upsert of many cannot say, and only when mail has come.)"""
    names = [f"m{i:03d}" for i in range(mailboxes)]
    async with db.connected(f"sqlite://{tmp_path / 'state.db'}"):
        for i, name in enumerate(names):
            await queries.set_cursor(name, 7, i)
        with _sqlite_counted(monkeypatch) as tally:
            await _watchers_start(names)
        states = {r.mailbox: r for r in await MailboxState.all()}
        cursors = {r.mailbox: r for r in await MailboxCursor.all()}
    assert tally.statements <= 16 and tally.transactions <= 4, tally
    assert sorted(states) == sorted(cursors) == names
    for i, name in enumerate(names):
        assert states[name].inbox == Inbox.WATCHING and states[name].watcher == "w"
        assert states[name].caught_up_at == AT + timedelta(seconds=i)
        assert (cursors[name].uidvalidity, cursors[name].last_uid) == (7, i)


async def test_a_failed_state_write_reaches_every_watcher_in_it_and_is_retried(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write for many watchers fails: each of them sees the error (and retries, as
    db.retrying does), and what they wrote is then there; on SQLite and PostgreSQL."""
    names = [f"m{i:03d}" for i in range(20)]
    real = MailboxState.bulk_create
    failures = [OperationalError("database is locked")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    async with db.connected(database):
        await MailboxState.create(mailbox="m000", day_count=3)  # an existing row keeps the rest
        monkeypatch.setattr(MailboxState, "bulk_create", flaky)
        seen: list[str] = []

        async def retried(name: str) -> None:
            while True:
                try:
                    await queries.set_inbox(name, Inbox.WATCHING, AT, None, "w")
                    return
                except OperationalError:
                    seen.append(name)

        await asyncio.gather(*(retried(n) for n in names))
        rows = {r.mailbox: r for r in await MailboxState.all()}
    assert sorted(seen) == names  # all were in the one write that failed
    assert all(rows[n].inbox == Inbox.WATCHING for n in names)
    assert rows["m000"].day_count == 3


async def test_a_state_write_inside_a_transaction_is_part_of_it(tmp_path: Path) -> None:
    """Not deferred to a write of its own (which would wait for the transaction that waits
    for it): it commits, or rolls back, with the caller's transaction."""

    async def rolled_back() -> None:
        async with in_transaction():
            await asyncio.wait_for(queries.set_inbox("m000", Inbox.WATCHING, AT, None), 5)
            raise RuntimeError("rolled back")

    async with db.connected(f"sqlite://{tmp_path / 'state.db'}"):
        with pytest.raises(RuntimeError):
            await rolled_back()
        assert await MailboxState.filter(mailbox="m000").count() == 0
