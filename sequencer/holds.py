"""Pure: why a mailbox may not send, read from its recorded state (`status`, from any
process). The daemon applies the same rules to its live watchers and senders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sequencer.states import Hold, Inbox


@dataclass(frozen=True)
class MailboxView:
    mailbox: str
    inbox: Inbox
    hold: Hold | None
    since: datetime | None
    last_error: str | None
    #: The daemon that watches the inbox (HOST:PID): one across the daemons on a database.
    watcher: str | None = None


def mailbox_view(
    name: str,
    *,
    inbox: Inbox | None,
    inbox_since: datetime | None,
    caught_up_at: datetime | None,
    inbox_error: str | None,
    smtp_failed_since: datetime | None,
    smtp_error: str | None,
    paused_until: datetime | None,
    pause_reason: str | None,
    keepalive: float,
    now: datetime,
    manual_since: datetime | None = None,
    manual_until: datetime | None = None,
) -> MailboxView:
    """The first hold that applies, in the order the daemon checks them: a mailbox whose
    inbox has not caught up within twice the keepalive is not watched (no daemon runs, or
    its watcher is stuck), whatever its last recorded state says. A revoked OAuth2 grant
    comes first (it causes the holds after it), then a pause by hand: it is what a person
    decided, and it says when sending resumes."""
    for error, since in ((smtp_error, smtp_failed_since), (inbox_error, inbox_since)):
        # A revoked OAuth2 grant is recorded as a refused login whose error says so
        # (oauth.REVOKED): the cause of every other hold it brings, so it comes first.
        if error is not None and f"{Hold.OAUTH_REVOKED}: " in error:
            return MailboxView(name, inbox or Inbox.DOWN, Hold.OAUTH_REVOKED, since, error)
    state = inbox or Inbox.DOWN
    fresh = caught_up_at is not None and now - caught_up_at <= timedelta(seconds=2 * keepalive)
    if state is Inbox.WATCHING and not fresh:
        state = Inbox.DOWN
        inbox_error = inbox_error or "no daemon has caught up with this inbox lately"
    if manual_hold(manual_since, manual_until, now):
        return MailboxView(
            name, state, Hold.MANUAL_PAUSE, manual_since, paused_by_hand(manual_until)
        )
    if state is Inbox.AUTH_FAILED:
        return MailboxView(name, state, Hold.IMAP_AUTH_FAILED, inbox_since, inbox_error)
    if state is not Inbox.WATCHING:
        return MailboxView(name, state, Hold.INBOX_UNAVAILABLE, inbox_since, inbox_error)
    if smtp_failed_since is not None:
        return MailboxView(name, state, Hold.SMTP_AUTH_FAILED, smtp_failed_since, smtp_error)
    if paused_until is not None and paused_until > now:
        return MailboxView(name, state, Hold.REPUTATION_PAUSE, paused_until, pause_reason)
    return MailboxView(name, state, None, inbox_since, None)


def manual_hold(since: datetime | None, until: datetime | None, now: datetime) -> bool:
    """A mailbox paused by hand (`sequencer pause --mailbox`) and not yet due back."""
    return since is not None and (until is None or until > now)


def paused_by_hand(until: datetime | None) -> str:
    if until is None:
        return "mailbox paused by hand until `sequencer resume --mailbox NAME`"
    return f"mailbox paused by hand until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


#: A few words for each hold, for the `why` column of `status`.
SHORT = {
    Hold.OAUTH_REVOKED: "OAuth2 sign-in revoked or expired: `sequencer auth MAILBOX`",
    Hold.INBOX_UNAVAILABLE: "its inbox is not watched",
    Hold.IMAP_AUTH_FAILED: "IMAP login refused",
    Hold.SMTP_AUTH_FAILED: "SMTP login refused",
    Hold.REPUTATION_PAUSE: "mailbox paused: refused for our reputation",
    Hold.SEQUENCE_MISSING: "its sequence is not loaded",
    Hold.UNCERTAIN_SEND: "a step may not have reached them: `sequencer resume EMAIL --sent` "
    "or `--resend`",
    Hold.INBOUND_FAILED: "a message that may be theirs could not be handled: read it, then "
    "`sequencer resume EMAIL`",
    Hold.MANUAL_PAUSE: "paused by hand: `sequencer resume EMAIL`",
}

#: What a person does about each hold: `status` and the README's "Operating" section say it.
ADVICE = {
    Hold.OAUTH_REVOKED: "the mailbox's OAuth2 grant was revoked or has expired (password "
    "changed, access removed, or unused too long): run `sequencer auth MAILBOX` as the "
    "daemon's user; the daemon notices the new token by itself and sends again",
    Hold.INBOX_UNAVAILABLE: "the inbox is not watched (daemon stopped, or the IMAP server is "
    "down): sending resumes once it is watched again",
    Hold.IMAP_AUTH_FAILED: "the IMAP login was refused: fix the username or password, then "
    "restart or reload the daemon",
    Hold.SMTP_AUTH_FAILED: "the SMTP login was refused: fix the credentials; the daemon tries "
    "one login per interval (doubling up to an hour)",
    Hold.REPUTATION_PAUSE: "a server refused our mail for our reputation (blocklist, "
    "SPF/DKIM/DMARC): check the domain and IP; sending resumes at the time shown",
    Hold.SEQUENCE_MISSING: "its sequence file is gone, renamed or broken: restore it and "
    "reload (systemctl reload sequencer)",
    Hold.UNCERTAIN_SEND: "a step may or may not have reached them: check your Sent folder, then "
    "`sequencer resume EMAIL --sent` or `--resend`",
    Hold.INBOUND_FAILED: "a message that may be theirs could not be handled: read it in your "
    "inbox, then `sequencer resume EMAIL` (or stop them); it is retried every 5 minutes",
    Hold.MANUAL_PAUSE: "paused by hand (`sequencer pause`): sending resumes at the date given, "
    "or with `sequencer resume EMAIL` (`--mailbox NAME` for a mailbox); replies are still "
    "watched",
}
