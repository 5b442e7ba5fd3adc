"""Run use cases: append, cancel, frames, snapshot, reading and following the log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from oa.exceptions import (
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
)
from oa.runtime.adapters import frames_sql
from oa.runtime.adapters import journal_sql as sql
from oa.runtime.adapters.listener import JournalListener
from oa.runtime.domain.journal import AppendRequest, Event, Plan, StreamHead, encode_payload
from oa.runtime.domain.runs import RunStatus, next_status
from oa.runtime.domain.schemas import validate_payload
from oa.runtime.service import streams
from oa.runtime.service.appender import GroupAppender
from oa.store.database import Database

KIND = "run"


def run_transition(status: str, event_type: str, payload: dict[str, Any]) -> tuple[str, bool]:
    t = next_status(RunStatus(status), event_type, payload)
    return t.status.value, t.noop


@dataclass(frozen=True)
class FrameResult:
    replay: bool
    frame: dict[str, Any]


class RunService:
    def __init__(
        self, db: Database, appender: GroupAppender, listener: JournalListener, replay_window: int
    ) -> None:
        self._db = db
        self._appender = appender
        self._listener = listener
        self._replay_window = replay_window

    async def append(
        self, principal: str, run_id: str, requests: Sequence[AppendRequest], org: str | None = None
    ) -> Plan:
        """Append for `principal`; `org` is the one its signature vouches for (it decides the
        run's org; see `oa.runtime.domain.journal.org_of_request`)."""
        for i, req in enumerate(requests):
            try:
                validate_payload(req.event_type, req.payload)
            except InvalidRequest as exc:
                if len(requests) > 1:
                    exc.details["index"] = i
                    exc.message = f"event {i}: {exc.message} (the batch wrote nothing)"
                raise
        return await self._appender.append(
            KIND, run_id, principal, requests, run_transition, RunStatus.CREATED.value, org=org
        )

    async def cancel(self, principal: str, run_id: str, reason: str | None) -> Plan:
        await self.head(principal, run_id)  # 404 / 403 before anything is queued
        req = AppendRequest("run.cancel_requested", {"reason": reason} if reason else {})
        return await self._appender.append(
            KIND, run_id, principal, [req], run_transition, RunStatus.CREATED.value, create_if_missing=False
        )

    async def head(self, principal: str, run_id: str) -> StreamHead:
        head = await sql.read_head(self._db.pool, KIND, run_id)
        if head is None:
            raise NotFound(f"run {run_id!r} does not exist", {"run_id": run_id})
        if head.owner != principal:
            raise Forbidden(
                f"run {run_id!r} belongs to another principal; sign the request as its owner",
                {"run_id": run_id},
            )
        return head

    async def snapshot(self, principal: str, run_id: str) -> dict[str, Any]:
        await self.head(principal, run_id)
        row = await self._db.fetchrow(
            "SELECT r.*, (SELECT count(*) FROM runtime.run_frames f WHERE f.run_id = r.run_id)"
            " AS frames FROM runtime.runs r WHERE run_id = $1",
            run_id,
        )
        assert row is not None
        return {
            "run_id": row["run_id"],
            "owner": row["owner"],
            "status": row["status"],
            "last_seq": row["last_seq"],
            "last_hash": row["last_hash"],
            "frame_count": row["frames"],
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
        }

    async def events(
        self, principal: str, run_id: str, after_seq: int, limit: int
    ) -> tuple[StreamHead, list[Event]]:
        head = await self.head(principal, run_id)
        return head, await sql.read_stream(self._db.pool, KIND, run_id, after_seq, limit)

    async def post_frame(
        self,
        principal: str,
        run_id: str,
        thread_id: str,
        frame_id: str,
        frame_type: str,
        payload: dict[str, Any],
    ) -> FrameResult:
        payload_json, p_hash = encode_payload(payload)
        async with self._db.transaction() as conn:
            head = await frames_sql.ensure_run(conn, run_id, principal)
            if head.owner != principal:
                raise Forbidden(
                    f"run {run_id!r} belongs to another principal; sign the request as its owner",
                    {"run_id": run_id},
                )
            existing = await frames_sql.get_frame(conn, run_id, frame_id)
            if existing is not None:
                same = (
                    existing["payload_hash"] == p_hash
                    and existing["thread_id"] == thread_id
                    and existing["frame_type"] == frame_type
                )
                if not same:
                    raise IdempotencyConflict(
                        f"frame_id {frame_id!r} was already used with a different frame; "
                        "use a new frame_id for a new frame",
                        {"frame_id": frame_id},
                    )
                return FrameResult(True, frames_sql.frame_json(existing))
            if RunStatus(head.status).terminal:
                raise InvalidTransition(
                    f"run {run_id!r} is {head.status} and takes no more frames",
                    {"status": head.status},
                )
            row = await frames_sql.insert_frame(
                conn, run_id, frame_id, thread_id, frame_type, payload_json.decode(), p_hash, principal
            )
            return FrameResult(False, frames_sql.frame_json(row))

    def check_cursor(self, head: StreamHead, cursor: int) -> None:
        streams.check_cursor(head, cursor, self._replay_window, f"/internal/v1/runs/{head.stream_id}/events")

    def follow(self, run_id: str, cursor: int, keepalive_s: float) -> AsyncIterator[Event | None]:
        """Events after `cursor`, then live ones (`None`: a keep-alive tick). Ends when the
        run is finished and everything has been sent."""
        return streams.follow(
            self._db,
            self._listener,
            KIND,
            run_id,
            cursor,
            keepalive_s,
            finished=lambda head: RunStatus(head.status).terminal,
        )


def _iso(ts: Any) -> str:
    return str(ts.isoformat().replace("+00:00", "Z"))
