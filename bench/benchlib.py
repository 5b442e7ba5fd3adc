"""What every benchmark here needs: its own Postgres, fresh databases, percentiles, CPU use.

Why a module of its own: the benchmarks run as plain scripts (`oa bench ...` runs them with
runpy, helpers run as child processes), so they share code by putting this folder on
`sys.path` rather than by being a package. Benchmarks never touch a developer's data: they
start an embedded Postgres in a temporary folder unless `OA_BENCH_DATABASE_URL` names a
server, where they create (and drop) databases of their own.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@dataclass
class PgServer:
    """The server a benchmark uses: its admin URL and, if embedded, its postmaster pid."""

    admin_url: str
    postmaster_pid: int | None

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its backends (for CPU accounting); empty for an external server."""
        if self.postmaster_pid is None:
            return []
        try:
            main = psutil.Process(self.postmaster_pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


@contextmanager
def postgres() -> Iterator[PgServer]:
    """`OA_BENCH_DATABASE_URL`, or an embedded server in a temp folder deleted afterwards."""
    url = os.environ.get("OA_BENCH_DATABASE_URL", "").strip()
    if url:
        yield PgServer(url, None)
        return
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="oa-bench-pg-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(folder, cleanup_mode="delete")  # type: ignore[attr-defined]
        pid = server.get_pid()
        try:
            yield PgServer(server.get_uri(), pid)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server; dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq_params(url: str) -> dict[str, str]:
    """host/port/user/password/dbname of a URL (a socket folder in `?host=` included)."""
    return {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}


def pgbench_binary() -> str:
    """pgbench of the server's own major version when pgserver ships one, else Debian's."""
    try:
        import pgserver

        shipped = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
        if shipped.exists():
            return str(shipped)
    except ImportError:
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench")) or [shutil.which("pgbench") or ""]
    if not found[-1]:
        raise SystemExit("pgbench not found: apt-get install postgresql-client, or pip install pgserver")
    return found[-1]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


class CpuMeter:
    """CPU seconds used by groups of processes between `start()` and `stop()`.

    Why: on a 2-core machine the answer to "what bounds it" is usually "who used the
    cores", so every phase reports the share each party took. Groups are functions that
    list their processes, asked again at `stop()`: a process born in between (a backend
    for a new connection) counts from its birth.
    """

    def __init__(self) -> None:
        self._groups: dict[str, Callable[[], Sequence[psutil.Process]]] = {}
        self._before: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}
        self._t0 = 0.0
        self.wall = 0.0

    def watch(self, name: str, procs: Callable[[], Sequence[psutil.Process]]) -> None:
        self._groups[name] = procs

    @staticmethod
    def _cpu(procs: Sequence[psutil.Process]) -> dict[int, float]:
        out: dict[int, float] = {}
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

    def start(self) -> None:
        self._before = {n: self._cpu(f()) for n, f in self._groups.items()}
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        self.used = {}
        for n, f in self._groups.items():
            before = self._before.get(n, {})
            now = self._cpu(f())
            self.used[n] = sum(v - before.get(pid, 0.0) for pid, v in now.items())

    def shares(self) -> dict[str, float]:
        """Cores used by each group (1.0 = one core busy the whole time)."""
        return {n: round(u / self.wall, 2) if self.wall else 0.0 for n, u in self.used.items()}


def python() -> str:
    return sys.executable


def run_quiet(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout
