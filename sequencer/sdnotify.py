"""The systemd notify edge: READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1.

Owns the few lines of socket code sd_notify(3) needs (one datagram to the AF_UNIX socket
named by $NOTIFY_SOCKET, '@' standing for the abstract namespace) and reading the watchdog
interval from $WATCHDOG_USEC/$WATCHDOG_PID. Outside systemd (no $NOTIFY_SOCKET) every call is
a no-op, so the daemon runs the same from a terminal.

Hand-written rather than a dependency: `sdnotify` is unmaintained since 2017, and
`systemd-python`/`cysystemd` are C extensions built against libsystemd for what is a single
sendto(). The protocol is stable and documented in sd_notify(3).

What to say and when is the daemon's business (worker.py); `ping_every` and `Watchdog` are
pure, so the interval logic is tested without a socket or a clock.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

import structlog

log = structlog.get_logger("sequencer.sdnotify")

#: What systemd hands a notify service; removed from our environment once read, so the
#: render process and any other child cannot speak for us (sd_notify's unset_environment).
ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as an address for sendto: a path, or an abstract name ('@' -> NUL)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other forms: not for us


def ping_every(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the interval systemd waits, as sd_watchdog_enabled
    advises), or None when no watchdog is asked of this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None  # meant for another process (the one that exec'd us, say)
    return int(usec) / 2_000_000


class Watchdog:
    """When to ping: at most once per `every` seconds, measured on a monotonic clock passed in."""

    def __init__(self, every: float | None) -> None:
        self.every = every
        self.last: float | None = None

    def due(self, now: float) -> bool:
        if self.every is None:
            return False
        if self.last is not None and now - self.last < self.every:
            return False
        self.last = now
        return True


class Notifier:
    """Speaks to systemd's notify socket; silent when there is none."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog = Watchdog(ping_every(env, os.getpid()))
        for name in ENVIRONMENT:
            env.pop(name, None)
        self._status: str | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def last_status(self) -> str | None:
        return self._status

    def send(self, *fields: str) -> None:
        """One datagram of NAME=value lines. A failure is logged once and otherwise ignored:
        systemd going away must not stop the daemon from sending or recording."""
        if self.address is None:
            return
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a full queue drops this one; never block the loop
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("sdnotify.failed", error=str(exc), fields=list(fields))
            self._failed = True
        else:
            self._failed = False

    def ready(self, status: str | None = None) -> None:
        fields = ["READY=1"]
        if status is not None:
            self._status = status
            fields.append(f"STATUS={status}")
        self.send(*fields)

    def status(self, text: str) -> None:
        """STATUS=, only when it changed: `systemctl status` shows the last one."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253+) tie this reload to the `systemctl reload` asked.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: finishing the send in flight")

    def alive(self) -> None:
        """WATCHDOG=1 if one is due; called from the scheduler loop, so a hung loop stops it."""
        if self.watchdog.due(time.monotonic()):
            self.send("WATCHDOG=1")
