"""runtime: runs, the append-only event journal, frames.

Revision ID: 0001_runtime_journal
Revises:
"""

from alembic import op

revision = "0001_runtime_journal"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS runtime;

        -- One row per run: the head of its event stream and its state-machine status.
        CREATE TABLE runtime.runs (
            run_id      text PRIMARY KEY,
            owner       text NOT NULL,
            status      text NOT NULL DEFAULT 'created',
            last_seq    bigint NOT NULL DEFAULT 0,
            last_hash   text,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );

        -- The global journal position counter. Taking its row lock serializes the
        -- allocation, and the lock is held to commit, so position order is commit order.
        CREATE TABLE runtime.journal_head (
            id        smallint PRIMARY KEY CHECK (id = 1),
            position  bigint NOT NULL
        );
        INSERT INTO runtime.journal_head VALUES (1, 0);

        -- Every event of every stream (runs now; workers later), append-only.
        CREATE TABLE runtime.events (
            position         bigint PRIMARY KEY,
            stream_kind      text NOT NULL,
            stream_id        text NOT NULL,
            seq              bigint NOT NULL CHECK (seq >= 1),
            event_type       text NOT NULL,
            payload          text NOT NULL,  -- canonical JSON: the exact bytes hashed
            payload_hash     text NOT NULL,
            prev_hash        text,
            hash             text NOT NULL,
            idempotency_key  text,
            principal        text NOT NULL,
            recorded_at      timestamptz NOT NULL DEFAULT now(),
            UNIQUE (stream_kind, stream_id, seq)
        );
        CREATE UNIQUE INDEX events_idempotency
            ON runtime.events (stream_kind, stream_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;

        CREATE FUNCTION runtime.refuse_event_mutation() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'runtime.events is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER events_append_only
            BEFORE UPDATE OR DELETE ON runtime.events
            FOR EACH ROW EXECUTE FUNCTION runtime.refuse_event_mutation();
        CREATE TRIGGER events_no_truncate
            BEFORE TRUNCATE ON runtime.events
            FOR EACH STATEMENT EXECUTE FUNCTION runtime.refuse_event_mutation();

        -- Inputs sent to a run (user messages, tool approvals), idempotent by frame_id.
        CREATE TABLE runtime.run_frames (
            run_id        text NOT NULL REFERENCES runtime.runs (run_id),
            frame_id      text NOT NULL,
            thread_id     text NOT NULL,
            frame_type    text NOT NULL,
            payload       text NOT NULL,
            payload_hash  text NOT NULL,
            principal     text NOT NULL,
            received_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, frame_id)
        );
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
