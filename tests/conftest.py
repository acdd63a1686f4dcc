"""Real servers on loopback for the end-to-end tests: aiosmtpd, pymap and Dovecot for mail,
SQLite and PostgreSQL for state. Each test gets fresh servers and a fresh database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sequencer.devservers import LOOPBACK, Pymap, SmtpSink, free_port, imap_append, wait_for_port

PG_ADMIN = os.environ.get("SEQUENCER_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
IMAP_USER, IMAP_PASSWORD = "sales", "imap-Secret-42"


@dataclass
class ImapServer:
    kind: str
    port: int
    user: str = IMAP_USER
    password: str = IMAP_PASSWORD
    server: Any = None  # Pymap or DovecotServer: what kill/restart act on

    async def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        await imap_append(self.port, self.user, self.password, raw, folder)

    def kill(self) -> None:
        """SIGKILL the server: every client connection closes at once."""
        self.server.kill()

    def restart(self) -> None:
        """Kill it if it runs, and start it again on the same port (pymap comes back empty,
        with a new UIDVALIDITY)."""
        self.server.kill()
        self.server.start()


class DovecotServer:
    """Dovecot from a config in a short temp folder; killed, restarted and delivered to by
    hand (as an MTA's delivery agent writes into the Maildir, with or without IMAP up)."""

    def __init__(
        self,
        binary: str,
        tls: tuple[Path, Path] | None = None,
        introspection_url: str | None = None,
    ) -> None:
        """`tls`: (certificate chain, key) as PEM files: IMAPS only (ssl = required) on
        `port`; otherwise plain IMAP there. `introspection_url`: XOAUTH2 logins too."""
        self.binary = binary
        self.dir = tempfile.mkdtemp(dir="/tmp", prefix="dc")  # sockets must be < 108 chars
        self.port = free_port()
        d = self.dir
        for sub in ("run", "state", "mail"):
            os.mkdir(f"{d}/{sub}")
        Path(f"{d}/passwd").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n")
        conf = DOVECOT_CONF.format(d=d, port=self.port)
        if tls is not None:
            cert, key = tls
            conf = conf.replace(
                "ssl = no\n", f"ssl = required\nssl_cert = <{cert}\nssl_key = <{key}\n"
            )
            conf = conf.replace(
                f"    address = 127.0.0.1\n    port = {self.port}\n  }}\n  inet_listener imaps {{\n"
                "    port = 0\n",
                f"    port = 0\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n"
                f"    port = {self.port}\n",
            )
            assert f"imaps {{\n    address = 127.0.0.1\n    port = {self.port}" in conf
        if introspection_url is not None:
            # XOAUTH2 checked by Dovecot's oauth2 passdb against the test's token server.
            conf = conf.replace(
                "auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer"
            )
            conf += DOVECOT_OAUTH2.format(d=d)
            Path(f"{d}/dovecot-oauth2.conf.ext").write_text(
                DOVECOT_OAUTH2_EXT.format(url=introspection_url)
            )
        Path(f"{d}/dovecot.conf").write_text(conf)
        os.chmod(d, 0o755)  # noqa: S103 - Dovecot's unprivileged processes must reach it
        shutil.chown(f"{d}/mail", "nobody")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def maildir(self) -> Path:
        return Path(self.dir) / "mail" / IMAP_USER / "Maildir"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-F", "-c", f"{self.dir}/dovecot.conf"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: kill() takes every child too
        )
        wait_for_port(self.port, 10, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def deliver_file(self, raw: bytes) -> None:
        """Write a message straight into the Maildir, as a delivery agent does."""
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.test"
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(raw)
        shutil.chown(tmp, "nobody")
        tmp.rename(self.maildir / "new" / name)
        for path in (self.maildir, *self.maildir.iterdir()):
            shutil.chown(path, "nobody")

    def renumber(self) -> None:
        """What a restored backup or a rebuilt index does: the folder gets a new UIDVALIDITY
        and new UIDs (call while the server is stopped)."""
        for path in self.maildir.iterdir():
            if path.name.startswith("dovecot") and path.is_file():
                path.unlink()


#: Dovecot's oauth2 passdb (doc.dovecot.org, "Open Authentication v2.0 database"): the
#: token is posted to the introspection URL (RFC 7662), `active` must be true, and the
#: introspected `username` must be the user logging in. A second passdb: the first answers
#: only for the XOAUTH2 and OAUTHBEARER mechanisms.
DOVECOT_OAUTH2 = """passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/dovecot-oauth2.conf.ext
}}
"""
DOVECOT_OAUTH2_EXT = """introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
force_introspection = yes
"""


def _dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )


DOVECOT_CONF = """instance_name = dovecot-test-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
# IDLE learns of new mail through inotify; where the machine has run out of inotify
# instances (many servers at once) Dovecot polls instead, by default every 30 s.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


@contextmanager
def running_dovecot(
    introspection_url: str | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[ImapServer]:
    """A Dovecot for one test: `tls=(cert, key)` for IMAPS; with `introspection_url`,
    XOAUTH2 logins too (oauth2 passdb)."""
    binary = _dovecot_binary()
    if binary is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; `make test` does)")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot fixture runs as root (it drops mail access to nobody)")
    server = DovecotServer(binary, tls, introspection_url)
    try:
        server.start()
        yield ImapServer("dovecot", server.port, server=server)
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., ImapServer]]:
    """Starts Dovecot servers (`tls=(cert, key)` for IMAPS); all stopped after the test."""
    with ExitStack() as stack:

        def start(tls: tuple[Path, Path] | None = None) -> ImapServer:
            return stack.enter_context(running_dovecot(tls=tls))

        yield start


@pytest.fixture
def dovecot() -> Iterator[ImapServer]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
def pymap() -> Iterator[ImapServer]:
    server = Pymap(IMAP_USER, IMAP_PASSWORD).start()
    try:
        yield ImapServer("pymap", server.port, server=server)
    finally:
        server.stop()


@pytest.fixture(params=["pymap", "dovecot"])
def imap(request: pytest.FixtureRequest) -> ImapServer:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def new_postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database's URL, dropped on the way out (the test is skipped where
    PostgreSQL cannot be reached)."""
    name = f"seqtest_{uuid.uuid4().hex[:12]}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN}: {exc}")
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with new_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")  # type: ignore[no-any-return]


__all__ = ["LOOPBACK", "ImapServer", "new_postgres_database"]
