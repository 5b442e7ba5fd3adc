"""Starting the embedded Postgres prints nothing a user cannot act on (issue 13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_xdg_runtime_dir_warning_from_the_embedded_postgres(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = (
        "import pathlib, sys; from oa.store.embedded import start_embedded;"
        f" print(start_embedded(pathlib.Path({str(tmp_path / 'pg')!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "XDG_RUNTIME_DIR" not in out.stderr and "Warning" not in out.stderr, out.stderr


def test_makefile_pip_calls_keep_errors_but_not_the_machines_index_warnings() -> None:
    # `-q` still prints pip's WARNING lines ("Location 'file:///...' is ignored"), which come
    # from the machine's pip config, not from us; `-qq` hides warnings and keeps errors.
    pip_lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line]
    assert pip_lines and all(" -qq " in line for line in pip_lines)
