-- generate_schemas(safe=True) for sequencer/store/models.py at commit faab963
-- (sqlite; tortoise-orm 1.1.9), by tests/schemas/capture.py faab963
CREATE TABLE IF NOT EXISTS "enrollment" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "email" VARCHAR(320) NOT NULL,
    "sequence" VARCHAR(200) NOT NULL,
    "mailbox" VARCHAR(100) NOT NULL,
    "variables" JSON NOT NULL,
    "state" VARCHAR(20) NOT NULL,
    "reason" TEXT,
    "steps_sent" INT NOT NULL,
    "next_at" TIMESTAMP,
    "claimed_until" TIMESTAMP,
    "attempts" INT NOT NULL,
    "last_error" TEXT,
    "thread_subject" TEXT,
    "enrolled_at" TIMESTAMP NOT NULL,
    "last_sent_at" TIMESTAMP,
    "finished_at" TIMESTAMP,
    "ended_by_id" BIGINT
) /* One contact going through one sequence. */;
CREATE INDEX IF NOT EXISTS "idx_enrollment_email_248563" ON "enrollment" ("email");
CREATE INDEX IF NOT EXISTS "idx_enrollment_state_da66b2" ON "enrollment" ("state");
CREATE INDEX IF NOT EXISTS "idx_enrollment_next_at_f1ea62" ON "enrollment" ("next_at");
CREATE TABLE IF NOT EXISTS "inbound_message" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "mailbox" VARCHAR(100) NOT NULL,
    "uidvalidity" BIGINT NOT NULL,
    "uid" BIGINT NOT NULL,
    "message_id" VARCHAR(998),
    "from_address" VARCHAR(320),
    "subject" TEXT NOT NULL,
    "verdict" VARCHAR(32) NOT NULL,
    "kind" VARCHAR(32),
    "rules" JSON NOT NULL,
    "action" TEXT NOT NULL,
    "received_at" TIMESTAMP NOT NULL,
    "enrollment_id" BIGINT REFERENCES "enrollment" ("id") ON DELETE SET NULL,
    CONSTRAINT "uid_inbound_mes_mailbox_041ad9" UNIQUE ("mailbox", "uidvalidity", "uid")
) /* Every inbound message we matched or acted on, with the verdict and the rules. */;
CREATE TABLE IF NOT EXISTS "mailbox_cursor" (
    "mailbox" VARCHAR(100) NOT NULL PRIMARY KEY,
    "uidvalidity" BIGINT NOT NULL,
    "last_uid" BIGINT NOT NULL
) /* Where the inbox watcher got to: the folder's UIDVALIDITY and the last UID handled. */;
CREATE TABLE IF NOT EXISTS "sent_message" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "step" INT NOT NULL,
    "message_id" VARCHAR(255) NOT NULL UNIQUE,
    "subject" TEXT NOT NULL,
    "status" VARCHAR(12) NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "sent_at" TIMESTAMP,
    "enrollment_id" BIGINT NOT NULL REFERENCES "enrollment" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_sent_messag_enrollm_9d03c9" UNIQUE ("enrollment_id", "step")
) /* The outbound log. A row is written, with its Message-ID, before SMTP is spoken. */;
CREATE TABLE IF NOT EXISTS "suppression" (
    "email" VARCHAR(320) NOT NULL PRIMARY KEY,
    "reason" VARCHAR(64) NOT NULL,
    "detail" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL
) /* Addresses no sequence may ever enroll again (hard bounces, removal requests). */;
