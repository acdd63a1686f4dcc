"""The send path's cost does not grow with the work in hand: a constant number of SQL
statements per batch and per send, and two write transactions per send (DATA started, and
its outcome). Counted, not timed: every statement tortoise runs on SQLite is logged on
`tortoise.db_client`, and every transaction begins through the wrapper's `begin`.

A regression here (a read per item creeping back in, a write that changes nothing, one
transaction per column) shows as a slope that is no longer the same from 4 to 8 to 16
contacts, or a larger one than the budget below."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from tortoise.backends.sqlite.client import SqliteTransactionWrapper
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction
from world import world

from sequencer.devservers import SmtpSink
from sequencer.states import Inbox
from sequencer.store import db, queries
from sequencer.store.models import MailboxCursor, MailboxState

#: Statements per send (claim share aside): `start` (its check, the pace, DATA started) and
#: the outcome (the sent row, the enrollment).
PER_SEND_BUDGET = 6
AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@dataclass
class Tally:
    statements: int = 0
    transactions: int = 0


class _Counter(logging.Handler):
    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.DEBUG)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        self.tally.statements += 1


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tally]:
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


async def _one_tick(
    tmp_path: Path, smtp: SmtpSink, imap: ImapServer, monkeypatch: Any, contacts: int
) -> Tally:
    """Enroll `contacts` people, all due now in one mailbox, and count one scheduler tick."""
    folder = tmp_path / str(contacts)
    folder.mkdir()
    url = f"sqlite://{folder / 'state.db'}"
    box = 'pace: {daily_limit: 100000, spacing: 0s}\n    sent_copy: "off"'
    async with world(folder, smtp, imap, url, monkeypatch, box=box) as w:
        for n in range(contacts):
            await w.enroll(f"person{n}@prospect.test")
        await w.daemon.check_inboxes()
        before = len(smtp.received)
        with counted(monkeypatch) as tally:
            assert await w.daemon.run_once() == contacts
        assert len(smtp.received) - before == contacts  # each went, once
    return tally


async def test_statements_and_transactions_per_send_are_constant(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tallies = {n: await _one_tick(tmp_path, smtp, pymap, monkeypatch, n) for n in (4, 8, 16)}
    small, mid, large = tallies[4], tallies[8], tallies[16]
    per_send = (mid.statements - small.statements) / 4
    # The same slope from 4 to 8 as from 8 to 16: the batch's own statements are constant.
    assert large.statements - mid.statements == 2 * (mid.statements - small.statements)
    assert per_send <= PER_SEND_BUDGET, f"{per_send} statements per send"
    # Two write transactions per send, plus a constant few per batch (its new rows).
    assert large.transactions - mid.transactions == 2 * 8
    assert mid.transactions - small.transactions == 2 * 4
    batch = small.statements - 4 * per_send
    assert batch <= 16, f"{batch} statements per tick besides the sends"


async def _watchers_start(names: list[str]) -> None:
    """What each inbox watcher writes as it starts, all of them at once, as at start-up."""

    async def one(i: int, name: str) -> None:
        await queries.set_inbox(name, Inbox.CONNECTING, AT, None, "w")
        await queries.set_cursor(name, 7, i)
        await queries.set_inbox(name, Inbox.WATCHING, AT, None, "w")
        await queries.caught_up(name, AT + timedelta(seconds=i))

    await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))


@pytest.mark.parametrize("mailboxes", [10, 80])
async def test_watchers_starting_together_write_in_a_constant_number_of_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailboxes: int
) -> None:
    """Hundreds of mailboxes in one daemon: their watchers' state and cursors, written as
    they all start at once, go together (the same statements for 10 mailboxes as for 80),
    and each row says what its own watcher wrote last."""
    names = [f"m{i:03d}" for i in range(mailboxes)]
    async with db.connected(f"sqlite://{tmp_path / 'state.db'}"):
        with counted(monkeypatch) as tally:
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
