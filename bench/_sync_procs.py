"""Child processes for `bench/sync.py`: the three servers and the client/writer helpers.

Why its own module: the orchestrator must start, health-check, meter and always stop
several kinds of processes (runtime, projector, Khala sync server, subscriber and writer
helpers); keeping that plumbing here leaves `sync.py` about what is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib
import psutil

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"


def ensure_node_watchers() -> None:
    """`npm ci` in bench/node on first use (its `ws` is pinned by package-lock.json)."""
    if (NODE_DIR / "node_modules" / "ws").exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("the Node watchers need node and npm (Node 20); or pass --watcher python")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"npm ci in {NODE_DIR} failed: {done.stderr.strip()[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """`python -m oa.cli.main ARGS` in a child process; healthy when `health` answers 200."""

    def __init__(self, args: Sequence[str], env: dict[str, str], health: str | None = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, **env}
        self.health = health
        self.proc: psutil.Popen | None = None

    def start(self, timeout: float = 30.0) -> Child:
        self.proc = psutil.Popen(
            [sys.executable, "-m", "oa.cli.main", *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"{self.args[:2]} exited with {self.proc.returncode}: {err}")
            if self.health is None:
                time.sleep(1.0)  # the projector has no port: alive after its start-up is enough
                if self.proc.poll() is None:
                    return self
                continue
            try:
                with urllib.request.urlopen(self.health, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.args[:2]} did not become healthy")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return int(self.proc.pid)

    def processes(self) -> list[psutil.Process]:
        return [self.proc] if self.proc is not None and self.proc.poll() is None else []

    def rss(self) -> int:
        assert self.proc is not None
        return int(self.proc.memory_info().rss)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except psutil.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


class Helper:
    """A `bench/_sync_*.py` helper; clients print `READY n`, then wait for a line on stdin.

    Its result goes to a file this side names (`--result-file`), never to stdout: see
    `benchlib.write_json_atomic` for the 64 KiB cut that stdout gave.
    """

    def __init__(self, script: str, args: Sequence[str]) -> None:
        self.label = script
        self.result_file = benchlib.result_path(Path(script).stem)
        # `*.js`: a Node helper in bench/node (the scoped phase's light watchers).
        run = (
            ["node", str(NODE_DIR / script)]
            if script.endswith(".js")
            else [sys.executable, str(BENCH_DIR / script)]
        )
        self.proc = psutil.Popen(
            [*run, *args, "--result-file", str(self.result_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = 0

    def wait_ready(self) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the helper's connects time out
        if not line.startswith("READY"):
            self.proc.wait(30)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise benchlib.HelperFailed(f"{self.label} exited with {self.proc.returncode}: {err[-2000:]}")
        self.ready = int(line.split()[1])
        return self.ready

    def mark(self) -> dict[str, Any]:
        """Totals so far (`MARK` line) from a client helper that keeps running."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.startswith("MARK "):
            raise RuntimeError(f"client helper did not answer a mark: {line[:200]!r}")
        result: dict[str, Any] = json.loads(line[5:])
        return result

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        label = self.label
        try:
            _, err = self.proc.communicate("stop\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            label += f" (still running {timeout:g} s after 'stop', so killed)"
        return benchlib.read_result(label, self.proc.returncode, err, self.result_file)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.result_file.unlink(missing_ok=True)


class Profile:
    """`py-spy record` of one process for a window (`--profile`): why a target is missed.

    Raw collapsed stacks go to a file; `top()` sums them per function (self time, where
    the samples' innermost frame was, and inclusive time) for the report.
    """

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = psutil.Popen(
            [str(spy), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--format", "raw", "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait(self) -> None:
        try:
            self.proc.wait(60)
        except psutil.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def top(self, n: int = 10) -> dict[str, list[tuple[str, float]]]:
        self.wait()
        if not self.out.exists():
            return {"self": [], "inclusive": []}
        own: dict[str, int] = {}
        incl: dict[str, int] = {}
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            k = int(count)
            total += k
            frames = [
                f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] if "/" in f else f for f in stack.split(";")
            ]
            own[frames[-1]] = own.get(frames[-1], 0) + k
            for f in set(frames):
                incl[f] = incl.get(f, 0) + k
        total = max(total, 1)

        def best(d: dict[str, int]) -> list[tuple[str, float]]:
            return [(f, round(v / total, 3)) for f, v in sorted(d.items(), key=lambda x: -x[1])[:n]]

        return {"self": best(own), "inclusive": best(incl), "samples": [("total", float(total))]}
