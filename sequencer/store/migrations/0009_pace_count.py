"""MailboxState gains the day's send count and the day it counts (`day_count`, `count_since`):
the daily limit is taken there by every daemon in one conditional UPDATE."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0008_indexes")]

    initial = False

    operations = [
        ops.AddField(
            model_name="MailboxState",
            name="count_since",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="MailboxState",
            name="day_count",
            field=fields.IntField(default=0),
        ),
    ]
