"""The database's schema version: checked at every open, created when the database is empty,
upgraded by `sequencer migrate`.

Migrations are tortoise-orm's own (`tortoise.migrations`): one module per schema change in
sequencer/store/migrations/, written by `python -m sequencer.store.migrations NAME` from the
difference between models.py and the migrations before it. The version of a database is the
set of migrations recorded in its `tortoise_migrations` table. It is current when that set is
exactly the one this code ships; the check is two small catalogue queries.

An empty database is created straight from models.py (generate_schemas, then every migration
recorded as applied): faster than replaying them, and tests/test_migrate.py proves a database
upgraded from the first version has the same tables, columns, indexes and keys.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pkgutil
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, closing, suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from time import monotonic
from typing import Any, ClassVar, Literal

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError, OperationalError, TransactionManagementError
from tortoise.fields.base import DB_DEFAULT_NOT_SET
from tortoise.fields.relational import ForeignKeyFieldInstance, RelationalField
from tortoise.migrations.executor import MigrationExecutor
from tortoise.migrations.graph import MigrationKey
from tortoise.migrations.recorder import MigrationRecorder
from tortoise.migrations.schema_editor import (
    AsyncpgSchemaEditor,
    BaseSchemaEditor,
    SqliteSchemaEditor,
)
from tortoise.migrations.schema_generator.state import State
from tortoise.migrations.schema_generator.state_apps import StateApps
from tortoise.models import Model
from tortoise.transactions import in_transaction
from tortoise.utils import get_schema_sql

from sequencer.errors import StoreError
from sequencer.store import migrations, models, sharing

APP = "models"
APPS_CONFIG: dict[str, dict[str, Any]] = {
    APP: {
        "models": ["sequencer.store.models"],
        "default_connection": "default",
        "migrations": migrations.__name__,
    }
}
RECORDS = "tortoise_migrations"  # tortoise's MigrationRecorder table
# The versions made by generate_schemas before migrations existed: `migrate` recognises a
# database without migration records by its columns, as one of these.
UNVERSIONED = ("0001_initial", "0002_etiquette", "0003_mailbox_pause")
# pg_advisory_lock key for creating and migrating: "SEQUENCR" as a 64-bit integer.
PG_LOCK_KEY = int.from_bytes(b"SEQUENCR", "big")
LOCK_WAIT = 60.0  # seconds to wait for another process that is creating or migrating

Kind = Literal["empty", "current", "behind", "unversioned", "ahead"]


@cache
def shipped() -> tuple[str, ...]:
    """The migrations this code has, in order (the loader's rule: modules not starting with _)."""
    return tuple(
        sorted(
            m.name
            for m in pkgutil.iter_modules(migrations.__path__)
            if not m.ispkg and m.name[0] not in "_~"
        )
    )


def our_tables() -> frozenset[str]:
    return frozenset(
        obj._meta.db_table
        for obj in vars(models).values()
        if isinstance(obj, type) and issubclass(obj, Model) and obj is not Model
    )


@dataclass(frozen=True)
class Found:
    """What the catalogue says: every table, and the migrations recorded (None: no record table)."""

    tables: frozenset[str]
    applied: frozenset[str] | None


@dataclass(frozen=True)
class Assessment:
    kind: Kind
    pending: tuple[str, ...] = ()  # shipped, not applied
    unknown: tuple[str, ...] = ()  # applied, not shipped: a newer sequencer's


def assess(found: Found, ours: frozenset[str], known: Sequence[str]) -> Assessment:
    applied = found.applied or frozenset()
    unknown = tuple(sorted(applied - set(known)))
    if unknown:
        return Assessment("ahead", unknown=unknown)
    if not applied:
        return Assessment("unversioned" if found.tables & ours else "empty")
    pending = tuple(name for name in known if name not in applied)
    return Assessment("behind", pending=pending) if pending else Assessment("current")


def _is_postgres(client: BaseDBAsyncClient) -> bool:
    return client.capabilities.dialect == "postgres"


async def inspect(client: BaseDBAsyncClient) -> Found:
    if _is_postgres(client):
        query = "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    tables = frozenset(row["name"] for row in await client.execute_query_dict(query))
    if RECORDS not in tables:
        return Found(tables, None)
    rows = await client.execute_query_dict(
        f"SELECT name FROM {RECORDS} WHERE app = '{APP}'"  # noqa: S608 - constants
    )
    return Found(tables, frozenset(row["name"] for row in rows))


def _refusal(url: str, state: Assessment) -> StoreError:
    if state.kind == "ahead":
        return StoreError(
            f"database {url} was made by a newer sequencer: it has migration(s) "
            f"{', '.join(state.unknown)}, which this version does not know. Run the newer "
            "sequencer, or restore the backup taken before that upgrade."
        )
    why = (
        "was made by an earlier sequencer, before schema migrations"
        if state.kind == "unversioned"
        else f"has an older schema than this sequencer (missing {', '.join(state.pending)})"
    )
    return StoreError(
        f"database {url} {why}: run `sequencer migrate` with the same --config to upgrade it "
        "(a SQLite database is backed up first), then try again."
    )


async def ensure_current(client: BaseDBAsyncClient, url: str, lock_path: Path | None) -> None:
    """Create an empty database at the current schema; refuse one at any other version.

    `url` is for messages (redacted); `lock_path` is the SQLite lock file (None otherwise)."""
    ours, known = our_tables(), shipped()
    state = assess(await inspect(client), ours, known)
    if state.kind == "empty":
        state = await _create_if_empty(client, url, lock_path)
    if state.kind != "current":
        raise _refusal(url, state)


async def _create_if_empty(
    client: BaseDBAsyncClient, url: str, lock_path: Path | None
) -> Assessment:
    """Under the schema lock, look again (another process may have won the race), and create
    the whole schema and its migration records in one transaction: all or nothing."""
    ours, known = our_tables(), shipped()
    if _is_postgres(client):
        # One connection: the lock is the transaction's, released by its commit.
        async with in_transaction() as txn:
            await txn.execute_script(f"SET LOCAL lock_timeout = '{LOCK_WAIT:.0f}s'")
            try:
                await txn.execute_query("SELECT pg_advisory_xact_lock($1)", [PG_LOCK_KEY])
            except OperationalError:
                raise _busy(url) from None
            state = assess(await inspect(txn), ours, known)
            if state.kind == "empty":
                await _create_postgres(txn, known)
                state = Assessment("current")
        return state
    async with _schema_lock(client, url, lock_path):
        state = assess(await inspect(client), ours, known)
        if state.kind == "empty":
            await _create_sqlite(client, known)
            state = Assessment("current")
    return state


async def _create_postgres(txn: BaseDBAsyncClient, known: Sequence[str]) -> None:
    await _recorder(txn).ensure_schema(_editor(txn, atomic=False))
    await txn.execute_script(get_schema_sql(txn, safe=False))
    await _record(txn, known)


async def _create_sqlite(client: BaseDBAsyncClient, known: Sequence[str]) -> None:
    # executescript commits first: the record table before the transaction, one statement
    # at a time inside it.
    await _recorder(client).ensure_schema(_editor(client, atomic=False))
    async with in_transaction() as txn:
        for statement in split_sql(get_schema_sql(txn, safe=False)):
            await txn.execute_query(statement)
        await _record(txn, known)


class _Recorder(MigrationRecorder):
    """tortoise's, with its record model built once (building one reads source files)."""

    _built: ClassVar[dict[str, type[Model]]] = {}

    def _make_model(self, table_name: str) -> type[Model]:
        if table_name not in self._built:
            self._built[table_name] = super()._make_model(table_name)
        return self._built[table_name]


def _recorder(client: BaseDBAsyncClient) -> MigrationRecorder:
    return _Recorder(client, table_name=RECORDS)


async def _record(client: BaseDBAsyncClient, names: Iterable[str]) -> None:
    recorder = _recorder(client)
    for name in names:
        await recorder.record_applied(APP, name)


def split_sql(script: str) -> list[str]:
    """SQLite statements, split where SQLite says one ends (not at a `;` in a comment)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        out.append(pending.strip())
    return out


@asynccontextmanager
async def _schema_lock(
    client: BaseDBAsyncClient, url: str, lock_path: Path | None
) -> AsyncIterator[None]:
    """One process at a time creates or migrates: concurrent starts on an empty PostgreSQL
    database otherwise deadlock in CREATE TABLE.

    PostgreSQL: a session advisory lock, held on one pooled connection. SQLite: a POSIX
    record lock on the daemon's lock file; it is independent of the daemon's flock() on the
    same file, so a running daemon does not block `migrate` (and `run` can create its own
    database)."""
    if _is_postgres(client):
        async with client.acquire_connection() as conn:

            async def try_pg() -> bool:
                return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", PG_LOCK_KEY))

            await _wait_for(try_pg, url)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", PG_LOCK_KEY)
        return
    if lock_path is None:  # :memory:
        yield
        return
    fd = sharing.open_lock(lock_path)
    try:

        async def try_file() -> bool:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            return True

        await _wait_for(try_file, url)
        yield
    finally:
        os.close(fd)  # releases the record lock


async def _wait_for(attempt: Callable[[], Awaitable[bool]], url: str) -> None:
    deadline = monotonic() + LOCK_WAIT
    while not await attempt():
        if monotonic() > deadline:
            raise _busy(url)
        await asyncio.sleep(0.05)


def _busy(url: str) -> StoreError:
    return StoreError(
        f"database {url}: another sequencer has been creating or migrating it for "
        f"{LOCK_WAIT:.0f} s; let it finish (or stop it), then try again."
    )


# --- `sequencer migrate` ------------------------------------------------------------------


@dataclass
class Migrated:
    """What `migrate` did, for the user."""

    version: str  # the last migration: where the database is now
    backup: Path | None = None
    created: bool = False
    adopted: str | None = None  # an unversioned database, recognised as this version
    dropped: list[str] = field(default_factory=list)  # empty tables a later version made early
    applied: list[str] = field(default_factory=list)


async def migrate(
    client: BaseDBAsyncClient,
    url: str,
    sqlite_file: Path | None,
    lock_path: Path | None,
    now: datetime,
) -> Migrated:
    """Bring the database to this code's schema, under the schema lock; back a SQLite file up
    first. Each migration is one transaction: a failure keeps the ones before it."""
    ours, known = our_tables(), shipped()
    result = Migrated(version=known[-1])
    async with _schema_lock(client, url, lock_path):
        state = assess(await inspect(client), ours, known)
        if state.kind == "ahead":
            raise _refusal(url, state)
        if state.kind == "empty":
            if _is_postgres(client):
                async with in_transaction() as txn:
                    await _create_postgres(txn, known)
            else:
                await _create_sqlite(client, known)
            result.created = True
            return result
        if state.kind == "current":
            return result
        executor = _Executor(client, APPS_CONFIG)
        await executor.loader.build_graph()
        stray: list[str] = []
        if state.kind == "unversioned":
            result.adopted, stray = await _recognise(client, executor, url)
        if sqlite_file is not None:
            result.backup = await asyncio.to_thread(backup, sqlite_file, now)
        if result.adopted is not None:
            for table in stray:
                await client.execute_script(f'DROP TABLE "{table}"')
            result.dropped = stray
            await _recorder(client).ensure_schema(_editor(client, atomic=False))
            await _record(client, known[: known.index(result.adopted) + 1])
        result.applied = await _apply(executor, client, url, result.backup)
    return result


def backup(path: Path, now: datetime) -> Path:
    """A consistent copy of a live SQLite database beside it (the online backup API), with the
    database's own permissions; never overwrites a file."""
    stamp = now.strftime("%Y%m%dT%H%M%S")
    mode = stat.S_IMODE(path.stat().st_mode)
    n = 0
    while True:
        dest = path.with_name(f"{path.name}.backup-{stamp}" + (f".{n}" if n else ""))
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            break
        except FileExistsError:
            n += 1
    try:
        with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(dest)) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except (sqlite3.Error, OSError) as exc:
        with suppress(OSError):
            dest.unlink()
        raise StoreError(
            f"cannot back {path} up to {dest}: {exc}; nothing was changed. Free some space "
            "or fix the folder's permissions, then run `sequencer migrate` again."
        ) from None
    return dest


async def _apply(
    executor: MigrationExecutor, client: BaseDBAsyncClient, url: str, saved: Path | None
) -> list[str]:
    applied: list[str] = []
    running: list[str] = []

    def progress(event: str, _app: str, name: str) -> None:
        if event == "apply_start":
            running[:] = [name]
        elif event == "apply_done":
            applied.append(name)

    sqlite = not _is_postgres(client)
    # SQLite rebuilds a table to alter it; with foreign keys on, dropping the old one would
    # cascade to its children. Off for the migration (it is a no-op inside a transaction),
    # then every key checked.
    if sqlite:
        await client.execute_script("PRAGMA foreign_keys=OFF")
    try:
        await executor.migrate(progress=progress)
    except (OperationalError, IntegrityError, TransactionManagementError) as exc:
        where = f"; the backup is {saved}" if saved else ""
        raise StoreError(
            f"database {url}: migration {running[0] if running else '?'} failed: {exc}. It was "
            f"rolled back; {', '.join(applied) or 'none'} applied before it{where}."
        ) from None
    finally:
        if sqlite:
            await client.execute_script("PRAGMA foreign_keys=ON")
    if sqlite:
        broken = await client.execute_query_dict("PRAGMA foreign_key_check")
        if broken:
            where = f" Restore the backup {saved} and report this." if saved else ""
            raise StoreError(
                f"database {url}: after migrating, {len(broken)} row(s) point at rows that do "
                f"not exist (first: {dict(broken[0])}).{where}"
            )
    return applied


# --- recognising a database made before migrations ----------------------------------------


async def _columns(client: BaseDBAsyncClient) -> dict[str, frozenset[str]]:
    if _is_postgres(client):
        query = (
            "SELECT table_name AS t, column_name AS c FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        )
    else:
        query = (
            "SELECT m.name AS t, p.name AS c FROM sqlite_master m "
            "JOIN pragma_table_info(m.name) p WHERE m.type = 'table'"
        )
    found: dict[str, set[str]] = {}
    for row in await client.execute_query_dict(query):
        found.setdefault(row["t"], set()).add(row["c"])
    return {table: frozenset(cols) for table, cols in found.items()}


def _state_columns(state: State) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for model in state.models.values():
        cols = set()
        for name, fld in model.fields.items():
            if isinstance(fld, ForeignKeyFieldInstance):
                cols.add(fld.source_field or f"{name}_id")
            elif not isinstance(fld, RelationalField):
                cols.add(fld.source_field or name)
        out[model.table] = frozenset(cols)
    return out


async def _versions(executor: MigrationExecutor) -> dict[str, dict[str, frozenset[str]]]:
    """The tables and columns after each unversioned migration, from the migrations."""
    graph = executor.loader.graph
    state = State(models={}, apps=StateApps(default_connections={APP: "default"}))
    out: dict[str, dict[str, frozenset[str]]] = {}
    for key in graph.forwards_plan(MigrationKey(app_label=APP, name=UNVERSIONED[-1])):
        migration = graph.nodes[key]
        assert migration is not None  # the graph was built from the files on disk
        await migration.apply(state, dry_run=True, schema_editor=None)
        out[key.name] = _state_columns(state)
    return out


async def _recognise(
    client: BaseDBAsyncClient, executor: MigrationExecutor, url: str
) -> tuple[str, list[str]]:
    """Which version an unversioned database is, and the tables to drop first: tables of a
    later version that a newer sequencer's generate_schemas added to an older database
    (before it failed on the missing columns). Those are dropped only when empty."""
    actual = await _columns(client)
    versions = await _versions(executor)
    later_tables = set().union(*versions.values())
    for name in reversed(UNVERSIONED):
        expected = versions[name]
        if any(actual.get(table) != cols for table, cols in expected.items()):
            continue
        stray = sorted((later_tables | our_tables()) & set(actual) - set(expected))
        for table in stray:
            rows = await client.execute_query_dict(f'SELECT 1 FROM "{table}" LIMIT 1')  # noqa: S608
            if rows:
                raise StoreError(
                    f"database {url} looks like version {name}, but its table {table} (from a "
                    "later version) has rows: it was changed by hand or by a newer sequencer. "
                    "Nothing was changed; restore a backup, or ask for help."
                )
        return name, stray
    closest = min((_difference(v, actual) for v in versions.values()), key=len)
    raise StoreError(
        f"database {url} has sequencer's tables but no migration records, and its columns "
        f"match no version sequencer made ({'; '.join(closest)}). Nothing was changed; "
        "restore a backup, or ask for help."
    )


def _difference(
    expected: dict[str, frozenset[str]], actual: dict[str, frozenset[str]]
) -> list[str]:
    parts: list[str] = []
    for table, cols in sorted(expected.items()):
        have = actual.get(table)
        if have is None:
            parts.append(f"no table {table}")
            continue
        if missing := sorted(cols - have):
            parts.append(f"{table} lacks {', '.join(missing)}")
        if extra := sorted(have - cols):
            parts.append(f"{table} has unknown {', '.join(extra)}")
    return parts


# --- how migrations change a table ----------------------------------------------------------


class _FillsNewColumns(BaseSchemaEditor):
    """tortoise 1.1.9 adds a NOT NULL column without a value for the rows already there
    (PostgreSQL and SQLite refuse when the table has rows) and without its index. Here a
    new column starts with the model's default, kept as the column's DEFAULT (so a daemon
    still running the previous version can insert), and gets the index db_index asks for,
    named as generate_schemas names it."""

    async def add_field(self, model: type[Model], field_name: str) -> None:
        fld = model._meta.fields_map[field_name]
        fill = (
            not fld.null
            and not fld.has_db_default()
            and fld.default is not None
            and not isinstance(fld, RelationalField)
        )
        if fill:  # the migration state's own copy of the field, not models.py's
            fld.db_default = fld.default() if callable(fld.default) else fld.default
        try:
            await super().add_field(model, field_name)
        finally:
            if fill:
                fld.db_default = DB_DEFAULT_NOT_SET
        if fld.index and not fld.unique and not fld.pk and not isinstance(fld, RelationalField):
            column = model._meta.fields_db_projection[field_name]
            await self._run_sql(self._get_index_sql(model, [column]))


class _SqliteEditor(_FillsNewColumns, SqliteSchemaEditor):
    """SQLite alters or drops a column by rebuilding the table, and tortoise 1.1.9 rebuilds it
    without its indexes and UNIQUE constraints (sent_message's one-row-per-step among them).
    They are put back: the indexes as generate_schemas names them, unique_together as
    unique indexes."""

    async def _remake_table(
        self,
        model: type[Model],
        create_field: Any = None,
        delete_field: Any = None,
        alter_fields: Any = None,
    ) -> None:
        await super()._remake_table(
            model, create_field=create_field, delete_field=delete_field, alter_fields=alter_fields
        )
        meta = model._meta
        table = self._qualify_table_name(meta.db_table, meta.schema)
        wanted = split_sql(self._get_model_sql_data(model).table_sql)[1:]  # after CREATE TABLE
        for group in meta.unique_together or ():
            cols = [meta.fields_map[name].source_field or name for name in group]
            wanted.append(
                self.UNIQUE_INDEX_CREATE_TEMPLATE.format(
                    index_name=self._get_unique_constraint_name(model, cols),
                    table_name=table,
                    fields=self._format_index_fields(cols),
                    extra="",
                )
            )
        gone = delete_field and (delete_field.source_field or delete_field.model_field_name)
        for statement in wanted:
            if not gone or f'"{gone}"' not in statement.partition(" ON ")[2]:
                await self._run_sql(statement)


class _PostgresEditor(_FillsNewColumns, AsyncpgSchemaEditor):
    pass


def _editor(
    client: BaseDBAsyncClient, *, atomic: bool, collect_sql: bool = False
) -> BaseSchemaEditor:
    cls = _PostgresEditor if _is_postgres(client) else _SqliteEditor
    return cls(client, atomic=atomic, collect_sql=collect_sql)


class _Executor(MigrationExecutor):
    def _schema_editor(self, atomic: bool = True, collect_sql: bool = False) -> BaseSchemaEditor:
        return _editor(self.connection, atomic=atomic, collect_sql=collect_sql)


# --- models.py against the migrations ---------------------------------------------------------


async def unmigrated_changes() -> list[Any]:
    """The migrations models.py still needs (tortoise MigrationWriter objects); empty when the
    migrations describe it exactly. Needs Tortoise.init (no connection is opened)."""
    from tortoise import Tortoise
    from tortoise.migrations.autodetector import MigrationAutodetector

    if Tortoise.apps is None:
        raise RuntimeError("Tortoise.init first")
    return list(await MigrationAutodetector(Tortoise.apps, APPS_CONFIG).changes())


def describe(writers: Iterable[Any]) -> list[str]:
    return [op.describe() for w in writers for op in w.operations]
