from tortoise import migrations
from tortoise.migrations import operations as ops

from sequencer.store.indexes import Where


class Migration(migrations.Migration):
    dependencies = [("models", "0009_pace_count")]

    initial = False

    operations = [
        ops.AddIndex(
            model_name="Enrollment",
            index=Where(
                fields=["state", "mailbox", "next_at", "id"],
                name="enrollment_mailbox_due_idx",
                where='"state" = \'active\' AND "hold" IS NULL',
            ),
        ),
        ops.AddIndex(
            model_name="Enrollment",
            index=Where(
                fields=["claimed_until"],
                name="enrollment_claimed_idx",
                where='NOT "claimed_until" IS NULL',
            ),
        ),
        ops.AddIndex(
            model_name="SentMessage",
            index=Where(
                fields=["mailbox", "status", "id"],
                name="sent_message_uncopied_idx",
                where='"copied_at" IS NULL',
            ),
        ),
    ]
