"""TLS you can trust, against real servers on loopback with a throwaway CA made here
(trustme): SMTP with STARTTLS and with implicit TLS (aiosmtpd), IMAPS (Dovecot; pymap speaks
only STARTTLS, which aioimaplib cannot, so it has no part here). For each: it works with
`ca_file`; an untrusted certificate and a certificate for another name are refused, with a
message that says what to do. `ca_file` mistakes are config errors `check` reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from conftest import ImapServer
from world import SALES, cli

from sequencer.clock import SystemClock
from sequencer.config import Mailbox, load_settings
from sequencer.devservers import SmtpSink
from sequencer.errors import InboxError
from sequencer.inbox import open_imap, quietly
from sequencer.sender import Sender, SendFailed
from sequencer.states import Hold
from sequencer.store import db
from sequencer.worker import Daemon

pytestmark = pytest.mark.e2e

OTHER_NAME = "mail.other.test"


@dataclass
class Pki:
    """A private CA, its certificate where a user would put it, and server certificates."""

    ca: trustme.CA
    ca_pem: Path
    root: Path

    def server_context(self, *names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(ctx)
        return ctx

    def server_files(self, *names: str) -> tuple[Path, Path]:
        """(certificate chain, key) as PEM files, as Dovecot reads them."""
        leaf = self.ca.issue_cert(*names)
        cert, key = self.root / f"{names[0]}.crt", self.root / f"{names[0]}.key"
        cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


@pytest.fixture(autouse=True)
async def _loop_outlives_failed_handshakes() -> AsyncIterator[None]:
    """asyncio closes the socket of a failed TLS handshake a loop turn later; a test whose
    loop ended at once would see it reported unclosed."""
    yield
    await asyncio.sleep(0.01)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    (tmp_path / "pki").mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return Pki(ca, tmp_path / "ca.pem", tmp_path / "pki")


@pytest.fixture
def tls_sink(pki: Pki) -> Iterator[Callable[..., SmtpSink]]:
    """aiosmtpd sinks with TLS: `start(mode, *names)`, mode "starttls" or "tls"."""
    sinks: list[SmtpSink] = []

    def start(mode: str, *names: str) -> SmtpSink:
        ctx = pki.server_context(*(names or ("127.0.0.1", "localhost")))
        sink = SmtpSink(tls=ctx, implicit_tls=mode == "tls").start()
        sinks.append(sink)
        return sink

    try:
        yield start
    finally:
        for sink in sinks:
            sink.stop()


def write_config(
    root: Path,
    *,
    smtp: tuple[int, str] = (1, "none"),
    imap: tuple[int, str] = (1, "none"),
    smtp_ca: str | None = None,
    imap_ca: str | None = None,
) -> Path:
    """One mailbox; `*_ca` is written as ca_file (relative paths: from the config's folder)."""
    (root / "sequences").mkdir(exist_ok=True)

    def ca(value: str | None) -> str:
        return f", ca_file: {value}" if value else ""

    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: sqlite://{root / "state.db"}
sequences: ./sequences
mailboxes:
  sales:
    address: {SALES}
    smtp: {{host: 127.0.0.1, port: {smtp[0]}, security: {smtp[1]}, timeout: 10{ca(smtp_ca)}}}
    imap: {{host: 127.0.0.1, port: {imap[0]}, security: {imap[1]}, timeout: 10,
           username: sales, password_env: TEST_IMAP_PASSWORD{ca(imap_ca)}}}
"""
    )
    return cfg


def mailbox(cfg: Path) -> Mailbox:
    return load_settings(cfg).mailboxes["sales"]


async def nothing() -> None:
    return None


MESSAGE = b"From: sales@vendor.test\r\nTo: jo@acme.test\r\nSubject: hi\r\n\r\nHello.\r\n"


# --- SMTP: STARTTLS and implicit TLS ----------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_smtp_sends_over_tls_trusting_only_the_ca_file(
    tmp_path: Path, pki: Pki, tls_sink: Callable[..., SmtpSink], mode: str
) -> None:
    sink = tls_sink(mode)
    # The sink requires STARTTLS before MAIL (or speaks only TLS): a message that arrives
    # went over a verified TLS session.
    sender = Sender(mailbox(write_config(tmp_path, smtp=(sink.port, mode), smtp_ca="ca.pem")))
    try:
        reply = await sender.send("jo@acme.test", MESSAGE, nothing)
    finally:
        await sender.close()
    assert reply.startswith("250")
    assert [r.rcpt_tos for r in sink.received] == [["jo@acme.test"]]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_smtp_refuses_a_certificate_from_an_untrusted_ca(
    tmp_path: Path, tls_sink: Callable[..., SmtpSink], mode: str
) -> None:
    sink = tls_sink(mode)
    sender = Sender(mailbox(write_config(tmp_path, smtp=(sink.port, mode))))
    with pytest.raises(SendFailed) as caught:
        await sender.send("jo@acme.test", MESSAGE, nothing)
    text = str(caught.value)
    assert f"the certificate of 127.0.0.1:{sink.port} is not signed by a trusted CA" in text
    assert "if your server uses a private CA, set ca_file: " in text
    assert "under mailboxes.sales.smtp" in text
    assert sink.received == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_smtp_refuses_a_certificate_for_another_name(
    tmp_path: Path, tls_sink: Callable[..., SmtpSink], mode: str
) -> None:
    sink = tls_sink(mode, OTHER_NAME)  # signed by the trusted CA, but for another host
    sender = Sender(mailbox(write_config(tmp_path, smtp=(sink.port, mode), smtp_ca="ca.pem")))
    with pytest.raises(SendFailed) as caught:
        await sender.send("jo@acme.test", MESSAGE, nothing)
    assert f"the certificate of 127.0.0.1:{sink.port} is for {OTHER_NAME}, not 127.0.0.1" in str(
        caught.value
    )
    assert sink.received == []


async def test_a_ca_file_is_the_only_ca_trusted_for_that_server(
    tmp_path: Path, tls_sink: Callable[..., SmtpSink]
) -> None:
    """A ca_file from another CA does not vouch for this server's certificate."""
    sink = tls_sink("tls")
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "stranger.pem"))
    cfg = write_config(tmp_path, smtp=(sink.port, "tls"), smtp_ca="stranger.pem")
    with pytest.raises(SendFailed) as caught:
        await Sender(mailbox(cfg)).login()
    assert "is not signed by the CA in mailboxes.sales.smtp.ca_file" in str(caught.value)


async def test_smtp_refuses_an_expired_certificate(tmp_path: Path, pki: Pki) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    leaf = pki.ca.issue_cert("127.0.0.1", not_before=long_ago, not_after=long_ago + timedelta(1))
    leaf.configure_cert(ctx)
    sink = SmtpSink(tls=ctx, implicit_tls=True).start()
    try:
        cfg = write_config(tmp_path, smtp=(sink.port, "tls"), smtp_ca="ca.pem")
        with pytest.raises(SendFailed) as caught:
            await Sender(mailbox(cfg)).login()
    finally:
        sink.stop()
    assert f"the certificate of 127.0.0.1:{sink.port} has expired" in str(caught.value)


# --- IMAPS against Dovecot ----------------------------------------------------------------


@pytest.fixture
def imaps(pki: Pki, dovecot_factory: Callable[..., ImapServer]) -> Callable[..., ImapServer]:
    def start(*names: str) -> ImapServer:
        return dovecot_factory(tls=pki.server_files(*(names or ("127.0.0.1", "localhost"))))

    return start


async def test_imaps_logs_in_trusting_the_ca_file(
    tmp_path: Path, imaps: Callable[..., ImapServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = imaps()
    monkeypatch.setenv("TEST_IMAP_PASSWORD", server.password)
    box = mailbox(write_config(tmp_path, imap=(server.port, "tls"), imap_ca="ca.pem"))
    imap = await open_imap(box, "IMAP")
    try:
        assert (await imap.select("INBOX")).result == "OK"
    finally:
        await quietly(imap.logout())


async def test_imaps_refuses_a_certificate_from_an_untrusted_ca(
    tmp_path: Path, imaps: Callable[..., ImapServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = imaps()
    monkeypatch.setenv("TEST_IMAP_PASSWORD", server.password)
    box = mailbox(write_config(tmp_path, imap=(server.port, "tls")))
    with pytest.raises(InboxError) as caught:
        await open_imap(box, "IMAP")
    text = str(caught.value)
    assert f"the certificate of 127.0.0.1:{server.port} is not signed by a trusted CA" in text
    assert "set ca_file: /path/to/ca.pem under mailboxes.sales.imap" in text


async def test_imaps_refuses_a_certificate_for_another_name(
    tmp_path: Path, imaps: Callable[..., ImapServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = imaps(OTHER_NAME)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", server.password)
    box = mailbox(write_config(tmp_path, imap=(server.port, "tls"), imap_ca="ca.pem"))
    with pytest.raises(InboxError) as caught:
        await open_imap(box, "IMAP")
    assert f"the certificate of 127.0.0.1:{server.port} is for {OTHER_NAME}, not 127.0.0.1" in str(
        caught.value
    )


# --- what a user sees: the CLI and the daemon ------------------------------------------


def test_check_connect_passes_over_tls_and_names_an_untrusted_certificate(
    tmp_path: Path,
    tls_sink: Callable[..., SmtpSink],
    imaps: Callable[..., ImapServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink, server = tls_sink("starttls"), imaps()
    monkeypatch.setenv("TEST_IMAP_PASSWORD", server.password)
    ports = {"smtp": (sink.port, "starttls"), "imap": (server.port, "tls")}

    trusted = write_config(tmp_path, **ports, smtp_ca="ca.pem", imap_ca="ca.pem")
    res = cli(trusted, "check", "--connect")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(
        line.startswith(f"sales  smtp  127.0.0.1:{sink.port} starttls  ok  ") for line in lines
    ), lines
    assert any(
        line.startswith(f"sales  imap  127.0.0.1:{server.port} tls, folder INBOX  ok  ")
        for line in lines
    ), lines

    untrusted = write_config(tmp_path, **ports)
    res = cli(untrusted, "check", "--connect")
    assert res.returncode == 2
    failed = [line for line in res.stdout.splitlines() if " failed after " in line]
    assert len(failed) == 2, res.stdout
    for line, port in zip(failed, (sink.port, server.port), strict=True):
        assert f"the certificate of 127.0.0.1:{port} is not signed by a trusted CA" in line
        assert "set ca_file" in line
    assert "2 of 2 login(s) failed" in res.stderr
    assert sink.received == []


async def test_the_daemon_holds_a_mailbox_whose_imap_certificate_is_untrusted(
    tmp_path: Path,
    tls_sink: Callable[..., SmtpSink],
    imaps: Callable[..., ImapServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fail closed: an inbox that cannot be watched safely holds the mailbox; nothing goes."""
    sink, server = tls_sink("starttls"), imaps()
    monkeypatch.setenv("TEST_IMAP_PASSWORD", server.password)
    cfg = write_config(
        tmp_path, smtp=(sink.port, "starttls"), imap=(server.port, "tls"), smtp_ca="ca.pem"
    )
    settings = load_settings(cfg)
    async with db.connected(settings.database):
        daemon = Daemon(settings, {}, SystemClock())
        try:
            await daemon.start()
            hold, detail = (await daemon.holds())["sales"]
            assert hold is Hold.INBOX_UNAVAILABLE
            assert detail is not None
            assert "is not signed by a trusted CA" in detail
            assert await daemon.run_once() == 0
        finally:
            await daemon.close()
    assert sink.received == []


def test_sequencer_run_logs_the_certificate_problem_and_keeps_running(
    tmp_path: Path, imaps: Callable[..., ImapServer], tls_sink: Callable[..., SmtpSink]
) -> None:
    """The real daemon, as systemd runs it: one clear log line, no crash (a restart loop
    would not fix a certificate)."""
    sink, server = tls_sink("tls", OTHER_NAME), imaps(OTHER_NAME)
    cfg = write_config(
        tmp_path,
        smtp=(sink.port, "tls"),
        imap=(server.port, "tls"),
        smtp_ca="ca.pem",
        imap_ca="ca.pem",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sequencer", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TEST_IMAP_PASSWORD": server.password},
    )
    events: dict[str, dict[str, object]] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            events[str(event["event"])] = event
            if "daemon.started" in events:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert "daemon.started" in events, stderr
    inbox = str(events["inbox.unavailable"]["error"])
    assert f"the certificate of 127.0.0.1:{server.port} is for {OTHER_NAME}, not 127.0.0.1" in (
        inbox
    )
    smtp = str(events["smtp.unavailable"]["error"])
    assert f"the certificate of 127.0.0.1:{sink.port} is for {OTHER_NAME}, not 127.0.0.1" in smtp
    assert proc.returncode == 0


# --- ca_file as a setting -----------------------------------------------------------------


def test_check_refuses_a_ca_file_that_is_missing_or_not_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    cfg = write_config(
        tmp_path,
        smtp=(587, "starttls"),
        imap=(993, "tls"),
        smtp_ca="missing.pem",
        imap_ca="notes.txt",
    )
    res = cli(cfg, "check")
    assert res.returncode == 2
    text = " ".join(res.stderr.split())
    assert (
        f"mailboxes.sales.smtp: ca_file {tmp_path}/missing.pem: no such file (give the path "
        "of your private CA's certificate in PEM form" in text
    )
    assert f"mailboxes.sales.imap: ca_file {tmp_path}/notes.txt: not a PEM certificate" in text
    assert "openssl x509 -inform der" in text


def test_ca_file_expands_home_and_variables_like_password_file(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CA_DIR", str(tmp_path))
    cfg = write_config(tmp_path, smtp=(465, "tls"), smtp_ca='"${CA_DIR}/ca.pem"')
    res = cli(cfg, "check")
    assert res.returncode == 0, res.stderr
    monkeypatch.delenv("CA_DIR")
    res = cli(cfg, "check")
    assert res.returncode == 2
    assert "ca_file ${CA_DIR}/ca.pem: an environment variable in it is not set" in res.stderr


def test_ca_file_without_tls_is_a_config_error(tmp_path: Path, pki: Pki) -> None:
    cfg = write_config(tmp_path, smtp_ca="ca.pem")  # security: none
    res = cli(cfg, "check")
    assert res.returncode == 2
    assert "ca_file is used only with security: starttls or tls" in res.stderr
    assert "sequencer.yaml:6: mailboxes.sales.smtp: ca_file" in res.stderr  # the smtp line


def test_check_refuses_imap_starttls_with_the_reason_and_what_to_use(tmp_path: Path) -> None:
    res = cli(write_config(tmp_path, imap=(143, "starttls")), "check")
    assert res.returncode == 2
    text = " ".join(res.stderr.split())
    assert "mailboxes.sales.imap: security: starttls is not supported for IMAP" in text
    assert "use security: tls on port 993" in text


def test_the_example_config_and_readme_never_suggest_imap_starttls() -> None:
    root = Path(__file__).resolve().parent.parent
    example = root / "deploy" / "sequencer.yaml"
    settings = load_settings(example)
    assert {box.imap.security for box in settings.mailboxes.values()} == {"tls"}
    readme = (root / "README.md").read_text()
    for text in (example.read_text(), readme):
        # Including the commented-out examples, in either flow or block style.
        assert not re.search(r"imap:[^\n]*security: starttls", text)
        assert "ca_file" in text
    assert "SSL_CERT_FILE" not in readme
