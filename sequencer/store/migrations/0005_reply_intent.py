import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from sequencer.states import Agenda


class Migration(migrations.Migration):
    dependencies = [("models", "0004_fail_closed")]

    initial = False

    operations = [
        ops.CreateModel(
            name="AgendaItem",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "kind",
                    fields.CharEnumField(
                        description="INTERESTED: interested\nNOT_NOW: not_now\nREFERRAL: referral\nERASURE: erasure",
                        enum_type=Agenda,
                        max_length=16,
                    ),
                ),
                ("email", fields.CharField(db_index=True, max_length=320)),
                ("sequence", fields.CharField(null=True, max_length=200)),
                ("enrollment_id", fields.BigIntField(null=True)),
                ("inbound_id", fields.BigIntField(null=True)),
                (
                    "received_at",
                    fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False),
                ),
                ("follow_up_on", fields.DateField(null=True)),
                (
                    "referral",
                    fields.JSONField(
                        default=list,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("excerpt", fields.TextField(default="", unique=False)),
                ("note", fields.TextField(default="", unique=False)),
            ],
            options={
                "table": "agenda_item",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Something a reply asks of the salesperson (`sequencer agenda`): an interested reply to",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="Enrollment",
            name="follow_up_on",
            field=fields.DateField(null=True),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="referral",
            field=fields.JSONField(
                default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
            ),
        ),
        ops.AddField(
            model_name="Enrollment",
            name="reply_intent",
            field=fields.CharField(null=True, max_length=16),
        ),
    ]
