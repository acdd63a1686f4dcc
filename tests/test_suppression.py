"""Nobody is hassled twice: an address a sequence already ended is not enrolled again without
`--again`, a suppressed one never is, and the suppression list (addresses and @domains) can be
listed, added to, lifted with a logged reason and imported, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ImapServer
from world import reply, world, write_config

from sequencer import contacts, enrolment, suppression
from sequencer.config import Settings, load_settings
from sequencer.devservers import SmtpSink, free_port
from sequencer.errors import SuppressionError
from sequencer.etiquette import Etiquette
from sequencer.sequences import load_all
from sequencer.store import db, queries
from sequencer.store.models import Enrollment

JO = "jo@prospect.test"
ENDED = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


def cli(*args: str, cfg: Path, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"COLUMNS": str(columns)} if columns else {})}
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _cfg(tmp_path: Path, database: str) -> Path:
    # enroll and suppress never talk to a mail server: the ports only make the config whole.
    return write_config(tmp_path, free_port(), ImapServer("pymap", free_port()), database)


@pytest.fixture
def cfg(tmp_path: Path, sqlite_url: str) -> Path:
    return _cfg(tmp_path, sqlite_url)


@pytest.fixture
def any_cfg(tmp_path: Path, database: str) -> Path:
    return _cfg(tmp_path, database)


@asynccontextmanager
async def store(cfg: Path) -> AsyncIterator[Settings]:
    settings = load_settings(cfg)
    async with db.connected(settings.database):
        yield settings


async def _enroll(settings: Settings, *addresses: str, again: bool = False) -> enrolment.Enrolled:
    seq = load_all(settings.sequences, settings.mailboxes)["follow-up"]
    people = [contacts.contact(seq, a, {"first_name": "Jo"}) for a in addresses]
    return await enrolment.enroll(Etiquette(settings), seq, people, ENDED, again=again)


async def _end(address: str, state: str, reason: str, subject: str | None = None) -> None:
    """End the address's active enrollment as the daemon does, with the message that ended
    it when there was one."""
    enr = await Enrollment.get(email=address, state="active")
    inbound_id = None
    if subject is not None:
        inbound = await queries.record_inbound(
            mailbox="sales",
            uidvalidity=1,
            uid=enr.id,
            message_id=f"<{enr.id}@prospect.test>",
            from_address=address,
            subject=subject,
            verdict="human_reply",
            enrollment_id=enr.id,
            received_at=ENDED,
        )
        assert inbound is not None
        inbound_id = inbound.id
    assert await queries.finish(enr.id, state, reason, ENDED, inbound_id)


async def test_enrolment_skips_ended_contacts_but_not_failed_ones_nor_with_again(
    any_cfg: Path,
) -> None:
    ended = {
        "re@a.test": ("replied", "replied: Re: Notes", "Re: Notes"),
        "co@a.test": ("completed", "break-up sent", None),
        "bo@a.test": ("bounced", "address bad (user_unknown): Undelivered", None),
        "un@a.test": ("unsubscribed", "asked to be removed: stop", None),
        "st@a.test": ("stopped", "manual", None),
        "fa@a.test": ("failed", "cannot render step 2", None),
    }
    async with store(any_cfg) as settings:
        assert len((await _enroll(settings, *ended, "act@a.test")).created) == 7
        for address, (state, reason, subject) in ended.items():
            await _end(address, state, reason, subject)
        again = await _enroll(settings, *ended, "act@a.test", "new@a.test")
        assert sorted(again.skipped_before) == [
            "bo@a.test",
            "co@a.test",
            "re@a.test",
            "st@a.test",
            "un@a.test",
        ]
        assert again.skipped_active == ["act@a.test"]
        assert len(again.created) == 2  # the failed one and the new one
        told = {a: enrolment.describe(p) for a, p in again.skipped_before.items()}
        assert told["re@a.test"] == "replied in 'follow-up' on 2026-11-20 (\"Re: Notes\")"
        assert told["st@a.test"] == "was stopped in 'follow-up' on 2026-11-20 (manual)"
        assert told["co@a.test"].startswith("completed 'follow-up' on 2026-11-20")
        await queries.suppress("un@a.test", "unsubscribe", "stop", ENDED)
        forced = await _enroll(settings, *ended, again=True)
        assert sorted(forced.blocked) == ["un@a.test"]  # --again never lifts suppression
        assert forced.skipped_before == {}
        assert sorted(forced.skipped_active) == ["fa@a.test"]  # enrolled a moment ago
        assert len(forced.created) == 4
        # Decided again where it is written: a contact who ends between planning and writing.
        await _end("re@a.test", "replied", "replied: Re: Later", "Re: Later")
        item = queries.NewEnrollment("re@a.test", "follow-up", "sales", {}, ENDED)
        late = await queries.enroll([item], allow_overlap=False, now=ENDED)
        assert (late.created, list(late.skipped_before)) == ([], ["re@a.test"])
        assert late.skipped_before["re@a.test"].subject == "Re: Later"


@pytest.mark.parametrize(
    ("state", "reason", "told"),
    [
        ("completed", "break-up sent", "completed 'follow-up' on 2026-11-20 (break-up sent)"),
        ("bounced", "address bad (user_unknown)", "bounced in 'follow-up' on 2026-11-20"),
        ("stopped", "manual", "was stopped in 'follow-up' on 2026-11-20 (manual)"),
        ("failed", "cannot render step 2", None),
    ],
)
async def test_single_enroll_of_an_ended_contact_says_why_and_needs_again(
    cfg: Path, state: str, reason: str, told: str | None
) -> None:
    async with store(cfg) as settings:
        await _enroll(settings, JO)
        await _end(JO, state, reason)
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg)
    if told is None:  # a failure may be ours (a template, a missing file): enroll again freely
        assert res.returncode == 0, res.stderr
        assert "enrolled 1" in res.stdout
        return
    assert res.returncode == 2
    assert f"{JO} was contacted before: {told}" in res.stderr
    assert "use --again to enroll anyway" in res.stderr
    forced = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", "--again", cfg=cfg)
    assert forced.returncode == 0, forced.stderr
    assert "enrolled 1" in forced.stdout


async def test_a_reply_ends_it_and_enroll_names_the_reply_until_again(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(tmp_path, smtp, pymap, database, monkeypatch) as w:
        await w.enroll(JO)
        await w.tick()
        await w.imap.deliver(reply(w.sent_to(JO)[0], "Thanks, we went with another vendor."))
        await w.tick(timedelta(minutes=5))
        assert (await w.enrollment(JO)).state == "replied"
    cfg = tmp_path / "sequencer.yaml"
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg)
    assert res.returncode == 2
    assert (
        f"{JO} was contacted before: replied in 'follow-up' on 2026-12-01 "
        '("Re: Notes from our call, Jo"); use --again to enroll anyway'
    ) in res.stderr
    forced = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", "--again", cfg=cfg)
    assert forced.returncode == 0, forced.stderr
    rows = json.loads(cli("status", JO, "--json", cfg=cfg).stdout)
    assert [r["state"] for r in rows] == ["replied", "active"]


async def test_csv_reimport_after_the_sequence_ended_skips_and_counts(
    any_cfg: Path, tmp_path: Path
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name\nann@a.test,Ann\nbo@b.test,Bo\ncy@c.test,Cy\n")
    assert "enrolled 3" in cli("enroll", "follow-up", "--csv", str(leads), cfg=any_cfg).stdout
    async with store(any_cfg):
        await _end("ann@a.test", "completed", "break-up sent")
        await _end("bo@b.test", "replied", "replied: Not now", "Re: Not now")
    leads.write_text(leads.read_text() + "dee@d.test,Dee\n")
    res = cli("enroll", "follow-up", "--csv", str(leads), cfg=any_cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(
        "enrolled 1 in 'follow-up'; skipped 1 already active; "
        "skipped 2 contacted before (use --again)"
    )
    assert "skipped ann@a.test: contacted before (completed 'follow-up' on 2026-11-20" in res.stderr
    assert (
        "skipped bo@b.test: contacted before (replied in 'follow-up' on 2026-11-20 "
        '("Re: Not now"))'
    ) in res.stderr
    forced = cli("enroll", "follow-up", "--csv", str(leads), "--again", cfg=any_cfg)
    assert forced.stdout.startswith("enrolled 2 in 'follow-up'; skipped 2 already active")
    rows = json.loads(cli("status", "--json", cfg=any_cfg).stdout)
    assert sorted((r["email"], r["state"]) for r in rows if r["state"] == "active") == [
        ("ann@a.test", "active"),
        ("bo@b.test", "active"),
        ("cy@c.test", "active"),
        ("dee@d.test", "active"),
    ]


def test_suppressed_is_refused_even_with_again(cfg: Path) -> None:
    added = cli("suppress", "add", JO, "--reason", "asked on the phone", cfg=cfg)
    assert added.returncode == 0, added.stderr
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", "--again", cfg=cfg)
    assert res.returncode == 2
    assert f"{JO} is on the suppression list (asked on the phone, since " in res.stderr
    assert "it cannot be enrolled, even with --again" in res.stderr
    assert f"sequencer suppress remove {JO} --reason" in res.stderr


def test_a_domain_entry_blocks_every_address_there_and_is_listed(cfg: Path, tmp_path: Path) -> None:
    added = cli("suppress", "add", "@Prospect.TEST", "--reason", "competitor", cfg=cfg)
    assert added.returncode == 0, added.stderr
    assert added.stdout == "suppressed @prospect.test (competitor)\n"
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", "--again", cfg=cfg)
    assert res.returncode == 2
    assert f"{JO} is on the suppression list through its domain @prospect.test" in res.stderr
    leads = tmp_path / "leads.csv"
    leads.write_text(f"email,first_name\n{JO},Jo\nann@sub.prospect.test,Ann\n")
    res = cli("enroll", "follow-up", "--csv", str(leads), cfg=cfg)
    # Exactly that domain: a subdomain is another organisation's mail as far as we know.
    assert res.stdout.startswith("enrolled 1 in 'follow-up'; skipped 1 suppressed")
    assert f"skipped {JO}: suppressed (competitor)" in res.stderr
    [entry] = json.loads(cli("suppress", "list", "--json", cfg=cfg).stdout)
    assert entry["email"] == "@prospect.test" and entry["domain"] is True
    assert (entry["reason"], entry["source"]) == ("competitor", "manual")
    removed = cli("suppress", "remove", JO, "--reason", "wrong", cfg=cfg)
    assert removed.returncode == 2
    assert "its domain @prospect.test is" in removed.stderr


async def test_a_domain_entry_stops_the_daemon_before_it_sends(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    async with world(tmp_path, smtp, pymap, url, monkeypatch) as w:
        await w.enroll(JO)
        await w.enroll("ann@a.test")
        # As the daemon's own callers write it: no enrollment is stopped at this point.
        assert await queries.suppress("@prospect.test", "complaint", "abuse report", w.clock.now())
        assert await w.tick() == 1
        assert [r.rcpt_tos for r in smtp.received] == [["ann@a.test"]]
        enr = await w.enrollment(JO)
        assert enr.state == "stopped" and "suppressed" in (enr.reason or "")
        assert w.sent_to(JO) == []


async def test_add_stops_the_contact_and_list_shows_every_source(any_cfg: Path) -> None:
    assert cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=any_cfg).returncode == 0
    added = cli("suppress", "add", " Jo@Prospect.test ", "--reason", "asked by phone", cfg=any_cfg)
    assert added.returncode == 0, added.stderr
    assert added.stdout == (
        f"suppressed {JO} (asked by phone)\nstopped 1 active enrollment(s): {JO}\n"
    )
    long = "Undelivered Mail Returned to Sender: the mailbox is over its quota, try again never"
    async with store(any_cfg):
        stopped = await Enrollment.get(email=JO)
        assert (stopped.state, stopped.reason) == ("stopped", "suppressed by hand (asked by phone)")
        # The daemon's own entries, as it writes them: the source follows from the reason.
        for address, reason in [
            ("b@x.test", "hard_bounce"),
            ("u@x.test", "unsubscribe"),
            ("c@x.test", "complaint"),
        ]:
            assert await queries.suppress(address, reason, long, ENDED)
        assert not await queries.suppress(JO, "hard_bounce", "later", ENDED)  # first one stands
    listed = json.loads(cli("suppress", "list", "--json", cfg=any_cfg).stdout)
    assert [(r["email"], r["source"], r["reason"]) for r in listed] == [
        ("b@x.test", "bounce", "hard_bounce"),
        ("c@x.test", "complaint", "complaint"),
        (JO, "manual", "asked by phone"),
        ("u@x.test", "reply", "unsubscribe"),
    ]
    assert {"email", "reason", "source", "since"} <= listed[0].keys()
    assert listed[0]["since"] == "2026-11-20T15:30:00+00:00"
    since = datetime.fromisoformat(listed[2]["since"])
    assert since.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - since) < timedelta(minutes=5)
    table = cli("suppress", "list", cfg=any_cfg, columns=80)
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(JO in line and "manual" in line and "asked by phone" in line for line in lines)
    assert any("b@x.test" in line and "bounce" in line and "2026-11-20" in line for line in lines)
    assert "try again never" in " ".join(" ".join(line.split()) for line in lines)


async def test_remove_needs_a_reason_and_leaves_a_trace(any_cfg: Path) -> None:
    async with store(any_cfg):
        await queries.suppress(JO, "unsubscribe", "Please remove me", ENDED)
    assert cli("suppress", "remove", JO, cfg=any_cfg).returncode == 2  # --reason is required
    lifted = cli("suppress", "remove", JO, "--reason", "called back: wants the offer", cfg=any_cfg)
    assert lifted.returncode == 0, lifted.stderr
    assert lifted.stdout.startswith(
        f"lifted {JO} (was reply since 2026-11-20: unsubscribe: Please remove me)"
    )
    assert "had asked not to be written to" in lifted.stderr
    assert json.loads(cli("suppress", "list", "--json", cfg=any_cfg).stdout) == []
    [trace] = json.loads(cli("suppress", "list", "--lifted", "--json", cfg=any_cfg).stdout)
    assert (trace["email"], trace["reason"]) == (JO, "called back: wants the offer")
    assert trace["suppressed"] == {
        "reason": "unsubscribe",
        "detail": "Please remove me",
        "source": "reply",
        "since": "2026-11-20T15:30:00+00:00",
    }
    again = cli("suppress", "remove", JO, "--reason", "twice", cfg=any_cfg)
    assert again.returncode == 2
    assert f"{JO} is not on the suppression list" in again.stderr


async def test_import_is_checked_whole_then_added_in_one_go(any_cfg: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("email,reason\nok@a.test,fine\nnot-an-address,\n@bad,x\n")
    res = cli("suppress", "import", str(bad), cfg=any_cfg)
    assert res.returncode == 2
    assert "2 problem(s) in" in res.stderr and "nothing was imported" in res.stderr
    assert f"{bad}:3: email 'not-an-address' is not an e-mail address" in res.stderr
    assert f"{bad}:4: email '@bad' is not a domain" in res.stderr
    assert json.loads(cli("suppress", "list", "--json", cfg=any_cfg).stdout) == []

    enrolled = cli("enroll", "follow-up", "dee@d.test", "--var", "first_name=Dee", cfg=any_cfg)
    assert enrolled.returncode == 0, enrolled.stderr
    assert cli("suppress", "add", "old@a.test", cfg=any_cfg).returncode == 0
    crm = tmp_path / "crm.csv"
    crm.write_text(
        "Company,Email,Reason\n"
        "Acme,Old@A.test,churned\n"
        "Acme,new@a.test,\n"
        'Dee Inc,@D.test,"asked us,\nin writing"\n'
        "Acme,new@a.test,twice in the file\n"
    )
    res = cli("suppress", "import", str(crm), cfg=any_cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (
        f"imported {crm}: 2 new, 1 already on the list (1 repeated row(s) counted once)\n"
        "stopped 1 active enrollment(s): dee@d.test\n"
    )
    listed = {
        r["email"]: r for r in json.loads(cli("suppress", "list", "--json", cfg=any_cfg).stdout)
    }
    assert sorted(listed) == ["@d.test", "new@a.test", "old@a.test"]
    assert (listed["old@a.test"]["source"], listed["old@a.test"]["reason"]) == (
        "manual",
        "added by hand",
    )
    assert (listed["new@a.test"]["source"], listed["new@a.test"]["reason"]) == (
        "import",
        "imported",
    )
    assert listed["new@a.test"]["detail"] == "from crm.csv line 3"
    assert listed["@d.test"]["reason"] == "asked us, in writing"
    assert listed["@d.test"]["detail"] == "from crm.csv line 4"


def test_entries_are_normalised_like_enrolment_addresses() -> None:
    assert suppression.normalize_entry(" Jo@Prospect.Test. ") == JO
    assert suppression.normalize_entry("@Prospect.Test") == "@prospect.test"
    for bad in ("@", "@@x.test", "@x", "@-x.test", "jo@", "jo"):
        with pytest.raises(ValueError, match=r"domain|e-mail address|invalid"):
            suppression.normalize_entry(bad)
    # A forgotten address is blocked by its hash: SHA-256 of the documented prefix + address.
    digest = hashlib.sha256(b"sequencer-forget-v1:" + JO.encode()).hexdigest()
    assert suppression.keys("Jo@Prospect.test") == (JO, "@prospect.test", "sha256:" + digest)
    assert suppression.normalize_entry("SHA256:" + digest.upper()) == "sha256:" + digest
    with pytest.raises(ValueError, match="forgotten"):
        suppression.normalize_entry("sha256:abc")
    assert suppression.check_reason("  two\r\nlines ") == "two lines"
    with pytest.raises(ValueError, match="control character"):
        suppression.check_reason("bell\x07")
    with pytest.raises(ValueError, match="longer than 200"):
        suppression.check_reason("x" * 201)
    with pytest.raises(SuppressionError, match="needs an 'email' column"):
        suppression.read_csv("address\njo@x.test\n", "list.csv")
