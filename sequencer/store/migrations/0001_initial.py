"""The schema as it was at commit faab963, before the etiquette columns: the first version
any database was made with (by generate_schemas, before migrations existed)."""

import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Enrollment",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("email", fields.CharField(db_index=True, max_length=320)),
                ("sequence", fields.CharField(max_length=200)),
                ("mailbox", fields.CharField(max_length=100)),
                (
                    "variables",
                    fields.JSONField(
                        default=dict,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("state", fields.CharField(default="active", db_index=True, max_length=20)),
                ("reason", fields.TextField(null=True, unique=False)),
                ("steps_sent", fields.IntField(default=0)),
                (
                    "next_at",
                    fields.DatetimeField(
                        null=True, db_index=True, auto_now=False, auto_now_add=False
                    ),
                ),
                (
                    "claimed_until",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                ("attempts", fields.IntField(default=0)),
                ("last_error", fields.TextField(null=True, unique=False)),
                ("thread_subject", fields.TextField(null=True, unique=False)),
                ("enrolled_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                (
                    "last_sent_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                (
                    "finished_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                ("ended_by_id", fields.BigIntField(null=True)),
            ],
            options={
                "table": "enrollment",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One contact going through one sequence.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="InboundMessage",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("mailbox", fields.CharField(max_length=100)),
                ("uidvalidity", fields.BigIntField()),
                ("uid", fields.BigIntField()),
                ("message_id", fields.CharField(null=True, max_length=998)),
                ("from_address", fields.CharField(null=True, max_length=320)),
                ("subject", fields.TextField(default="", unique=False)),
                ("verdict", fields.CharField(max_length=32)),
                ("kind", fields.CharField(null=True, max_length=32)),
                (
                    "rules",
                    fields.JSONField(
                        default=list,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("action", fields.TextField(default="", unique=False)),
                (
                    "enrollment",
                    fields.ForeignKeyField(
                        "models.Enrollment",
                        source_field="enrollment_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name="inbound",
                        on_delete=OnDelete.SET_NULL,
                    ),
                ),
                ("received_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "inbound_message",
                "app": "models",
                "unique_together": (("mailbox", "uidvalidity", "uid"),),
                "pk_attr": "id",
                "table_description": "Every inbound message we matched or acted on, with the verdict and the rules.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MailboxCursor",
            fields=[
                (
                    "mailbox",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=100),
                ),
                ("uidvalidity", fields.BigIntField()),
                ("last_uid", fields.BigIntField()),
            ],
            options={
                "table": "mailbox_cursor",
                "app": "models",
                "pk_attr": "mailbox",
                "table_description": "Where the inbox watcher got to: the folder's UIDVALIDITY and the last UID handled.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SentMessage",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "enrollment",
                    fields.ForeignKeyField(
                        "models.Enrollment",
                        source_field="enrollment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="sent",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("step", fields.IntField()),
                ("message_id", fields.CharField(unique=True, max_length=255)),
                ("subject", fields.TextField(unique=False)),
                ("status", fields.CharField(default="pending", max_length=12)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("sent_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "sent_message",
                "app": "models",
                "unique_together": (("enrollment", "step"),),
                "pk_attr": "id",
                "table_description": "The outbound log. A row is written, with its Message-ID, before SMTP is spoken.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Suppression",
            fields=[
                (
                    "email",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=320),
                ),
                ("reason", fields.CharField(max_length=64)),
                ("detail", fields.TextField(default="", unique=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "suppression",
                "app": "models",
                "pk_attr": "email",
                "table_description": "Addresses no sequence may ever enroll again (hard bounces, removal requests).",
            },
            bases=["Model"],
        ),
    ]
