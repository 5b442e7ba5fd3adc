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
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS control;

        CREATE TABLE control.users (
            user_id        text PRIMARY KEY,
            email          text NOT NULL,
            password_hash  text,            -- Argon2id; NULL = cannot sign in with a password
            created_at     timestamptz NOT NULL DEFAULT now(),
            disabled_at    timestamptz
        );
        CREATE UNIQUE INDEX users_email ON control.users (lower(email));

        CREATE TABLE control.orgs (
            org_id      text PRIMARY KEY,
            name        text NOT NULL UNIQUE,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        -- What a member may see through sync: a subset of the Khala topics, per org.
        CREATE TABLE control.memberships (
            org_id       text NOT NULL REFERENCES control.orgs (org_id),
            user_id      text NOT NULL REFERENCES control.users (user_id),
            role         text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin', 'owner')),
            sync_scopes  text[] NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (org_id, user_id)
        );
        CREATE INDEX memberships_user ON control.memberships (user_id);

        -- Sessions are bearer secrets; only their sha256 is stored.
        CREATE TABLE control.sessions (
            session_id      text PRIMARY KEY,
            token_hash      bytea NOT NULL UNIQUE,
            user_id         text NOT NULL REFERENCES control.users (user_id),
            org_id          text NOT NULL REFERENCES control.orgs (org_id),
            created_at      timestamptz NOT NULL DEFAULT now(),
            expires_at      timestamptz NOT NULL,
            revoked_at      timestamptz,
            revoked_reason  text
        );
        CREATE INDEX sessions_user ON control.sessions (user_id) WHERE revoked_at IS NULL;

        -- Every sync token minted: who got what, for which resource, until when (audit, and
        -- ownership checks when a user revokes one by jti).
        CREATE TABLE control.issued_tokens (
            jti         text PRIMARY KEY,
            session_id  text NOT NULL REFERENCES control.sessions (session_id),
            user_id     text NOT NULL,
            audience    text NOT NULL,
            scopes      text[] NOT NULL,
            kid         text NOT NULL,
            issued_at   timestamptz NOT NULL,
            expires_at  timestamptz NOT NULL
        );
        CREATE INDEX issued_tokens_session ON control.issued_tokens (session_id);

        -- The revocation feed verifiers poll. Inserts take an advisory lock so `id` order is
        -- commit order and a cursor never skips a row that commits late.
        CREATE TABLE control.revocations (
            id          bigserial PRIMARY KEY,
            kind        text NOT NULL CHECK (kind IN ('jti', 'sid')),
            value       text NOT NULL,
            user_id     text,
            reason      text NOT NULL,
            revoked_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,  -- no token it matches can be alive after this
            UNIQUE (kind, value)
        );

        -- Signing keys. The private key is PKCS#8 encrypted with the deployment's key secret.
        -- not_before = published in the JWKS; activates_at = first signing; retire_after =
        -- dropped from the JWKS (no token it signed can still be alive).
        CREATE TABLE control.signing_keys (
            kid           text PRIMARY KEY,
            alg           text NOT NULL CHECK (alg = 'ES256'),
            public_jwk    jsonb NOT NULL,
            private_key   bytea NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            not_before    timestamptz NOT NULL,
            activates_at  timestamptz NOT NULL,
            retire_after  timestamptz,
            CHECK (activates_at >= not_before)
        );

        CREATE TABLE control.sign_in_failures (
            email      text NOT NULL,
            failed_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX sign_in_failures_email ON control.sign_in_failures (email, failed_at);
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
