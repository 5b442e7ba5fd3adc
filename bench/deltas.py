"""`oa bench deltas`: JSON Patch vs JSON Merge Patch on our real documents, and bytes per
delivered update for a run timeline over a real socket, with and without deltas (issue 11.2).

    oa bench deltas [--events 100] [--quick]

1. Format (no I/O): a run of `--events` events (tool calls, tool results, text deltas, as
   an agent writes them) is folded event by event by the real projections; for each new
   version of three documents (the run timeline, the run summary, the streamed text) the
   update is measured whole, as a JSON Patch (RFC 6902) made by the projector's diff
   (`oa.runtime.projector.deltas.diff`) and by `jsonpatch.make_patch`, and as a JSON Merge
   Patch (RFC 7396, `json_merge_patch.create_patch`): bytes, microseconds to make,
   microseconds to apply and hash-check on a client. Baseline: the whole document. A
   fourth document: the streamed text once its 8,192-character window is full.
2. Socket: the runtime's HTTP app, the projector and the sync server in this process, on
   one Postgres (embedded, or `OA_BENCH_DATABASE_URL`); a raw WebSocket client (no
   permessage-deflate, so bytes are the protocol's own) watches one run (a stream query,
   what `oa khala watch --run` and the run page use) while the run's events go in one at a
   time, each waited for. Bytes per delivered timeline update: the update objects as
   received, and all frame bytes of the run over all updates. The run is done twice: the
   projector journaling whole rows (the baseline, no deltas) and with deltas. Target: a
   50-event timeline at least 10x fewer bytes per update with deltas.

Measured 2026-12-03 (`oa bench deltas --events 100`, shared 2-core machine, load average
8.7 from other work, so the microseconds are noisy; bytes are exact): timeline 5,187 bytes
whole, 241 as a JSON Patch (21.6x), 5,124 as a Merge Patch (1.0x); streamed text with a
full window 9,320 / 254 / 9,269 (36.7x vs 1.0x); run summary 431 / 274 / 120. Making the
timeline patch: 115 us with the projector's diff, 4,062 us with `jsonpatch.make_patch`.
Socket: 7,094 -> 562 bytes per update of a 50-event timeline (12.6x, target met); 3,693 ->
525 (7.0x) while it grows to 50 events; 5,427 -> 544 (10.0x) over all 100 updates.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import json_merge_patch
import jsonpatch
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import benchlib  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from oa.canonical import canonical_json, sha256_hex  # noqa: E402
from oa.khala.deltas import payload_hash  # noqa: E402
from oa.khala.sync.app import create_sync_app  # noqa: E402
from oa.khala.sync.tokens import verify_with  # noqa: E402
from oa.runtime.domain.journal import Event  # noqa: E402
from oa.runtime.projector.deltas import diff  # noqa: E402
from oa.runtime.projector.fold import fold_batch  # noqa: E402
from oa.runtime.projector.projections import BY_NAME  # noqa: E402
from oa.runtime.projector.projector import Projector  # noqa: E402
from oa.runtime.service.container import build_runtime_app  # noqa: E402
from oa.runtime.settings import RuntimeSettings  # noqa: E402
from oa.runtime.signing import HEADER, sign_caller  # noqa: E402
from oa.store import migrate  # noqa: E402
from oa.store.database import with_user  # noqa: E402
from tests.khala.sync_fixtures import mint, verifier  # noqa: E402
from tests.support.servers import serve_in_loop  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)
SECRET = b"bench-caller-secret-0123456789abcdef"
RUNS = "runtime.run_summaries"
TARGET_RATIO = 10.0
DOCS = {"run_timelines": "timeline", "run_summaries": "summary", "run_text": "text"}


def agent_events(n: int) -> list[tuple[str, dict[str, Any]]]:
    """What an agent's run writes: started, then tool calls, their results and tokens."""
    out: list[tuple[str, dict[str, Any]]] = [("run.started", {"model": "bench-model"})]
    for i in range(1, n):
        if i % 3 == 1:
            out.append(
                ("tool.call", {"tool_call_id": f"tc{i}", "tool": "search", "arguments": {"q": f"query {i}"}})
            )
        elif i % 3 == 2:
            out.append(("tool.result", {"tool_call_id": f"tc{i - 1}", "ok": True, "output": {"hits": i, "top": "a title"}}))  # fmt: skip
        else:
            out.append(("text.delta", {"text": f" token {i} of the answer"}))
    return out


def _event(seq: int, event_type: str, payload: dict[str, Any]) -> Event:
    data = orjson.dumps(payload)
    return Event(
        "run", "bench-run", seq, event_type, data, sha256_hex(data), None, "h", "user:bench",
        position=seq, recorded_at=f"2026-12-03T10:{seq // 60 % 60:02d}:{seq % 60:02d}.123456Z",
    )  # fmt: skip


def token_events(n: int) -> list[tuple[str, dict[str, Any]]]:
    """A streamed answer: started, then `n` tokens (enough to fill the text window)."""
    return [("run.started", {"model": "bench-model"})] + [
        ("text.delta", {"text": f" token {i} of the answer"}) for i in range(n)
    ]


def versions(events: list[tuple[str, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Each document's successive versions, one per event that changed it (the real folds)."""
    out: dict[str, list[Any]] = {name: [] for name in DOCS}
    held: dict[str, tuple[Any, int]] = {}
    projections = [BY_NAME[name] for name in DOCS]
    for seq, (t, p) in enumerate(events, 1):
        result = fold_batch(projections, [_event(seq, t, p)], {}, held)
        for ch in result.changes:
            doc = orjson.loads(ch.payload or "null")
            held[ch.doc_key] = (doc, ch.doc_version)
            out[next(name for name in DOCS if ch.doc_key.startswith(BY_NAME[name].doc_prefix))].append(doc)
    return out


def _library_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    return ops


def _apply(base: Any, ops: list[dict[str, Any]]) -> Any:
    return jsonpatch.apply_patch(orjson.loads(orjson.dumps(base)), ops, in_place=True)


def _us(f: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    t0 = time.perf_counter()
    for _ in range(repeat):
        value = f()
    return value, (time.perf_counter() - t0) / repeat * 1e6


def format_rows(n: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    docs_of = {DOCS[k]: v for k, v in versions(agent_events(n)).items()}
    # The text document once its window is full: 600 tokens, the last 100 updates.
    docs_of["text, window full"] = versions(token_events(600))["run_text"][-101:]
    makers: dict[str, Callable[[Any, Any], Any]] = {
        "json_patch": diff,
        "json_patch_library": _library_diff,
        "merge_patch": json_merge_patch.create_patch,
    }
    appliers: dict[str, Callable[[Any, Any], Any]] = {
        "json_patch": _apply,
        "json_patch_library": _apply,
        # merge() changes its first argument in place: applied to a copy, as a client would
        "merge_patch": lambda b, p: json_merge_patch.merge(orjson.loads(orjson.dumps(b)), p),
    }
    for name, docs in docs_of.items():
        whole: list[int] = []
        measured: dict[str, dict[str, list[float]]] = {
            f: {"bytes": [], "make": [], "apply": []} for f in makers
        }
        for before, after in itertools.pairwise(docs):
            whole.append(len(canonical_json(after)))
            for fmt, make_ops in makers.items():
                ops, make = _us(lambda b=before, a=after, f=make_ops: f(b, a), repeat)
                # as the Python client applies: on a copy, then the hash check
                _, apply = _us(lambda b=before, p=ops, f=appliers[fmt]: payload_hash(f(b, p)), repeat)
                m = measured[fmt]
                m["bytes"].append(len(orjson.dumps(ops)))
                m["make"].append(make)
                m["apply"].append(apply)
        for fmt, m in measured.items():
            rows.append(
                {
                    "document": name,
                    "updates": len(whole),
                    "format": fmt,
                    "whole_bytes": statistics.fmean(whole),
                    "bytes": statistics.fmean(m["bytes"]),
                    "ratio": statistics.fmean(whole) / max(1.0, statistics.fmean(m["bytes"])),
                    "make_us": statistics.fmean(m["make"]),
                    "apply_us": statistics.fmean(m["apply"]),
                }
            )
    return rows


async def socket_phase(
    url: str, khala_url: str, runtime_url: str, run: str, n: int, deltas: bool
) -> dict[str, Any]:
    """One run of `n` events watched by a stream query; bytes per delivered update by kind."""
    projector = Projector(with_user(url, "oa_khala_writer"), idle_poll_s=0.2, deltas=deltas)
    projector.start()
    per_kind: dict[str, list[int]] = {k: [] for k in DOCS.values()}
    patched: dict[str, int] = dict.fromkeys(DOCS.values(), 0)
    timeline_at: list[tuple[int, int]] = []  # (events in the timeline, bytes of its update)
    frame_bytes = 0
    got: dict[str, int] = {}
    changed = asyncio.Event()

    async def sign(request: httpx.Request) -> None:
        request.headers[HEADER] = sign_caller(SECRET, "user:bench", 300)

    try:
        async with (
            httpx.AsyncClient(base_url=runtime_url, event_hooks={"request": [sign]}, timeout=60) as http,
            connect(khala_url.replace("http", "ws") + "/sync/v1/ws", compression=None, max_size=2**24) as ws,
        ):
            await ws.send(json.dumps({"type": "auth", "token": mint("bench")}))

            async def read() -> None:
                nonlocal frame_bytes
                async for raw in ws:
                    frame = orjson.loads(raw)
                    if frame.get("type") != "update_batch" or frame.get("sub") != "run":
                        continue
                    frame_bytes += len(raw if isinstance(raw, bytes) else raw.encode())
                    for u in frame["updates"]:
                        kind = next(
                            (v for k, v in DOCS.items() if u["doc_key"].startswith(BY_NAME[k].doc_prefix)),
                            None,
                        )
                        if kind is None:
                            continue
                        size = len(orjson.dumps(u))
                        per_kind[kind].append(size)
                        patched[kind] += u.get("patch") is not None
                        got[kind] = u["doc_version"]
                        if kind == "timeline":
                            timeline_at.append((min(u["doc_version"], 50), size))
                    changed.set()

            reader = asyncio.create_task(read())
            await ws.send(
                json.dumps({"type": "subscribe", "sub": "run", "topic": RUNS, "scope": {"stream": run}})
            )
            for seq, (t, p) in enumerate(agent_events(n), 1):
                r = await http.post(f"/internal/v1/runs/{run}/events", json={"event_type": t, "payload": p})
                r.raise_for_status()
                async with asyncio.timeout(30):
                    while got.get("timeline", 0) < seq:
                        changed.clear()
                        await changed.wait()
            reader.cancel()
    finally:
        await projector.stop()
    growing = [s for events, s in timeline_at if events < 50]
    full = [s for events, s in timeline_at if events >= 50]
    return {
        "deltas": deltas,
        "events": n,
        "bytes_per_update": {k: statistics.fmean(v) if v else 0.0 for k, v in per_kind.items()},
        "patched": patched,
        "updates": {k: len(v) for k, v in per_kind.items()},
        "timeline_growing": statistics.fmean(growing) if growing else 0.0,
        "timeline_full": statistics.fmean(full) if full else 0.0,
        "frame_bytes_per_timeline_update": frame_bytes / max(1, len(per_kind["timeline"])),
    }


async def sockets(url: str, n: int) -> list[dict[str, Any]]:
    """The same run shape twice: the projector without deltas (baseline), then with."""
    runtime = build_runtime_app(url, RuntimeSettings(caller_secret=SECRET, max_body_bytes=1 << 20))
    sync = create_sync_app(with_user(url, "oa_khala_reader"), verify_with(verifier()))
    out = []
    async with serve_in_loop(runtime) as runtime_url, serve_in_loop(sync) as khala_url:
        for deltas in (False, True):
            out.append(
                await socket_phase(
                    url, khala_url, runtime_url, f"bench-{int(deltas)}-{time.time_ns()}", n, deltas
                )
            )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = 60 if args.quick else args.events
    rows = format_rows(n, repeat=3 if args.quick else 20)
    t = Table(
        title=f"delta formats on real documents: {n}-event agent run, mean per update (baseline: whole)"
    )
    for col in (
        "document",
        "format",
        "updates",
        "whole bytes",
        "delta bytes",
        "whole/delta",
        "make µs",
        "apply µs",
    ):
        t.add_column(col, justify="left" if col in ("document", "format") else "right")
    for r in rows:
        t.add_row(
            r["document"], r["format"], str(r["updates"]), f"{r['whole_bytes']:,.0f}", f"{r['bytes']:,.0f}",
            f"{r['ratio']:.1f}x", f"{r['make_us']:.1f}", f"{r['apply_us']:.1f}",
        )  # fmt: skip
    console.print(t)
    with benchlib.postgres() as pg, benchlib.database(pg.admin_url, "oa_bench_deltas") as url:
        migrate(url)
        meter = benchlib.meter_in_process(pg)
        phases = asyncio.run(sockets(url, n))
        meter.stop()
    off, on = phases
    ratio_growing = off["timeline_growing"] / max(1.0, on["timeline_growing"])
    ratio_full = off["timeline_full"] / max(1.0, on["timeline_full"]) if on["timeline_full"] else 0.0
    ratio_all = off["bytes_per_update"]["timeline"] / max(1.0, on["bytes_per_update"]["timeline"])
    t2 = Table(title=f"bytes per delivered update over a real socket, one run of {n} events watched (--run)")
    for col in ("update", "no deltas (baseline)", "deltas", "ratio", "patched", "target 10x", "cores"):
        t2.add_column(col, justify="left" if col == "update" else "right")
    cores = benchlib.in_process_cell(meter.shares(), meter.peaks())
    t2.add_row("timeline, growing to 50 events", f"{off['timeline_growing']:,.0f}", f"{on['timeline_growing']:,.0f}",
               f"{ratio_growing:.1f}x", "", "", cores)  # fmt: skip
    if on["timeline_full"]:
        t2.add_row("timeline, 50 events (window sliding)", f"{off['timeline_full']:,.0f}", f"{on['timeline_full']:,.0f}",
                   f"{ratio_full:.1f}x", "", benchlib.met_cell(ratio_full >= TARGET_RATIO), "")  # fmt: skip
    for kind in DOCS.values():
        a, b = off["bytes_per_update"][kind], on["bytes_per_update"][kind]
        t2.add_row(f"{kind}, all updates", f"{a:,.0f}", f"{b:,.0f}", f"{a / max(1.0, b):.1f}x",
                   f"{on['patched'][kind]}/{on['updates'][kind]}", "", "")  # fmt: skip
    a, b = off["frame_bytes_per_timeline_update"], on["frame_bytes_per_timeline_update"]
    t2.add_row(
        "all frame bytes of the run / timeline update",
        f"{a:,.0f}",
        f"{b:,.0f}",
        f"{a / max(1.0, b):.1f}x",
        "",
        "",
        "",
    )
    console.print(t2)
    console.print(
        "Everything (runtime, projector, sync server, client) shares this process: 'load' is all of it, "
        "'server' is Postgres. Bytes are uncompressed (no permessage-deflate)."
    )
    return {
        "formats": rows,
        "socket": {"no_deltas": off, "deltas": on},
        "timeline_ratio_growing": ratio_growing,
        "timeline_ratio_full": ratio_full,
        "timeline_ratio_all": ratio_all,
        "cores": meter.shares(),
        "peaks": meter.peaks(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100, help="events in the measured run")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = ap.parse_args()
    benchlib.save_results("deltas", lambda: run(args))


if __name__ == "__main__":
    main()
