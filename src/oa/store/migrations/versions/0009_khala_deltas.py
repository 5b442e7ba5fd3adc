"""khala: journal rows may carry a delta against the document's previous version (issue 11).

Revision ID: 0009_khala_deltas
Revises: 0008_khala_live_queries

The projector holds a document's previous state when it folds, so it computes the JSON
Patch once there and stores it with the row; every sync process and every replay then
sends it without diffing again (see `oa.runtime.projector.deltas`).
- `patch`: RFC 6902 operations (JSON text) turning the base into this row's payload; NULL
  when the row goes whole (new document, delete, a patch not smaller, a switch batch).
- `base_version`: the base's doc_version (same projection_version as the row).
- `base_watermark`: the journal watermark that wrote the base (0 when it was written by a
  rebuild); the sync server uses it to tell whether a client was sent the base.
New nullable columns on a table the roles already hold: the declared privileges are unchanged.
"""

from alembic import op

revision = "0009_khala_deltas"
down_revision = "0008_khala_live_queries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE khala.stream_journal
            ADD COLUMN patch text,
            ADD COLUMN base_version bigint,
            ADD COLUMN base_watermark bigint;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
