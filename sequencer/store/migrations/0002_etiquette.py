"""Etiquette (commit 2d0da62): why and when the next send goes, promises, out-of-office
pauses, per-mailbox pacing; the sent log copies each enrollment's address and mailbox."""

import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        ops.CreateModel(
            name="MailboxState",
            fields=[
                (
                    "mailbox",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=100),
                ),
                (
                    "next_free_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
            ],
            options={
                "table": "mailbox_state",
                "app": "models",
                "pk_attr": "mailbox",
                "table_description": "Per-mailbox sending state shared by every daemon on the database: when its pacing",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="Enrollment",
            name="next_reasons",
            field=fields.JSONField(
                default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
            ),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="paused_until",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="promised",
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="promises",
            field=fields.JSONField(
                default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
            ),
        ),
        ops.AddField(
            model_name="SentMessage",
            name="email",
            field=fields.CharField(default="", db_index=True, max_length=320),
        ),
        ops.AddField(
            model_name="SentMessage",
            name="mailbox",
            field=fields.CharField(default="", db_index=True, max_length=100),
        ),
        # Sends made before this migration count towards the gap and the pace like later ones.
        ops.RunSQL(
            "UPDATE sent_message SET"
            " email = (SELECT e.email FROM enrollment e WHERE e.id = sent_message.enrollment_id),"
            " mailbox = (SELECT e.mailbox FROM enrollment e WHERE e.id = sent_message.enrollment_id)"
        ),
    ]
