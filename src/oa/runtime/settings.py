"""Runtime settings, read once from the environment by the composition root."""

from __future__ import annotations

import os
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

    @classmethod
    def from_env(cls, caller_secret: bytes) -> RuntimeSettings:
        return cls(
            caller_secret=caller_secret,
            max_body_bytes=int(os.environ.get("OA_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
            stream_replay_window=int(os.environ.get("OA_STREAM_REPLAY_WINDOW", 10_000)),
        )
