"""`oa replay export RUN` and `oa replay verify FILE`.

Export writes the run's receipt and its REPLAY.jsonl; verify needs no runtime and no
database: it recomputes the line chain, payload hashes, event hash chain and trajectory
hash from the file alone, and exits 1 naming the first bad line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from oa.cli.runtime_client import client, fail
from oa.runtime.domain.replay import Verdict, verify_lines

app = typer.Typer(help="Export and verify replay artifacts (receipt + REPLAY.jsonl).", no_args_is_help=True)
console = Console()
User = Annotated[
    str | None,
    typer.Option("--user", help="Act as user:ID or a full principal (default: `oa login`'s account)."),
]


@app.command()
def export(
    run_id: str,
    out: Annotated[Path, typer.Option(help="Folder to write receipt.json and REPLAY.jsonl into.")] = Path(
        "."
    ),
    user: User = None,
) -> None:
    """Write RUN's receipt.json and REPLAY.jsonl (streamed; large runs never sit in memory)."""
    out.mkdir(parents=True, exist_ok=True)
    with client(user, timeout=600) as c:
        r = c.get(f"/internal/v1/runs/{run_id}/receipt")
        if r.status_code >= 400:
            fail(r)
        receipt = r.json()
        (out / "receipt.json").write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
        target = out / "REPLAY.jsonl"
        with (
            c.stream("GET", f"/internal/v1/runs/{run_id}/replay") as resp,
            Progress(
                TextColumn("export"), BarColumn(), TextColumn("{task.completed}/{task.total} events"),
                TimeRemainingColumn(), console=console, transient=True,
            ) as bar,
        ):  # fmt: skip
            if resp.status_code >= 400:
                resp.read()
                fail(resp)
            task = bar.add_task("export", total=receipt["event_count"])
            with target.open("wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
                    bar.update(task, advance=chunk.count(b'"type":"event"'))
    console.print(
        f"wrote [bold]{out / 'receipt.json'}[/] and [bold]{target}[/]: {receipt['event_count']} events, "
        f"trajectory {receipt['trajectory_hash'][:16]}..."
    )


def _lines(f: BinaryIO, progress: Progress | None, task: TaskID | None) -> Iterator[bytes]:
    done = 0
    for line in f:
        done += len(line)
        if progress is not None and task is not None and done > 4 << 20:
            progress.update(task, advance=done)
            done = 0
        yield line
    if progress is not None and task is not None:
        progress.update(task, advance=done)


def verify_file(path: Path, show_progress: bool = True) -> Verdict:
    size = path.stat().st_size
    with path.open("rb") as f:
        if not show_progress:
            return verify_lines(f)
        with Progress(
            TextColumn("verify"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=console,
            transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("verify", total=size)
            return verify_lines(_lines(f, bar, task))


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A REPLAY.jsonl")],
    receipt: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Also compare with this receipt.json")
    ] = None,
) -> None:
    """Recompute the chain and the hashes of FILE; exit 1 naming the first bad line."""
    v = verify_file(file)
    if not v.ok:
        console.print(f"[red]TAMPERED[/] {file}: line {v.bad_line}: {v.reason}")
        raise typer.Exit(1)
    if receipt is not None:
        want = json.loads(receipt.read_text())
        for key, got in (
            ("trajectory_hash", v.trajectory_hash),
            ("event_count", v.events),
            ("run_id", v.run_id),
        ):
            if want.get(key) != got:
                console.print(f"[red]MISMATCH[/] receipt {key} is {want.get(key)!r}, the file gives {got!r}")
                raise typer.Exit(1)
    console.print(
        f"[green]OK[/] {file}: run {v.run_id}, {v.events} events, {v.lines} lines, "
        f"trajectory {v.trajectory_hash}"
    )
