"""Hold gains `oauth_revoked` (a mailbox whose OAuth2 grant is gone): only the column's
description changes."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from sequencer.states import Hold


class Migration(migrations.Migration):
    dependencies = [("models", "0006_manual_pause")]

    initial = False

    operations = [
        ops.AlterField(
            model_name="Enrollment",
            name="hold",
            field=fields.CharEnumField(
                null=True,
                description="INBOX_UNAVAILABLE: inbox_unavailable\nSMTP_AUTH_FAILED: smtp_auth_failed\nIMAP_AUTH_FAILED: imap_auth_failed\nREPUTATION_PAUSE: reputation_pause\nOAUTH_REVOKED: oauth_revoked\nSEQUENCE_MISSING: sequence_missing\nUNCERTAIN_SEND: uncertain_send\nINBOUND_FAILED: inbound_failed\nMANUAL_PAUSE: manual_pause",
                enum_type=Hold,
                max_length=32,
            ),
        ),
    ]
