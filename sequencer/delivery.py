"""What an SMTP outcome means for us: the one table from a failed attempt to an action.

Pure: the SMTP edge (sender.py) reports where an attempt stopped and what the server said;
this module decides; the daemon (worker.py) carries the action out. A refusal is read with
the same reason rules as a bounce report (classify.smtp_refusal), so `554 5.7.1 ... blocked
using zen.spamhaus.org` at RCPT pauses the mailbox exactly as the same words in a bounce do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sequencer.classify import BounceKind, smtp_refusal


class Stage(enum.StrEnum):
    """Where an attempt stopped. Everything before DATA is safe to repeat."""

    CONNECT = "connect"  # no session: refused, unreachable, TLS, greeting
    AUTH = "auth"  # the login was refused
    SIZE = "size"  # we did not offer it: larger than the server's SIZE
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # DATA started: only a definite answer says what happened


@dataclass(frozen=True)
class Failure:
    """One failed attempt, as the SMTP edge saw it."""

    stage: Stage
    code: int | None  # the server's reply code; None when it never answered
    text: str  # the server's words, or what went wrong on our side

    @property
    def unknown_outcome(self) -> bool:
        """DATA started and no answer came: the message may have been accepted."""
        return self.stage is Stage.DATA and self.code is None


class Action(enum.StrEnum):
    RETRY = "retry"  # this contact, later, with backoff and jitter
    BOUNCED = "bounced"  # the address is bad: suppress it, end its enrollments
    SOFT_BOUNCE = "soft_bounce"  # mailbox full: wait a day, as for a soft bounce report
    FAIL = "fail"  # this message can never go to this contact: end it as failed
    PAUSE_MAILBOX = "pause_mailbox"  # our reputation: the whole mailbox waits, contact untouched
    AUTH_FAILED = "auth_failed"  # wrong credentials: hold the mailbox, one login per backoff
    UNCERTAIN = "uncertain"  # may have gone: never retried as if it had failed


_PERMANENT = {
    BounceKind.USER_UNKNOWN: Action.BOUNCED,
    BounceKind.MAILBOX_FULL: Action.SOFT_BOUNCE,
    BounceKind.REPUTATION: Action.PAUSE_MAILBOX,
    BounceKind.POLICY: Action.FAIL,
    BounceKind.OTHER: Action.FAIL,
}

#: Codes that say the login is wrong or missing, wherever they come (530 at MAIL included).
AUTH_CODES = frozenset({530, 534, 535, 538})


def judge(failure: Failure) -> Action:
    """The action for one failed attempt."""
    if failure.stage is Stage.AUTH or failure.code in AUTH_CODES:
        return Action.AUTH_FAILED
    if failure.unknown_outcome:
        return Action.UNCERTAIN
    if failure.stage is Stage.SIZE:
        return Action.FAIL
    if failure.code is None:
        return Action.RETRY  # refused, unreachable or dropped before DATA: nothing went
    kind = smtp_refusal(failure.code, failure.text)
    if kind is BounceKind.REPUTATION:
        return Action.PAUSE_MAILBOX  # 4xx or 5xx: either way it is about us, not them
    if failure.code < 500 or failure.stage is Stage.CONNECT:
        # Temporary, or a session refused before any recipient was named: not about them.
        return Action.RETRY
    if failure.stage is Stage.MAIL and kind is not BounceKind.POLICY:
        # Our sender address refused for good: the mailbox's problem, never this contact's
        # (a message too big for MAIL FROM's SIZE is policy, and fails only this message).
        return Action.PAUSE_MAILBOX
    return _PERMANENT[kind]
