"""khala: documents, topic heads (watermarks), the stream journal, projector checkpoints; roles.

Revision ID: 0004_khala
Revises: 0003_runtime_authority

Two roles enforce the single writer in Postgres itself: `oa_khala_writer` (the projector,
the only one that may write) and `oa_khala_reader` (the sync server: SELECT only).
"""

from alembic import op

revision = "0004_khala"
down_revision = "0003_runtime_authority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS khala;

        -- Live read models. `generation` lets a rebuild fill a new one beside the live one.
        CREATE TABLE khala.documents (
            generation    bigint NOT NULL,
            doc_key       text NOT NULL,
            topic         text NOT NULL,
            doc_version   bigint NOT NULL,
            projection_version int NOT NULL,
            payload       text NOT NULL,
            payload_hash  text NOT NULL,
            owner_user    text,
            org_id        text,
            watermark     bigint NOT NULL,
            PRIMARY KEY (generation, doc_key)
        );
        CREATE INDEX documents_topic ON khala.documents (generation, topic, doc_key);

        -- Per topic: the watermark counter and how far back the journal still reaches.
        CREATE TABLE khala.topic_heads (
            topic            text PRIMARY KEY,
            watermark        bigint NOT NULL DEFAULT 0,
            retention_floor  bigint NOT NULL DEFAULT 0
        );

        -- Every document change, in watermark order per topic. `batch_id` groups the rows of
        -- one projector transaction, which reach clients as one update_batch.
        CREATE TABLE khala.stream_journal (
            topic         text NOT NULL,
            watermark     bigint NOT NULL,
            batch_id      bigint NOT NULL,
            doc_key       text NOT NULL,
            doc_version   bigint NOT NULL,
            payload       text,
            payload_hash  text,
            owner_user    text,
            org_id        text,
            committed_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, watermark)
        );
        CREATE INDEX stream_journal_batch ON khala.stream_journal (batch_id);
        CREATE SEQUENCE khala.batch_ids;

        -- The projector: which generation is live, and how far each projection has read.
        CREATE TABLE khala.state (
            id               smallint PRIMARY KEY CHECK (id = 1),
            live_generation  bigint NOT NULL
        );
        INSERT INTO khala.state VALUES (1, 1);

        CREATE TABLE khala.checkpoints (
            generation     bigint NOT NULL,
            projection     text NOT NULL,
            position       bigint NOT NULL DEFAULT 0,
            failed_at_position bigint,
            error          text,
            updated_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (generation, projection)
        );

        CREATE TABLE khala.errors (
            id          bigserial PRIMARY KEY,
            at          timestamptz NOT NULL DEFAULT now(),
            source      text NOT NULL,
            projection  text,
            position    bigint,
            message     text NOT NULL
        );

        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oa_khala_writer') THEN
                CREATE ROLE oa_khala_writer LOGIN;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oa_khala_reader') THEN
                CREATE ROLE oa_khala_reader LOGIN;
            END IF;
        END $$;
        """
    )
    # Grants are per database: run them for this one.
    op.execute(
        """
        DO $$
        BEGIN
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO oa_khala_writer, oa_khala_reader',
                           current_database());
        END $$;
        GRANT USAGE ON SCHEMA khala TO oa_khala_writer, oa_khala_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA khala TO oa_khala_reader;
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA khala TO oa_khala_writer;
        GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA khala TO oa_khala_writer;
        GRANT USAGE ON SCHEMA runtime TO oa_khala_writer;
        GRANT SELECT ON runtime.events, runtime.journal_head TO oa_khala_writer;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
