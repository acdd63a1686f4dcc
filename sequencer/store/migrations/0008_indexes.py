from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from sequencer.store.indexes import Where


class Migration(migrations.Migration):
    dependencies = [("models", "0007_oauth")]

    initial = False

    operations = [
        ops.AddIndex(
            model_name="Enrollment",
            index=Where(
                fields=["state", "next_at", "id"],
                name="enrollment_due_idx",
                where='"state" = \'active\' AND "hold" IS NULL',
            ),
        ),
        ops.AddIndex(
            model_name="Enrollment",
            index=Index(fields=["state", "promised"], name="enrollment_promised_idx"),
        ),
        ops.AddIndex(
            model_name="Enrollment",
            index=Where(
                fields=["hold", "state", "hold_until"],
                name="enrollment_held_idx",
                where='"hold" IS NOT NULL',
            ),
        ),
        ops.AddIndex(
            model_name="Enrollment",
            index=Index(
                fields=["state", "mailbox", "hold", "next_at"], name="enrollment_tally_idx"
            ),
        ),
        ops.AddIndex(
            model_name="SentMessage",
            index=Index(fields=["mailbox", "attempted_at"], name="sent_message_pace_idx"),
        ),
        ops.AddIndex(
            model_name="SentMessage",
            index=Index(fields=["email", "attempted_at"], name="sent_message_gap_idx"),
        ),
    ]
