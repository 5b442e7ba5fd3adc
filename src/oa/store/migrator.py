"""Forward-only, versioned migrations (alembic), safe to run twice and from two processes.

Alembic keeps the version table; `env.py` holds a Postgres advisory lock around the run,
so a second process waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from oa.store.database import sqlalchemy_url

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Apply every migration up to `revision` (blocking; call from a thread in async code)."""
    command.upgrade(_config(url), revision)


def current_revision(url: str) -> str | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT to_regclass('public.oa_schema_version')")).scalar()
            if exists is None:
                return None
            rev = conn.execute(text("SELECT version_num FROM oa_schema_version")).scalar()
            return str(rev) if rev is not None else None
    finally:
        engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config("postgresql://")).get_current_head()
    assert head is not None
    return head
