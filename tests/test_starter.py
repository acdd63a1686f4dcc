"""`sequencer init`: the Quick start's first step writes settings that work from that folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sequencer import starter
from sequencer.config import load_settings

REPO = Path(__file__).resolve().parent.parent


def _sequencer(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def test_init_then_check_strict_passes_in_an_empty_folder(tmp_path: Path) -> None:
    made = _sequencer(tmp_path, "init", "--address", "Sam@Vendor.example", "--name", "Sam: Sales")
    assert made.returncode == 0, made.stderr
    assert "guesses" in made.stdout
    assert (tmp_path / "sequences" / "after-meeting.yaml").is_file()
    checked = _sequencer(tmp_path, "check", "--strict", SMTP_PASSWORD="x", IMAP_PASSWORD="y")
    assert checked.returncode == 0, checked.stderr
    settings = load_settings(tmp_path / "sequencer.yaml")
    box = settings.mailboxes["sales"]
    assert (box.address, box.display_name) == ("sam@vendor.example", "Sam: Sales")
    assert (box.smtp.host, box.imap.host) == ("smtp.vendor.example", "imap.vendor.example")
    # The database lands beside the settings file, wherever the command is run from.
    assert settings.database == f"sqlite://{(tmp_path / 'sequencer.db').resolve()}"


def test_check_strict_without_the_passwords_says_what_to_export(tmp_path: Path) -> None:
    assert _sequencer(tmp_path, "init").returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("SMTP_PASSWORD", "IMAP_PASSWORD")}
    checked = subprocess.run(
        [sys.executable, "-m", "sequencer", "check", "--strict"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert checked.returncode == 2
    assert "SMTP_PASSWORD is not set" in checked.stderr


def test_init_never_overwrites_settings_without_force(tmp_path: Path) -> None:
    (tmp_path / "sequencer.yaml").write_text("# mine\n", encoding="utf-8")
    refused = _sequencer(tmp_path, "init")
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert (tmp_path / "sequencer.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert _sequencer(tmp_path, "init", "--force").returncode == 0
    assert "mailboxes:" in (tmp_path / "sequencer.yaml").read_text(encoding="utf-8")


def test_an_existing_sequences_folder_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "sequences").mkdir()
    made = _sequencer(tmp_path, "init")
    assert made.returncode == 0
    assert list((tmp_path / "sequences").iterdir()) == []


def test_a_bad_address_is_refused_and_nothing_written(tmp_path: Path) -> None:
    refused = _sequencer(tmp_path, "init", "--address", "sam@")
    assert refused.returncode == 2 and "--address" in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_known_providers_get_their_servers() -> None:
    made = starter.render("jo@gmail.com", None, "UTC")
    assert "host: smtp.gmail.com" in made.text and "host: imap.gmail.com" in made.text
    assert not made.guessed_hosts
    assert 'display_name: "Jo"' in made.text


def test_local_zone_reads_tz_then_localtime(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Europe/Berlin")
    assert starter.local_zone({"TZ": "America/New_York"}, link) == "America/New_York"
    assert starter.local_zone({}, link) == "Europe/Berlin"
    assert starter.local_zone({"TZ": "Not/AZone"}, tmp_path / "missing") == "UTC"
    assert starter.local_zone({"TZ": "Etc/UTC"}, link) == "UTC"


def test_the_packaged_example_is_the_repository_one() -> None:
    packaged = REPO / "sequencer" / "starter_data" / "after-meeting.yaml"
    assert packaged.read_bytes() == (REPO / "sequences" / "after-meeting.yaml").read_bytes()


def test_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder\n", encoding="utf-8")
    refused = _sequencer(tmp_path, "init", "--folder", str(tmp_path / "a-file" / "sub"))
    assert refused.returncode == 2
    assert "cannot write there" in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
