"""`sequencer preview`: what a salesperson sees before enrolling anyone. No server is needed,
so these run the command in-process against a settings file and a sequence written here."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from sequencer.cli import app

SEQUENCE = """mailbox: sales
window: {days: [mon, tue, wed, thu], hours: "09:00-11:30"}
variables:
  company: "your team"
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }}, here are the notes for {{ contact.company }}.
  - wait: 3bd
    body: |
      Hi {{ contact.first_name }}, the pricing page I promised.
  - wait: 4bd
    body: |
      Hi {{ contact.first_name }}, one case study from a team like yours.
  - wait: 5bd
    breakup: true
    body: |
      Hi {{ contact.first_name }}, I'll stop here. A one-word reply is all it takes.
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "sequences").mkdir()
    (tmp_path / "sequences" / "follow-up.yaml").write_text(SEQUENCE)
    path = tmp_path / "sequencer.yaml"
    path.write_text(
        """database: sqlite://state.db
sequences: ./sequences
timezone: Europe/London
country: GB
min_gap: 2d
mailboxes:
  sales:
    address: sales@vendor.test
    display_name: Sam Seller
    timezone: Europe/Berlin
    smtp: {host: 127.0.0.1, port: 2525, security: none}
    imap: {host: 127.0.0.1, port: 1143, security: none, username: u, password_env: NOPE}
"""
    )
    return path


def run(cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["preview", "follow-up", *args, "--config", str(cfg)])


def steps(cfg: Path, *args: str) -> list[dict[str, Any]]:
    res = run(cfg, *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def local(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["local_send_at"])


def test_json_has_one_object_per_step_with_the_documented_fields(cfg: Path) -> None:
    rows = steps(cfg, "--var", "first_name=Jo", "--now", "2026-12-01T08:00:00+00:00")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"step", "send_at", "local_send_at", "subject", "body", "breakup", "reasons"} <= set(
        rows[0]
    )
    assert rows[0]["send_at"].endswith("+00:00")
    assert [r["breakup"] for r in rows] == [False, False, False, True]
    assert rows[0]["subject"] == "Notes from our call, Jo"
    assert rows[1]["subject"] == "Re: Notes from our call, Jo"
    assert "notes for your team" in rows[0]["body"]


def test_a_step_due_at_night_waits_for_the_window_in_the_contacts_zone(cfg: Path) -> None:
    # 16:00 UTC on a Tuesday is 11:00 in New York: inside the window, so step 1 goes now.
    rows = steps(
        cfg, "--var", "first_name=Jo", "--var", "timezone=America/New_York",
        "--now", "2026-12-01T16:00:00+00:00",
    )  # fmt: skip
    assert rows[0]["send_at"] == "2026-12-01T16:00:00+00:00" and rows[0]["reasons"] == []
    # 17:00 UTC is 12:00 there, after the window: next morning, 09:00 New York time.
    rows = steps(
        cfg, "--var", "first_name=Jo", "--var", "timezone=America/New_York",
        "--now", "2026-12-01T17:00:00+00:00",
    )  # fmt: skip
    assert rows[0]["local_send_at"] == "2026-12-02T09:00:00-05:00"
    assert rows[0]["reasons"] == ["window"]


def test_every_step_lands_inside_the_window_on_a_business_day(cfg: Path) -> None:
    rows = steps(
        cfg, "--var", "first_name=Jo", "--var", "timezone=Asia/Tokyo", "--var", "country=JP",
        "--now", "2026-12-24T03:00:00+00:00",
    )  # fmt: skip
    for row in rows:
        at = local(row)
        assert at.weekday() in {0, 1, 2, 3}, row
        assert (9, 0) <= (at.hour, at.minute) < (11, 30), row
    # Japan's New Year holidays (1-3 January in the holidays package's calendar) are skipped.
    assert not any(local(r).date().isoformat() == "2027-01-01" for r in rows)
    times = [datetime.fromisoformat(r["send_at"]) for r in rows]
    assert all(b - a >= timedelta(days=2) for a, b in itertools.pairwise(times))


def test_a_holiday_is_skipped_and_named(cfg: Path) -> None:
    # Thursday 24 Dec 2026, 20:00 in London: Christmas (Fri) and Boxing Day (observed Mon 28)
    # follow; the window has no Friday, so the next opening is Tuesday 29 December.
    rows = steps(cfg, "--var", "first_name=Jo", "--now", "2026-12-24T20:00:00+00:00")
    assert local(rows[0]).date().isoformat() == "2026-12-29"
    assert any(r.startswith("holiday:") for r in rows[0]["reasons"]), rows[0]["reasons"]


def test_a_promise_is_kept_exactly_even_outside_the_window(cfg: Path) -> None:
    rows = steps(
        cfg, "--var", "first_name=Jo", "--now", "2026-12-01T08:00:00+00:00",
        "--promise", "2=2026-12-04 16:45",
    )  # fmt: skip
    assert rows[1]["local_send_at"] == "2026-12-04T16:45:00+00:00"
    assert rows[1]["reasons"] == ["promise"]
    assert local(rows[2]) > local(rows[1])
    text = run(
        cfg, "--var", "first_name=Jo", "--now", "2026-12-01T08:00:00+00:00",
        "--promise", "2=2026-12-04 16:45",
    ).stdout  # fmt: skip
    assert "note: step 2 is promised for Fri 04 Dec 2026 16:45 Europe/London, outside" in text
    assert "why: promised: sent exactly then" in text


def test_text_shows_both_zones_the_reasons_and_the_body(cfg: Path) -> None:
    res = run(
        cfg, "--var", "first_name=Jo", "--var", "timezone=America/New_York",
        "--now", "2026-12-01T17:00:00+00:00",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "step 1: Wed 2026-12-02 09:00 EST for them, Wed 2026-12-02 15:00 CET for you" in text
    assert (
        "why: moved into the sending window (mon, tue, wed, thu 09:00-11:30, America/New_York"
        in text
    )
    assert "Subject: Notes from our call, Jo" in text
    assert "| Hi Jo, here are the notes for your team." in text
    assert "step 4 (break-up)" in text
    assert "Assumes no reply" in text


def test_missing_values_show_as_placeholders_and_are_named(cfg: Path) -> None:
    res = run(cfg, "--now", "2026-12-01T08:00:00+00:00")
    assert res.exit_code == 0, res.output
    assert "placeholders for values not given: first_name" in res.stdout
    assert "Subject: Notes from our call, [first_name]" in res.stdout


def test_lint_findings_are_shown_beside_their_step(cfg: Path) -> None:
    seq = cfg.parent / "sequences" / "follow-up.yaml"
    seq.write_text(seq.read_text().replace("the pricing page I promised", "just checking in"))
    res = run(cfg, "--var", "first_name=Jo", "--now", "2026-12-01T08:00:00+00:00")
    assert res.exit_code == 0, res.output
    block = res.stdout.split("step 2:", 1)[1].split("step 3:", 1)[0]
    assert "warning:" in block and "[empty-opener]" in block


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--now", "yesterday"], "--now 'yesterday': expected ISO 8601"),
        (["--var", "timezone=Mars/Olympus"], "timezone:"),
        (["--var", "country=XX"], "country:"),
        (["--promise", "9=2026-12-08 10:00"], "has steps 1 to 4"),
        (["--promise", "two=tomorrow"], "expected STEP=TIME"),
    ],
)
def test_bad_input_is_explained(cfg: Path, args: list[str], message: str) -> None:
    res = run(cfg, "--now", "2026-12-01T08:00:00+00:00", *args)
    assert res.exit_code == 2
    assert message in res.output


def test_preview_matches_the_zone_arithmetic_across_a_dst_change(cfg: Path) -> None:
    """Europe/London leaves summer time on 25 Oct 2026: 09:00 local is 08:00 UTC before and
    09:00 UTC after; the preview must name the wall time the contact sees."""
    rows = steps(cfg, "--var", "first_name=Jo", "--now", "2026-10-22T12:00:00+00:00")
    for row in rows:
        at = datetime.fromisoformat(row["send_at"]).astimezone(ZoneInfo("Europe/London"))
        assert local(row) == at
        assert (9, 0) <= (at.hour, at.minute) < (11, 30)
