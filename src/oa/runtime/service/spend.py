"""Policy decisions and spend: authorizations, reservations, settlement, the sweeps.

Deciding (and reserving) is batched like the journal's group commit: every `decide` call
becomes a command on a queue, one loop takes all waiting commands, locks their
authorization rows once, decides each against the state the previous one left (pure
domain), and commits reservations, budgets and decisions in one transaction. On a hot
authorization the row lock is then held once per *batch*, not once per reservation, which
is what lets one row take thousands of reservations a second without ever overspending.

Each decision is written to `runtime.policy_decisions` in that transaction (an outbox) and
then appended to its run as `policy.decision` (+ `policy.budget_exhausted`) through the
group appender, keyed `policy:<decision_id>`. A crash in between leaves the decision in
the outbox, and the sweep publishes it; the idempotency key makes publishing twice harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from oa.canonical import canonical_json, sha256_hex
from oa.exceptions import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InternalError,
    InvalidTransition,
    NotFound,
    OAError,
)
from oa.runtime.adapters import spend_sql
from oa.runtime.domain.journal import AppendRequest
from oa.runtime.domain.policy import (
    CATALOG_VERSION,
    POLICY_BUNDLE_ID,
    Authorization,
    DecisionInputs,
    after_reserve,
    decision_events,
    evaluate,
)
from oa.runtime.domain.runs import RunStatus
from oa.runtime.domain.spend import ReservationState, reservation_id, settle
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.runs import run_transition
from oa.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class _Decide:
    principal: str
    inputs: DecisionInputs
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Decided:
    cmd: _Decide
    response: dict[str, Any] | None = None
    error: OAError | None = None
    publish: list[tuple[str, dict[str, Any]]] | None = None


class SpendService:
    def __init__(
        self, db: Database, appender: GroupAppender, *, reservation_deadline_s: int, max_batch: int = 500
    ) -> None:
        self._db = db
        self._appender = appender
        self._deadline_s = reservation_deadline_s
        self._max = max_batch
        self._queue: asyncio.Queue[_Decide] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._own: Database | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def start(self) -> None:
        # The batcher has a connection of its own: behind a busy shared pool it would queue
        # with the very requests it is meant to answer, and the hot row would wait with it.
        self._own = await Database.connect(self._db.url, min_size=1, max_size=1)
        self._task = asyncio.create_task(self._run(), name="oa-spend-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
        while not self._queue.empty():
            cmd = self._queue.get_nowait()
            if not cmd.future.done():
                cmd.future.set_exception(InternalError("the runtime is shutting down; retry"))
        if self._own is not None:
            await self._own.close()

    # -- deciding -----------------------------------------------------------------------

    async def decide(self, principal: str, inputs: DecisionInputs) -> dict[str, Any]:
        """Decide (and for an allowed amount, reserve); the same inputs replay the answer."""
        if self._task is None or self._task.done():
            raise InternalError("the spend batcher is not running; retry shortly")
        cmd = _Decide(principal, inputs)
        await self._queue.put(cmd)
        return await cmd.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._commit(batch)
            except Exception as exc:  # rolled back: nothing was written
                log.exception("decision batch failed")
                err = InternalError(
                    "the spend store failed to commit; nothing was reserved, retry (a retry is safe)",
                    {"cause": type(exc).__name__},
                )
                for cmd in batch:
                    if not cmd.future.done():
                        cmd.future.set_exception(err)
                continue
            self.batches += 1
            task = asyncio.create_task(self._publish_and_answer(results))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def _commit(self, batch: list[_Decide]) -> list[_Decided]:
        assert self._own is not None
        async with self._own.pool.acquire() as conn, conn.transaction():
            now, today = await spend_sql.clock(conn)
            runs = await spend_sql.run_heads(conn, [c.inputs.run_id for c in batch])
            auth_ids = [c.inputs.authorization_id for c in batch if c.inputs.authorization_id]
            rows = await spend_sql.lock_authorizations(conn, auth_ids) if auth_ids else {}
            auths = {k: spend_sql.row_to_authorization(r).on(today) for k, r in rows.items()}
            stored = await spend_sql.decisions_by_id(conn, [c.inputs.decision_id() for c in batch])
            rsv_ids = {
                reservation_id(c.inputs.authorization_id, c.inputs.run_id, c.inputs.tool_call_id)
                for c in batch
                if c.inputs.authorization_id and c.inputs.amount_sats > 0
            }
            existing: dict[str, Any] = dict(await spend_sql.reservations_by_id(conn, list(rsv_ids)))

            out: list[_Decided] = []
            new_rsv: list[spend_sql.NewReservation] = []
            new_dec: list[spend_sql.NewDecision] = []
            touched: set[str] = set()
            for cmd in batch:
                try:
                    result = self._decide_one(
                        cmd, now, runs, auths, stored, existing, new_rsv, new_dec, touched
                    )
                except OAError as exc:
                    out.append(_Decided(cmd, error=exc))
                    continue
                out.append(result)
            existing.update(await spend_sql.insert_reservations(conn, new_rsv))
            await spend_sql.save_authorizations(conn, [auths[a] for a in sorted(touched)])
            await spend_sql.insert_decisions(conn, new_dec)
        for r in out:
            if r.response is not None:
                rsv = existing.get(r.response.get("reservation_id") or "")
                r.response["reservation"] = reservation_json(rsv) if rsv is not None else None
        return out

    def _decide_one(
        self,
        cmd: _Decide,
        now: datetime,
        runs: dict[str, asyncpg.Record],
        auths: dict[str, Authorization],
        stored: dict[str, str],
        existing: dict[str, Any],
        new_rsv: list[spend_sql.NewReservation],
        new_dec: list[spend_sql.NewDecision],
        touched: set[str],
    ) -> _Decided:
        inp, who = cmd.inputs, cmd.principal
        run = runs.get(inp.run_id)
        if run is None:
            raise NotFound(
                f"run {inp.run_id!r} does not exist; decisions are recorded on a run, start it first",
                {"run_id": inp.run_id},
            )
        if run["owner"] != who:
            raise Forbidden(f"run {inp.run_id!r} belongs to another principal", {"run_id": inp.run_id})
        if RunStatus(run["status"]).terminal:
            raise InvalidTransition(
                f"run {inp.run_id!r} is {run['status']}; a finished run starts no tool calls",
                {"run_id": inp.run_id, "status": run["status"]},
            )
        auth = None
        if inp.authorization_id is not None:
            auth = auths.get(inp.authorization_id)
            if auth is None:
                raise NotFound(
                    f"authorization {inp.authorization_id!r} does not exist",
                    {"authorization_id": inp.authorization_id},
                )
            if auth.owner != who:
                raise Forbidden(
                    f"authorization {inp.authorization_id!r} belongs to another principal",
                    {"authorization_id": inp.authorization_id},
                )
        decision_id = inp.decision_id()
        if decision_id in stored:
            response = orjson.loads(stored[decision_id])
            return _Decided(cmd, response={**response, "idempotentReplay": True})
        rsv_id = None
        if inp.authorization_id and inp.amount_sats > 0:
            rsv_id = reservation_id(inp.authorization_id, inp.run_id, inp.tool_call_id)
            if rsv_id in existing:
                raise IdempotencyConflict(
                    f"tool call {inp.tool_call_id!r} of run {inp.run_id!r} already has a reservation on "
                    f"{inp.authorization_id!r} with a different amount or tool; one tool call reserves once "
                    "(release it and use a new tool_call_id to change the amount)",
                    {"reservation_id": rsv_id, "tool_call_id": inp.tool_call_id},
                )
        decision = evaluate(inp, auth, run["status"] != RunStatus.CANCELING, now)
        if not decision.allow or rsv_id is None:
            rsv_id = None
        elif auth is not None:
            auths[auth.authorization_id] = after_reserve(auth, inp.amount_sats)
            touched.add(auth.authorization_id)
            new_rsv.append(
                spend_sql.NewReservation(
                    rsv_id,
                    auth.authorization_id,
                    inp.run_id,
                    inp.tool_call_id,
                    inp.tool,
                    who,
                    inp.amount_sats,
                    decision_id,
                    auth.day,
                    self._deadline_s,
                )
            )
            existing[rsv_id] = None  # taken in this batch; its row arrives with the INSERT
        events = decision_events(decision, inp, rsv_id)
        response = {
            "decision_id": decision_id,
            "decision": "allow" if decision.allow else "deny",
            "reason_code": decision.reason_code,
            "reason": decision.reason,
            "message": decision.message,
            "run_id": inp.run_id,
            "tool_call_id": inp.tool_call_id,
            "tool": inp.tool,
            "amount_sats": inp.amount_sats,
            "authorization_id": inp.authorization_id,
            "reservation_id": rsv_id,
            "budget": decision.budget,
            "policy_bundle_id": POLICY_BUNDLE_ID,
            "catalog_version": CATALOG_VERSION,
        }
        stored[decision_id] = orjson.dumps(response).decode()
        new_dec.append(
            spend_sql.NewDecision(
                decision_id,
                inp.run_id,
                who,
                canonical_json([{"event_type": t, "payload": p} for t, p in events]).decode(),
                stored[decision_id],
            )
        )
        return _Decided(cmd, response={**response, "idempotentReplay": False}, publish=events)

    async def _publish_and_answer(self, results: list[_Decided]) -> None:
        to_publish = [r for r in results if r.publish]
        outcomes = await asyncio.gather(
            *(
                self._publish(r.cmd.inputs.run_id, r.cmd.principal, r.response["decision_id"], r.publish)  # type: ignore[index, arg-type]
                for r in to_publish
            ),
            return_exceptions=True,
        )
        done = [r.response["decision_id"] for r, ok in zip(to_publish, outcomes, strict=True) if ok is True]  # type: ignore[index]
        try:
            await spend_sql.mark_published(self._db.pool, done)
        except Exception:  # the sweep will publish (idempotently) and mark them later
            log.exception("marking decisions published failed")
        for r in results:
            if r.cmd.future.done():
                continue
            if r.error is not None:
                r.cmd.future.set_exception(r.error)
            else:
                assert r.response is not None
                r.cmd.future.set_result(r.response)

    async def _publish(
        self, run_id: str, owner: str, decision_id: str, events: list[tuple[str, dict[str, Any]]]
    ) -> bool:
        """Append a decision's run events. True when it is on the run (or can never be)."""
        requests = [
            AppendRequest(t, p, idempotency_key=f"policy:{decision_id}" + ("" if i == 0 else f":{i}"))
            for i, (t, p) in enumerate(events)
        ]
        try:
            await self._appender.append(
                "run",
                run_id,
                owner,
                requests,
                run_transition,
                RunStatus.CREATED.value,
                create_if_missing=False,
            )
            return True
        except InternalError:
            return False  # retried by the sweep
        except OAError as exc:  # the run finished meanwhile: the outbox keeps the decision
            log.warning("decision %s not appended to run %s: %s", decision_id, run_id, exc.message)
            return True

    async def publish_pending(self, older_than_s: float = 5.0, limit: int = 500) -> int:
        """The sweep: append decisions a crash left only in the outbox."""
        rows = await spend_sql.unpublished(self._db.pool, older_than_s, limit)
        done = []
        for r in rows:
            events = [(e["event_type"], e["payload"]) for e in orjson.loads(r["events"])]
            if await self._publish(r["run_id"], r["owner"], r["decision_id"], events):
                done.append(r["decision_id"])
        await spend_sql.mark_published(self._db.pool, done)
        return len(done)

    # -- authorizations -----------------------------------------------------------------

    async def create_authorization(
        self, principal: str, values: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
        row_values = {**values, "owner": principal, "params_hash": sha256_hex(canonical_json(params))}
        created = await spend_sql.insert_authorization(self._db.pool, row_values)
        row = await spend_sql.get_authorization(self._db.pool, values["authorization_id"])
        assert row is not None
        if row["owner"] != principal:
            raise Forbidden(
                f"authorization {values['authorization_id']!r} belongs to another principal",
                {"authorization_id": values["authorization_id"]},
            )
        if not created and row["params_hash"] != row_values["params_hash"]:
            raise IdempotencyConflict(
                f"authorization {values['authorization_id']!r} already exists with different limits; "
                "authorizations are immutable: revoke it and create a new one",
                {"authorization_id": values["authorization_id"]},
            )
        return created, authorization_json(row)

    async def get_authorization(self, principal: str, authorization_id: str) -> dict[str, Any]:
        row = await self._own_authorization(self._db.pool, principal, authorization_id)
        return authorization_json(row)

    async def revoke(self, principal: str, authorization_id: str, reason: str | None) -> dict[str, Any]:
        await self._own_authorization(self._db.pool, principal, authorization_id)
        await spend_sql.revoke(self._db.pool, authorization_id, reason)
        return await self.get_authorization(principal, authorization_id)

    async def _own_authorization(
        self,
        conn: asyncpg.Connection | asyncpg.Pool,
        principal: str,
        authorization_id: str,
        lock: bool = False,
    ) -> asyncpg.Record:
        row = await spend_sql.get_authorization(conn, authorization_id, lock=lock)
        if row is None:
            raise NotFound(
                f"authorization {authorization_id!r} does not exist", {"authorization_id": authorization_id}
            )
        if row["owner"] != principal:
            raise Forbidden(
                f"authorization {authorization_id!r} belongs to another principal; sign as its owner",
                {"authorization_id": authorization_id},
            )
        return row

    # -- settling -----------------------------------------------------------------------

    async def settle(
        self,
        principal: str,
        rsv_id: str,
        action: str,
        amount: int | None = None,
        reason: str | None = None,
        *,
        resolving: bool = False,
    ) -> tuple[bool, dict[str, Any]]:
        """Commit or release (or resolve a reconcile_required one); (replay?, reservation)."""
        first = await spend_sql.get_reservation(self._db.pool, rsv_id)
        if first is None:
            raise NotFound(f"reservation {rsv_id!r} does not exist", {"reservation_id": rsv_id})
        if first["owner"] != principal:
            raise Forbidden(
                f"reservation {rsv_id!r} belongs to another principal", {"reservation_id": rsv_id}
            )
        async with self._db.transaction() as conn:
            auth = await spend_sql.get_authorization(conn, first["authorization_id"], lock=True)
            row = await spend_sql.get_reservation(conn, rsv_id, lock=True)
            assert auth is not None and row is not None
            plan = settle(
                ReservationState(row["state"]),
                row["amount_sats"],
                row["committed_sats"],
                action,
                amount,
                resolving=resolving,
            )
            if plan.replay:
                return True, reservation_json(row)
            row = await spend_sql.settle_reservation(
                conn, rsv_id, plan.state.value, plan.committed_sats, reason
            )
            await spend_sql.apply_budget(
                conn,
                row["authorization_id"],
                plan.spent_delta,
                plan.reserved_delta,
                row["day"],
                plan.day_delta,
            )
            return False, reservation_json(row)

    async def reservation(self, principal: str, rsv_id: str) -> dict[str, Any]:
        row = await spend_sql.get_reservation(self._db.pool, rsv_id)
        if row is None:
            raise NotFound(f"reservation {rsv_id!r} does not exist", {"reservation_id": rsv_id})
        if row["owner"] != principal:
            raise Forbidden(
                f"reservation {rsv_id!r} belongs to another principal", {"reservation_id": rsv_id}
            )
        return reservation_json(row)

    async def list_reservations(
        self, principal: str, state: str | None, authorization_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await spend_sql.list_reservations(self._db.pool, principal, state, authorization_id, limit)
        return [reservation_json(r) for r in rows]

    async def sweep_stuck(self, limit: int = 1000) -> int:
        return len(await spend_sql.sweep_stuck(self._db.pool, limit))


def refusal(decision: dict[str, Any]) -> Conflict:
    """The 409 a reserve answers when policy denies it."""
    return Conflict(
        f"reserve refused ({decision['reason']}): {decision['message']}",
        {
            "decision_id": decision["decision_id"],
            "reason_code": decision["reason_code"],
            "reason": decision["reason"],
            "budget": decision["budget"],
        },
    )


def _iso(ts: Any) -> str | None:
    return None if ts is None else str(ts.isoformat().replace("+00:00", "Z"))


def authorization_json(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "authorization_id": r["authorization_id"],
        "owner": r["owner"],
        "mode": r["mode"],
        "max_total_sats": r["max_total_sats"],
        "max_per_call_sats": r["max_per_call_sats"],
        "max_per_day_sats": r["max_per_day_sats"],
        "threshold_sats": r["threshold_sats"],
        "allowed_tools": list(r["allowed_tools"]) if r["allowed_tools"] is not None else None,
        "spent_sats": r["spent_sats"],
        "reserved_sats": r["reserved_sats"],
        "available_sats": r["max_total_sats"] - r["spent_sats"] - r["reserved_sats"],
        "day": r["day"].isoformat(),
        "day_used_sats": r["day_used_sats"],
        "expires_at": _iso(r["expires_at"]),
        "revoked_at": _iso(r["revoked_at"]),
        "revoke_reason": r["revoke_reason"],
        "created_at": _iso(r["created_at"]),
    }


def reservation_json(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "reservation_id": r["reservation_id"],
        "authorization_id": r["authorization_id"],
        "run_id": r["run_id"],
        "tool_call_id": r["tool_call_id"],
        "tool": r["tool"],
        "amount_sats": r["amount_sats"],
        "committed_sats": r["committed_sats"],
        "state": r["state"],
        "decision_id": r["decision_id"],
        "deadline_at": _iso(r["deadline_at"]),
        "reason": r["reason"],
        "created_at": _iso(r["created_at"]),
        "updated_at": _iso(r["updated_at"]),
    }
