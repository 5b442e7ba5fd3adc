"""A fresh database per test session on a real Postgres.

The embedded server (pgserver, under a temp folder) by default; `OA_TEST_DATABASE_URL`
points at another server, where we create and later drop a database of our own.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from oa.store.embedded import start_embedded


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def server_url() -> str:
    url = os.environ.get("OA_TEST_DATABASE_URL", "").strip()
    if url:
        return url
    base = Path(os.environ.get("OA_TEST_PGDATA", Path(tempfile.gettempdir()) / "oa-test-pgdata"))
    return start_embedded(base)


@contextmanager
def fresh_database() -> Iterator[str]:
    admin = server_url()
    name = f"oa_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
