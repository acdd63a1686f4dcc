"""The settings file: found, parsed, validated once, then frozen.

Owns: where the config comes from (`--config`, `$SEQUENCER_CONFIG`, `./sequencer.yaml`), the
meaning of relative paths (relative to the file's folder, since systemd runs us from `/`), and
how secrets are read (from the environment or a file, never from the config itself).
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sequencer import safetext
from sequencer.addresses import normalize_address
from sequencer.errors import ConfigError
from sequencer.pacing import Pace
from sequencer.providers import Preset, preset
from sequencer.schedule import WindowModel, check_country, check_zone, parse_duration
from sequencer.yamlfile import YamlDoc, load, pydantic_problems, unsafe_text

DEFAULT_CONFIG = "sequencer.yaml"
DEFAULT_DATABASE = "sqlite://sequencer.db"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Server(_Frozen):
    host: str
    port: int = Field(ge=1, le=65535)
    security: Literal["none", "starttls", "tls"]
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # A private CA's certificate (PEM): only it is trusted for this server. The certificate is
    # always verified; there is no setting to turn that off.
    ca_file: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    # password: username + password_env/password_file; oauth2: XOAUTH2 with the mailbox's
    # `oauth2:` tokens (Google Workspace, Microsoft 365).
    auth: Literal["password", "oauth2"] = "password"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() for c in v):
            raise ValueError(f"'{v}' is not a host name")
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> Server:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both (remove one of them)")
        if self.ca_file is not None and self.security == "none":
            raise ValueError(
                "ca_file is used only with security: starttls or tls (remove it, or turn TLS on)"
            )
        if self.auth == "oauth2" and (self.password_env or self.password_file):
            raise ValueError(
                "auth: oauth2 logs in with a token, not a password: remove password_env/"
                "password_file (or set auth: password)"
            )
        return self

    def password(self, where: str) -> str | None:
        """The secret, read now. `where` names the setting for the error message."""
        if self.password_env and self.password_file:
            raise ConfigError([f"{where}: set password_env or password_file, not both"])
        return read_secret(where, "password", self.password_env, self.password_file)

    def ca_path(self, where: str) -> Path | None:
        """The ca_file's path, expanded now; None: the system's trusted CAs."""
        return None if self.ca_file is None else _expand(self.ca_file, f"{where}: ca_file")


def _expand(raw: str, what: str) -> Path:
    """`~` and `${VAR}` expanded, as a shell would (systemd's $CREDENTIALS_DIRECTORY)."""
    expanded = os.path.expanduser(os.path.expandvars(raw))
    if "$" in expanded:
        raise ConfigError(
            [
                f"{what} {raw}: an environment variable in it is not set "
                "(export it, or write the path out)"
            ]
        )
    return Path(expanded)


def read_secret(where: str, what: str, env: str | None, file: str | None) -> str | None:
    """A secret from `{what}_env` (an environment variable) or `{what}_file` (a file, a
    trailing newline ignored), read when it is needed; None when neither is set."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(
                [f"{where}: environment variable {env} is not set (export it, or use {what}_file)"]
            )
        return value
    if file:
        path = _expand(file, f"{where}: {what}_file")
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                [f"{where}: cannot read {what}_file {path}: {exc.strerror}"]
            ) from None
    return None


_S = TypeVar("_S", bound=Server)


class Imap(Server):
    folder: str = "INBOX"
    username: str  # IMAP always needs a login
    # IDLE is re-issued, or a NOOP sent, at least this often; the mailbox sends only while
    # its inbox caught up within twice this (a silently dead connection holds it).
    keepalive: str = "2m"
    # Where copies of sent mail go and uncertain sends are looked up; default: the folder
    # the server marks SPECIAL-USE \Sent.
    sent_folder: str | None = None

    @field_validator("keepalive", mode="before")
    @classmethod
    def _keepalive(cls, v: object) -> str:
        every = parse_duration(v if isinstance(v, (str, int)) else str(v), "keepalive")
        if not timedelta(seconds=1) <= every <= timedelta(minutes=25):
            raise ValueError(
                f'keepalive "{v}" must be between 1s and 25m (servers drop IDLE after 29 minutes)'
            )
        return str(v)

    @property
    def keepalive_seconds(self) -> float:
        return parse_duration(self.keepalive, "keepalive").total_seconds()


#: Hosts whose servers file what is submitted in the Sent folder themselves (Gmail, Microsoft
#: 365): `sent_copy: auto` appends nothing there, and finds uncertain sends in Sent instead.
SELF_FILING_HOSTS = ("gmail.com", "googlemail.com", "office365.com", "outlook.com")

UncertainPolicy = Literal["hold", "skip", "resend"]


class PaceModel(_Frozen):
    """`pace: {daily_limit: 50, spacing: 60s-180s}`: how fast one mailbox may send."""

    daily_limit: int = Field(default=50, ge=1, le=100_000)
    spacing: str = "60s-180s"

    @field_validator("spacing", mode="before")
    @classmethod
    def _spacing(cls, v: object) -> str:
        Pace.parse_spacing(str(v))
        return str(v)

    def pace(self) -> Pace:
        low, high = Pace.parse_spacing(self.spacing)
        return Pace(self.daily_limit, low, high)


def _https(url: str, key: str) -> str:
    """Tokens and client secrets travel only over TLS; plain http only to this machine (a
    local test server)."""
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and local):
        return url
    raise ValueError(f"{key} '{url}' must be an https:// URL (http:// only for 127.0.0.1)")


class OAuth2(_Frozen):
    """`oauth2:` on a mailbox: where its tokens come from (sequencer/oauth.py uses them).

    The refresh token is read from `refresh_token_file` (written by `sequencer auth`), or from
    the state directory where a rotated one was written back (see `token_store`)."""

    provider: Literal["google", "microsoft", "custom"]
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    tenant: str | None = None  # microsoft: organizations (default), common, or the tenant id
    token_url: str | None = None
    device_code_url: str | None = None
    authorize_url: str | None = None
    scopes: list[str] | None = None
    refresh_token_file: str | None = None
    # Where a refresh token the provider rotates is written back (set at load: the state
    # directory, see `state_directory`); not a key of the file.
    token_store: str | None = Field(default=None, exclude=True)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() for c in v):
            raise ValueError(f"client_id '{v}' is not a client id (copy it from the app's page)")
        return v

    @field_validator("token_url", "device_code_url", "authorize_url")
    @classmethod
    def _urls(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _https(v, str(info.field_name))

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not s.strip() or " " in s for s in v)):
            raise ValueError("scopes must be a list of scope names, one per item")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> OAuth2:
        if self.client_secret_env and self.client_secret_file:
            raise ValueError(
                "set client_secret_env or client_secret_file, not both (remove one of them)"
            )
        if self.tenant is not None and self.provider != "microsoft":
            raise ValueError(
                f"tenant is for provider: microsoft only (remove it for {self.provider})"
            )
        if self.provider == "custom" and not self.token_url:
            raise ValueError(
                "provider: custom needs token_url (the provider's token endpoint), and "
                "device_code_url or authorize_url for `sequencer auth`"
            )
        if self.provider == "custom" and not self.scopes:
            raise ValueError("provider: custom needs scopes (the scopes IMAP and SMTP need)")
        return self

    def endpoints(self) -> Preset:
        """The preset's endpoints and scopes, with what this block overrides."""
        base = preset(self.provider, self.tenant) or Preset("", None, None, ())
        return Preset(
            token_url=self.token_url or base.token_url,
            authorize_url=self.authorize_url or base.authorize_url,
            device_code_url=self.device_code_url or base.device_code_url,
            scopes=tuple(self.scopes) if self.scopes else base.scopes,
            authorize_params=base.authorize_params,
            refresh_with_scope=base.refresh_with_scope,
        )

    def client_secret(self, where: str) -> str | None:
        """None for a public client (device flow, PKCE): many installed apps have no secret."""
        return read_secret(where, "client_secret", self.client_secret_env, self.client_secret_file)


class Mailbox(_Frozen):
    name: str = ""
    address: str
    display_name: str = ""
    # The salesperson's zone: their "day" for the daily limit, and times shown to them.
    timezone: str | None = None
    pace: PaceModel = PaceModel()
    # mailto: every message carries List-Unsubscribe (see the README for the trade-off).
    list_unsubscribe: Literal["mailto", "off"] = "off"
    # A copy of each sent message in the Sent folder, so the salesperson's mail client shows
    # the whole thread: auto (off for Gmail and Microsoft 365, which file it themselves).
    sent_copy: Literal["auto", "append", "off"] = "auto"
    # What to do with a send whose outcome is unknown; default: the settings' top-level one.
    on_uncertain_send: UncertainPolicy | None = None
    smtp: Server
    imap: Imap
    oauth2: OAuth2 | None = None

    @model_validator(mode="after")
    def _oauth2_block(self) -> Mailbox:
        users = [k for k, srv in (("smtp", self.smtp), ("imap", self.imap)) if srv.auth == "oauth2"]
        if users and self.oauth2 is None:
            raise ValueError(
                f"{' and '.join(k + '.auth' for k in users)} "
                f"{'are' if len(users) > 1 else 'is'} oauth2, but the mailbox has no "
                "oauth2: block; add one, e.g. oauth2: {provider: google, client_id: ..., "
                "client_secret_env: ..., refresh_token_file: ...}"
            )
        if self.oauth2 is not None and not users:
            raise ValueError(
                "the oauth2: block is unused: add auth: oauth2 to smtp and imap (or remove it)"
            )
        return self

    @property
    def uses_oauth2(self) -> bool:
        return self.oauth2 is not None

    @property
    def appends_copies(self) -> bool:
        """True: we append each sent message to Sent. False: the server files submissions
        itself, so an uncertain send is settled by looking for it in Sent."""
        if self.sent_copy == "auto":
            host = self.smtp.host.lower().rstrip(".")
            return not any(host == h or host.endswith("." + h) for h in SELF_FILING_HOSTS)
        return self.sent_copy == "append"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            check_zone(v)
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return normalize_address(v)

    @field_validator("display_name")
    @classmethod
    def _display(cls, v: str) -> str:
        # The file's text is checked as it is read (unsafe_text); this guards a Settings
        # built in code. It goes into the From header: one line, characters UTF-8 encodes.
        if bad := safetext.problem(v):
            raise ValueError(f"display_name {bad}")
        return v

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


class Settings(_Frozen):
    database: str = DEFAULT_DATABASE
    sequences: Path = Path("sequences")
    # Defaults for contacts enrolled without their own timezone / country.
    timezone: str = "UTC"
    country: str | None = None
    # Default sending window for sequences that set none; None: any time is open.
    window: WindowModel | None = None
    # No two emails to one address closer than this, across sequences and mailboxes.
    min_gap: str = "2d"
    # A send whose outcome is unknown (connection lost after DATA, a crash mid-send) and that
    # the Sent folder cannot settle: hold the contact for a person (`sequencer resume`), skip
    # the step as not delivered, or resend it with the same Message-ID.
    on_uncertain_send: UncertainPolicy = "hold"
    # A human reply stops the replier's enrollments (`contact`), or every active enrollment at
    # the replier's company domain (`domain`; free-mail domains never count as a company).
    # One policy for the installation: it reaches across sequences.
    stop_on_reply: Literal["contact", "domain"] = "contact"
    # Where quarters begin when a reply names one ("try me in Q3"): "MM-DD".
    fiscal_year_start: str = "01-01"
    mailboxes: dict[str, Mailbox] = Field(default_factory=dict)
    source: Path | None = None  # the file these came from, for messages

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        check_zone(v)
        return v

    @field_validator("country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        return None if v is None else check_country(v)[0]

    @field_validator("min_gap", mode="before")
    @classmethod
    def _gap(cls, v: object) -> str:
        parse_duration(v if isinstance(v, (str, int)) else str(v), "min_gap")
        return str(v)

    @field_validator("fiscal_year_start", mode="before")
    @classmethod
    def _fiscal(cls, v: object) -> str:
        parse_month_day(v)
        return str(v)

    @property
    def fiscal_year(self) -> tuple[int, int]:
        """fiscal_year_start as (month, day), as classify() takes it."""
        return parse_month_day(self.fiscal_year_start)

    @property
    def gap(self) -> timedelta:
        return parse_duration(self.min_gap, "min_gap")

    def uncertain_policy(self, mailbox: str) -> UncertainPolicy:
        box = self.mailboxes.get(mailbox)
        return (box.on_uncertain_send if box else None) or self.on_uncertain_send

    def mailbox_zone(self, name: str) -> ZoneInfo:
        box = self.mailboxes.get(name)
        return ZoneInfo((box.timezone if box else None) or self.timezone)

    @field_validator("database")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("sqlite://", "postgres://", "postgresql://", "asyncpg://")):
            raise ValueError(
                f"'{v}' is not a supported database URL "
                "(use sqlite://sequencer.db or postgres://user@host:5432/dbname)"
            )
        return v

    def secrets(self) -> list[str]:
        """Every secret these settings can read right now, to scrub from logs and errors."""
        found = []
        for box in self.mailboxes.values():
            for server in (box.smtp, box.imap):
                try:
                    pw = server.password("")
                except ConfigError:
                    continue
                if pw:
                    found.append(pw)
            if box.oauth2 is not None:
                try:
                    secret = box.oauth2.client_secret("")
                except ConfigError:
                    continue
                if secret:
                    found.append(secret)
        return found


def parse_month_day(value: object) -> tuple[int, int]:
    """`"04-01"` as (4, 1); ValueError saying what is expected (a day every year has)."""
    text = str(value).strip() if isinstance(value, str) else None
    parts = text.split("-") if text else []
    if len(parts) == 2 and all(p.isdigit() and len(p) == 2 for p in parts):
        month, day = int(parts[0]), int(parts[1])
        try:
            date(2025, month, day)  # not a leap year: Feb 29 is not a day every year has
        except ValueError:
            pass
        else:
            return month, day
    raise ValueError(
        f'{value!r} is not a month and day: write it as "MM-DD" in quotes, e.g. "04-01" '
        "for a fiscal year starting on 1 April"
    )


def find_config(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("SEQUENCER_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG)


def resolve_database(url: str, base: Path) -> str:
    """Make a relative SQLite path relative to the config's folder (systemd runs from /)."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if path and path != ":memory:" and not path.startswith("/"):
            return "sqlite://" + str((base / path).resolve())
    return url


def _anchor_files(server: _S, base: Path) -> _S:
    """A relative password_file or ca_file is relative to the config's folder, like every
    other path."""
    update = {}
    for name in ("password_file", "ca_file"):
        raw = getattr(server, name)
        if raw is None:
            continue
        expanded = os.path.expanduser(os.path.expandvars(raw))
        if "$" not in expanded and not Path(expanded).is_absolute():
            update[name] = str(base / raw)  # else expanded (or reported) when it is read
    return server.model_copy(update=update) if update else server


def state_directory(database: str, base: Path) -> Path:
    """Where the daemon keeps what it writes besides the database (a refresh token the
    provider rotated): $STATE_DIRECTORY (systemd's StateDirectory=, the first of several),
    else the folder of the SQLite database, else the config file's folder. Credentials and
    /etc are read-only under systemd, so the config's own files are never written there."""
    env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if env:
        return Path(env)
    if database.startswith("sqlite://"):
        path = database.removeprefix("sqlite://")
        if path and path != ":memory:":
            return Path(path).parent
    return base


def _token_store(state: Path, mailbox: str) -> str:
    """The file a rotated refresh token of this mailbox is written back to."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in mailbox)
    return str(state / f"oauth2-{safe}.token")


def _anchor_path(raw: str | None, base: Path) -> str | None:
    """A relative path is relative to the config's folder, like every other path."""
    if raw is None:
        return None
    expanded = os.path.expanduser(os.path.expandvars(raw))
    if "$" in expanded or Path(expanded).is_absolute():
        return raw  # expanded (or reported) when it is read
    return str(base / raw)


def _anchor_oauth2(box: Mailbox, base: Path, state: Path, name: str) -> OAuth2 | None:
    if box.oauth2 is None:
        return None
    return box.oauth2.model_copy(
        update={
            "client_secret_file": _anchor_path(box.oauth2.client_secret_file, base),
            "refresh_token_file": _anchor_path(box.oauth2.refresh_token_file, base),
            "token_store": _token_store(state, name),
        }
    )


def load_settings(path: Path) -> Settings:
    doc = load(path, ConfigError)
    return settings_from(doc)


def settings_from(doc: YamlDoc) -> Settings:
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{doc.at(())}: the settings file must be a mapping of keys"])
    # No setting is more than one line of text; a display name, an address, a folder or a
    # host with a control character would break a header or a protocol line at send time.
    unsafe = unsafe_text(doc)
    if unsafe:
        raise ConfigError(unsafe)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(doc, exc, model=Settings)) from None
    base = doc.path.resolve().parent
    seq_dir = settings.sequences if settings.sequences.is_absolute() else base / settings.sequences
    database = resolve_database(settings.database, base)
    state = state_directory(database, base)
    boxes = {
        name: box.model_copy(
            update={
                "name": name,
                "smtp": _anchor_files(box.smtp, base),
                "imap": _anchor_files(box.imap, base),
                "oauth2": _anchor_oauth2(box, base, state, name),
            }
        )
        for name, box in settings.mailboxes.items()
    }
    return settings.model_copy(
        update={
            "database": database,
            "sequences": seq_dir,
            "mailboxes": boxes,
            "source": doc.path,
        }
    )
