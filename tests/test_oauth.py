"""OAuth2 (XOAUTH2) end to end: Dovecot with its oauth2 passdb and an aiosmtpd sink with an
XOAUTH2 mechanism, both checking tokens against a token server the test runs on loopback;
the daemon refreshes, rotates, and holds a mailbox whose grant was revoked."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import ImapServer, running_dovecot
from test_crash import Run
from tokenserver import CLIENT_ID, CLIENT_SECRET, Provider, TokenServer, xoauth2_user_token
from world import FOLLOW_UP, SALES, START, World, cli, reply

from sequencer import logs, oauth
from sequencer.clock import FrozenClock
from sequencer.config import load_settings
from sequencer.delivery import Action, judge
from sequencer.devservers import LOOPBACK, SinkHandler, SmtpSink
from sequencer.errors import InboxError
from sequencer.inbox import AuthFailed, open_imap
from sequencer.sender import Sender, SendFailed
from sequencer.sequences import load_all
from sequencer.states import Hold, Inbox
from sequencer.store import db

pytestmark = pytest.mark.e2e

OPS = "ops@vendor.test"
OPS_PASSWORD = "ops-Secret-9"


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider(token_server: TokenServer) -> Provider:
    return token_server.provider


@pytest.fixture
def provider_url(provider: Provider) -> str:
    return provider.url


@dataclass
class XOAuth2Handler(SinkHandler):
    """A sink whose XOAUTH2 mechanism asks the token server, answering a refused token as
    Gmail does: a 334 with a JSON error, then 535 once the client sends its empty line."""

    provider: Any = None

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        user, token = xoauth2_user_token(args[1]) if len(args) > 1 else ("", "")
        if user and self.provider.active(token) == user:
            return AuthResult(success=True, handled=False)
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False)


class OAuthSink(SmtpSink):
    """The SMTP sink, requiring a login: XOAUTH2 for `sales`, a password for `ops`."""

    def __init__(self, provider: Provider) -> None:
        super().__init__(credentials=("ops", OPS_PASSWORD))
        self.handler = XOAuth2Handler(provider=provider)
        self.controller.loop.close()  # the plain sink's, never started
        self.controller = Controller(
            self.handler,
            hostname=LOOPBACK,
            port=self.port,
            server_hostname="localhost",
            authenticator=self._auth,
            auth_required=True,
            auth_require_tls=False,
        )


@pytest.fixture
def oauth_smtp(provider: Provider) -> Iterator[OAuthSink]:
    sink = OAuthSink(provider)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def oauth_dovecot(provider: Provider) -> Iterator[ImapServer]:
    with running_dovecot(introspection_url=provider.url + "/introspect") as server:
        yield server


def write_config(
    root: Path, smtp_port: int, imap: ImapServer, provider_url: str, *, ops: bool = False
) -> Path:
    (root / "sequences").mkdir(exist_ok=True)
    (root / "sequences" / "follow-up.yaml").write_text(FOLLOW_UP)
    if ops:
        ops_sequence = FOLLOW_UP.replace("mailbox: sales", "mailbox: ops")
        (root / "sequences" / "ops-follow-up.yaml").write_text(ops_sequence)
    other = f"""
  ops:
    address: {OPS}
    pace: {{daily_limit: 50, spacing: 0s}}
    smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, username: ops,
           password_env: TEST_OPS_PASSWORD}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, username: {imap.user},
           password_env: TEST_IMAP_PASSWORD}}"""
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: sqlite://state.db
sequences: ./sequences
mailboxes:
  sales:
    address: {SALES}
    pace: {{daily_limit: 50, spacing: 0s}}
    smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, auth: oauth2, username: sales}}
    imap: {{host: 127.0.0.1, port: {imap.port}, security: none, auth: oauth2, username: sales}}
    oauth2:
      provider: custom
      token_url: {provider_url}/token
      device_code_url: {provider_url}/device
      authorize_url: {provider_url}/authorize
      scopes: [mail]
      client_id: {CLIENT_ID}
      client_secret_env: TEST_OAUTH_SECRET
      refresh_token_file: ./sales.token
{other if ops else ""}
"""
    )
    return cfg


@dataclass
class Setup:
    root: Path
    cfg: Path
    provider: Provider
    smtp: OAuthSink
    imap: ImapServer
    log: io.StringIO

    @property
    def token_file(self) -> Path:
        return self.root / "sales.token"

    @property
    def store(self) -> Path:
        return self.root / "oauth2-sales.token"  # the SQLite database's folder

    @asynccontextmanager
    async def world(self) -> AsyncIterator[World]:
        """The daemon on the world's frozen clock: token lifetimes follow it."""
        settings = load_settings(self.cfg)
        seqs = load_all(settings.sequences, settings.mailboxes)
        logs.configure(self.log, secrets=settings.secrets())
        async with db.connected(settings.database):
            w = World(settings, seqs, self.smtp, self.imap)
            await w.daemon.start()
            try:
                yield w
            finally:
                await w.daemon.close()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line]


@pytest.fixture
def setup(
    tmp_path: Path,
    provider: Provider,
    provider_url: str,
    oauth_smtp: OAuthSink,
    oauth_dovecot: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Setup]:
    monkeypatch.setenv("TEST_OAUTH_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", oauth_dovecot.password)
    monkeypatch.setenv("TEST_OPS_PASSWORD", OPS_PASSWORD)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = write_config(tmp_path, oauth_smtp.port, oauth_dovecot, provider_url, ops=True)
    (tmp_path / "sales.token").write_text(provider.issue_refresh() + "\n")
    try:
        yield Setup(tmp_path, cfg, provider, oauth_smtp, oauth_dovecot, io.StringIO())
    finally:
        structlog.reset_defaults()


def _tokens(provider: Provider) -> list[str]:
    return [*provider.access_tokens, *provider.refresh_tokens]


# --- the daemon ------------------------------------------------------------------------------


async def test_the_daemon_sends_and_watches_with_oauth2_on_both(setup: Setup) -> None:
    async with setup.world() as w:
        await w.enroll("jo@prospect.test")
        assert await w.tick() == 1
        [first] = w.sent_to("jo@prospect.test")
        await setup.imap.deliver(reply(first, "Thanks, let's talk Tuesday."))
        await w.tick()
        assert (await w.enrollment("jo@prospect.test")).state == "replied"
        assert w.daemon.watchers["sales"].state is Inbox.WATCHING
    # One refresh served the SMTP login, the inbox and the Sent folder alike.
    assert setup.provider.grants == ["refresh_token"]
    text = setup.log.getvalue()
    assert not [t for t in _tokens(setup.provider) if t in text]


async def test_an_access_token_is_refreshed_before_it_expires_by_the_injected_clock(
    setup: Setup,
) -> None:
    settings = load_settings(setup.cfg)
    clock = FrozenClock(START)
    tokens = oauth.TokenSource(settings.mailboxes["sales"], clock)
    first = await tokens.token()
    clock.advance(timedelta(minutes=50))
    assert await tokens.token() == first  # 10 minutes left: still good
    clock.advance(timedelta(minutes=6))  # 4 minutes left: inside the 5-minute margin
    second = await tokens.token()
    assert second != first
    assert setup.provider.active(second) == "sales"
    assert setup.provider.grants == ["refresh_token", "refresh_token"]
    assert setup.provider.refresh_scopes == ["mail", "mail"]  # as granted, each time


async def test_an_unreadable_client_secret_is_a_refused_login_that_says_which(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(setup.cfg)
    monkeypatch.delenv("TEST_OAUTH_SECRET")
    tokens = oauth.TokenSource(settings.mailboxes["sales"], FrozenClock(START))
    with pytest.raises(oauth.TokenRefused, match="environment variable TEST_OAUTH_SECRET"):
        await tokens.token()
    with pytest.raises(AuthFailed, match="TEST_OAUTH_SECRET is not set"):
        await open_imap(settings.mailboxes["sales"], "IMAP", tokens=tokens)
    assert setup.provider.grants == []  # nothing was sent without the secret


async def test_a_token_the_servers_refuse_is_refreshed_once_and_the_login_retried(
    setup: Setup,
) -> None:
    async with setup.world() as w:
        await w.enroll("jo@prospect.test")
        assert await w.tick() == 1
        # The provider ends every access token early (our clock still thinks it valid), and
        # both connections must log in again.
        setup.provider.expire_access()
        await w.daemon.senders["sales"].close()
        setup.imap.restart()
        await _until(lambda: w.daemon.watchers["sales"].state is Inbox.WATCHING, w)
        await w.enroll("al@prospect.test")
        assert await w.tick() == 1
        assert len(setup.smtp.received) == 2
        holds = await w.daemon.holds()
    assert holds["sales"] == (None, None)
    # One refresh for both logins: the second found the token already renewed.
    assert setup.provider.grants == ["refresh_token", "refresh_token"]


async def test_a_rotated_refresh_token_is_written_back_0600_and_used_after_a_restart(
    setup: Setup,
) -> None:
    setup.provider.rotate = True
    original = setup.token_file.read_text()
    async with setup.world() as w:
        await w.enroll("jo@prospect.test")
        assert await w.tick() == 1
    assert stat.S_IMODE(setup.store.stat().st_mode) == 0o600
    assert setup.token_file.read_text() == original  # the configured file is left alone
    saved = json.loads(setup.store.read_text())["refresh_token"]
    assert saved in setup.provider.refresh_tokens and saved not in original
    # The original token died with the rotation: a restart must use the written-back one.
    async with setup.world() as w:
        await w.enroll("al@prospect.test")
        assert await w.tick() == 1
        assert (await w.daemon.holds())["sales"] == (None, None)
    assert setup.provider.grants == ["refresh_token", "refresh_token"]
    assert not [t for t in _tokens(setup.provider) if t in setup.log.getvalue()]


async def test_a_new_grant_in_the_configured_file_wins_over_an_older_rotated_one(
    setup: Setup,
) -> None:
    setup.provider.rotate = True
    async with setup.world() as w:
        await w.enroll("jo@prospect.test")
        assert await w.tick() == 1
    setup.provider.revoke_all()
    setup.token_file.write_text(setup.provider.issue_refresh())  # `sequencer auth` again
    setup.provider.rotate = False
    async with setup.world() as w:
        await w.enroll("al@prospect.test")
        assert await w.tick() == 1


async def test_a_revoked_grant_holds_only_its_mailbox_says_so_once_and_status_shows_it(
    setup: Setup,
) -> None:
    setup.provider.revoke_all()
    async with setup.world() as w:
        await w.enroll("jo@prospect.test")  # from sales: held
        await w.enroll("al@prospect.test", sequence="ops-follow-up")
        for _ in range(4):
            await _tick(w)
        assert w.sent_to("jo@prospect.test") == []
        assert len(w.sent_to("al@prospect.test")) == 1  # the other mailbox goes on
        hold, detail = (await w.daemon.holds())["sales"]
        assert hold is Hold.OAUTH_REVOKED
        assert detail is not None and "sequencer auth sales" in detail
        res = await _cli(setup.cfg, "status", "--mailboxes", "--json")
        assert res.returncode == 0, res.stderr
        rows = {r["mailbox"]: r for r in json.loads(res.stdout)}
        assert rows["sales"]["held_reason"] == "oauth_revoked"
        assert "sequencer auth sales" in rows["sales"]["last_error"]
        assert rows["ops"]["held_reason"] != "oauth_revoked"
        res = await _cli(setup.cfg, "status", "--mailboxes")
        assert "sequencer auth MAILBOX" in res.stdout
        held = [
            line
            for line in setup.lines()
            if line.get("hold") == "oauth_revoked" and line["event"] == "mailbox.held"
        ]
        assert len(held) == 1, held
        grants = len(setup.provider.grants)
        # Running `sequencer auth` writes a new refresh token: the daemon takes it and sends.
        setup.token_file.write_text(setup.provider.issue_refresh())
        await _until(lambda: w.daemon.watchers["sales"].state is Inbox.WATCHING, w)
        assert await _tick(w) == 1
        assert len(w.sent_to("jo@prospect.test")) == 1
        assert len(setup.provider.grants) == grants + 1
    assert not [t for t in _tokens(setup.provider) if t in setup.log.getvalue()]


async def test_an_unreachable_token_endpoint_sends_nothing_from_that_mailbox_until_it_is_back(
    setup: Setup, token_server: TokenServer
) -> None:
    """The fault injected into the real server: the token endpoint goes away before the
    daemon starts. Without a token the mailbox cannot log in: nothing goes from it (its inbox
    is not watched, so a reply could be missed), the other mailbox goes on, nothing crashes;
    once the endpoint is back, the contact gets the step exactly once."""
    token_server.stop()
    async with setup.world() as w:
        await w.enroll("jo@prospect.test")
        await w.enroll("al@prospect.test", sequence="ops-follow-up")
        for _ in range(3):
            await _tick(w)
        assert w.sent_to("jo@prospect.test") == []
        assert len(w.sent_to("al@prospect.test")) == 1
        hold, _ = (await w.daemon.holds())["sales"]
        assert hold is not None
        back = TokenServer(setup.provider, port=token_server.port).start()
        try:
            await _until(lambda: w.daemon.watchers["sales"].state is Inbox.WATCHING, w)
            for _ in range(3):
                await _tick(w)
            assert len(w.sent_to("jo@prospect.test")) == 1
            assert len(w.sent_to("al@prospect.test")) == 1
        finally:
            back.stop()
    assert not [t for t in _tokens(setup.provider) if t in setup.log.getvalue()]


async def test_servers_without_xoauth2_are_refused_saying_what_they_offer(
    tmp_path: Path,
    provider: Provider,
    smtp: SmtpSink,
    dovecot: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """auth: oauth2 pointed at servers that take passwords only: a refused login (the mailbox
    is held, nothing retried in a loop) that says so, not a connection failure."""
    monkeypatch.setenv("TEST_OAUTH_SECRET", CLIENT_SECRET)
    cfg = write_config(tmp_path, smtp.port, dovecot, provider.url)
    (tmp_path / "sales.token").write_text(provider.issue_refresh())
    box = load_settings(cfg).mailboxes["sales"]
    tokens = oauth.TokenSource(box, FrozenClock(START))
    with pytest.raises(AuthFailed, match=r"does not offer XOAUTH2 \(it offers AUTH=LOGIN"):
        await open_imap(box, "IMAP", tokens=tokens)
    with pytest.raises(SendFailed, match="does not offer XOAUTH2") as info:
        await Sender(box, tokens).login()
    assert judge(info.value.failure) is Action.AUTH_FAILED


def test_the_running_daemon_holds_a_revoked_mailbox_once_and_resumes_after_auth(
    setup: Setup,
) -> None:
    """`sequencer run` as systemd runs it: the watcher's own loop, the real clock, its log."""
    setup.provider.revoke_all()
    env = {"TEST_OAUTH_SECRET": CLIENT_SECRET, "TEST_OPS_PASSWORD": OPS_PASSWORD}
    env["TEST_IMAP_PASSWORD"] = setup.imap.password
    for seq, address in (("follow-up", "jo@prospect.test"), ("ops-follow-up", "al@prospect.test")):
        res = cli(setup.cfg, "enroll", seq, address, "--var", "first_name=Jo")
        assert res.returncode == 0, res.stderr
    daemon = Run(setup.cfg, env)
    try:
        daemon.wait_for("mailbox.held", mailbox="sales", hold="oauth_revoked")
        _wait_until(lambda: len(setup.smtp.received) == 1)  # ops goes on meanwhile
        assert setup.smtp.received[0].rcpt_tos == ["al@prospect.test"]
        # `sequencer auth sales` has run: a new refresh token in the configured file.
        setup.token_file.write_text(setup.provider.issue_refresh())
        daemon.wait_for("mailbox.released", mailbox="sales", timeout=30)
        _wait_until(lambda: len(setup.smtp.received) == 2)
        assert setup.smtp.received[1].rcpt_tos == ["jo@prospect.test"]
    finally:
        daemon.stop()
    held = [e for e in daemon.events("mailbox.held") if e["mailbox"] == "sales"]
    assert len(held) == 1 and "run `sequencer auth sales`" in held[0]["detail"]
    output = json.dumps([line for _, line in daemon.lines])
    output += (setup.root / "stderr.log").read_text()
    assert not [t for t in _tokens(setup.provider) if t in output]


def _wait_until(ok: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


async def _look(w: World) -> None:
    """What the watchers do in the background: connect where needed and catch up."""
    for watcher in w.daemon.watchers.values():
        with contextlib.suppress(InboxError):  # a held mailbox's watcher cannot log in
            await watcher.open()


async def _tick(w: World) -> int:
    w.clock.advance(timedelta(minutes=1))
    await _look(w)
    return await w.daemon.run_once()


async def _until(ok: Any, w: World, tries: int = 100) -> None:
    for _ in range(tries):
        if ok():
            return
        await _look(w)
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def _cli(cfg: Path, *args: str) -> Any:
    return await asyncio.to_thread(cli, cfg, *args)
