"""`oa bench ...`: run a benchmark script under bench/ and print its tables.

Every command names the flags a person needs to reproduce a README table row, and passes
any other flag of its script on unchanged (`oa bench sync --help` lists the common ones,
`python bench/sync.py --help` all of them). Each script prints, under its tables, the
exact `oa bench ...` command that reproduces them, and writes `bench/results/NAME.json`
(`"status": "ok"` with the figures, or `"failed"` with the error).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Benchmarks (tables printed; see bench/).", no_args_is_help=True)

# Flags the command does not name go to the script as they are.
PASS_ON = {"allow_extra_args": True, "ignore_unknown_options": True}
Quick = Annotated[bool, typer.Option(help="A smoke run of a few seconds (what `make test` runs).")]


def _flag(name: str, value: object) -> list[str]:
    """`--name value`, or `--name` for a true switch, nothing for a false one or None."""
    if value is None or value is False:
        return []
    return [f"--{name}"] if value is True else [f"--{name}", str(value)]


def _run(script: str, ctx: typer.Context, **flags: object) -> None:
    args = [a for name, value in flags.items() for a in _flag(name.replace("_", "-"), value)]
    path = Path(__file__).resolve().parents[3] / "bench" / script
    if not path.exists():
        raise SystemExit(f"{path} not found: benchmarks run from a source checkout")
    sys.argv = [str(path), *args, *ctx.args]
    runpy.run_path(str(path), run_name="__main__")


@app.command("append", context_settings=PASS_ON)
def bench_append(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Duration of each phase.")] = 5.0,
    writers: Annotated[int, typer.Option(help="Concurrent writers.")] = 32,
    quick: Quick = False,
    server_workers: Annotated[int, typer.Option(help="Runtime processes sharing the port.")] = 1,
    client_procs: Annotated[int, typer.Option(help="Load-generator processes.")] = 2,
    peer_procs: Annotated[int, typer.Option(help="Processes for the eventsourcing threads.")] = 1,
) -> None:
    """Append throughput and latency through the HTTP API vs pgbench and eventsourcing."""
    _run("append.py", ctx, seconds=seconds, writers=writers, quick=quick, server_workers=server_workers,
         client_procs=client_procs, peer_procs=peer_procs)  # fmt: skip


@app.command("spend", context_settings=PASS_ON)
def bench_spend(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Duration of each phase.")] = 5.0,
    reservers: Annotated[int, typer.Option(help="Concurrent reservers.")] = 32,
    quick: Quick = False,
) -> None:
    """Reservations per second: one hot authorization vs 100 authorizations."""
    _run("spend.py", ctx, seconds=seconds, reservers=reservers, quick=quick)


@app.command("replay", context_settings=PASS_ON)
def bench_replay(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events in the run.")] = 100_000,
    quick: Quick = False,
) -> None:
    """Export and verify a large run's REPLAY.jsonl (events per second)."""
    _run("replay.py", ctx, events=events, quick=quick)


@app.command("auth", context_settings=PASS_ON)
def bench_auth(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Duration of each timed phase.")] = 3.0,
    tokens: Annotated[int, typer.Option(help="Distinct tokens to verify.")] = 20_000,
    concurrency: Annotated[int, typer.Option(help="Concurrent HTTP mint clients.")] = 32,
    quick: Quick = False,
) -> None:
    """Sync tokens minted and verified per second on one core (targets 2,000 and 20,000)."""
    _run("auth.py", ctx, seconds=seconds, tokens=tokens, concurrency=concurrency, quick=quick)


@app.command("browser", context_settings=PASS_ON)
def bench_browser(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 100.0,
    seconds: Annotated[float, typer.Option(help="How long to append.")] = 10.0,
    quick: Annotated[bool, typer.Option(help="A 3 s smoke run.")] = False,
) -> None:
    """Commit -> pixels latency in the dashboard (Chromium), p50 and p99, measured in the page."""
    _run("browser.py", ctx, rate=rate, seconds=seconds, quick=quick)


@app.command("sync", context_settings=PASS_ON)
def bench_sync(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Measured window per latency phase.")] = 8.0,
    idle: Annotated[int, typer.Option(help="Idle subscriptions.")] = 10_000,
    events: Annotated[int, typer.Option(help="Events appended for rebuild/audit.")] = 100_000,
    subscribers: Annotated[str, typer.Option(help="Subscriber counts, comma-separated.")] = "1,100,1000",
    rates: Annotated[str, typer.Option(help="Runtime events/s, comma-separated.")] = "100,1000",
    phases: Annotated[
        str, typer.Option(help="Phases to run: latency,scoped,procs,idle,fold.")
    ] = "latency,scoped,procs,idle,fold",
    watchers: Annotated[int, typer.Option(help="Scoped: sockets, one live query on one run each.")] = 1000,
    streaming: Annotated[int, typer.Option(help="Scoped: runs streaming text.delta.")] = 100,
    stream_rate: Annotated[float, typer.Option(help="Scoped: text.delta events/s per streaming run.")] = 10.0,
    watcher: Annotated[str, typer.Option(help="Scoped watchers: node (ws) or python.")] = "node",
    no_deflate: Annotated[bool, typer.Option(help="Clients do not offer permessage-deflate.")] = False,
    profile: Annotated[bool, typer.Option(help="py-spy the sync server in each phase.")] = False,
    quick: Quick = False,
) -> None:
    """Commit → client latency: topic-wide and scoped (live queries) fan-out, one sync process vs
    two, server CPU per delivered update, memory per idle subscription, a 16-core/10-node
    projection, rebuild/audit speed."""
    _run("sync.py", ctx, seconds=seconds, idle=idle, events=events, subscribers=subscribers, rates=rates,
         phases=phases, watchers=watchers, streaming=streaming, stream_rate=stream_rate, watcher=watcher,
         no_deflate=no_deflate, profile=profile, quick=quick)  # fmt: skip


@app.command("deltas", context_settings=PASS_ON)
def bench_deltas(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events in the measured run.")] = 100,
    quick: Quick = False,
) -> None:
    """JSON Patch vs Merge Patch on real documents; bytes per timeline update with and without deltas."""
    _run("deltas.py", ctx, events=events, quick=quick)


@app.command("nodes", context_settings=PASS_ON)
def bench_nodes(
    ctx: typer.Context,
    nodes: Annotated[
        str, typer.Option(help="Khala node counts, comma-separated (plus a 0-node baseline).")
    ] = "1,4,16",
    rate: Annotated[float, typer.Option(help="Runtime events/s.")] = 100.0,
    seconds: Annotated[float, typer.Option(help="Measured window per node count.")] = 10.0,
    subs_per_node: Annotated[int, typer.Option(help="Subscribers per node.")] = 3,
    buses: Annotated[
        str, typer.Option(help="Fan-out between nodes: postgres, nats, or both.")
    ] = "postgres,nats",
    quick: Quick = False,
) -> None:
    """The primary's load as Khala nodes are added: Postgres LISTEN/journal reads vs the NATS bus."""
    _run("nodes.py", ctx, nodes=nodes, rate=rate, seconds=seconds, subs_per_node=subs_per_node, buses=buses,
         quick=quick)  # fmt: skip


@app.command("driver", context_settings=PASS_ON)
def bench_driver(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Measured window per driver.")] = 5.0,
    writers: Annotated[int, typer.Option(help="Concurrent writers.")] = 32,
    events: Annotated[int, typer.Option(help="Events per transaction.")] = 10,
    quick: Quick = False,
) -> None:
    """asyncpg vs psycopg on the journal's append transaction."""
    _run("driver.py", ctx, seconds=seconds, writers=writers, events=events, quick=quick)


@app.command("journal-position", context_settings=PASS_ON)
def bench_journal_position(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Measured window per scheme.")] = 5.0,
    writers: Annotated[int, typer.Option(help="Concurrent writers.")] = 32,
    quick: Quick = False,
) -> None:
    """Journal position schemes: a locked head row vs a sequence, with a tailing reader."""
    _run("journal_position.py", ctx, seconds=seconds, writers=writers, quick=quick)
