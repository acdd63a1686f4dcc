"""Dovecot on loopback for the benchmarks: many users from a passwd-file, and the limits raised
so that hundreds of connections from one address are served (one imap process each).

The same config as tests/conftest.py's fixture (HARNESS.md section 3), plus
`default_process_limit`, `default_client_limit` and `mail_max_userip_connections`. Not a
benchmark itself: bench/reply_stop.py and bench/many_mailboxes.py import it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from sequencer.devservers import free_port, wait_for_port

CONF = """instance_name = dovecot-bench-{port}
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
default_process_limit = {processes}
default_client_limit = {clients}
mail_max_userip_connections = 20
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/mail/%u
}}
service imap-login {{
{login_extra}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )


class Dovecot:
    """Dovecot from a config in a short temp folder (sockets must be < 108 chars)."""

    def __init__(
        self,
        users: list[str],
        password: str,
        connections: int = 100,
        extra: str = "",
        login_extra: str = "",
    ) -> None:
        """`connections`: how many IMAP connections at once it must serve (one process
        each); the limits are set with room to spare. `extra`: more config at the end;
        `login_extra`: more lines in `service imap-login`."""
        found = binary()
        if found is None:
            raise SystemExit("Dovecot is not installed (apt-get install dovecot-imapd)")
        if os.geteuid() != 0:
            raise SystemExit("the Dovecot benchmarks run as root (mail access drops to nobody)")
        self.binary = found
        self.users = users
        self.password = password
        self.port = free_port()
        self.dir = tempfile.mkdtemp(dir="/tmp", prefix="dcb")
        d = self.dir
        for sub in ("run", "state", "mail"):
            os.mkdir(f"{d}/{sub}")
        Path(f"{d}/passwd").write_text(
            "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user in users)
        )
        processes = max(100, 2 * connections + 50)
        conf = (
            CONF.format(
                d=d,
                port=self.port,
                processes=processes,
                clients=4 * processes,
                login_extra=login_extra,
            )
            + extra
        )
        Path(f"{d}/dovecot.conf").write_text(conf)
        os.chmod(d, 0o755)  # noqa: S103 - Dovecot's unprivileged processes must reach it
        shutil.chown(f"{d}/mail", "nobody")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dovecot:
        self.proc = subprocess.Popen(
            [self.binary, "-F", "-c", f"{self.dir}/dovecot.conf"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
