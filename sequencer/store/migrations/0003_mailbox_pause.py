"""A mailbox pauses when a server refuses our mail for our reputation (commit 19ca62f)."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0002_etiquette")]

    initial = False

    operations = [
        ops.AddField(
            model_name="MailboxState",
            name="pause_reason",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="paused_until",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
