"""A real Postgres primary and a streaming replica of it, in a temp folder, for tests.

The machine's Postgres binaries (`/usr/lib/postgresql/*/bin`) refuse to run as root, so
when we are root every server command runs as the `postgres` system user (as pgserver
does with a user of its own), in a folder that user owns. Trust authentication on
127.0.0.1 only, replication included (initdb's default pg_hba with `--auth=trust`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.servers import free_port

SYSTEM_USER = "postgres"


def postgres_bin() -> Path | None:
    """The newest Postgres install with pg_basebackup, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"))
    return found[-1].parent if found else None


@dataclass
class PgPair:
    root: Path
    bin: Path
    primary_port: int
    standby_port: int

    def url(self, port: int, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{db}"

    @property
    def primary(self) -> str:
        return self.url(self.primary_port)

    @property
    def standby(self) -> str:
        return self.url(self.standby_port)

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary, autocommit=True) as p:
            row = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby, autocommit=True) as s:
            while time.monotonic() < deadline:
                done = s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone()
                if done is not None and done[0]:
                    return
                time.sleep(0.05)
        raise TimeoutError("the standby did not replay the primary's WAL in time")


def _run(args: list[str], **kw: object) -> None:
    user = SYSTEM_USER if os.geteuid() == 0 else None
    done = subprocess.run(args, user=user, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextmanager
def streaming_pair() -> Iterator[PgPair]:
    """Start a primary (wal_level=replica) and a hot standby streaming from it."""
    pg = postgres_bin()
    if pg is None:
        raise RuntimeError("no Postgres binaries under /usr/lib/postgresql/*/bin")
    root = Path(tempfile.mkdtemp(prefix="oa-replica-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    pair = PgPair(root, pg, free_port(), free_port())
    primary, standby = root / "primary", root / "standby"
    started: list[Path] = []
    try:
        _run([str(pg / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {pair.primary_port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\nwal_level = replica\nmax_wal_senders = 5\n"
                "hot_standby = on\nfsync = off\nmax_connections = 200\n"
            )
        _run([str(pg / "pg_ctl"), "-D", str(primary), "-l", str(root / "primary.log"), "-w", "start"])
        started.append(primary)
        source = ["-h", "127.0.0.1", "-p", str(pair.primary_port), "-U", "postgres"]
        _run([str(pg / "pg_basebackup"), *source, "-D", str(standby), "-R", "-X", "stream"])
        with open(standby / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {pair.standby_port}\n")
        _run([str(pg / "pg_ctl"), "-D", str(standby), "-l", str(root / "standby.log"), "-w", "start"])
        started.append(standby)
        yield pair
    finally:
        for data in reversed(started):
            _run([str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)
