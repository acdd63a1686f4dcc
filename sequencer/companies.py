"""Pure: which addresses belong to one company, for `stop_on_reply: domain`.

Owns the rule that a domain is a company unless it is a free-mail or ISP domain (gmail.com is a
billion people, not one prospect). The list is data, in freemail.txt beside this module: one
domain a line, loaded once. Only an exact domain is a company: a subdomain is another one.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def freemail() -> frozenset[str]:
    text = resources.files("sequencer").joinpath("freemail.txt").read_text(encoding="utf-8")
    return frozenset(
        line.split("#", 1)[0].strip().lower()
        for line in text.splitlines()
        if line.split("#", 1)[0].strip()
    )


def company_domain(address: str) -> str | None:
    """The company domain of an address, or None for a free-mail address or no domain."""
    if "@" not in address:
        return None
    domain = address.rsplit("@", 1)[1].strip().lower().rstrip(".")
    if not domain or domain in freemail():
        return None
    return domain
