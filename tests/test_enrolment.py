"""Enrolling a long list: `enroll --csv` reads the file a chunk at a time and writes it in one
transaction, so every row is enrolled exactly once or none is, whatever its length; its
look-ups stay within every database's parameter limit; and the plan it reuses for contacts
in the same place is the plan each would have had alone. On SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_etiquette_properties import _sequence, contacts, instants, optional_windows, waits
from tortoise import connections
from world import write_config

from sequencer import contacts as intake
from sequencer import csvfile, enrolment
from sequencer.config import Settings, load_settings
from sequencer.devservers import free_port
from sequencer.errors import EnrollError
from sequencer.etiquette import Etiquette, check_promises, timeline
from sequencer.schedule import Wait
from sequencer.sequences import Sequence, load_all
from sequencer.store import db, queries
from sequencer.store.models import Enrollment, SentMessage
from sequencer.store.queries import MAX_PARAMS

NOW = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)
HEADER = "email,first_name,timezone,country\n"
PLACES = [("Europe/Berlin", "DE"), ("America/New_York", "US"), ("", ""), ("Asia/Tokyo", "")]


def _rows(n: int, start: int = 0) -> str:
    return "".join(
        f"p{i}@list.test,P{i},{PLACES[i % 4][0]},{PLACES[i % 4][1]}\n"
        for i in range(start, start + n)
    )


@pytest.fixture
def cfg(tmp_path: Path, database: str) -> Path:
    # enroll never talks to a mail server: the ports only make the config whole.
    return write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), database)


@asynccontextmanager
async def store(cfg: Path) -> AsyncIterator[tuple[Settings, Sequence]]:
    settings = load_settings(cfg)
    async with db.connected(settings.database):
        yield settings, load_all(settings.sequences, settings.mailboxes)["follow-up"]


async def _stream(
    settings: Settings, seq: Sequence, text: str, chunk: int, **options: Any
) -> enrolment.Streamed:
    """`enroll --csv` of this text, as the command runs it, `chunk` contacts at a time."""
    header, rows = csvfile.stream(io.StringIO(text, newline=""), "list.csv")
    intake.check_header(header, "list.csv")
    result = enrolment.Streamed()
    people = intake.each(seq, rows, "list.csv")
    await enrolment.enroll_stream(
        Etiquette(settings), seq, people, NOW, "list.csv", result, chunk=chunk, **options
    )
    return result


async def _table() -> list[dict[str, Any]]:
    """Every enrollment as stored, without its id."""
    rows = await Enrollment.all().order_by("id").values()
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]


async def test_a_list_of_three_chunks_enrolls_everyone_exactly_once(cfg: Path) -> None:
    async with store(cfg) as (settings, seq):
        result = await _stream(settings, seq, HEADER + _rows(11), chunk=4)
        assert (result.created, result.valid, result.skipped_active) == (11, 11, 0)
        emails = await Enrollment.all().values_list("email", flat=True)
        assert sorted(emails) == sorted(f"p{i}@list.test" for i in range(11))


async def test_a_bad_row_in_the_last_chunk_writes_nothing(cfg: Path) -> None:
    async with store(cfg) as (settings, seq):
        await _stream(settings, seq, HEADER + _rows(2, start=100), chunk=4)
        before = await Enrollment.all().count()
        text = HEADER + _rows(10) + "not-an-address,Bo,,\n" + "p11@list.test,,,\n"
        with pytest.raises(EnrollError) as info:
            await _stream(settings, seq, text, chunk=4)
        assert info.value.problems[0] == "2 problem(s) in list.csv; nothing was enrolled:"
        assert info.value.problems[1].startswith("list.csv:12: email 'not-an-address'")
        assert info.value.problems[2].startswith("list.csv:13: missing first_name")
        assert await Enrollment.all().count() == before == 2


async def test_a_crash_half_way_through_writes_nothing(cfg: Path) -> None:
    """Whatever stops the import after some chunks were written (here an error raised while
    reading the third), the transaction is rolled back: nobody is half-enrolled."""

    def people(seq: Sequence) -> Iterator[intake.Contact]:
        for i in range(8):
            yield intake.contact(seq, f"p{i}@list.test", {"first_name": "P"})
        raise RuntimeError("the disk went away")

    async with store(cfg) as (settings, seq):
        with pytest.raises(RuntimeError, match="disk went away"):
            await enrolment.enroll_stream(
                Etiquette(settings), seq, people(seq), NOW, "x", enrolment.Streamed(), chunk=3
            )
        assert await Enrollment.all().count() == 0


async def test_an_address_twice_in_the_file_is_enrolled_once_even_chunks_apart(
    cfg: Path,
) -> None:
    async with store(cfg) as (settings, seq):
        text = HEADER + "p0@list.test,First,,\n" + _rows(6, start=1) + "P0@List.test,Again,,\n"
        result = await _stream(settings, seq, text, chunk=3)
        assert (result.created, result.skipped_active) == (7, 1)
        (kept,) = await Enrollment.filter(email="p0@list.test")
        assert kept.variables["first_name"] == "First"  # the first row, as before


async def _setup_history(settings: Settings, seq: Sequence) -> None:
    """An address suppressed, a suppressed domain, one a sequence completed, one active, and
    one written to an hour ago by a sequence that failed (so the gap applies to it)."""
    await queries.suppress("blocked@a.test", "unsubscribe", "please remove me", NOW)
    await queries.suppress("@blocked.test", "complaint", "", NOW)
    people = [intake.contact(seq, a, {"first_name": "Old"}) for a in ("done@a.test", "busy@a.test")]
    people.append(intake.contact(seq, "recent@a.test", {"first_name": "Old"}))
    done = await enrolment.enroll(Etiquette(settings), seq, people, NOW - timedelta(days=30))
    first, _, recent = done.created
    assert await queries.finish(first, "completed", "break-up sent", NOW - timedelta(days=2))
    await SentMessage.create(
        enrollment_id=recent,
        step=1,
        email="recent@a.test",
        mailbox="sales",
        message_id="<recent@vendor.test>",
        subject="Notes",
        status="sent",
        created_at=NOW - timedelta(hours=1),
        attempted_at=NOW - timedelta(hours=1),
    )
    assert await queries.finish(recent, "failed", "template broke", NOW)


MIXED = (
    HEADER
    + _rows(5)
    + "blocked@a.test,B,,\nx@blocked.test,X,,\ndone@a.test,D,Europe/Berlin,DE\n"
    + "busy@a.test,Bu,,\nrecent@a.test,R,America/New_York,US\n"
    + _rows(4, start=2)  # the same addresses again, with other places
    + "new@a.test,N,Asia/Tokyo,JP\n"
)


@pytest.mark.parametrize(
    ("options"),
    [{}, {"again": True}, {"allow_overlap": True}, {"promised": {2: "2026-12-21 10:00"}}],
)
async def test_the_stream_decides_and_writes_exactly_as_the_whole_list_did(
    cfg: Path, options: dict[str, Any]
) -> None:
    """Suppressed, contacted before, already active, repeated, written to recently: a long
    list read a few rows at a time skips, plans and stores each contact as `enroll` of the
    whole list at once does (row for row, column for column)."""
    async with store(cfg) as (settings, seq):
        await _setup_history(settings, seq)
        old = await Enrollment.all().count()
        streamed = await _stream(settings, seq, MIXED, chunk=3, **options)
        rows_streamed = (await _table())[old:]
        await Enrollment.filter(
            id__in=(await Enrollment.all().order_by("id").values_list("id", flat=True))[old:]
        ).delete()
        people = intake.read_csv(seq, MIXED, "list.csv")
        whole = await enrolment.enroll(Etiquette(settings), seq, people, NOW, **options)
        rows_whole = (await _table())[old:]
    assert rows_streamed == rows_whole
    assert streamed.created == len(whole.created) > 0
    assert streamed.skipped_active == len(whole.skipped_active)
    assert streamed.blocked.keys() == whole.blocked.keys() == {"blocked@a.test", "x@blocked.test"}
    assert streamed.skipped_active >= 4  # the four addresses given twice (busy too, unless overlap)
    assert streamed.skipped_before == whole.skipped_before
    assert streamed.first == min(whole.first.values(), key=lambda p: p.at)
    assert list(streamed.warnings) == list(dict.fromkeys(whole.warnings))
    recent = next(r for r in rows_streamed if r["email"] == "recent@a.test")
    assert "min_gap" in recent["next_reasons"]


async def _limit_sqlite_to_999_variables() -> None:
    """What a SQLite built before 3.32 allows in one statement (SQLITE_MAX_VARIABLE_NUMBER)."""
    client: Any = connections.get("default")
    conn = client._connection  # aiosqlite: the limit is set on its thread's connection
    await conn._execute(conn._conn.setlimit, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, MAX_PARAMS)
    with pytest.raises(Exception, match="too many SQL variables"):
        await client.execute_query("SELECT 1 WHERE 1 IN (" + ",".join("?" * 1000) + ")", [1] * 1000)


async def test_lists_longer_than_any_parameter_limit(cfg: Path) -> None:
    """2,500 contacts at once (the list path too), and look-ups of 40,000 addresses: past the
    999 parameters of older SQLite builds (the limit is lowered to that here) and the 32,767
    of PostgreSQL."""
    async with store(cfg) as (settings, seq):
        if settings.database.startswith("sqlite"):
            await _limit_sqlite_to_999_variables()
        result = await _stream(settings, seq, HEADER + _rows(2500), chunk=enrolment.CHUNK)
        assert result.created == 2500
        people = [intake.contact(seq, f"q{i}@list.test", {"first_name": "Q"}) for i in range(2500)]
        await enrolment.enroll(Etiquette(settings), seq, people, NOW, allow_overlap=True)
        assert await Enrollment.all().count() == 5000
        many = [f"p{i}@list.test" for i in range(40_000)]
        assert len(await queries.active_emails(many)) == 2500
        assert await queries.contacted_before(many) == {}
        assert await queries.suppressed(many) == {}
        assert await queries.last_contacts(many) == {}


# --- the plan made once per place is the plan each contact would have had -----------------


# Far-out dates in some countries are beyond the holidays package's tables: it warns once per
# year and country (then caches), which would make the first of two equal calls fail.
@pytest.mark.filterwarnings("ignore:Requested Holidays are available only:UserWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    step_waits=st.lists(waits, min_size=1, max_size=4),
    window=optional_windows,
    default_window=st.booleans(),
    people=st.lists(
        st.tuples(
            st.one_of(contacts(), st.just({}), st.just({"country": "DE"})),
            st.sampled_from(["Jo", "Ann"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    ),
    promise=st.one_of(st.none(), st.integers(1, 30)),
    data=st.data(),
)
def test_a_plan_reused_for_a_place_is_the_plan_of_each_contact(
    step_waits: list[Wait],
    window: Any,
    default_window: bool,
    people: list[tuple[dict[str, str], str, bool]],
    promise: int | None,
    data: st.DataObject,
) -> None:
    """Contacts in the same zone, country and subdivision share one plan (unless an earlier
    email to them moves theirs); each one's first send, reasons, promise and warnings are
    what `timeline` gives for that contact alone."""
    config = Settings(
        min_gap="2d",
        timezone="Europe/London",
        country="GB",
        window={"days": "mon-fri", "hours": "09:00-17:00"} if default_window else None,
    )
    etiquette = Etiquette(config)
    seq = _sequence(step_waits, window)
    now = data.draw(instants("Europe/Berlin"), label="now")
    promised = {1: f"{(now + timedelta(days=promise)):%Y-%m-%d} 10:00"} if promise else {}
    planner = enrolment.Planner(etiquette, seq, now, promised=promised)
    for n, (place, name, written) in enumerate(people):
        person = intake.Contact(f"c{n}@a.test", {**place, "first_name": name})
        last = now - timedelta(hours=n + 1) if written else None
        promises = enrolment.parse_promises(promised, etiquette.zone_name(person.values))
        try:
            alone = timeline(
                etiquette, seq, person.values, now, promises=promises, last_contact=last
            )
        except ValueError:  # a window that never opens
            with pytest.raises(EnrollError, match="cannot plan"):
                planner.plan(person, last)
            continue
        if check_promises(seq, promises, now, alone):
            with pytest.raises(EnrollError):
                planner.plan(person, last)
            continue
        reused = planner.plan(person, last)
        assert reused.first == alone[0]
        assert reused.promises == promises
        warnings = etiquette.promise_warnings(seq, person.values, promises) if promises else []
        assert list(reused.warnings) == warnings


# --- the command -----------------------------------------------------------------------------


def cli(*args: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.fixture
def sqlite_cfg(tmp_path: Path, sqlite_url: str) -> Path:
    return write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), sqlite_url)


def test_enroll_csv_of_more_than_a_chunk_is_all_or_nothing(sqlite_cfg: Path) -> None:
    rows = 2 * enrolment.CHUNK + 50
    bad = sqlite_cfg.parent / "bad.csv"
    bad.write_text(HEADER + _rows(rows) + "p0@list.test,,,\nx@list.test,X,Mars/Olympus,\n")
    res = cli("enroll", "follow-up", "--csv", str(bad), cfg=sqlite_cfg)
    assert res.returncode == 2
    assert f"{bad}:{rows + 2}: missing first_name" in res.stderr
    assert f"{bad}:{rows + 3}: timezone: unknown time zone 'Mars/Olympus'" in res.stderr
    assert "2 problem(s)" in res.stderr and "nothing was enrolled" in res.stderr
    assert json.loads(cli("status", "--json", cfg=sqlite_cfg).stdout) == []

    good = sqlite_cfg.parent / "good.csv"
    good.write_text(HEADER + _rows(rows) + "p0@list.test,Again,,\n")
    res = cli("enroll", "follow-up", "--csv", str(good), cfg=sqlite_cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"enrolled {rows} in 'follow-up'; skipped 1 already active")
    assert len(json.loads(cli("status", "--json", cfg=sqlite_cfg).stdout)) == rows


def test_a_list_with_a_bad_promise_and_bad_rows_names_the_rows_first(sqlite_cfg: Path) -> None:
    bad = sqlite_cfg.parent / "bad.csv"
    bad.write_text(HEADER + "jo@a.test,,,\n")
    res = cli("enroll", "follow-up", "--csv", str(bad), "--promise", "x", cfg=sqlite_cfg)
    assert res.returncode == 2
    assert f"{bad}:2: missing first_name" in res.stderr and "--promise" not in res.stderr
