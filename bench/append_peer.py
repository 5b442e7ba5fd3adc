"""The peer for `bench/append.py`: the `eventsourcing` library (9.5.x) on the same Postgres.

Used the way its documentation shows: an `Application` with the POSTGRES persistence
module (psycopg 3, its own connection pool, its own tables in its own database), and
aggregates whose pending events `save()` writes in one transaction. The library is
synchronous, so concurrent writers are threads (a process may hold several). Each writer
owns one aggregate and saves 10 new events per transaction, the shape quoted for the
peer (2,900 events/s on this machine kind). Same window protocol and JSON output as
`append_loadgen.py`.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import benchlib  # this folder is sys.path[0] when run as a script
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Run(Aggregate):
    """A run as an aggregate: created once, then many small deltas."""

    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.deltas = 0

    @event("Delta")
    def delta(self, text: str) -> None:
        self.deltas += 1


class Runs(Application[object]):
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--writers", type=int, required=True, help="writer threads in this process")
    p.add_argument("--per-tx", type=int, default=10)
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--setup-only", action="store_true", help="create the tables and exit")
    benchlib.add_result_file_arg(p, required=False)
    args = p.parse_args()

    # POSTGRES_* come from the environment (see bench/append.py); one pooled connection
    # per writer thread so no writer waits for a connection.
    os.environ.setdefault("PERSISTENCE_MODULE", "eventsourcing.postgres")
    os.environ["POSTGRES_POOL_SIZE"] = str(args.writers)
    os.environ["POSTGRES_MAX_OVERFLOW"] = "0"
    app = Runs()
    if args.setup_only:
        return
    start = time.monotonic() + (args.start_at - time.time())
    end = start + args.seconds
    lock = threading.Lock()
    latencies: list[float] = []
    saved = [0]
    errors: list[str] = []

    def writer(i: int) -> None:
        run = Run(f"writer-{os.getpid()}-{i}")
        app.save(run)
        mine: list[float] = []
        count = 0
        try:
            while True:
                t0 = time.monotonic()
                if t0 >= end:
                    break
                for _ in range(args.per_tx):
                    run.delta("a typical streamed token or two")
                app.save(run)
                t1 = time.monotonic()
                if start <= t0 and t1 <= end:
                    count += 1
                    mine.append((t1 - t0) * 1000.0)
        except Exception as exc:  # report, don't hang the benchmark
            errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            latencies.extend(mine)
            saved[0] += count

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(args.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    app.close()
    benchlib.write_json_atomic(
        args.result_file,
        {
            "events": saved[0] * args.per_tx,
            "requests": saved[0],
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "latencies_ms": latencies,
        },
    )


if __name__ == "__main__":
    main()
