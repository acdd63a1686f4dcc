"""Pure e-mail address checks: one place decides what an acceptable recipient is."""

from __future__ import annotations

import re

from sequencer import safetext

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def normalize_address(raw: str) -> str:
    """Return the address lower-cased, or raise ValueError saying what is wrong with it.

    Deliberately strict: a sales follow-up goes to a plain `local@domain.tld` mailbox, so quoted
    local parts, IP-literal domains and display names are refused rather than guessed at.
    """
    if any(c in raw for c in "\r\n\0"):
        raise ValueError("contains a line break or NUL (possible header injection)")
    if bad := safetext.problem(raw.strip()):
        raise ValueError(bad)
    addr = raw.strip()
    if not addr:
        raise ValueError("is empty")
    if addr.count("@") != 1:
        raise ValueError(f"'{addr}' is not an e-mail address (it needs exactly one @)")
    local, domain = addr.rsplit("@", 1)
    if not local or len(local) > 64 or not _LOCAL.match(local) or ".." in local:
        raise ValueError(f"'{addr}' has an invalid part before the @")
    if local.startswith(".") or local.endswith("."):
        raise ValueError(f"'{addr}' has an invalid part before the @")
    domain = domain.removesuffix(".")  # one trailing dot is the DNS root; "com.." is an error
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or len(domain) > 253:
        raise ValueError(f"'{addr}' has an invalid domain (expected something like example.com)")
    if labels[-1].isdigit():
        raise ValueError(f"'{addr}' has an invalid domain (expected something like example.com)")
    return f"{local}@{domain}".lower()


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1]
