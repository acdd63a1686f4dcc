-- generate_schemas(safe=True) for sequencer/store/models.py at commit 19ca62f
-- (postgres; tortoise-orm 1.1.9), by tests/schemas/capture.py 19ca62f
CREATE TABLE IF NOT EXISTS "enrollment" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "email" VARCHAR(320) NOT NULL,
    "sequence" VARCHAR(200) NOT NULL,
    "mailbox" VARCHAR(100) NOT NULL,
    "variables" JSONB NOT NULL,
    "state" VARCHAR(20) NOT NULL,
    "reason" TEXT,
    "steps_sent" INT NOT NULL,
    "next_at" TIMESTAMPTZ,
    "claimed_until" TIMESTAMPTZ,
    "attempts" INT NOT NULL,
    "last_error" TEXT,
    "thread_subject" TEXT,
    "next_reasons" JSONB NOT NULL,
    "promises" JSONB NOT NULL,
    "promised" BOOL NOT NULL,
    "paused_until" TIMESTAMPTZ,
    "enrolled_at" TIMESTAMPTZ NOT NULL,
    "last_sent_at" TIMESTAMPTZ,
    "finished_at" TIMESTAMPTZ,
    "ended_by_id" BIGINT
);
CREATE INDEX IF NOT EXISTS "idx_enrollment_email_248563" ON "enrollment" ("email");
CREATE INDEX IF NOT EXISTS "idx_enrollment_state_da66b2" ON "enrollment" ("state");
CREATE INDEX IF NOT EXISTS "idx_enrollment_next_at_f1ea62" ON "enrollment" ("next_at");
COMMENT ON TABLE "enrollment" IS 'One contact going through one sequence.';
CREATE TABLE IF NOT EXISTS "inbound_message" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "mailbox" VARCHAR(100) NOT NULL,
    "uidvalidity" BIGINT NOT NULL,
    "uid" BIGINT NOT NULL,
    "message_id" VARCHAR(998),
    "from_address" VARCHAR(320),
    "subject" TEXT NOT NULL,
    "verdict" VARCHAR(32) NOT NULL,
    "kind" VARCHAR(32),
    "rules" JSONB NOT NULL,
    "action" TEXT NOT NULL,
    "received_at" TIMESTAMPTZ NOT NULL,
    "enrollment_id" BIGINT REFERENCES "enrollment" ("id") ON DELETE SET NULL,
    CONSTRAINT "uid_inbound_mes_mailbox_041ad9" UNIQUE ("mailbox", "uidvalidity", "uid")
);
COMMENT ON TABLE "inbound_message" IS 'Every inbound message we matched or acted on, with the verdict and the rules.';
CREATE TABLE IF NOT EXISTS "mailbox_cursor" (
    "mailbox" VARCHAR(100) NOT NULL PRIMARY KEY,
    "uidvalidity" BIGINT NOT NULL,
    "last_uid" BIGINT NOT NULL
);
COMMENT ON TABLE "mailbox_cursor" IS 'Where the inbox watcher got to: the folder''s UIDVALIDITY and the last UID handled.';
CREATE TABLE IF NOT EXISTS "mailbox_state" (
    "mailbox" VARCHAR(100) NOT NULL PRIMARY KEY,
    "next_free_at" TIMESTAMPTZ,
    "paused_until" TIMESTAMPTZ,
    "pause_reason" TEXT
);
COMMENT ON TABLE "mailbox_state" IS 'Per-mailbox sending state shared by every daemon on the database: when its pacing';
CREATE TABLE IF NOT EXISTS "sent_message" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "step" INT NOT NULL,
    "email" VARCHAR(320) NOT NULL,
    "mailbox" VARCHAR(100) NOT NULL,
    "message_id" VARCHAR(255) NOT NULL UNIQUE,
    "subject" TEXT NOT NULL,
    "status" VARCHAR(12) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "sent_at" TIMESTAMPTZ,
    "enrollment_id" BIGINT NOT NULL REFERENCES "enrollment" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_sent_messag_enrollm_9d03c9" UNIQUE ("enrollment_id", "step")
);
CREATE INDEX IF NOT EXISTS "idx_sent_messag_email_47b13f" ON "sent_message" ("email");
CREATE INDEX IF NOT EXISTS "idx_sent_messag_mailbox_db7d64" ON "sent_message" ("mailbox");
COMMENT ON TABLE "sent_message" IS 'The outbound log. A row is written, with its Message-ID, before SMTP is spoken.';
CREATE TABLE IF NOT EXISTS "suppression" (
    "email" VARCHAR(320) NOT NULL PRIMARY KEY,
    "reason" VARCHAR(64) NOT NULL,
    "detail" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE "suppression" IS 'Addresses no sequence may ever enroll again (hard bounces, removal requests).';
