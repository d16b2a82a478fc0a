"""Batch imports: CRM, point-of-sale, finance and support exports into the raw log, set-based.

A file is read by DuckDB in memory (:class:`opencdp.store.files.FileReader`), its columns mapped to a kind's
fields (:mod:`opencdp.model.records`), every value typed and normalised, and each row becomes a journal line
like a collected message: records (kinds ``customers``, ``orders``, ``returns``, ``tickets``) as messages of
type ``record``, and rows of kind ``events`` as the Segment messages they are, checked exactly as collection
checks them. The loader then moves them into ``raw_events``, so everything downstream reads one log.

- **Idempotent.** A record's messageId is a hash of its kind and content (natural key included), so importing
  the same file again stores nothing new; a changed row is a new version of the record.
- **Nothing silently dropped.** A row the reader cannot split, or whose natural key or required field is
  missing or unreadable, is a reject (file, row, column, reason) in ``import_rejects``. An optional field
  that cannot be read (an invalid email, an unknown currency) is flagged with the reason and its value kept
  as sent under ``invalid``; it is never guessed.
- **Set-based.** Casting, checks and the journal lines themselves are SQL; Python touches each *distinct*
  email, phone, name and currency once (the libraries' verdicts are authoritative), not each row, and each
  distinct subject and text of a ticket once to score its sentiment.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import yaml

from opencdp.collect import messages, values
from opencdp.collect.scrub import WITHHELD, Scrubber
from opencdp.errors import Rejected
from opencdp.model.records import KINDS, FieldMapping, FieldSpec, KindSpec, Mapping, infer_mapping
from opencdp.model.sources import Source
from opencdp.model.validation import parse_document
from opencdp.store.files import FileReader
from opencdp.store.journal import Journal

CHUNK_ROWS = 50_000
"""Rows per journal write: a bounded amount of memory per step, and progress to report in between."""

Progress = Callable[[str, int, int], None]
"""Called with (phase, done, total) as an import goes on."""

_NORMALISERS: dict[str, Callable[[str], values.Verdict]] = {
    "email": values.email,
    "phone": values.phone_in_region,
    "name": values.name,
    "currency": values.currency,
}


_COMPUTED: dict[str, Callable[[str], values.Verdict]] = {"sentiment": values.sentiment}
"""What computes each field declared ``computed_from`` others, from their texts joined by ``". "``."""

VERDICT_CHUNK = 250_000
"""Distinct values checked per round trip through Python (bounds the import's memory, not its speed)."""


@dataclass
class ImportResult:
    """What an import did. ``accepted`` and ``duplicates`` are known once the raw log has loaded its lines."""

    import_id: str
    source_id: str
    kind: str
    files: list[str]
    mapping: Mapping
    inferred: bool
    rows: int = 0
    written: int = 0
    rejected: int = 0
    flagged: dict[str, int] = field(default_factory=dict)
    rejects: pa.Table | None = None
    message_ids: pa.ChunkedArray | None = None
    """The distinct messageIds written, to count what the raw log stored of them."""
    accepted: int | None = None
    pii_dropped: list[str] = field(default_factory=list)
    """Fields and attribute columns the PII policy dropped as a whole (values dropped one by one: not listed)."""

    @property
    def duplicates(self) -> int | None:
        return None if self.accepted is None else self.written - self.accepted

    def summary(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "source_id": self.source_id,
            "kind": self.kind,
            "files": self.files,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "flagged": self.flagged,
            "mapping": self.mapping.model_dump(exclude_defaults=True),
            "mapping_inferred": self.inferred,
            "pii_dropped": self.pii_dropped,
        }


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _col(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def resolve_mapping(kind: KindSpec, columns: list[str], mapping: Mapping | None) -> tuple[Mapping, bool]:
    """The mapping to use (given or inferred), checked against the file's columns and the kind's fields."""
    inferred = mapping is None
    used = infer_mapping(kind, columns)
    if mapping is not None:  # the mapping's fields win; fields it leaves out are still inferred from free columns
        taken = {m.column for m in mapping.fields.values() if m.column is not None}
        guessed = {k: m for k, m in used.fields.items() if k not in mapping.fields and m.column not in taken}
        used = mapping.model_copy(update={"fields": {**guessed, **mapping.fields}})
    unknown = sorted(set(used.fields) - set(kind.field_names))
    if unknown:
        raise Rejected(
            f"the mapping names fields {unknown} that {kind.name} records do not have; "
            f"fields: {list(kind.field_names)}",
            code="invalid_mapping",
        )
    computed = sorted(name for name in used.fields if kind.field(name).computed_from)
    if computed:
        raise Rejected(
            f"the mapping names fields {computed} that the import computes, not reads from a column",
            code="invalid_mapping",
        )
    missing = sorted({m.column for m in used.fields.values() if m.column is not None} - set(columns))
    if missing:
        raise Rejected(
            f"the mapping names columns {missing} that the file does not have; columns: {columns}",
            code="mapping_column_missing",
        )
    if used.default_currency and "currency" in kind.field_names and "currency" not in used.fields:
        used = used.model_copy(
            update={"fields": {**used.fields, "currency": FieldMapping(default=used.default_currency)}}
        )
    for spec in kind.fields:
        m = used.fields.get(spec.name)
        if spec.required and (m is None or (m.column is None and m.default is None)):
            hint = "give a mapping (--mapping) that names its column" if inferred else "map it to a column"
            raise Rejected(
                f"no column for the required field {spec.name!r} of {kind.name}; columns: {columns}; {hint}",
                code="required_field_unmapped",
            )
    return used, inferred


def _raw_expr(spec: FieldSpec, mapping: Mapping) -> str:
    m = mapping.fields[spec.name]
    raw = f"nullif(trim({_col(m.column)}), '')" if m.column is not None else "NULL"
    return f"coalesce({raw}, {_lit(m.default)})" if m.default is not None else raw


_DECIMAL_TEXT = r"^-?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$"
_UNSAFE = r"[\t\n\r\x01\x00]"
"""Characters the journal line's header cannot hold (RE2 syntax)."""


def _typed(spec: FieldSpec, mapping: Mapping, raw: str) -> tuple[str, str]:
    """SQL for (value, reason) of one field from its raw text column ``raw``; reason is NULL when readable."""
    fmt = mapping.fields[spec.name].format
    if spec.type == "date":
        parsed = f"CAST(try_strptime({raw}, {_lit(fmt)}) AS DATE)" if fmt else f"TRY_CAST({raw} AS DATE)"
        value = f"strftime({parsed}, '%Y-%m-%d')"
        return value, f"CASE WHEN {raw} IS NOT NULL AND {parsed} IS NULL THEN 'not a date' END"
    if spec.type == "timestamp":
        parsed = f"CAST(try_strptime({raw}, {_lit(fmt)}) AS TIMESTAMPTZ)" if fmt else f"TRY_CAST({raw} AS TIMESTAMPTZ)"
        value = f"strftime({parsed}, '%Y-%m-%dT%H:%M:%S.%gZ')"
        return value, f"CASE WHEN {raw} IS NOT NULL AND {parsed} IS NULL THEN 'not a date and time' END"
    if spec.type == "decimal":
        # "1,234.50" is read (thousands separators); "1.234,50" is not guessed.
        text = f"CASE WHEN regexp_matches({raw}, {_lit(_DECIMAL_TEXT)}) THEN replace({raw}, ',', '') ELSE {raw} END"
        parsed = f"TRY_CAST({text} AS DECIMAL(38, 6))"
        value = f"regexp_replace(regexp_replace(CAST({parsed} AS VARCHAR), '0+$', ''), '\\.$', '')"
        return value, f"CASE WHEN {raw} IS NOT NULL AND {parsed} IS NULL THEN 'not a decimal number' END"
    if spec.type == "integer":
        parsed = f"TRY_CAST({raw} AS BIGINT)"
        return (
            f"CAST({parsed} AS VARCHAR)",
            f"CASE WHEN {raw} IS NOT NULL AND {parsed} IS NULL THEN 'not an integer' END",
        )
    if spec.type == "json":
        ok = f"json_valid({raw})"
        return f"CASE WHEN {ok} THEN {raw} END", f"CASE WHEN {raw} IS NOT NULL AND NOT {ok} THEN 'not JSON' END"
    if spec.type in _NORMALISERS:  # joined from the verdicts table of this field
        norm = f"_n_{spec.name}"
        return f"{norm}.value", f"CASE WHEN {raw} IS NOT NULL THEN {norm}.reason END"
    return raw, "NULL"


def _computed_key(spec: FieldSpec, names: set[str], table: str) -> str:
    """What a computed field is computed from: the texts of its source fields that the record has, joined by
    ``". "`` (NULL when it has none), cut to :data:`values.SENTIMENT_CHARS` characters."""
    parts = [table + _col("raw_" + name) for name in spec.computed_from if name in names]
    if not parts:
        return "CAST(NULL AS VARCHAR)"
    return f"left(nullif(concat_ws('. ', {', '.join(parts)}), ''), {values.SENTIMENT_CHARS})"


def _verdict_key(spec: FieldSpec, mapping: Mapping, table: str) -> str:
    """What a field's verdict depends on: its text, and for a phone number the region to read it in (the
    record's own two-letter country when it has one, else the mapping's ``default_region``)."""
    raw = table + _col("raw_" + spec.name)
    if spec.type != "phone":
        return raw
    country = f"upper({table}{_col('raw_country')})" if "country" in mapping.fields else "NULL"
    own = f"CASE WHEN regexp_matches({country}, '^[A-Z]{{2}}$') THEN {country} END"
    default = _lit(mapping.default_region.upper()) if mapping.default_region else "''"
    return f"coalesce({own}, {default}) || {_lit(values.REGION_SEPARATOR)} || {raw}"


class Importer:
    """One import: files of one kind into one source's raw log, through the journal."""

    def __init__(self, journal: Journal, *, progress: Progress | None = None) -> None:
        self.journal = journal
        self.progress = progress or (lambda _phase, _done, _total: None)

    def run(
        self,
        source: Source,
        kind: str,
        paths: list[Path],
        mapping: Mapping | None = None,
        scrubber: Scrubber | None = None,
    ) -> ImportResult:
        """``scrubber``: the source's PII policy drops classes, which must not reach the journal."""
        reader = FileReader()
        try:
            self.progress("reading", 0, 0)
            columns = reader.load(paths)
            import_id = "imp_" + uuid.uuid4().hex[:20]
            received = datetime.now(UTC)
            if kind == "events":
                result = ImportResult(import_id, source.source_id, kind, [p.name for p in paths], Mapping(), False)
                self._events(reader, source, result, received, scrubber)
            elif kind in KINDS:
                spec = KINDS[kind]
                used, inferred = resolve_mapping(spec, columns, mapping)
                result = ImportResult(import_id, source.source_id, kind, [p.name for p in paths], used, inferred)
                if scrubber is not None:
                    result.pii_dropped = _dropped_fields(spec, used, scrubber)
                self._records(reader, source, spec, columns, result, received, scrubber)
            else:
                raise Rejected(f"unknown kind {kind!r}; kinds: {sorted([*KINDS, 'events'])}", code="unknown_kind")
            return result
        finally:
            reader.close()

    # -- records ----------------------------------------------------------------------------------------------
    def _records(
        self,
        reader: FileReader,
        source: Source,
        spec: KindSpec,
        columns: list[str],
        result: ImportResult,
        at: datetime,
        scrubber: Scrubber | None,
    ) -> None:
        mapping = result.mapping
        mapped = [s for s in spec.fields if s.name in mapping.fields and s.name not in result.pii_dropped]
        used_columns = {m.column for m in mapping.fields.values() if m.column is not None}
        rest = [c for c in columns if c not in used_columns] if mapping.attributes == "rest" else []
        kept = {c: _col(c) for c in rest}
        if scrubber is not None:
            kept = _scrubbed_attributes(reader, rest, scrubber)
            result.pii_dropped += [c for c in rest if c not in kept]
        raws = ", ".join(f"{_raw_expr(s, mapping)} AS {_col('raw_' + s.name)}" for s in mapped)
        attributes = (
            "struct_pack(" + ", ".join(f"{_col(c)} := {expr}" for c, expr in kept.items()) + ")"
            if kept
            else "NULL::JSON"
        )
        reader.execute(
            # ``_n``: the rows' order in the files (``src`` holds them in that order), for writing in order later.
            "CREATE OR REPLACE TABLE raw AS SELECT _file, _row, row_number() OVER () AS _n, "
            f"{raws}, {attributes} AS attributes FROM src"
        )
        result.rows = reader.count("SELECT count(*) FROM raw") + reader.count("SELECT count(*) FROM src_rejects")

        names = {s.name for s in mapped}
        computed = [s for s in spec.fields if s.computed_from]
        with values.Workers() as workers:
            joins = [
                self._verdicts(reader, workers, s.name, _verdict_key(s, mapping, "raw."), _NORMALISERS[s.type])
                for s in mapped
                if s.type in _NORMALISERS
            ] + [
                self._verdicts(reader, workers, s.name, _computed_key(s, names, "raw."), _COMPUTED[s.name])
                for s in computed
            ]

        self.progress("typing", 0, 0)
        typed = {s.name: _typed(s, mapping, "raw." + _col("raw_" + s.name)) for s in mapped}
        selects = ", ".join(
            [
                f"{value} AS {_col('v_' + name)}, {reason} AS {_col('r_' + name)}"
                for name, (value, reason) in typed.items()
            ]
            + [f"_n_{s.name}.value AS {_col('v_' + s.name)}" for s in computed]  # never flagged
        )
        reader.execute(f"CREATE OR REPLACE TABLE typed AS SELECT raw.*, {selects} FROM raw {' '.join(joins)}")

        # A rejected row is kept as read, but not what the PII policy drops (an unreadable line: not at all).
        row_text, unread = "CAST(to_json(src) AS VARCHAR)", "raw"
        if scrubber is not None:
            read = [mapping.fields[s.name].column for s in mapped]
            kept_columns = {c: _col(c) for c in read if c is not None} | kept
            row_text = (
                "CAST(to_json(struct_pack(" + ", ".join(f"{_col(c)} := {e}" for c, e in kept_columns.items()) + "))"
                " AS VARCHAR)"
                if kept_columns
                else "'{}'"
            )
            unread = _lit(WITHHELD.decode())
        # Rejects: a required field absent or unreadable (one row per field at fault), and the reader's own.
        required = [s for s in mapped if s.required]
        checks = " UNION ALL ".join(
            f"SELECT _file, _row, {_lit(s.name)} AS column_name, "
            f"coalesce({_col('r_' + s.name)}, 'required field {s.name} is missing') AS reason, "
            f"{row_text} AS raw FROM typed JOIN src USING (_file, _row) "
            f"WHERE {_col('v_' + s.name)} IS NULL"
            for s in required
        )
        rejects = reader.arrow(
            f"SELECT _file AS file, _row AS row_number, column_name, reason, raw FROM ({checks}) "
            f"UNION ALL SELECT _file, _row, column_name, reason, {unread} FROM src_rejects ORDER BY file, row_number"
        )
        result.rejects = rejects
        ok_rows = " AND ".join(f"{_col('v_' + s.name)} IS NOT NULL" for s in required) or "TRUE"
        result.rejected = reader.count(f"SELECT count(*) FROM typed WHERE NOT ({ok_rows})") + reader.count(
            "SELECT count(*) FROM src_rejects"
        )
        ok = " AND ".join(f"{_col('v_' + s.name)} IS NOT NULL" for s in required) or "TRUE"

        optional = [s for s in mapped if not s.required]
        if optional:
            counts = reader.arrow(
                "SELECT "
                + ", ".join(f"count({_col('r_' + s.name)}) AS {_col(s.name)}" for s in optional)
                + f" FROM typed WHERE {ok}"
            ).to_pylist()[0]
            result.flagged = {name: int(n) for name, n in counts.items() if n}

        fields = "struct_pack(" + ", ".join(f"{s.name} := {_col('v_' + s.name)}" for s in mapped + computed) + ")"
        flags = self._map_of(optional, "r_")
        invalid = self._map_of(optional, "raw_", only_where="r_")
        user_id = _col("v_user_id") if "user_id" in names else "NULL"
        time = _col("v_" + spec.time) if spec.time and spec.time in names else "NULL"
        reader.execute(
            f"""CREATE OR REPLACE TABLE out AS
            SELECT _row, _n, {user_id} AS user_id, {time} AS time,
                   {_col("v_" + spec.key)} AS key, fields, attributes, flags, invalid, _file,
                   'rec_' || md5({_lit(spec.name)} || chr(31) || CAST(to_json(fields) AS VARCHAR) || chr(31)
                                  || coalesce(CAST(to_json(attributes) AS VARCHAR), '')) AS mid
            FROM (SELECT *, {fields} AS fields, {flags} AS flags, {invalid} AS invalid FROM typed WHERE {ok})"""
        )
        total = reader.count("SELECT count(*) FROM out")
        source_id, kind, at_text = _lit(source.source_id), _lit(spec.name), _lit(_utc_text(at))
        # A user id that would break the line's format is left out of the header (the record keeps it).
        safe_user_id = (
            f"CASE WHEN regexp_matches(coalesce(user_id, ''), {_lit(_UNSAFE)}) THEN '' ELSE coalesce(user_id, '') END"
        )
        line = f"""'A' || chr(9) || {source_id} || chr(9) || mid || chr(9) || 'record' || chr(9) || {kind} || chr(9)
            || {safe_user_id} || chr(9) || chr(9) || chr(9)
            || coalesce(time, '') || chr(9) || chr(9) || {at_text} || chr(9)
            || CAST(to_json(struct_pack(type := 'record', messageId := mid, kind := {kind}, key := key,
                                        fields := fields, attributes := attributes, flags := flags, invalid := invalid,
                                        "import" := struct_pack(id := {_lit(result.import_id)}, file := _file,
                                                                "row" := _row))) AS VARCHAR)
            || chr(10)"""
        for offset in range(0, total, CHUNK_ROWS):
            lines = reader.arrow(
                f"SELECT {line} AS line FROM out WHERE _n > {offset} AND _n <= {offset + CHUNK_ROWS} ORDER BY _n"
            )
            self.journal.write_sync(_concat(lines.column("line")))
            result.written += lines.num_rows
            self.progress("writing", result.written, total)
        result.message_ids = reader.arrow("SELECT DISTINCT mid FROM out").column("mid")

    def _verdicts(
        self,
        reader: FileReader,
        workers: values.Workers,
        name: str,
        key: str,
        function: Callable[[str], values.Verdict],
    ) -> str:
        """``function`` of each distinct non-NULL ``key`` (SQL over ``raw``) of a field, e.g. the library's check
        of an email; returns the JOIN that brings the verdicts in as ``_n_<name>``.

        The distinct values stay in the reader's DuckDB (which spills to disk) and go through Python in chunks of
        :data:`VERDICT_CHUNK`, so a file with tens of millions of distinct emails holds one chunk in memory.
        """
        verdicts, distinct = f"_verdicts_{name}", f"_distinct_{name}"
        reader.execute(
            f"CREATE OR REPLACE TABLE {distinct} AS SELECT raw, row_number() OVER () AS n "
            f"FROM (SELECT DISTINCT {key} AS raw FROM raw WHERE {key} IS NOT NULL) AS d"
        )
        reader.execute(f"CREATE OR REPLACE TABLE {verdicts} (raw VARCHAR, value VARCHAR, reason VARCHAR)")
        total = reader.count(f"SELECT count(*) FROM {distinct}")
        for offset in range(0, total, VERDICT_CHUNK):
            self.progress(f"checking {name}", offset, total)
            texts = (
                reader.arrow(f"SELECT raw FROM {distinct} WHERE n > {offset} AND n <= {offset + VERDICT_CHUNK}")
                .column("raw")
                .to_pylist()
            )
            checked = workers.map(function, texts)
            chunk = pa.table(
                {
                    "raw": pa.array(texts, pa.string()),
                    "value": pa.array([v for v, _ in checked], pa.string()),
                    "reason": pa.array([r for _, r in checked], pa.string()),
                }
            )
            reader.register("_verdict_chunk", chunk)
            reader.execute(f"INSERT INTO {verdicts} SELECT * FROM _verdict_chunk")
        reader.execute(f"DROP TABLE {distinct}")
        return f"LEFT JOIN {verdicts} AS _n_{name} ON _n_{name}.raw = {key}"

    @staticmethod
    def _map_of(specs: list[FieldSpec], prefix: str, only_where: str | None = None) -> str:
        """SQL for a JSON object {field: column value} over the fields whose value (or ``only_where``) is set."""
        if not specs:
            return "MAP {}::MAP(VARCHAR, VARCHAR)"
        entries = ", ".join(
            f"{{'k': {_lit(s.name)}, 'v': CASE WHEN {_col((only_where or prefix) + s.name)} IS NOT NULL "
            f"THEN {_col(prefix + s.name)} END}}"
            for s in specs
        )
        return f"map_from_entries(list_filter([{entries}], lambda e: e.v IS NOT NULL))"

    # -- events -----------------------------------------------------------------------------------------------
    def _events(
        self, reader: FileReader, source: Source, result: ImportResult, at: datetime, scrubber: Scrubber | None
    ) -> None:
        """Rows that are Segment messages: each checked exactly as collection checks one message."""
        columns = reader.columns
        picks = ", ".join(
            f"{_col(c)} := CASE WHEN json_valid({_col(c)}) AND json_type({_col(c)}) IN ('OBJECT', 'ARRAY') "
            f"THEN json({_col(c)}) ELSE to_json({_col(c)}) END"
            if c in ("properties", "traits", "context", "integrations")
            else f"{_col(c)} := {_col(c)}"
            for c in columns
        )
        reader.execute(
            "CREATE OR REPLACE TABLE out AS SELECT _file, _row, row_number() OVER (ORDER BY _file, _row) AS _n, "
            f"struct_pack({picks}) AS m FROM src ORDER BY _n"
        )
        total = reader.count("SELECT count(*) FROM out")
        result.rows = total + reader.count("SELECT count(*) FROM src_rejects")
        unread = "raw" if scrubber is None else _lit(WITHHELD.decode())
        rejects = [
            reader.arrow(
                f"SELECT _file AS file, _row AS row_number, column_name, reason, {unread} AS raw FROM src_rejects"
            )
        ]
        ids: list[str] = []
        req = messages.RequestInfo(
            source.source_id,
            at,
            _utc_text(at),
            source.limits.max_message_bytes,
            max_batch_items=CHUNK_ROWS,
            max_depth=source.limits.max_depth,
            scrubber=scrubber,
        )
        for offset in range(0, total, CHUNK_ROWS):
            # A message without a messageId gets one from its content, so importing the file again is idempotent.
            chunk = reader.arrow(
                "SELECT _file, _row, CAST(CASE WHEN json_extract_string(to_json(m), '$.messageId') IS NULL "
                "THEN json_merge_patch(to_json(m), "
                "                      json_object('messageId', 'imp_' || md5(CAST(to_json(m) AS VARCHAR)))) "
                "ELSE to_json(m) END AS VARCHAR) AS doc "
                f"FROM out WHERE _n > {offset} AND _n <= {offset + CHUNK_ROWS} ORDER BY _n"
            )
            docs = chunk.column("doc").to_pylist()
            body = b'{"batch":[' + b",".join(d.encode() for d in docs) + b"]}"
            outcome = messages.collect_batch(messages.read_body(body, batch=True), req)
            accepted = [line for line in outcome.lines if not line.startswith(b"R\t")]
            if accepted:
                self.journal.write_sync(b"".join(accepted))
            result.written += len(accepted)
            ids.extend(line.split(b"\t", 3)[2].decode() or _doc_message_id(line) for line in accepted)
            if outcome.errors:
                files, rows = chunk.column("_file").to_pylist(), chunk.column("_row").to_pylist()
                idx = [e.index for e in outcome.errors if e.index is not None]
                rejects.append(
                    pa.table(
                        {
                            "file": pa.array([files[i] for i in idx], pa.string()),
                            "row_number": pa.array([rows[i] for i in idx], pa.int64()),
                            "column_name": pa.array([None] * len(idx), pa.string()),
                            "reason": pa.array([f"{e.code}: {e.message}" for e in outcome.errors], pa.string()),
                            "raw": pa.array([_kept_doc(docs[i], scrubber) for i in idx], pa.string()),
                        }
                    )
                )
            self.progress("writing", offset + len(docs), total)
        result.rejects = pa.concat_tables([t.cast(rejects[0].schema) for t in rejects])
        result.rejected = result.rejects.num_rows
        result.message_ids = pa.chunked_array([pa.array(sorted(set(ids)), pa.string())])


def _doc_message_id(line: bytes) -> str:
    """The messageId of a line written with its header ids left empty (kind ``X``): read it from the message."""
    doc = msgspec.json.decode(line.rsplit(b"\t", 1)[1])
    return str(doc["messageId"])


def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _concat(lines: pa.ChunkedArray) -> bytes:
    """The lines of a string column as one buffer (each line already ends with a newline)."""
    if lines.null_count:
        raise AssertionError("a journal line came out NULL")  # a bug in the SQL above, not bad input
    return "".join(lines.to_pylist()).encode()


def _kept_doc(doc: str, scrubber: Scrubber | None) -> str:
    return doc if scrubber is None else scrubber.payload(doc.encode()).decode()


def _dropped_fields(spec: KindSpec, mapping: Mapping, scrubber: Scrubber) -> list[str]:
    """The mapped fields the PII policy drops (their columns are not read; a required field cannot be dropped)."""
    dropped = [name for name in mapping.fields if scrubber.drops_field("fields", name)]
    required = [name for name in dropped if name in {s.name for s in spec.fields if s.required}]
    if required:
        raise Rejected(
            f"the PII policy drops {required}, which {spec.name} records require", code="pii_drops_required_field"
        )
    return dropped


def _scrubbed_attributes(reader: FileReader, rest: list[str], scrubber: Scrubber) -> dict[str, str]:
    """Each attribute column the PII policy keeps, with the SQL that reads it without the values it drops.

    A column named as a dropped class goes entirely; one named as another class stays whole; in the others,
    each distinct value long enough to be of a dropped class is classified once.
    """
    kept: dict[str, str] = {}
    for column in rest:
        if scrubber.drops_field("attributes", column):
            continue
        if not scrubber.judges_values("attributes", column):
            kept[column] = _col(column)
            continue
        distinct = reader.arrow(
            f"SELECT DISTINCT CAST({_col(column)} AS VARCHAR) AS v FROM src "
            f"WHERE {_col(column)} IS NOT NULL "
            f"AND typeof({_col(column)}) IN ('VARCHAR', 'BIGINT', 'INTEGER', 'HUGEINT') "
            f"AND length(CAST({_col(column)} AS VARCHAR)) >= {scrubber.min_value_length}"
        )
        doomed = [v for v in distinct.column("v").to_pylist() if scrubber.drops_value("attributes", column, v)]
        if not doomed:
            kept[column] = _col(column)
            continue
        listed = ", ".join(_lit(v) for v in doomed)
        kept[column] = f"CASE WHEN CAST({_col(column)} AS VARCHAR) IN ({listed}) THEN NULL ELSE {_col(column)} END"
    return kept


def decode_mapping(text: bytes | str) -> Mapping:
    """A mapping from YAML or JSON text (JSON is YAML); :class:`Rejected` with the reason when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Rejected(f"the mapping is not valid YAML or JSON: {exc}", code="invalid_mapping") from exc
    if not isinstance(data, dict):
        raise Rejected("the mapping must be an object with a 'fields' key", code="invalid_mapping")
    return parse_document(Mapping, data, "mapping", "invalid_mapping")
