"""Operators on the server: the CLI run as root on the service's database refuses with the
command to use instead, and the service and an operator in its group share the state folder
(2770) without locking each other out of the SQLite files, whatever their umasks. The CLI runs
as subprocesses, as other users (the tests run as root)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from world import FOLLOW_UP

from sequencer.store.sharing import as_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switches users: runs as root")

NOBODY = 65534
# Numeric ids with no name: a service user, an operator, and the group they share.
SERVICE, OPERATOR, GROUP = 60001, 60002, 60010


@pytest.fixture
def install() -> Iterator[Path]:
    """A config and sequences other users can read, and an empty state folder beside them
    (in /tmp: pytest's own folders are root's alone)."""
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="ops"))
    root.chmod(0o755)
    (root / "sequences").mkdir(mode=0o755)
    (root / "sequences" / "follow-up.yaml").write_text(FOLLOW_UP)
    state = root / "state"
    state.mkdir()
    (root / "sequencer.yaml").write_text(
        f"""database: sqlite://{state / "sequencer.db"}
sequences: {root / "sequences"}
mailboxes:
  sales:
    address: sales@vendor.test
    smtp: {{host: 127.0.0.1, port: 2525, security: none}}
    imap: {{host: 127.0.0.1, port: 1143, security: none, username: sales,
           password_env: TEST_IMAP_PASSWORD}}
"""
    )
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _reachable(path: Path) -> bool:
    """Whether a user who is not root can run this file (every folder above it searchable)."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 1)


def _python_for_others() -> tuple[str, dict[str, str]]:
    """An interpreter other users can run, with this environment's packages. Ours may live
    under /root (pyenv): then the system's Python of the same version, given our paths."""
    if _reachable(Path(sys.executable)):
        return sys.executable, {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        pytest.skip(f"{sys.executable} is not reachable by other users, and {system} is missing")
    repo = Path(__file__).resolve().parents[1]
    site = [p for p in sys.path if p.endswith("site-packages")]
    return str(system), {"PYTHONPATH": os.pathsep.join([str(repo), *site])}


def cli(
    root: Path, *args: str, user: int | None = None, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    python, env = sys.executable, {}
    as_user = {}
    if user is not None:
        python, env = _python_for_others()
        as_user = {"user": user, "group": GROUP, "extra_groups": [GROUP]}
    return subprocess.run(
        [python, "-m", "sequencer", *args, "--config", str(root / "sequencer.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "TEST_IMAP_PASSWORD": "x", **env},
        umask=umask,
        **as_user,  # type: ignore[arg-type]
    )


def _enroll(root: Path, email: str, **kw: int) -> subprocess.CompletedProcess[str]:
    return cli(root, "enroll", "follow-up", email, "--var", "first_name=Jo", **kw)


def test_root_is_refused_on_a_state_folder_that_belongs_to_the_service(install: Path) -> None:
    """`sudo sequencer enroll` before the first start used to create a root-owned database the
    service then crashed on: now nothing is created, and the exact command is given."""
    state = install / "state"
    os.chown(state, NOBODY, -1)
    res = _enroll(install, "jo@prospect.test")
    assert res.returncode == 2
    assert f"{state} belongs to nobody" in res.stderr
    expected = shlex.join(
        [
            sys.executable,
            "-m",
            "sequencer",
            "enroll",
            "follow-up",
            "jo@prospect.test",
            "--var",
            "first_name=Jo",
            "--config",
            str(install / "sequencer.yaml"),
        ]
    )
    assert f"{as_user('nobody')} {expected}" in res.stderr.replace("\n", " ")
    assert list(state.iterdir()) == []  # no database, no lock, no journal


def test_root_is_refused_on_a_database_owned_by_the_service(install: Path) -> None:
    state = install / "state"
    assert _enroll(install, "jo@prospect.test").returncode == 0  # root's own: allowed
    for path in (state, *state.iterdir()):
        os.chown(path, NOBODY, -1)
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    for args in (("status", "--json"), ("migrate",), ("run",)):
        res = cli(install, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert f"{state / 'sequencer.db'} belongs to nobody" in res.stderr
        assert f"{as_user('nobody')} " in res.stderr
        assert shlex.join(args) in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before
    assert all(p.stat().st_uid == NOBODY for p in state.iterdir())


def test_the_command_a_refusal_prints_works_as_printed(install: Path) -> None:
    """The operator enrolled first, so the database is theirs, in the service's folder: root
    is told to run as the service (not as that operator), with a program this host has (a
    Debian without sudo gets runuser), and the line, pasted as is, enrolls the contact."""
    state = install / "state"
    os.chown(state, NOBODY, NOBODY)  # the service's folder, its own group shared
    state.chmod(0o2770)
    python, env = _python_for_others()
    if env and shutil.which("sudo"):
        pytest.skip("sudo would drop the PYTHONPATH this host's interpreter needs")
    run = {"capture_output": True, "text": True, "timeout": 60, "cwd": install}
    env = {**os.environ, "TEST_IMAP_PASSWORD": "x", **env}
    config = ["--config", str(install / "sequencer.yaml")]
    operator = subprocess.run(
        [python, "-m", "sequencer", "status", *config],
        env=env,
        user=OPERATOR,
        group=NOBODY,
        extra_groups=[NOBODY],
        **run,  # type: ignore[call-overload]
    )
    assert operator.returncode == 0, operator.stderr
    assert (state / "sequencer.db").stat().st_uid == OPERATOR

    enroll = ["enroll", "follow-up", "jo@prospect.test", "--var", "first_name=Jo"]
    refused = subprocess.run([python, "-m", "sequencer", *enroll, *config], env=env, **run)
    assert refused.returncode == 2
    assert f"belongs to {OPERATOR}" in refused.stderr
    lines = refused.stderr.splitlines()
    command = lines[next(i for i, line in enumerate(lines) if line.endswith("instead:")) + 1]
    assert shutil.which(shlex.split(command)[0]), command  # a program this host has
    assert "nobody" in shlex.split(command)[:3], command  # the service, not the operator

    pasted = subprocess.run(command, shell=True, env=env, **run)  # noqa: S602
    assert pasted.returncode == 0, pasted.stderr
    rows = subprocess.run(
        [python, "-m", "sequencer", "status", "--json", *config],
        env=env,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[NOBODY],
        **run,  # type: ignore[call-overload]
    )
    assert rows.returncode == 0, rows.stderr
    assert [r["email"] for r in json.loads(rows.stdout)] == ["jo@prospect.test"]


def test_service_and_operator_share_the_state_folder_whatever_their_umask(
    install: Path,
) -> None:
    """Folder 2770, owner the service, group shared. The operator creates the database first
    (umask 022, as a login shell has it); the service then writes to it, and the operator
    again after: the database, its journals and the lock stay group-writable."""
    state = install / "state"
    os.chown(state, SERVICE, GROUP)
    state.chmod(0o2770)

    first = _enroll(install, "ann@prospect.test", user=OPERATOR)
    assert first.returncode == 0, first.stderr
    for path in state.iterdir():
        info = path.stat()
        assert info.st_gid == GROUP, path  # the setgid folder's group
        assert stat.S_IMODE(info.st_mode) & 0o060 == 0o060, (path, oct(info.st_mode))
        assert stat.S_IMODE(info.st_mode) & 0o007 == 0, (path, oct(info.st_mode))

    second = _enroll(install, "bo@prospect.test", user=SERVICE, umask=0o007)
    assert second.returncode == 0, second.stderr
    third = _enroll(install, "cy@prospect.test", user=OPERATOR)
    assert third.returncode == 0, third.stderr
    rows = json.loads(cli(install, "status", "--json", user=SERVICE).stdout)
    assert sorted(r["email"] for r in rows) == [
        "ann@prospect.test",
        "bo@prospect.test",
        "cy@prospect.test",
    ]


def test_a_private_folder_keeps_its_files_private(install: Path) -> None:
    """Outside a shared folder nothing is opened up: the lock file stays the owner's."""
    state = install / "state"
    os.chown(state, OPERATOR, GROUP)
    state.chmod(0o700)
    res = _enroll(install, "ann@prospect.test", user=OPERATOR)
    assert res.returncode == 0, res.stderr
    lock = state / "sequencer.db.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
