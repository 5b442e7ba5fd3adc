"""Every role's privileges on every object equal the declared table (`oa/store/privileges.py`).

Walks every table, sequence, function and schema outside Postgres' own, so an object a
future migration adds without declaring who may touch it fails here. Then the attacks of
issue 10 as the sync server's role, and the audit trail's append-only rule for the owner.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from oa.store import migrate
from oa.store import privileges as p
from oa.store.database import with_user
from tests.support.pg import fresh_database

SYSTEM = "('pg_catalog', 'information_schema', 'pg_toast')"
OURS = f"n.nspname NOT IN {SYSTEM} AND n.nspname !~ '^pg_(temp|toast_temp)_'"


def _objects(conn: psycopg.Connection, relkinds: str) -> list[tuple[int, str]]:
    rows = conn.execute(
        f"SELECT c.oid::int, n.nspname || '.' || c.relname FROM pg_class c"
        f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = ANY(%s) AND {OURS}",
        (list(relkinds),),
    ).fetchall()
    return [(int(oid), str(name)) for oid, name in rows]


def _functions(conn: psycopg.Connection) -> list[tuple[int, str]]:
    rows = conn.execute(
        "SELECT p.oid::int, n.nspname || '.' || p.proname || '('"
        " || coalesce(array_to_string(array(SELECT format_type(t, NULL)"
        "    FROM unnest(p.proargtypes) t), ','), '') || ')'"
        f" FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {OURS}"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
    ).fetchall()
    return [(int(oid), str(name)) for oid, name in rows]


@pytest.fixture(scope="module")
def migrated() -> Iterator[str]:
    """A database of its own, exactly as the migrations leave it (no test's leftovers)."""
    with fresh_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module")
def owner(migrated: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(migrated, autocommit=True) as conn:
        yield conn


def _check(
    conn: psycopg.Connection,
    kind: str,
    objects: list[tuple[int, str]],
    declared: p.Grants,
    privileges: tuple[str, ...],
    has: str,
) -> list[str]:
    problems = [
        f"{kind} {name} is not declared in oa/store/privileges.py"
        for _, name in objects
        if name not in declared
    ]
    found = {name for _, name in objects}
    problems += [f"{kind} {name} is declared but does not exist" for name in declared if name not in found]
    for oid, name in objects:
        for role in p.ROLES:
            held = {
                priv
                for priv in privileges
                if conn.execute(has, {"role": role, "oid": oid, "priv": priv}).fetchone() == (True,)
            }
            wanted = set(p.allowed(declared, name, role))
            if held != wanted:
                problems.append(f"{role} on {kind} {name}: holds {sorted(held)}, declared {sorted(wanted)}")
    return problems


def test_our_roles_are_the_declared_ones(owner: psycopg.Connection) -> None:
    rows = owner.execute(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin"
        " FROM pg_roles WHERE rolname LIKE 'oa\\_%'"
    ).fetchall()
    assert {r[0] for r in rows} == set(p.ROLES)
    for name, *attributes, login in rows:
        assert attributes == [False, False, False, False] and login, f"{name} has more than LOGIN"


def test_table_privileges_are_exactly_the_declared_ones(owner: psycopg.Connection) -> None:
    # Column grants count too: has_any_column_privilege is true for a table or any column grant.
    has = (
        "SELECT CASE WHEN %(priv)s IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')"
        " THEN has_any_column_privilege(%(role)s, %(oid)s::oid, %(priv)s)"
        " ELSE has_table_privilege(%(role)s, %(oid)s::oid, %(priv)s) END"
    )
    assert _check(owner, "table", _objects(owner, "rpvmf"), p.TABLES, p.TABLE_PRIVILEGES, has) == []


def test_sequence_function_and_schema_privileges_are_exactly_the_declared_ones(
    owner: psycopg.Connection,
) -> None:
    problems = _check(
        owner, "sequence", _objects(owner, "S"), p.SEQUENCES, p.SEQUENCE_PRIVILEGES,
        "SELECT has_sequence_privilege(%(role)s, %(oid)s::oid, %(priv)s)",
    )  # fmt: skip
    problems += _check(
        owner, "function", _functions(owner), p.FUNCTIONS, ("EXECUTE",),
        "SELECT has_function_privilege(%(role)s, %(oid)s::oid, %(priv)s)",
    )  # fmt: skip
    schemas = owner.execute(f"SELECT n.oid::int, n.nspname FROM pg_namespace n WHERE {OURS}").fetchall()
    problems += _check(
        owner, "schema", [(int(o), str(n)) for o, n in schemas], p.SCHEMAS, p.SCHEMA_PRIVILEGES,
        "SELECT has_schema_privilege(%(role)s, %(oid)s::oid, %(priv)s)",
    )  # fmt: skip
    assert problems == []


# -- the attacks of issue 10, as the sync server's role ------------------------------------


@pytest.fixture
def reader(migrated: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(with_user(migrated, p.READER), autocommit=True) as conn:
        yield conn


@pytest.fixture
def gate(migrated: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(with_user(migrated, p.GATE), autocommit=True) as conn:
        yield conn


def _open_grant(conn: psycopg.Connection, ttl_minutes: int = 5) -> int:
    row = conn.execute(
        "SELECT khala_admin.open_grant('CHG-1', 'test', 'tester', 'read', %s)", (ttl_minutes,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _audit(conn: psycopg.Connection, grant_id: int) -> int:
    row = conn.execute(
        "SELECT khala_admin.record_audit(%s, 'CHG-1', 'status', 'ab12', 'refused: no grant')", (grant_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE khala_admin.grants SET revoked_at = NULL, expires_at = now() + interval '10 years',"
        " scope = 'write'",
        # The variant that got UPDATE 1 under 0005 (its CHECK bounds expiry to created + 60 min).
        "UPDATE khala_admin.grants SET revoked_at = NULL, created_at = now(),"
        " expires_at = now() + interval '60 minutes', scope = 'write'",
        "UPDATE khala_admin.mcp_audit SET outcome = 'ok', ticket = NULL",
        "INSERT INTO khala_admin.grants (ticket, reason, requester, scope, expires_at)"
        " VALUES ('x', 'x', 'x', 'write', now() + interval '1 minute')",
        "SELECT khala_admin.open_grant('CHG-1', 'x', 'x', 'write', 60)",
        "SELECT * FROM khala_admin.grants",
    ],
)
def test_the_reader_cannot_touch_the_gate(
    reader: psycopg.Connection, gate: psycopg.Connection, statement: str
) -> None:
    _audit(gate, _open_grant(gate))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        reader.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE khala_admin.grants SET revoked_at = NULL, expires_at = now() + interval '10 years'",
        "UPDATE khala_admin.mcp_audit SET outcome = 'ok', ticket = NULL",
        "DELETE FROM khala_admin.mcp_audit",
        "SELECT khala_admin.refuse_mutation()",
    ],
)
def test_the_gate_writes_only_through_its_functions(gate: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        gate.execute(statement)


def test_the_gate_functions_decide_expiry_with_the_database_clock(
    gate: psycopg.Connection, owner: psycopg.Connection
) -> None:
    for ttl in (0, 61, -5):
        with pytest.raises(psycopg.errors.CheckViolation, match="1 to 60 minutes"):
            _open_grant(gate, ttl)
    gid = _open_grant(gate, 7)
    row = owner.execute(
        "SELECT expires_at - created_at, created_at = now() OR created_at <= now()"
        " FROM khala_admin.grants WHERE id = %s",
        (gid,),
    ).fetchone()
    assert row is not None and row[0].total_seconds() == 7 * 60 and row[1]
    assert gate.execute("SELECT khala_admin.revoke_grants(%s)", (gid,)).fetchone() == (1,)
    assert gate.execute("SELECT khala_admin.revoke_grants(%s)", (gid,)).fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE khala_admin.mcp_audit SET outcome = 'ok', ticket = NULL WHERE id = %(id)s",
        "DELETE FROM khala_admin.mcp_audit WHERE id = %(id)s",
        "TRUNCATE khala_admin.mcp_audit CASCADE",
    ],
)
def test_the_audit_trail_is_append_only_even_for_the_owner(
    gate: psycopg.Connection, owner: psycopg.Connection, statement: str
) -> None:
    aid = _audit(gate, _open_grant(gate))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        owner.execute(statement, {"id": aid})
    row = owner.execute("SELECT outcome, ticket FROM khala_admin.mcp_audit WHERE id = %s", (aid,)).fetchone()
    assert row == ("refused: no grant", "CHG-1")
