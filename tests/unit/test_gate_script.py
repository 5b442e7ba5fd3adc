"""The seed's gate script finds the project's own environment from a bare shell, or says what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATE_SH = ROOT / "deploy" / "khala" / "mcp-production-access-gate.sh"
BARE = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}  # no venv activated, no oa on PATH


def project(tmp_path: Path, with_venv: bool) -> Path:
    """A checkout's layout: deploy/khala/<script>, and .venv/bin/oa beside it when installed."""
    script = tmp_path / "deploy" / "khala" / GATE_SH.name
    script.parent.mkdir(parents=True)
    shutil.copy(GATE_SH, script)
    if with_venv:
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        (tmp_path / ".venv" / "bin" / "oa").symlink_to(Path(sys.executable).parent / "oa")
    return script


def test_the_gate_script_uses_the_projects_venv_from_a_bare_shell(tmp_path: Path) -> None:
    script = project(tmp_path, with_venv=True)
    out = subprocess.run(["sh", str(script)], env=BARE, capture_output=True, text=True, timeout=60)
    assert "No module named" not in out.stderr
    assert out.returncode == 1 and "MCP production access denied" in out.stderr, out.stderr


def test_without_a_venv_it_says_exactly_what_to_do(tmp_path: Path) -> None:
    script = project(tmp_path, with_venv=False)
    out = subprocess.run(["sh", str(script)], env=BARE, capture_output=True, text=True, timeout=60)
    assert out.returncode == 127
    assert f"no {tmp_path}/.venv/bin/oa" in out.stderr and "make lint" in out.stderr and "OA_BIN" in out.stderr
