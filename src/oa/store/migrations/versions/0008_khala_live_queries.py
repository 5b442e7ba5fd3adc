"""khala: journal and document indexes for live queries (issue 11).

Revision ID: 0008_khala_live_queries
Revises: 0007_projection_versions

A live query resumes by replaying only what its scope matches, so the cost of a resume
must not grow with unrelated activity in the topic:
- `stream_journal_doc`: one document's changes after a watermark.
- `stream_journal_stream`: one run's or worker's changes after a watermark (the stream is
  the key's second `:`-separated part: `runtime/run_timeline:<run>`,
  `runtime/codex_worker_event:<worker>:<seq>`).
- `documents_stream`: a scope's current documents (hydration without a cursor).
- `documents_owner` / `documents_org`: a list's candidates for one user (own or org
  documents), instead of the whole topic.
Indexes only: no new table, so the declared privileges are unchanged.
"""

from alembic import op

revision = "0008_khala_live_queries"
down_revision = "0007_projection_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX stream_journal_doc ON khala.stream_journal (topic, doc_key, watermark);
        CREATE INDEX stream_journal_stream
            ON khala.stream_journal (topic, (split_part(doc_key, ':', 2)), watermark);
        CREATE INDEX documents_stream
            ON khala.documents (generation, topic, (split_part(doc_key, ':', 2)));
        CREATE INDEX documents_owner ON khala.documents (generation, topic, owner_user);
        CREATE INDEX documents_org ON khala.documents (generation, topic, org_id);
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
