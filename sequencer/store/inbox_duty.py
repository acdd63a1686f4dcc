"""Which daemon watches each inbox, when several daemons share one PostgreSQL.

One IDLE connection per mailbox across all the daemons, not one per daemon: a daemon watches
a mailbox while it holds that mailbox's session advisory lock, on a connection of its own to
the database. When a daemon dies its session ends, PostgreSQL lets its locks go, and another
daemon takes them at its next round (a few seconds). The daemons share the mailboxes out:
each holds a shared "present" lock too, so a round sees how many daemons are alive and each
takes, or gives back, locks until it holds its share.

A daemon that does not watch a mailbox still sends from it, but only while the watcher's
last catch-up, which the watcher records in `mailbox_state`, is recent, and only after its
own last look at the inbox over its own connection (worker.Daemon).

A daemon frozen (SIGSTOP, a hung loop) keeps its locks: its catch-ups stop, so every daemon
holds its mailboxes (fail closed) until it resumes or systemd's watchdog restarts it.

SQLite has one daemon per file (db.daemon_lock): it watches every inbox (`Solo`).
"""

from __future__ import annotations

import math
import random
import zlib
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from tortoise.backends.base.config_generator import expand_db_url

from sequencer.inbox import WATCHER_ID

log = structlog.get_logger("sequencer.store")

#: The first half of the advisory-lock keys: one class for the mailboxes' watch locks and one
#: for the daemons' presence ("sequencer" leetspeak, kept clear of small numbers others use).
WATCH_CLASS = 0x5E9E_0001
PRESENT_CLASS = 0x5E9E_0000

#: Rather than wait minutes for TCP to notice a machine that vanished holding locks, the
#: database asks after its session every few seconds (these settings are per session).
_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

_LOCKS = """
SELECT classid::int8 AS class, objid::int8 AS key, pid = pg_backend_pid() AS mine
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid IN ($1::int8::oid, $2::int8::oid)
"""
_TAKE = "SELECT k FROM unnest($2::int4[]) AS k WHERE pg_try_advisory_lock($1::int4, k)"
_GIVE = "SELECT pg_advisory_unlock($1::int4, k) FROM unnest($2::int4[]) AS k"


def lock_key(mailbox: str) -> int:
    """The mailbox's lock key: stable across daemons and restarts. Two names that share a
    key share a watcher, which is still one watcher each."""
    return zlib.crc32(mailbox.encode()) & 0x7FFF_FFFF


@dataclass(frozen=True)
class Plan:
    take: list[int]
    give: list[int]


def plan(
    keys: Collection[int],
    mine: Collection[int],
    taken: Collection[int],
    daemons: int,
    rng: random.Random,
) -> Plan:
    """What this daemon takes and gives back to hold its share: the keys divided by the live
    daemons, rounded up (so every key has a taker). Only free keys are tried; a daemon over
    its share (another has just started) gives back the excess for the others to take."""
    share = math.ceil(len(keys) / max(daemons, 1))
    held = [k for k in keys if k in mine]
    if len(held) > share:
        return Plan(take=[], give=sorted(held)[share:])
    free = [k for k in keys if k not in taken and k not in mine]
    rng.shuffle(free)
    return Plan(take=free[: share - len(held)], give=[])


class Duty(Protocol):
    #: Whether other daemons may take over: then a daemon that stops leaves its inboxes'
    #: records as they are (the next watcher writes its own), rather than saying "down".
    shared: bool

    async def round(self, mailboxes: Collection[str]) -> frozenset[str]:
        """The mailboxes this daemon is to watch now."""
        ...

    async def close(self) -> None: ...


class Solo:
    """One daemon on the database (SQLite): it watches every inbox."""

    shared = False

    async def round(self, mailboxes: Collection[str]) -> frozenset[str]:
        return frozenset(mailboxes)

    async def close(self) -> None:
        return None


class Shared:
    """Several daemons on one PostgreSQL: the locks above, on a connection of its own (a
    session lock must outlive every pooled connection's transactions)."""

    shared = True

    def __init__(self, url: str, rng: random.Random | None = None, timeout: float = 10.0):
        self.url = url
        self.rng = rng or random.Random()
        self.timeout = timeout
        self._conn: Any = None
        self._lost_said = False

    async def _connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # only PostgreSQL deployments need it

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        creds = expand_db_url(self.url)["credentials"]
        self._conn = await asyncpg.connect(
            host=creds.get("host"),
            port=creds.get("port"),
            user=creds.get("user"),
            password=creds.get("password"),
            database=creds.get("database"),
            ssl=creds.get("ssl"),
            timeout=self.timeout,
            command_timeout=self.timeout,
            server_settings={"application_name": f"sequencer watch {WATCHER_ID}", **_KEEPALIVES},
        )
        await self._conn.execute("SELECT pg_advisory_lock_shared($1::int4, 0)", PRESENT_CLASS)
        return self._conn

    async def round(self, mailboxes: Collection[str]) -> frozenset[str]:
        by_key: Mapping[int, list[str]] = _by_key(mailboxes)
        try:
            conn = await self._connection()
            rows = await conn.fetch(_LOCKS, WATCH_CLASS, PRESENT_CLASS)
            daemons = sum(1 for r in rows if r["class"] == PRESENT_CLASS)
            mine = {r["key"] for r in rows if r["class"] == WATCH_CLASS and r["mine"]}
            taken = {r["key"] for r in rows if r["class"] == WATCH_CLASS}
            todo = plan(list(by_key), mine, taken, daemons, self.rng)
            if todo.give:
                await conn.execute(_GIVE, WATCH_CLASS, todo.give)
                mine -= set(todo.give)
            if todo.take:
                mine |= {r["k"] for r in await conn.fetch(_TAKE, WATCH_CLASS, todo.take)}
        except Exception as exc:  # the database is away: whatever we held is not ours now
            if not self._lost_said:
                log.warning("inbox_duty.lost", error=str(exc) or type(exc).__name__)
                self._lost_said = True
            await self.close()
            return frozenset()
        self._lost_said = False
        return frozenset(name for key in mine for name in by_key.get(key, ()))

    async def close(self) -> None:
        """End the session: PostgreSQL lets every lock it held go at once."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()


def _by_key(mailboxes: Collection[str]) -> dict[int, list[str]]:
    keys: defaultdict[int, list[str]] = defaultdict(list)
    for name in mailboxes:
        keys[lock_key(name)].append(name)
    return dict(keys)


def for_database(url: str) -> Duty:
    """Solo on SQLite; the shared locks on PostgreSQL."""
    return Solo() if url.startswith("sqlite://") else Shared(url)
