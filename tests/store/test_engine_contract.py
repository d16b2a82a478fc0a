"""The engine contract, run against embedded DuckDB and the real PostgreSQL server alike."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from opencdp.config import Settings
from opencdp.errors import EngineError, Rejected
from opencdp.store import Engine, open_engine
from opencdp.store.duckdb_engine import DuckDBEngine
from opencdp.store.query import check_read_only, run_read_only


def test_execute_and_fetch(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (id BIGINT, name VARCHAR, doc JSON, ts TIMESTAMPTZ)")
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    engine.execute("INSERT INTO t VALUES (?, ?, ?, ?)", (1, "ä'x", '{"a": [1, 2]}', at))
    row = engine.fetch_one("SELECT id, name, doc, ts FROM t")
    assert row is not None
    assert row[0] == 1 and row[1] == "ä'x"
    assert json.loads(row[2]) == {"a": [1, 2]}  # JSON comes back as text on every engine
    assert row[3] == at


def test_a_percent_sign_in_a_literal_is_a_percent_sign(engine: Engine) -> None:
    """psycopg reads ``%`` as a placeholder in statements with parameters: literals must reach it escaped."""
    assert engine.fetch_one("SELECT '100%' LIKE '1%', strpos('a%b', '%'), '%s', ?", ("%",)) == (True, 2, "%s", "%")
    assert engine.fetch_one("SELECT '%d%%'") == ("%d%%",)
    engine.execute("CREATE TABLE pct (v VARCHAR)")
    engine.execute("INSERT INTO pct VALUES ('50%'), (?)", ("%",))
    assert engine.fetch_all("SELECT v FROM pct WHERE v LIKE '%\\%%' ESCAPE '\\' ORDER BY v") == [("%",), ("50%",)]


def test_execute_changed_counts_the_rows_a_statement_changed(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (id BIGINT, label BIGINT)")
    assert engine.execute_changed("INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)") == 3
    assert (
        engine.execute_changed("UPDATE t SET label = s.label FROM (SELECT 5 AS label) AS s WHERE t.label > ?", (15,))
        == 2
    )
    assert engine.execute_changed("UPDATE t SET label = 0 WHERE id > 10") == 0
    with engine.transaction():
        assert engine.execute_changed("DELETE FROM t WHERE label = 5") == 2
    assert engine.fetch_all("SELECT id, label FROM t") == [(1, 10)]


def test_scratch_tables_are_empty_each_time_and_survive_a_rollback(engine: Engine) -> None:
    engine.scratch({"_t_work": "id BIGINT"})
    engine.execute("INSERT INTO _t_work VALUES (1)")
    engine.scratch({"_t_work": "id BIGINT"})
    assert engine.fetch_all("SELECT count(*) FROM _t_work") == [(0,)]
    with pytest.raises(RuntimeError), engine.transaction():
        engine.scratch({"_t_rolled": "id BIGINT"})
        raise RuntimeError("boom")
    engine.scratch({"_t_rolled": "id BIGINT"})  # the rollback took the table along: it is created again
    assert engine.fetch_all("SELECT count(*) FROM _t_rolled") == [(0,)]


def test_an_emptied_duckdb_scratch_table_is_planned_at_its_new_size(tmp_path: Path) -> None:
    """DuckDB counts deleted rows in a table's size estimate: a working table that held a backfill's batch, then
    emptied by DELETE, would be planned as a million rows in every later micro-batch (the build side of a join
    chosen wrongly: the profiles stage's activity copy took 120 ms instead of 20)."""
    engine = DuckDBEngine(tmp_path / "e.duckdb")
    engine.scratch({"_t_big": "id BIGINT"})
    engine.execute("INSERT INTO _t_big SELECT i FROM range(100000) AS t(i)")
    engine.scratch({"_t_big": "id BIGINT"})
    engine.execute("INSERT INTO _t_big VALUES (1), (2)")
    assert engine.fetch_one("SELECT estimated_size FROM duckdb_tables() WHERE table_name = '_t_big'") == (2,)
    engine.close()


def test_json_extraction_is_portable(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (doc JSON)")
    engine.execute("INSERT INTO t VALUES (?)", ('{"messageId": "m1", "properties": {"p": 1}, "n": null}',))
    row = engine.fetch_one(
        "SELECT json_extract_string(doc, '$.messageId'), json_extract(doc, '$.properties'), "
        "json_extract_string(doc, '$.missing'), json_extract_string(doc, '$.n') FROM t"
    )
    assert row is not None
    assert row[0] == "m1"
    assert json.loads(row[1]) == {"p": 1}
    assert row[2] is None and row[3] is None


def test_append_arrow_keeps_nulls_empty_strings_and_quotes(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (id BIGINT, s VARCHAR)")
    rows = pa.table({"id": pa.array([1, 2, 3, 4], pa.int64()), "s": ["", None, 'a "quoted", \n multi-line', "tab\tx"]})
    assert engine.append("t", rows) == 4
    got = engine.fetch_all("SELECT id, s FROM t ORDER BY id")
    assert got == [(1, ""), (2, None), (3, 'a "quoted", \n multi-line'), (4, "tab\tx")]


def test_transaction_rolls_back_on_error(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (id BIGINT)")
    with pytest.raises(RuntimeError), engine.transaction():
        engine.execute("INSERT INTO t VALUES (1)")
        engine.append("t", pa.table({"id": pa.array([2], pa.int64())}))
        raise RuntimeError("boom")
    assert engine.fetch_all("SELECT * FROM t") == []
    with engine.transaction(), engine.transaction():  # nesting joins the outer transaction
        engine.execute("INSERT INTO t VALUES (3)")
    assert engine.fetch_all("SELECT * FROM t") == [(3,)]


def test_engine_errors_carry_the_sql(engine: Engine) -> None:
    with pytest.raises(EngineError) as info:
        engine.execute("SELECT * FROM no_such_table")
    assert "no_such_table" in info.value.sql
    assert info.value.__cause__ is not None


def test_upsert_on_conflict(engine: Engine) -> None:
    engine.execute("CREATE TABLE kv (k VARCHAR PRIMARY KEY, v BIGINT)")
    for v in (1, 2):
        engine.execute("INSERT INTO kv VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", ("a", v))
    assert engine.fetch_all("SELECT k, v FROM kv") == [("a", 2)]


def test_fetch_arrow(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (id BIGINT, s VARCHAR)")
    engine.execute("INSERT INTO t VALUES (1, 'a'), (2, NULL)")
    table = engine.fetch_arrow("SELECT id, s FROM t ORDER BY id")
    assert table.column_names == ["id", "s"]
    assert table.to_pylist() == [{"id": 1, "s": "a"}, {"id": 2, "s": None}]


def test_migrations_create_the_documented_surface(engine: Engine) -> None:
    cols = engine.fetch_arrow("SELECT * FROM events LIMIT 0").column_names
    for required in (
        "message_id",
        "source_id",
        "type",
        "event",
        "user_id",
        "anonymous_id",
        "timestamp",
        "received_at",
        "properties",
        "traits",
        "context",
    ):
        assert required in cols


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM sources",
        "DROP TABLE raw_events",
        "INSERT INTO sources VALUES (1)",
        "SELECT 1; DROP TABLE x",
        "UPDATE sources SET name = 'x'",
        "CREATE TABLE x (a INT)",
        "COPY raw_events TO '/tmp/x.csv'",
        "ATTACH 'x.db'",
    ],
)
def test_read_only_queries_refuse_writes(engine: Engine, sql: str) -> None:
    with pytest.raises(Rejected):
        run_read_only(engine, sql)
    assert engine.fetch_one("SELECT count(*) FROM raw_events") == (0,)


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("SELECT * FROM read_text('{secret}')", "read_text"),
        ("SELECT * FROM read_csv('{secret}', header = false)", "read_csv"),
        ("SELECT * FROM '{secret}'", "relation"),
        ("SELECT count(*) FROM events AS e JOIN glob('{directory}/*') AS g ON TRUE", "glob"),
        ("SELECT * FROM (SELECT * FROM query('SELECT 1'))", "query"),
        ("SELECT pg_read_file('{secret}')", "pg_read_file"),
        ("SELECT getenv('HOME')", "getenv"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("SELECT value FROM _cdp_secrets", "_cdp_secrets"),
        ("SELECT config FROM destinations", "destinations"),
        ("SELECT rolpassword FROM pg_authid", "pg_authid"),
        ("SELECT * FROM other_schema.events", "other_schema"),
    ],
)
def test_read_only_queries_read_nothing_outside_the_data(engine: Engine, tmp_path: Path, sql: str, named: str) -> None:
    """Files, the environment, settings, internal tables with secrets, catalogs and other schemas are refused
    before anything runs, on both engines (DuckDB reads any file it is pointed at; the test's PostgreSQL role is
    a superuser, who may read files too)."""
    secret = tmp_path / "admin_token"
    secret.write_text("s3cret-token\n")
    with pytest.raises(Rejected) as refused:
        run_read_only(engine, sql.format(secret=secret, directory=tmp_path))
    assert refused.value.code == "outside_the_data"
    assert named in refused.value.message and "s3cret" not in refused.value.message


def test_read_only_query_runs_selects(engine: Engine) -> None:
    table = run_read_only(engine, "WITH x AS (SELECT 1 AS a) SELECT a FROM x UNION ALL SELECT 2")
    assert sorted(table.column("a").to_pylist()) == [1, 2]
    assert check_read_only("SELECT count(*) FROM events") == "SELECT count(*) FROM events"
    series = run_read_only(engine, "SELECT count(*) AS n FROM generate_series(1, 3) AS g(i)")  # still allowed
    assert series.column("n").to_pylist() == [3]
    columns = run_read_only(engine, "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'events'")
    assert columns.column("n").to_pylist()[0] > 5


def test_copy_tsv_reads_the_journal_format(engine: Engine, tmp_path: Path) -> None:
    """The engines' bulk readers take tabs as separators only: quotes, backslashes and JSON escapes stay."""
    engine.execute("CREATE TABLE t (k VARCHAR, n VARCHAR, ts TIMESTAMPTZ, doc VARCHAR)")
    docs = ['{"q":"say \\"hi\\"","bs":"a\\\\b","tab":"x\\ty","nl":"1\\n2","u":"Grüße \\u00e9"}', "{}", '"', "\\N"]
    path = tmp_path / "rows.tsv"
    path.write_bytes(
        "".join(f"A\t{'' if i else 'x'}\t2024-05-01T12:00:00.123Z\t{d}\n" for i, d in enumerate(docs)).encode()
    )
    engine.copy_tsv("t", path, [("k", "VARCHAR"), ("n", "VARCHAR"), ("ts", "TIMESTAMPTZ"), ("doc", "VARCHAR")])
    rows = engine.fetch_all("SELECT k, n, ts, doc FROM t ORDER BY doc")
    assert sorted(r[3] for r in rows) == sorted(docs)
    assert {r[1] for r in rows} == {"x", None}  # an empty field is NULL
    assert {r[2] for r in rows} == {datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)}
    assert json.loads(docs[0])["q"] == 'say "hi"'


def test_string_similarity_is_the_same_on_every_engine(engine: Engine) -> None:
    """Match scoring uses DuckDB's jaro_winkler_similarity and levenshtein; PostgreSQL runs them as a helper
    function and the fuzzystrmatch extension: the same numbers, checked against DuckDB itself."""
    import duckdb

    rng = random.Random(3)
    words = ["".join(rng.choice("abcde") for _ in range(rng.randint(0, 9))) for _ in range(300)]
    pairs = [(rng.choice(words), rng.choice(words)) for _ in range(300)] + [("martha", "marhta"), ("", "")]
    reference = duckdb.connect()
    for a, b in pairs:
        expected = reference.execute("SELECT jaro_winkler_similarity(?, ?), levenshtein(?, ?)", [a, b, a, b]).fetchone()
        got = engine.fetch_one("SELECT jaro_winkler_similarity(?, ?), levenshtein(?, ?)", (a, b, a, b))
        assert expected is not None and got is not None
        assert abs(got[0] - expected[0]) < 1e-12 and got[1] == expected[1], (a, b)


def test_a_checkpoint_waits_for_its_threshold_and_keeps_what_others_are_writing(engine: Engine) -> None:
    engine.execute("CREATE TABLE t (id BIGINT)")
    engine.execute("INSERT INTO t SELECT * FROM range(50000)")
    if not isinstance(engine, DuckDBEngine):  # PostgreSQL checkpoints on its own
        assert engine.checkpoint(0) is False
        return
    wal = Path(engine.path + ".wal")
    assert wal.stat().st_size > 0
    assert engine.checkpoint(1 << 40) is False and wal.stat().st_size > 0  # below the threshold: nothing
    done, opened = threading.Event(), threading.Event()

    def writer() -> None:  # another connection in the middle of a transaction
        with engine.transaction():
            engine.execute("INSERT INTO t VALUES (-1)")
            opened.set()
            done.wait(10)

    other = threading.Thread(target=writer)
    other.start()
    try:
        assert opened.wait(10)
        engine.checkpoint(0)  # runs (what is committed) or is skipped: either way the other commits intact
    finally:
        done.set()
        other.join()
    assert engine.checkpoint(0) is True
    assert not wal.exists() or wal.stat().st_size == 0
    assert engine.fetch_all("SELECT count(*), min(id) FROM t") == [(50001, -1)]


def _number_rows(engines: list[Engine], serial: str | None, rounds: int = 8) -> list[int]:
    """Each engine (one thread each) numbers ``rounds`` rows as the stages do, ``max(n) + 1``, with a pause
    between reading the maximum and writing (where another writer can read the same maximum)."""
    errors: list[BaseException] = []

    def writer(e: Engine) -> None:
        try:
            for _ in range(rounds):
                with e.transaction(serial=serial):
                    top = e.fetch_one("SELECT coalesce(max(n), 0) FROM numbered")
                    time.sleep(0.01)
                    e.execute("INSERT INTO numbered VALUES (?)", (int(top[0]) + 1 if top else 1,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return [int(r[0]) for r in engines[0].fetch_all("SELECT n FROM numbered ORDER BY n")]


def test_writers_of_a_serial_stream_take_turns_and_never_share_a_number(engine: Engine) -> None:
    engine.execute("CREATE TABLE numbered (n BIGINT)")
    unserialised = _number_rows([engine, engine], None)
    assert len(set(unserialised)) < len(unserialised)  # the hazard is real: both read the same maximum
    engine.execute("DELETE FROM numbered")
    assert _number_rows([engine, engine], "numbered") == list(range(1, 17))


@pytest.mark.parametrize("engine_name", ["postgres"])  # one process holds an embedded DuckDB file
def test_on_postgresql_the_turn_holds_across_processes(settings: Settings) -> None:
    first, second = open_engine(settings), open_engine(settings)  # two engines: nothing shared in this process
    try:
        first.execute("CREATE TABLE numbered (n BIGINT)")
        assert _number_rows([first, second], "numbered") == list(range(1, 17))
    finally:
        first.close()
        second.close()


def test_the_turn_is_taken_by_the_outermost_transaction(engine: Engine) -> None:
    with engine.transaction(serial="a"), engine.transaction(serial="a"):  # joining one's own turn is fine
        engine.execute("SELECT 1")
    with pytest.raises(RuntimeError, match="outermost"), engine.transaction(), engine.transaction(serial="a"):
        pass


def test_a_refused_turn_leaves_no_transaction_open(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(conn: object, serial: str) -> None:
        raise OSError("the lock could not be taken")

    monkeypatch.setattr(engine, "_serialize", refuse)
    with pytest.raises(EngineError, match="the turn on numbered"), engine.transaction(serial="numbered"):
        pass
    monkeypatch.undo()
    with engine.transaction(serial="numbered"):  # the connection is usable, and so is the turn
        engine.execute("CREATE TABLE after_refusal (n BIGINT)")
    assert engine.fetch_one("SELECT count(*) FROM after_refusal") == (0,)
