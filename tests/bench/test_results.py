"""A helper's result reaches the parent whole, whatever its size, or the helper's own error.

Real child processes and real pipes: the 64 KiB cut came from how a child's stdout
behaves under PYTHONUNBUFFERED=1 (see `bench/benchlib.py`), so nothing here is simulated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import benchlib  # type: ignore[import-not-found]  # noqa: E402  (bench/ is scripts, not a package)

CHILD = """
import sys
sys.path.insert(0, {bench!r})
import benchlib
mode, path = sys.argv[1], sys.argv[2]
big = {{"seen": [["lat1000x100-abcdef-%d" % i, i, 1764700000.123456 + i] for i in range(20000)]}}
if mode == "ok":
    benchlib.write_json_atomic(__import__("pathlib").Path(path), big)
elif mode == "crash":
    sys.stderr.write("the helper's own complaint\\n")
    raise SystemExit(3)
"""


def _run(mode: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    path = tmp_path / "result.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the environment that cut stdout at 64 KiB
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(bench=str(BENCH)), mode, str(path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)  # the parent busy elsewhere (metering a window), as in bench/sync.py
    return proc, path


def test_a_result_far_over_a_pipe_buffer_arrives_whole(tmp_path: Path) -> None:
    proc, path = _run("ok", tmp_path)
    _, err = proc.communicate(timeout=60)
    result = benchlib.read_result("child", proc.returncode, err, path)
    assert len(json.dumps(result)) > 16 * 65536
    assert len(result["seen"]) == 20000 and result["seen"][-1][1] == 19999
    assert not path.exists(), "the parent removes a result file once read"


def test_a_failed_helper_reports_its_exit_code_and_stderr(tmp_path: Path) -> None:
    proc, path = _run("crash", tmp_path)
    _, err = proc.communicate(timeout=60)
    with pytest.raises(benchlib.HelperFailed, match=r"exited with 3: the helper's own complaint"):
        benchlib.read_result("child", proc.returncode, err, path)


def test_a_helper_that_exits_0_without_a_result_says_so(tmp_path: Path) -> None:
    proc, path = _run("silent", tmp_path)
    _, err = proc.communicate(timeout=60)
    with pytest.raises(benchlib.HelperFailed, match="exited 0 but wrote no result file"):
        benchlib.read_result("child", proc.returncode, err, path)


def test_a_failed_benchmark_still_writes_its_results_file_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(benchlib, "RESULTS_DIR", tmp_path)

    def broken() -> dict[str, object]:
        raise RuntimeError("subscribers never connected")

    with pytest.raises(RuntimeError):
        benchlib.save_results("sync", broken, ["--quick"])
    saved = json.loads((tmp_path / "sync.json").read_text())
    assert saved["status"] == "failed"
    assert "subscribers never connected" in saved["error"]
    assert saved["command"] == "oa bench sync --quick"


def test_saturated_names_the_side_whose_busiest_process_is_near_a_core() -> None:
    cores = {"writer": 0.95, "khala": 0.4, "postgres": 1.3, "others": 1.5}
    peaks = {"writer": 0.95, "khala": 0.4, "postgres": 0.3, "others": 1.5}
    cell = benchlib.cores_cell(cores, peaks, ("writer",), ("khala", "postgres"))
    assert cell.startswith("load 0.95 · server 1.70")
    assert "saturated: writer" in cell and "postgres" not in cell.split("saturated")[1]
    assert "saturated" not in benchlib.cores_cell(cores, {"writer": 0.5}, ("writer",), ("khala",))
