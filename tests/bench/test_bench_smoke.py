"""Every benchmark's `--quick` run, as a subprocess on the test Postgres: it completes and its
`bench/results/NAME.json` is whole, with every row its tables print (not the figures: speed
is the benchmarks' business, not the tests').

Why here: a benchmark broken by a change elsewhere should be a red test, not a surprise in
the next measurement. The benches create (and drop) databases of their own on the server
`OA_BENCH_DATABASE_URL` names; here that is the test cluster, and `OA_BENCH_RESULTS_DIR`
keeps the smoke results out of a developer's bench/results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.pg import server_url

BENCH = Path(__file__).resolve().parents[2] / "bench"
CHROMIUM = Path("/usr/bin/chromium")


def _smoke(name: str, tmp_path: Path, *extra: str, timeout: float = 240) -> dict[str, Any]:
    env = {**os.environ, "OA_BENCH_DATABASE_URL": server_url(), "OA_BENCH_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", *extra],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{name} --quick failed ({done.returncode}):\n{done.stderr[-3000:]}"
    assert f"reproduce: oa bench {name.replace('_', '-')} --quick" in done.stdout
    saved: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["status"] == "ok", saved
    return saved


def test_append(tmp_path: Path) -> None:
    r = _smoke("append", tmp_path, "--writers", "8")
    assert set(r["phases"]) == {"single", "batch100", "batch10", "pgbench", "eventsourcing"}
    for key, phase in r["phases"].items():
        # Not the figures (a loaded machine may finish no batch in a 2 s window), but no failure.
        assert phase["errors"] == 0, (key, phase["first_error"])
        assert phase["cores"] and phase["peaks"], key


def test_sync(tmp_path: Path) -> None:
    r = _smoke("sync", tmp_path, "--subscribers", "1,20", "--rates", "100")
    assert [(x["subscribers"], x["rate"]) for x in r["latency"]] == [(1, 100.0), (20, 100.0)]
    for row in r["latency"]:
        assert row["events"] > 0 and row["writer_errors"] == 0 and row["cores"] and row["peaks"], row
    assert r["idle"]["subscriptions"] == 500 and r["idle"]["cores"]["khala"] > 0
    assert [(i["kind"], i["subscriptions"]) for i in r["idle_rows"]] == [("topic", 500), ("scoped", 500)]
    # Scoped fan-out on one sync process, then the same load on two (clients split over them).
    assert [(x["kind"], x["khala_procs"], x["subscribers"]) for x in r["scoped"]] == [
        ("scoped", 1, 100),
        ("scoped", 2, 100),
    ]
    for row in r["scoped"]:
        assert row["events"] > 0 and row["samples"] > 0 and row["delivered_updates"] > 0, row
        assert row["server_us"] > 0 and row["client_us"] > 0 and row["cores"]["khala"] > 0, row
    assert r["projection"]["node"] > 0 and r["projection"]["lines"]
    assert r["fold"]["rebuild_events"] > 0 and r["fold"]["audit_events"] > 0
    assert set(r["fold"]["cores"]) == set(r["fold"]["peaks"]) == {"append", "catchup", "rebuild", "audit"}


def test_nodes(tmp_path: Path) -> None:
    buses = "postgres,nats" if _nats_up() else "postgres"
    r = _smoke("nodes", tmp_path, "--buses", buses)
    assert [(x["bus"], x["nodes"]) for x in r["rows"]] == [("-", 0)] + [(b, 1) for b in buses.split(",")]
    for row in r["rows"]:
        assert row["events"] > 0 and row["writer_errors"] == 0 and row["client_errors"] == 0, row
        assert row["nodes"] == 0 or (row["khala_connections"] > 0 and row["delivered"] > 0), row


def _nats_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
        return True
    except OSError:
        return False


def test_auth(tmp_path: Path) -> None:
    r = _smoke("auth", tmp_path)
    for key in ("mint_sign", "mint_http", "verify_first", "verify_repeat", "verify_ceiling"):
        assert r[key] > 0, key
    assert r["mint_http_cores"] and r["mint_http_peaks"]


def test_spend(tmp_path: Path) -> None:
    r = _smoke("spend", tmp_path)
    assert set(r["phases"]) == {"hot", "spread", "one_tx_per_reserve"}
    assert all(p["count"] > 0 and p["ok"] and p["cores"]["bench"] > 0 for p in r["phases"].values())


def test_replay(tmp_path: Path) -> None:
    r = _smoke("replay", tmp_path)
    assert r["events"] == 2000 and r["bytes"] > 0 and r["verify_s"] > 0


def test_deltas(tmp_path: Path) -> None:
    r = _smoke("deltas", tmp_path)
    formats = {(row["document"], row["format"]) for row in r["formats"]}
    assert ("timeline", "json_patch") in formats and ("timeline", "merge_patch") in formats
    off, on = r["socket"]["no_deltas"], r["socket"]["deltas"]
    assert not off["deltas"] and on["deltas"] and on["updates"]["timeline"] == off["updates"]["timeline"] > 0
    assert sum(off["patched"].values()) == 0 and on["patched"]["timeline"] > 0
    assert r["timeline_ratio_all"] > 1 and r["cores"]


def test_driver(tmp_path: Path) -> None:
    r = _smoke("driver", tmp_path)
    assert r["rows"] and all(len(row) == len(r["columns"]) for row in r["rows"])


def test_journal_position(tmp_path: Path) -> None:
    r = _smoke("journal_position", tmp_path)
    assert len(r["schemes"]) == 4 and all(s["events"] > 0 and s["cores"]["bench"] > 0 for s in r["schemes"])


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
def test_browser(tmp_path: Path) -> None:
    r = _smoke("browser", tmp_path)
    assert r["sent"] > 0 and r["dom"] and r["px"]
