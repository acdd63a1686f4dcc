"""What classification answers: the verdict types every caller reads, and a rule's Hit.

Owns: Verdict, Intent, Referral, BounceKind, Classification (the public answer) and Hit (what
one rule decided, before the rule table turns it into a Classification). No logic here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from typing import Any


class Verdict(enum.StrEnum):
    HUMAN_REPLY = "human_reply"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    UNSUBSCRIBE_REQUEST = "unsubscribe_request"
    OTHER = "other"


class Intent(enum.StrEnum):
    """What a person's reply asks of the salesperson (human replies only)."""

    INTERESTED = "interested"  # agrees to or proposes a meeting, asks for a demo/pricing, yes
    NOT_NOW = "not_now"  # asks to be contacted later (follow_up_on: the period's first day)
    REFERRAL = "referral"  # points to someone else (referral: who)
    DECLINE = "decline"  # not interested, without asking to be removed
    UNCLEAR = "unclear"  # none of these with confidence


@dataclass(frozen=True)
class Referral:
    """A person a reply points to: named in the text or added in Cc."""

    address: str  # lower-cased bare address
    name: str | None = None  # display name when the reply gives one

    def to_json(self) -> dict[str, str | None]:
        return {"address": self.address, "name": self.name}


class BounceKind(enum.StrEnum):
    """Why a message was refused, read from the server's words (a bounce report, or an SMTP
    reply at RCPT or DATA): the same rules either way."""

    USER_UNKNOWN = "user_unknown"  # the address is bad: suppress it
    MAILBOX_FULL = "mailbox_full"  # may pass with time
    REPUTATION = "reputation"  # our reputation or authentication: pause the mailbox
    POLICY = "policy"  # the recipient's policy, or the message (too big, content)
    DELAY = "delay"  # a delivery delay warning: nothing failed yet
    OTHER = "other"


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    # auto_reply: out_of_office | left_company | challenge | other
    # bounce: user_unknown | mailbox_full | delay | policy | other ; else None
    kind: str | None = None
    hard: bool | None = None  # bounces only: True means the address is bad
    recipients: tuple[str, ...] = ()  # bounces: failed addresses, lower-cased
    return_date: date | None = None
    # left_company: other addresses the notice names ("please contact jane@..."), lower-cased
    alternatives: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()  # names of the rules that decided, in order
    # policy bounces only: refused for the SENDER's reputation or authentication (blocklist,
    # IP/domain reputation, SPF/DKIM/DMARC, PTR, sender address), not for this recipient. Proves
    # nothing about the address; the caller pauses the sending mailbox instead.
    reputation: bool = False
    # Header facts the matcher needs, so callers never re-parse the message.
    message_id: str | None = None  # "<id@host>" of this message
    from_address: str | None = None  # lower-cased bare address
    subject: str = ""
    # Message-IDs this message refers to: In-Reply-To + References, and for bounces the
    # Message-ID/References of the returned original message. Each "<id@host>".
    related_message_ids: tuple[str, ...] = field(default=())
    # Human replies (and removal requests, which are a person's words too): what they ask.
    intent: Intent | None = None
    follow_up_on: date | None = None  # not_now: the first day of the period they named
    referral: tuple[Referral, ...] = ()
    # Removal requests: the addresses to suppress (the sender's when they name nobody else).
    suppress: tuple[str, ...] = ()
    erasure: bool = False  # the request asks for the person's data to be erased (GDPR Art. 17)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "kind": self.kind,
            "hard": self.hard,
            "recipients": list(self.recipients),
            "return_date": self.return_date.isoformat() if self.return_date else None,
            "alternatives": list(self.alternatives),
            "reputation": self.reputation,
            "rules": list(self.rules),
            "intent": str(self.intent) if self.intent else None,
            "follow_up_on": self.follow_up_on.isoformat() if self.follow_up_on else None,
            "referral": [r.to_json() for r in self.referral],
            "suppress": list(self.suppress),
            "erasure": self.erasure,
        }


@dataclass(frozen=True)
class Hit:
    """What a rule decided; `also` names the refinements that shaped kind/hard/date."""

    verdict: Verdict
    kind: str | None = None
    hard: bool | None = None
    recipients: tuple[str, ...] = ()
    return_date: date | None = None
    alternatives: tuple[str, ...] = ()
    reputation: bool = False
    also: tuple[str, ...] = ()
    name: str | None = None  # overrides the rule's name when one rule has two outcomes
    suppress: tuple[str, ...] = ()  # removal requests: whom to remove
    erasure: bool = False
