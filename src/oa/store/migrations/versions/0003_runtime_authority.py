"""runtime: codex workers, policy decisions, spend, replay.

Codex workers are a second kind of event stream: their head row has the same columns as a
run's (owner, status, last_seq, last_hash, updated_at), so the journal writer treats both
alike and their events land in `runtime.events` with global positions.

Money is `bigint` sats with CHECKs here too, so no code path can store a negative amount
or let spent + reserved pass the authorization's maximum, whatever the application does.

Revision ID: 0003_runtime_authority
Revises: 0002_control
"""

from alembic import op

revision = "0003_runtime_authority"
down_revision = "0002_control"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS runtime;

        -- One row per Codex worker: its stream head plus what the API filters and reports.
        -- Heartbeat staleness is computed from last_heartbeat_at at read time, never stored.
        CREATE TABLE runtime.codex_workers (
            worker_id          text PRIMARY KEY,
            owner              text NOT NULL,
            status             text NOT NULL DEFAULT 'starting'
                CHECK (status IN ('starting', 'running', 'stopping', 'stopped', 'failed')),
            last_seq           bigint NOT NULL DEFAULT 0,
            last_hash          text,
            workspace_ref      text,
            adapter            text,
            run_id             text,
            metadata           text NOT NULL DEFAULT '{}',
            last_heartbeat_at  timestamptz,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX codex_workers_owner ON runtime.codex_workers (owner, updated_at DESC);
        CREATE INDEX codex_workers_live ON runtime.codex_workers (status)
            WHERE status IN ('starting', 'running', 'stopping');

        -- Spend authorizations: a budget a principal grants, and where it stands.
        CREATE TABLE runtime.spend_authorizations (
            authorization_id   text PRIMARY KEY,
            owner              text NOT NULL,
            mode               text NOT NULL CHECK (mode IN
                ('interactive', 'delegated_budget', 'delegated_budget_with_threshold', 'deny')),
            max_total_sats     bigint NOT NULL CHECK (max_total_sats > 0),
            max_per_call_sats  bigint CHECK (max_per_call_sats > 0),
            max_per_day_sats   bigint CHECK (max_per_day_sats > 0),
            threshold_sats     bigint CHECK (threshold_sats > 0),
            allowed_tools      text[],
            spent_sats         bigint NOT NULL DEFAULT 0 CHECK (spent_sats >= 0),
            reserved_sats      bigint NOT NULL DEFAULT 0 CHECK (reserved_sats >= 0),
            day                date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
            day_used_sats      bigint NOT NULL DEFAULT 0 CHECK (day_used_sats >= 0),
            expires_at         timestamptz,
            revoked_at         timestamptz,
            revoke_reason      text,
            params_hash        text NOT NULL,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            CHECK (spent_sats + reserved_sats <= max_total_sats)
        );

        -- Reservations: one per (authorization, run, tool call).
        CREATE TABLE runtime.spend_reservations (
            reservation_id     text PRIMARY KEY,
            authorization_id   text NOT NULL REFERENCES runtime.spend_authorizations,
            run_id             text NOT NULL,
            tool_call_id       text NOT NULL,
            tool               text NOT NULL,
            owner              text NOT NULL,
            amount_sats        bigint NOT NULL CHECK (amount_sats > 0),
            committed_sats     bigint CHECK (committed_sats >= 0 AND committed_sats <= amount_sats),
            state              text NOT NULL DEFAULT 'reserved'
                CHECK (state IN ('reserved', 'committed', 'released', 'reconcile_required')),
            decision_id        text NOT NULL,
            day                date NOT NULL,
            deadline_at        timestamptz NOT NULL,
            reason             text,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            CHECK ((state = 'committed') = (committed_sats IS NOT NULL)),
            UNIQUE (authorization_id, run_id, tool_call_id)
        );
        CREATE INDEX spend_reservations_open ON runtime.spend_reservations (deadline_at)
            WHERE state = 'reserved';
        CREATE INDEX spend_reservations_reconcile ON runtime.spend_reservations (owner, created_at)
            WHERE state = 'reconcile_required';

        -- Policy decisions, written with the spend change they justify (an outbox): the
        -- decision's run events are appended from here, so a crash between the two
        -- transactions delays the events (the sweeper publishes them) but never loses them.
        CREATE TABLE runtime.policy_decisions (
            decision_id   text PRIMARY KEY,
            run_id        text NOT NULL,
            owner         text NOT NULL,
            events        text NOT NULL,  -- JSON list of {event_type, payload}
            response      text NOT NULL,  -- the decision as the API returned it
            created_at    timestamptz NOT NULL DEFAULT now(),
            published_at  timestamptz
        );
        CREATE INDEX policy_decisions_unpublished ON runtime.policy_decisions (created_at)
            WHERE published_at IS NULL;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
