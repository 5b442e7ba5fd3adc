"""The embedded Postgres: a real PostgreSQL (pgserver) with its data under a local folder.

pgserver starts the postmaster as its own process, so a kill -9 of ours leaves it running
and the next start attaches to it; `cleanup_mode="stop"` stops it when the last process
that asked for it exits cleanly.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def start_embedded(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or attach to) the embedded server and return its socket URI."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR
        # (containers, ssh) that warns on every start and falls back to /tmp/runtime-$UID,
        # which works: nothing a user can or should act on.
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode=None if keep_running else "stop"
        )
    uri: str = server.get_uri()
    # Keep a reference so the server object (and its cleanup hook) lives as long as we do.
    _SERVERS.append(server)
    return uri


_SERVERS: list[object] = []
