"""Schema migrations as an operator meets them: a database made by an earlier sequencer is
refused with advice, `sequencer migrate` upgrades it in place (SQLite backed up first) with
every contact kept, and a fresh PostgreSQL database survives three processes starting at once.

The old databases are made with the DDL that generate_schemas ran at those commits, captured
in tests/schemas/ by tests/schemas/capture.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import PG_ADMIN, ImapServer, _pg_admin
from typer.testing import CliRunner
from world import write_config

from sequencer.cli import app
from sequencer.devservers import free_port
from sequencer.store import db, schema

SCHEMAS = Path(__file__).parent / "schemas"
# What a day of sequencer at faab963 leaves behind: one contact waiting for step 2, one who
# replied (the reply recorded and ending it), one whose step 1 was on the wire when that
# version died (its row still `pending`), a suppressed address, the inbox cursor.
ROWS = """
INSERT INTO enrollment (email, sequence, mailbox, variables, state, reason, steps_sent, next_at,
    attempts, enrolled_at, last_sent_at, finished_at) VALUES
  ('jo@prospect.test', 'follow-up', 'sales', '{"first_name":"Jo"}', 'active', NULL, 1,
   '2026-11-26 10:00:00+00:00', 0, '2026-11-20 09:00:00+00:00', '2026-11-20 09:00:05+00:00', NULL),
  ('ann@prospect.test', 'follow-up', 'sales', '{"first_name":"Ann"}', 'replied', 'reply', 2, NULL,
   0, '2026-11-16 09:00:00+00:00', '2026-11-19 09:00:05+00:00', '2026-11-19 14:00:00+00:00'),
  ('bo@prospect.test', 'follow-up', 'sales', '{"first_name":"Bo"}', 'active', NULL, 0,
   '2026-11-20 09:00:00+00:00', 0, '2026-11-20 09:00:00+00:00', NULL, NULL);
INSERT INTO sent_message (enrollment_id, step, message_id, subject, status, created_at, sent_at)
VALUES
  (3, 1, '<4@vendor.test>', 'Notes from our call, Bo', 'pending', '2026-11-20 09:00:04+00:00',
   NULL),
  (1, 1, '<1@vendor.test>', 'Notes from our call, Jo', 'sent', '2026-11-20 09:00:04+00:00',
   '2026-11-20 09:00:05+00:00'),
  (2, 1, '<2@vendor.test>', 'Notes from our call, Ann', 'sent', '2026-11-16 09:00:04+00:00',
   '2026-11-16 09:00:05+00:00'),
  (2, 2, '<3@vendor.test>', 'Re: Notes from our call, Ann', 'sent', '2026-11-19 09:00:04+00:00',
   '2026-11-19 09:00:05+00:00');
INSERT INTO inbound_message (mailbox, uidvalidity, uid, message_id, from_address, subject,
    verdict, kind, rules, action, enrollment_id, received_at) VALUES
  ('sales', 7, 41, '<r1@prospect.test>', 'ann@prospect.test', 'Re: Notes from our call, Ann',
   'human_reply', NULL, '["quoted-reply"]', 'replied', 2, '2026-11-19 14:00:00+00:00');
UPDATE enrollment SET ended_by_id = 1 WHERE id = 2;
INSERT INTO suppression (email, reason, detail, created_at) VALUES
  ('gone@prospect.test', 'bounce', '550 5.1.1 no such user', '2026-11-18 12:00:00+00:00');
INSERT INTO mailbox_cursor (mailbox, uidvalidity, last_uid) VALUES ('sales', 7, 42);
"""
# The same day at 19ca62f (the last version before migrations): its columns have no DEFAULT.
ROWS_19CA62F = """
INSERT INTO enrollment (email, sequence, mailbox, variables, state, steps_sent, next_at, attempts,
    enrolled_at, next_reasons, promises, promised) VALUES
  ('jo@prospect.test', 'follow-up', 'sales', '{"first_name":"Jo"}', 'active', 1,
   '2026-11-26 10:00:00+00:00', 0, '2026-11-20 09:00:00+00:00', '["promise"]',
   '{"2":{"local":"2026-11-26T10:00","zone":"UTC"}}', TRUE);
INSERT INTO sent_message (enrollment_id, step, message_id, subject, status, created_at, sent_at,
    email, mailbox) VALUES
  (1, 1, '<1@vendor.test>', 'Notes from our call, Jo', 'sent', '2026-11-20 09:00:04+00:00',
   '2026-11-20 09:00:05+00:00', 'jo@prospect.test', 'sales');
INSERT INTO mailbox_state (mailbox, next_free_at, paused_until, pause_reason) VALUES
  ('sales', '2026-11-20 09:03:00+00:00', NULL, NULL);
"""


def sql(url: str, script: str, *, fetch: bool = False) -> list[tuple[Any, ...]]:
    """Run SQL on the test database behind sequencer's back, as an older version would."""
    if url.startswith("sqlite://"):
        with closing(sqlite3.connect(url.removeprefix("sqlite://"))) as conn:
            if fetch:
                return [tuple(row) for row in conn.execute(script)]
            conn.executescript(script)
            return []

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            if fetch:
                return [tuple(row) for row in await conn.fetch(script)]
            await conn.execute(script)
            return []
        finally:
            await conn.close()

    return asyncio.run(go())


def dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite://") else "postgres"


def old_database(url: str, commit: str = "faab963", rows: str = ROWS) -> None:
    sql(url, (SCHEMAS / f"{commit}.{dialect(url)}.sql").read_text() + rows)


@pytest.fixture
def cfg(tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings on `database`. No mail server is contacted by the commands tested here."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "unused")
    return write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), database)


def cli(cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--config", str(cfg)])


def url_of(cfg: Path) -> str:
    from sequencer.config import load_settings

    return load_settings(cfg).database


def test_old_database_is_refused_then_migrated_with_every_contact(cfg: Path) -> None:
    url = url_of(cfg)
    old_database(url)
    for args in (
        ("status",),
        ("enroll", "follow-up", "new@prospect.test", "--var", "first_name=N"),
    ):
        res = cli(cfg, *args)
        assert res.exit_code == 2, res.output
        assert f"database {db.redact(url)} was made by an earlier sequencer" in res.stderr
        assert "run `sequencer migrate`" in res.stderr
    assert sql(url, "SELECT count(*) FROM enrollment", fetch=True) == [(3,)]  # nothing enrolled

    res = cli(cfg, "migrate")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "recognised a database made before migrations as 0001_initial" in lines
    assert "applied 0002_etiquette" in lines and "applied 0003_mailbox_pause" in lines
    if dialect(url) == "sqlite":
        match = re.search(r"^backed up the database to (\S+)$", res.stdout, re.M)
        assert match, res.stdout
        saved = Path(match.group(1))
        assert saved.name.startswith("state.db.backup-") and saved.parent == cfg.parent
        with closing(sqlite3.connect(saved)) as old:  # the backup is the database as it was
            columns = {row[1] for row in old.execute("PRAGMA table_info(enrollment)")}
            assert "next_reasons" not in columns
            assert old.execute("SELECT email, state FROM enrollment ORDER BY id").fetchall() == [
                ("jo@prospect.test", "active"),
                ("ann@prospect.test", "replied"),
                ("bo@prospect.test", "active"),
            ]
            assert old.execute("SELECT count(*) FROM sent_message").fetchone() == (4,)
    else:
        assert "backed up" not in res.stdout

    res = cli(cfg, "status", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["email"]: r for r in json.loads(res.stdout)}
    assert rows.keys() == {"jo@prospect.test", "ann@prospect.test", "bo@prospect.test"}
    jo, ann = rows["jo@prospect.test"], rows["ann@prospect.test"]
    assert (jo["state"], jo["steps_sent"], jo["next_step"]) == ("active", 1, 2)
    assert jo["next_send_at"].startswith("2026-11-26T10:00:00")
    assert (jo["next_reasons"], jo["promises"], jo["promised"]) == ([], {}, False)
    assert (ann["state"], ann["steps_sent"], ann["reason"]) == ("replied", 2, "reply")
    assert ann["ended_by"]["subject"] == "Re: Notes from our call, Ann"
    # The sent log now carries each send's address and mailbox (the gap and pace count them).
    assert sql(url, "SELECT email, mailbox FROM sent_message ORDER BY id", fetch=True) == [
        ("bo@prospect.test", "sales"),
        ("jo@prospect.test", "sales"),
        ("ann@prospect.test", "sales"),
        ("ann@prospect.test", "sales"),
    ]
    # Bo's step 1 may have gone out when the old version died: it is settled as uncertain by
    # the daemon (held, by default), never sent again as if it were new.
    status = sql(
        url, "SELECT status FROM sent_message WHERE message_id = '<4@vendor.test>'", fetch=True
    )
    assert status == [("sending",)]
    assert sql(url, "SELECT uidvalidity, last_uid FROM mailbox_cursor", fetch=True) == [(7, 42)]
    refused = cli(cfg, "enroll", "follow-up", "gone@prospect.test", "--var", "first_name=G")
    assert refused.exit_code == 2 and "suppression list" in refused.stderr
    res = cli(cfg, "enroll", "follow-up", "new@prospect.test", "--var", "first_name=N")
    assert res.exit_code == 0, res.output

    again = cli(cfg, "migrate")
    assert again.exit_code == 0, again.output
    assert again.stdout == f"already up to date ({schema.shipped()[-1]})\n"
    if dialect(url) == "sqlite":
        assert len(list(cfg.parent.glob("state.db.backup-*"))) == 1  # no second backup


def test_the_daemon_refuses_an_old_database_instead_of_retrying_every_contact(
    tmp_path: Path, sqlite_url: str
) -> None:
    cfg = write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), sqlite_url)
    old_database(sqlite_url)
    res = subprocess.run(
        [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TEST_IMAP_PASSWORD": "unused"},
    )
    assert res.returncode == 2
    assert "run `sequencer migrate`" in res.stderr
    assert '"event": "daemon.failed"' in res.stdout


def test_a_database_made_at_the_last_version_before_migrations_is_adopted(cfg: Path) -> None:
    url = url_of(cfg)
    old_database(url, "19ca62f", ROWS_19CA62F)
    res = cli(cfg, "migrate")
    assert res.exit_code == 0, res.output
    assert "recognised a database made before migrations as 0003_mailbox_pause" in res.stdout
    later = [f"applied {name}" for name in schema.shipped()[3:]]
    assert [line for line in res.stdout.splitlines() if line.startswith("applied")] == later
    (jo,) = json.loads(cli(cfg, "status", "--json").stdout)
    assert (jo["email"], jo["next_reasons"], jo["promised"]) == (
        "jo@prospect.test",
        ["promise"],
        True,
    )
    assert jo["promises"] == {"2": {"local": "2026-11-26 10:00", "zone": "UTC"}}


def test_an_upgraded_database_takes_pauses_by_hand_and_keeps_what_it_had(cfg: Path) -> None:
    """0006_manual_pause on an old database: the contact and the mailbox's pacing state are
    kept, and both can then be paused by hand."""
    url = url_of(cfg)
    old_database(url, "19ca62f", ROWS_19CA62F)
    res = cli(cfg, "migrate")
    assert res.exit_code == 0, res.output
    assert "applied 0006_manual_pause" in res.stdout.splitlines()
    res = cli(cfg, "pause", "jo@prospect.test")
    assert res.exit_code == 0, res.output
    (jo,) = json.loads(cli(cfg, "status", "--json").stdout)
    assert (jo["state"], jo["hold"], jo["promised"]) == ("active", "manual_pause", True)
    res = cli(cfg, "pause", "--mailbox", "sales", "--until", "2099-01-05")
    assert res.exit_code == 0, res.output
    rows = sql(
        url, "SELECT next_free_at, manual_since, manual_until FROM mailbox_state", fetch=True
    )
    assert [[v is not None for v in row] for row in rows] == [[True, True, True]]
    (box,) = json.loads(cli(cfg, "status", "--mailboxes", "--json").stdout)
    assert box["held_reason"] == "manual_pause"


def test_tables_a_newer_version_added_to_an_old_database_are_dropped_when_empty(
    cfg: Path,
) -> None:
    """A newer daemon started on an old database ran generate_schemas(safe=True): it added
    the tables it lacked (mailbox_state) before failing on the missing columns."""
    url = url_of(cfg)
    head = (SCHEMAS / f"19ca62f.{dialect(url)}.sql").read_text()
    start = head.index('CREATE TABLE IF NOT EXISTS "mailbox_state"')
    old_database(url, rows=ROWS + head[start : head.index("CREATE TABLE", start + 1)])
    res = cli(cfg, "migrate")
    assert res.exit_code == 0, res.output
    assert "dropped empty table(s) made early: mailbox_state" in res.stdout
    assert "applied 0002_etiquette" in res.stdout
    assert cli(cfg, "status").exit_code == 0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            "ALTER TABLE enrollment ADD COLUMN mystery TEXT",
            "its columns match no version sequencer made (enrollment has unknown mystery)",
        ),
        (
            'CREATE TABLE "mailbox_state" ("mailbox" VARCHAR(100) NOT NULL PRIMARY KEY, '
            "\"next_free_at\" TIMESTAMP); INSERT INTO mailbox_state VALUES ('sales', NULL)",
            "looks like version 0001_initial, but its table mailbox_state (from a later version) "
            "has rows",
        ),
    ],
)
def test_a_database_of_unknown_shape_is_left_alone(
    tmp_path: Path, sqlite_url: str, change: str, problem: str
) -> None:
    cfg = write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), sqlite_url)
    old_database(sqlite_url, rows=ROWS + change + ";")
    res = cli(cfg, "migrate")
    assert res.exit_code == 2, res.output
    assert problem in res.stderr and "Nothing was changed" in res.stderr
    assert list(tmp_path.glob("state.db.backup-*")) == []
    tables = {t for (t,) in sql(sqlite_url, "SELECT name FROM sqlite_master", fetch=True)}
    assert "tortoise_migrations" not in tables


def test_a_database_from_a_newer_sequencer_is_refused(cfg: Path) -> None:
    url = url_of(cfg)
    assert cli(cfg, "status").exit_code == 0  # creates it
    sql(
        url,
        "INSERT INTO tortoise_migrations (app, name, applied_at) "
        "VALUES ('models', '9999_from_the_future', '2027-01-01 00:00:00+00:00')",
    )
    for args in (("status",), ("migrate",)):
        res = cli(cfg, *args)
        assert res.exit_code == 2, res.output
        assert f"database {db.redact(url)} was made by a newer sequencer" in res.stderr
        assert "9999_from_the_future" in res.stderr


def test_a_database_missing_a_migration_is_refused_with_its_name(
    tmp_path: Path, sqlite_url: str
) -> None:
    cfg = write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), sqlite_url)
    assert cli(cfg, "status").exit_code == 0  # creates it
    last = schema.shipped()[-1]
    sql(sqlite_url, f"DELETE FROM tortoise_migrations WHERE name = '{last}'")  # noqa: S608
    res = cli(cfg, "stop", "jo@prospect.test")
    assert res.exit_code == 2
    assert f"has an older schema than this sequencer (missing {last})" in res.stderr
    assert "run `sequencer migrate`" in res.stderr


def test_an_empty_database_is_created_current_and_migrate_says_so(cfg: Path) -> None:
    res = cli(cfg, "migrate")
    assert res.exit_code == 0, res.output
    assert res.stdout == f"created the schema at {schema.shipped()[-1]}\n"
    assert sorted(
        r[0] for r in sql(url_of(cfg), "SELECT name FROM tortoise_migrations", fetch=True)
    ) == list(schema.shipped())
    assert cli(cfg, "migrate").stdout == f"already up to date ({schema.shipped()[-1]})\n"


CONNECT = """
import asyncio, sys, time
from sequencer.store import db

async def main():
    await asyncio.sleep(float(sys.argv[2]) - time.time())  # all at once, imports done
    async with db.connected(sys.argv[1]):
        pass

asyncio.run(main())
"""


def test_three_processes_starting_at_once_on_a_fresh_postgres_database(postgres_url: str) -> None:
    at = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONNECT, postgres_url, str(at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(30), *p.communicate()) for p in procs]
    assert results == [(0, "", "")] * 3
    names = sql(postgres_url, "SELECT name FROM tortoise_migrations ORDER BY name", fetch=True)
    assert [n for (n,) in names] == list(schema.shipped())


# --- models.py, the migrations and the database agree ----------------------------------------


async def test_models_and_migrations_agree() -> None:
    """Fails when models.py changed without a migration: write it with
    `.venv/bin/python -m sequencer.store.migrations what_changed`."""
    from tortoise import Tortoise

    await Tortoise.init(db_url="sqlite://:memory:", modules=db.MODELS)
    try:
        missing = schema.describe(await schema.unmigrated_changes())
    finally:
        await Tortoise.close_connections()
    assert missing == [], (
        "models.py has changes no migration makes; run "
        "`.venv/bin/python -m sequencer.store.migrations what_changed` and commit the file"
    )


async def _shape(url: str) -> dict[str, Any]:
    """Tables, columns (type, null, key), indexes and foreign keys: what a query relies on.
    Column defaults and order are left out (an added column goes last, with a default)."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        with closing(sqlite3.connect(path)) as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            shape: dict[str, Any] = {}
            for t in tables:
                cols = sorted(
                    (r[1], r[2], r[3], r[5]) for r in conn.execute(f"PRAGMA table_info('{t}')")
                )
                # (columns, unique, name): a UNIQUE constraint and a unique index are one thing
                # to SQLite, and a constraint's index is named by its position.
                indexes = sorted(
                    (
                        tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{i[1]}')")),
                        i[2],
                        None if i[2] else i[1],
                    )
                    for i in conn.execute(f"PRAGMA index_list('{t}')")
                )
                fks = sorted(
                    (r[2], r[3], r[4], r[6])
                    for r in conn.execute(f"PRAGMA foreign_key_list('{t}')")
                )
                shape[t] = (cols, indexes, fks)
            return shape
    conn = await asyncpg.connect(url)
    try:
        cols = await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        indexes = await conn.fetch(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        )
        constraints = await conn.fetch(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
        )
    finally:
        await conn.close()
    return {
        "columns": sorted(tuple(r) for r in cols),
        "indexes": sorted(tuple(r) for r in indexes),
        "constraints": sorted(tuple(r) for r in constraints),
    }


@pytest.fixture
async def another_postgres_url() -> AsyncIterator[str]:
    name = f"seqtest_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_upgraded_database_has_the_shape_of_a_new_one(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every migration, from the first version, builds what models.py describes: the same
    columns, indexes, unique constraints and foreign keys as a database created today."""
    old_database(database)
    done = asyncio.run(db.migrate(database, datetime.now(UTC)))
    assert done.applied == list(schema.shipped()[1:])
    if dialect(database) == "sqlite":
        fresh = f"sqlite://{tmp_path / 'fresh.db'}"
    else:
        fresh = request.getfixturevalue("another_postgres_url")

    async def create() -> None:
        async with db.connected(fresh):
            pass

    asyncio.run(create())
    assert asyncio.run(_shape(database)) == asyncio.run(_shape(fresh))


def test_sqlite_statements_split_where_sqlite_says() -> None:
    script = 'CREATE TABLE "a" (x INT) /* one; two */;\nCREATE INDEX "i" ON "a" (x);\n'
    assert schema.split_sql(script) == [
        'CREATE TABLE "a" (x INT) /* one; two */;',
        'CREATE INDEX "i" ON "a" (x);',
    ]


def test_the_migrations_ship_in_the_package() -> None:
    from setuptools import find_packages

    root = Path(__file__).parent.parent
    assert "sequencer.store.migrations" in find_packages(root, include=["sequencer*"])
