"""Runtime settings, read once from the environment at an entry point (`from_env`) and
passed to the composition root (`oa.bootstrap`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RuntimeSettings:
    caller_secret: bytes
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # How far back (in events) an SSE resume may start; older cursors get 410 stale_cursor
    # and should page `GET .../events` instead.
    stream_replay_window: int = 10_000
    stream_keepalive_s: float = 15.0
    max_batch_events: int = 1000
    # Codex workers: a heartbeat older than this reads as `stale` (computed, never stored);
    # a live worker silent for longer than `worker_lost_after_ms` is failed by the sweeper
    # and its run gets `run.executor_lost`.
    worker_stale_after_ms: int = 120_000
    worker_lost_after_ms: int = 300_000
    # Spend: a reservation neither committed nor released by its deadline is swept to
    # `reconcile_required` (`oa spend reconcile` resolves it).
    reservation_deadline_s: int = 900
    # How often the background sweepers (lost executors, stuck reservations, unpublished
    # policy decisions) run. 0 disables them (tests drive the sweeps directly).
    sweep_interval_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], caller_secret: bytes) -> RuntimeSettings:
        return cls(
            caller_secret=caller_secret,
            max_body_bytes=int(env.get("OA_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
            stream_replay_window=int(env.get("OA_STREAM_REPLAY_WINDOW", 10_000)),
            worker_stale_after_ms=int(env.get("OA_WORKER_STALE_AFTER_MS", 120_000)),
            worker_lost_after_ms=int(env.get("OA_WORKER_LOST_AFTER_MS", 300_000)),
            reservation_deadline_s=int(env.get("OA_RESERVATION_DEADLINE_S", 900)),
            sweep_interval_s=float(env.get("OA_SWEEP_INTERVAL_S", 15.0)),
        )
