"""The admin HTTP API (FastAPI): sources, read-only queries, rejected messages and a live tail.

Guarded by the admin bearer token. A write key is never an admin token, so it reaches none of these routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pyarrow as pa
from fastapi import Body, Depends, FastAPI, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from opencdp.api.destinations import destinations_router
from opencdp.api.runtime import Runtime
from opencdp.collect.imports import decode_mapping
from opencdp.errors import OpenCDPError, Rejected, Transient
from opencdp.govern.quality import quality
from opencdp.model.plans import parse_plan
from opencdp.model.records import IMPORT_KINDS
from opencdp.model.sources import Source, SourceKind, SourceLimits
from opencdp.model.transforms import parse_transformations
from opencdp.store.journal import line_parts
from opencdp.store.query import run_read_only


class SourceCreate(BaseModel):
    name: str
    kind: SourceKind = "http"
    limits: SourceLimits | None = None


class QueryRequest(BaseModel):
    sql: str


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in table.to_pylist()]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


async def _save_upload(upload: UploadFile, directory: Path, n: int) -> Path:
    """Stream an upload to disk under its own base name (never a path the client chose)."""
    name = Path(upload.filename or f"upload-{n}").name or f"upload-{n}"
    target = directory / f"{n:04d}" / name
    target.parent.mkdir()
    with target.open("wb") as out:
        while chunk := await upload.read(1 << 20):
            out.write(chunk)
    return target


def build_admin_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="OpenCDP admin API",
        version="0.1.0",
        description="Sources and write keys, read-only SQL, rejected messages and a live event tail. "
        "Every route needs `Authorization: Bearer <admin token>`; errors are `{code, message}`.",
    )

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), runtime.admin_token.encode()
        ):
            raise Rejected("an admin token is required", code="unauthorized", status=401)

    @app.exception_handler(OpenCDPError)
    async def _error(_: Request, exc: OpenCDPError) -> JSONResponse:
        if isinstance(exc, Rejected):
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        if isinstance(exc, Transient):
            return JSONResponse(
                {"code": exc.code, "message": exc.message.splitlines()[0]},
                status_code=503,
                headers={"Retry-After": str(exc.retry_after)},
            )
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=500)

    admin = [Depends(require_admin)]
    app.include_router(destinations_router(runtime, admin))

    @app.get("/admin/v1/sources", dependencies=admin)
    def list_sources() -> list[Source]:
        return runtime.registry.list()

    @app.post("/admin/v1/sources", dependencies=admin, status_code=201)
    def create_source(body: SourceCreate) -> Source:
        source = runtime.registry.create(body.name, body.kind, body.limits)
        runtime.ingestor.refresh()
        return source

    @app.get("/admin/v1/sources/{ref}", dependencies=admin)
    def get_source(ref: str) -> Source:
        return runtime.registry.get(ref)

    @app.post("/admin/v1/sources/{ref}/disable", dependencies=admin)
    def disable_source(ref: str) -> Source:
        source = runtime.registry.set_enabled(ref, False)
        runtime.ingestor.refresh()
        return source

    @app.post("/admin/v1/sources/{ref}/enable", dependencies=admin)
    def enable_source(ref: str) -> Source:
        source = runtime.registry.set_enabled(ref, True)
        runtime.ingestor.refresh()
        return source

    @app.post("/admin/v1/sources/{ref}/rotate-key", dependencies=admin)
    def rotate_key(ref: str) -> Source:
        source = runtime.registry.rotate_key(ref)
        runtime.ingestor.refresh()
        return source

    @app.put("/admin/v1/sources/{ref}/limits", dependencies=admin)
    def set_limits(ref: str, limits: SourceLimits) -> Source:
        source = runtime.registry.set_limits(ref, limits)
        runtime.ingestor.refresh()
        return source

    @app.post("/admin/v1/query", dependencies=admin)
    def query(body: QueryRequest) -> dict[str, Any]:
        """Run one read-only statement; returns column names and rows."""
        runtime.load()  # what was acknowledged is what the query sees
        table = run_read_only(runtime.engine, body.sql)
        return {"columns": table.column_names, "rows": table_rows(table)}

    @app.post("/admin/v1/imports", dependencies=admin)
    async def create_import(
        source: Annotated[str, Query(description="Source name or id.")],
        kind: Annotated[str, Query(description=f"One of {', '.join(IMPORT_KINDS)}.")],
        files: list[UploadFile],
        mapping: UploadFile | None = None,
    ) -> dict[str, Any]:
        """Import uploaded CSV, JSON Lines or Parquet files (multipart ``files``, optional ``mapping`` in YAML or
        JSON). Answers with the summary once the raw log holds the rows: ``accepted``, ``rejected``,
        ``duplicates``, the mapping used. Rejected rows are in the ``rejects`` view."""
        directory = runtime.settings.data_dir / "uploads" / uuid.uuid4().hex
        directory.mkdir(parents=True)
        try:
            paths = [await _save_upload(upload, directory, n) for n, upload in enumerate(files)]
            used = decode_mapping(await mapping.read()) if mapping is not None else None
            result = await asyncio.to_thread(runtime.import_files, source, kind, paths, used)
            return result.summary()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    @app.put("/admin/v1/sources/{ref}/plan", dependencies=admin)
    def put_plan(ref: str, body: dict[str, Any]) -> dict[str, Any]:
        """Save the source's tracking plan (a new version); governance applies it to what arrives next, and
        ``POST /admin/v1/quarantine/release`` re-checks what it holds."""
        source = runtime.registry.get(ref)
        version = runtime.governance.plans.put(source.source_id, parse_plan(body))
        return {"source_id": source.source_id, "version": version}

    @app.get("/admin/v1/sources/{ref}/plan", dependencies=admin)
    def get_plan(ref: str) -> dict[str, Any]:
        source = runtime.registry.get(ref)
        found = runtime.governance.plans.get(source.source_id)
        if found is None:
            raise Rejected(f"source {ref!r} has no tracking plan", code="no_plan", status=404)
        plan, version = found
        return {"source_id": source.source_id, "version": version, "plan": plan.model_dump()}

    @app.get("/admin/v1/sources/{ref}/plan/draft", dependencies=admin)
    def draft_plan(ref: str, days: Annotated[float, Query(gt=0)] = 30) -> dict[str, Any]:
        """A plan drafted from the source's observed traffic, to edit and save."""
        runtime.load()
        source = runtime.registry.get(ref)
        return runtime.governance.infer(source.source_id, days=days).model_dump()

    @app.put("/admin/v1/transformations", dependencies=admin)
    def put_transformations(body: dict[str, Any]) -> dict[str, Any]:
        """Save the transformation rules (a new version); they apply to what governance passes next and to
        held messages at the next ``POST /admin/v1/quarantine/release``."""
        return {"version": runtime.governance.transforms.put(parse_transformations(body))}

    @app.get("/admin/v1/transformations", dependencies=admin)
    def get_transformations() -> dict[str, Any]:
        rules, version = runtime.governance.transforms.get()
        return {"version": version, **rules.model_dump(by_alias=True, exclude_none=True)}

    @app.get("/admin/v1/identity/profiles/{ref}/explain", dependencies=admin)
    def explain_profile(ref: str) -> dict[str, object]:
        """Why a profile is one person: its identifiers, each edge with the message that made it, the edges a
        limit refused, the profiles merged into it and its events. ``ref``: a profile id or ``type:value``."""
        return runtime.explain_profile(ref)

    @app.post("/admin/v1/identity/profiles/{ref}/split", dependencies=admin)
    def split_profile(ref: str, body: dict[str, str]) -> dict[str, object]:
        """Separate ``{"by": "type:value" | "record:KEY"}`` from the rest of the profile, for good (a
        cannot-link constraint that later evidence and reprocessing respect until it is removed)."""
        if "by" not in body:
            raise Rejected("the body needs 'by': an identifier (type:value) or record:KEY", code="invalid_split")
        return runtime.split_profile(ref, body["by"])

    @app.delete("/admin/v1/identity/cannot-link", dependencies=admin)
    def unsplit(a: str, b: str) -> dict[str, object]:
        """Remove a split between two identifiers (``type:value`` each): they may be one profile again."""
        return runtime.unsplit(a, b)

    @app.get("/admin/v1/identity/health", dependencies=admin)
    def identity_health() -> dict[str, object]:
        """Profile sizes, the largest profiles, merges, splits, refused edges and giant-profile alerts."""
        return runtime.identity_health()

    @app.post("/admin/v1/identity/model", dependencies=admin)
    def train_matching(body: dict[str, float] | None = None) -> dict[str, object]:
        """Train the match model on the match records (Splink) and score every pair again; ``{"merge": p,
        "review": p}`` sets the thresholds (else the previous ones, else 0.95 and 0.5)."""
        body = body or {}
        unknown = set(body) - {"merge", "review"}
        if unknown:
            raise Rejected(f"unknown settings: {', '.join(sorted(unknown))}", code="bad_thresholds")
        return runtime.train_matching(body.get("merge"), body.get("review"))

    @app.get("/admin/v1/identity/review", dependencies=admin)
    def review_queue(limit: int = 50) -> list[dict[str, object]]:
        """Scored pairs between the thresholds, undecided, most probable first, with both records."""
        return runtime.review_queue(max(1, min(limit, 1000)))

    @app.post("/admin/v1/identity/review/{pair}", dependencies=admin)
    def review(pair: str, body: dict[str, str]) -> dict[str, object]:
        """``{"decision": "accept" | "reject" | "reset"}`` on a scored pair (``ID-ID``); the decision sticks
        through rescoring and retraining."""
        if "decision" not in body:
            raise Rejected("the body needs 'decision': accept, reject or reset", code="bad_decision")
        return runtime.review(pair, body["decision"])

    @app.get("/admin/v1/profiles/{ref}", dependencies=admin)
    def profile(ref: str, lineage: bool = False, limit: int = 20, before: int | None = None) -> dict[str, Any]:
        """A profile's 360 view by profile id, absorbed id or ``type:value``: golden traits (``lineage``: with
        source, message or record, time and rule), custom and computed traits, identities, and a page of its
        timeline (``limit`` rows received before ``before``, a ``seq``; ``timeline_next`` pages on)."""
        return runtime.profile(ref, lineage=lineage, limit=limit, before=before, catch_up=False)

    @app.get("/admin/v1/traits", dependencies=admin)
    def traits() -> list[dict[str, Any]]:
        """Every computed trait: the shipped ones, then the workspace's own, with their result type."""
        return runtime.traits()

    @app.post("/admin/v1/traits", dependencies=admin)
    def put_traits(body: Any = Body(...), replace: bool = False) -> dict[str, Any]:  # noqa: B008
        """Add computed traits (one definition, a list, or ``{"traits": [...]}``; ``replace`` sets the whole
        list). Every definition is checked before anything is saved; then every profile is computed again."""
        return runtime.put_traits(body, replace=replace)

    @app.delete("/admin/v1/traits/{name}", dependencies=admin)
    def delete_trait(name: str) -> dict[str, Any]:
        """Remove one of the workspace's computed traits (refused while another trait uses it)."""
        return runtime.delete_trait(name)

    @app.post("/admin/v1/traits/backfill", dependencies=admin)
    def backfill_traits() -> dict[str, Any]:
        """Compute every profile's golden and computed traits again."""
        return runtime.backfill_traits()

    @app.get("/admin/v1/audiences", dependencies=admin)
    def audiences() -> list[dict[str, Any]]:
        """Every saved audience with its size and when it was last evaluated in full."""
        return runtime.audiences()

    @app.post("/admin/v1/audiences", dependencies=admin)
    def put_audience(body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
        """Save (or replace) an audience: ``{"name", "description", "where": <condition tree>}``. It is checked
        first (nothing is saved when refused), then evaluated over every profile."""
        return runtime.put_audience(body)

    @app.post("/admin/v1/audiences/count", dependencies=admin)
    def count_audience(body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
        """The size of a definition (not saved) and of each branch of its tree, for a builder UI."""
        return runtime.count_audience(body)

    @app.post("/admin/v1/audiences/preview", dependencies=admin)
    def preview_audience(body: Any = Body(...), limit: int = 10) -> list[dict[str, Any]]:  # noqa: B008
        """A sample of a definition's members (not saved), with a few golden traits."""
        return runtime.preview_audience(body, max(1, min(limit, 100)))

    @app.post("/admin/v1/audiences/evaluate", dependencies=admin)
    def evaluate_audiences(body: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """Evaluate audiences (``{"names": [...]}``, else all) over every profile now."""
        return runtime.evaluate_audiences((body or {}).get("names"))

    @app.get("/admin/v1/audiences/{name}", dependencies=admin)
    def audience(name: str) -> dict[str, Any]:
        """One audience: its definition, size and last evaluation."""
        return runtime.audience(name)

    @app.get("/admin/v1/audiences/{name}/members", dependencies=admin)
    def audience_members(name: str, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        """Members by profile id, ``limit`` at a time (``after``: the last profile id of the previous page)."""
        return runtime.audience_members(name, max(1, min(limit, 10_000)), after)

    @app.delete("/admin/v1/audiences/{name}", dependencies=admin)
    def delete_audience(name: str) -> dict[str, Any]:
        """Remove an audience (refused while another audience uses it); its members exit."""
        return runtime.delete_audience(name)

    @app.get("/admin/v1/journeys", dependencies=admin)
    def journeys() -> list[dict[str, Any]]:
        """Every journey with how many profiles are in it, done, exited, and the messages sent."""
        return runtime.journey_list()

    @app.post("/admin/v1/journeys", dependencies=admin)
    def put_journey(body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
        """Save (or replace) a journey: ``{"name", "trigger", "steps", "exit_on", "cap"}``, checked first."""
        return runtime.put_journey(body)

    @app.get("/admin/v1/journeys/{name}", dependencies=admin)
    def journey(name: str) -> dict[str, Any]:
        return runtime.journey(name)

    @app.get("/admin/v1/journeys/{name}/entries", dependencies=admin)
    def journey_states(name: str, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """A journey's entries, newest first (``status``: active, done, exited, merged)."""
        return runtime.journey_states(name, status, max(1, min(limit, 10_000)))

    @app.delete("/admin/v1/journeys/{name}", dependencies=admin)
    def delete_journey(name: str) -> dict[str, Any]:
        """Remove a journey; profiles in it leave it."""
        return runtime.delete_journey(name)

    @app.get("/admin/v1/profiles-settings", dependencies=admin)
    def profile_settings() -> dict[str, Any]:
        """The workspace currency, conversion rates and survivorship rules."""
        return runtime.profile_settings()

    @app.put("/admin/v1/profiles-settings", dependencies=admin)
    def put_profile_settings(body: dict[str, Any]) -> dict[str, Any]:
        """Save the workspace currency, rates and survivorship rules (a new version); every profile is
        computed again."""
        return runtime.put_profile_settings(body)

    @app.put("/admin/v1/pii/policy", dependencies=admin)
    def put_pii_policy(body: dict[str, Any]) -> dict[str, Any]:
        """Save the PII policy (a new version): per class and source keep, mask, hash or drop; ``drop`` applies
        on the ingest path at once, the others to what governance passes next."""
        return runtime.put_pii_policy(body)

    @app.get("/admin/v1/pii/policy", dependencies=admin)
    def get_pii_policy() -> dict[str, Any]:
        return runtime.pii_policy()

    @app.get("/admin/v1/pii/fields", dependencies=admin)
    def pii_fields(source: str | None = None) -> list[dict[str, Any]]:
        """Every field classified as PII, per source: the class, how it was detected, what the policy did."""
        return table_rows(runtime.pii_fields(source))

    @app.get("/admin/v1/violations", dependencies=admin)
    def violations(source: str | None = None) -> list[dict[str, Any]]:
        """Violations counted by source, event, property and rule, with when each was last seen."""
        runtime.load()
        source_id = runtime.registry.get(source).source_id if source else None
        return table_rows(runtime.governance.violation_counts(source_id))

    @app.get("/admin/v1/quarantine", dependencies=admin)
    def quarantine(
        source: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """Messages held by a plan in block mode, oldest first, with the reasons."""
        runtime.load()
        source_id = runtime.registry.get(source).source_id if source else None
        return table_rows(runtime.governance.held(source_id, limit))

    @app.post("/admin/v1/quarantine/release", dependencies=admin)
    def release(source: str | None = None, event: str | None = None) -> dict[str, int]:
        """Re-check held messages against the current plans; those that pass now are released, each once."""
        runtime.load()
        source_id = runtime.registry.get(source).source_id if source else None
        result = runtime.governance.release(source_id, event)
        return {"released": result.released, "still_held": result.still_held}

    @app.get("/admin/v1/quality", dependencies=admin)
    def source_quality(
        source: str | None = None, days: Annotated[float, Query(gt=1, le=366)] = 7
    ) -> list[dict[str, Any]]:
        """Data quality per source over the last ``days``: rates, volume and freshness against the source's own
        baseline, the reliability score (0-100) and the alerts raised (also kept in ``quality_alerts``)."""
        runtime.load()
        source_id = runtime.registry.get(source).source_id if source else None
        return [q.as_dict() for q in quality(runtime.engine, days=days, source_id=source_id)]

    @app.get("/admin/v1/rejected", dependencies=admin)
    def rejected(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100, source: str | None = None
    ) -> list[dict[str, Any]]:
        """Items and requests that failed validation, newest first, with the reason."""
        runtime.load()
        source_id = runtime.registry.get(source).source_id if source else None
        return table_rows(runtime.raw_log.rejected(source_id, limit))

    @app.get("/admin/v1/tail", dependencies=admin)
    async def tail(source: str | None = None) -> StreamingResponse:
        """A live stream (NDJSON) of messages as they are acknowledged, optionally for one source."""
        source_id = runtime.registry.get(source).source_id.encode() if source else None
        queue: asyncio.Queue[list[bytes]] = asyncio.Queue(maxsize=1000)

        def listener(lines: list[bytes]) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(lines)

        async def stream() -> AsyncIterator[bytes]:
            runtime.ingestor.listeners.append(listener)
            try:
                yield b'{"tail":"started"}\n'
                while True:
                    lines = await queue.get()
                    for line in lines:
                        kind, src, doc = line_parts(line)
                        if source_id is None or src == source_id:
                            yield (
                                msgspec.json.encode(
                                    {
                                        "kind": "accepted" if kind == b"A" else "rejected",
                                        "source_id": src.decode(),
                                        "message": msgspec.Raw(doc.rstrip(b"\n")),
                                    }
                                )
                                + b"\n"
                            )
            finally:
                runtime.ingestor.listeners.remove(listener)

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.get("/admin/v1/status", dependencies=admin)
    def status() -> dict[str, Any]:
        committed = runtime.journal.committed
        loaded = runtime.raw_log.position()
        return {
            "engine": runtime.settings.engine,
            "journal": {
                "segment": committed.segment,
                "offset": committed.offset,
                "group_commits": runtime.journal.groups,
            },
            "loaded": {"segment": loaded.segment, "offset": loaded.offset},
            "last_load_error": runtime.last_load_error,
            "held_segments": runtime.journal.held(),
        }

    return app
