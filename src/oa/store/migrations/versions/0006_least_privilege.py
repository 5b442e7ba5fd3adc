"""Least privilege: the gate's own role, grants and audit written only through the owner's
functions, an append-only audit trail; the org a run or worker belongs to.

Revision ID: 0006_least_privilege
Revises: 0005_khala_admin

Why (issue 10): 0005 let `oa_khala_reader`, the role of the internet-facing sync server,
INSERT and UPDATE every `khala_admin` table, so anything that reached its connections
could un-revoke a grant, give it ten years, or rewrite the audit trail. Now:

- `oa_khala_reader` (sync server sessions, HTTP hydration) has SELECT on what it serves
  (`khala`, the journal head) and nothing in `khala_admin`.
- `oa_khala_gate` (the admin API's own pool, in the sync server process) may SELECT the
  gate's tables and EXECUTE four SECURITY DEFINER functions owned by the schema owner:
  `open_grant` (TTL 1-60 minutes, created/expires from the database clock), `revoke_grants`
  (sets revoked_at = now(), nothing else), `record_audit` (append), `request_work`
  (append a pending request). It cannot write a table directly, so the worst a
  compromised sync process can do is what the admin API may do anyway: open a grant of at
  most 60 minutes, revoke, append.
- A trigger holds for every role, the owner included: `mcp_audit` refuses UPDATE, DELETE
  and TRUNCATE (as `runtime.events` does). Grants stay writable by the owner (operators
  and tests move a grant's clock); no other role can write them but through the functions.
- EXECUTE on our functions is revoked from PUBLIC (Postgres grants it by default), and
  PUBLIC loses CREATE/USAGE on schema `public` (only the owner uses it, for alembic).

The declared table of who may do what is `oa/store/privileges.py`; a test compares it with
the database for every table, sequence, function and schema.

Runs and workers get an `org_id` column: the org their first `*.started` event carried,
which the runtime now takes from the caller's signature (see `oa/runtime/signing.py`).
Existing runs are backfilled from their first `run.started` payload, so the column agrees
with what the projections already show.
"""

from alembic import op

revision = "0006_least_privilege"
down_revision = "0005_khala_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oa_khala_gate') THEN
                CREATE ROLE oa_khala_gate LOGIN;
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO oa_khala_gate', current_database());
        END $$;

        -- The reader: SELECT on what it serves, nothing in khala_admin.
        REVOKE ALL ON ALL TABLES IN SCHEMA khala_admin FROM oa_khala_reader;
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA khala_admin FROM oa_khala_reader;
        REVOKE ALL ON SCHEMA khala_admin FROM oa_khala_reader;

        -- Writes to the gate's tables go through these functions only.
        CREATE FUNCTION khala_admin.open_grant(
            p_ticket text, p_reason text, p_requester text, p_scope text, p_ttl_minutes integer
        ) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            gid bigint;
        BEGIN
            IF p_ttl_minutes IS NULL OR p_ttl_minutes < 1 OR p_ttl_minutes > 60 THEN
                RAISE EXCEPTION 'a grant lives 1 to 60 minutes, not %', p_ttl_minutes
                    USING ERRCODE = 'check_violation';
            END IF;
            IF coalesce(btrim(p_ticket), '') = '' OR coalesce(btrim(p_reason), '') = ''
               OR coalesce(btrim(p_requester), '') = '' THEN
                RAISE EXCEPTION 'a grant needs a ticket, a reason and a requester'
                    USING ERRCODE = 'check_violation';
            END IF;
            INSERT INTO khala_admin.grants (ticket, reason, requester, scope, created_at, expires_at)
            VALUES (p_ticket, p_reason, p_requester, p_scope, now(),
                    now() + make_interval(mins => p_ttl_minutes))
            RETURNING id INTO gid;
            RETURN gid;
        END $$;

        CREATE FUNCTION khala_admin.revoke_grants(p_grant_id bigint) RETURNS integer
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            n integer;
        BEGIN
            UPDATE khala_admin.grants SET revoked_at = now()
             WHERE revoked_at IS NULL AND expires_at > now()
               AND (p_grant_id IS NULL OR id = p_grant_id);
            GET DIAGNOSTICS n = ROW_COUNT;
            RETURN n;
        END $$;

        CREATE FUNCTION khala_admin.record_audit(
            p_grant_id bigint, p_ticket text, p_tool text, p_args_digest text, p_outcome text
        ) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            INSERT INTO khala_admin.mcp_audit (grant_id, ticket, tool, args_digest, outcome)
            VALUES (p_grant_id, p_ticket, p_tool, p_args_digest, p_outcome) RETURNING id
        $$;

        CREATE FUNCTION khala_admin.request_work(p_kind text, p_args jsonb, p_grant_id bigint)
        RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            rid bigint;
        BEGIN
            INSERT INTO khala_admin.requests (kind, args, grant_id)
            VALUES (p_kind, coalesce(p_args, '{}'::jsonb), p_grant_id) RETURNING id INTO rid;
            PERFORM pg_notify('khala_admin_requests', rid::text);  -- wake the projector now
            RETURN rid;
        END $$;

        -- Append-only audit trail, for every role.
        CREATE FUNCTION khala_admin.refuse_mutation() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER mcp_audit_append_only
            BEFORE UPDATE OR DELETE ON khala_admin.mcp_audit
            FOR EACH ROW EXECUTE FUNCTION khala_admin.refuse_mutation();
        CREATE TRIGGER mcp_audit_no_truncate
            BEFORE TRUNCATE ON khala_admin.mcp_audit
            FOR EACH STATEMENT EXECUTE FUNCTION khala_admin.refuse_mutation();

        -- Functions are callable by PUBLIC unless revoked; ours are callable by whom we say.
        DO $$
        DECLARE
            f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname IN ('runtime', 'control', 'khala', 'khala_admin') LOOP
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
            END LOOP;
        END $$;
        REVOKE ALL ON SCHEMA public FROM PUBLIC;

        GRANT USAGE ON SCHEMA khala_admin TO oa_khala_gate;
        GRANT SELECT ON khala_admin.grants, khala_admin.mcp_audit, khala_admin.requests TO oa_khala_gate;
        GRANT EXECUTE ON FUNCTION
            khala_admin.open_grant(text, text, text, text, integer),
            khala_admin.revoke_grants(bigint),
            khala_admin.record_audit(bigint, text, text, text, text),
            khala_admin.request_work(text, jsonb, bigint)
            TO oa_khala_gate;

        -- The org of a run / worker, fixed by its first *.started event (runtime-only tables).
        ALTER TABLE runtime.runs ADD COLUMN org_id text;
        ALTER TABLE runtime.codex_workers ADD COLUMN org_id text;
        UPDATE runtime.runs r SET org_id = s.org
          FROM (SELECT DISTINCT ON (stream_id) stream_id, payload::jsonb ->> 'org_id' AS org
                  FROM runtime.events WHERE stream_kind = 'run' AND event_type = 'run.started'
                 ORDER BY stream_id, seq) s
         WHERE r.run_id = s.stream_id AND coalesce(s.org, '') <> '';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
