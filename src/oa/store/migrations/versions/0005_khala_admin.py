"""khala_admin: production-access grants, the MCP audit trail, and operator requests.

Revision ID: 0005_khala_admin
Revises: 0004_khala

These rows are not derived state (they cannot be rebuilt from the runtime journal), so
they live outside the `khala` schema, which stays projector-only. The sync server's
read-only role may write here and nowhere else: it records grants and audit rows for its
admin API, and it *requests* a rebuild or prune, which the projector (the single writer
of `khala`) claims and executes.
"""

from alembic import op

revision = "0005_khala_admin"
down_revision = "0004_khala"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS khala_admin;

        -- A temporary, change-controlled permission for MCP calls on a production deployment.
        CREATE TABLE khala_admin.grants (
            id          bigserial PRIMARY KEY,
            ticket      text NOT NULL,
            reason      text NOT NULL,
            requester   text NOT NULL,
            scope       text NOT NULL CHECK (scope IN ('read', 'write')),
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            revoked_at  timestamptz,
            CHECK (expires_at > created_at AND expires_at <= created_at + interval '60 minutes')
        );
        CREATE INDEX grants_live ON khala_admin.grants (expires_at) WHERE revoked_at IS NULL;

        -- Every MCP call on a production deployment, allowed or refused.
        CREATE TABLE khala_admin.mcp_audit (
            id           bigserial PRIMARY KEY,
            at           timestamptz NOT NULL DEFAULT now(),
            grant_id     bigint REFERENCES khala_admin.grants (id),
            ticket       text,
            tool         text NOT NULL,
            args_digest  text NOT NULL,
            outcome      text NOT NULL
        );

        -- Work the admin API asks of the projector: rebuild, prune, audit.
        CREATE TABLE khala_admin.requests (
            id           bigserial PRIMARY KEY,
            kind         text NOT NULL CHECK (kind IN ('rebuild', 'prune', 'audit')),
            args         jsonb NOT NULL DEFAULT '{}',
            status       text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'done', 'failed')),
            result       jsonb,
            grant_id     bigint REFERENCES khala_admin.grants (id),
            created_at   timestamptz NOT NULL DEFAULT now(),
            finished_at  timestamptz
        );
        CREATE INDEX requests_pending ON khala_admin.requests (id) WHERE status = 'pending';
        """
    )
    op.execute(
        """
        GRANT USAGE ON SCHEMA khala_admin TO oa_khala_reader, oa_khala_writer;
        GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA khala_admin TO oa_khala_reader;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA khala_admin TO oa_khala_reader;
        GRANT SELECT, UPDATE ON khala_admin.requests TO oa_khala_writer;
        -- Projector lag for the admin API: how far the journal head is (a position, not truth).
        GRANT USAGE ON SCHEMA runtime TO oa_khala_reader;
        GRANT SELECT ON runtime.journal_head TO oa_khala_reader;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
