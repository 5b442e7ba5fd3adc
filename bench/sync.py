"""`oa bench sync`: commit → client latency under fan-out, idle memory, rebuild and audit speed.

One machine, one Postgres (embedded in a temp folder, or `OA_BENCH_DATABASE_URL`), a fresh
database migrated to head, and the real processes, each in its own interpreter:
`oa serve runtime`, `oa khala project` (the projector) and `oa khala serve` (the sync
server; tokens are minted by the bench with its own ES256 key, whose JWKS it writes to a
file for `OA_KHALA_JWKS_FILE`).

1. Latency, for 1, 100 and 1,000 subscribers at 100 and 1,000 runtime events/s. A writer
   process (`_sync_writer.py`) appends single events over HTTP at a fixed, open-loop rate,
   round-robin over 20 runs of one owner in one org. Probes (`_sync_clients.py --probe`,
   up to 4 sockets in a process of their own, authenticated as the owner) parse every
   frame and stamp its receive time; the other subscribers (distinct users of the same
   org, so every update is visible to each and the server encodes per user, as in real
   life) sit 250 to a process and count the update rows they receive. Per event and per
   probe, latency = the first receive time at which the probe's summary of that run reached
   a `doc_version` ≥ the event's seq, minus the event's `recorded_at` (Postgres `now()` in
   the appending transaction, same clock): "commit → client". The same minus the writer's
   send time is "append → client" (adds the HTTP append). Events never seen are "missed".
   "delivered" is the share of (subscriber, journal row) pairs that arrived: the server
   really fanned out to everyone or the table says it did not.
   Each row also prints the sync server's CPU per delivered update (its CPU seconds from
   the window's start until the fan-out drained, over the update rows delivered).
1b. Scoped (`--phases scoped`): 1,000 watchers, each with one live query `{stream: run}` on
   `runtime.run_summaries` (a run page), while 100 of those runs stream `text.delta` at
   10/s each. Watchers are Node `ws` processes (`bench/node/watchers.js`, or
   `--watcher python`) that find doc keys and versions by regex; every event is a sample.
   `procs` runs the same load (and topic-wide 1,000 @ the first rate) on two `oa khala
   serve` processes on two ports, clients split between them (not SO_REUSEPORT: the split
   is exact and it does not depend on `--workers`). `_sync_scale.py` prints the one-vs-two
   table, the per-process cost table and the 16-core / 10-node projection.
2. Idle: 10,000 sockets (10 processes of 1,000) on a fresh sync server, once with a
   whole-topic subscription each and once with one live query each; server RSS before
   and after, divided by the count (a row where sockets died first is marked invalid).
3. Rebuild: with the projector stopped, 100,000 events go in through the batch API; a new
   projector's catch-up rate is measured from its first checkpoint move to the head; then
   `rebuild` and `audit` (oa.runtime.projector.rebuild) run in-process on a writer-role
   connection over the whole journal. Compared with the eventsourcing library's projection
   catch-up quoted for this machine kind (515 events/s).

Every phase records the cores each party used: on 2 cores the load generator, the
subscribers and the server compete, and that is the first thing to read when a target is
missed. Results: rich tables and `bench/results/sync.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sync_scale as scale
import benchlib
from _sync_procs import Child, Helper, Profile, ensure_node_watchers, free_port

from oa.runtime.projector.rebuild import audit, rebuild
from oa.store import migrate
from oa.store.database import with_user

console = Console(width=None if sys.stdout.isatty() else 170)
ISSUER = "oa-bench-sync"
KID = "bench-sync-1"
OWNER, ORG = "bench-owner", "bench-org"
PROBES = 4
PER_PROCESS = 250
# Scoped watchers receive one run each, so a process holds more of them: fewer processes,
# less fixed cost per delivered update (and two, so the one-vs-two phase can split them).
WATCHERS_PER_PROCESS = 500
IDLE_PER_PROCESS = 1000
TARGET_P50, TARGET_P99 = 5.0, 25.0
TARGET_KB = 50.0
TARGET_REBUILD = 20_000.0
PEER_CATCHUP = 515.0


@dataclass
class Latency:
    subscribers: int
    rate: float
    achieved_rate: float = 0.0
    events: int = 0
    samples: int = 0
    missed: int = 0
    commit_p50: float = 0.0
    commit_p99: float = 0.0
    append_p50: float = 0.0
    append_p99: float = 0.0
    http_p50: float = 0.0
    delivered: float = 0.0
    client_errors: int = 0
    first_error: str | None = None
    writer_errors: int = 0
    late_starts: int = 0
    cores: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    kind: str = "topic"  # "topic": whole-topic subscribers; "scoped": one live query per run
    streaming: int = 0  # scoped: runs streaming text.delta (the others are watched, idle)
    khala_procs: int = 1
    watcher: str = ""  # scoped: what the watchers ran on (node / python)
    delivered_updates: int = 0  # update rows that reached subscribers in the window + drain
    server_us: float = 0.0  # sync server CPU (all its processes) per delivered update
    client_us: float = 0.0  # subscriber processes' CPU per delivered update


@dataclass
class Bench:
    """What every phase needs: the database, the servers, the key, the progress display."""

    db_url: str
    work: Path
    pg: benchlib.PgServer
    progress: Progress
    secret: str
    env: dict[str, str]
    runtime: Child | None = None
    projector: Child | None = None
    khala: Child | None = None
    khala_port: int = 0
    runtime_url: str = ""
    # More sync server processes (the one-vs-two phase), each on a port of its own.
    extra: list[Child] = field(default_factory=list)
    extra_ports: list[int] = field(default_factory=list)

    deflate: bool = True
    watcher: str = "node"  # the scoped phase's watchers: "node" (ws) or "python" (websockets)
    profile_dir: Path | None = None
    profiles: dict[str, Any] = field(default_factory=dict)

    def profile(self, name: str, seconds: float) -> Profile | None:
        """py-spy on the sync server for `seconds` (only with `--profile`)."""
        if self.profile_dir is None or self.khala is None:
            return None
        return Profile(self.khala.pid, seconds, self.profile_dir / f"{name}.txt")

    def keep(self, name: str, prof: Profile | None) -> None:
        if prof is not None:
            self.profiles[name] = prof.top()

    def ports(self) -> list[int]:
        return [self.khala_port, *self.extra_ports]

    def khala_processes(self) -> list[psutil.Process]:
        return [p for c in (self.khala, *self.extra) if c is not None for p in c.processes()]

    def client_args(self, port: int | None = None) -> list[str]:
        port = port or self.khala_port
        return [
            *([] if self.deflate else ["--no-deflate"]),
            *("--url", f"ws://127.0.0.1:{port}/sync/v1/ws", "--key", str(self.work / "key.pem")),
            *("--kid", KID, "--issuer", ISSUER, "--org", ORG),
        ]

    def start_khala(self) -> Child:
        self.khala_port = free_port()
        health = f"http://127.0.0.1:{self.khala_port}/healthz"
        self.khala = Child(["khala", "serve", "--port", str(self.khala_port)], self.env, health).start()
        return self.khala

    def add_khala(self) -> Child:
        """One more `oa khala serve` on a port of its own (clients are split over the ports:
        less entangled with `--workers` than SO_REUSEPORT, and the split is exact)."""
        port = free_port()
        health = f"http://127.0.0.1:{port}/healthz"
        child = Child(["khala", "serve", "--port", str(port)], self.env, health).start()
        self.extra.append(child)
        self.extra_ports.append(port)
        return child

    def drop_extra(self) -> None:
        for c in self.extra:
            c.stop()
        self.extra, self.extra_ports = [], []


def _keys(work: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (work / "key.pem").write_bytes(pem)
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (work / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": KID, "alg": "ES256", "use": "sig"}]}))


def _split(total: int, per: int) -> list[int]:
    parts = max(1, -(-total // per))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _topic_head(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT coalesce(max(watermark), 0) FROM khala.topic_heads WHERE topic = 'runtime.run_summaries'"
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_projected(db_url: str, timeout: float) -> None:
    """Until every live projection's checkpoint reaches the journal head (bounded)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT position FROM runtime.journal_head WHERE id = 1),"
                " (SELECT coalesce(min(position), 0) FROM khala.checkpoints c JOIN khala.state s"
                "  ON s.live_generation = c.generation)"
            ).fetchone()
            if row and row[1] >= row[0]:
                return
            time.sleep(0.05)


def _event_times(db_url: str, tag: str) -> dict[tuple[str, int], float]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT stream_id, seq, extract(epoch FROM recorded_at)::float8 FROM runtime.events"
            " WHERE stream_id LIKE %s AND event_type = 'text.delta'",
            (tag + "-%",),
        ).fetchall()
    return {(r[0], int(r[1])): float(r[2]) for r in rows}


def _first_reach(seen: list[list[Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per run: (running max doc_version, time it was first reached), in receive order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for run, version, t in seen:
        steps = out.setdefault(run, [])
        if not steps or version > steps[-1][0]:
            steps.append((int(version), float(t)))
    return out


def _latencies(
    writer: dict[str, Any], probes: list[list[list[Any]]], recorded: dict[tuple[str, int], float]
) -> tuple[list[float], list[float], int]:
    commit: list[float] = []
    append: list[float] = []
    missed = 0
    for seen in probes:
        missed += _compare(writer, _first_reach(seen), recorded, commit, append)
    commit.sort()
    append.sort()
    return commit, append, missed


def _compare(
    writer: dict[str, Any],
    reach: dict[str, list[tuple[int, float]]],
    recorded: dict[tuple[str, int], float],
    commit: list[float],
    append: list[float],
) -> int:
    """Add each sent event's commit->client and append->client ms (from when `reach` first
    held its seq) to `commit` and `append`; returns how many never arrived."""
    runs: list[str] = writer["runs"]
    missed = 0
    for run_idx, seq, t_sent in writer["sent"]:
        run = runs[run_idx]
        t_rec = recorded.get((run, seq))
        t_recv = next((t for v, t in reach.get(run, []) if v >= seq), None)  # steps are few per run
        if t_recv is None or t_rec is None:
            missed += 1
            continue
        commit.append((t_recv - t_rec) * 1000.0)
        append.append((t_recv - t_sent) * 1000.0)
    return missed


def _busy() -> float:
    """CPU seconds the whole machine has been busy (every process, ours or not)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _window(
    b: Bench,
    res: Latency,
    probes: Helper | None,
    counters: list[Helper],
    seconds: float,
    writer_args: list[str],
    task: Any,
    fanout: int,
) -> dict[str, Any]:
    """One rate on already-connected subscribers: writer, metered window, catch-up, marks.

    `fanout`: subscribers each journal row should reach (every one for whole-topic
    subscribers, one for the scoped phase, where each run has a single watcher)."""
    clients = [*([probes] if probes else []), *counters]
    before = [c.mark() for c in clients]
    h0 = _topic_head(b.db_url)
    start_at = time.time() + 1.5
    writer = Helper(
        "_sync_writer.py",
        [
            *("--url", b.runtime_url, "--secret", b.secret, "--owner", OWNER, "--org", ORG, *writer_args),
            *("--rate", str(res.rate), "--seconds", str(seconds), "--start-at", repr(start_at)),
        ],
    )
    try:
        meter = benchlib.CpuMeter()
        meter.watch("khala", b.khala_processes)
        for name, group in (("projector", b.projector), ("runtime", b.runtime)):
            meter.watch(name, group.processes if group else list)
        meter.watch("postgres", b.pg.processes)
        meter.watch("subscribers", lambda: [c.proc for c in counters if c.proc.poll() is None])
        meter.watch("probes", lambda: [probes.proc] if probes and probes.proc.poll() is None else [])
        meter.watch("writer", lambda: [writer.proc] if writer.proc.poll() is None else [])
        # What delivering cost, from the window's start until the fan-out drained.
        cost = benchlib.CpuMeter()
        cost.watch("khala", b.khala_processes)
        cost.watch("clients", lambda: [c.proc for c in clients if c.proc.poll() is None])
        while time.time() < start_at:
            time.sleep(0.02)
        meter.start()
        cost.start()
        busy0 = _busy()
        prof = b.profile(f"{res.kind}-{res.subscribers}-{res.rate:g}", seconds)
        while time.time() < start_at + seconds:
            b.progress.update(task, completed=time.time() - start_at)
            time.sleep(0.05)
        meter.stop()
        machine = (_busy() - busy0) / meter.wall
        w = writer.finish(timeout=120)
    finally:
        writer.kill()
    _wait_projected(b.db_url, 30)
    h1 = _topic_head(b.db_url)
    expected = max(1, h1 - h0) * fanout
    # Grace for the fan-out to drain: until every row arrived, or nothing moved for 2 s
    # (then what is missing is lost, e.g. to slow_consumer), at most 30 s.
    rows, still, deadline = -1, 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        after = [c.mark() for c in clients]
        now_rows = sum(a["rows"] - x["rows"] for a, x in zip(after, before, strict=True))
        if now_rows >= expected:
            break
        still = still + 1 if now_rows == rows else 0
        if still >= 4:
            break
        rows = now_rows
        time.sleep(0.5)
    cost.stop()
    b.progress.update(task, completed=seconds)
    b.keep(f"{res.kind}-{res.subscribers}-{res.rate:g}", prof)
    rows = sum(a["rows"] - x["rows"] for a, x in zip(after, before, strict=True))
    res.delivered = min(rows, expected) / expected
    res.delivered_updates = rows
    res.server_us = cost.used["khala"] * 1e6 / max(1, rows)
    res.client_us = cost.used["clients"] * 1e6 / max(1, rows)
    res.client_errors = sum(a["errors"] - x["errors"] for a, x in zip(after, before, strict=True))
    res.achieved_rate = w["events"] / max(w["elapsed_s"], seconds)
    res.events = w["events"]
    res.http_p50 = benchlib.percentile(sorted(w["http_ms"]), 50)
    res.writer_errors = w["errors"]
    res.late_starts = w["late_starts"]
    res.cores = meter.shares()
    res.peaks = meter.peaks()
    # Other engineers' work on this machine (tests, browsers): it competes for the same cores.
    res.cores["others"] = round(max(0.0, machine - sum(res.cores.values())), 2)
    return w


def bench_latency(b: Bench, subscribers: int, rates: list[float], seconds: float) -> list[Latency]:
    """Connect `subscribers` once, then one measured window per rate."""
    n_probes = min(PROBES, subscribers)
    connect = b.progress.add_task(f"connect {subscribers:,} subscribers", total=1)
    probes = Helper(
        "_sync_clients.py", [*b.client_args(), "--count", str(n_probes), "--user", OWNER, "--probe"]
    )
    ports = b.ports()  # with several sync server processes, counters are split over them
    counters = [
        Helper(
            "_sync_clients.py",
            [*b.client_args(ports[i % len(ports)]), "--count", str(n), "--first", str(i * PER_PROCESS)],
        )
        for i, n in enumerate(_split(subscribers - n_probes, PER_PROCESS))
        if subscribers - n_probes > 0
    ]
    results: list[tuple[Latency, dict[str, Any], str]] = []
    try:
        live = probes.wait_ready() + sum(c.wait_ready() for c in counters)
        if live < subscribers:
            raise RuntimeError(f"only {live} of {subscribers} subscribers connected")
        b.progress.update(connect, completed=1)
        for rate in rates:
            res = Latency(subscribers, rate, khala_procs=len(ports))
            task = b.progress.add_task(f"{subscribers:,} subscribers, {rate:,.0f} events/s", total=seconds)
            tag = f"lat{subscribers}x{rate:g}-{secrets.token_hex(3)}"
            w = _window(b, res, probes, counters, seconds, ["--tag", tag], task, subscribers)
            results.append((res, w, tag))
        p = probes.finish()
        for c in counters:
            c.finish()
    finally:
        for h in (probes, *counters):
            h.kill()
    for res, w, tag in results:
        commit, append, res.missed = _latencies(w, p["seen"], _event_times(b.db_url, tag))
        res.samples = len(commit)
        res.commit_p50, res.commit_p99 = benchlib.percentile(commit, 50), benchlib.percentile(commit, 99)
        res.append_p50, res.append_p99 = benchlib.percentile(append, 50), benchlib.percentile(append, 99)
        if res.client_errors and res.first_error is None:
            res.first_error = p["first_error"]
    return [r for r, _, _ in results]


def bench_scoped(b: Bench, watchers: int, streaming: int, per_run: float, seconds: float) -> Latency:
    """Scoped fan-out: `watchers` sockets, each with one live query on one run (scope
    `{stream: run}` on runtime.run_summaries, as a run page), while `streaming` of those
    runs take `text.delta` at `per_run` events/s each. Every socket is a light watcher
    that records its run summary's versions (see `_sync_clients.py`), so every event of
    every streaming run is a latency sample."""
    ports = b.ports()
    rate = streaming * per_run
    res = Latency(
        watchers, rate, kind="scoped", streaming=streaming, khala_procs=len(ports), watcher=b.watcher
    )
    tag = f"scoped{watchers}-{secrets.token_hex(3)}"
    label = f"{watchers:,} watchers, {streaming} runs streaming ({len(ports)} sync process(es))"
    connect = b.progress.add_task(f"start {watchers:,} runs, connect {label}", total=1)
    creator = Helper(
        "_sync_writer.py",
        [*("--url", b.runtime_url, "--secret", b.secret, "--owner", OWNER, "--org", ORG),
         *("--tag", tag, "--runs", str(watchers), "--create-only")],
    )  # fmt: skip
    try:
        creator.finish(timeout=300)
    finally:
        creator.kill()
    _wait_projected(b.db_url, 60)
    helpers = [_watchers(b, ports[i % len(ports)], tag, first, n) for i, (first, n) in
               enumerate(_chunks(watchers, WATCHERS_PER_PROCESS))]  # fmt: skip
    try:
        live = sum(h.wait_ready() for h in helpers)
        if live < watchers:
            raise RuntimeError(f"only {live} of {watchers} watchers connected")
        b.progress.update(connect, completed=1)
        task = b.progress.add_task(f"{label}, {rate:,.0f} events/s", total=seconds)
        writer_args = ["--tag", tag, "--runs", str(streaming), "--no-create"]
        w = _window(b, res, None, helpers, seconds, writer_args, task, 1)
        out = [h.finish() for h in helpers]
    finally:
        for h in helpers:
            h.kill()
    seen = [sock for o in out for sock in o["seen"]]
    commit, append, res.missed = _latencies_by_run(w, seen, _event_times(b.db_url, tag))
    res.samples = len(commit)
    res.commit_p50, res.commit_p99 = benchlib.percentile(commit, 50), benchlib.percentile(commit, 99)
    res.append_p50, res.append_p99 = benchlib.percentile(append, 50), benchlib.percentile(append, 99)
    res.first_error = next((o["first_error"] for o in out if o["first_error"]), None)
    return res


def _watchers(b: Bench, port: int, tag: str, first: int, count: int) -> Helper:
    """One process of `count` watchers (sockets first..first+count-1, run tag-<n> each)."""
    if b.watcher == "python":
        return Helper("_sync_clients.py", [*b.client_args(port), "--count", str(count), "--first", str(first),
                                           *("--stream-prefix", tag, "--stream-first", str(first))])  # fmt: skip
    from _sync_clients import Minter

    minter = Minter((b.work / "key.pem").read_bytes(), KID, ISSUER)
    config = b.work / f"watchers-{tag}-{first}.json"
    config.write_text(json.dumps({
        "url": f"ws://127.0.0.1:{port}/sync/v1/ws",
        "tokens": [minter.mint(f"bench-viewer-{first + i}", ORG) for i in range(count)],
        "streams": [f"{tag}-{first + i}" for i in range(count)],
    }))  # fmt: skip
    return Helper("watchers.js", ["--config", str(config)])


def _chunks(total: int, per: int) -> list[tuple[int, int]]:
    """(first, count) of each helper process's share of `total` sockets."""
    out, first = [], 0
    for n in _split(total, per):
        out.append((first, n))
        first += n
    return out


def _latencies_by_run(
    writer: dict[str, Any], seen: list[list[list[Any]]], recorded: dict[tuple[str, int], float]
) -> tuple[list[float], list[float], int]:
    """As `_latencies`, where each run has one watcher: an event is compared with what the
    socket watching its run received (one scan per run, not per socket and event)."""
    reach: dict[str, list[tuple[int, float]]] = {}
    for sock in seen:
        for run, steps in _first_reach(sock).items():
            reach.setdefault(run, []).extend(steps)
    commit: list[float] = []
    append: list[float] = []
    missed = _compare(writer, reach, recorded, commit, append)
    commit.sort()
    append.sort()
    return commit, append, missed


@dataclass
class Idle:
    kind: str = "topic"  # "topic": a whole-topic subscription per socket; "scoped": one live query
    subscriptions: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    kb_per_sub: float = 0.0
    connect_s: float = 0.0
    sessions_reported: int = 0
    cores: dict[str, float] = field(default_factory=dict)  # while the subscriptions connect
    peaks: dict[str, float] = field(default_factory=dict)


def bench_idle(b: Bench, count: int, kind: str = "topic") -> Idle:
    """A fresh sync server; warm it with a few sockets, then hold `count` subscriptions
    (`kind` "scoped": each socket's one live query watches a run of its own, as a run page)."""
    import urllib.request

    scope = ["--stream-prefix", f"idle-{secrets.token_hex(3)}"] if kind == "scoped" else []
    task = b.progress.add_task(f"{count:,} idle subscriptions ({kind})", total=4)
    assert b.khala is not None
    b.khala.stop()
    khala = b.start_khala()
    warm = Helper("_sync_clients.py", [*b.client_args(), "--count", "20", "--user-prefix", "warm-", *scope])
    warm.wait_ready()
    warm.finish()
    time.sleep(1.0)
    res = Idle(kind=kind, rss_before_mb=khala.rss() / 2**20)
    b.progress.advance(task)
    t0 = time.monotonic()
    prof = b.profile("idle-connect", 15)
    helpers: list[Helper] = []
    meter = benchlib.CpuMeter()
    meter.watch("khala", khala.processes)
    meter.watch("subscribers", lambda: [h.proc for h in helpers if h.proc.poll() is None])
    meter.start()
    helpers += [
        Helper("_sync_clients.py", [*b.client_args(), "--count", str(n), "--first", str(first),
                                    "--stream-first", str(first), *scope, "--connect-concurrency", "32"])
        for first, n in _chunks(count, IDLE_PER_PROCESS)
    ]  # fmt: skip
    try:
        res.subscriptions = sum(h.wait_ready() for h in helpers)
        res.connect_s = time.monotonic() - t0
        meter.stop()
        res.cores, res.peaks = meter.shares(), meter.peaks()
        b.keep("idle-connect", prof)
        b.progress.advance(task)
        time.sleep(1.0 if count < 1000 else 3.0)  # let every session's first timers and buffers settle
        res.rss_after_mb = khala.rss() / 2**20
        status = urllib.request.Request(
            f"http://127.0.0.1:{b.khala_port}/sync/v1/status",
            headers={"Authorization": f"Bearer {b.env['KHALA_SELF_HOSTED_ADMIN_KEY']}"},
        )
        with urllib.request.urlopen(status, timeout=10) as r:
            res.sessions_reported = int(json.loads(r.read())["sessions"])
        b.progress.advance(task)
        for h in helpers:
            h.finish()
    finally:
        for h in helpers:
            h.kill()
    b.progress.advance(task)
    res.kb_per_sub = (res.rss_after_mb - res.rss_before_mb) * 1024 / max(1, res.subscriptions)
    return res


@dataclass
class Fold:
    appended: int = 0
    append_s: float = 0.0
    catchup_events: int = 0
    catchup_s: float = 0.0
    rebuild_events: int = 0
    rebuild_s: float = 0.0
    rebuild_drift: int = 0
    audit_events: int = 0
    audit_s: float = 0.0
    audit_drift: int = 0
    cores: dict[str, dict[str, float]] = field(default_factory=dict)  # per step
    peaks: dict[str, dict[str, float]] = field(default_factory=dict)


def _meter(b: Bench, **groups: Any) -> benchlib.CpuMeter:
    """A started meter over `groups` (name -> function listing its processes) and Postgres."""
    meter = benchlib.CpuMeter()
    for name, procs in groups.items():
        meter.watch(name, procs)
    meter.watch("postgres", b.pg.processes)
    meter.start()
    return meter


def _keep_cores(res: Fold, step: str, meter: benchlib.CpuMeter) -> None:
    meter.stop()
    res.cores[step], res.peaks[step] = meter.shares(), meter.peaks()


def bench_fold(b: Bench, events: int) -> Fold:
    res = Fold()
    assert b.projector is not None
    b.projector.stop()
    task = b.progress.add_task(f"append {events:,} events (batch API)", total=None)
    writer = Helper(
        "_sync_writer.py",
        [*("--url", b.runtime_url, "--secret", b.secret, "--owner", OWNER, "--org", ORG),
         *("--tag", f"bulk-{secrets.token_hex(3)}", "--bulk", str(events), "--in-flight", "4")],
    )  # fmt: skip
    runtime = b.runtime.processes if b.runtime else list
    meter = _meter(b, writer=lambda: [writer.proc], runtime=runtime)
    deadline = time.monotonic() + 600
    # Stop the meter while the writer is a zombie: once reaped, its CPU time is gone.
    while writer.proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    _keep_cores(res, "append", meter)
    out = writer.finish(timeout=600)
    if out["errors"]:
        raise RuntimeError(f"bulk append failed: {out['first_error']}")
    res.appended, res.append_s = out["events"], out["seconds"]
    b.progress.update(task, total=1, completed=1)

    async def positions(conn: asyncpg.Connection) -> tuple[int, int]:
        row = await conn.fetchrow(
            "SELECT (SELECT position FROM runtime.journal_head WHERE id = 1) AS head,"
            " (SELECT coalesce(min(position), 0) FROM khala.checkpoints c JOIN khala.state s"
            "  ON s.live_generation = c.generation) AS pos"
        )
        return int(row["head"]), int(row["pos"])

    async def run() -> None:
        conn = await asyncpg.connect(with_user(b.db_url, "oa_khala_writer"))
        try:
            head, before = await positions(conn)
            catch = b.progress.add_task("projector catch-up", total=head - before)
            b.projector = Child(["khala", "project"], b.env).start()
            meter = _meter(b, projector=b.projector.processes)
            deadline = time.monotonic() + 600
            t_first = None
            first_pos = before
            pos = before
            while pos < head and time.monotonic() < deadline:
                _, pos = await positions(conn)
                if t_first is None and pos > before:
                    t_first, first_pos = time.monotonic(), pos
                b.progress.update(catch, completed=pos - before)
                await asyncio.sleep(0.02)
            if t_first is not None:
                res.catchup_events, res.catchup_s = pos - first_pos, time.monotonic() - t_first
            _keep_cores(res, "catchup", meter)
            b.projector.stop()  # rebuild takes the same row lock; measure it alone
            total = await conn.fetchval("SELECT position FROM runtime.journal_head WHERE id = 1")
            rb = b.progress.add_task("rebuild (new generation, parity, switch)", total=total)
            t0 = time.monotonic()
            meter = _meter(b, bench=lambda: [psutil.Process()])  # rebuild folds in this process
            report = await rebuild(conn, lambda done, h: b.progress.update(rb, completed=done, total=h))
            res.rebuild_s, res.rebuild_events, res.rebuild_drift = (
                time.monotonic() - t0,
                report.events,
                len(report.drift),
            )
            _keep_cores(res, "rebuild", meter)
            au = b.progress.add_task("audit (fresh fold vs live documents)", total=total)
            t0 = time.monotonic()
            meter = _meter(b, bench=lambda: [psutil.Process()])
            report = await audit(conn, lambda done, h: b.progress.update(au, completed=done, total=h))
            res.audit_s, res.audit_events, res.audit_drift = (
                time.monotonic() - t0,
                report.events,
                len(report.drift),
            )
            _keep_cores(res, "audit", meter)
        finally:
            await conn.close()

    asyncio.run(run())
    return res


def _ms(x: float) -> str:
    return f"{x:.1f}"


LOAD = ("writer", "probes", "subscribers")
SERVER = ("khala", "projector", "runtime", "postgres", "bench")  # bench: rebuild/audit fold in-process


def _cores(c: dict[str, float], peaks: dict[str, float]) -> str:
    """Every party's cores, then load vs server totals and which one was saturated."""
    detail = " ".join(f"{k} {v:.2f}" for k, v in c.items() if v >= 0.01)
    return f"{detail}; {benchlib.cores_cell(c, peaks, LOAD, SERVER)}"


def idle_met(idle: Idle) -> str:
    """A row where sockets died before the server was weighed says nothing about the target."""
    if idle.sessions_reported < idle.subscriptions:
        return f"[red]invalid: {idle.subscriptions - idle.sessions_reported:,} sockets closed early[/]"
    return "[green]yes[/]" if idle.kb_per_sub < TARGET_KB else "[red]no[/]"


def render(lat: list[Latency], idle: list[Idle], fold: Fold | None) -> list[Table]:
    idle_rows = idle
    lat = [r for r in lat if r.khala_procs == 1]
    t1 = Table(title=f"oa bench sync: commit → client latency ({os.cpu_count()} cores, loopback)")
    for col in ("subscribers", "events/s (achieved)", "commit→client p50 / p99 ms", "append→client p50 / p99",
                "samples (missed)", "delivered", "server µs / update", "target", "met", "cores used"):  # fmt: skip
        t1.add_column(col, justify="right" if col not in ("target", "cores used") else "left")
    for r in lat:
        target = met = ""
        if r.subscribers == 1000 and r.rate == 100:
            target = f"p50 ≤ {TARGET_P50:g}, p99 ≤ {TARGET_P99:g}"
            ok = r.commit_p50 <= TARGET_P50 and r.commit_p99 <= TARGET_P99 and r.missed == 0
            met = "[green]yes[/]" if ok else "[red]no[/]"
        errs = f" [red]{r.client_errors} err[/]" if r.client_errors else ""
        t1.add_row(
            f"{r.subscribers:,}",
            f"{r.rate:,.0f} ({r.achieved_rate:,.0f})",
            f"{_ms(r.commit_p50)} / {_ms(r.commit_p99)}",
            f"{_ms(r.append_p50)} / {_ms(r.append_p99)}",
            f"{r.samples:,} ({r.missed:,})",
            f"{r.delivered:.1%}{errs}",
            f"{r.server_us:.1f}",
            target,
            met,
            _cores(r.cores, r.peaks),
        )
    tables = [t1]
    if idle:
        t2 = Table(title="idle subscriptions on one sync server process")
        for col in ("subscriptions", "server RSS before → after MB", "KB per subscription", "target", "met",
                    "connect+auth+subscribe s", "cores used (connecting)"):  # fmt: skip
            t2.add_column(col, justify="right")
    for idle in idle_rows:
        t2.add_row(
            f"{idle.subscriptions:,} {'live queries' if idle.kind == 'scoped' else 'topic subs'}"
            f" ({idle.sessions_reported:,} sessions)",
            f"{idle.rss_before_mb:.0f} → {idle.rss_after_mb:.0f}",
            f"{idle.kb_per_sub:.1f}",
            f"< {TARGET_KB:g} KB",
            idle_met(idle),
            f"{idle.connect_s:.1f}",
            _cores(idle.cores, idle.peaks),
        )
    if idle:
        tables.append(t2)
    if fold is not None:
        t3 = Table(title="folding the journal into Khala documents")
        for col in ("what", "events", "seconds", "events/s", "target", "met", "vs eventsourcing catch-up",
                    "cores used"):  # fmt: skip
            t3.add_column(col, justify="left" if col in ("what", "target", "cores used") else "right")

        def cores(step: str) -> str:
            return _cores(fold.cores.get(step, {}), fold.peaks.get(step, {}))

        def row(what: str, step: str, n: int, s: float, target: bool, drift: int | None = None) -> None:
            rate = n / s if s else 0.0
            d = "" if drift is None else (f" [red]{drift} drift[/]" if drift else ", 0 drift")
            t3.add_row(
                what + d, f"{n:,}", f"{s:.2f}", f"{rate:,.0f}",
                f"≥ {TARGET_REBUILD:,.0f}/s" if target else "",
                ("[green]yes[/]" if rate >= TARGET_REBUILD else "[red]no[/]") if target else "",
                f"{rate / PEER_CATCHUP:.0f}x (quoted {PEER_CATCHUP:.0f}/s)", cores(step),
            )  # fmt: skip

        t3.add_row("append (batch API, 1,000/request)", f"{fold.appended:,}", f"{fold.append_s:.2f}",
                   f"{fold.appended / fold.append_s:,.0f}" if fold.append_s else "-", "", "", "", cores("append"))  # fmt: skip
        row("projector catch-up (live, journaled)", "catchup", fold.catchup_events, fold.catchup_s, False)
        row(
            "oa khala rebuild (whole journal)",
            "rebuild",
            fold.rebuild_events,
            fold.rebuild_s,
            True,
            fold.rebuild_drift,
        )
        row(
            "oa khala audit (whole journal)", "audit", fold.audit_events, fold.audit_s, True, fold.audit_drift
        )
        tables.append(t3)
    return tables


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="oa bench sync", description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="measured window of each latency phase")
    p.add_argument("--idle", type=int, default=10_000, help="idle subscriptions")
    p.add_argument("--events", type=int, default=100_000, help="events appended for the rebuild phase")
    p.add_argument("--subscribers", default="1,100,1000")
    p.add_argument(
        "--watchers", type=int, default=1000, help="scoped: sockets, one live query on one run each"
    )
    p.add_argument("--streaming", type=int, default=100, help="scoped: runs streaming text.delta")
    p.add_argument("--stream-rate", type=float, default=10.0, help="scoped: text.delta events/s per run")
    p.add_argument("--watcher", choices=("node", "python"), default="node",
                   help="scoped: watcher processes on Node's ws (default: cheaper per update) or Python")  # fmt: skip
    p.add_argument("--rates", default="100,1000")
    p.add_argument(
        "--phases",
        default="latency,scoped,procs,idle,fold",
        help="latency (topic-wide), scoped (live queries), procs (one sync process vs two), idle, fold",
    )
    p.add_argument("--no-deflate", action="store_true", help="clients do not offer permessage-deflate")
    p.add_argument("--profile", action="store_true", help="py-spy the sync server in each phase")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: short windows, fewer sockets, fewer events"
    )
    args = p.parse_args(argv)
    benchlib.save_results("sync", lambda: run(args), argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    subs = [int(x) for x in args.subscribers.split(",")]
    rates = [float(x) for x in args.rates.split(",")]
    seconds, idle_n, events = args.seconds, args.idle, args.events
    watchers, streaming = args.watchers, args.streaming
    if args.quick:
        subs, seconds, idle_n, events = [s for s in subs if s <= 100], 2.0, 500, 5_000
        watchers, streaming = min(watchers, 100), min(streaming, 10)
    from _sync_clients import raise_nofile

    raise_nofile()
    t_begin = time.monotonic()
    lat: list[Latency] = []
    scoped: list[Latency] = []
    idle: list[Idle] = []
    fold: Fold | None = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (
        tempfile.TemporaryDirectory(prefix="oa-bench-sync-") as tmp,
        Progress(*columns, console=console, transient=False) as progress,
        benchlib.postgres() as pg,
        benchlib.database(pg.admin_url, "oa_bench_sync") as db_url,
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
            "KHALA_SELF_HOSTED_ADMIN_KEY": secrets.token_hex(16),  # /sync/v1/status is for operators
        }
        b = Bench(db_url, work, pg, progress, secret, env, deflate=not args.no_deflate, watcher=args.watcher)
        if b.watcher == "node" and ({"scoped", "procs"} & set(args.phases.split(","))):
            ensure_node_watchers()
        phases = set(args.phases.split(","))
        if args.profile:
            b.profile_dir = benchlib.RESULTS_DIR / "sync-profiles"
            b.profile_dir.mkdir(parents=True, exist_ok=True)
        try:
            port = free_port()
            b.runtime_url = f"http://127.0.0.1:{port}"
            b.runtime = Child(
                ["serve", "runtime", "--port", str(port), "--skip-migrate"], env, b.runtime_url + "/healthz"
            ).start()
            b.projector = Child(["khala", "project"], env).start()
            b.start_khala()
            if "latency" in phases:
                for n in subs:
                    lat.extend(bench_latency(b, n, rates, seconds))
            if "scoped" in phases:
                scoped.append(bench_scoped(b, watchers, streaming, args.stream_rate, seconds))
            if "procs" in phases:  # the same loads again on two sync processes, clients split
                b.add_khala()
                try:
                    scoped.append(bench_scoped(b, watchers, streaming, args.stream_rate, seconds))
                    if not args.quick:  # the smoke run keeps to the scoped shape here
                        lat.extend(bench_latency(b, max(subs), rates[:1], seconds))
                finally:
                    b.drop_extra()
            if "idle" in phases:
                idle.append(bench_idle(b, idle_n, "topic"))
                idle.append(bench_idle(b, idle_n, "scoped"))
            if "fold" in phases:
                fold = bench_fold(b, events)
        finally:
            b.drop_extra()
            for c in (b.khala, b.projector, b.runtime):
                if c is not None:
                    c.stop()
    for t in render(lat, idle, fold):
        console.print(t)
    one = [r for r in scoped if r.khala_procs == 1]
    if scoped:
        console.print(scale.scoped_table(scoped))
    every = [*lat, *scoped]
    matched = scale.pairs([r for r in every if r.khala_procs == 1], [r for r in every if r.khala_procs == 2])
    if matched:
        console.print(scale.procs_table(matched))
    topic_big = max(
        (r for r in lat if r.khala_procs == 1), key=lambda r: (r.subscribers, -r.rate), default=None
    )
    if one or topic_big or idle:
        console.print(scale.cost_table(one[0] if one else None, topic_big, idle))
    idle_live = next((i for i in idle if i.kind == "scoped"), None)
    projection = None
    if one and idle_live is not None:
        projection = scale.project([*lat, *scoped], one[0], idle_live)
        console.print(scale.projection_table(projection))
    for r in lat:
        if r.client_errors or r.writer_errors:
            console.print(
                f"[red]{r.subscribers} subs @ {r.rate:g}/s: {r.client_errors} client errors "
                f"({r.first_error}), {r.writer_errors} writer errors[/]"
            )
    for name, prof in b.profiles.items():
        top = ", ".join(f"{f} {share:.0%}" for f, share in prof["self"][:6])
        console.print(f"[dim]py-spy {name} (self time): {top}[/]")
    elapsed = time.monotonic() - t_begin
    console.print(
        f"whole run {elapsed:.0f} s; latency windows {seconds:g} s each; psutil {psutil.__version__}"
    )
    return {
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "elapsed_s": round(elapsed, 1),
        "latency": [asdict(r) for r in lat],
        "scoped": [asdict(r) for r in scoped],
        "idle": asdict(idle[0]) if idle else None,  # the whole-topic row, as before
        "idle_rows": [asdict(i) for i in idle],
        "projection": asdict(projection) if projection else None,
        "fold": asdict(fold) if fold else None,
        "profiles": b.profiles,
    }


if __name__ == "__main__":
    main()
