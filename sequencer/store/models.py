"""Tortoise models. Times are aware UTC. Owns the schema; queries live in queries.py."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

from sequencer.states import FINAL, Agenda, Hold, Inbound, Inbox, Send, State
from sequencer.store.indexes import Where

ACTIVE = State.ACTIVE
FINAL_STATES = FINAL


class Enrollment(Model):
    """One contact going through one sequence."""

    id = fields.BigIntField(primary_key=True)
    email = fields.CharField(max_length=320, db_index=True)
    sequence = fields.CharField(max_length=200)
    mailbox = fields.CharField(max_length=100)
    variables: fields.Field[dict[str, str]] = fields.JSONField(default=dict)
    state = fields.CharEnumField(State, max_length=20, default=State.ACTIVE, db_index=True)
    reason = fields.TextField(null=True)
    steps_sent = fields.IntField(default=0)
    # Only set while active: the due query is one indexed range scan over next_at.
    next_at = fields.DatetimeField(null=True, db_index=True)
    # A claim is a lease: a crashed daemon's claim expires and the work is looked at again.
    claimed_until = fields.DatetimeField(null=True)
    attempts = fields.IntField(default=0)  # consecutive transient failures of the next step
    last_error = fields.TextField(null=True)
    thread_subject = fields.TextField(null=True)
    # Why next_at is then and not earlier: "window", "holiday:<name>", "min_gap", "promise"...
    next_reasons: fields.Field[list[str]] = fields.JSONField(default=list)
    # Promised sends, by step number: {"2": {"local": "2026-12-08T10:00", "zone": "..."}}.
    # Local wall time plus zone, so a tzdata change keeps the time the salesperson promised.
    promises: fields.Field[dict[str, dict[str, str]]] = fields.JSONField(default=dict)
    promised = fields.BooleanField(default=False)  # next_at is a promise: no rule moves it
    # An out-of-office said when they are back: nothing goes before this.
    paused_until = fields.DatetimeField(null=True)
    enrolled_at = fields.DatetimeField()
    last_sent_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    # The inbound message that ended it (a plain id: a foreign key both ways is a cycle).
    ended_by_id = fields.BigIntField(null=True)
    # A contact held until someone or something settles it (an uncertain send, an inbound
    # message that failed, a missing sequence): the due query skips it.
    hold = fields.CharEnumField(Hold, max_length=32, null=True)
    hold_since = fields.DatetimeField(null=True)
    hold_detail = fields.TextField(null=True)
    # A manual pause with an end (`sequencer pause EMAIL --until DATE`): released by the
    # daemon from then on. Indexed: the daemon looks for pauses that have ended each tick.
    hold_until = fields.DatetimeField(null=True, db_index=True)
    # What a human reply asked for: its intent (interested, not_now, referral, decline,
    # unclear), the day a not-now named, and the people a referral points to
    # ([{"address": ..., "name": ...}]). Kept so `status` shows it and nothing is forgotten.
    reply_intent = fields.CharField(max_length=16, null=True)
    follow_up_on = fields.DateField(null=True)
    referral: fields.Field[list[dict[str, str | None]]] = fields.JSONField(default=list)

    class Meta:
        table = "enrollment"
        # SQLite never analyzes a database by itself, and without statistics it prefers an
        # index with more equalities (`state = ?`) to a range that needs no sort. So each
        # index below leads with the columns its query compares for equality, state among
        # them, even where the partial index's condition makes that column constant: the
        # plans are then the same with and without ANALYZE (tests/test_query_plans.py).
        indexes = (
            # The due query and next_due_at: a range over the rows that can be sent to, in
            # the order they go, whatever the size of the table (issue 14).
            Where(
                fields=("state", "next_at", "id"),
                name="enrollment_due_idx",
                where='"state" = \'active\' AND "hold" IS NULL',
            ),
            # Each mailbox's own oldest due rows (the send path's due query, one seek a
            # mailbox): what one mailbox has due never makes another's wait or scan.
            Where(
                fields=("state", "mailbox", "next_at", "id"),
                name="enrollment_mailbox_due_idx",
                where='"state" = \'active\' AND "hold" IS NULL',
            ),
            # Start-up's promise check: the few active contacts with a promised time. Not
            # partial: SQLite matches a bound `promised = ?` to no partial index.
            Index(fields=("state", "promised"), name="enrollment_promised_idx"),
            # The contacts held for one reason (the tick settles uncertain sends and
            # releases the manual pauses whose end has come, the CLI lists holds): a few
            # rows, whatever the number of active ones. hold_until's own index, on every
            # row, is rated by its NULLs and goes unused.
            Where(
                fields=("hold", "state", "hold_until"),
                name="enrollment_held_idx",
                where='"hold" IS NOT NULL',
            ),
            # `status` and systemd's STATUS= line: counts by state, mailbox and hold, and
            # each mailbox's first next send, read from the index alone.
            Index(fields=("state", "mailbox", "hold", "next_at"), name="enrollment_tally_idx"),
            # Start-up (SQLite) lets go of a dead daemon's claims: the few claimed rows, not
            # a scan of every contact (132 ms at 1 M).
            Where(
                fields=("claimed_until",),
                name="enrollment_claimed_idx",
                # As tortoise writes `claimed_until__isnull=False`: SQLite matches the text.
                where='NOT "claimed_until" IS NULL',
            ),
        )


class SentMessage(Model):
    """The outbound log. A row is written, with its Message-ID, before SMTP is spoken."""

    id = fields.BigIntField(primary_key=True)
    enrollment: fields.ForeignKeyRelation[Enrollment] = fields.ForeignKeyField(
        "models.Enrollment", related_name="sent", on_delete=fields.CASCADE
    )
    step = fields.IntField()
    # Copies of the enrollment's, indexed: the gap per address and the pace per mailbox are
    # counted from here (pending rows count: they may be on the wire).
    email = fields.CharField(max_length=320, db_index=True, default="")
    mailbox = fields.CharField(max_length=100, db_index=True, default="")
    # Assigned once when the row is written; every retry of the step reuses it.
    message_id = fields.CharField(max_length=255, unique=True)
    subject = fields.TextField()
    status = fields.CharEnumField(Send, max_length=12, default=Send.PENDING)
    created_at = fields.DatetimeField()
    # When DATA last started: the gap and the pace count from here (see states.ON_THE_WIRE).
    attempted_at = fields.DatetimeField(null=True, db_index=True)
    sent_at = fields.DatetimeField(null=True)
    # A copy was appended to (or found in) the mailbox's Sent folder; until then the bytes
    # sent are kept, so a crash between the send and the copy loses nothing.
    copied_at = fields.DatetimeField(null=True)
    data = fields.BinaryField(null=True)

    class Meta:
        table = "sent_message"
        unique_together = (("enrollment", "step"),)
        indexes = (
            # A mailbox's pace (sends since its local midnight) and the gap per address (the
            # last send to it): each a range within one mailbox's or one address's rows.
            Index(fields=("mailbox", "attempted_at"), name="sent_message_pace_idx"),
            Index(fields=("email", "attempted_at"), name="sent_message_gap_idx"),
            # Start-up and maintenance file the Sent copies a crash left out: the rows not
            # copied yet, not every message a mailbox ever sent (102 ms a mailbox at 1 M).
            Where(
                fields=("mailbox", "status", "id"),
                name="sent_message_uncopied_idx",
                where='"copied_at" IS NULL',
            ),
        )


class InboundMessage(Model):
    """Every inbound message we matched or acted on, with the verdict and the rules."""

    id = fields.BigIntField(primary_key=True)
    mailbox = fields.CharField(max_length=100)
    uidvalidity = fields.BigIntField()
    uid = fields.BigIntField()
    message_id = fields.CharField(max_length=998, null=True, db_index=True)
    from_address = fields.CharField(max_length=320, null=True)
    subject = fields.TextField(default="")
    verdict = fields.CharField(max_length=32)
    kind = fields.CharField(max_length=32, null=True)
    rules: fields.Field[list[str]] = fields.JSONField(default=list)
    action = fields.TextField(default="")
    status = fields.CharEnumField(Inbound, max_length=12, default=Inbound.HANDLED)
    # A message whose handling raised: the error, how often it was tried, its bytes (to try
    # again without the server), and the enrollments it holds meanwhile.
    error = fields.TextField(null=True)
    attempts = fields.IntField(default=0)
    content = fields.BinaryField(null=True)
    held: fields.Field[list[int]] = fields.JSONField(default=list)
    enrollment: fields.ForeignKeyNullableRelation[Enrollment] = fields.ForeignKeyField(
        "models.Enrollment", null=True, related_name="inbound", on_delete=fields.SET_NULL
    )
    received_at = fields.DatetimeField()

    class Meta:
        table = "inbound_message"
        unique_together = (("mailbox", "uidvalidity", "uid"),)


class AgendaItem(Model):
    """Something a reply asks of the salesperson (`sequencer agenda`): an interested reply to
    answer, a not-now date, a referral, an erasure request. Cleared (deleted) when done."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharEnumField(Agenda, max_length=16)
    email = fields.CharField(max_length=320, db_index=True)  # who it is about
    sequence = fields.CharField(max_length=200, null=True)
    # Plain ids: the enrollment and message it came from (either may be erased by `forget`).
    enrollment_id = fields.BigIntField(null=True)
    inbound_id = fields.BigIntField(null=True)
    received_at = fields.DatetimeField(db_index=True)
    follow_up_on = fields.DateField(null=True)
    referral: fields.Field[list[dict[str, str | None]]] = fields.JSONField(default=list)
    excerpt = fields.TextField(default="")  # the first lines of the reply's new text
    note = fields.TextField(default="")  # what sequencer did about it, or why it could not

    class Meta:
        table = "agenda_item"


class Suppression(Model):
    """What no sequence may enroll or send to: an address, or every address at a domain
    (hard bounces, removal requests, complaints, entries added by hand or imported).

    A row is the entry in force; lifting it deletes the row and logs a SuppressionLift, so
    every check stays one lookup by key (see sequencer/suppression.py `keys`)."""

    # An address, or "@domain" for every address at that domain.
    email = fields.CharField(max_length=320, primary_key=True)
    # The daemon's reason codes (hard_bounce, unsubscribe, complaint, soft_bounces), or the
    # words of whoever added it by hand or in an import.
    reason = fields.CharField(max_length=200)
    detail = fields.TextField(default="")
    # bounce, reply, complaint, manual, import, daemon; "" on rows written before sources were
    # recorded, which are read through suppression.source_for(reason).
    source = fields.CharField(max_length=16, default="")
    created_at = fields.DatetimeField()

    class Meta:
        table = "suppression"


class SuppressionLift(Model):
    """The trace of an entry taken off the suppression list by hand: what it was, since when,
    and why it was lifted."""

    id = fields.BigIntField(primary_key=True)
    email = fields.CharField(max_length=320, db_index=True)
    reason = fields.TextField()  # why it was lifted
    lifted_at = fields.DatetimeField()
    # The entry as it was.
    suppressed_reason = fields.CharField(max_length=200)
    suppressed_detail = fields.TextField(default="")
    suppressed_source = fields.CharField(max_length=16)
    suppressed_at = fields.DatetimeField()

    class Meta:
        table = "suppression_lift"


class MailboxCursor(Model):
    """Where the inbox watcher got to: the folder's UIDVALIDITY and the last UID handled."""

    mailbox = fields.CharField(max_length=100, primary_key=True)
    uidvalidity = fields.BigIntField()
    last_uid = fields.BigIntField()

    class Meta:
        table = "mailbox_cursor"


class MailboxState(Model):
    """Per-mailbox state shared by every daemon on the database and shown by `status
    --mailboxes`: when its pacing lets it send next, a reputation pause, a refused SMTP
    login, and its inbox watcher (a mailbox sends only while its inbox is watched)."""

    mailbox = fields.CharField(max_length=100, primary_key=True)
    next_free_at = fields.DatetimeField(null=True)
    # Sends counted in the mailbox's day that began at `count_since`: every daemon takes its
    # send from here in one conditional UPDATE, so the daily limit holds across daemons.
    day_count = fields.IntField(default=0)
    count_since = fields.DatetimeField(null=True)
    # A server refused our mail for our reputation (blocklist, DMARC...): nothing is sent
    # from this mailbox before then, so we do not dig the hole deeper.
    paused_until = fields.DatetimeField(null=True)
    pause_reason = fields.TextField(null=True)
    # SMTP login refused: one attempt per backoff interval for the whole mailbox.
    smtp_failed_since = fields.DatetimeField(null=True)
    smtp_retry_at = fields.DatetimeField(null=True)
    smtp_error = fields.TextField(null=True)
    # The inbox watcher: its state, since when, when it last caught up, the last error, and
    # which daemon runs it (several daemons on one database share one watcher a mailbox).
    inbox = fields.CharEnumField(Inbox, max_length=16, default=Inbox.DOWN)
    inbox_since = fields.DatetimeField(null=True)
    caught_up_at = fields.DatetimeField(null=True)
    inbox_error = fields.TextField(null=True)
    watcher = fields.CharField(max_length=100, null=True)
    # Paused by hand (`sequencer pause --mailbox NAME`, a salesperson's holiday): nothing is
    # sent from it since then, until `manual_until` (None: until `sequencer resume --mailbox`).
    manual_since = fields.DatetimeField(null=True)
    manual_until = fields.DatetimeField(null=True)

    class Meta:
        table = "mailbox_state"
