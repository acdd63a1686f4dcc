import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from sequencer.states import Hold, Inbound, Inbox, Send, State


class Migration(migrations.Migration):
    dependencies = [("models", "0003_mailbox_pause")]

    initial = False

    operations = [
        ops.CreateModel(
            name="SuppressionLift",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("email", fields.CharField(db_index=True, max_length=320)),
                ("reason", fields.TextField(unique=False)),
                ("lifted_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("suppressed_reason", fields.CharField(max_length=200)),
                ("suppressed_detail", fields.TextField(default="", unique=False)),
                ("suppressed_source", fields.CharField(max_length=16)),
                ("suppressed_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "suppression_lift",
                "app": "models",
                "pk_attr": "id",
                "table_description": "The trace of an entry taken off the suppression list by hand: what it was, since when,",
            },
            bases=["Model"],
        ),
        ops.AlterField(
            model_name="Enrollment",
            name="state",
            field=fields.CharEnumField(
                default=State.ACTIVE,
                db_index=True,
                description="ACTIVE: active\nCOMPLETED: completed\nREPLIED: replied\nBOUNCED: bounced\nUNSUBSCRIBED: unsubscribed\nSTOPPED: stopped\nFAILED: failed",
                enum_type=State,
                max_length=20,
            ),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="hold",
            field=fields.CharEnumField(
                null=True,
                description="INBOX_UNAVAILABLE: inbox_unavailable\nSMTP_AUTH_FAILED: smtp_auth_failed\nIMAP_AUTH_FAILED: imap_auth_failed\nREPUTATION_PAUSE: reputation_pause\nSEQUENCE_MISSING: sequence_missing\nUNCERTAIN_SEND: uncertain_send\nINBOUND_FAILED: inbound_failed",
                enum_type=Hold,
                max_length=32,
            ),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="hold_detail",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="hold_since",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AlterField(
            model_name="InboundMessage",
            name="message_id",
            field=fields.CharField(null=True, db_index=True, max_length=998),
        ),
        ops.AddField(
            model_name="InboundMessage",
            name="attempts",
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name="InboundMessage",
            name="content",
            field=fields.BinaryField(null=True),
        ),
        ops.AddField(
            model_name="InboundMessage",
            name="error",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="InboundMessage",
            name="held",
            field=fields.JSONField(
                default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
            ),
        ),
        ops.AddField(
            model_name="InboundMessage",
            name="status",
            field=fields.CharEnumField(
                default=Inbound.HANDLED,
                description="HANDLED: handled\nFAILED: failed",
                enum_type=Inbound,
                max_length=12,
            ),
        ),
        ops.AlterModelOptions(
            name="MailboxState",
            options={
                "table": "mailbox_state",
                "app": "models",
                "pk_attr": "mailbox",
                "table_description": "Per-mailbox state shared by every daemon on the database and shown by `status",
            },
        ),
        ops.AddField(
            model_name="MailboxState",
            name="caught_up_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="inbox",
            field=fields.CharEnumField(
                default=Inbox.DOWN,
                description="WATCHING: watching\nCONNECTING: connecting\nDOWN: down\nAUTH_FAILED: auth_failed",
                enum_type=Inbox,
                max_length=16,
            ),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="inbox_error",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="inbox_since",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="smtp_error",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="smtp_failed_since",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="smtp_retry_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="watcher",
            field=fields.CharField(null=True, max_length=100),
        ),
        ops.AlterField(
            model_name="SentMessage",
            name="status",
            field=fields.CharEnumField(
                default=Send.PENDING,
                description="PENDING: pending\nSENDING: sending\nSENT: sent\nUNCERTAIN: uncertain\nSKIPPED: skipped",
                enum_type=Send,
                max_length=12,
            ),
        ),
        ops.AddField(
            model_name="SentMessage",
            name="attempted_at",
            field=fields.DatetimeField(
                null=True, db_index=True, auto_now=False, auto_now_add=False
            ),
        ),
        ops.AddField(
            model_name="SentMessage",
            name="copied_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="SentMessage",
            name="data",
            field=fields.BinaryField(null=True),
        ),
        ops.AlterModelOptions(
            name="Suppression",
            options={
                "table": "suppression",
                "app": "models",
                "pk_attr": "email",
                "table_description": "What no sequence may enroll or send to: an address, or every address at a domain",
            },
        ),
        ops.AlterField(
            model_name="Suppression",
            name="reason",
            field=fields.CharField(max_length=200),
        ),
        ops.AddField(
            model_name="Suppression",
            name="source",
            field=fields.CharField(default="", max_length=16),
        ),
        # Before this version a `pending` row meant "written, SMTP not confirmed": it may be on
        # the wire (a crash mid-send). Now `pending` means "safe to send": such rows become
        # `sending`, which the daemon settles as an uncertain send, never by sending again.
        ops.RunSQL("UPDATE sent_message SET status = 'sending' WHERE status = 'pending'"),
        # The gap between emails and the daily pace now count from when DATA started.
        ops.RunSQL("UPDATE sent_message SET attempted_at = created_at WHERE attempted_at IS NULL"),
        # Every copy sent so far is taken as filed: nothing is appended to Sent after the fact.
        ops.RunSQL("UPDATE sent_message SET copied_at = created_at WHERE copied_at IS NULL"),
    ]
