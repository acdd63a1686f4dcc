"""Pure: what a suppression entry is, which entries cover an address, and reading a list of
them from CSV.

An entry is an address (`jo@prospect.example`) or a whole domain (`@prospect.example`: every
address at exactly that domain, not its subdomains). `keys` is the one answer to "which entries
would block this address", asked by enrolment and by the daemon before each send; a later
`forget` can add a hashed form of the address there without changing the table or its callers.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from sequencer import csvfile
from sequencer.addresses import domain_of, normalize_address
from sequencer.errors import SuppressionError

#: Where an entry came from. The daemon's own entries carry the first three.
SOURCES = ("bounce", "reply", "complaint", "manual", "import", "daemon")
_BY_REASON = {
    "hard_bounce": "bounce",
    "soft_bounces": "bounce",
    "unsubscribe": "reply",
    "complaint": "complaint",
}
REASON_MAX = 200


def source_for(reason: str) -> str:
    """The source of an entry written by the daemon, from its reason code (`hard_bounce`...);
    also how entries written before sources were recorded are shown."""
    return _BY_REASON.get(reason, "daemon")


def is_domain(entry: str) -> bool:
    return entry.startswith("@")


def normalize_entry(raw: str) -> str:
    """An address or an `@domain`, normalised as enrolment normalises addresses, or ValueError
    saying what is wrong with it."""
    text = raw.strip()
    if not text.startswith("@"):
        return normalize_address(text)
    try:
        return "@" + domain_of(normalize_address("postmaster" + text))
    except ValueError:
        raise ValueError(
            f"'{text}' is not a domain (expected something like @example.com)"
        ) from None


def keys(address: str) -> tuple[str, str]:
    """The entries that would block this address, the most specific first."""
    address = address.strip().lower()
    return address, "@" + address.rsplit("@", 1)[-1]


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
