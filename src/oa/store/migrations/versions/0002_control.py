"""control: users, orgs, sessions, signing keys, revocations.

Revision ID: 0002_control
Revises: 0001_runtime_journal
"""

from alembic import op

revision = "0002_control"
down_revision = "0001_runtime_journal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT 1")  # filled in by the work that owns this migration


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
