"""Where CLI commands run: directly on the engine, or through a running server.

Embedded DuckDB allows one writing process. When ``opencdp serve`` holds the file, the CLI talks to that
server's admin API (its address is in ``data_dir/server.json``, its token in ``data_dir/admin_token``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from opencdp.api.runtime import Runtime, ensure_admin_token
from opencdp.api.server import server_file
from opencdp.collect.imports import Progress, decode_mapping
from opencdp.config import Settings
from opencdp.errors import Rejected, Transient
from opencdp.govern.quality import quality
from opencdp.model.plans import parse_plan
from opencdp.model.sources import Source, SourceKind, SourceLimits
from opencdp.model.transforms import parse_transformations
from opencdp.store import Engine, open_engine
from opencdp.store.journal import Journal
from opencdp.store.query import run_read_only
from opencdp.store.raw_log import RawLog
from opencdp.store.sources import SourceRegistry


def running_server(settings: Settings) -> str | None:
    """Base URL of a live server on this data directory, if any."""
    path = server_file(settings)
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    host = info["host"] if info["host"] not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    return f"http://{host}:{info['port']}"


class Remote:
    """The admin API of a running server."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Transient(f"cannot reach the server: {exc}") from exc
        if response.status_code >= 400:
            try:
                err = response.json()
            except ValueError:
                err = {"code": "error", "message": response.text}
            if response.status_code >= 500:
                raise Transient(err.get("message", ""), code=err.get("code"))
            raise Rejected(err.get("message", ""), code=err.get("code"), status=response.status_code)
        return response.json()


class Backend:
    """Source admin and queries, wherever they must run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Whatever the engine, a running server owns the journal: go through it.
        url = running_server(settings)
        self.remote = Remote(url, ensure_admin_token(settings)) if url else None

    @contextmanager
    def _registry(self, *, read_only: bool = False) -> Iterator[SourceRegistry]:
        engine = open_engine(self.settings, read_only=read_only)
        try:
            yield SourceRegistry(engine)
        finally:
            engine.close()

    def create_source(self, name: str, kind: SourceKind, limits: SourceLimits | None) -> Source:
        if self.remote:
            body = {"name": name, "kind": kind, "limits": limits.model_dump() if limits else None}
            return Source.model_validate(self.remote.call("POST", "/admin/v1/sources", json=body))
        with self._registry() as registry:
            return registry.create(name, kind, limits)

    def list_sources(self) -> list[Source]:
        if self.remote:
            return [Source.model_validate(s) for s in self.remote.call("GET", "/admin/v1/sources")]
        with self._registry() as registry:
            return registry.list()

    def source_action(self, ref: str, action: str) -> Source:
        """``disable``, ``enable`` or ``rotate-key``."""
        if self.remote:
            return Source.model_validate(self.remote.call("POST", f"/admin/v1/sources/{ref}/{action}"))
        with self._registry() as registry:
            if action == "rotate-key":
                return registry.rotate_key(ref)
            return registry.set_enabled(ref, action == "enable")

    def rejected(self, source: str | None, limit: int) -> pa.Table:
        """The newest refused items and requests, optionally of one source."""
        if self.remote:
            params: dict[str, str | int] = {"limit": limit, **({"source": source} if source else {})}
            return pa.Table.from_pylist(self.remote.call("GET", "/admin/v1/rejected", params=params))
        engine = open_engine(self.settings)
        try:
            self._catch_up(engine)
            source_id = SourceRegistry(engine).get(source).source_id if source else None
            return RawLog(engine).rejected(source_id, limit)
        finally:
            engine.close()

    def query(self, sql: str) -> pa.Table:
        if self.remote:
            result = self.remote.call("POST", "/admin/v1/query", json={"sql": sql})
            columns = result["columns"]
            return (
                pa.table({c: pa.array([row[c] for row in result["rows"]]) for c in columns})
                if columns
                else pa.table({})
            )
        engine = open_engine(self.settings)
        try:
            self._catch_up(engine)
            return run_read_only(engine, sql)
        finally:
            engine.close()

    def import_files(
        self, source: str, kind: str, paths: list[Path], mapping: bytes | None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Import files (through the running server when there is one); returns the import's summary."""
        if self.remote:
            with ExitStack() as stack:
                files = [("files", (p.name, stack.enter_context(p.open("rb")))) for p in paths]
                if mapping is not None:
                    files.append(("mapping", ("mapping.yaml", mapping)))  # type: ignore[arg-type]
                summary: dict[str, Any] = self.remote.call(
                    "POST", "/admin/v1/imports", params={"source": source, "kind": kind}, files=files, timeout=None
                )
                return summary
        runtime = Runtime(self.settings, read_model=False)
        try:
            used = decode_mapping(mapping) if mapping is not None else None
            return runtime.import_files(source, kind, paths, used, progress).summary()
        finally:
            runtime.close()

    # -- governance -------------------------------------------------------------------------------------------
    @contextmanager
    def _runtime(self) -> Iterator[Runtime]:
        runtime = Runtime(self.settings, read_model=False)
        try:
            yield runtime
        finally:
            runtime.close()

    def put_plan(self, source: str, doc: object) -> dict[str, Any]:
        if self.remote:
            result: dict[str, Any] = self.remote.call("PUT", f"/admin/v1/sources/{source}/plan", json=doc)
            return result
        plan = parse_plan(doc)
        with self._runtime() as rt:
            source_id = rt.registry.get(source).source_id
            return {"source_id": source_id, "version": rt.governance.plans.put(source_id, plan)}

    def get_plan(self, source: str) -> dict[str, Any]:
        if self.remote:
            result: dict[str, Any] = self.remote.call("GET", f"/admin/v1/sources/{source}/plan")
            return result
        with self._runtime() as rt:
            source_id = rt.registry.get(source).source_id
            found = rt.governance.plans.get(source_id)
            if found is None:
                raise Rejected(f"source {source!r} has no tracking plan", code="no_plan", status=404)
            return {"source_id": source_id, "version": found[1], "plan": found[0].model_dump()}

    def put_transformations(self, doc: object) -> dict[str, Any]:
        if self.remote:
            result: dict[str, Any] = self.remote.call("PUT", "/admin/v1/transformations", json=doc)
            return result
        rules = parse_transformations(doc)
        with self._runtime() as rt:
            return {"version": rt.governance.transforms.put(rules)}

    def _either(self, request: tuple[str, str, dict[str, Any]], local: Callable[[Runtime], Any]) -> Any:
        """The admin API's answer to ``request`` (method, path, httpx arguments) when a server runs, else
        ``local`` run on a runtime of our own."""
        if self.remote:
            method, path, kwargs = request
            return self.remote.call(method, path, **kwargs)
        with self._runtime() as rt:
            return local(rt)

    def explain_profile(self, ref: str) -> dict[str, Any]:
        path = f"/admin/v1/identity/profiles/{ref}/explain"
        return dict(self._either(("GET", path, {}), lambda rt: rt.explain_profile(ref)))

    def split_profile(self, ref: str, by: str) -> dict[str, Any]:
        path = f"/admin/v1/identity/profiles/{ref}/split"
        return dict(self._either(("POST", path, {"json": {"by": by}}), lambda rt: rt.split_profile(ref, by)))

    def unsplit(self, a: str, b: str) -> dict[str, Any]:
        request = ("DELETE", "/admin/v1/identity/cannot-link", {"params": {"a": a, "b": b}})
        return dict(self._either(request, lambda rt: rt.unsplit(a, b)))

    def identity_health(self) -> dict[str, Any]:
        return dict(self._either(("GET", "/admin/v1/identity/health", {}), lambda rt: rt.identity_health()))

    def train_matching(self, merge: float | None, review: float | None) -> dict[str, Any]:
        body = {k: v for k, v in (("merge", merge), ("review", review)) if v is not None}
        request = ("POST", "/admin/v1/identity/model", {"json": body, "timeout": None})
        return dict(self._either(request, lambda rt: rt.train_matching(merge, review)))

    def review_queue(self, limit: int) -> list[dict[str, Any]]:
        request = ("GET", "/admin/v1/identity/review", {"params": {"limit": limit}})
        return list(self._either(request, lambda rt: rt.review_queue(limit)))

    def review(self, pair: str, decision: str) -> dict[str, Any]:
        request = ("POST", f"/admin/v1/identity/review/{pair}", {"json": {"decision": decision}})
        return dict(self._either(request, lambda rt: rt.review(pair, decision)))

    # -- profiles ---------------------------------------------------------------------------------------------
    def profile(self, ref: str, lineage: bool, limit: int) -> dict[str, Any]:
        request = ("GET", f"/admin/v1/profiles/{ref}", {"params": {"lineage": lineage, "limit": limit}})
        return dict(self._either(request, lambda rt: rt.profile(ref, lineage=lineage, limit=limit)))

    def traits(self) -> list[dict[str, Any]]:
        return list(self._either(("GET", "/admin/v1/traits", {}), lambda rt: rt.traits()))

    def put_traits(self, doc: object, replace: bool) -> dict[str, Any]:
        request = ("POST", "/admin/v1/traits", {"json": doc, "params": {"replace": replace}, "timeout": None})
        return dict(self._either(request, lambda rt: rt.put_traits(doc, replace=replace)))

    def delete_trait(self, name: str) -> dict[str, Any]:
        return dict(self._either(("DELETE", f"/admin/v1/traits/{name}", {}), lambda rt: rt.delete_trait(name)))

    def backfill_traits(self) -> dict[str, Any]:
        request = ("POST", "/admin/v1/traits/backfill", {"timeout": None})
        return dict(self._either(request, lambda rt: rt.backfill_traits()))

    def audiences(self) -> list[dict[str, Any]]:
        return list(self._either(("GET", "/admin/v1/audiences", {}), lambda rt: rt.audiences()))

    def audience(self, name: str) -> dict[str, Any]:
        return dict(self._either(("GET", f"/admin/v1/audiences/{name}", {}), lambda rt: rt.audience(name)))

    def put_audience(self, doc: object) -> dict[str, Any]:
        request = ("POST", "/admin/v1/audiences", {"json": doc, "timeout": None})
        return dict(self._either(request, lambda rt: rt.put_audience(doc)))

    def count_audience(self, doc: object) -> dict[str, Any]:
        request = ("POST", "/admin/v1/audiences/count", {"json": doc, "timeout": None})
        return dict(self._either(request, lambda rt: rt.count_audience(doc)))

    def preview_audience(self, doc: object, limit: int) -> list[dict[str, Any]]:
        request = ("POST", "/admin/v1/audiences/preview", {"json": doc, "params": {"limit": limit}, "timeout": None})
        return list(self._either(request, lambda rt: rt.preview_audience(doc, limit)))

    def audience_members(self, name: str, limit: int, after: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        request = ("GET", f"/admin/v1/audiences/{name}/members", {"params": params})
        return list(self._either(request, lambda rt: rt.audience_members(name, limit, after)))

    def evaluate_audiences(self, names: list[str]) -> dict[str, Any]:
        request = ("POST", "/admin/v1/audiences/evaluate", {"json": {"names": names}, "timeout": None})
        return dict(self._either(request, lambda rt: rt.evaluate_audiences(names)))

    def delete_audience(self, name: str) -> dict[str, Any]:
        path = f"/admin/v1/audiences/{name}"
        return dict(self._either(("DELETE", path, {}), lambda rt: rt.delete_audience(name)))

    def journeys(self) -> list[dict[str, Any]]:
        return list(self._either(("GET", "/admin/v1/journeys", {}), lambda rt: rt.journey_list()))

    def journey(self, name: str) -> dict[str, Any]:
        return dict(self._either(("GET", f"/admin/v1/journeys/{name}", {}), lambda rt: rt.journey(name)))

    def put_journey(self, doc: object) -> dict[str, Any]:
        request = ("POST", "/admin/v1/journeys", {"json": doc, "timeout": None})
        return dict(self._either(request, lambda rt: rt.put_journey(doc)))

    def journey_states(self, name: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        request = ("GET", f"/admin/v1/journeys/{name}/entries", {"params": params})
        return list(self._either(request, lambda rt: rt.journey_states(name, status, limit)))

    def delete_journey(self, name: str) -> dict[str, Any]:
        path = f"/admin/v1/journeys/{name}"
        return dict(self._either(("DELETE", path, {}), lambda rt: rt.delete_journey(name)))

    def profile_settings(self) -> dict[str, Any]:
        return dict(self._either(("GET", "/admin/v1/profiles-settings", {}), lambda rt: rt.profile_settings()))

    def put_profile_settings(self, doc: object) -> dict[str, Any]:
        request = ("PUT", "/admin/v1/profiles-settings", {"json": doc, "timeout": None})
        return dict(self._either(request, lambda rt: rt.put_profile_settings(doc)))

    def process(self) -> dict[str, int] | None:
        """Catch every stage up with the raw log; None when a server runs (it processes continuously)."""
        if self.remote:
            return None
        with self._runtime() as rt:
            return rt.progress()

    def put_pii_policy(self, doc: object) -> dict[str, Any]:
        if self.remote:
            result: dict[str, Any] = self.remote.call("PUT", "/admin/v1/pii/policy", json=doc)
            return result
        with self._runtime() as rt:
            return rt.put_pii_policy(doc)

    def pii_policy(self) -> dict[str, Any]:
        if self.remote:
            result: dict[str, Any] = self.remote.call("GET", "/admin/v1/pii/policy")
            return result
        with self._runtime() as rt:
            return rt.pii_policy()

    def pii_fields(self, source: str | None) -> pa.Table:
        if self.remote:
            rows = self.remote.call("GET", "/admin/v1/pii/fields", params={"source": source} if source else {})
            return pa.Table.from_pylist(rows)
        with self._runtime() as rt:
            return rt.pii_fields(source)

    def draft_plan(self, source: str, days: float) -> dict[str, Any]:
        if self.remote:
            result: dict[str, Any] = self.remote.call(
                "GET", f"/admin/v1/sources/{source}/plan/draft", params={"days": days}
            )
            return result
        with self._runtime() as rt:
            return rt.governance.infer(rt.registry.get(source).source_id, days=days).model_dump()

    def violations(self, source: str | None) -> pa.Table:
        if self.remote:
            rows = self.remote.call("GET", "/admin/v1/violations", params={"source": source} if source else {})
            return pa.Table.from_pylist(rows)
        with self._runtime() as rt:
            return rt.governance.violation_counts(rt.registry.get(source).source_id if source else None)

    def quarantine(self, source: str | None, limit: int) -> pa.Table:
        if self.remote:
            params: dict[str, str | int] = {"limit": limit, **({"source": source} if source else {})}
            return pa.Table.from_pylist(self.remote.call("GET", "/admin/v1/quarantine", params=params))
        with self._runtime() as rt:
            return rt.governance.held(rt.registry.get(source).source_id if source else None, limit)

    def release(self, source: str | None, event: str | None) -> dict[str, int]:
        params = {k: v for k, v in (("source", source), ("event", event)) if v}
        if self.remote:
            result: dict[str, int] = self.remote.call("POST", "/admin/v1/quarantine/release", params=params)
            return result
        with self._runtime() as rt:
            source_id = rt.registry.get(source).source_id if source else None
            done = rt.governance.release(source_id, event)
            return {"released": done.released, "still_held": done.still_held}

    def quality(self, source: str | None, days: float) -> list[dict[str, Any]]:
        if self.remote:
            params: dict[str, str | float] = {"days": days, **({"source": source} if source else {})}
            result: list[dict[str, Any]] = self.remote.call("GET", "/admin/v1/quality", params=params)
            return result
        with self._runtime() as rt:
            source_id = rt.registry.get(source).source_id if source else None
            return [q.as_dict() for q in quality(rt.engine, days=days, source_id=source_id)]

    # -- destinations -----------------------------------------------------------------------------------------
    def add_destination(self, doc: object, replace: bool) -> dict[str, Any]:
        request = ("POST", "/admin/v1/destinations", {"json": doc, "params": {"replace": replace}})
        return dict(self._either(request, lambda rt: rt.activation.add(doc, replace=replace)))

    def destinations(self) -> list[dict[str, Any]]:
        return list(self._either(("GET", "/admin/v1/destinations", {}), lambda rt: rt.activation.listing()))

    def test_destination(self, name: str) -> dict[str, Any]:
        path = f"/admin/v1/destinations/{name}/test"
        return dict(self._either(("POST", path, {}), lambda rt: rt.activation.test(name)))

    def destinations_status(self) -> list[dict[str, Any]]:
        return list(self._either(("GET", "/admin/v1/destinations/status", {}), lambda rt: rt.activation.status()))

    def deliveries(self, name: str, state: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        request = ("GET", f"/admin/v1/destinations/{name}/deliveries", {"params": params})
        return list(self._either(request, lambda rt: rt.activation.deliveries(name, state, limit)))

    def replay(self, name: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        dead = since is None and until is None
        params = {"dead": dead, **{k: v.isoformat() for k, v in (("since", since), ("until", until)) if v}}
        request = ("POST", f"/admin/v1/destinations/{name}/replay", {"params": params})
        return dict(self._either(request, lambda rt: rt.activation.replay(name, dead=dead, since=since, until=until)))

    def confirm_sync(self, name: str, discard: bool) -> dict[str, Any]:
        request = ("POST", f"/admin/v1/destinations/{name}/confirm", {"params": {"discard": discard}})
        return dict(self._either(request, lambda rt: rt.activation.confirm(name, discard=discard)))

    def drain(self, wait_seconds: float) -> dict[str, Any]:
        """Deliver what is due (through the server when one runs: its deliverer does the work)."""
        params = {"params": {"wait_seconds": wait_seconds}, "timeout": None}
        request: tuple[str, str, dict[str, Any]] = ("POST", "/admin/v1/destinations/drain", params)
        return dict(self._either(request, lambda rt: rt.activation.drain(wait_seconds)))

    def _catch_up(self, engine: Engine) -> None:
        """Load what a server acknowledged but had not loaded when it stopped (e.g. after ``kill -9``)."""
        try:
            journal = Journal(self.settings.journal_dir, fsync=self.settings.fsync)
        except Transient as exc:
            if exc.code != "journal_locked":
                raise
            return  # a live server owns the journal and loads it itself
        try:
            RawLog(engine, dedup_window=timedelta(days=self.settings.dedup_window_days)).load_all(journal)
        finally:
            journal.close()
