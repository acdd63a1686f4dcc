"""The send path's cost does not grow with the work in hand: a constant number of SQL
statements per batch and per send, and two write transactions per send (DATA started, and
its outcome). Counted, not timed: every statement tortoise runs on SQLite is logged on
`tortoise.db_client`, and every transaction begins through the wrapper's `begin`.

A regression here (a read per item creeping back in, a write that changes nothing, one
transaction per column) shows as a slope that is no longer the same from 4 to 8 to 16
contacts, or a larger one than the budget below."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from tortoise.backends.sqlite.client import SqliteTransactionWrapper
from world import world

from sequencer.devservers import SmtpSink

#: Statements per send (claim share aside): `start` (DATA started, checked as it is marked;
#: the pace) and the outcome (the sent row, the enrollment).
PER_SEND_BUDGET = 4


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
