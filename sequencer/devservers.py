"""Real mail servers on loopback for `sequencer demo` and the tests: an aiosmtpd sink (with
fault injection and optional AUTH) and pymap (an in-memory IMAP server) in a subprocess.
Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aioimaplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """Collects what it is sent, and injects faults as a real server would have them:

    - `refuse[rcpt]`: the reply to RCPT for that address ("550 5.1.1 ...");
    - `rcpt_reply` / `data_reply`: the reply to every RCPT / DATA ("451 ...", "552 ...");
      a "421" reply also hangs up, as real servers do;
    - `drop_after_data`: the message is stored, then the connection is closed with no reply
      (accepted, but the client never hears so);
    - `delay`: seconds to wait before answering DATA (the message is stored first);
    - `stage_delay`: seconds to wait at RCPT, before the data exchange starts;
    - `on_message`: called with each stored message's bytes (e.g. to file it in Sent, as
      Gmail and Microsoft 365 do with what is submitted).
    """

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    rcpt_reply: str | None = None
    data_reply: str | None = None
    drop_after_data: bool = False
    delay: float = 0.0
    stage_delay: float = 0.0
    on_message: Any = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.stage_delay:
            await asyncio.sleep(self.stage_delay)
        reply = self.refuse.get(address.lower(), self.rcpt_reply)
        if reply is not None:
            return self._hang_up_after(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self._hang_up_after(server, self.data_reply)
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        if self.on_message is not None:
            await self.on_message(envelope.content)
        if self.drop_after_data:
            server.transport.close()
            return "250 2.0.0 never heard"
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 Message accepted"

    @staticmethod
    def _hang_up_after(server: Any, reply: str) -> str:
        if reply.startswith("421"):
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply


class SmtpSink:
    """aiosmtpd in a thread on a free loopback port."""

    def __init__(
        self,
        credentials: tuple[str, str] | None = None,
        size_limit: int | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        """`tls`: the server's context; STARTTLS, required before MAIL (or, with
        `implicit_tls`, TLS from the first byte, as on port 465)."""
        self.handler = SinkHandler()
        self.port = free_port()
        self.credentials = credentials
        self.auth_attempts = 0
        kwargs: dict[str, Any] = {}
        if tls is not None and implicit_tls:
            kwargs["ssl_context"] = tls
        elif tls is not None:
            kwargs |= {"tls_context": tls, "require_starttls": True}
        if size_limit is not None:
            kwargs["data_size_limit"] = size_limit  # advertised as SIZE in EHLO
        if credentials is not None:
            kwargs |= {
                "authenticator": self._auth,
                "auth_required": True,
                "auth_require_tls": False,
            }
        self.controller = Controller(
            self.handler, hostname=LOOPBACK, port=self.port, server_hostname="localhost", **kwargs
        )

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        self.auth_attempts += 1
        ok = (
            isinstance(data, LoginPassword)
            and self.credentials is not None
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        # handled=False lets aiosmtpd answer 535 itself; True would leave the client hanging.
        return AuthResult(success=ok, handled=False)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class Pymap:
    """pymap's in-memory `dict` backend in a subprocess, one user, no TLS."""

    def __init__(self, user: str = "sales", password: str = "demo-pass") -> None:  # noqa: S107
        self.user = user
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: clients' sockets close at once; mail is lost (in memory)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def start(self, timeout: float = 15.0) -> Pymap:
        code = "import sys; from pymap.main import main; sys.exit(main())"
        args = [
            sys.executable,
            "-c",
            code,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--no-tls",
            "dict",
            "--demo-user",
            self.user,
            "--demo-password",
            self.password,
        ]
        env = {**os.environ, "FQDN": "localhost"}
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for_port(self.port, timeout, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {detail[-500:]}")
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


async def imap_append(
    port: int, user: str, password: str, raw: bytes, folder: str = "INBOX"
) -> None:
    """Deliver a message into a mailbox the way an MTA would (IMAP APPEND)."""
    imap = aioimaplib.IMAP4(host=LOOPBACK, port=port, timeout=10)
    await imap.wait_hello_from_server()
    resp = await imap.login(user, password)
    if resp.result != "OK":
        raise RuntimeError(f"IMAP login failed: {resp.lines}")
    resp = await imap.append(raw, mailbox=folder)
    if resp.result != "OK":
        raise RuntimeError(f"IMAP APPEND failed: {resp.lines}")
    await imap.logout()


async def wait_until(predicate: Any, within: float = 10.0, every: float = 0.05) -> None:
    """Poll an async predicate (for tests and the demo): short waits, never long sleeps."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {within}s")
        await asyncio.sleep(every)


def delivery_report(
    *,
    to: str,
    rcpt: str,
    original_id: str,
    original_subject: str = "",
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "550 5.1.1 Recipient address rejected: User unknown",
    date: str = "Tue, 01 Dec 2026 09:00:00 +0000",
) -> bytes:
    """A Postfix-style RFC 3464 report about one of our messages, as a real MTA sends it."""
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.vendor.test>
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: {date}
Message-ID: <{uuid.uuid4().hex}@mx.vendor.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.vendor.test.
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{rcpt}>: host mx.prospect.test said: {diagnostic}

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.vendor.test

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--B0UND
Content-Type: text/rfc822-headers

From: <{to}>
To: {rcpt}
Subject: {original_subject}
Message-ID: {original_id}

--B0UND--
""".replace("\n", "\r\n").encode()
