"""What every benchmark here needs: its own Postgres, fresh databases, percentiles, CPU use.

Why a module of its own: the benchmarks run as plain scripts (`oa bench ...` runs them with
runpy, helpers run as child processes), so they share code by putting this folder on
`sys.path` rather than by being a package. Benchmarks never touch a developer's data: they
start an embedded Postgres in a temporary folder unless `OA_BENCH_DATABASE_URL` names a
server, where they create (and drop) databases of their own.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
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
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

BENCH_DIR = Path(__file__).resolve().parent
# `OA_BENCH_RESULTS_DIR` lets the smoke tests keep their results out of a developer's bench/results.
RESULTS_DIR = Path(os.environ.get("OA_BENCH_RESULTS_DIR") or BENCH_DIR / "results")


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
        self.busiest: dict[str, float] = {}  # CPU seconds of each group's busiest process
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
        self.busiest = {}
        for n, f in self._groups.items():
            before = self._before.get(n, {})
            now = self._cpu(f())
            deltas = [v - before.get(pid, 0.0) for pid, v in now.items()]
            self.used[n] = sum(deltas)
            self.busiest[n] = max(deltas, default=0.0)

    def shares(self) -> dict[str, float]:
        """Cores used by each group (1.0 = one core busy the whole time)."""
        return {n: round(u / self.wall, 2) if self.wall else 0.0 for n, u in self.used.items()}

    def peaks(self) -> dict[str, float]:
        """Share of one core used by each group's busiest process (what `saturated` reads)."""
        return {n: round(u / self.wall, 2) if self.wall else 0.0 for n, u in self.busiest.items()}


def python() -> str:
    return sys.executable


def run_quiet(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


# --- Results that never depend on a line's length -----------------------------------------
#
# Why files, not stdout: a helper used to print its result as one JSON line, and
# `bench/sync.py` died on a line cut at exactly 64 KiB. strace of `_sync_writer.py` showed
# the cause: its single `write(1, <73 KB>)` to the pipe returned 65536 (the pipe was full
# because the orchestrator was still metering, and the blocking write came back early),
# and the process exited 0 without writing the rest. With PYTHONUNBUFFERED=1 (set in this
# machine's environment) `sys.stdout` is a TextIOWrapper over an *unbuffered* FileIO, and
# TextIOWrapper ignores a raw stream's short write (CPython issue #85393), so the tail was
# silently dropped. A result file written atomically (tmp + rename) either exists whole or
# not at all, whatever the size, the buffering mode or the pipe.


class HelperFailed(RuntimeError):
    """A helper process failed: its own exit code and the tail of its stderr, never a JSON error."""


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` so that a reader sees all of it or no file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_result_file_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Every helper takes `--result-file PATH`, named by the parent."""
    parser.add_argument("--result-file", type=Path, required=required, help="where to write the JSON result")


def result_path(prefix: str) -> Path:
    """A fresh path (not yet created) for one helper's result."""
    fd, name = tempfile.mkstemp(prefix=f"oa-bench-{prefix}-", suffix=".json")
    os.close(fd)
    os.unlink(name)
    return Path(name)


def read_result(label: str, returncode: int | None, stderr: str, path: Path) -> dict[str, Any]:
    """The helper's result, or `HelperFailed` saying how the helper itself failed."""
    tail = stderr.strip()[-2000:]
    try:
        if returncode != 0:
            raise HelperFailed(f"{label} exited with {returncode}: {tail or '(no stderr)'}")
        if not path.exists():
            raise HelperFailed(f"{label} exited 0 but wrote no result file {path}: {tail or '(no stderr)'}")
        result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return result
    finally:
        path.unlink(missing_ok=True)


def save_results(
    name: str, produce: Callable[[], dict[str, Any]], argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """Run a benchmark's body and write `bench/results/NAME.json` whatever happens.

    On success the file holds `{"status": "ok", ...results}`; on failure
    `{"status": "failed", "error": ...}`, so a reader of the results folder learns why a
    figure is missing instead of finding last week's file.
    """
    out = RESULTS_DIR / f"{name}.json"
    command = reproduce_command(name, argv)
    try:
        results = produce()
    except BaseException as exc:
        write_json_atomic(out, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[-4000:],
                                "command": command})  # fmt: skip
        print(f"results: {out} (failed: {type(exc).__name__})", file=sys.stderr)
        raise
    write_json_atomic(out, {"status": "ok", "command": command, **results})
    print(f"reproduce: {command}")
    print(f"results: {out}")
    return results


def reproduce_command(name: str, argv: Sequence[str] | None = None) -> str:
    """The command that reruns this benchmark as it ran (`oa bench NAME` passes every flag on)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["oa", "bench", name.replace("_", "-"), *args])


# --- Who used the cores: one helper for every table ------------------------------------------

SATURATED = 0.9  # one process above ~90% of a core bounds the figure, not the code under test


def cores_cell(
    cores: dict[str, float], peaks: dict[str, float], load: Sequence[str], server: Sequence[str]
) -> str:
    """`load 0.53 · server 0.97 saturated: khala` for a table's cores column.

    `load` and `server` name the `CpuMeter` groups that are the load generator and the
    server side; `peaks` (`CpuMeter.peaks()`) says whether one process of a group was near a
    full core, which is what bounds a single-threaded Python process.
    """
    used_load = sum(cores.get(k, 0.0) for k in load)
    used_server = sum(cores.get(k, 0.0) for k in server)
    hot = saturated(peaks, [*load, *server])
    cell = f"load {used_load:.2f} · server {used_server:.2f}"
    return cell + (f" [red]saturated: {', '.join(hot)}[/]" if hot else "")


def saturated(peaks: dict[str, float], groups: Sequence[str]) -> list[str]:
    """The groups (load generator or server side, not other users of the machine) near a core."""
    return [k for k in groups if peaks.get(k, 0.0) >= SATURATED]


def meter_in_process(pg: PgServer) -> CpuMeter:
    """A started meter of this process ("bench": the load, and for some benches the service
    too) and Postgres ("postgres"), for benchmarks that drive the database in-process."""
    meter = CpuMeter()
    me = psutil.Process()
    meter.watch("bench", lambda: [me])
    meter.watch("postgres", pg.processes)
    meter.start()
    return meter


def in_process_cell(cores: dict[str, float], peaks: dict[str, float]) -> str:
    return cores_cell(cores, peaks, ("bench",), ("postgres",))


def met_cell(ok: bool | None) -> str:
    """`yes`/`no` for a row with a target, empty for one without."""
    if ok is None:
        return ""
    return "[green]yes[/]" if ok else "[red]no[/]"
