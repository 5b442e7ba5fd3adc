"""Invariant 6: v1 evolves additively. `buf breaking` must catch a removed, renumbered or
retyped field and let a new field through; `scripts/buf-check.sh` (what `make test` runs)
must fail a commit that breaks the schema against its base."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"
TEXT_DELTA = "proto/oa/runtime/v1/events.proto"
CHANNEL = "  string channel = 2;\n"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is installed with the dev extras (buf-bin)")


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BUF.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def edited_copy(tmp: Path, old: str, new: str) -> Path:
    shutil.copytree(REPO / "proto", tmp / "proto")
    path = tmp / TEXT_DELTA
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {TEXT_DELTA} once; update this test"
    path.write_text(text.replace(old, new))
    return tmp / "proto"


def test_buf_lint_passes() -> None:
    result = run(BUF, "lint", "proto")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("new", "named"),
    [
        ("", ['field "2" with name "channel" on message "TextDelta" was deleted']),
        (
            "  string channel = 7;\n",
            ['Previously present field "2" with name "channel"', "without reserving the number"],
        ),
        ("  int64 channel = 2;\n", ['"TextDelta" changed type from "string" to "int64"']),
        (
            "  string channel_name = 2;\n",
            ['"channel"', "channel_name"],
        ),  # WIRE_JSON: JSON names are contract too
    ],
    ids=["removed", "renumbered", "retyped", "renamed"],
)
def test_breaking_changes_fail_and_are_named(tmp_path: Path, new: str, named: list[str]) -> None:
    changed = edited_copy(tmp_path, CHANNEL, new)
    result = run(BUF, "breaking", changed, "--against", REPO / "proto")
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"buf breaking passed a breaking change:\n{out}"
    assert "events.proto" in out
    for word in named:
        assert word in out, out


def test_an_additive_change_passes(tmp_path: Path) -> None:
    changed = edited_copy(tmp_path, CHANNEL, CHANNEL + "  string language = 3;\n")
    result = run(BUF, "breaking", changed, "--against", REPO / "proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ci_script_fails_a_breaking_commit(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts/buf-check.sh", tmp_path / "scripts/buf-check.sh")
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@example.invalid")
    run("git", "init", "-q", "-b", "main", cwd=tmp_path)
    run(*git, "commit", "-q", "--allow-empty", "-m", "root", cwd=tmp_path)
    run("git", "add", ".", cwd=tmp_path)
    run(*git, "commit", "-q", "-m", "base", cwd=tmp_path)
    assert run("bash", "scripts/buf-check.sh", cwd=tmp_path).returncode == 0

    proto = tmp_path / TEXT_DELTA
    proto.write_text(proto.read_text().replace(CHANNEL, CHANNEL + "  string language = 3;\n"))
    run(*git, "commit", "-q", "-am", "additive", cwd=tmp_path)
    ok = run("bash", "scripts/buf-check.sh", cwd=tmp_path)
    assert ok.returncode == 0 and "against HEAD~1" in ok.stdout, ok.stdout + ok.stderr

    proto.write_text(proto.read_text().replace(CHANNEL, ""))
    run(*git, "commit", "-q", "-am", "breaking", cwd=tmp_path)
    bad = run("bash", "scripts/buf-check.sh", cwd=tmp_path)
    assert bad.returncode != 0 and '"channel"' in bad.stdout + bad.stderr, bad.stdout + bad.stderr
