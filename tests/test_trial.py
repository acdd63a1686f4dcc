"""Try before you trust, as an operator runs it (the CLI as a subprocess, real servers on
loopback): `check --connect` logs in everywhere and sends nothing; `sequencer test MAILBOX`
sends a message from the mailbox to itself, sees it arrive, deletes it, and says which step
failed when one does. The daemon never takes that message for anything.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ImapServer
from world import SALES, cli, imap_folder, reply, world, write_config

from sequencer.devservers import SmtpSink
from sequencer.store.models import InboundMessage

pytestmark = pytest.mark.e2e

SMTP_USER, SMTP_PASSWORD = "sales", "smtp-Secret-7"
AUTH = ", username: sales, password_env: TEST_SMTP_PASSWORD"


@pytest.fixture(autouse=True)
async def _loop_outlives_the_last_logout() -> AsyncIterator[None]:
    """A server closes the connection just after LOGOUT; the test's loop must live to see
    it, or the client's socket is reported unclosed."""
    yield
    await asyncio.sleep(0.01)


@pytest.fixture
def auth_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(credentials=(SMTP_USER, SMTP_PASSWORD)).start()
    try:
        yield sink
    finally:
        sink.stop()


def delivering(sink: SmtpSink, imap: ImapServer) -> None:
    """What the mail system does between SMTP and IMAP: what the sink accepts lands in the
    mailbox's INBOX (IMAP APPEND on pymap; a Maildir delivery on Dovecot)."""

    async def deliver(raw: bytes) -> None:
        if imap.kind == "dovecot":
            imap.server.deliver_file(raw)
        else:
            await imap.deliver(raw)

    sink.handler.on_message = deliver


def config(
    tmp_path: Path,
    sink: SmtpSink,
    imap: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    smtp_password: str = SMTP_PASSWORD,
    imap_password: str | None = None,
) -> Path:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", smtp_password)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", imap_password or imap.password)
    extra = AUTH if sink.credentials else ""
    return write_config(tmp_path, sink.port, imap, f"sqlite://{tmp_path}/state.db", extra)


def line(output: str, head: str) -> str:
    """The one line of `output` that starts with `head` (columns as printed)."""
    found = [x for x in output.splitlines() if x.startswith(head)]
    assert len(found) == 1, output
    return found[0]


# --- check --connect --------------------------------------------------------------------


def test_check_connect_logs_in_to_both_servers_and_sends_nothing(
    tmp_path: Path, auth_sink: SmtpSink, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = cli(config(tmp_path, auth_sink, imap, monkeypatch), "check", "--connect")
    assert res.returncode == 0, res.stdout + res.stderr
    smtp = line(res.stdout, "sales  smtp  ")
    assert f"127.0.0.1:{auth_sink.port} none  ok  " in smtp
    assert smtp.endswith(" s")
    assert f"127.0.0.1:{imap.port} none, folder INBOX  ok  " in line(res.stdout, "sales  imap  ")
    assert auth_sink.auth_attempts == 1  # it really logged in
    assert auth_sink.received == []


def test_check_connect_names_each_server_that_refuses_the_login(
    tmp_path: Path, auth_sink: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(
        tmp_path, auth_sink, pymap, monkeypatch, smtp_password="wrong", imap_password="wrong"
    )
    res = cli(cfg, "check", "--connect")
    assert res.returncode == 2
    smtp = line(res.stdout, "sales  smtp  ")
    assert " failed after " in smtp
    assert "login refused for user 'sales' (535" in smtp
    assert "check the username and the password source" in smtp
    imap = line(res.stdout, "sales  imap  ")
    assert " failed after " in imap
    assert "login refused for user 'sales'" in imap
    assert "2 of 2 login(s) failed" in res.stderr
    assert auth_sink.auth_attempts == 1  # one attempt: accounts lock after a few


# --- sequencer test -------------------------------------------------------------------------


async def test_sequencer_test_sends_to_itself_sees_it_arrive_and_deletes_it(
    tmp_path: Path, auth_sink: SmtpSink, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivering(auth_sink, imap)
    cfg = config(tmp_path, auth_sink, imap, monkeypatch)
    res = await asyncio.to_thread(cli, cfg, "test", "sales", "--timeout", "20s")
    assert res.returncode == 0, res.stdout + res.stderr
    steps = [x.split()[1] for x in res.stdout.splitlines() if x.startswith("sales  ")]
    assert steps == ["smtp", "imap", "sent", "arrived", "deleted"], res.stdout
    for step in steps:
        assert "  ok  " in line(res.stdout, f"sales  {step} ")
    assert "ok: mailbox 'sales' sends, and its folder INBOX sees it arrive" in res.stdout

    [got] = auth_sink.received
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert (got.mail_from, got.rcpt_tos) == (SALES, [SALES])
    assert msg["X-Sequencer-Test"]
    message_id = str(msg["Message-ID"])
    assert message_id in line(res.stdout, "sales  sent ")
    # Deleted: only that message, and it is gone from the folder.
    assert await imap_folder(imap, "INBOX", message_id) == 0


def test_sequencer_test_says_which_step_failed_when_the_mail_never_arrives(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SMTP server that accepts the message but never delivers it to the mailbox."""
    res = cli(config(tmp_path, smtp, pymap, monkeypatch), "test", "sales", "--timeout", "1s")
    assert res.returncode == 2
    assert "  ok  " in line(res.stdout, "sales  sent ")
    arrived = line(res.stdout, "sales  arrived ")
    assert " failed after " in arrived
    assert "not in INBOX after 1 s: the SMTP server accepted it, but it has not reached" in arrived
    assert "deleted" not in res.stdout
    assert "mailbox 'sales': the test failed" in res.stderr
    assert len(smtp.received) == 1


def test_sequencer_test_stops_at_a_refused_smtp_login_and_sends_nothing(
    tmp_path: Path, auth_sink: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, auth_sink, pymap, monkeypatch, smtp_password="wrong")
    res = cli(cfg, "test", "sales")
    assert res.returncode == 2
    smtp = line(res.stdout, "sales  smtp ")
    assert f"127.0.0.1:{auth_sink.port} none  failed after " in smtp
    assert "login refused for user 'sales' (535" in smtp
    assert [x for x in res.stdout.splitlines() if x.startswith("sales  ")] == [smtp]
    assert auth_sink.received == []


def test_sequencer_test_refuses_an_unknown_mailbox_or_timeout(
    tmp_path: Path, smtp: SmtpSink, pymap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, smtp, pymap, monkeypatch)
    res = cli(cfg, "test", "sale")
    assert res.returncode == 2
    assert "no mailbox 'sale' (did you mean 'sales'?); configured: sales" in res.stderr
    res = cli(cfg, "test", "sales", "--timeout", "soon")
    assert res.returncode == 2
    assert "--timeout soon:" in res.stderr
    assert smtp.received == []


# --- the daemon and the test message ------------------------------------------------------


async def test_the_daemon_never_takes_the_test_message_for_a_reply(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    sqlite_url: str,
    monkeypatch: Any,
) -> None:
    async with world(tmp_path, smtp, pymap, sqlite_url, monkeypatch) as w:
        await w.enroll("jo@acme.test")
        assert await w.tick() == 1
        delivering(smtp, pymap)
        cfg = tmp_path / "sequencer.yaml"
        res = await asyncio.to_thread(cli, cfg, "test", "sales", "--keep", "--timeout", "20s")
        assert res.returncode == 0, res.stdout + res.stderr
        await w.tick(timedelta(hours=1))  # the watcher reads the inbox: the test message

        assert await imap_folder(pymap, "INBOX") == 1  # kept, and seen by the daemon
        assert await InboundMessage.all().count() == 0
        enr = await w.enrollment("jo@acme.test")
        assert (enr.state, enr.steps_sent) == ("active", 1)

        # The header does not make a contact's reply invisible: anyone can write it.
        [first] = w.sent_to("jo@acme.test")
        await pymap.deliver(reply(first, "Yes, let's talk.", X_Sequencer_Test="anything"))
        await w.tick()
        assert (await w.enrollment("jo@acme.test")).state == "replied"
