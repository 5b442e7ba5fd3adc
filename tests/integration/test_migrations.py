"""Migrations: a second run changes nothing, racing processes both succeed, events stay put.

Each runtime process migrates on start, so two starting together on a fresh database is
the normal case, not an edge case; each test here gets a database of its own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from oa.store import migrate
from oa.store.migrator import current_revision, head_revision
from tests.support.pg import fresh_database

SCHEMA_SHAPE = """
SELECT 'column', table_schema || '.' || table_name || '.' || column_name || ':' || data_type
  FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
UNION ALL SELECT 'index', schemaname || '.' || indexname FROM pg_indexes
  WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
UNION ALL SELECT 'trigger', tgrelid::regclass::text || '.' || tgname FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1, 2
"""


@pytest.fixture
def new_db() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def shape(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(k, v) for k, v in conn.execute(SCHEMA_SHAPE).fetchall()]


def test_migrating_twice_is_a_no_op(new_db: str) -> None:
    assert current_revision(new_db) is None
    migrate(new_db)
    before = shape(new_db)
    assert ("trigger", "runtime.events.events_append_only") in before
    with psycopg.connect(new_db, autocommit=True) as conn:
        conn.execute("UPDATE runtime.journal_head SET position = 42")
    migrate(new_db)
    assert shape(new_db) == before
    assert current_revision(new_db) == head_revision()
    with psycopg.connect(new_db) as conn:
        assert conn.execute("SELECT id, position FROM runtime.journal_head").fetchall() == [(1, 42)]
        assert conn.execute("SELECT count(*) FROM oa_schema_version").fetchone() == (1,)


def test_processes_migrating_a_fresh_database_at_once_all_succeed(new_db: str) -> None:
    code = "import sys; from oa.store import migrate; migrate(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, new_db], stderr=subprocess.PIPE) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert current_revision(new_db) == head_revision()
    with psycopg.connect(new_db) as conn:
        assert conn.execute("SELECT id, position FROM runtime.journal_head").fetchall() == [(1, 0)]


@pytest.mark.parametrize(
    "statement",
    [
        'UPDATE runtime.events SET payload = \'{"text":"forged"}\'',
        "UPDATE runtime.events SET position = position",
        "DELETE FROM runtime.events",
        "TRUNCATE runtime.events",
    ],
)
def test_events_are_append_only(new_db: str, statement: str) -> None:
    migrate(new_db)
    with psycopg.connect(new_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runtime.events (position, stream_kind, stream_id, seq, event_type, payload,"
            " payload_hash, hash, principal) VALUES (1, 'run', 'r', 1, 'text.delta', '{}', 'p', 'h', 'user:a')"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT payload FROM runtime.events").fetchall() == [("{}",)]
