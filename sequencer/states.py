"""The words the daemon, the database, `status` and the logs share: enrollment states, send
states, hold reasons and inbox states. Enums, so no layer passes a misspelt string to another;
their values are what the database stores and `status --json` prints.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """Where an enrollment is. Every state but ACTIVE is final and carries a reason."""

    ACTIVE = "active"
    COMPLETED = "completed"  # the break-up was sent
    REPLIED = "replied"
    BOUNCED = "bounced"
    UNSUBSCRIBED = "unsubscribed"
    STOPPED = "stopped"
    FAILED = "failed"


FINAL = tuple(s for s in State if s is not State.ACTIVE)


class Send(enum.StrEnum):
    """One step's message. Its Message-ID is assigned once, when the row is written, and
    every retry of the step reuses it."""

    PENDING = "pending"  # written, not yet on the wire: safe to (re)send
    SENDING = "sending"  # DATA started: the outcome is unknown until the server answers
    SENT = "sent"  # the server accepted it
    UNCERTAIN = "uncertain"  # DATA started and the answer never came (drop, timeout, crash)
    SKIPPED = "skipped"  # an uncertain send counted as not delivered (on_uncertain_send: skip)


#: Sends that may have reached the contact: they count for pacing and the gap between emails
#: (a skipped uncertain send too: it was counted as not delivered, but it may have been).
ON_THE_WIRE = (Send.SENDING, Send.SENT, Send.UNCERTAIN, Send.SKIPPED)


class Hold(enum.StrEnum):
    """Why nothing is sent right now: one vocabulary for `status`, the database and the logs.
    The first five hold a whole mailbox; the next three one contact; a manual pause either."""

    INBOX_UNAVAILABLE = "inbox_unavailable"  # the inbox is not watched: a reply could be missed
    SMTP_AUTH_FAILED = "smtp_auth_failed"
    IMAP_AUTH_FAILED = "imap_auth_failed"
    REPUTATION_PAUSE = "reputation_pause"  # a server refused our mail for our reputation
    OAUTH_REVOKED = "oauth_revoked"  # the OAuth2 grant is gone: `sequencer auth MAILBOX`
    SEQUENCE_MISSING = "sequence_missing"  # its sequence file is gone, renamed or broken
    UNCERTAIN_SEND = "uncertain_send"  # a step may or may not have reached them
    INBOUND_FAILED = "inbound_failed"  # a message that may be theirs could not be handled
    MANUAL_PAUSE = "manual_pause"  # `sequencer pause`: until resumed, or until a date


class Inbox(enum.StrEnum):
    """The inbox watcher of one mailbox, as `status --mailboxes` shows it."""

    WATCHING = "watching"
    CONNECTING = "connecting"
    DOWN = "down"
    AUTH_FAILED = "auth_failed"


class Inbound(enum.StrEnum):
    """An inbound message we recorded."""

    HANDLED = "handled"
    FAILED = "failed"  # handling raised: kept with its error and bytes, retried, visible


class Agenda(enum.StrEnum):
    """What an agenda item asks of the salesperson (`sequencer agenda`)."""

    INTERESTED = "interested"  # they want to talk: answer now
    NOT_NOW = "not_now"  # contact them again from follow_up_on (or decide when: no date)
    REFERRAL = "referral"  # they point to someone else
    ERASURE = "erasure"  # they asked for their data to be erased: `sequencer forget`
