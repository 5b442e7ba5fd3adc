"""Following one event stream (a run's or a worker's): resume checks and the live tail.

Both SSE endpoints share this so their cursor rules and wake-up handling cannot drift.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from oa.exceptions import InvalidRequest, StaleCursor
from oa.runtime.adapters import journal_sql as sql
from oa.runtime.adapters.listener import JournalListener, wait_for_wakeup
from oa.runtime.domain.journal import Event, StreamHead
from oa.store.database import Database


def check_cursor(head: StreamHead, cursor: int, replay_window: int, events_path: str) -> None:
    """A resume may start at most `replay_window` events back, and never past the head."""
    floor = max(0, head.last_seq - replay_window)
    if cursor < floor:
        raise StaleCursor(
            f"cursor {cursor} is older than this stream keeps for resume (floor {floor}); "
            f"page GET {events_path} from after_seq={cursor}, "
            "then resume the stream from the last seq you got",
            {"cursor": cursor, "retention_floor": floor, "last_seq": head.last_seq},
        )
    if cursor > head.last_seq:
        raise InvalidRequest(
            f"cursor {cursor} is beyond the {head.kind}'s last seq {head.last_seq}",
            {"cursor": cursor, "last_seq": head.last_seq},
        )


async def follow(
    db: Database,
    listener: JournalListener,
    kind: str,
    stream_id: str,
    cursor: int,
    keepalive_s: float,
    finished: Callable[[StreamHead], bool] | None = None,
) -> AsyncIterator[Event | None]:
    """Events after `cursor`, then live ones; `None` is a keep-alive tick. Ends once
    `finished(head)` holds and everything up to the head has been sent."""
    with listener.watching(f"{kind}:{stream_id}") as woke:
        while True:
            woke.clear()  # before reading: a commit landing after the read still wakes us
            batch = await sql.read_stream(db.pool, kind, stream_id, cursor, 500)
            for ev in batch:
                cursor = ev.seq
                yield ev
            if batch:
                continue
            if finished is not None:
                head = await sql.read_head(db.pool, kind, stream_id)
                if head is not None and finished(head) and cursor >= head.last_seq:
                    return
            if not await wait_for_wakeup(woke, keepalive_s):
                yield None
