"""`sequencer init`: a settings file and an example sequence that work from the current folder.

The server example (deploy/sequencer.yaml) points at /etc and /var/lib, which is right under
systemd and wrong for a first try from a clone; this writes the local variant instead, with the
servers guessed from the address (the big providers' are known) and the machine's time zone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sequencer.addresses import normalize_address
from sequencer.errors import ConfigError

#: Hosts of the providers most salespeople use: (smtp, imap). Anything else is guessed as
#: smtp.<domain> / imap.<domain>, and `init` says it was a guess.
KNOWN_HOSTS = {
    "gmail.com": ("smtp.gmail.com", "imap.gmail.com"),
    "googlemail.com": ("smtp.gmail.com", "imap.gmail.com"),
    "outlook.com": ("smtp.office365.com", "outlook.office365.com"),
    "hotmail.com": ("smtp.office365.com", "outlook.office365.com"),
    "live.com": ("smtp.office365.com", "outlook.office365.com"),
}


_UTC_ALIASES = {"Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "UCT", "Universal", "Zulu"}


@dataclass(frozen=True)
class Starter:
    text: str
    guessed_hosts: bool


def local_zone(
    environ: dict[str, str] | None = None, localtime: Path = Path("/etc/localtime")
) -> str:
    """This machine's IANA zone name ($TZ, else where /etc/localtime points), else UTC."""
    env = os.environ if environ is None else environ
    candidates = [env.get("TZ", "").lstrip(":")]
    try:
        target = os.readlink(localtime)
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name and not name.startswith("/"):
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
            return "UTC" if name in _UTC_ALIASES else name
    return "UTC"


def render(address: str | None, name: str | None, zone: str) -> Starter:
    """The settings text for one mailbox. Without an address, placeholders to edit."""
    template = files("sequencer").joinpath("starter_data/sequencer.yaml").read_text("utf-8")
    if address is None:
        address, smtp, imap, guessed = (
            "you@example.com",
            "smtp.example.com",
            "imap.example.com",
            True,
        )
    else:
        try:
            address = normalize_address(address)
        except ValueError as exc:
            raise ConfigError([f"--address {address!r}: {exc}"]) from None
        domain = address.rsplit("@", 1)[1]
        smtp, imap = KNOWN_HOSTS.get(domain, (f"smtp.{domain}", f"imap.{domain}"))
        guessed = domain not in KNOWN_HOSTS
    display = name or address.split("@", 1)[0].replace(".", " ").title()
    for key, value in {
        "__TIMEZONE__": zone,
        "__ADDRESS__": address,
        "__NAME__": _yaml_string(display),
        "__SMTP_HOST__": smtp,
        "__IMAP_HOST__": imap,
    }.items():
        template = template.replace(key, value)
    return Starter(template, guessed)


def _yaml_string(text: str) -> str:
    """A display name as a YAML string whatever it holds (a colon, a quote, a hash)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write(folder: Path, starter: Starter, *, force: bool) -> list[Path]:
    """Write sequencer.yaml (and an example sequence when there is no sequences folder).
    Refuses to overwrite a settings file unless `force`; returns what it wrote."""
    config = folder / "sequencer.yaml"
    if config.exists() and not force:
        raise ConfigError(
            [f"{config} already exists: edit it, or run `sequencer init --force` to replace it"]
        )
    sequences = folder / "sequences"
    example = sequences / "after-meeting.yaml"
    text = files("sequencer").joinpath("starter_data/after-meeting.yaml").read_text("utf-8")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = config.with_name(config.name + ".tmp")
        tmp.write_text(starter.text, encoding="utf-8")
        tmp.replace(config)
        written = [config]
        if not sequences.exists():
            sequences.mkdir()
            example.write_text(text, encoding="utf-8")
            written.append(example)
    except OSError as exc:
        raise ConfigError(
            [f"{folder}: cannot write there: {exc.strerror} (pick another --folder)"]
        ) from None
    return written
