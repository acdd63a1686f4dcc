"""The CLI's manners as an operator meets them, run as real processes: `--version`, `-h` on
every command, flags that read as flags, `check --strict`/`--csv` that fail a CI job."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

COMMANDS = [
    [],
    ["check"],
    ["enroll"],
    ["preview"],
    ["status"],
    ["pause"],
    ["resume"],
    ["retry"],
    ["stop"],
    ["agenda"],
    ["agenda", "done"],
    ["forget"],
    ["suppress"],
    ["suppress", "list"],
    ["suppress", "add"],
    ["suppress", "remove"],
    ["suppress", "import"],
    ["migrate"],
    ["run"],
    ["classify"],
    ["demo"],
    ["test"],
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    # COLUMNS: the help as an 80-column terminal shows it, whatever runs the tests.
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"},
    )


def test_version_prints_the_installed_version() -> None:
    res = cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"sequencer {version('sequencer-followup')}\n"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "sequencer")
def test_dash_h_is_help_on_every_command_and_flags_read_as_flags(command: list[str]) -> None:
    short, long = cli(*command, "-h"), cli(*command, "--help")
    assert short.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert "Usage: sequencer" in short.stdout
    assert "-h" in short.stdout  # listed beside --help
    assert "<bool>" not in short.stdout  # `--json <bool>` reads as if it wanted a value
    assert "--no-" not in short.stdout


def test_help_lists_plain_flags() -> None:
    lines = cli("enroll", "-h").stdout.splitlines()
    overlap = next(line for line in lines if "--allow-overlap" in line)
    assert overlap.split("--allow-overlap", 1)[1].lstrip().startswith("Enroll even")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "sequencer")
def test_every_help_shows_an_example_of_that_command(command: list[str]) -> None:
    text = " ".join(cli(*command, "-h").stdout.split())  # wrapped lines joined
    assert "Example: " + " ".join(["sequencer", *command]) in text


def test_the_command_list_shows_each_commands_first_sentence() -> None:
    """Not the whole docstring: the list is read at a glance, `COMMAND -h` has the rest."""
    res = cli("--help")
    assert res.returncode == 0
    assert "Erase everything stored about a person (GDPR Art. 17)" in res.stdout
    assert "Irreversible; one transaction" not in res.stdout  # forget's later sentences
    assert "Irreversible" in cli("forget", "--help").stdout
