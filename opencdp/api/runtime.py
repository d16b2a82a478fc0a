"""The running service: engine, journal, ingestor and loader wired together from Settings."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import SecretStr, ValidationError

from opencdp.activation.stage import Activation
from opencdp.collect.imports import Importer, ImportResult, Progress
from opencdp.collect.ingest import HEAVY_LOAD_LINES, Ingestor
from opencdp.config import Settings
from opencdp.errors import Rejected, Terminal, Transient
from opencdp.govern.stage import Governance
from opencdp.identity.features import match_sample
from opencdp.identity.inspect import explain, health, node_of, resolve_profile, review_queue, strongest_other
from opencdp.identity.matching import load_model, model_document
from opencdp.identity.stage import Identity
from opencdp.identity.train import MAX_TRAINING_RECORDS, train
from opencdp.model.matching import Thresholds
from opencdp.model.pii import parse_pii_policy
from opencdp.model.profiles import SHIPPED_TRAITS, ProfileSettings, TraitDefinitions
from opencdp.model.records import Mapping
from opencdp.profiles.inspect import profile_view, timeline_page
from opencdp.profiles.serving import ProfileCache
from opencdp.profiles.stage import NEW_ACTIVITY, Profiles
from opencdp.profiles.traits import check
from opencdp.segments.journeys import Journeys
from opencdp.segments.stage import Segments
from opencdp.store import Engine, open_engine
from opencdp.store.journal import Journal
from opencdp.store.plans import MatchModelStore
from opencdp.store.raw_log import LoadResult, RawLog
from opencdp.store.sealing import Sealer, new_key
from opencdp.store.sources import SourceRegistry

log = logging.getLogger("opencdp.server")
SLOW_LOAD_SECONDS = 1.0
"""A load (with the stages after it) slower than this is logged with where its time went."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def admin_token_path(settings: Settings) -> Path:
    return settings.data_dir / "admin_token"


def _ensure_token(configured: SecretStr | None, path: Path, prefix: str, make: Callable[[], str] | None = None) -> str:
    """The token from settings, else from ``path`` (created, mode 0600, if missing: ``make()``, or ``prefix``
    and 32 random bytes)."""
    given = configured.get_secret_value().strip() if configured else ""
    if given:  # an empty token is "unset", never a token that anyone could present
        return given
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = make() if make is not None else prefix + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def ensure_admin_token(settings: Settings) -> str:
    """The admin token from settings, else from ``data_dir/admin_token`` (created, mode 0600, if missing)."""
    return _ensure_token(settings.admin_token, admin_token_path(settings), "adm_")


def ensure_secrets_key(settings: Settings) -> str:
    """The key that seals destinations' secrets: from settings, else ``data_dir/secrets_key`` (created, 0600)."""
    return _ensure_token(settings.secrets_key, settings.data_dir / "secrets_key", "", new_key)


def ensure_read_token(settings: Settings) -> str:
    """The profile API's read token from settings, else from ``data_dir/read_token`` (created if missing)."""
    return _ensure_token(settings.read_token, settings.data_dir / "read_token", "rd_")


def _named(doc: object) -> object:
    """A definition to count or preview may come without a name (it is not saved)."""
    if isinstance(doc, dict) and "name" not in doc:
        return {"name": "unsaved", **doc}
    return doc


class Runtime:
    """Everything one server process holds open."""

    def __init__(self, settings: Settings, *, read_model: bool = True) -> None:
        self.settings = settings
        self.read_model = read_model
        """Whether the profile API's in-memory read model is kept (the server's; a command run on the data
        directory without a server never reads it, and building it reads every profile: minutes at 1M)."""
        self.admin_token = ensure_admin_token(settings)
        self.read_token = ensure_read_token(settings)
        if self.read_token == self.admin_token:
            raise Terminal("the read token and the admin token must differ", code="bad_configuration")
        sealer = Sealer(ensure_secrets_key(settings))
        self.engine: Engine = open_engine(settings)
        self.journal = Journal(
            settings.journal_dir,
            segment_bytes=settings.journal_segment_bytes,
            group_max_bytes=settings.group_commit_max_bytes,
            fsync=settings.fsync,
        )
        self.registry = SourceRegistry(self.engine)
        self.raw_log = RawLog(self.engine, dedup_window=timedelta(days=settings.dedup_window_days))
        self.governance = Governance(self.engine, self.raw_log)
        self.identity = Identity(self.engine, self.raw_log)
        self.profiles = Profiles(self.engine, self.raw_log)
        self.segments = Segments(self.engine, self.profiles.definitions,
                                 refresh=timedelta(minutes=settings.audience_refresh_minutes),
                                 properties=self.profiles.property_columns,
                                 golden=self.profiles.golden_columns)  # fmt: skip
        self.journeys = Journeys(self.engine, self.raw_log, self.segments)
        self.profile_cache = ProfileCache()
        days = self.settings.outbox_retention_days
        try:
            self.activation = Activation(self.engine, sealer, retention=timedelta(days=days) if days else None)
        except Terminal:  # the secrets do not open with this key: release the files for the next attempt
            self.journal.close()
            self.engine.close()
            raise
        self._cache_built = False
        self.ingestor = Ingestor(self.registry, self.journal, max_backlog_bytes=settings.max_unloaded_bytes)
        self._load_lock = threading.Lock()
        self.last_load_error: str | None = None
        self.last_load_seconds: dict[str, float] = {}
        """How long each step of the last load took (``load``, ``govern``, ``identity``, ``profiles``,
        ``segments`` with journeys and routing, ``read model``, ``checkpoint``)."""
        self.load()  # catch up with whatever a previous run journalled but did not load

    def load(self, *, govern: bool = True) -> LoadResult | None:
        """Move everything journalled so far into the engine, then govern it (unless ``govern`` is False: the
        next load does). Engine failures are logged and retried later."""
        with self._load_lock:
            try:
                took = [time.monotonic()]
                result = self.raw_log.load_all(self.journal)
                took.append(time.monotonic())
                if govern:
                    self.governance.run()  # the first stage, on what was just loaded
                    took.append(time.monotonic())
                    self.identity.run()  # then identity, on what governance passed
                    took.append(time.monotonic())
                    computed = self.profiles.run()  # then profiles, on what identity resolved
                    took.append(time.monotonic())
                    self.segments.run(
                        computed.touched,
                        changed=sorted({*computed.recomputed, *computed.reshaped}),
                        new_activity=NEW_ACTIVITY,
                        handed=computed.handed,
                    )  # then audiences, for the profiles touched
                    self.journeys.run()  # then journeys: entries, exits and the steps that are due
                    self.activation.route()  # then activation, on the audience changes and events so far
                    took.append(time.monotonic())
                    self._refresh_cache(computed.touched, frozenset(computed.reshaped), frozenset(computed.recomputed))
                    took.append(time.monotonic())
                    if result.lines < HEAVY_LOAD_LINES:  # between loads, not in one's commit (heavy: DuckDB's)
                        self.engine.checkpoint(self.settings.checkpoint_log_bytes)
                        took.append(time.monotonic())
                names = ("load", "govern", "identity", "profiles", "segments", "read model", "checkpoint")
                self.last_load_seconds = {name: b - a for name, (a, b) in zip(names, pairwise(took), strict=False)}
                if took[-1] - took[0] > SLOW_LOAD_SECONDS:
                    log.warning("slow load of %d lines: %s", result.lines,
                                ", ".join(f"{n} {t:.2f} s" for n, t in self.last_load_seconds.items()))  # fmt: skip
            except Exception as exc:
                self.last_load_error = str(exc).splitlines()[0]
                log.warning("loader: %s (will retry)", self.last_load_error)
                return None
            self.last_load_error = None
            self.journal.mark_loaded(result.position, self.settings.journal_retention_segments)
            return result

    def _refresh_cache(self, touched: list[str] | None, reshaped: frozenset[str] = frozenset(),
                       recomputed: frozenset[str] | None = None) -> None:  # fmt: skip
        """Swap the profiles just computed into the profile API's read model (all of them the first time)."""
        if not self.read_model:
            return
        if not self._cache_built or touched is None:
            self.profile_cache.refresh(self.engine, None, self.profiles.definitions())
            self._cache_built = True
        elif touched:
            self.profile_cache.refresh(self.engine, touched, self.profiles.definitions(), reshaped=reshaped,
                                       new_activity=NEW_ACTIVITY, recomputed=recomputed)  # fmt: skip

    def import_files(
        self,
        source_ref: str,
        kind: str,
        paths: list[Path],
        mapping: Mapping | None = None,
        progress: Progress | None = None,
    ) -> ImportResult:
        """Import files into a source's raw log and wait until it holds them; the summary is kept in ``imports``."""
        source = self.registry.get(source_ref)
        started = datetime.now(UTC)
        before = self.raw_log.last_seq()
        # Load while the import writes (on the engine's own thread: another core), not only after it.
        stop = threading.Event()
        loader = threading.Thread(target=self._load_until, args=(stop,), name="opencdp-import-loader", daemon=True)
        loader.start()
        try:
            result = Importer(self.journal, progress=progress).run(
                source, kind, paths, mapping, self.ingestor.scrubber(source)
            )
        finally:
            stop.set()
            loader.join()
        if self.load(govern=False) is None:  # an import returns once its rows are loaded; governance follows
            raise Transient(
                f"the import is journalled but the engine did not load it yet: {self.last_load_error}",
                code="load_failed",
            )
        ids = result.message_ids
        result.accepted = self.raw_log.count_stored(result.import_id, source.source_id, ids, before) if ids else 0
        self.raw_log.record_import(result.summary(), result.rejects, started)
        return result

    def progress(self) -> dict[str, int]:
        """Where each stage has got to, and the identity graph's size (``opencdp process``)."""
        self.load()
        row = self.engine.fetch_one(
            """SELECT (SELECT coalesce(max(seq), 0) FROM raw_events),
                      (SELECT coalesce(max(seq), 0) FROM consumer_offsets WHERE consumer = 'govern'),
                      (SELECT coalesce(max(gseq), 0) FROM governance),
                      (SELECT coalesce(max(seq), 0) FROM consumer_offsets WHERE consumer = 'identity'),
                      (SELECT count(*) FROM identity_nodes),
                      (SELECT count(*) FROM profiles_index),
                      (SELECT count(*) FROM profile_aliases)"""
        )
        assert row is not None
        keys = ("raw_log", "governed_upto", "governed_stream", "identity_upto", "identifiers", "profiles", "merged")
        return dict(zip(keys, (int(v) for v in row), strict=True))

    def explain_profile(self, ref: str) -> dict[str, object]:
        """Why a profile (by id, absorbed id, or ``type:value``) holds what it holds."""
        self.load()
        profile_id = resolve_profile(self.engine, ref)
        if profile_id is None:
            raise Rejected(f"no profile is known by {ref!r} (a profile id, or an identifier as type:value)",
                           code="unknown_profile", status=404)  # fmt: skip
        return explain(self.engine, profile_id)

    def split_profile(self, ref: str, by: str) -> dict[str, object]:
        """Separate ``by`` (``type:value`` or ``record:KEY``) from the rest of a profile, for good: a cannot-link
        constraint between it and the profile's strongest other identifier, which later evidence and
        reprocessing respect until :meth:`unsplit` removes it."""
        self.load()
        profile_id = resolve_profile(self.engine, ref)
        found = node_of(self.engine, by)
        if profile_id is None or found is None or found[1] != profile_id:
            raise Rejected(f"{by!r} is not an identifier of profile {ref!r}", code="not_in_profile", status=404)
        partner = strongest_other(self.engine, profile_id, found[0])
        if partner is None:
            raise Rejected(f"profile {ref!r} has nothing to split {by!r} from", code="nothing_to_split")
        self.identity.separate(found[0], partner, apart=True)
        moved = node_of(self.engine, by)
        return {"profile_id": resolve_profile(self.engine, profile_id), "split_off": moved[1] if moved else None}

    def unsplit(self, a: str, b: str) -> dict[str, object]:
        """Remove the cannot-link constraint between two identifiers; they may be one profile again."""
        self.load()
        x, y = node_of(self.engine, a), node_of(self.engine, b)
        if x is None or y is None:
            raise Rejected(f"unknown identifier {a if x is None else b!r}", code="unknown_identifier", status=404)
        lo, hi = min(x[0], y[0]), max(x[0], y[0])
        if self.engine.fetch_one("SELECT 1 FROM identity_cannot_link WHERE a = ? AND b = ?", (lo, hi)) is None:
            raise Rejected(f"{a!r} and {b!r} are not kept apart by a split", code="no_split", status=404)
        self.identity.separate(x[0], y[0], apart=False)
        after = node_of(self.engine, a)
        return {"profile_id": after[1] if after else None}

    def identity_health(self) -> dict[str, object]:
        self.load()
        return health(self.engine)

    def train_matching(self, merge: float | None = None, review: float | None = None) -> dict[str, object]:
        """Train the match model on the match records (Splink), keep it with its thresholds (given, else the
        previous ones, else the defaults) and score every pair again; returns what was learnt and done."""
        self.load()  # train on everything journalled so far
        with self._load_lock:
            previous = load_model(self.engine)
            base = previous.thresholds if previous else Thresholds()
            try:
                thresholds = Thresholds(merge if merge is not None else base.merge,
                                        review if review is not None else base.review)  # fmt: skip
            except ValueError as exc:
                raise Rejected(str(exc), code="bad_thresholds") from exc
            records = self.engine.fetch_arrow(match_sample(MAX_TRAINING_RECORDS))
            splink = train(records)
            version = MatchModelStore(self.engine).put(model_document(splink, thresholds, records.num_rows))
            resolved = self.identity.rescore()
        return {
            "version": version,
            "trained_on": records.num_rows,
            "features": [c["output_column_name"] for c in splink["comparisons"]],
            "probability_two_random_records_match": splink["probability_two_random_records_match"],
            "thresholds": {"merge": thresholds.merge, "review": thresholds.review},
            "pairs": dict(self.engine.fetch_all("SELECT status, count(*) FROM identity_matches GROUP BY status")),
            "created": resolved.created,
            "merged": resolved.merged,
        }

    def review_queue(self, limit: int = 50) -> list[dict[str, object]]:
        self.load()
        return review_queue(self.engine, limit)

    def review(self, pair: str, decision: str) -> dict[str, object]:
        """Decide on a scored pair (``ID-ID`` as the review queue shows it): ``accept`` joins the two records'
        identifiers whatever their score, ``reject`` keeps them apart for good, ``reset`` forgets the decision."""
        decisions = {"accept": "accepted", "reject": "rejected", "reset": None}
        if decision not in decisions:
            raise Rejected(f"decision must be one of {', '.join(decisions)}", code="bad_decision")
        try:
            id_l, id_r = sorted(int(x) for x in pair.split("-"))
        except ValueError:
            raise Rejected(f"{pair!r} is not a pair (ID-ID, as the review queue shows it)", code="bad_pair") from None
        with self._load_lock:
            known = self.engine.fetch_one("SELECT 1 FROM identity_matches WHERE id_l = ? AND id_r = ?", (id_l, id_r))
            if known is None:
                raise Rejected(f"no scored pair {pair!r}", code="unknown_pair", status=404)
            self.identity.decide(id_l, id_r, decisions[decision])
            sides = self.engine.fetch_all(
                """SELECT m.profile_id FROM identity_match_records AS r
                JOIN identity_membership AS m ON m.node_id = r.node_id
                WHERE r.match_id IN (?, ?) ORDER BY r.match_id""",
                (id_l, id_r),
            )
        return {"pair": f"{id_l}-{id_r}", "decision": decisions[decision], "profiles": [s[0] for s in sides]}

    def profile(
        self, ref: str, *, lineage: bool = False, limit: int = 20, before: int | None = None, catch_up: bool = True
    ) -> dict[str, Any]:
        """A profile's 360 view (by profile id, absorbed id, or ``type:value``), read from the engine; with
        ``catch_up``, after processing whatever is journalled (a server's loader does that on its own)."""
        if catch_up:
            self.load()
        profile_id = resolve_profile(self.engine, ref)
        if profile_id is None:
            raise Rejected(f"no profile is known by {ref!r} (a profile id, or an identifier as type:value)",
                           code="unknown_profile", status=404)  # fmt: skip
        return profile_view(self.engine, profile_id, self.profiles.definitions(), lineage=lineage, limit=limit,
                            before=before)  # fmt: skip

    def timeline_page(self, profile_id: str, limit: int, before: int) -> list[dict[str, Any]]:
        """Timeline rows of a profile received before ``before`` (the profile API's pages past the first)."""
        return timeline_page(self.engine, profile_id, limit, before)

    def traits(self) -> list[dict[str, Any]]:
        """Every computed trait: the shipped ones, then the workspace's own, with their type."""
        own = {t.name for t in self.profiles.trait_store.get()[0].traits}
        return [
            {**t.model_dump(exclude_defaults=True), "type": t.type, "shipped": t.name not in own}
            for t in self.profiles.definitions().traits
        ]

    def put_traits(self, doc: object, *, replace: bool = False) -> dict[str, Any]:
        """Add (or with ``replace``, set) the workspace's computed traits; every definition is checked with the
        shipped ones before anything is saved, then every profile is computed again."""
        try:
            given = TraitDefinitions.model_validate(doc if isinstance(doc, dict) and "traits" in doc else
                                                    {"traits": doc if isinstance(doc, list) else [doc]})  # fmt: skip
        except ValidationError as exc:
            raise Rejected(_first_error(exc), code="bad_trait") from None
        current = [] if replace else self.profiles.trait_store.get()[0].traits
        replaced = {t.name for t in given.traits}
        shipped = {t.name for t in SHIPPED_TRAITS}
        clash = sorted(replaced & shipped)
        if clash:
            raise Rejected(f"{', '.join(clash)} is a shipped trait; choose another name", code="bad_trait")
        merged = [t for t in current if t.name not in replaced] + list(given.traits)
        check([*SHIPPED_TRAITS, *merged])  # raises Rejected before anything is saved
        self.load()
        for t in given.traits:
            unknown = self.profiles.unknown_references(t)
            if unknown:
                raise Rejected(f"trait {t.name!r}: {'; '.join(unknown)}", code="unknown_reference")
        with self._load_lock:
            version = self.profiles.trait_store.put(TraitDefinitions(traits=merged))
            self.profiles.ensure_shape()
            self._refresh_cache(None)
        return {"version": version, "traits": [t.name for t in given.traits]}

    def delete_trait(self, name: str) -> dict[str, Any]:
        current = self.profiles.trait_store.get()[0].traits
        kept = [t for t in current if t.name != name]
        if len(kept) == len(current):
            raise Rejected(f"no trait of the workspace is named {name!r}", code="unknown_trait", status=404)
        check([*SHIPPED_TRAITS, *kept])  # another trait may use it
        with self._load_lock:
            version = self.profiles.trait_store.put(TraitDefinitions(traits=kept))
            self.profiles.ensure_shape()
            self._refresh_cache(None)
        return {"version": version, "deleted": name}

    def backfill_traits(self) -> dict[str, Any]:
        """Compute every profile's golden and computed traits again."""
        self.load()
        with self._load_lock:
            done = self.profiles.backfill()
            self._refresh_cache(None)
        return {"profiles": done.profiles}

    def put_profile_settings(self, doc: object) -> dict[str, Any]:
        """Save the workspace currency, rates and survivorship rules, then compute every profile again."""
        try:
            settings = ProfileSettings.model_validate(doc)
        except ValidationError as exc:
            raise Rejected(_first_error(exc), code="bad_profile_settings") from None
        for rule in settings.survivorship.values():
            for ref in rule.sources:
                self.registry.get(ref)  # an unknown source is refused (404), not ignored
        with self._load_lock:
            version = self.profiles.settings_store.put(settings)
        self.backfill_traits()
        return {"version": version}

    def profile_settings(self) -> dict[str, Any]:
        settings, version = self.profiles.settings_store.get()
        return {"version": version, **settings.model_dump()}

    # -------------------------------------------------------------------------------------------- audiences

    def audiences(self) -> list[dict[str, Any]]:
        """Every saved audience with its size and when it was last evaluated in full."""
        return self.segments.summary()

    def audience(self, name: str) -> dict[str, Any]:
        found = next((a for a in self.segments.audiences() if a.name == name), None)
        if found is None:
            raise Rejected(f"there is no audience {name!r}", code="unknown_audience", status=404)
        summary = next(s for s in self.segments.summary() if s["name"] == name)
        return {**summary, "definition": found.model_dump(by_alias=True, exclude_defaults=True)}

    def put_audience(self, doc: object) -> dict[str, Any]:
        """Save an audience (checked first: nothing is saved when it is refused) and evaluate it in full."""
        self.load()
        with self._load_lock:
            return self.segments.save(self.segments.checked(doc))

    def delete_audience(self, name: str) -> dict[str, Any]:
        with self._load_lock:
            return self.segments.delete(name)

    def count_audience(self, doc: object) -> dict[str, Any]:
        """The size of a definition that need not be saved, and of each of its branches."""
        definition = self.segments.checked(_named(doc))
        return {"name": definition.name, **self.segments.count(definition)}

    def preview_audience(self, doc: object, limit: int = 10) -> list[dict[str, Any]]:
        return self.segments.preview(self.segments.checked(_named(doc)), limit)

    def audience_members(self, name: str, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        return self.segments.members(name, limit, after)

    def evaluate_audiences(self, names: list[str] | None = None) -> dict[str, Any]:
        """Evaluate audiences (all when no name is given) over every profile now."""
        self.load()
        with self._load_lock:
            done = self.segments.evaluate(names or None, cause="batch")
        return {"audiences": done.audiences, "entered": done.entered, "exited": done.exited}

    # --------------------------------------------------------------------------------------------- journeys

    def journey_list(self) -> list[dict[str, Any]]:
        return self.journeys.summary()

    def journey(self, name: str) -> dict[str, Any]:
        found = self.journeys.definitions().get(name)
        if found is None:
            raise Rejected(f"there is no journey {name!r}", code="unknown_journey", status=404)
        summary = next(s for s in self.journeys.summary() if s["name"] == name)
        return {**summary, "definition": found[0].model_dump(by_alias=True, exclude_defaults=True)}

    def put_journey(self, doc: object) -> dict[str, Any]:
        """Save (or replace) a journey, checked first; it reacts to what arrives from now on."""
        self.load()
        with self._load_lock:
            return self.journeys.save(self.journeys.checked(doc))

    def delete_journey(self, name: str) -> dict[str, Any]:
        with self._load_lock:
            return self.journeys.delete(name)

    def journey_states(self, name: str, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The entries of a journey (newest first): profile, step, when it is due, status."""
        self.journey(name)
        where, params = ("AND status = ?", (name, status)) if status else ("", (name,))
        rows = self.engine.fetch_all(
            f"SELECT entry, profile_id, step, due_at, status, entered_at, updated_at FROM journey_states "
            f"WHERE journey = ? {where} ORDER BY entry DESC LIMIT {int(limit)}",
            params,
        )
        keys = ("entry", "profile_id", "step", "due_at", "status", "entered_at", "updated_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def put_pii_policy(self, doc: object) -> dict[str, Any]:
        """Save the PII policy (sources named by id or name); collection drops what it drops from now on."""
        policy = parse_pii_policy(doc)
        by_id = {self.registry.get(ref).source_id: actions for ref, actions in policy.sources.items()}
        version = self.governance.pii.put(policy.model_copy(update={"sources": by_id}))
        self.ingestor.refresh()
        return {"version": version}

    def pii_policy(self) -> dict[str, Any]:
        policy, version = self.governance.pii.get()
        return {"version": version, **policy.model_dump()}

    def pii_fields(self, source_ref: str | None) -> pa.Table:
        """How each field of each source is classified, and what the policy does with it."""
        self.load()
        where, params = ("WHERE source_id = ?", (self.registry.get(source_ref).source_id,)) if source_ref else ("", ())
        return self.engine.fetch_arrow(
            f"SELECT source_id, container, field, class, detected_by, action, values_seen, last_seen FROM pii_fields "
            f"{where} ORDER BY source_id, container, field, class",
            params,
        )

    def _load_until(self, stop: threading.Event, interval: float = 0.2) -> None:
        while not stop.wait(interval):
            self.load(govern=False)

    def close(self) -> None:
        self.load()
        self.activation.close()
        self.journal.close()
        self.engine.close()
