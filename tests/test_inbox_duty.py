"""One inbox watcher per mailbox across the daemons on one PostgreSQL (store.inbox_duty).

What a user would notice if it went wrong: every daemon holding an IDLE connection to every
inbox (500 mailboxes and three daemons, 1,500 connections where 500 do); a mailbox nobody
watches any more after its watcher's daemon died, so replies sit unseen; or, worst, the
other daemons sending on while the watcher is frozen and a reply waits unread.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from conftest import ImapServer
from hypothesis import given, settings
from hypothesis import strategies as st
from test_several_daemons import Fleet, _config, _enroll, _rows, _trouble, _until
from world import cli, reply, world

from sequencer.clock import SystemClock
from sequencer.devservers import SmtpSink
from sequencer.states import Hold, Inbox, State
from sequencer.store import queries
from sequencer.store.inbox_duty import WATCH_CLASS, Shared, Solo, lock_key, plan
from sequencer.store.models import MailboxState


# --- sharing out: the pure rule ---------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    keys=st.integers(1, 40),
    daemons=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    order=st.permutations(range(6)),
)
def test_rounds_give_every_mailbox_one_watcher_and_no_daemon_more_than_its_share(
    keys: int, daemons: int, seed: int, order: list[int]
) -> None:
    """Daemons running rounds in any order: every key ends with exactly one holder (the
    lock allows no second), and no daemon holds more than its share, rounded up."""
    rng = random.Random(seed)
    held: list[set[int]] = [set() for _ in range(daemons)]
    everything = list(range(keys))
    for _ in range(4):
        for d in (i for i in order if i < daemons):
            taken = set().union(*held)
            todo = plan(everything, held[d], taken, daemons, rng)
            held[d] -= set(todo.give)
            held[d] |= set(todo.take) - taken  # a lock someone holds is not granted
    assert sorted(k for mine in held for k in mine) == everything
    share = -(-keys // daemons)
    assert max(len(mine) for mine in held) <= share


def test_a_daemon_over_its_share_gives_back_the_excess() -> None:
    """A second daemon starts: the first, which held everything, gives half back."""
    todo = plan(range(10), set(range(10)), set(range(10)), 2, random.Random(1))
    assert (len(todo.give), todo.take) == (5, [])


async def test_sqlite_watches_every_inbox() -> None:
    assert await Solo().round(["a", "b"]) == {"a", "b"}


# --- sharing out on a real PostgreSQL -------------------------------------------------------
async def test_two_daemons_share_the_mailboxes_and_one_takes_all_when_the_other_dies(
    postgres_url: str,
) -> None:
    names = [f"sales{n}" for n in range(6)]
    one, two = Shared(postgres_url), Shared(postgres_url)
    try:
        await one.round(names)  # alone for now: it takes them all
        assert await one.round(names) == set(names)
        await two.round(names)  # present: the first sees two daemons at its next round
        first = await one.round(names)
        second = await two.round(names)
        assert (len(first), len(second)) == (3, 3)
        assert first | second == set(names)
        admin = await asyncpg.connect(postgres_url)
        try:  # the second daemon's session dies (a crash, a lost machine)
            await admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE application_name LIKE 'sequencer watch%' AND datname = current_database()"
                " AND pid <> ALL($1::int[])",
                [r["pid"] for r in await admin.fetch(_HOLDERS, WATCH_CLASS, list(_keys(first)))],
            )
        finally:
            await admin.close()
        assert await one.round(names) == set(names)  # its locks went: taken over
        assert await two.round(names) == frozenset()  # back, and under its share of 3
        assert len(await one.round(names)) == 3  # the first gives half back
        assert len(await two.round(names)) == 3
    finally:
        await one.close()
        await two.close()


_HOLDERS = """SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
  AND classid = $1::int8::oid AND objid = ANY($2::int8[]::oid[])
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def _keys(names: frozenset[str]) -> list[int]:
    return [lock_key(n) for n in names]


# --- three real daemons ---------------------------------------------------------------------
@pytest.mark.timeout(150)
async def test_three_daemons_one_watcher_each_fail_closed_when_frozen_taken_over_when_dead(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, tmp_path: Path
) -> None:
    """Three daemons and three mailboxes: one watcher each. The watcher of one is frozen:
    nothing is sent from its mailbox while its catch-ups are stale. The watcher of another
    is killed: a live daemon takes its inbox over and handles the reply that comes next."""
    cfg = _config(
        tmp_path, postgres_url, smtp.port, pymap, 3, "{daily_limit: 1000, spacing: 0s}", "1d"
    )
    text = cfg.read_text().replace("password_env: TEST_IMAP_PASSWORD}", _FAST)
    cfg.write_text(text)
    people = {f"s{m}": [f"p{m}{i}@prospect.test" for i in range(3)] for m in range(3)}
    await _enroll(cfg, people)
    later = datetime.now(UTC) + timedelta(hours=1)
    await _rows(postgres_url, "UPDATE enrollment SET next_at = $1", later)
    fleet = Fleet(tmp_path, cfg, pymap, smtp)
    try:
        for _ in range(3):
            fleet.start()
        names = [f"sales{m}" for m in range(3)]

        async def one_watcher_each() -> bool:
            owners = await _owners(postgres_url, names)
            return len(owners) == 3 and len(set(owners.values())) == 3

        await _until(one_watcher_each, 40, "each daemon watching one inbox")
        owners = await _owners(postgres_url, names)
        pids = {proc.pid: proc for proc in fleet.procs}
        # Each inbox's watcher, as `status` shows it: a different daemon for each.
        shown = json.loads(cli(cfg, "status", "--mailboxes", "--json").stdout)
        watchers = {v["mailbox"]: v["watcher"] for v in shown}
        assert {m: int(w.rsplit(":", 1)[1]) for m, w in watchers.items()} == owners

        # Frozen: its mailbox's catch-ups go stale, and nobody sends from it.
        frozen = pids[owners["sales1"]]
        before = datetime.now(UTC).isoformat()
        frozen.send_signal(signal.SIGSTOP)
        await asyncio.sleep(2.5)  # twice the keepalive
        now = datetime.now(UTC)
        await _rows(postgres_url, "UPDATE enrollment SET next_at = $1", now)

        async def others_went() -> bool:
            return len(fleet.arrived) >= 6

        await _until(others_went, 30, "the unfrozen mailboxes' sends")
        await asyncio.sleep(2)
        assert sorted(to for _, _, to in fleet.received()) == sorted(people["s0"] + people["s2"])
        shown = json.loads(cli(cfg, "status", "--mailboxes", "--json").stdout)
        views = {v["mailbox"]: v["held_reason"] for v in shown}
        assert views == {"sales0": None, "sales1": "inbox_unavailable", "sales2": None}
        released = [
            x
            for x in fleet.logs()
            if x["event"] == "mailbox.released"
            and x["mailbox"] == "sales1"
            and x["timestamp"] > before
        ]
        assert released == []
        frozen.send_signal(signal.SIGCONT)

        async def all_went() -> bool:
            return len(fleet.arrived) >= 9

        await _until(all_went, 30, "the thawed mailbox's sends")

        # Killed: another daemon takes its inbox over, and the next reply is handled.
        dead = pids[owners["sales0"]]
        dead.kill()
        dead.wait()

        async def taken_over() -> bool:
            now_owners = await _owners(postgres_url, names)
            return now_owners.get("sales0") not in (None, dead.pid)

        await _until(taken_over, 30, "sales0 taken over")
        heir = (await _owners(postgres_url, names))["sales0"]
        state = await _rows(
            postgres_url, "SELECT inbox, watcher FROM mailbox_state WHERE mailbox = 'sales0'"
        )

        async def recorded() -> bool:
            rows = await _rows(
                postgres_url, "SELECT inbox, watcher FROM mailbox_state WHERE mailbox = 'sales0'"
            )
            seen.append(dict(rows[0]))
            return bool(rows[0]["inbox"] == "watching" and rows[0]["watcher"].endswith(f":{heir}"))

        seen: list[dict[str, Any]] = []
        try:
            await _until(recorded, 15, "the new watcher's state recorded")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: heir {heir}, last rows {seen[-2:]}") from None
        first = {to: message_id for _, message_id, to in fleet.received()}
        who = people["s0"][0]
        await pymap.deliver(_reply(who, first[who]))

        async def replied() -> bool:
            rows = await _rows(postgres_url, "SELECT state FROM enrollment WHERE email = $1", who)
            return bool(rows[0]["state"] == "replied")

        await _until(replied, 20, "the reply handled by the new watcher")
    finally:
        await fleet.stop_all()
    # (The three mailboxes share one test account: each watcher sees the reply in its own.)
    by = [x["daemon"] for x in fleet.logs() if x["event"].startswith("reply.")]
    seen = [x["daemon"] for x in fleet.logs() if x.get("mailbox") == "sales0" and "uid" in x]
    heirs = [f"daemon{n}" for n, proc in enumerate(fleet.procs) if proc.pid == heir]
    assert seen == heirs, (seen, heirs)
    assert heirs[0] in by
    assert state  # the row was there when taken over
    per_contact = Counter(to for _, _, to in fleet.received())
    assert {to for to, n in per_contact.items() if n > 1} == set()
    assert _trouble(fleet, {"mailbox.held"}) == []
    assert "Traceback" not in fleet.stderr()


_FAST = "password_env: TEST_IMAP_PASSWORD, keepalive: 1s}"


async def _owners(url: str, names: list[str]) -> dict[str, int]:
    """Each mailbox's watcher, by the pid of the daemon whose session holds its lock."""
    rows = await _rows(
        url,
        "SELECT l.objid::int8 AS key, a.application_name AS app FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int8::oid"
        " AND a.datname = current_database()",
        WATCH_CLASS,
    )
    by_key = {r["key"]: int(r["app"].rsplit(":", 1)[1]) for r in rows}
    return {n: by_key[lock_key(n)] for n in names if lock_key(n) in by_key}


def _reply(sender: str, to: str) -> bytes:
    return (
        f"From: P <{sender}>\r\nTo: sales0@vendor.test\r\nSubject: Re: Notes from our call\r\n"
        f"Message-ID: {make_msgid(domain='prospect.test')}\r\nIn-Reply-To: {to}\r\n"
        f"References: {to}\r\n"
        f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n\r\n"
        "Thanks, that helps. Could we talk on Thursday?\r\n"
    ).encode()


# --- a daemon that does not watch the inbox, in one process ---------------------------------
class _Elsewhere:
    """Another daemon holds every inbox's watch (the election itself is tested above)."""

    shared = True

    async def round(self, mailboxes: object) -> frozenset[str]:
        return frozenset()

    async def close(self) -> None:
        return None


async def test_a_daemon_off_duty_sends_only_while_the_watcher_is_fresh_after_its_own_look(
    postgres_url: str, smtp: SmtpSink, pymap: ImapServer, tmp_path: Path, monkeypatch: Any
) -> None:
    async with world(tmp_path, smtp, pymap, postgres_url, monkeypatch, duty=_Elsewhere()) as w:
        watcher = w.daemon.watchers["sales"]
        assert (watcher.on_duty, watcher.imap is not None) == (False, True)  # logged in
        assert await MailboxState.get_or_none(mailbox="sales") is None  # but records nothing
        await w.enroll("ann@prospect.test")
        await w.enroll("bob@prospect.test")
        assert await w.daemon.run_once() == 0  # nobody has recorded watching it yet
        assert (await w.daemon.holds())["sales"][0] is Hold.INBOX_UNAVAILABLE

        async def watched_elsewhere(ago: float = 0) -> None:
            at = SystemClock().now() - timedelta(seconds=ago)
            await queries.set_inbox("sales", Inbox.WATCHING, at, None, "elsewhere:1")
            await queries.caught_up("sales", at)

        await watched_elsewhere()
        assert await w.daemon.run_once() == 2  # after its own last look, over its own login
        first = w.sent_to("ann@prospect.test")[0]
        # Ann answers; the watcher elsewhere has not handled it yet. Our last look does.
        await pymap.deliver(reply(first, "Thanks! Let's talk next week."))
        w.clock.advance(timedelta(days=2))
        await watched_elsewhere()
        assert await w.daemon.run_once() == 1
        assert [r.rcpt_tos for r in smtp.received[2:]] == [["bob@prospect.test"]]
        assert (await w.enrollment("ann@prospect.test")).state == State.REPLIED
        state = await MailboxState.get(mailbox="sales")
        assert state.watcher == "elsewhere:1"  # the watcher's record is the watcher's own
        # The watcher elsewhere stops catching up (frozen, dead): nothing more goes.
        w.clock.advance(timedelta(days=3))
        await watched_elsewhere(ago=2 * watcher.keepalive + 1)
        assert await w.daemon.run_once() == 0
        hold, detail = (await w.daemon.holds())["sales"]
        assert hold is Hold.INBOX_UNAVAILABLE
        assert "elsewhere:1" in str(detail) and "last caught up" in str(detail)
        await watched_elsewhere()
        assert await w.daemon.run_once() == 1  # fresh again: Bob's third step
