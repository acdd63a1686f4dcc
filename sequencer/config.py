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
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sequencer import safetext
from sequencer.addresses import normalize_address
from sequencer.errors import ConfigError
from sequencer.pacing import Pace
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
        return self

    def password(self, where: str) -> str | None:
        """The secret, read now. `where` names the setting for the error message."""
        if self.password_env and self.password_file:
            raise ConfigError([f"{where}: set password_env or password_file, not both"])
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    [
                        f"{where}: environment variable {self.password_env} is not set "
                        f"(export it, or use password_file)"
                    ]
                )
            return value
        if self.password_file:
            path = _expand(self.password_file, f"{where}: password_file")
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    [f"{where}: cannot read password_file {path}: {exc.strerror}"]
                ) from None
        return None

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
    boxes = {
        name: box.model_copy(
            update={
                "name": name,
                "smtp": _anchor_files(box.smtp, base),
                "imap": _anchor_files(box.imap, base),
            }
        )
        for name, box in settings.mailboxes.items()
    }
    return settings.model_copy(
        update={
            "database": resolve_database(settings.database, base),
            "sequences": seq_dir,
            "mailboxes": boxes,
            "source": doc.path,
        }
    )
