"""runtime: codex workers, policy decisions, spend, replay.

Revision ID: 0003_runtime_authority
Revises: 0002_control
"""

from alembic import op

revision = "0003_runtime_authority"
down_revision = "0002_control"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT 1")  # filled in by the work that owns this migration


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
