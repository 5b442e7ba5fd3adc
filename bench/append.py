"""`oa bench append`: append throughput and latency through the HTTP API, with its ceilings.

One run, one machine, one Postgres (embedded in a temp folder, or `OA_BENCH_DATABASE_URL`):

1. the runtime server as a child process (`oa serve runtime`), fed by load-generator
   processes (`append_loadgen.py`), each writer appending to its own run:
   single events, batches of 100, and batches of 10 (the peer's transaction shape);
2. `pgbench` with one equivalent single-row insert per transaction: the Postgres ceiling
   for one-event-per-commit writers, so the single-event row prints its ratio to it;
3. the `eventsourcing` library (`append_peer.py`) saving 10 events per transaction.

Why it is shaped this way: on 2 cores, server, Postgres and load generator compete for
the same CPUs, so each phase also records how many cores each party used (the first
thing to read when a target is missed). Results go to a rich table and to
`bench/results/append.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

from oa.store import migrate

console = Console(width=None if sys.stdout.isatty() else 150)
TARGET_SINGLE = 5_000
TARGET_BATCH = 50_000
TARGET_PEER_RATIO = 5.0
PEER_QUOTED = 2_900


@dataclass
class Phase:
    """One measured scenario."""

    key: str
    scenario: str
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    cores: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _summarize(phase: Phase, outputs: Sequence[dict[str, Any]], seconds: float) -> Phase:
    latencies = sorted(x for o in outputs for x in o["latencies_ms"])
    phase.events_per_s = sum(o["events"] for o in outputs) / seconds
    phase.requests = sum(o["requests"] for o in outputs)
    phase.errors = sum(o["errors"] for o in outputs)
    phase.first_error = next((o["first_error"] for o in outputs if o["first_error"]), None)
    phase.p50_ms = benchlib.percentile(latencies, 50)
    phase.p99_ms = benchlib.percentile(latencies, 99)
    return phase


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ChildRuntime:
    """`oa serve runtime` in a child process on a free port."""

    def __init__(self, database_url: str, secret: str, home: Path, workers: int = 1) -> None:
        self.workers = workers
        self.database_url = database_url
        self.secret = secret
        self.home = home
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        env = dict(os.environ)
        env.update(
            OA_DATABASE_URL=self.database_url, OA_RUNTIME_CALLER_SECRET=self.secret, OA_HOME=str(self.home)
        )
        cmd = [sys.executable, "-m", "oa.cli.main", "serve", "runtime", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--skip-migrate", "--workers", str(self.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"runtime exited with {self.proc.returncode}: {err}")
            time.sleep(0.1)
        raise RuntimeError("runtime did not become healthy")

    def process(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid)] if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _run_children(
    progress: Progress,
    label: str,
    cmds: Sequence[list[str]],
    env: dict[str, str] | None,
    start_at: float,
    seconds: float,
    meter: benchlib.CpuMeter,
    children_group: Callable[[list[psutil.Popen]], None],
) -> list[dict[str, Any]]:
    """Start the load processes, meter CPU over the window, collect their result files."""
    files = [benchlib.result_path("append-load") for _ in cmds]
    procs = [
        psutil.Popen([*c, "--result-file", str(f)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
        for c, f in zip(cmds, files, strict=True)
    ]  # fmt: skip
    children_group(procs)
    # Drain their pipes while they run: a result over 64 KiB would otherwise block the
    # child on a full pipe and never let it exit.
    collected: dict[int, tuple[str, str]] = {}
    drains = [
        threading.Thread(target=lambda p=p: collected.__setitem__(p.pid, p.communicate()), daemon=True)
        for p in procs
    ]
    for t in drains:
        t.start()
    begin = time.time()
    task = progress.add_task(label, total=start_at + seconds - begin)
    metering = False
    while any(p.poll() is None for p in procs):
        now = time.time()
        if not metering and now >= start_at:
            meter.start()
            metering = True
        if metering and meter.wall == 0.0 and now >= start_at + seconds - 0.05:
            meter.stop()
        progress.update(task, completed=min(now - begin, start_at + seconds - begin))
        time.sleep(0.05)
    if metering and meter.wall == 0.0:
        meter.stop()
    progress.update(task, completed=start_at + seconds - begin)
    outputs = []
    for t in drains:
        t.join()
    for p, f in zip(procs, files, strict=True):
        _, err = collected[p.pid]
        outputs.append(benchlib.read_result(f"{label}: load process {p.pid}", p.returncode, err, f))
    return outputs


def _journal_stats(url: str) -> tuple[int, int]:
    """(events, commits) in the runtime journal; one `recorded_at` per commit (now())."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT recorded_at) FROM runtime.events").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def bench_http(
    progress: Progress,
    server: ChildRuntime,
    pg: benchlib.PgServer,
    db_url: str,
    key: str,
    scenario: str,
    batch: int,
    writers: int,
    procs: int,
    seconds: float,
    warmup: float,
) -> Phase:
    meter = benchlib.CpuMeter()
    meter.watch("server", server.process)
    meter.watch("postgres", pg.processes)
    load: list[psutil.Process] = []
    meter.watch("load", lambda: load)
    start_at = time.time() + 1.0 + warmup  # process start-up, then warm-up
    cmds = [
        [
            sys.executable,
            str(benchlib.BENCH_DIR / "append_loadgen.py"),
            *("--url", server.url, "--secret", server.secret, "--writers", str(n)),
            *("--batch", str(batch), "--start-at", repr(start_at), "--seconds", repr(seconds)),
        ]
        for n in _split(writers, procs)
    ]
    before = _journal_stats(db_url)
    outputs = _run_children(progress, scenario, cmds, None, start_at, seconds, meter, load.extend)
    after = _journal_stats(db_url)
    phase = _summarize(Phase(key, scenario), outputs, seconds)
    phase.cores, phase.peaks = meter.shares(), meter.peaks()
    commits = max(1, after[1] - before[1])
    phase.extra = {"events_per_commit": round((after[0] - before[0]) / commits, 1), "client_procs": procs}
    return phase


PGBENCH_TABLE = """
CREATE TABLE events (
    position bigserial PRIMARY KEY, stream_id text NOT NULL, seq bigint NOT NULL,
    event_type text NOT NULL, payload text NOT NULL, payload_hash text NOT NULL,
    prev_hash text, hash text NOT NULL, principal text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)
"""
# One event row per transaction, the same columns and sizes as runtime.events (chr(58) is
# ':', which pgbench would read as a variable in 'user:bench').
PGBENCH_SCRIPT = """\\set seq random(1, 1000000000)
INSERT INTO events (stream_id, seq, event_type, payload, payload_hash, prev_hash, hash, principal)
VALUES ('bench-' || :client_id, :seq, 'text.delta',
 '{"channel":"out","text":"a typical streamed token or two"}',
 'b5d4045c3f466fa91fe2cc6abe79232a1a57cdf104f7a26e716e0a8e2c0b1c7d',
 '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
 '60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752', 'user' || chr(58) || 'bench');
"""


def bench_pgbench(
    progress: Progress, pg: benchlib.PgServer, writers: int, seconds: float, work: Path
) -> Phase:
    phase = Phase("pgbench", f"Postgres ceiling: pgbench single-row insert, {writers} clients")
    with benchlib.database(pg.admin_url, "oa_bench_pgbench") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PGBENCH_TABLE)  # type: ignore[arg-type]
        script = work / "insert.sql"
        script.write_text(PGBENCH_SCRIPT)
        params = benchlib.libpq_params(url)
        env = dict(os.environ)
        env.update(
            PGHOST=params.get("host", ""),
            PGPORT=params.get("port", "5432"),
            PGUSER=params.get("user", "postgres"),
            PGPASSWORD=params.get("password", ""),
            PGDATABASE=params["dbname"],
        )
        logs = work / "pgbench-log"
        logs.mkdir()
        whole = max(1, round(seconds))
        cmd = [
            benchlib.pgbench_binary(),
            *("-n", "-c", str(writers), "-j", "2", "-T", str(whole), "-M", "prepared"),
            *("-f", str(script), "-l", "--log-prefix", str(logs / "tx")),
        ]
        meter = benchlib.CpuMeter()
        meter.watch("postgres", pg.processes)
        load: list[psutil.Process] = []
        meter.watch("load", lambda: load)
        # pgbench has no warm-up of its own: its whole run is the window.
        start_at = time.time() + 0.2
        proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        load.append(proc)
        begin = time.time()
        task = progress.add_task(phase.scenario, total=whole + 0.2)
        metering = False
        while proc.poll() is None:
            now = time.time()
            if not metering and now >= start_at:
                meter.start()
                metering = True
            if metering and meter.wall == 0.0 and now >= start_at + whole - 0.3:
                meter.stop()
            progress.update(task, completed=min(now - begin, whole + 0.2))
            time.sleep(0.05)
        if metering and meter.wall == 0.0:
            meter.stop()
        progress.update(task, completed=whole + 0.2)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed: {err.strip()[-2000:]}")
        tps = next(
            float(line.split("=")[1].split()[0]) for line in out.splitlines() if line.startswith("tps =")
        )
        latencies: list[float] = []
        for f in logs.iterdir():
            for line in f.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3:
                    latencies.append(int(fields[2]) / 1000.0)
        latencies.sort()
        phase.events_per_s = tps
        phase.requests = len(latencies)
        phase.p50_ms = benchlib.percentile(latencies, 50)
        phase.p99_ms = benchlib.percentile(latencies, 99)
        phase.cores, phase.peaks = meter.shares(), meter.peaks()
        phase.extra = {"pgbench": cmd[0]}
    return phase


def bench_peer(
    progress: Progress,
    pg: benchlib.PgServer,
    writers: int,
    procs: int,
    seconds: float,
    warmup: float,
) -> Phase:
    phase = Phase("eventsourcing", f"peer: eventsourcing 9.5, 10 events/tx, {writers} writer threads")
    with benchlib.database(pg.admin_url, "oa_bench_es") as url:
        params = benchlib.libpq_params(url)
        env = dict(os.environ)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            POSTGRES_DBNAME=params["dbname"],
            POSTGRES_HOST=params.get("host", "127.0.0.1"),
            POSTGRES_PORT=params.get("port", "5432"),
            POSTGRES_USER=params.get("user", "postgres"),
            POSTGRES_PASSWORD=params.get("password", ""),
        )
        script = str(benchlib.BENCH_DIR / "append_peer.py")
        base = [sys.executable, script, "--seconds", repr(seconds)]
        benchlib.run_quiet([*base, "--writers", "1", "--start-at", "0", "--setup-only"], env=env)
        meter = benchlib.CpuMeter()
        meter.watch("postgres", pg.processes)
        load: list[psutil.Process] = []
        meter.watch("load", lambda: load)
        start_at = time.time() + 1.5 + warmup
        cmds = [[*base, "--writers", str(n), "--start-at", repr(start_at)] for n in _split(writers, procs)]
        outputs = _run_children(progress, phase.scenario, cmds, env, start_at, seconds, meter, load.extend)
    _summarize(phase, outputs, seconds)
    phase.cores, phase.peaks = meter.shares(), meter.peaks()
    phase.extra = {"peer_procs": procs, "p50_p99_are_per": "transaction of 10 events"}
    return phase


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def render(phases: dict[str, Phase], writers: int) -> Table:
    pgb = phases["pgbench"].events_per_s or 1.0
    peer = phases["eventsourcing"].events_per_s or 1.0
    table = Table(title=f"oa bench append: {writers} concurrent writers, {os.cpu_count()} cores, loopback")
    for col in ("scenario", "events/s", "p50 ms", "p99 ms", "target", "met", "ratio to baseline"):
        table.add_column(
            col, justify="left" if col in ("scenario", "target", "ratio to baseline") else "right"
        )
    table.add_column("cores used", justify="left")

    def cores(p: Phase) -> str:
        detail = " ".join(f"{k} {v:.2f}" for k, v in p.cores.items())
        return f"{detail}; {benchlib.cores_cell(p.cores, p.peaks, ('load',), ('server', 'postgres'))}"

    def row(p: Phase, target: str, met: bool | None, ratio: str) -> None:
        mark = "" if met is None else ("[green]yes[/]" if met else "[red]no[/]")
        name = p.scenario + (f" [red]({p.errors} errors)[/]" if p.errors else "")
        table.add_row(
            name,
            _fmt_rate(p.events_per_s),
            f"{p.p50_ms:.2f}",
            f"{p.p99_ms:.2f}",
            target,
            mark,
            ratio,
            cores(p),
        )

    s, b100, b10 = phases["single"], phases["batch100"], phases["batch10"]
    row(phases["pgbench"], "ceiling", None, "baseline (1 row/commit)")
    row(s, f"≥ {TARGET_SINGLE:,}/s", s.events_per_s >= TARGET_SINGLE, f"{s.events_per_s / pgb:.2f}x pgbench")
    row(
        b100,
        f"≥ {TARGET_BATCH:,}/s",
        b100.events_per_s >= TARGET_BATCH,
        f"{b100.events_per_s / pgb:.2f}x pgbench, {b100.events_per_s / peer:.1f}x peer",
    )
    row(
        b10,
        f"≥ {TARGET_PEER_RATIO:.0f}x peer",
        b10.events_per_s >= TARGET_PEER_RATIO * peer,
        f"{b10.events_per_s / peer:.1f}x peer",
    )
    row(phases["eventsourcing"], f"(quoted {PEER_QUOTED:,}/s)", None, "baseline (peer)")
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="oa bench append", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0, help="measured window of each phase")
    p.add_argument("--writers", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="2-second windows (smoke run)")
    p.add_argument("--client-procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--server-workers", type=int, default=1, help="runtime processes sharing the port")
    p.add_argument("--peer-procs", type=int, default=1, help="processes for the eventsourcing threads")
    args = p.parse_args(argv)
    benchlib.save_results("append", lambda: run(args), argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = min(args.seconds, 2.0) if args.quick else args.seconds
    warmup = 0.5 if args.quick else 1.0
    t_begin = time.monotonic()
    phases: dict[str, Phase] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with (
        tempfile.TemporaryDirectory(prefix="oa-bench-append-") as tmp,
        Progress(*columns, console=console, transient=False) as progress,
    ):
        work = Path(tmp)
        setup = progress.add_task("Postgres, fresh database, migrations, runtime server", total=3)
        with benchlib.postgres() as pg:
            progress.advance(setup)
            with benchlib.database(pg.admin_url, "oa_bench_runtime") as db_url:
                migrate(db_url)
                progress.advance(setup)
                server = ChildRuntime(db_url, secrets.token_hex(32), work / "home", args.server_workers)
                server.start()
                progress.advance(setup)
                try:
                    for key, label, batch in (
                        ("single", f"oa: single-event appends, {args.writers} writers, HTTP", 0),
                        ("batch100", f"oa: batches of 100, {args.writers} writers, HTTP", 100),
                        ("batch10", f"oa: batches of 10 (peer's shape), {args.writers} writers", 10),
                    ):
                        phases[key] = bench_http(
                            progress, server, pg, db_url, key, label, batch,
                            args.writers, args.client_procs, seconds, warmup,
                        )  # fmt: skip
                finally:
                    server.stop()
            phases["pgbench"] = bench_pgbench(progress, pg, args.writers, seconds, work)
            phases["eventsourcing"] = bench_peer(progress, pg, args.writers, args.peer_procs, seconds, warmup)
    console.print(render(phases, args.writers))
    for ph in phases.values():
        if ph.errors:
            console.print(f"[red]{ph.scenario}: {ph.errors} failed requests, first: {ph.first_error}[/]")
    notes = {k: v.extra for k, v in phases.items() if v.extra}
    console.print(f"notes: {json.dumps(notes)}")
    elapsed = time.monotonic() - t_begin
    console.print(f"whole run {elapsed:.0f} s; measured windows {seconds:g} s each")
    return {
        "writers": args.writers,
        "seconds": seconds,
        "cpu_count": os.cpu_count(),
        "elapsed_s": round(elapsed, 1),
        "phases": {k: asdict(v) for k, v in phases.items()},
    }


if __name__ == "__main__":
    main()
