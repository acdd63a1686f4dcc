"""Pure: what a suppression entry is, which entries cover an address, and reading a list of
them from CSV.

An entry is an address (`jo@prospect.example`), a whole domain (`@prospect.example`: every
address at exactly that domain, not its subdomains), or the hashed form of an address that
`sequencer forget` erased (`sha256:<64 hex digits>`: the address itself is no longer stored, but
it is never written to again). `keys` is the one answer to "which entries would block this
address", asked by enrolment and by the daemon before each send, so all three forms are
consulted everywhere.

The hash is SHA-256 of HASH_PREFIX followed by the normalised (lower-cased) address, in hex. The
prefix is fixed and documented rather than a per-database secret: the same person hashes to the
same entry in every installation, so a suppression list can be exported and imported, and the
check before each send stays one lookup by key. It is pseudonymisation, not secrecy: whoever
already knows an address can test whether it is on the list, which is what the list is for.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from sequencer import csvfile
from sequencer.addresses import domain_of, normalize_address
from sequencer.errors import SuppressionError

#: Where an entry came from. The daemon's own entries carry the first three.
SOURCES = ("bounce", "reply", "complaint", "manual", "import", "daemon", "forget")
_BY_REASON = {
    "hard_bounce": "bounce",
    "soft_bounces": "bounce",
    "unsubscribe": "reply",
    "complaint": "complaint",
}
REASON_MAX = 200
#: What is hashed with an address for a forgotten person's entry (see the module docstring).
HASH_PREFIX = "sequencer-forget-v1:"
HASHED = "sha256:"
_HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")


def source_for(reason: str) -> str:
    """The source of an entry written by the daemon, from its reason code (`hard_bounce`...);
    also how entries written before sources were recorded are shown."""
    return _BY_REASON.get(reason, "daemon")


def is_domain(entry: str) -> bool:
    return entry.startswith("@")


def is_hashed(entry: str) -> bool:
    """The entry of a forgotten address (`sha256:...`)."""
    return entry.startswith(HASHED)


def hashed(address: str) -> str:
    """The entry that keeps a forgotten address suppressed without storing it."""
    normal = address.strip().lower()
    return HASHED + hashlib.sha256((HASH_PREFIX + normal).encode("utf-8")).hexdigest()


def normalize_entry(raw: str) -> str:
    """An address or an `@domain`, normalised as enrolment normalises addresses, or ValueError
    saying what is wrong with it."""
    text = raw.strip()
    if text.lower().startswith(HASHED):
        if not _HASHED.match(text.lower()):
            raise ValueError(f"'{text}' is not a forgotten address's entry (sha256: and 64 hex)")
        return text.lower()
    if not text.startswith("@"):
        return normalize_address(text)
    try:
        return "@" + domain_of(normalize_address("postmaster" + text))
    except ValueError:
        raise ValueError(
            f"'{text}' is not a domain (expected something like @example.com)"
        ) from None


def keys(address: str) -> tuple[str, str, str]:
    """The entries that would block this address: itself, its @domain, its hashed form."""
    address = address.strip().lower()
    return address, "@" + address.rsplit("@", 1)[-1], hashed(address)


def one_line(text: str) -> str:
    """Text for a terminal line: whitespace runs (line breaks too) as one space, any other
    control character (an escape sequence in a bounced subject...) as U+FFFD."""
    return "".join(
        "\ufffd" if unicodedata.category(c) == "Cc" else c for c in " ".join(text.split())
    )


def check_reason(text: str) -> str:
    """A reason as the user typed it, on one line (line breaks in a CRM export's notes become
    spaces); ValueError for control characters or more than REASON_MAX characters."""
    reason = " ".join(text.split())
    if reason != one_line(reason):
        raise ValueError("the reason contains a control character")
    if len(reason) > REASON_MAX:
        raise ValueError(f"the reason is longer than {REASON_MAX} characters")
    return reason


@dataclass(frozen=True)
class Entry:
    email: str  # an address or an @domain
    reason: str  # "" when the row gave none
    line: int


def read_csv(text: str, name: str) -> list[Entry]:
    """Every row of a suppression list (an `email` column of addresses or @domains, and an
    optional `reason`; other columns are ignored, so a CRM export can be imported as it is),
    or SuppressionError listing every bad row with its line."""
    try:
        _, rows = csvfile.read(text, name)
    except ValueError as exc:
        raise SuppressionError([str(exc)]) from None
    entries, problems = [], []
    for row in rows:
        if row.problem:
            problems.append(f"{name}:{row.line}: {row.problem}")
            continue
        try:
            email = normalize_entry(row.fields.get("email", ""))
        except ValueError as exc:
            problems.append(f"{name}:{row.line}: email {exc}")
            continue
        try:
            reason = check_reason(row.fields.get("reason", ""))
        except ValueError as exc:
            problems.append(f"{name}:{row.line}: {exc}")
            continue
        entries.append(Entry(email, reason, row.line))
    if problems:
        raise SuppressionError(
            [f"{len(problems)} problem(s) in {name}; nothing was imported:", *problems]
        )
    return entries
