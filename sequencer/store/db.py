"""Opening and closing the database, the one-daemon-per-SQLite-file lock, and surviving
database faults: which errors are transient (locked, busy, a restart) and retrying them."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import os
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import structlog
from tortoise import Tortoise, connections
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    BaseDBAsyncClient,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.backends.base.config_generator import generate_config
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connections
from tortoise.exceptions import DBConnectionError, OperationalError, TransactionManagementError

from sequencer.errors import StoreError
from sequencer.store import schema, sharing

log = structlog.get_logger("sequencer.store")
T = TypeVar("T")

MODELS: dict[str, Iterable[str | ModuleType]] = {"models": ["sequencer.store.models"]}

#: Called at each wait of `retrying`, in the tasks that set it: the scheduler loop pings
#: systemd's watchdog there, since waiting out a database outage is not a hang.
WAITING: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "WAITING", default=None
)


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite://"):
        return None
    path = url.removeprefix("sqlite://").split("?", 1)[0]  # ?busy_timeout=... is no path
    return None if path in ("", ":memory:") else Path(path)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def lock_path(url: str) -> Path | None:
    """The SQLite file's lock file: the daemon holds it (flock) while it runs."""
    path = sqlite_path(url)
    return None if path is None else path.with_name(path.name + ".lock")


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[BaseDBAsyncClient]:
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StoreError(f"database folder {path.parent} does not exist (create it first)")
    if path is not None:
        # Every command that opens the database comes through here.
        sharing.check_owner(path)
        sharing.prepare(path)
    # tortoise caches each model's INSERT statement under the connection's name, not its
    # dialect: a process that opens SQLite and then PostgreSQL (tests, `demo`) would send
    # SQLite's placeholders to PostgreSQL. Start each connection with an empty cache.
    EXECUTOR_CACHE.clear()
    try:
        config = generate_config(url, app_modules=MODELS)
        for connection in config["connections"].values():
            if connection.get("engine") == "tortoise.backends.asyncpg":
                connection["engine"] = __name__  # PostgreSQL through PostgresClient below
        await Tortoise.init(config=config)
        yield connections.get("default")
    finally:
        await Tortoise.close_connections()


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[None]:
    """Connect, create the schema if the database is empty, refuse one whose schema is not
    this code's (`sequencer migrate` upgrades it), and close on the way out."""
    async with _opened(url) as client:
        try:
            await schema.ensure_current(client, redact(url), lock_path(url))
        except (DBConnectionError, OperationalError, OSError) as exc:
            raise StoreError(f"cannot open database {redact(url)}: {exc}") from None
        yield


async def migrate(url: str, now: datetime) -> schema.Migrated:
    """`sequencer migrate`: apply the pending migrations (see schema.migrate)."""
    async with _opened(url) as client:
        try:
            return await schema.migrate(client, redact(url), sqlite_path(url), lock_path(url), now)
        except (DBConnectionError, OperationalError, OSError) as exc:
            raise StoreError(f"cannot open database {redact(url)}: {exc}") from None


class _Transaction(TransactionContextPooled):
    """tortoise's pooled transaction, which never leaves its task bound to a connection.
    tortoise 1.1.9 binds the task to the connection it takes from the pool, then unbinds it
    only after returning the connection, and only in __aexit__. A BEGIN that fails (never
    reaching __aexit__) or a return that raises (asyncpg closes a connection it cannot
    reset, and raises) left the task bound: after a PostgreSQL restart, every later query
    of that task used the dead connection and failed for ever (the inbox watcher's, a
    send's outcome being retried)."""

    async def __aenter__(self) -> TransactionalDBClient:
        await self.ensure_connection()
        pool = self.client._parent._pool
        self.client._connection = await pool.acquire()
        self.token = get_connections().set(self.connection_name, self.client)
        try:
            await self.client.begin()
        except BaseException:
            await self._release()
            raise
        return self.client

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        try:
            if not self.client._finalized:
                if exc_type is None:
                    await self.client.commit()
                elif exc_type is not TransactionManagementError:  # it cannot roll back
                    await self.client.rollback()
        finally:
            await self._release()

    async def _release(self) -> None:
        get_connections().reset(self.token)
        pool = self.client._parent._pool
        if pool is not None:
            with contextlib.suppress(Exception):  # closed by asyncpg when it cannot reset
                await pool.release(self.client._connection)


class PostgresClient(AsyncpgDBClient):
    """tortoise's asyncpg client whose transactions are `_Transaction`s.

    The pool keeps asyncpg's reset on release (one round trip per statement outside a
    transaction): it is also what finds a connection the server ended under a COMMIT, so
    it is closed rather than handed out again (tests/test_database_faults.py)."""

    def _in_transaction(self) -> TransactionContext:
        return _Transaction(TransactionWrapper(self), self._pool_init_lock)


#: This module is the tortoise engine `connected` gives PostgreSQL URLs: tortoise looks up
#: an engine's client class by this name.
client_class = PostgresClient


@contextmanager
def daemon_lock(url: str) -> Iterator[None]:
    """Refuse a second daemon on the same SQLite file: they would both send every step.

    PostgreSQL allows several daemons: claims there are conditional updates with leases.
    """
    path = sqlite_path(url)
    if path is None:
        yield
        return
    sharing.check_owner(path)  # before the lock file: root must not create it either
    fd = sharing.open_lock(path.with_name(path.name + ".lock"))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            raise StoreError(
                f"another sequencer daemon (pid {holder or '?'}) is already running on {path}; "
                "two daemons on one SQLite file would send every step twice. Stop it first, "
                "or use PostgreSQL to run several daemons."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


_TRANSIENT_WORDS = ("locked", "busy", "connection", "closed", "shutdown", "terminat", "timeout")


def transient(exc: BaseException) -> bool:
    """A database fault that passes with time: SQLite busy or locked by another process, a
    PostgreSQL server restarting or a connection it dropped. Retrying helps; anything else
    (a constraint, a bug) it would not."""
    if isinstance(exc, DBConnectionError | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, OperationalError | TransactionManagementError | sqlite3.OperationalError):
        text = str(exc).lower()
        return any(word in text for word in _TRANSIENT_WORDS)
    # asyncpg's connection faults (server restart, admin shutdown, "cannot connect now")
    # pass through tortoise untranslated; match them by module without importing asyncpg.
    kind = type(exc)
    if not kind.__module__.startswith("asyncpg"):
        return False
    if "Interface" in kind.__name__:
        # The connection closed under us (a rollback after a restart says so). Any other
        # InterfaceError is a misuse, such as two queries at once on one connection: a bug,
        # which retrying for ever would hide.
        return "closed" in str(exc).lower()
    if kind.__name__ == "InternalClientError":
        # The server's FATAL (a restart, a terminated session) was read on an idle
        # connection before its hang-up: asyncpg refuses the next query with "another
        # operation (2) is in progress". The pool closes that connection when it is released.
        return "another operation" in str(exc)
    return any(
        name in kind.__name__
        for name in ("Connection", "CannotConnectNow", "AdminShutdown", "Crash")
    )


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    first: float = 0.2,
    most: float = 10.0,
) -> T:
    """`call()` until it succeeds, waiting with backoff and jitter after each transient
    database fault. Other errors are raised at once. It never gives up: the daemon must
    neither exit nor drop what it was recording while the database is away."""
    delay = first
    failures = 0
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not transient(exc):
                raise
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.warning(
                    "database.unavailable",
                    doing=what,
                    error=str(exc) or type(exc).__name__,
                    attempts=failures,
                    retry_in=round(delay, 2),
                )
            if (waiting := WAITING.get()) is not None:
                waiting()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, most)
            continue
        if failures:
            log.info("database.recovered", doing=what, attempts=failures)
        return result
