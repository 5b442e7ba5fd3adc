"""The `/admin/v1` router: bearer = the deployment's admin key, compared in constant time.

Write requests (rebuild, prune) on a `prod` deployment also need the id of a live grant with
write scope: the server checks it itself, so a caller that skips the MCP gateway's checks
still cannot touch production without change control.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

import oa
from oa.exceptions import Forbidden, InvalidRequest, NotFound
from oa.http import json_response
from oa.http.strict import NoNul, StrictJSONRoute
from oa.khala.admin import schemas, store
from oa.khala.admin.key import admin_key_required
from oa.khala.topics import TOPICS

DEPLOYMENT_CLASSES = ("dev", "prod")
WRITE_KINDS = ("rebuild", "prune")
MAX_RETENTION_S = 10 * 365 * 86400

# Postgres cannot store NUL in text, nor integers past bigint: refused here with a 400 that
# names the field, not in the database as a 500.
Id = Annotated[int, Field(ge=1, le=2**62)]
Short = Annotated[str, Field(min_length=1, max_length=200), NoNul]
Long = Annotated[str, Field(min_length=1, max_length=2000), NoNul]


class GrantIn(BaseModel):
    ticket: Short
    reason: Long
    requester: Short
    scope: Literal["read", "write"] = "read"
    ttl_minutes: int = Field(ge=1, le=60)


class AuditIn(BaseModel):
    grant_id: Id | None = None
    ticket: Annotated[str, Field(max_length=200), NoNul] | None = None
    tool: Annotated[Short, Field(max_length=100)]
    args_digest: Annotated[Short, Field(max_length=128)]
    outcome: Long


class RequestIn(BaseModel):
    kind: Literal["rebuild", "prune", "audit"]
    topic: str | None = Field(default=None, max_length=100)
    retention_s: int | None = Field(default=None, ge=0, le=MAX_RETENTION_S)
    grant_id: Id | None = None


@contextmanager
def _grant_must_exist(grant_id: int | None) -> Iterator[None]:
    """The database's foreign key decides (no check-then-insert race); a miss is the
    caller's mistake, so a 400 that names the grant, not a 500."""
    try:
        yield
    except asyncpg.ForeignKeyViolationError:
        raise InvalidRequest(f"there is no grant {grant_id}; see GET /admin/v1/grants") from None


def _pool(request: Request) -> asyncpg.Pool:
    # The primary, even when the node reads a replica: an operator reads what they just wrote.
    p: asyncpg.Pool = request.app.state.hub.primary_pool
    return p


def _gate_pool(request: Request) -> asyncpg.Pool:
    """The `oa_khala_gate` pool: reads `khala_admin`, writes it only through its functions."""
    p: asyncpg.Pool = request.app.state.gate_pool
    return p


Db = Annotated[asyncpg.Pool, Depends(_pool)]
Gate = Annotated[asyncpg.Pool, Depends(_gate_pool)]


def admin_router(admin_key: str | None, deployment_class: str) -> APIRouter:
    if deployment_class not in DEPLOYMENT_CLASSES:
        raise ValueError(
            f"KHALA_DEPLOYMENT_CLASS must be one of {DEPLOYMENT_CLASSES}, not {deployment_class!r}"
        )
    router = APIRouter(
        prefix="/admin/v1",
        tags=["admin"],
        dependencies=[Depends(admin_key_required(admin_key))],
        route_class=StrictJSONRoute,
    )

    @router.get("/deployment", summary="Class (dev/prod, from this server's configuration), versions, lag")
    async def deployment(db: Db) -> Response:
        lag = await store.projector_lag(db)
        return json_response(
            {
                "class": deployment_class,
                "versions": {
                    "oa": oa.__version__,
                    "sync_protocol": "v1",
                    "postgres": await db.fetchval("SHOW server_version"),
                },
                "topics": await store.topic_heads(db),
                "journal_head": lag.pop("_journal")["head"],
                "projector": lag,
            }
        )

    @router.get("/topics", summary="Topics with retention, replay budget, heads and proto schemas")
    async def topics(db: Db) -> Response:
        heads = await store.topic_heads(db)
        return json_response({"topics": [t | heads[t["name"]] for t in schemas.catalog()]})

    @router.get("/documents", summary="Live documents of a topic by key prefix (cursor paging)")
    async def documents(
        db: Db,
        topic: Annotated[str, Query(max_length=100)],
        prefix: Annotated[str, Query(max_length=300)] = "",
        cursor: Annotated[str, Query(max_length=400)] = "",
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Response:
        if topic not in TOPICS:
            raise NotFound(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
        docs = await store.documents(db, topic, prefix, cursor, limit)
        nxt = docs[-1]["doc_key"] if len(docs) == limit else None
        return json_response({"topic": topic, "documents": docs, "next_cursor": nxt})

    @router.get("/documents/{doc_key:path}", summary="One live document with its journal history")
    async def document(
        db: Db,
        doc_key: Annotated[str, Path(max_length=300)],
        history: Annotated[int, Query(ge=0, le=500)] = 50,
    ) -> Response:
        doc, journal = await store.document(db, doc_key, history)
        if doc is None and not journal:
            raise NotFound(f"no document {doc_key!r} (live or in the journal)")
        return json_response({"document": doc, "history": journal})

    @router.get("/errors", summary="Recent projector errors and stopped projections")
    async def errors(db: Db, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
        lag = await store.projector_lag(db)
        lag.pop("_journal")
        stopped = {name: row["error"] for name, row in lag.items() if row["error"]}
        return json_response({"errors": await store.errors(db, limit), "stopped_projections": stopped})

    @router.post("/grants", status_code=201, summary="Record a production-access grant (from the gate)")
    async def create_grant(db: Gate, body: GrantIn) -> Response:
        gid = await store.insert_grant(
            db, body.ticket, body.reason, body.requester, body.scope, body.ttl_minutes
        )
        row = await store.grant(db, gid)
        assert row is not None
        return json_response({"grant": store.grant_json(row, await store.now(db))}, 201)

    @router.get("/grants", summary="Grants, newest first (live only with ?live=true)")
    async def list_grants(
        db: Gate, live: bool = False, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> Response:
        now = await store.now(db)
        return json_response(
            {"grants": [store.grant_json(r, now) for r in await store.grants(db, live, limit)]}
        )

    @router.delete("/grants", summary="Revoke every live grant")
    async def revoke_all(db: Gate) -> Response:
        return json_response({"revoked": await store.revoke(db, None)})

    @router.delete("/grants/{grant_id}", summary="Revoke one grant")
    async def revoke_one(db: Gate, grant_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
        return json_response({"revoked": await store.revoke(db, grant_id)})

    @router.post("/mcp-audit", status_code=201, summary="Append to the MCP audit trail")
    async def audit_append(db: Gate, body: AuditIn) -> Response:
        with _grant_must_exist(body.grant_id):
            aid = await store.insert_audit(
                db, body.grant_id, body.ticket, body.tool, body.args_digest, body.outcome
            )
        return json_response({"id": aid}, 201)

    @router.get("/mcp-audit", summary="The MCP audit trail, newest first (cursor = an id)")
    async def audit_list(
        db: Gate,
        cursor: Annotated[int, Query(ge=1, le=2**62)] = 2**62,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Response:
        entries = await store.audit_trail(db, cursor, limit)
        nxt = entries[-1]["id"] if len(entries) == limit else None
        return json_response({"entries": entries, "next_cursor": nxt})

    @router.post("/requests", status_code=202, summary="Ask the projector to rebuild, prune or audit")
    async def create_request(db: Gate, body: RequestIn) -> Response:
        args: dict[str, Any] = {}
        if body.kind == "prune":
            if body.topic not in TOPICS:
                raise InvalidRequest(f"prune needs a topic, one of: {', '.join(TOPICS)}")
            args = {"topic": body.topic, "retention_s": body.retention_s}
        if body.kind in WRITE_KINDS and deployment_class == "prod":
            row = await store.grant(db, body.grant_id) if body.grant_id is not None else None
            g = store.grant_json(row, await store.now(db)) if row is not None else None
            if g is None or not g["live"] or g["scope"] != "write":
                raise Forbidden(
                    f"{body.kind} on a production deployment needs a live grant with write scope"
                    " (oa mcp gate --scope write)",
                )
        with _grant_must_exist(body.grant_id):
            rid = await store.insert_request(db, body.kind, args, body.grant_id)
        return json_response(await store.request(db, rid), 202)

    @router.get("/requests/{request_id}", summary="A request's status and result")
    async def get_request(db: Gate, request_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
        found = await store.request(db, request_id)
        if found is None:
            raise NotFound(f"no request {request_id}")
        return json_response(found)

    return router
