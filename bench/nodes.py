"""`oa bench nodes`: how the primary's load grows with the number of Khala nodes.

Khala nodes are stateless over one Postgres: each LISTENs for the projector's NOTIFY and
reads the journal once per wake-up (and polls it once a second when nothing wakes it).
So every node adds to the primary: one LISTEN connection, its pool, a journal read per
projector commit, a poll per second. This bench shows how much, at a modest write rate.

One machine, one Postgres (embedded in a temp folder, or `OA_BENCH_DATABASE_URL`), a fresh
database, the real processes: `oa serve runtime`, `oa khala project`, and N `oa khala
serve` nodes on ports of their own. A writer (`_sync_writer.py`) appends `--rate` events/s
for `--seconds`; `--subs-per-node` subscribers per node (`_sync_clients.py`, spread over
the nodes, distinct users of the owner's org, so every update reaches each of them).

Baseline (same run): 0 nodes, the same writer and projector. Each row then reports, for
the database's backends only (this database's, from pg_stat_activity, CPU from /proc):
- the CPU of the Khala nodes' backends (role `oa_khala_reader`) and of all backends;
- the CPU added over the baseline, per node (share of one core);
- connections (the nodes' and all), transactions/s (pg_stat_database xact_commit), and
  what was added per node over the baseline;
- NOTIFY wake-ups: the projector's notifications per second (counted by a LISTEN of the
  bench's own) times the nodes, each of which wakes and reads once per notification.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
import psutil
import psycopg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from _sync_procs import Child, Helper, free_port
from sync import ISSUER, KID, ORG, OWNER, _keys

from oa.khala.store.writer import NOTIFY_CHANNEL
from oa.khala.sync.bus import DEFAULT_URL, stream_name
from oa.store import migrate

console = Console(width=None if sys.stdout.isatty() else 170)
READER = "oa_khala_reader"
BUDGET_PER_NODE = 0.025  # share of a core per node on the primary: above it, a bus instead


@dataclass
class Row:
    nodes: int
    bus: str = "postgres"
    subscribers: int = 0
    events: int = 0
    rate: float = 0.0
    notifies_per_s: float = 0.0
    wakeups_per_s: float = 0.0  # on the primary: notifications x listeners (nodes, or the relay)
    khala_backend_cores: float = 0.0  # CPU of the nodes' backends (oa_khala_reader)
    backend_cores: float = 0.0  # CPU of every backend of this database
    per_node: float | None = None  # the nodes' backends' CPU, per node
    # Over Postgres alone each node reads each projector commit, so what a node costs the
    # primary scales with the commits/s; a busy machine makes the projector commit fewer,
    # larger batches, so the raw per-node figure flatters a loaded run. This is the cost
    # per (commit, node) in CPU ms (postgres rows only: over NATS the relay reads a commit
    # once, whatever the nodes).
    ms_per_commit_node: float | None = None
    added_per_node: float | None = None  # every backend's CPU over the baseline, per node
    khala_connections: int = 0
    connections: int = 0
    xact_per_s: float = 0.0
    xact_added_per_node: float | None = None
    delivered: float = 0.0
    client_errors: int = 0
    writer_errors: int = 0
    machine_busy: float = 0.0  # cores busy on the whole machine (other users included)
    cores: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)


class Backends:
    """This database's backends as processes: the nodes' (reader role), and all."""

    def __init__(self, db_url: str) -> None:
        self.conn = psycopg.connect(db_url, autocommit=True)
        self.lock = threading.Lock()

    def pids(self, role: str | None) -> list[int]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT pid, usename FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        return [int(pid) for pid, user in rows if role is None or user == role]

    def processes(self, role: str | None) -> list[psutil.Process]:
        out = []
        for pid in self.pids(role):
            with contextlib.suppress(psutil.Error):  # not on this machine, or gone: not counted
                out.append(psutil.Process(pid))
        return out

    def xact_commit(self) -> int:
        with self.lock:
            self.conn.execute("SELECT pg_stat_clear_snapshot()")
            row = self.conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


class NotifyCounter:
    """The projector's notifications, counted by a LISTEN of our own (one per commit)."""

    def __init__(self, db_url: str) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._conn = psycopg.connect(db_url, autocommit=True)
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in self._conn.notifies(timeout=0.2):
                self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


def nats_answers() -> bool:
    host, port = DEFAULT_URL.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def drop_stream(subject: str) -> None:
    """The bench's JetStream stream, deleted (the NATS server is shared)."""

    async def drop() -> None:
        nc = await nats.connect(DEFAULT_URL)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream_name(subject))
        await nc.close()

    asyncio.run(drop())


def _busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def measure(
    n: int, bus: str, env: dict[str, str], work: Path, db_url: str, runtime_url: str, secret: str,
    args: argparse.Namespace, projector: Child, runtime: Child, relay: Child | None,
) -> Row:  # fmt: skip
    row = Row(n, bus)
    nodes: list[Child] = []
    ports: list[int] = []
    clients: Helper | None = None
    writer: Helper | None = None
    backends = Backends(db_url)
    try:
        for _ in range(n):
            port = free_port()
            ports.append(port)
            health = f"http://127.0.0.1:{port}/healthz"
            nodes.append(Child(["khala", "serve", "--port", str(port)], env, health).start(timeout=120))
        row.subscribers = n * args.subs_per_node
        if row.subscribers:
            urls = ",".join(f"ws://127.0.0.1:{port}/sync/v1/ws" for port in ports)
            clients = Helper(
                "_sync_clients.py",
                [
                    *("--url", urls, "--key", str(work / "key.pem"), "--kid", KID, "--issuer", ISSUER),
                    *("--org", ORG, "--count", str(row.subscribers), "--no-deflate"),
                ],
            )
            if clients.wait_ready() < row.subscribers:
                raise RuntimeError(f"only {clients.ready} of {row.subscribers} subscribers connected")
        time.sleep(1.0)  # the nodes' pools settle
        row.khala_connections = len(backends.pids(READER))
        row.connections = len(backends.pids(None))
        before = clients.mark() if clients else {"rows": 0, "errors": 0}
        notifies = NotifyCounter(db_url)
        start_at = time.time() + 1.5
        writer = Helper(
            "_sync_writer.py",
            [
                *("--url", runtime_url, "--secret", secret, "--owner", OWNER, "--org", ORG),
                *("--tag", f"nodes{n}-{secrets.token_hex(3)}", "--runs", "20"),
                *("--rate", str(args.rate), "--seconds", str(args.seconds), "--start-at", repr(start_at)),
            ],
        )
        meter = benchlib.CpuMeter()
        meter.watch("khala backends", lambda: backends.processes(READER))
        meter.watch("backends", lambda: backends.processes(None))
        meter.watch("nodes", lambda: [p for c in nodes for p in c.processes()])
        meter.watch("projector", projector.processes)
        meter.watch("runtime", runtime.processes)
        if relay is not None:
            meter.watch("relay", relay.processes)
        meter.watch(
            "load", lambda: [h.proc for h in (writer, clients) if h is not None and h.proc.poll() is None]
        )
        while time.time() < start_at:
            time.sleep(0.02)
        meter.start()
        n0, x0, busy0 = notifies.count, backends.xact_commit(), _busy()
        time.sleep(args.seconds)
        meter.stop()
        n1, x1, busy1 = notifies.count, backends.xact_commit(), _busy()
        notifies.close()
        w = writer.finish(timeout=120)
        row.events, row.writer_errors = int(w["events"]), int(w["errors"])
        row.rate = row.events / max(float(w["elapsed_s"]), args.seconds)
        row.notifies_per_s = (n1 - n0) / meter.wall
        row.wakeups_per_s = row.notifies_per_s * (1 if relay is not None else n)
        row.xact_per_s = (x1 - x0) / meter.wall
        row.machine_busy = (busy1 - busy0) / meter.wall
        row.cores, row.peaks = meter.shares(), meter.peaks()
        # Unrounded (shares() keeps two decimals; a node's share is smaller than that).
        row.khala_backend_cores = round(meter.used["khala backends"] / meter.wall, 4)
        row.backend_cores = round(meter.used["backends"] / meter.wall, 4)
        if clients is not None:
            time.sleep(2.0)  # the fan-out drains
            after = clients.mark()
            expected = max(1, row.events) * row.subscribers
            row.delivered = min(1.0, (after["rows"] - before["rows"]) / expected)
            row.client_errors = after["errors"] - before["errors"]
            clients.finish()
    finally:
        for h in (writer, clients):
            if h is not None:
                h.kill()
        for c in nodes:
            c.stop()
        backends.close()
    return row


def render(rows: list[Row]) -> Table:
    t = Table(title="Primary load vs Khala nodes (baseline: 0 nodes, the same writer and projector)")
    for col in ("bus", "nodes", "subs", "events/s", "commits/s", "primary wake-ups/s", "Khala backends' CPU",
                "per node", "ms per commit per node", "over baseline per node", "connections Khala / all", "xact/s",
                "delivered", "cores: nodes · relay · backends · machine"):  # fmt: skip
        t.add_column(col, justify="right")
    for r in rows:
        pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        c = r.cores
        t.add_row(
            r.bus, str(r.nodes), str(r.subscribers), f"{r.rate:.0f}", f"{r.notifies_per_s:.0f}",
            f"{r.wakeups_per_s:.0f}", f"{r.khala_backend_cores:.3f}", pct(r.per_node),
            "-" if r.ms_per_commit_node is None else f"{r.ms_per_commit_node:.2f}", pct(r.added_per_node),
            f"{r.khala_connections} / {r.connections}", f"{r.xact_per_s:.0f}",
            f"{r.delivered:.1%}" if r.subscribers else "-",
            f"{c.get('nodes', 0):.2f} · {c.get('relay', 0):.2f} · {r.backend_cores:.2f} ·"
            f" {r.machine_busy:.2f} of {os.cpu_count()}",
        )  # fmt: skip
    return t


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(x) for x in args.nodes.split(",")]
    if args.quick:
        counts, args.seconds, args.rate = [c for c in counts if c <= 2] or [1], 2.0, min(args.rate, 50.0)
    buses = [b for b in args.buses.split(",") if b]
    if "nats" in buses and not nats_answers():
        raise SystemExit(f"--buses nats: no NATS at {DEFAULT_URL}; start it or pass --buses postgres")
    rows: list[Row] = []
    runtime = projector = relay = None
    subjects: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="oa-bench-nodes-") as tmp,
        benchlib.postgres() as pg,
        benchlib.database(pg.admin_url, "oa_bench_nodes") as db_url,
    ):
        work = Path(tmp)
        _keys(work)
        migrate(db_url)
        secret = secrets.token_hex(32)
        env = {
            "OA_DATABASE_URL": db_url,
            "OA_HOME": str(work / "home"),
            "OA_RUNTIME_CALLER_SECRET": secret,
            "OA_KHALA_JWKS_FILE": str(work / "jwks.json"),
            "OA_SYNC_TOKEN_ISSUER": ISSUER,
        }
        try:
            port = free_port()
            runtime_url = f"http://127.0.0.1:{port}"
            runtime = Child(
                ["serve", "runtime", "--port", str(port), "--skip-migrate"], env, runtime_url + "/healthz"
            ).start()
            projector = Child(["khala", "project"], env).start()
            console.print(f"[dim]baseline, 0 nodes: {args.rate:g} events/s for {args.seconds:g} s[/]")
            rows.append(
                measure(0, "-", env, work, db_url, runtime_url, secret, args, projector, runtime, None)
            )
            for bus in buses:
                bus_env = {**env}
                if bus == "nats":
                    subject = f"oa.bench.nodes.{secrets.token_hex(4)}"
                    bus_env |= {"OA_KHALA_BUS": "nats", "OA_KHALA_BUS_SUBJECT": subject}
                    relay = Child(["khala", "relay"], bus_env).start()
                    subjects.append(subject)
                try:
                    for n in counts:
                        console.print(
                            f"[dim]{bus}: {n} node(s), {args.rate:g} events/s for {args.seconds:g} s[/]"
                        )
                        rows.append(
                            measure(n, bus, bus_env, work, db_url, runtime_url, secret, args, projector, runtime, relay)
                        )  # fmt: skip
                finally:
                    if relay is not None:
                        relay.stop()
                        relay = None
        finally:
            for c in (projector, runtime):
                if c is not None:
                    c.stop()
            for subject in subjects:
                drop_stream(subject)
    base = rows[0]
    for r in rows[1:]:
        r.per_node = r.khala_backend_cores / r.nodes
        if r.notifies_per_s > 0 and r.bus == "postgres":
            r.ms_per_commit_node = r.khala_backend_cores * 1000.0 / (r.notifies_per_s * r.nodes)
        r.added_per_node = (r.backend_cores - base.backend_cores) / r.nodes
        r.xact_added_per_node = (r.xact_per_s - base.xact_per_s) / r.nodes
    console.print(render(rows))
    worst: dict[str, float] = {}
    for bus in buses:
        worst[bus] = max((r.per_node or 0.0 for r in rows if r.bus == bus), default=0.0)
        verdict = "within" if worst[bus] <= BUDGET_PER_NODE else "over"
        console.print(
            f"{bus}: the largest primary CPU per node measured (the nodes' backends) was"
            f" {worst[bus]:.1%} of a core ({verdict} the {BUDGET_PER_NODE:.1%} budget)"
        )
    per_commit = [r.ms_per_commit_node for r in rows if r.ms_per_commit_node is not None]
    if per_commit:
        ms = max(per_commit)
        console.print(
            f"postgres: each node costs the primary up to {ms:.2f} ms of CPU per projector commit, so"
            f" {ms * 50 / 1000:.1%} of a core per node at 50 commits/s (the nodes multiply it;"
            " over NATS the relay pays it once)"
        )
    load = os.getloadavg()
    console.print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return {
        "cpu_count": os.cpu_count(),
        "loadavg": load,
        "seconds": args.seconds,
        "rate": args.rate,
        "budget_per_node": BUDGET_PER_NODE,
        "worst_per_node": worst,
        "rows": [asdict(r) for r in rows],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="oa bench nodes", description=__doc__)
    p.add_argument("--nodes", default="1,4,16", help="node counts to measure (a 0-node baseline is added)")
    p.add_argument("--rate", type=float, default=100.0, help="runtime events per second")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per node count")
    p.add_argument("--subs-per-node", type=int, default=3, help="subscribers per node")
    p.add_argument("--buses", default="postgres,nats", help="fan-out between nodes: postgres, nats or both")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 node, 2 s, 50 events/s")
    args = p.parse_args(argv)
    benchlib.save_results("nodes", lambda: run(args), argv)


if __name__ == "__main__":
    main()
