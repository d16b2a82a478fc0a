"""The profile read model: every live profile's document in process memory, for the real-time profile API.

The profiles stage hands over the ids it computed after each micro-batch; :meth:`ProfileCache.refresh` reads
their documents (four set-based queries) and swaps them in. Readers never touch the engine and never wait on a
lock: each lookup is two dictionary reads, and replacing an entry is atomic, so a reader sees a profile as it
was before or after a batch, never half of one. Profiles a merge absorbed resolve to the survivor.

Each entry holds the two answers the API gives most (plain and with lineage, the first timeline page) already
encoded as JSON bytes: a request sends them as they are, and the garbage collector has nothing to walk (a
hundred thousand documents as Python dictionaries are millions of objects, and walking them stalled requests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from opencdp.model.identity import canonical_ref
from opencdp.profiles.inspect import documents, new_rows, shaped, timelines
from opencdp.profiles.traits import Checked
from opencdp.store.engine import Engine

CACHED_TIMELINE = 20
"""Timeline rows kept per profile (the first page); older pages are read from the engine."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class Entry:
    """One profile in the read model: its answers, encoded."""

    plain: bytes
    lineage: bytes

    def document(self, *, lineage: bool) -> dict[str, Any]:
        """The answer as Python values (to page or cut it)."""
        doc: dict[str, Any] = _decode(self.lineage if lineage else self.plain)
        return doc

    def with_rows(self, rows: list[dict[str, Any]]) -> Entry:
        """This entry with newer timeline rows (latest first) in front, nothing else changed."""
        plain, lineage = self.document(lineage=False), self.document(lineage=True)
        timeline = (rows + plain["timeline"])[:CACHED_TIMELINE]
        after = timeline[-1]["seq"] if len(timeline) == CACHED_TIMELINE else None
        for doc in (plain, lineage):
            doc["timeline"], doc["timeline_next"] = timeline, after
        return Entry(_encode(plain), _encode(lineage))


def entry(doc: dict[str, Any]) -> Entry:
    return Entry(_encode(shaped(doc, lineage=False, limit=CACHED_TIMELINE)),
                 _encode(shaped(doc, lineage=True, limit=CACHED_TIMELINE)))  # fmt: skip


class ProfileCache:
    def __init__(self) -> None:
        self.docs: dict[str, Entry] = {}
        self.by_identifier: dict[str, str] = {}
        self.aliases: dict[str, str] = {}

    def lookup(self, ref: str) -> Entry | None:
        """The entry of a profile id, an absorbed id, or an identifier ``type:value``."""
        doc = self.docs.get(ref)
        if doc is not None:
            return doc
        pid = self.by_identifier.get(canonical_ref(ref)) or self.aliases.get(ref)
        for _ in range(8):  # an alias of a profile that was itself absorbed later
            if pid is None or pid in self.docs:
                break
            pid = self.aliases.get(pid)
        return None if pid is None else self.docs.get(pid)

    def refresh(
        self,
        engine: Engine,
        profile_ids: list[str] | None,
        checked: Checked,
        *,
        reshaped: frozenset[str] = frozenset(),
        new_activity: str | None = None,
        recomputed: frozenset[str] | None = None,
    ) -> int:
        """Read the documents of ``profile_ids`` (every live profile for None) again; ids that are no longer
        live are dropped and, when a merge absorbed them, resolve to the survivor. A cached profile whose
        identifiers did not change (not in ``reshaped``) keeps its timeline with the rows of ``new_activity``
        (a table of this run's activity) put in front; the others read theirs from the engine. When
        ``recomputed`` says which profiles had their traits computed again, a cached one that was not (nor
        reshaped) only gains those rows: its document is not read again. Returns how many documents were
        read."""
        light: set[str] = set()
        if profile_ids is not None and new_activity is not None and recomputed is not None:
            light = {p for p in profile_ids if p in self.docs and p not in reshaped and p not in recomputed}
            profile_ids = [p for p in profile_ids if p not in light]
        fresh = documents(engine, profile_ids, checked, timeline=0) if profile_ids != [] else {}
        gone = set(self.docs) - set(fresh) if profile_ids is None else {p for p in profile_ids if p not in fresh}
        if profile_ids is None:
            self.aliases = dict(engine.fetch_all("SELECT alias, profile_id FROM profile_aliases"))
        elif gone:  # documents() left the ids asked for in its temporary table
            self.aliases.update(engine.fetch_all(
                "SELECT alias, profile_id FROM profile_aliases WHERE alias IN (SELECT profile_id FROM _pv_ids)"
            ))  # fmt: skip
        whole = {p for p in fresh if profile_ids is None or new_activity is None or p in reshaped or p not in self.docs}
        from_engine = (
            timelines(engine, None if profile_ids is None else sorted(whole), CACHED_TIMELINE) if whole else {}
        )
        some_kept = light or len(whole) < len(fresh)
        added = new_rows(engine, new_activity) if new_activity is not None and some_kept else {}
        for pid, doc in fresh.items():
            if pid in whole:
                doc["timeline"] = from_engine.get(pid, [])
            else:
                kept = self.docs[pid].document(lineage=False)["timeline"]
                doc["timeline"] = (added.get(pid, []) + kept)[:CACHED_TIMELINE]
            self.docs[pid] = entry(doc)
            for i in doc["identities"]:
                self.by_identifier[f"{i['type']}:{i['value']}"] = pid
        for pid in light:
            rows = added.get(pid)
            if rows:
                self.docs[pid] = self.docs[pid].with_rows(rows)
        for pid in gone:
            self.docs.pop(pid, None)
        return len(fresh)
