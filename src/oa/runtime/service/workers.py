"""Codex worker use cases: create or reattach, report, request, stop, read, follow, sweep.

Worker events go through the same group appender as run events (stream kind `worker`),
so each worker has its own gap-free `seq` and hash chain and every event gets a global
journal position the projector tails. The worker row is created before the first append
(with its workspace and adapter), so a worker never exists without its metadata.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from oa.canonical import canonical_json
from oa.exceptions import Forbidden, NotFound, OAError
from oa.runtime.adapters import journal_sql as sql
from oa.runtime.adapters import workers_sql
from oa.runtime.adapters.listener import JournalListener
from oa.runtime.domain.journal import AppendRequest, Event, Plan, StreamHead, org_of_request
from oa.runtime.domain.runs import RunStatus
from oa.runtime.domain.schemas import validate_payload
from oa.runtime.domain.workers import (
    WorkerStatus,
    executor_lost,
    heartbeat_state,
    next_status,
    stop_path,
    target_status,
)
from oa.runtime.service import streams
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.runs import run_transition
from oa.store.database import Database

KIND = "worker"
log = logging.getLogger(__name__)


def worker_transition(status: str, event_type: str, payload: dict[str, Any]) -> tuple[str, bool]:
    s, noop = next_status(WorkerStatus(status), event_type, payload)
    return s.value, noop


def _creation_transition(status: str, event_type: str, payload: dict[str, Any]) -> tuple[str, bool]:
    """The first event of a new worker is always recorded, even `starting -> starting`."""
    if status == WorkerStatus.STARTING and event_type == "worker.started":
        target = target_status(event_type, payload)
        assert target is not None
        return target.value, False
    return worker_transition(status, event_type, payload)


@dataclass(frozen=True)
class Attach:
    created: bool
    plan: Plan
    snapshot: dict[str, Any]


class WorkerService:
    def __init__(
        self,
        db: Database,
        appender: GroupAppender,
        listener: JournalListener,
        *,
        stale_after_ms: int,
        replay_window: int,
    ) -> None:
        self._db = db
        self._appender = appender
        self._listener = listener
        self.stale_after_ms = stale_after_ms
        self._replay_window = replay_window

    # -- writes -------------------------------------------------------------------------

    async def create_or_attach(
        self,
        principal: str,
        worker_id: str | None,
        *,
        status: str,
        workspace_ref: str | None,
        adapter: str | None,
        run_id: str | None,
        metadata: dict[str, Any] | None,
        org_id: str | None = None,
        org: str | None = None,
    ) -> Attach:
        """`org_id` is what the body claims; `org` what the caller's signature vouches for
        (the worker's org; see `oa.runtime.domain.journal.org_of_request`)."""
        worker_id = worker_id or f"wkr_{uuid.uuid4().hex}"
        meta_json = canonical_json(metadata).decode() if metadata is not None else None
        # A refused org is refused before the row is written (the append checks it again).
        probe = AppendRequest("worker.started", {"org_id": org_id} if org_id else {})
        org_of_request(StreamHead(KIND, worker_id, principal, "starting", exists=False), probe, org)
        created = await workers_sql.insert_worker(
            self._db.pool, worker_id, principal, workspace_ref, adapter, run_id, meta_json or "{}"
        )
        if not created:
            head = await self.head(principal, worker_id)  # 403 before touching someone else's worker
            org_of_request(head, probe, org)
            await workers_sql.update_attachment(
                self._db.pool, worker_id, workspace_ref, adapter, run_id, meta_json
            )
        payload: dict[str, Any] = {"status": status}
        fields = (
            ("workspace_ref", workspace_ref),
            ("adapter", adapter),
            ("run_id", run_id),
            ("org_id", org_id),
        )
        for key, value in fields:
            if value:
                payload[key] = value
        if metadata:
            payload["metadata"] = metadata
        if not created:
            payload["reattached"] = True
        plan = await self._appender.append(
            KIND,
            worker_id,
            principal,
            [AppendRequest("worker.started", payload)],
            _creation_transition if created else worker_transition,
            WorkerStatus.STARTING.value,
            create_if_missing=False,
            org=org,
        )
        return Attach(created, plan, await self.snapshot(principal, worker_id))

    async def append(
        self, principal: str, worker_id: str, request: AppendRequest, org: str | None = None
    ) -> Plan:
        if not request.event_type.startswith("worker."):
            target_status(request.event_type, request.payload)  # the 400 that names worker.*
        validate_payload(request.event_type, request.payload)
        target_status(request.event_type, request.payload)  # 400 for a bad status field
        payload = request.payload
        if request.event_type == "worker.error" and payload.get("fatal") is True:
            payload = {**payload, "status": WorkerStatus.FAILED.value}
        if payload is not request.payload:
            request = AppendRequest(
                request.event_type, payload, request.idempotency_key, request.expected_previous_seq
            )
        await self.head(principal, worker_id)
        plan = await self._appender.append(
            KIND,
            worker_id,
            principal,
            [request],
            worker_transition,
            WorkerStatus.STARTING.value,
            create_if_missing=False,
            org=org,
        )
        for ev in plan.new_events:
            if ev.event_type == "worker.heartbeat":
                await workers_sql.touch_heartbeat(self._db.pool, worker_id, ev.recorded_at)
        return plan

    async def request(
        self, principal: str, worker_id: str, request_id: str, method: str, params: dict[str, Any]
    ) -> Plan:
        """Record a request for the worker; the same request_id again is a replay."""
        return await self.append(
            principal,
            worker_id,
            AppendRequest(
                "worker.request.received",
                {"request_id": request_id, "method": method, "params": params},
                idempotency_key=f"request:{request_id}",
            ),
        )

    async def stop(self, principal: str, worker_id: str, reason: str | None) -> Plan:
        head = await self.head(principal, worker_id)
        path = stop_path(WorkerStatus(head.status))
        if not path:
            path = [WorkerStatus.STOPPED]  # a no-op, answered by the state machine
        extra = {"reason": reason} if reason else {}
        requests = [AppendRequest("worker.stopped", {"status": s.value, **extra}) for s in path]
        return await self._appender.append(
            KIND,
            worker_id,
            principal,
            requests,
            worker_transition,
            WorkerStatus.STARTING.value,
            create_if_missing=False,
        )

    # -- reads --------------------------------------------------------------------------

    async def head(self, principal: str, worker_id: str) -> StreamHead:
        head = await sql.read_head(self._db.pool, KIND, worker_id)
        if head is None:
            raise NotFound(
                f"worker {worker_id!r} does not exist; create it with POST /internal/v1/codex/workers",
                {"worker_id": worker_id},
            )
        if head.owner != principal:
            raise Forbidden(
                f"worker {worker_id!r} belongs to another principal; sign the request as its owner",
                {"worker_id": worker_id},
            )
        return head

    def _snapshot(self, row: Any) -> dict[str, Any]:
        status = WorkerStatus(row["status"])
        age = row["heartbeat_age_ms"]
        return {
            "worker_id": row["worker_id"],
            "owner": row["owner"],
            "status": status.value,
            "workspace_ref": row["workspace_ref"],
            "adapter": row["adapter"],
            "run_id": row["run_id"],
            "metadata": orjson.Fragment(row["metadata"].encode()),
            "last_seq": row["last_seq"],
            "last_hash": row["last_hash"],
            "last_heartbeat_at": _iso(row["last_heartbeat_at"]) if row["last_heartbeat_at"] else None,
            "heartbeat_state": heartbeat_state(status, age, self.stale_after_ms),
            "heartbeat_age_ms": max(0, age) if age is not None else None,
            "heartbeat_stale_after_ms": self.stale_after_ms,
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
        }

    async def snapshot(self, principal: str, worker_id: str) -> dict[str, Any]:
        await self.head(principal, worker_id)
        row = await workers_sql.get_worker(self._db.pool, worker_id)
        assert row is not None
        return self._snapshot(row)

    async def list_workers(
        self, principal: str, status: str | None, workspace_ref: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await workers_sql.list_workers(self._db.pool, principal, status, workspace_ref, limit)
        return [self._snapshot(r) for r in rows]

    async def events(
        self, principal: str, worker_id: str, after_seq: int, limit: int
    ) -> tuple[StreamHead, list[Event]]:
        head = await self.head(principal, worker_id)
        return head, await sql.read_stream(self._db.pool, KIND, worker_id, after_seq, limit)

    def check_cursor(self, head: StreamHead, cursor: int) -> None:
        streams.check_cursor(
            head, cursor, self._replay_window, f"/internal/v1/codex/workers/{head.stream_id}/events"
        )

    def follow(self, worker_id: str, cursor: int, keepalive_s: float) -> AsyncIterator[Event | None]:
        """Events after `cursor`, then live ones (`None`: a keep-alive tick). A worker can be
        reattached, so the stream stays open until the client leaves."""
        return streams.follow(self._db, self._listener, KIND, worker_id, cursor, keepalive_s)

    # -- the sweeper --------------------------------------------------------------------

    async def sweep_lost_executors(self, lost_after_ms: int, limit: int = 500) -> int:
        """Fail live workers silent for longer than `lost_after_ms`, telling their runs.

        Safe to run on every node at once and to crash half-way: the run event carries an
        idempotency key derived from the worker's seq, and failing a failed worker is a
        no-op.
        """
        failed = 0
        for row in await workers_sql.silent_live_workers(self._db.pool, lost_after_ms, limit):
            status = WorkerStatus(row["status"])
            silent = row["silent_ms"]
            if not executor_lost(status, silent, lost_after_ms):
                continue
            worker_id = row["worker_id"]
            reason = (
                f"executor lost: no heartbeat for {silent} ms (limit {lost_after_ms} ms); "
                "failed by the runtime's sweeper"
            )
            try:
                if row["run_id"]:
                    await self._tell_run(row["run_id"], worker_id, row["last_seq"], reason, silent)
                await self._appender.append(
                    KIND,
                    worker_id,
                    row["owner"],
                    [
                        AppendRequest(
                            "worker.error",
                            {
                                "code": "executor_lost",
                                "message": reason,
                                "fatal": True,
                                "status": WorkerStatus.FAILED.value,
                                "last_heartbeat_age_ms": silent,
                            },
                            idempotency_key=f"executor_lost:{row['last_seq']}",
                        )
                    ],
                    worker_transition,
                    WorkerStatus.STARTING.value,
                    create_if_missing=False,
                )
                failed += 1
            except OAError as exc:  # it moved meanwhile (stopped, reattached): leave it
                log.info("worker %s not failed by the sweeper: %s", worker_id, exc.message)
        return failed

    async def _tell_run(self, run_id: str, worker_id: str, worker_seq: int, reason: str, silent: int) -> None:
        head = await sql.read_head(self._db.pool, "run", run_id)
        if head is None or RunStatus(head.status).terminal:
            return
        try:
            await self._appender.append(
                "run",
                run_id,
                head.owner,
                [
                    AppendRequest(
                        "run.executor_lost",
                        {"worker_id": worker_id, "reason": reason, "last_heartbeat_age_ms": silent},
                        idempotency_key=f"executor_lost:{worker_id}:{worker_seq}",
                    )
                ],
                run_transition,
                RunStatus.CREATED.value,
                create_if_missing=False,
            )
        except OAError as exc:  # the run finished meanwhile
            log.info("run %s not told about worker %s: %s", run_id, worker_id, exc.message)


def _iso(ts: Any) -> str:
    return str(ts.isoformat().replace("+00:00", "Z"))
