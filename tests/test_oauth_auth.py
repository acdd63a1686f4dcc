"""`sequencer auth MAILBOX` against the loopback token server: the device-code flow and the
browser redirect as a person runs them (the CLI as a subprocess), and each way a sign-in
ends without a token."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenserver import CLIENT_ID, CLIENT_SECRET, Provider, TokenServer

from sequencer import authflow
from sequencer.config import load_settings

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider() -> Iterator[Provider]:
    server = TokenServer().start()
    try:
        yield server.provider
    finally:
        server.stop()


def write_config(root: Path, url: str, *, device: bool = True, token_file: bool = True) -> Path:
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: sqlite://state.db
mailboxes:
  sales:
    address: sales@vendor.test
    smtp: {{host: 127.0.0.1, port: 2525, security: none, auth: oauth2}}
    imap: {{host: 127.0.0.1, port: 1143, security: none, username: sales, auth: oauth2}}
    oauth2:
      provider: custom
      token_url: {url}/token
{f"      device_code_url: {url}/device" if device else ""}
      authorize_url: {url}/authorize
      scopes: [mail]
      client_id: {CLIENT_ID}
      client_secret_env: TEST_OAUTH_SECRET
{"      refresh_token_file: secrets/sales.token" if token_file else ""}
  ops:
    address: ops@vendor.test
    smtp: {{host: 127.0.0.1, port: 2525, security: none}}
    imap: {{host: 127.0.0.1, port: 1143, security: none, username: ops, password_env: X}}
"""
    )
    return cfg


def start(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sequencer", "auth", *args, "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TEST_OAUTH_SECRET": CLIENT_SECRET},
    )


def wait_until(ok: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ok():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def assert_saved(path: Path, provider: Provider) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert token in provider.refresh_tokens


def test_device_flow_prints_the_code_waits_for_the_person_and_saves_the_token(
    tmp_path: Path, provider: Provider
) -> None:
    cfg = write_config(tmp_path, provider.url)
    proc = start(cfg, "sales")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert f"open {provider.url}/device-login" in line
    code = re.search(r"enter the code (\w+)", line)
    assert code is not None, line
    # The person is still signing in when the first poll comes: authorization_pending.
    wait_until(lambda: "urn:ietf:params:oauth:grant-type:device_code" in provider.grants)
    provider.approve_device(code.group(1))
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    path = tmp_path / "secrets" / "sales.token"
    assert f"saved to {path} (mode 0600)" in stdout
    assert_saved(path, provider)
    assert path.read_text().strip() not in stdout + line + stderr


def test_browser_flow_listens_on_loopback_checks_state_and_saves_the_token(
    tmp_path: Path, provider: Provider
) -> None:
    cfg = write_config(tmp_path, provider.url, device=False, token_file=False)
    proc = start(cfg, "sales")
    assert proc.stdout is not None
    url = ""
    while not url.startswith("http"):
        url = proc.stdout.readline().strip()
        assert url or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    assert "code_challenge_method=S256" in url and "state=" in url
    # A request without our state (another tab, a scanner) is turned away; the flow waits.
    port = re.search(r"redirect_uri=http%3A%2F%2F127.0.0.1%3A(\d+)", url)
    assert port is not None, url
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/?code=x&state=forged") as r:
        assert b"did not work" in r.read()
    assert proc.poll() is None
    # The person approves: the provider redirects the browser back to the listener.
    with urllib.request.urlopen(url) as page:  # noqa: S310 - the test's own loopback server
        assert b"Signed in" in page.read()
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    # Without refresh_token_file: the state directory (the SQLite database's folder).
    store = tmp_path / "oauth2-sales.token"
    assert f"saved to {store}" in stdout
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    settings = load_settings(cfg)
    from sequencer.oauth import current_refresh_token

    sales = settings.mailboxes["sales"].oauth2
    assert sales is not None
    token = current_refresh_token(sales, "test")
    assert token in provider.refresh_tokens


async def test_device_flow_slows_down_when_asked_and_gives_up_when_declined(
    tmp_path: Path, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OAUTH_SECRET", CLIENT_SECRET)
    box = load_settings(write_config(tmp_path, provider.url)).mailboxes["sales"]
    waits: list[float] = []
    said: list[str] = []

    async def sleep(seconds: float) -> None:  # no real waiting; the person acts meanwhile
        waits.append(seconds)
        if len(waits) == 2:
            provider.slow_down = True
        if len(waits) == 4:
            code = re.search(r"enter the code (\w+)", said[0])
            assert code is not None
            provider.approve_device(code.group(1))

    done = await authflow.sign_in(box, say=said.append, sleep=sleep)
    assert done.flow == "device"
    assert waits == [1, 1, 6, 6]  # slow_down: 5 seconds more from then on
    assert_saved(done.path, provider)

    waits.clear()
    said.clear()

    async def decline(seconds: float) -> None:
        waits.append(seconds)
        for entry in provider.device_codes.values():
            entry["denied"] = True

    with pytest.raises(authflow.AuthError, match="sign-in was declined"):
        await authflow.sign_in(box, say=said.append, sleep=decline)


@pytest.mark.parametrize(
    ("mailbox", "says"),
    [("nosuch", "no mailbox 'nosuch' (mailboxes: ops, sales)"), ("ops", "does not use OAuth2")],
)
def test_auth_refuses_a_mailbox_it_cannot_sign_in(
    tmp_path: Path, provider: Provider, mailbox: str, says: str
) -> None:
    proc = start(write_config(tmp_path, provider.url), mailbox)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert says in stderr


def test_auth_refuses_before_sign_in_when_it_cannot_write_the_token(
    tmp_path: Path, provider: Provider
) -> None:
    cfg = write_config(tmp_path, provider.url)
    (tmp_path / "secrets").write_text("a file where the token's folder should be")
    proc = start(cfg, "sales")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "cannot write the refresh token to" in stderr and "sudo -u sequencer" in stderr
    assert provider.device_codes == {}  # nobody was asked to sign in


def test_check_strict_fails_on_a_mailbox_nobody_signed_in_yet(
    tmp_path: Path, provider: Provider
) -> None:
    cfg = write_config(tmp_path, provider.url)
    (tmp_path / "sequences").mkdir()
    env = {**os.environ, "TEST_OAUTH_SECRET": CLIENT_SECRET, "X": "pw"}
    run = [sys.executable, "-m", "sequencer", "check", "--strict", "--config", str(cfg)]
    res = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2
    assert "no OAuth2 refresh token yet (run `sequencer auth sales`)" in res.stderr
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sales.token").write_text(provider.issue_refresh())
    res = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
