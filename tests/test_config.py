"""The settings file: what loads, what paths mean, how secrets are read, what errors say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile import laughs, load_capped

from sequencer.config import (
    DEFAULT_CONFIG,
    Settings,
    find_config,
    load_settings,
    resolve_database,
)
from sequencer.errors import ConfigError

SMTP = (
    "{host: 127.0.0.1, port: 587, security: starttls, username: sales, password_env: SMTP_PASSWORD}"
)
IMAP = "{host: 127.0.0.1, port: 993, security: tls, username: sales, password_env: IMAP_PASSWORD}"
FULL = f"""\
database: sqlite://sequencer.db
sequences: ./sequences
timezone: Europe/London
mailboxes:
  sales:
    address: sales@vendor.test
    display_name: Sam Seller
    smtp: {SMTP}
    imap: {IMAP}
"""


def write(folder: Path, text: str, name: str = "sequencer.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def one_problem(path: Path) -> str:
    found = problems_of(path)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-Secret-1")
    monkeypatch.setenv("IMAP_PASSWORD", "imap-Secret-2")


# --- a full, valid file --------------------------------------------------------------------


def test_a_full_valid_config_loads(tmp_path: Path, secrets: None) -> None:
    path = write(tmp_path / "etc", FULL)
    s = load_settings(path)
    base = path.parent.resolve()
    assert s.source == path
    assert s.database == f"sqlite://{base / 'sequencer.db'}"
    assert s.sequences == base / "sequences"
    assert s.timezone == "Europe/London"
    box = s.mailboxes["sales"]
    assert box.name == "sales"
    assert box.address == "sales@vendor.test"
    assert box.domain == "vendor.test"
    assert box.display_name == "Sam Seller"
    assert (box.smtp.host, box.smtp.port, box.smtp.security) == ("127.0.0.1", 587, "starttls")
    assert (box.imap.host, box.imap.port, box.imap.security) == ("127.0.0.1", 993, "tls")
    assert box.imap.folder == "INBOX"
    assert box.smtp.timeout == 30.0
    assert box.smtp.password("x") == "smtp-Secret-1"
    assert box.imap.password("x") == "imap-Secret-2"
    assert sorted(s.secrets()) == ["imap-Secret-2", "smtp-Secret-1"]


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL))
    with pytest.raises(ValueError, match="frozen"):
        s.timezone = "UTC"  # type: ignore[misc]


def test_an_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")
    s = load_settings(path)
    assert s.database == f"sqlite://{tmp_path.resolve() / 'sequencer.db'}"
    assert s.sequences == tmp_path.resolve() / "sequences"
    assert s.timezone == "UTC"
    assert s.mailboxes == {}
    assert s.secrets() == []


def test_the_address_is_normalised(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL.replace("sales@vendor.test", "Sales@Vendor.TEST")))
    assert s.mailboxes["sales"].address == "sales@vendor.test"


def test_the_deploy_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "sequencer.yaml"
    s = load_settings(write(tmp_path, example.read_text(encoding="utf-8")))
    assert s.mailboxes
    # The template shows the etiquette settings a new user should start from.
    assert (s.timezone, s.country, s.min_gap) == ("Europe/London", "GB", "2d")
    assert s.window is not None and "09:00-11:30" in str(s.window.window())
    box = s.mailboxes["sales"]
    assert (box.pace.daily_limit, box.list_unsubscribe) == (50, "off")


# --- paths ---------------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")  # systemd runs us from /
    path = write(tmp_path / "conf", "database: sqlite://x.db\nsequences: ./seqs\n")
    s = load_settings(path)
    base = (tmp_path / "conf").resolve()
    assert s.database == f"sqlite://{base}/x.db"
    assert s.sequences == base / "seqs"
    assert s.sequences.is_absolute()


def test_relative_paths_with_a_relative_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "conf", "database: sqlite://data/x.db\nsequences: seqs\n")
    monkeypatch.chdir(tmp_path)
    s = load_settings(Path("conf/sequencer.yaml"))
    assert s.database == f"sqlite://{tmp_path.resolve()}/conf/data/x.db"
    assert s.sequences == tmp_path.resolve() / "conf" / "seqs"


def test_absolute_paths_stay(tmp_path: Path) -> None:
    path = write(tmp_path, "database: sqlite:///var/lib/s/x.db\nsequences: /etc/seqs\n")
    s = load_settings(path)
    assert s.database == "sqlite:///var/lib/s/x.db"
    assert s.sequences == Path("/etc/seqs")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://:memory:",
        "postgres://seq:pw@db.internal:5432/sequencer",
        "postgresql://seq@localhost/sequencer",
        "asyncpg://seq@localhost/sequencer",
    ],
)
def test_memory_and_server_databases_are_untouched(tmp_path: Path, url: str) -> None:
    assert load_settings(write(tmp_path, f'database: "{url}"\n')).database == url


def test_resolve_database() -> None:
    assert resolve_database("sqlite://a.db", Path("/srv")) == "sqlite:///srv/a.db"
    assert resolve_database("sqlite:///abs.db", Path("/srv")) == "sqlite:///abs.db"
    assert resolve_database("sqlite://:memory:", Path("/srv")) == "sqlite://:memory:"
    assert resolve_database("postgres://h/db", Path("/srv")) == "postgres://h/db"


def test_an_unsupported_database_url_says_what_to_use(tmp_path: Path) -> None:
    path = write(tmp_path, "timezone: UTC\ndatabase: mysql://x/y\n")
    msg = one_problem(path)
    assert msg.startswith(f"{path}:2: database: 'mysql://x/y' is not a supported database URL")
    assert "use sqlite://sequencer.db or postgres://" in msg


# --- errors with lines ---------------------------------------------------------------------


def test_an_unknown_top_level_key_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("timezone:", "time_zone:"))
    msg = one_problem(path)
    assert msg == f"{path}:3: time_zone: unknown key 'time_zone' (did you mean 'timezone'?)"


@pytest.mark.parametrize(
    ("typo", "line", "where", "meant"),
    [
        ("min_gap:", 1, "min_gapp", "min_gap"),  # top level
        ("display_name:", 7, "mailboxes.sales.displayname", "display_name"),  # a mailbox
        ("password_env: SMTP", 8, "mailboxes.sales.smtp.pasword_env", "password_env"),  # smtp
        ("daily_limit:", 11, "mailboxes.sales.pace.daly_limit", "daily_limit"),  # its pace
    ],
)
def test_a_misspelt_key_gets_the_closest_key_allowed_at_its_level(
    tmp_path: Path, typo: str, line: int, where: str, meant: str
) -> None:
    """A typo is answered with the key meant, from the keys valid where it stands (a mailbox's
    `daly_limit` is not offered top-level keys)."""
    text = "min_gap: 3d\n" + FULL.split("\n", 1)[1] + "    pace:\n      daily_limit: 20\n"
    wrong = where.rsplit(".", 1)[-1] + ":"
    text = text.replace(typo, wrong + typo.removeprefix(typo.split(":")[0] + ":"), 1)
    path = write(tmp_path, text)
    msg = one_problem(path)
    assert msg == f"{path}:{line}: {where}: unknown key '{wrong[:-1]}' (did you mean '{meant}'?)"


def test_a_key_like_no_other_is_still_named(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("display_name:", "zzz:"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:7: mailboxes.sales.zzz: unknown key 'zzz' (check its spelling")


def test_an_unknown_nested_key_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("display_name:", "displayname:"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:7: mailboxes.sales.displayname: unknown key 'displayname'")


def test_a_bad_security_value_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("security: starttls", "security: ssl"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:8: mailboxes.sales.smtp.security: ")
    assert "'none', 'starttls' or 'tls'" in msg


@pytest.mark.parametrize(
    ("port", "hint"),
    [
        ("0", "greater than or equal to 1"),
        ("65536", "less than or equal to 65535"),
        ("smtp", "valid integer"),
        ("5.5", "valid integer"),
    ],
)
def test_a_bad_port_is_refused_with_its_line(tmp_path: Path, port: str, hint: str) -> None:
    path = write(tmp_path, FULL.replace("port: 993", f"port: {port}"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:9: mailboxes.sales.imap.port: ")
    assert hint in msg


def test_an_unknown_timezone_says_to_use_an_iana_name(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("Europe/London", "London"))
    msg = one_problem(path)
    assert msg == (
        f"{path}:3: timezone: unknown time zone 'London' (use an IANA name such as Europe/London)"
    )


def test_a_bad_mailbox_address_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("address: sales@vendor.test", "address: sales"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:6: mailboxes.sales.address: 'sales' is not an e-mail address")


def test_a_host_with_spaces_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, FULL.replace("host: 127.0.0.1, port: 587", "host: smtp vendor, port: 587")
    )
    msg = one_problem(path)
    assert msg.startswith(f"{path}:8: mailboxes.sales.smtp.host: 'smtp vendor' is not a host name")


def test_imap_needs_a_username(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("security: tls, username: sales, ", "security: tls, "))
    msg = one_problem(path)
    assert msg == f"{path}:9: mailboxes.sales.imap.username: required key 'username' is missing"


def test_a_numeric_username_says_to_quote_it(tmp_path: Path) -> None:
    path = write(
        tmp_path, FULL.replace("security: tls, username: sales", "security: tls, username: 1234")
    )
    msg = one_problem(path)
    assert msg.startswith(f"{path}:9: mailboxes.sales.imap.username: ")
    assert 'put it in quotes to keep it as text, e.g. username: "1234"' in msg


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = FULL.replace("Europe/London", "Mars/Base").replace("security: starttls", "security: ssl")
    path = write(tmp_path, text + "colour: blue\n")
    found = problems_of(path)
    assert [p.split(": ")[0] for p in found] == [f"{path}:3", f"{path}:8", f"{path}:10"]


def test_malformed_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("    imap: {host", "    imap: {{host"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:")
    assert "not valid YAML" in msg


def test_a_config_that_is_a_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- database: x\n")
    assert one_problem(path) == f"{path}:1: the settings file must be a mapping of keys"


def test_a_missing_config_file_is_reported(tmp_path: Path) -> None:
    assert one_problem(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"


@pytest.mark.parametrize(
    ("escaped", "what"),
    [
        ("Sam\\nBcc: x", "contains a line break (U+000A, line feed); keep it on one line"),
        ("Sam\\u2028Seller", "contains a line break (U+2028); keep it on one line"),
        ("Sam\\x07Seller", "contains the control character U+0007; remove it"),
        ("Sam\\tSeller", "contains the control character U+0009, tab; remove it"),
        ("Sam\\e[31mSeller", "contains the control character U+001B, escape; remove it"),
        ("Sam\\x85Seller", "contains a line break (U+0085); keep it on one line"),
        ("Sam\\ud800Seller", "contains U+D800, a lone surrogate: not a character"),
    ],
)
def test_a_display_name_that_cannot_go_in_a_header_is_refused_with_its_line(
    tmp_path: Path, escaped: str, what: str
) -> None:
    """It goes into every From header: a send with it would fail, for ever for a surrogate."""
    path = write(tmp_path, FULL.replace("display_name: Sam Seller", f'display_name: "{escaped}"'))
    assert one_problem(path).startswith(f"{path}:7: mailboxes.sales.display_name: {what}")


@pytest.mark.parametrize(
    ("line", "setting"),
    [
        ('    address: "sales\\x00@vendor.test"', "mailboxes.sales.address"),
        ('    address: "sales@vendor.test\\udcff"', "mailboxes.sales.address"),
        ('timezone: "Europe/London\\x1b"', "timezone"),
        ('sequences: "./seq\\nuences"', "sequences"),
    ],
)
def test_any_setting_with_a_control_character_or_surrogate_is_refused(
    tmp_path: Path, line: str, setting: str
) -> None:
    key = line.strip().split(":")[0]
    text = "\n".join(line if x.strip().startswith(f"{key}:") else x for x in FULL.splitlines())
    path = write(tmp_path, text + "\n")
    found = one_problem(path)
    assert found.startswith(f"{path}:") and f": {setting}: contains " in found
    assert "\x00" not in found and "\x1b" not in found  # never echoed to the terminal


def test_an_imap_folder_with_a_line_break_is_refused(tmp_path: Path) -> None:
    """A folder name goes into an IMAP command line: a break would inject a command."""
    imap = IMAP.replace("username: sales", 'username: sales, folder: "INBOX\\r\\nA1 LOGOUT"')
    path = write(tmp_path, FULL.replace(IMAP, imap))
    assert one_problem(path).startswith(
        f"{path}:9: mailboxes.sales.imap.folder: contains a line break (U+000D, carriage return)"
    )


def test_a_key_with_a_control_character_is_refused_and_shown_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("  sales:", '  "sa\\x1bles":'))
    assert one_problem(path) == (
        f"{path}:5: mailboxes.sa\\x1bles: key contains the control character U+001B, escape; "
        "remove it"
    )


def test_non_ascii_display_names_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("Sam Seller", "Zoë Müller — Ventes"))
    assert load_settings(path).mailboxes["sales"].display_name == "Zoë Müller — Ventes"


def test_a_display_name_set_in_code_is_checked_too() -> None:
    from pydantic import ValidationError

    from sequencer.config import Mailbox

    server = {"host": "h", "port": 1, "security": "none"}
    with pytest.raises(ValidationError, match="lone surrogate"):
        Mailbox.model_validate(
            {
                "address": "a@b.test",
                "display_name": "x\udcff",
                "smtp": server,
                "imap": {**server, "username": "u"},
            }
        )


def test_yaml_1_2_off_no_stay_strings(tmp_path: Path) -> None:
    text = FULL.replace("display_name: Sam Seller", "display_name: off").replace(
        "security: tls, username: sales", "security: tls, username: no"
    )
    s = load_settings(write(tmp_path, text))
    assert s.mailboxes["sales"].display_name == "off"
    assert s.mailboxes["sales"].imap.username == "no"


def test_a_mailbox_called_off_stays_a_string(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL.replace("  sales:", "  off:")))
    assert list(s.mailboxes) == ["off"]
    assert s.mailboxes["off"].name == "off"


# --- secrets -------------------------------------------------------------------------------


def test_an_unset_password_env_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    s = load_settings(write(tmp_path, FULL))
    with pytest.raises(ConfigError) as info:
        s.mailboxes["sales"].smtp.password(f"{s.source}: mailboxes.sales.smtp")
    assert str(info.value) == (
        f"{s.source}: mailboxes.sales.smtp: environment variable SMTP_PASSWORD is not set "
        "(export it, or use password_file)"
    )


def test_an_empty_password_env_is_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "")
    s = load_settings(write(tmp_path, FULL))
    assert s.mailboxes["sales"].smtp.password("x") == ""


def test_no_password_configured_is_none(tmp_path: Path) -> None:
    text = FULL.replace(", username: sales, password_env: SMTP_PASSWORD}", "}")
    s = load_settings(write(tmp_path, text))
    assert s.mailboxes["sales"].smtp.username is None
    assert s.mailboxes["sales"].smtp.password("x") is None


def test_password_file_is_read_and_its_trailing_newline_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "smtp_password").write_text("s3cret with spaces \n", encoding="utf-8")
    (creds / "imap_password").write_text("imap-pw\r\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    text = FULL.replace(
        "password_env: SMTP_PASSWORD", 'password_file: "${CREDENTIALS_DIRECTORY}/smtp_password"'
    ).replace("password_env: IMAP_PASSWORD", "password_file: $CREDENTIALS_DIRECTORY/imap_password")
    s = load_settings(write(tmp_path / "etc", text))
    assert s.mailboxes["sales"].smtp.password("x") == "s3cret with spaces "
    assert s.mailboxes["sales"].imap.password("x") == "imap-pw"
    assert sorted(s.secrets()) == ["imap-pw", "s3cret with spaces "]


def test_a_relative_password_file_is_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secrets: None
) -> None:
    conf = tmp_path / "etc"
    (conf / "secrets").mkdir(parents=True)
    (conf / "secrets" / "smtp").write_text("from-file\n", encoding="utf-8")
    text = FULL.replace("password_env: SMTP_PASSWORD", "password_file: secrets/smtp")
    path = write(conf, text)
    monkeypatch.chdir("/")
    s = load_settings(path)
    assert s.mailboxes["sales"].smtp.password("x") == "from-file"


def test_an_unreadable_password_file_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = FULL.replace("password_env: SMTP_PASSWORD", f"password_file: {tmp_path}/missing")
    s = load_settings(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        s.mailboxes["sales"].smtp.password("cfg: mailboxes.sales.smtp")
    assert str(info.value) == (
        f"cfg: mailboxes.sales.smtp: cannot read password_file {tmp_path}/missing: "
        "No such file or directory"
    )


def test_a_password_file_with_an_unset_variable_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text = FULL.replace(
        "password_env: SMTP_PASSWORD", 'password_file: "${CREDENTIALS_DIRECTORY}/smtp"'
    )
    s = load_settings(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        s.mailboxes["sales"].smtp.password("cfg: mailboxes.sales.smtp")
    msg = str(info.value)
    assert msg.startswith("cfg: mailboxes.sales.smtp: password_file ${CREDENTIALS_DIRECTORY}/smtp")
    assert "is not set" in msg
    # set later (as systemd does for the service), the same settings work
    (tmp_path / "smtp").write_text("late\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert s.mailboxes["sales"].smtp.password("x") == "late"


def test_password_env_and_password_file_together_are_refused_with_the_line(
    tmp_path: Path,
) -> None:
    text = FULL.replace(
        "password_env: SMTP_PASSWORD", "password_env: SMTP_PASSWORD, password_file: /x"
    )
    path = write(tmp_path, text)
    msg = one_problem(path)
    assert msg == (
        f"{path}:8: mailboxes.sales.smtp: set password_env or password_file, not both "
        "(remove one of them)"
    )


def test_secrets_skips_what_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "only-this")
    monkeypatch.delenv("IMAP_PASSWORD", raising=False)
    s = load_settings(write(tmp_path, FULL))
    assert s.secrets() == ["only-this"]


def test_secrets_of_two_mailboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    second = (
        "  support:\n"
        "    address: help@vendor.test\n"
        "    smtp: {host: h, port: 25, security: none, password_env: SUPPORT_SMTP}\n"
        "    imap: {host: h, port: 993, security: tls, username: help,"
        " password_env: SUPPORT_IMAP}\n"
    )
    for name, value in {
        "SMTP_PASSWORD": "a",
        "IMAP_PASSWORD": "b",
        "SUPPORT_SMTP": "c",
        "SUPPORT_IMAP": "d",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings(write(tmp_path, FULL + second))
    assert sorted(s.secrets()) == ["a", "b", "c", "d"]
    assert s.mailboxes["support"].display_name == ""


def test_settings_can_be_built_directly() -> None:
    s = Settings()
    assert s.database == "sqlite://sequencer.db"
    assert s.secrets() == []


# --- find_config ---------------------------------------------------------------------------


def test_find_config_prefers_the_explicit_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_CONFIG", "/etc/sequencer/env.yaml")
    assert find_config(Path("/tmp/explicit.yaml")) == Path("/tmp/explicit.yaml")


def test_find_config_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_CONFIG", "/etc/sequencer/env.yaml")
    assert find_config(None) == Path("/etc/sequencer/env.yaml")


@pytest.mark.parametrize("env", [None, ""])
def test_find_config_then_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, env: str | None
) -> None:
    if env is None:
        monkeypatch.delenv("SEQUENCER_CONFIG", raising=False)
    else:
        monkeypatch.setenv("SEQUENCER_CONFIG", env)
    assert find_config(None) == Path(DEFAULT_CONFIG) == Path("sequencer.yaml")
    assert not find_config(None).is_absolute()
    assert "SEQUENCER_CONFIG" not in os.environ or os.environ["SEQUENCER_CONFIG"] == ""


def test_mailboxes_can_share_server_settings_with_merge_keys(tmp_path: Path, secrets: None) -> None:
    text = """\
mailboxes:
  sales:
    address: sales@vendor.test
    smtp: &smtp {host: mail.vendor.test, port: 587, security: starttls, password_env: SMTP_PASSWORD}
    imap: &imap {host: mail.vendor.test, port: 993, security: tls, username: sales}
  support:
    address: help@vendor.test
    smtp: *smtp
    imap:
      <<: *imap
      username: help
      sekurity: tls
"""
    path = write(tmp_path, text)
    assert one_problem(path).startswith(
        f"{path}:12: mailboxes.support.imap.sekurity: unknown key 'sekurity'"
    )
    s = load_settings(write(tmp_path, text.replace("      sekurity: tls\n", "")))
    assert s.mailboxes["support"].imap.username == "help"
    assert s.mailboxes["support"].imap.host == "mail.vendor.test"
    assert s.mailboxes["support"].smtp.password("x") == "smtp-Secret-1"


# --- hostile files -------------------------------------------------------------------------


def test_a_billion_laughs_settings_file_is_refused_fast_in_little_memory(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + laughs())
    out = load_capped(
        "from pathlib import Path\nfrom sequencer.config import load_settings\n"
        "from sequencer.errors import ConfigError\n",
        f"""
        try:
            load_settings(Path({str(path)!r}))
        except ConfigError as exc:
            result = exc.problems
        """,
    )
    assert out["result"] == [
        f"{path}:15: the document expands to more than 100000 values through its aliases "
        "(here *lol4); remove the aliases (a settings or sequence file holds a few hundred)"
    ]
    assert out["seconds"] < 0.5, out
    assert out["peak_mb"] < 200, out


def test_a_python_object_tag_is_refused_with_its_line(tmp_path: Path) -> None:
    text = FULL.replace(
        "timezone: Europe/London", 'timezone: !!python/object/apply:os.system ["touch pwned"]'
    )
    path = write(tmp_path, text)
    assert one_problem(path) == (
        f"{path}:3: the tag !!python/object/apply:os.system is not allowed (only plain values, "
        "lists and mappings; remove the tag, or put the value in quotes to keep it as text)"
    )
    assert not (tmp_path / "pwned").exists()


def test_deeply_nested_settings_are_refused_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + "extra:\n" + "".join(f"  {'  ' * i}k{i}:\n" for i in range(200)))
    assert one_problem(path) == f"{path}:60: nested more than 50 levels deep; flatten the structure"
