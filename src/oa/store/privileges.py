"""Who may do what in the database: our roles and the privileges each one holds, declared.

This is the contract `tests/integration/test_privileges.py` checks against the live
database for every table, sequence, function and schema outside Postgres' own: anything
granted that is not declared here fails, anything declared that is not granted fails, and
an object nobody declared fails, so a migration that adds a table must say who may touch it.

The roles (created by the migrations, LOGIN, no other attributes):
- `oa_khala_reader`: the sync server's sessions and HTTP hydration (internet-facing).
  SELECT on what it serves, nothing else.
- `oa_khala_writer`: the projector, Khala's single writer; it also claims and finishes the
  admin API's requests.
- `oa_khala_gate`: the admin API's pool (production-access grants, the MCP audit trail,
  operator requests). It reads the gate's tables and writes them only through the owner's
  SECURITY DEFINER functions, which decide expiry and revocation with the database clock.
The owner (whoever runs the migrations) owns every object; the runtime and control connect
as it today and are not declared here.
"""

from __future__ import annotations

READER = "oa_khala_reader"
WRITER = "oa_khala_writer"
GATE = "oa_khala_gate"
ROLES = (READER, WRITER, GATE)

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")

Grants = dict[str, dict[str, frozenset[str]]]  # object -> role -> privileges (absent: none)

_READ = frozenset({"SELECT"})
_ALL_TABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"})
_KHALA_READ_WRITE = {READER: _READ, WRITER: _ALL_TABLE}

TABLES: Grants = {
    # runtime: the authority. The projector tails the journal; the reader shows lag.
    "runtime.runs": {},
    "runtime.journal_head": {READER: _READ, WRITER: _READ},
    "runtime.events": {WRITER: _READ},
    "runtime.run_frames": {},
    "runtime.codex_workers": {},
    "runtime.spend_authorizations": {},
    "runtime.spend_reservations": {},
    "runtime.policy_decisions": {},
    # control: nobody but its owner.
    "control.users": {},
    "control.orgs": {},
    "control.memberships": {},
    "control.sessions": {},
    "control.issued_tokens": {},
    "control.revocations": {},
    "control.signing_keys": {},
    "control.sign_in_failures": {},
    # khala: derived state, the projector writes, the sync server reads.
    "khala.documents": _KHALA_READ_WRITE,
    "khala.topic_heads": _KHALA_READ_WRITE,
    "khala.stream_journal": _KHALA_READ_WRITE,
    "khala.state": _KHALA_READ_WRITE,
    "khala.checkpoints": _KHALA_READ_WRITE,
    "khala.errors": _KHALA_READ_WRITE,
    # khala_admin: the gate reads; writes only through the functions below.
    "khala_admin.grants": {GATE: _READ},
    "khala_admin.mcp_audit": {GATE: _READ},
    "khala_admin.requests": {GATE: _READ, WRITER: frozenset({"SELECT", "UPDATE"})},
    # alembic's version table.
    "public.oa_schema_version": {},
}

_SEQ_WRITE = frozenset({"USAGE", "SELECT", "UPDATE"})
SEQUENCES: Grants = {
    "control.revocations_id_seq": {},
    "khala.batch_ids": {WRITER: _SEQ_WRITE},
    "khala.errors_id_seq": {WRITER: _SEQ_WRITE},
    "khala_admin.grants_id_seq": {},
    "khala_admin.mcp_audit_id_seq": {},
    "khala_admin.requests_id_seq": {},
}

_EXECUTE = frozenset({"EXECUTE"})
FUNCTIONS: Grants = {
    "runtime.refuse_event_mutation()": {},
    "khala_admin.refuse_mutation()": {},
    "khala_admin.open_grant(text,text,text,text,integer)": {GATE: _EXECUTE},
    "khala_admin.revoke_grants(bigint)": {GATE: _EXECUTE},
    "khala_admin.record_audit(bigint,text,text,text,text)": {GATE: _EXECUTE},
    "khala_admin.request_work(text,jsonb,bigint)": {GATE: _EXECUTE},
}

_USAGE = frozenset({"USAGE"})
SCHEMAS: Grants = {
    "public": {},
    "runtime": {READER: _USAGE, WRITER: _USAGE},
    "control": {},
    "khala": {READER: _USAGE, WRITER: _USAGE},
    "khala_admin": {WRITER: _USAGE, GATE: _USAGE},
}


def allowed(grants: Grants, obj: str, role: str) -> frozenset[str]:
    return grants.get(obj, {}).get(role, frozenset())
