from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from sequencer.states import Hold


class Migration(migrations.Migration):
    dependencies = [("models", "0005_reply_intent")]

    initial = False

    operations = [
        ops.AlterField(
            model_name="Enrollment",
            name="hold",
            field=fields.CharEnumField(
                null=True,
                description="INBOX_UNAVAILABLE: inbox_unavailable\nSMTP_AUTH_FAILED: smtp_auth_failed\nIMAP_AUTH_FAILED: imap_auth_failed\nREPUTATION_PAUSE: reputation_pause\nSEQUENCE_MISSING: sequence_missing\nUNCERTAIN_SEND: uncertain_send\nINBOUND_FAILED: inbound_failed\nMANUAL_PAUSE: manual_pause",
                enum_type=Hold,
                max_length=32,
            ),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="hold_until",
            field=fields.DatetimeField(
                null=True, db_index=True, auto_now=False, auto_now_add=False
            ),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="manual_since",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="manual_until",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
