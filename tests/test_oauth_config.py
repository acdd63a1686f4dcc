"""The `oauth2:` block and `auth:` keys: what loads, where its files are, and each mistake
refused with its line and what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from sequencer.config import load_settings
from sequencer.errors import ConfigError
from sequencer.holds import ADVICE, SHORT, mailbox_view
from sequencer.states import Hold, Inbox

SMTP = "{host: smtp.office365.com, port: 587, security: starttls, auth: oauth2}"
IMAP = "{host: outlook.office365.com, port: 993, security: tls, username: sam@vendor.test, auth: oauth2}"  # noqa: E501


def config(tmp_path: Path, oauth2: str, smtp: str = SMTP, imap: str = IMAP, db: str = "") -> Path:
    path = tmp_path / "sequencer.yaml"
    path.write_text(
        f"""{db}mailboxes:
  sales:
    address: sam@vendor.test
    smtp: {smtp}
    imap: {imap}
{oauth2}"""
    )
    return path


def problem(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    [one] = info.value.problems
    return one


MICROSOFT = """    oauth2:
      provider: microsoft
      client_id: 00001111-aaaa-2222-bbbb-3333cccc4444
      refresh_token_file: secrets/sales.token
"""


def test_a_microsoft_mailbox_loads_with_its_presets_and_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    box = load_settings(config(tmp_path, MICROSOFT, db="database: sqlite://db/seq.db\n"))
    sales = box.mailboxes["sales"]
    assert sales.smtp.auth == sales.imap.auth == "oauth2"
    assert sales.oauth2 is not None
    ends = sales.oauth2.endpoints()
    assert ends.token_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert ends.device_code_url is not None and ends.device_code_url.endswith("/devicecode")
    assert "https://outlook.office.com/SMTP.Send" in ends.scopes
    assert "offline_access" in ends.scopes
    # Relative to the config's folder; a rotated token goes beside the SQLite database.
    assert sales.oauth2.refresh_token_file == str(tmp_path / "secrets/sales.token")
    assert sales.oauth2.token_store == str(tmp_path / "db" / "oauth2-sales.token")


def test_the_state_directory_systemd_gives_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/sequencer:/var/lib/other")
    sales = load_settings(config(tmp_path, MICROSOFT)).mailboxes["sales"]
    assert sales.oauth2 is not None
    assert sales.oauth2.token_store == "/var/lib/sequencer/oauth2-sales.token"


def test_a_tenant_fills_the_microsoft_endpoints(tmp_path: Path) -> None:
    block = MICROSOFT + "      tenant: contoso.onmicrosoft.com\n"
    sales = load_settings(config(tmp_path, block)).mailboxes["sales"]
    assert sales.oauth2 is not None
    assert "/contoso.onmicrosoft.com/oauth2/v2.0/authorize" in str(
        sales.oauth2.endpoints().authorize_url
    )


def test_google_has_no_device_flow_and_asks_for_offline_access(tmp_path: Path) -> None:
    block = MICROSOFT.replace("microsoft", "google")
    sales = load_settings(config(tmp_path, block)).mailboxes["sales"]
    assert sales.oauth2 is not None
    ends = sales.oauth2.endpoints()
    assert ends.device_code_url is None
    assert ends.scopes == ("https://mail.google.com/",)
    assert ("access_type", "offline") in ends.authorize_params
    assert not ends.refresh_with_scope  # Microsoft's preset sends the scopes again


def test_auth_oauth2_without_a_block_names_what_to_add(tmp_path: Path) -> None:
    text = problem(config(tmp_path, ""))
    assert "sequencer.yaml:2: mailboxes.sales:" in text
    assert "smtp.auth and imap.auth are oauth2" in text
    assert "add one, e.g. oauth2: {provider: google" in text


def test_an_unused_block_is_refused(tmp_path: Path) -> None:
    plain = "{host: h.test, port: 993, security: tls, username: u, password_env: P}"
    text = problem(config(tmp_path, MICROSOFT, smtp=plain, imap=plain))
    assert "the oauth2: block is unused: add auth: oauth2" in text


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("      tenant: contoso\n", "tenant is for provider: microsoft only"),
        ("      token_url: http://login.example.test/token\n", "must be an https:// URL"),
        ("      client_secret_env: A\n      client_secret_file: b\n", "not both"),
        ("      scopes: []\n", "scopes must be a list"),
    ],
)
def test_oauth2_mistakes_are_refused_with_their_line(tmp_path: Path, extra: str, says: str) -> None:
    block = MICROSOFT if "tenant" not in extra else MICROSOFT.replace("microsoft", "google")
    text = problem(config(tmp_path, block + extra))
    assert says in text
    assert "sequencer.yaml:" in text


def test_a_custom_provider_needs_its_token_url_and_scopes(tmp_path: Path) -> None:
    text = problem(config(tmp_path, MICROSOFT.replace("microsoft", "custom")))
    assert "provider: custom needs token_url" in text


def test_a_password_next_to_oauth2_is_refused(tmp_path: Path) -> None:
    smtp = SMTP.replace("auth: oauth2", "auth: oauth2, password_env: SMTP_PASSWORD")
    text = problem(config(tmp_path, MICROSOFT, smtp=smtp))
    assert "auth: oauth2 logs in with a token, not a password" in text


def test_a_revoked_grant_recorded_by_the_daemon_reads_back_as_its_hold() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, tzinfo=UTC)
    error = "SMTP h:587 (mailbox 'sales'): oauth_revoked: mailbox 'sales': ... run `sequencer auth"
    view = mailbox_view(
        "sales",
        inbox=Inbox.AUTH_FAILED,
        inbox_since=now,
        caught_up_at=None,
        inbox_error="IMAP login refused",
        smtp_failed_since=now,
        smtp_error=error,
        paused_until=None,
        pause_reason=None,
        keepalive=120,
        now=now,
    )
    assert view.hold is Hold.OAUTH_REVOKED
    assert "sequencer auth MAILBOX" in ADVICE[Hold.OAUTH_REVOKED]
    assert Hold.OAUTH_REVOKED in SHORT


def test_a_refreshed_token_takes_the_expired_ones_place_in_the_redactor() -> None:
    from sequencer.logs import Redactor

    redactor = Redactor(["pw-1"])
    redactor.add("at-1")
    redactor.add("at-2", replaces="at-1")  # an hourly refresh: the list does not grow
    assert sorted(redactor.secrets) == ["at-2", "pw-1"]
    assert redactor.scrub("pw-1 at-2") == "[redacted] [redacted]"
