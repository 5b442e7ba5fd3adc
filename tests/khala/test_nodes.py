"""Khala on several processes: `oa khala serve --workers 2` serves one port from two pids,
both deliver to the clients connected to either, each reads each committed batch once (its
own metrics say so), and `oa khala status` lists the nodes that are up.

Real child processes (`python -m oa.cli.main khala serve`), the real client, real Postgres.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oa.bootstrap import services
from oa.khala.client import KhalaClient
from oa.khala.store.nodes import live_nodes
from oa.khala.sync.metrics import NAMES
from oa.khala.sync.node import Node, parse_application_name
from oa.store.database import with_user
from tests.conftest import Signer
from tests.khala.sync_fixtures import ISSUER, jwks_file, khala_settings, token_provider
from tests.khala.test_live_queries import RUNS, post
from tests.support.deployment import Cli
from tests.support.servers import ChildProcess, free_port

ADMIN_KEY = "nodes-admin-key-" + uuid.uuid4().hex
NODE_LINE = re.compile(r"node (\S+) pid (\d+) at (\S+)")  # each of --workers N
SOLO_LINE = re.compile(r"khala listening on (\S+) \(node (\S+), pid (\d+)\)")  # one process


@dataclass
class KhalaNode:
    id: str
    pid: int
    url: str


@dataclass
class KhalaCommand(ChildProcess):
    """`oa khala serve ARGS` in a child process, configured as an operator would (env)."""

    database_url: str
    home: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.home / f"khala-{self.port}.log"

    def env(self) -> dict[str, str]:
        return {
            "OA_DATABASE_URL": self.database_url,
            "OA_HOME": str(self.home),
            "OA_KHALA_JWKS_FILE": str(jwks_file()),
            "OA_SYNC_TOKEN_ISSUER": ISSUER,
            "KHALA_SELF_HOSTED_ADMIN_KEY": ADMIN_KEY,
        }

    def start(self, processes: int = 1, timeout: float = 120.0) -> list[KhalaNode]:
        self.home.mkdir(parents=True, exist_ok=True)
        self.spawn(["khala", "serve", "--port", str(self.port), *self.args], self.env(), self.log, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()
            nodes = [KhalaNode(m[1], int(m[2]), m[3]) for m in NODE_LINE.finditer(text)]
            nodes += [KhalaNode(m[2], int(m[3]), m[1]) for m in SOLO_LINE.finditer(text)]
            if len(nodes) >= processes:
                return nodes
            time.sleep(0.1)
        raise AssertionError(f"no {processes} node lines in {self.log.read_text()[-2000:]}")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {labels: value} from a node's /metrics (counters by their `_total` sample)."""
    async with httpx.AsyncClient(timeout=10) as h:
        resp = await h.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code == 200, resp.text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, node: str) -> float:
    return sum(v for labels, v in metrics[name].items() if ("node", node) in labels)


def children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def one(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, node: str) -> float:
    values = [v for labels, v in metrics[name].items() if ("node", node) in labels]
    assert len(values) == 1, (name, metrics[name])
    return values[0]


@pytest.fixture(scope="module")
def workers(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KhalaCommand, list[KhalaNode]]]:
    cmd = KhalaCommand(database_url, tmp_path_factory.mktemp("workers"), ["--workers", "2", "--node-id", "w"])
    nodes = cmd.start(processes=2)
    try:
        yield cmd, nodes
    finally:
        cmd.stop()


async def journal_batches(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(DISTINCT batch_id) FROM khala.stream_journal"))


async def test_two_processes_serve_one_port_and_each_reads_every_batch_once(
    workers: tuple[KhalaCommand, list[KhalaNode]], database_url: str, runtime_url: str, sign: Signer
) -> None:
    cmd, nodes = workers
    assert [n.id for n in nodes] == ["w.1", "w.2"]
    pids = {n.pid for n in nodes}
    assert len(pids) == 2 and cmd.proc is not None and cmd.proc.pid not in pids
    # One port, two processes: fresh connections to it reach both (the kernel spreads them).
    reached: set[int] = set()
    async with asyncio.timeout(30):
        while reached != pids:
            async with httpx.AsyncClient(timeout=5) as h:  # a new connection each time
                resp = await h.get(
                    f"{cmd.url}/sync/v1/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                )
            reached.add(resp.json()["node"]["pid"])

    user = f"nodes-{uuid.uuid4().hex[:6]}"
    run = f"run-{user}"
    reader = await asyncpg.connect(with_user(database_url, "oa_khala_reader"))
    projector = services.projector(database_url, idle_poll_s=0.2)
    projector.start()
    clients = [KhalaClient(cmd.url, token_provider(user), [RUNS], max_backoff_s=0.5) for _ in range(6)]
    clients += [KhalaClient(n.url, token_provider(user), [RUNS], max_backoff_s=0.5) for n in nodes]
    try:
        for c in clients:
            await c.start()
        await asyncio.wait_for(asyncio.gather(*(c.live.wait() for c in clients)), 30)
        before = {n.id: await scrape(n.url) for n in nodes}
        for n in nodes:  # each process holds sockets of its own (at least the one sent to it)
            assert one(before[n.id], "khala_sockets", n.id) >= 1
        await asyncio.sleep(0.5)  # let the projector settle whatever earlier tests left
        batches_before = await journal_batches(reader)
        read_before = {
            n.id: one(await scrape(n.url), "khala_journal_batches_read_total", n.id) for n in nodes
        }

        async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}")) as h:
            await post(h, run, "run.started")
            for i in range(4):
                await post(h, run, "text.delta", {"text": f"t{i}"})
            await post(h, run, "run.finished", {"status": "succeeded"})
        key = f"runtime/run_summary:{run}"
        for c in clients:  # every client, whichever process it is on, ends at the last version
            await c.wait_until(lambda k: key in k.documents and k.documents[key].doc_version == 6, timeout=30)

        async with asyncio.timeout(20):
            while True:
                new_batches = await journal_batches(reader) - batches_before
                after = {n.id: await scrape(n.url) for n in nodes}
                lags = [total(after[n.id], "khala_lag_watermarks", n.id) for n in nodes]
                read = {
                    n.id: one(after[n.id], "khala_journal_batches_read_total", n.id) - read_before[n.id]
                    for n in nodes
                }
                if all(v == new_batches for v in read.values()):
                    break
                await asyncio.sleep(0.2)
        assert new_batches >= 1 and sum(lags) == 0
        # Each process read each new batch exactly once, whatever its number of sockets.
        assert read == {n.id: new_batches for n in nodes}
        for n in nodes:
            m = after[n.id]
            assert one(m, "khala_frames_sent_total", n.id) > one(
                before[n.id], "khala_frames_sent_total", n.id
            )
            assert one(m, "khala_bytes_sent_total", n.id) > one(before[n.id], "khala_bytes_sent_total", n.id)
    finally:
        for c in clients:
            await c.close()
        await projector.stop()
        await reader.close()


async def test_metrics_carry_every_name_with_the_node_label(
    workers: tuple[KhalaCommand, list[KhalaNode]],
) -> None:
    _cmd, nodes = workers
    for n in nodes:
        m = await scrape(n.url)
        for name in NAMES:
            assert name in m, f"{name} missing from {n.url}/metrics"
            assert all(("node", n.id) in labels for labels in m[name]), (name, m[name])
        assert one(m, "khala_node_info", n.id) == 1
        assert [dict(k)["pid"] for k in m["khala_node_info"]] == [str(n.pid)]
        topics = {dict(k)["topic"] for k in m["khala_lag_watermarks"]}
        assert RUNS in topics
    async with httpx.AsyncClient(timeout=5) as h:  # operators only, as before
        assert (await h.get(f"{nodes[0].url}/metrics")).status_code == 401


async def test_the_root_builds_what_the_cli_serves(
    workers: tuple[KhalaCommand, list[KhalaNode]], database_url: str
) -> None:
    _cmd, nodes = workers
    async with httpx.AsyncClient(timeout=10) as h:
        served = (await h.get(f"{nodes[0].url}/openapi.json")).json()
    built = services.khala_app(khala_settings(database_url, admin_key=ADMIN_KEY)).openapi()
    assert sorted(served["paths"]) == sorted(built["paths"])
    assert served["paths"] == built["paths"]


async def test_status_lists_the_nodes_up_and_forgets_a_killed_one(
    workers: tuple[KhalaCommand, list[KhalaNode]], database_url: str, tmp_path: Path
) -> None:
    _cmd, nodes = workers
    solo = KhalaCommand(database_url, tmp_path / "solo", ["--node-id", "solo"])
    [solo_node] = solo.start()
    cli = Cli(tmp_path, {"OA_DATABASE_URL": database_url, "KHALA_SELF_HOSTED_ADMIN_KEY": ADMIN_KEY})
    try:
        out = await asyncio.to_thread(cli, "khala", "status")
        assert out.returncode == 0, out.stderr
        for n in [*nodes, solo_node]:
            row = next((line for line in out.stdout.splitlines() if f" {n.id} " in line), None)
            assert row is not None, out.stdout
            assert str(n.pid) in row and n.url in row
        # The reader role sees its own sessions whole: when each node connected, too.
        conn = await asyncpg.connect(with_user(database_url, "oa_khala_reader"))
        try:
            seen = {s.node_id: s for s in await live_nodes(conn)}
            assert {"w.1", "w.2", "solo"} <= set(seen)
            assert all(seen[i].since is not None for i in ("w.1", "w.2", "solo"))
            solo.kill9()
            async with asyncio.timeout(15):
                while "solo" in {s.node_id for s in await live_nodes(conn)}:
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()
        out = await asyncio.to_thread(cli, "khala", "status")
        assert out.returncode == 0, out.stderr
        assert " solo " not in out.stdout and " w.1 " in out.stdout and " w.2 " in out.stdout
    finally:
        solo.stop()


async def test_a_dead_process_is_restarted_and_stop_ends_them_all(database_url: str, tmp_path: Path) -> None:
    cmd = KhalaCommand(database_url, tmp_path, ["--workers", "2", "--node-id", "r"])
    nodes = cmd.start(processes=2)
    try:
        victim = nodes[1]
        os.kill(victim.pid, signal.SIGKILL)
        async with asyncio.timeout(60):
            while (
                len(NODE_LINE.findall(cmd.log.read_text())) < 2 or "restarting it" not in cmd.log.read_text()
            ):
                await asyncio.sleep(0.2)
            conn = await asyncpg.connect(with_user(database_url, "oa_khala_reader"))
            try:
                while True:  # r.2 is back (a new process, a new URL)
                    up = {s.node_id: s for s in await live_nodes(conn)}
                    if "r.2" in up and up["r.2"].url != victim.url:
                        break
                    await asyncio.sleep(0.2)
            finally:
                await conn.close()
        assert f"pid {victim.pid}) exited with code -9; restarting it" in cmd.log.read_text()
        assert cmd.proc is not None and cmd.proc.poll() is None
        children = children_of(cmd.proc.pid)
        assert len(children) == 2 and victim.pid not in children
    finally:
        assert cmd.proc is not None
        cmd.proc.terminate()
        assert cmd.proc.wait(30) == 0
    assert not any(pid_alive(p) for p in children)


async def test_killing_the_parent_ends_its_khala_processes(database_url: str, tmp_path: Path) -> None:
    cmd = KhalaCommand(database_url, tmp_path, ["--workers", "2"])
    nodes = cmd.start(processes=2)
    cmd.kill9()  # no chance to stop them: the kernel's parent-death signal does
    async with asyncio.timeout(20):
        while any(pid_alive(n.pid) for n in nodes):
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--node-id", "no spaces please"], {}, "node id 'no spaces please': use 1-24 letters"),
        (["--node-id", "x" * 25], {}, "use 1-24 letters"),
        ([], {"KHALA_DEPLOYMENT_CLASS": "staging"}, "KHALA_DEPLOYMENT_CLASS='staging': use one of dev, prod"),
        ([], {"OA_KHALA_MAX_QUEUED_BYTES": "lots"}, "OA_KHALA_MAX_QUEUED_BYTES='lots' is not a int"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(
    database_url: str, tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    cmd = KhalaCommand(database_url, tmp_path, args)
    out = subprocess.run(
        [sys.executable, "-m", "oa.cli.main", "khala", "serve", "--port", str(cmd.port), *args],
        env={**os.environ, **cmd.env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_node_names_itself_within_what_postgres_keeps() -> None:
    node = Node("web.2", "http://127.0.0.1:8789")
    assert node.application_name == "oa-khala:web.2:http://127.0.0.1:8789"
    assert parse_application_name(node.application_name) == ("web.2", "http://127.0.0.1:8789")
    assert parse_application_name("psql") is None
    with pytest.raises(ValueError, match="shorter node id"):
        _ = Node("x" * 24, "http://khala-node-17.eu-west.example.com:8789").application_name
