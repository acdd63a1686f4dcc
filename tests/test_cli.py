"""The command line as a user meets it: real processes, real servers on loopback, exit codes,
stdout for results and stderr for diagnostics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ImapServer
from world import write_config

from sequencer.devservers import SmtpSink, free_port

JO = "jo@prospect.test"


def cli(
    *args: str, cfg: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    extra = ["--config", str(cfg)] if cfg is not None else []
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def cfg(tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", pymap.password)
    return write_config(tmp_path, smtp.port, pymap, "sqlite://state.db")


def test_check_accepts_a_good_setup(cfg: Path) -> None:
    res = cli("check", cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert "follow-up" in res.stdout
    assert res.stderr == ""


def test_check_names_file_line_and_fix(cfg: Path) -> None:
    bad = cfg.parent / "sequences" / "broken.yaml"
    bad.write_text(
        "mailbox: sales\nsteps:\n  - wait: 0s\n    subject: Hi\n    body: |\n"
        "      Hi {{ contact.company_size }}\n  - wait: 3 dayz\n    body: bye\n"
    )
    res = cli("check", cfg=cfg)
    assert res.returncode == 2
    assert f'{bad}:7: steps.1.wait: wait "3 dayz" has an unknown unit' in res.stderr
    assert res.stdout == ""
    bad.write_text(bad.read_text().replace("3 dayz", "3d"))
    res = cli("check", cfg=cfg)
    assert res.returncode == 2
    assert f"{bad}:5: step 1: body: contact.company_size is not declared" in res.stderr
    assert "add 'company_size:' under variables:" in res.stderr


def test_check_reports_a_sequence_without_breakup(cfg: Path) -> None:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(seq.read_text().replace("    breakup: true\n", ""))
    res = cli("check", cfg=cfg)
    assert res.returncode == 2
    assert "the last step must be the break-up" in res.stderr
    assert "follow-up.yaml:" in res.stderr


def test_check_prints_content_warnings_and_strict_fails_on_them(cfg: Path) -> None:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(seq.read_text().replace("the pricing page I promised", "just checking in"))
    res = cli("check", cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert "1 warning(s) above" in res.stdout
    assert f"{seq}:11: step 2: warning:" in res.stderr and "[empty-opener]" in res.stderr
    strict = cli("check", "--strict", cfg=cfg)
    assert strict.returncode == 2
    assert (
        "[empty-opener]" in strict.stderr and "--strict: warnings count as errors" in strict.stderr
    )
    assert strict.stdout == ""


def test_check_fails_on_a_breakup_that_asks_for_a_meeting(cfg: Path) -> None:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(
        seq.read_text().replace(
            "A one-word reply is all it takes.",
            "Book 15 minutes with me here: https://cal.vendor.test/sam",
        )
    )
    res = cli("check", cfg=cfg)
    assert res.returncode == 2
    assert "step 4: error:" in res.stderr and "[breakup-asks]" in res.stderr


def test_check_csv_warns_about_a_field_the_list_often_lacks(cfg: Path) -> None:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(seq.read_text().replace('company: "your team"', "company: null"))
    leads = cfg.parent / "leads.csv"
    leads.write_text("email,first_name,company\na@x.test,A,\nb@x.test,B,Acme\n")
    res = cli("check", "follow-up", "--csv", str(leads), cfg=cfg)
    assert res.returncode == 2  # enroll would refuse line 2, so the whole file
    assert "contact.company is blank in 1 of 2 rows (50%)" in res.stderr
    assert "[no-fallback]" in res.stderr
    assert f"{leads}:2: missing company" in res.stderr
    assert cli("check", "--csv", str(leads), cfg=cfg).returncode == 2  # which sequence?
    leads.write_text("email,first_name,company\na@x.test,A,Initech\nb@x.test,B,Acme\n")
    good = cli("check", "follow-up", "--csv", str(leads), cfg=cfg)
    assert good.returncode == 0, good.stderr
    assert good.stderr == ""


def test_check_csv_fails_on_every_bad_row_by_line(cfg: Path) -> None:
    leads = cfg.parent / "leads.csv"
    leads.write_text(
        "email,first_name,timezone\n"
        "ann@x.test,Ann,Europe/Berlin\n"
        "not-an-address,Bo,\n"
        "cy@x.test,Cy,Mars/Olympus\n"
        "di@x.test,Di,America/New_York\n"
    )
    res = cli("check", "follow-up", "--csv", str(leads), cfg=cfg)
    assert res.returncode == 2
    assert res.stdout == ""
    assert f"{leads}: 2 problem(s)" in res.stderr
    assert f"{leads}:3: email" in res.stderr
    assert f"{leads}:4: timezone" in res.stderr and "Mars/Olympus" in res.stderr
    assert f"{leads}:2:" not in res.stderr and f"{leads}:5:" not in res.stderr


def test_check_csv_lists_the_first_thousand_bad_rows_then_how_many_more(cfg: Path) -> None:
    """A list that is mostly wrong (a shifted export, a hostile file) is counted in full but
    listed only so far, as `enroll --csv` lists it: the first 1,000 problems, then the rest."""
    leads = cfg.parent / "leads.csv"
    bad = "".join(f"bad{i},N{i}\n" for i in range(1005))
    leads.write_text(f"email,first_name\nok@x.test,Ok\n{bad}")
    res = cli("check", "follow-up", "--csv", str(leads), cfg=cfg)
    assert res.returncode == 2
    assert (
        f"{leads}: 1005 problem(s); `sequencer enroll follow-up --csv` would refuse" in res.stderr
    )
    assert f"{leads}:3: email 'bad0'" in res.stderr and f"{leads}:1002: email" in res.stderr
    assert f"{leads}:1003:" not in res.stderr and f"{leads}:2:" not in res.stderr
    assert "... and 5 more" in res.stderr


def test_check_csv_without_an_email_column_still_lints_the_rows(cfg: Path) -> None:
    leads = cfg.parent / "leads.csv"
    leads.write_text("e-mail,company\na@x.test,Acme\nb@x.test,Bolt\n")
    res = cli("check", "follow-up", "--csv", str(leads), cfg=cfg)
    assert res.returncode == 2
    assert f"{leads}:1: the header row needs an 'email' column (found: e-mail, company)" in (
        res.stderr
    )
    assert f"{leads} has no 'first_name' column (all 2 rows lack it)" in res.stderr


@pytest.mark.parametrize(
    ("encoding", "delimiter", "note"),
    [("utf-16", "\t", "read as UTF-16"), ("utf-8-sig", ";", None), ("utf-8", ",", None)],
)
def test_check_csv_reads_a_file_as_enroll_does(
    cfg: Path, tmp_path: Path, encoding: str, delimiter: str, note: str | None
) -> None:
    """Excel's "Unicode Text" (UTF-16, tabs) and "CSV UTF-8" (a BOM; semicolons in much of
    Europe): `check --csv` reads them as `enroll --csv` does, accents and all."""
    leads = tmp_path / "leads.csv"
    rows = [["email", "first_name", "company"], ["zoe@x.test", "Zoë", "Müller & Söhne"]]
    leads.write_bytes("".join(delimiter.join(r) + "\r\n" for r in rows).encode(encoding))
    res = cli("check", "follow-up", "--csv", str(leads), cfg=cfg)
    assert res.returncode == 0, res.stderr
    if note is None:
        assert res.stderr == ""
    else:
        assert f"note: {leads}: {note}" in res.stderr


def test_check_csv_reads_a_long_list_in_flat_memory(cfg: Path, tmp_path: Path) -> None:
    """A user checks a list of a million rows before enrolling it: `check --csv` holds a row
    at a time, counts for the lint and the first 1,000 problems, never the list. Here half of
    20,000 rows are bad; a dict per row alone, as before, would be over 10 MB."""
    import tracemalloc

    from sequencer import cli as command
    from sequencer.config import load_settings

    seq = command._sequences(load_settings(cfg))["follow-up"]

    def peak(rows: int) -> int:
        leads = tmp_path / f"leads-{rows}.csv"
        with leads.open("w") as out:
            out.write("email,first_name,company\n")
            for i in range(rows):
                out.write(f"p{i}@x.test,N{i},Co {i}\n" if i % 2 else f"p{i},N{i},Co {i}\n")
        tracemalloc.start()
        try:
            found, problems = command._check_csv(seq, leads)
        finally:
            top = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert found == [] and problems[0].startswith(f"{leads}: {rows // 2} problem(s); ")
        assert len(problems) == 1 + 1000 + 1 and problems[-1] == f"... and {rows // 2 - 1000} more"
        return top

    peak(2_010)  # first use: lazy imports and caches
    # The encoding is chosen a block of up to 1 MiB at a time: the file's 0.4 MB counts here.
    assert peak(20_000) < 3 << 20


def test_check_strict_fails_on_a_config_warning_and_counts_them(cfg: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TEST_IMAP_PASSWORD"}

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sequencer", "check", *args, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    lenient = check()
    assert lenient.returncode == 0, lenient.stderr
    assert "TEST_IMAP_PASSWORD is not set" in lenient.stderr
    assert "1 warning(s) above" in lenient.stdout
    strict = check("--strict")
    assert strict.returncode == 2
    assert strict.stdout == ""
    assert "TEST_IMAP_PASSWORD is not set" in strict.stderr
    assert "--strict: warnings count as errors; 1 warning(s)" in strict.stderr


def test_check_rejects_malformed_yaml_and_unknown_mailbox(cfg: Path) -> None:
    cfg.write_text(cfg.read_text().replace("mailboxes:", "mailboxes: [\n"))
    res = cli("check", cfg=cfg)
    assert res.returncode == 2
    assert f"{cfg}:" in res.stderr and "not valid YAML" in res.stderr


def test_check_rejects_unknown_mailbox(cfg: Path) -> None:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(seq.read_text().replace("mailbox: sales", "mailbox: marketing"))
    res = cli("check", cfg=cfg)
    assert res.returncode == 2
    assert "follow-up.yaml:1: unknown mailbox 'marketing'" in res.stderr


def test_missing_config_is_explained(tmp_path: Path) -> None:
    res = cli("check", cfg=tmp_path / "nope.yaml")
    assert res.returncode == 2
    assert "settings file not found" in res.stderr


def test_enroll_status_stop(cfg: Path) -> None:
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert "enrolled 1" in res.stdout
    again = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg)
    assert again.returncode == 2
    assert "already active" in again.stderr
    status = cli("status", "--json", cfg=cfg)
    rows = json.loads(status.stdout)
    assert len(rows) == 1
    row = rows[0]
    keys = {"id", "email", "sequence", "mailbox", "state", "reason", "steps_sent", "next_send_at"}
    assert keys <= row.keys()
    assert (row["email"], row["sequence"], row["mailbox"], row["state"], row["steps_sent"]) == (
        JO,
        "follow-up",
        "sales",
        "active",
        0,
    )
    assert row["next_send_at"].endswith("+00:00")
    table = cli("status", JO, cfg=cfg)
    assert JO in table.stdout and "active" in table.stdout
    stopped = cli("stop", JO, cfg=cfg)
    assert stopped.returncode == 0, stopped.stderr
    row = json.loads(cli("status", JO, "--json", cfg=cfg).stdout)[0]
    assert (row["state"], row["reason"], row["next_send_at"]) == ("stopped", "manual", None)
    assert cli("stop", JO, cfg=cfg).returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["follow-up", "not-an-address"], "not an e-mail address"),
        (
            ["follow-up", "jo@prospect.test", "--var", "first_name=Jo\r\nBcc: x@evil.test"],
            "line break",
        ),
        (["nurture", "jo@prospect.test"], "unknown sequence 'nurture'"),
        (["follow-up", "jo@prospect.test"], "missing first_name"),
    ],
)
def test_enroll_refuses_bad_input_and_writes_nothing(
    cfg: Path, args: list[str], message: str
) -> None:
    res = cli("enroll", *args, cfg=cfg)
    assert res.returncode == 2
    assert message in res.stderr
    assert json.loads(cli("status", "--json", cfg=cfg).stdout) == []


def test_csv_is_validated_whole_and_reimport_is_harmless(cfg: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "email,first_name,company\nann@a.test,Ann,Acme\nnot-an-address,Bo,Bolt\ncy@c.test,,Cargo\n"
    )
    res = cli("enroll", "follow-up", "--csv", str(bad), cfg=cfg)
    assert res.returncode == 2
    assert f"{bad}:3:" in res.stderr and f"{bad}:4:" in res.stderr
    assert "nothing was enrolled" in res.stderr
    assert json.loads(cli("status", "--json", cfg=cfg).stdout) == []

    good = tmp_path / "good.csv"
    good.write_text("email,first_name,company\nann@a.test,Ann,Acme\nbo@b.test,Bo,\n")
    first = cli("enroll", "follow-up", "--csv", str(good), cfg=cfg)
    assert first.returncode == 0, first.stderr
    assert "enrolled 2" in first.stdout
    second = cli("enroll", "follow-up", "--csv", str(good), cfg=cfg)
    assert second.returncode == 0
    assert "enrolled 0" in second.stdout and "skipped 2 already active" in second.stdout
    rows = json.loads(cli("status", "--json", cfg=cfg).stdout)
    assert sorted(r["email"] for r in rows) == ["ann@a.test", "bo@b.test"]


def test_a_csv_saved_by_excel_in_europe_is_checked_and_enrolled_with_a_note(
    cfg: Path, tmp_path: Path
) -> None:
    """Semicolons and Windows-1252, as Excel saves "CSV" in Germany or France: `check --csv`
    and `enroll --csv` both read it, say which encoding they assumed, and keep the accents."""
    excel = tmp_path / "kontakte.csv"
    excel.write_bytes(
        "email;first_name;company\r\nanna@mueller.test;Jürgen;Bäckerei Groß\r\n"
        "fr@cafe.test;Françoise;Café Müller\r\n".encode("cp1252")
    )
    checked = cli("check", "follow-up", "--csv", str(excel), cfg=cfg)
    assert checked.returncode == 0, checked.stderr
    assert "Windows-1252" in checked.stderr
    res = cli("enroll", "follow-up", "--csv", str(excel), cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert "enrolled 2" in res.stdout and "Windows-1252" in res.stderr
    rows = json.loads(cli("status", "--json", cfg=cfg).stdout)
    assert sorted(r["email"] for r in rows) == ["anna@mueller.test", "fr@cafe.test"]


def test_extra_csv_columns_from_a_crm_export_are_a_note_not_an_error(
    cfg: Path, tmp_path: Path
) -> None:
    """A CRM export carries columns no template uses: both `check --csv` and `enroll --csv`
    name them on stderr (with the field a misspelt one was likely meant to be) and go on."""
    export = tmp_path / "crm.csv"
    export.write_text(
        "Email,First_Name,Company,crm_id,Owner,compnay_size\n"
        "ann@a.test,Ann,Acme,0017,sam,12\nbo@b.test,Bo,Bolt,0018,sam,40\n"
    )
    checked = cli("check", "follow-up", "--csv", str(export), cfg=cfg)
    assert checked.returncode == 0, checked.stderr
    note = f"note: {export}: column(s) not used by sequence 'follow-up'"
    assert note in checked.stderr
    assert "crm_id, owner, compnay_size (did you mean 'company'?)" in checked.stderr
    res = cli("enroll", "follow-up", "--csv", str(export), cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert "enrolled 2" in res.stdout and note in res.stderr and "crm_id" in res.stderr
    assert "crm_id" not in res.stdout  # stdout stays the result alone


def _start_daemon(cfg: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _read_until(
    proc: subprocess.Popen[str], event: str, timeout: float = 20
) -> list[dict[str, object]]:
    assert proc.stdout is not None
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))  # every stdout line is one JSON object
        if seen[-1]["event"] == event:
            return seen
    raise AssertionError(
        f"no {event} in {seen}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_daemon_sends_logs_json_and_exits_0_on_sigterm(
    cfg: Path, smtp: SmtpSink, pymap: ImapServer
) -> None:
    assert cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg).returncode == 0
    proc = _start_daemon(cfg)
    try:
        lines = _read_until(proc, "email.sent")
        second = _start_daemon(cfg)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 2
        assert "another sequencer daemon" in err and "already running" in err
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest, stderr = proc.communicate(timeout=15)
        assert time.monotonic() - started < 10
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += [json.loads(line) for line in rest.splitlines()]
    events = [line["event"] for line in lines]
    assert "daemon.started" in events and "daemon.stopped" in events
    assert "inbox.logged_out" in events
    for line in lines:
        assert {"event", "level", "timestamp"} <= line.keys()
        assert str(line["timestamp"]).endswith("Z")
    sent = next(line for line in lines if line["event"] == "email.sent")
    assert (sent["email"], sent["sequence"], sent["step"], sent["mailbox"]) == (
        JO,
        "follow-up",
        1,
        "sales",
    )
    assert str(sent["message_id"]).startswith("<")
    whole = "\n".join(json.dumps(line) for line in lines) + stderr
    assert pymap.password not in whole
    assert len(smtp.received) == 1


def test_wrong_imap_password_holds_the_mailbox_and_keeps_running(cfg: Path, smtp: SmtpSink) -> None:
    """A refused login holds that mailbox (nothing is sent while its inbox is not watched)
    but does not stop the daemon: systemd restarting it would be a login storm."""
    assert cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg).returncode == 0
    proc = _start_daemon(cfg, env={"TEST_IMAP_PASSWORD": "wrong-Secret-99"})
    try:
        lines = _read_until(proc, "daemon.started")
        views = json.loads(cli("status", "--mailboxes", "--json", cfg=cfg).stdout)
        row = json.loads(cli("status", JO, "--json", cfg=cfg).stdout)[0]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    failed = next(line for line in lines if line["event"] == "inbox.unavailable")
    assert "login refused for user 'sales'" in str(failed["error"])
    assert "wrong-Secret-99" not in out + err + json.dumps(lines)
    assert views == [
        {
            "mailbox": "sales",
            "inbox": "auth_failed",
            "held_reason": "imap_auth_failed",
            "since": views[0]["since"],
            "last_error": views[0]["last_error"],
            "watcher": views[0]["watcher"],
        }
    ]
    assert "login refused" in views[0]["last_error"]
    assert smtp.received == []
    assert (row["state"], row["hold"]) == ("active", "imap_auth_failed")


def test_missing_password_variable_is_named(cfg: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TEST_IMAP_PASSWORD"}
    res = subprocess.run(
        [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert res.returncode == 2
    assert "TEST_IMAP_PASSWORD is not set" in res.stderr


def test_smtp_server_down_retries_and_keeps_the_contact(
    tmp_path: Path, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", pymap.password)
    cfg = write_config(tmp_path, free_port(), pymap, "sqlite://state.db")  # nothing listens there
    assert cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg).returncode == 0
    proc = _start_daemon(cfg)
    try:
        lines = _read_until(proc, "email.retry")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    retry = lines[-1]
    assert "cannot connect" in str(retry["error"])
    assert proc.returncode == 0
    row = json.loads(cli("status", JO, "--json", cfg=cfg).stdout)[0]
    assert row["state"] == "active" and row["steps_sent"] == 0
    assert "cannot connect" in row["last_error"]


def test_classify_prints_json(tmp_path: Path) -> None:
    msg = tmp_path / "ooo.eml"
    msg.write_bytes(
        b"From: Jo <jo@prospect.test>\r\nTo: sales@vendor.test\r\n"
        b"Subject: Out of Office: Notes\r\nAuto-Submitted: auto-replied\r\n\r\n"
        b"I am away until Monday.\r\n"
    )
    res = cli("classify", "--json", str(msg))
    assert res.returncode == 0, res.stderr
    [row] = json.loads(res.stdout)
    assert row["file"] == str(msg) and row["verdict"] == "auto_reply"
    assert set(row) >= {"kind", "hard", "recipients", "return_date", "rules"}


def test_sighup_reloads_sequences_and_keeps_the_last_good_version_of_a_broken_one(
    cfg: Path,
) -> None:
    proc = _start_daemon(cfg)
    try:
        _read_until(proc, "daemon.started")
        seq_dir = cfg.parent / "sequences"
        (seq_dir / "second.yaml").write_text((seq_dir / "follow-up.yaml").read_text())
        proc.send_signal(signal.SIGHUP)
        reloaded = _read_until(proc, "sequences.reloaded")[-1]
        assert reloaded["sequences"] == ["follow-up", "second"]
        (seq_dir / "third.yaml").write_text("mailbox: sales\nsteps: [\n")
        (seq_dir / "second.yaml").write_text("mailbox: sales\nsteps: oops\n")
        proc.send_signal(signal.SIGHUP)
        lines = _read_until(proc, "sequences.reloaded")
        broken = {line["sequence"]: line for line in lines if line["event"] == "sequence.broken"}
        assert "third.yaml:" in str(broken["third"]["problems"])
        assert str(broken["third"]["using"]).startswith("none")
        assert broken["second"]["using"] == "the last good version"
        assert lines[-1]["sequences"] == ["follow-up", "second"]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_suppressed_address_cannot_be_enrolled_again(cfg: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sequencer.config import load_settings
    from sequencer.store import db, queries

    settings = load_settings(cfg)
    async with db.connected(settings.database):
        await queries.suppress(JO, "unsubscribe", "Please remove me", datetime.now(UTC))
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", cfg=cfg)
    assert res.returncode == 2
    assert "suppression list" in res.stderr and "unsubscribe" in res.stderr
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(f"email,first_name\n{JO},Jo\nann@a.test,Ann\n")
    res = cli("enroll", "follow-up", "--csv", str(csv_file), cfg=cfg)
    assert res.returncode == 0
    assert "enrolled 1" in res.stdout and "skipped 1 suppressed" in res.stdout
    assert [r["email"] for r in json.loads(cli("status", "--json", cfg=cfg).stdout)] == [
        "ann@a.test"
    ]


def test_demo_plays_the_whole_story(tmp_path: Path) -> None:
    """`make demo` is the first thing a new user runs: every contact must end as promised."""
    res = cli("demo", env={"TMPDIR": str(tmp_path), "COLUMNS": "200"}, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in res.stdout.splitlines()
        if line.startswith("│") and "@" in line
    }
    assert rows == {
        "ada@prospect.test": "completed",
        "ben@prospect.test": "replied",
        "cy@nowhere.test": "bounced",
        "dee@prospect.test": "completed",
        "eve@prospect.test": "unsubscribed",
    }
    # Ben's "let's talk Thursday" is read as interested: the agenda asks the salesperson to answer.
    assert re.search(r"interested\s+ben@prospect\.test\s+\"Sounds good", res.stdout)
    assert "the temporary folder is removed" in res.stdout
    assert list(tmp_path.iterdir()) == []


# --- hostile input: refused at the door, bounded, never a traceback -------------------------

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _break_step_2(cfg: Path, extra: str) -> Path:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(
        seq.read_text().replace(
            "      Hi {{ contact.first_name }}, the pricing page I promised.\n",
            f"      Hi {{{{ contact.first_name }}}}, the pricing page I promised.{extra}\n",
        )
    )
    return seq


def test_check_refuses_a_runaway_template_within_the_budget(cfg: Path) -> None:
    """Nested loops pass the sandbox's one-range cap; rendered with sample values in the
    render process, the step is stopped at the 2 s budget and named."""
    seq = _break_step_2(cfg, NESTED)
    started = time.monotonic()
    res = cli("check", cfg=cfg, timeout=30)
    assert res.returncode == 2, res.stderr
    # Stopped by the 2 s budget, not by the 30 s timeout (generous: machines under load vary).
    assert time.monotonic() - started < 15
    assert f"{seq}:9: step 2: body: template took longer than 2 s to render" in res.stderr
    assert "Traceback" not in res.stderr


def test_run_sets_aside_a_template_that_fails_with_sample_values(cfg: Path) -> None:
    """The daemon runs on; that sequence is not loaded, so its contacts are held (not
    failed, not sent to) until it is fixed and reloaded."""
    seq = _break_step_2(cfg, "{{ 1 / 0 }}")
    proc = _start_daemon(cfg)
    try:
        lines = _read_until(proc, "daemon.started")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    broken = next(line for line in lines if line["event"] == "sequence.broken")
    assert broken["sequence"] == "follow-up"
    want = f"{seq}:9: step 2: body: template failed while rendering: ZeroDivisionError"
    assert any(want in str(p) for p in broken["problems"])  # type: ignore[attr-defined]
    assert lines[-1]["sequences"] == []
    assert proc.returncode == 0


def test_check_refuses_a_display_name_that_cannot_go_in_a_header(cfg: Path) -> None:
    for escaped, what in [
        ("Sam\\x07Seller", "contains the control character U+0007; remove it"),
        ("Sam\\udcffSeller", "contains U+DCFF, a lone surrogate"),
    ]:
        cfg.write_text(
            cfg.read_text().replace("display_name: Sam Seller", f'display_name: "{escaped}"')
        )
        res = cli("check", cfg=cfg)
        assert res.returncode == 2
        assert f"{cfg}:7: mailboxes.sales.display_name: {what}" in res.stderr
        cfg.write_text(
            cfg.read_text().replace(f'display_name: "{escaped}"', "display_name: Sam Seller")
        )
    cfg.write_text(cfg.read_text().replace("Sam Seller", "Zoë Müller"))
    assert cli("check", cfg=cfg).returncode == 0


def test_enroll_refuses_control_characters_and_surrogates_single_and_csv(
    cfg: Path, tmp_path: Path
) -> None:
    # A Latin-1 "ë" typed into a UTF-8 terminal arrives as a lone surrogate (surrogateescape).
    latin1 = b"first_name=Zo\xeb".decode("utf-8", "surrogateescape")
    for value, what in [
        (latin1, "first_name: contains U+DCEB, a lone surrogate"),
        ("first_name=Jo\x1b[2J", "first_name: contains the control character U+001B, escape"),
    ]:
        res = cli("enroll", "follow-up", JO, "--var", value, cfg=cfg)
        assert res.returncode == 2
        assert what in res.stderr and "Traceback" not in res.stderr
        assert "\x1b" not in res.stderr
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name\nann@a.test,Ann\nbo@b.test,Bo\x07\nzoe@z.test,Zoë Müller\n"
        "cy\x01@c.test,Cy\n",
        encoding="utf-8",
    )
    res = cli("enroll", "follow-up", "--csv", str(people), cfg=cfg)
    assert res.returncode == 2
    assert f"{people}:3: first_name: contains the control character U+0007" in res.stderr
    assert f"{people}:5: email contains the control character U+0001" in res.stderr
    people.write_text("email,first_name\nzoe@z.test,Zoë Müller\n", encoding="utf-8")
    res = cli("enroll", "follow-up", "--csv", str(people), cfg=cfg)
    assert res.returncode == 0 and "enrolled 1" in res.stdout


def test_sighup_reload_of_a_yaml_bomb_keeps_the_daemon_and_its_sequences(cfg: Path) -> None:
    from hostile import laughs

    proc = _start_daemon(cfg)
    try:
        _read_until(proc, "daemon.started")
        bomb = cfg.parent / "sequences" / "bomb.yaml"
        bomb.write_text("mailbox: sales\n" + laughs() + "steps: []\n")
        started = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        lines = _read_until(proc, "sequences.reloaded")
        assert time.monotonic() - started < 10  # read bounded, not expanded
        failed = next(line for line in lines if line["event"] == "sequence.broken")
        assert failed["sequence"] == "bomb"
        assert f"{bomb}:7: the document expands to more than 100000 values" in str(
            failed["problems"]
        )
        assert lines[-1]["sequences"] == ["follow-up"]
        bomb.write_text("mailbox: !!python/object/apply:os.system [true]\nsteps: []\n")
        proc.send_signal(signal.SIGHUP)
        lines = _read_until(proc, "sequences.reloaded")
        failed = next(line for line in lines if line["event"] == "sequence.broken")
        assert f"{bomb}:1: the tag !!python/object/apply:os.system" in str(failed["problems"])
        bomb.unlink()
        proc.send_signal(signal.SIGHUP)
        assert _read_until(proc, "sequences.reloaded")[-1]["sequences"] == ["follow-up"]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_misspelled_var_is_refused_with_the_fix(cfg: Path) -> None:
    res = cli("enroll", "follow-up", JO, "--var", "first_name=Jo", "--var", "compnay=Acme", cfg=cfg)
    assert res.returncode == 2
    assert "--var compnay: sequence 'follow-up' has no variable 'compnay'" in res.stderr
    assert "(did you mean 'company'?)" in res.stderr
    assert "--allow-unknown" in res.stderr
    assert "enrolled" not in res.stdout
    preview = cli("preview", "follow-up", "--var", "compnay=Acme", cfg=cfg)
    assert preview.returncode == 2
    assert "(did you mean 'company'?)" in preview.stderr
    ok = cli(
        "enroll",
        "follow-up",
        JO,
        "--var",
        "first_name=Jo",
        "--var",
        "compnay=Acme",
        "--allow-unknown",
        cfg=cfg,
    )
    assert ok.returncode == 0, ok.stderr
    assert "enrolled 1" in ok.stdout
    assert cli("preview", "follow-up", "--var", "timezone=Europe/Berlin", cfg=cfg).returncode == 0


def test_a_misspelled_sequence_name_gets_the_fix(cfg: Path) -> None:
    res = cli("enroll", "folow-up", JO, "--var", "first_name=Jo", cfg=cfg)
    assert res.returncode == 2
    assert "unknown sequence 'folow-up' (did you mean 'follow-up'?)" in res.stderr
    far = cli("enroll", "onboarding", JO, cfg=cfg)
    assert far.returncode == 2
    assert "unknown sequence 'onboarding'" in far.stderr and "did you mean" not in far.stderr
