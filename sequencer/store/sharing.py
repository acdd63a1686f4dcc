"""Who may touch a SQLite database's files, and with what modes, when the service and the
operators share them.

The service runs as `sequencer`; operators run the CLI as themselves, in the `sequencer`
group, on the state folder (mode 2770: group-writable, and new files take the folder's
group). Two rules keep either side from locking the other out:

- root is refused on a database (or, before it exists, a folder) that belongs to another
  user, with the exact command to run instead: files root created there (the database, its
  -journal/-wal, the lock file) would be root's, and the service would crash on them;
- in a group-writable folder, the files we create are group-writable whatever the umask
  (SQLite gives its -journal/-wal/-shm files the database's mode, so the database sets it).
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import sys
from pathlib import Path

from sequencer.errors import StoreError


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def as_user(user: str) -> str:
    """How root runs a command as another user on this host: sudo where it is installed, else
    runuser (util-linux, on every Debian and Ubuntu; minimal images and containers lack sudo,
    where `sudo -u` would only say "command not found")."""
    return f"sudo -u {user}" if shutil.which("sudo") else f"runuser -u {user} --"


def this_command(argv: list[str] | None = None) -> list[str]:
    """The command line that is running, with the program as a path another user can run."""
    args = list(sys.argv if argv is None else argv)
    program = args[0] if args else "sequencer"
    if program.endswith("__main__.py"):  # python -m sequencer
        return [sys.executable, "-m", "sequencer", *args[1:]]
    found = shutil.which(program) if os.sep not in program else program
    return [os.path.abspath(found or program), *args[1:]]


def check_owner(database: Path, *, euid: int | None = None, argv: list[str] | None = None) -> None:
    """Refuse root on another user's database (or its folder, when it does not exist yet)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return
    target = database if database.exists() else database.parent
    try:
        uid = target.stat().st_uid
        folder = database.parent.stat()
    except OSError:
        return  # missing: the caller says so in its own words
    if uid == 0:
        return
    owner = _owner_name(uid)
    # The service owns its state folder (StateDirectory= makes it so); the database in it may
    # be an operator's, who created it first. The command to give is the service's.
    service = _owner_name(folder.st_uid if folder.st_uid != 0 else uid)
    group = _group_name(folder.st_gid)
    raise StoreError(
        f"{target} belongs to {owner}, and this command runs as root: the files it would "
        f"create there (the database, its journal, the lock) would be root's, and the service "
        f"running as {service} could no longer open them. Run it as {service} instead:\n"
        f"  {as_user(service)} {shlex.join(this_command(argv))}\n"
        f"(or as yourself, if you are an operator in the {group} group)"
    )


def shared(folder: Path) -> bool:
    """A folder its group may write to: what we create in it must be group-writable too."""
    try:
        return bool(folder.stat().st_mode & stat.S_IWGRP)
    except OSError:
        return False


def file_mode(folder: Path) -> int:
    return 0o660 if shared(folder) else 0o600


def prepare(database: Path) -> None:
    """Create the database file group-writable in a shared folder (SQLite would make it
    0644 less the umask, and its journals after it), so the first process to create it,
    service or operator, does not lock the other out."""
    if database.exists() or not shared(database.parent):
        return
    try:
        fd = os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o660)
    except FileExistsError:
        return  # another process created it meanwhile
    try:
        os.fchmod(fd, 0o660)  # the umask would have taken the group's write bit
    finally:
        os.close(fd)


def open_lock(path: Path) -> int:
    """Open (creating) a lock file with the folder's sharing mode; a file we own is kept so."""
    mode = file_mode(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd
