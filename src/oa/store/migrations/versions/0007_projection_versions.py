"""Projection versions and per-projection builds on Khala's checkpoints.

Revision ID: 0007_projection_versions
Revises: 0006_least_privilege

Why (issue 12): `projection_version` was written on documents but never read, so changing
a fold changed nothing until someone rebuilt by hand, and a new projection started at
position 0 in the live generation, holding every live topic back while it caught up.

- `version`: the projection version a checkpoint's documents were folded with. The
  projector compares it with the declared version (proto/oa/sync/v1/catalog.proto) on
  start and rebuilds those that differ. Every projection shipped so far was at version 1,
  so existing rows are backfilled with 1 (no rebuild on upgrade).
- `builds_into`: set on the checkpoint of a projection being built in a generation of its
  own (blue/green per projection): the live generation it will switch into once caught up.
  NULL for the checkpoints of a live generation or of a whole-generation rebuild.

- `khala.stream_journal.projection_version`: the version that folded each journaled change,
  sent to clients with every update so a re-versioned document (same `doc_version`, new
  fold) replaces the one they hold instead of being dropped as a repeat. Existing rows: 1.

Columns only: no new table, sequence or function, so `oa/store/privileges.py` is unchanged.
"""

from alembic import op

revision = "0007_projection_versions"
down_revision = "0006_least_privilege"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE khala.checkpoints ADD COLUMN version int;
        UPDATE khala.checkpoints SET version = 1;
        ALTER TABLE khala.checkpoints ADD COLUMN builds_into bigint;
        ALTER TABLE khala.stream_journal ADD COLUMN projection_version int NOT NULL DEFAULT 1;
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE khala.checkpoints DROP COLUMN builds_into, DROP COLUMN version")
    op.execute("ALTER TABLE khala.stream_journal DROP COLUMN projection_version")
