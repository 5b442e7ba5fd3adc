"""`oa bench ...` reaches every script flag and prints the command that reproduces its tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.pg import server_url


def _oa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oa.cli.main", *args],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_sync_names_the_flags_of_a_readme_row() -> None:
    out = _oa("bench", "sync", "--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--subscribers", "--rates", "--phases", "--seconds", "--quick"):
        assert flag in out.stdout


def test_a_flag_the_command_does_not_name_reaches_the_script(tmp_path: Path) -> None:
    env = {"OA_BENCH_DATABASE_URL": server_url(), "OA_BENCH_RESULTS_DIR": str(tmp_path)}
    # --writers is journal_position.py's own; the command names it, --warmup it passes on.
    out = _oa("bench", "journal-position", "--quick", "--writers", "4", "--warmup", "0.1", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "journal_position.json").read_text())
    assert saved["status"] == "ok" and saved["writers"] == 4
    assert "--warmup 0.1" in saved["command"]
    assert f"reproduce: {saved['command']}" in out.stdout
    assert saved["command"].startswith("oa bench journal-position --seconds 5.0 --writers 4 --quick")
