"""Training's own u probabilities: the exact level's share counted from the values' frequencies, the other levels
from random pairs, checked against every pair of small random tables; the Levenshtein levels with their cheap
necessary conditions agree with the plain distance on every engine."""

from __future__ import annotations

import itertools
import random

import duckdb
import pyarrow as pa
import pytest
from splink import DuckDBAPI, SettingsCreator

from opencdp.identity.score import UNOBSERVED_U
from opencdp.identity.train import agreement, comparison, u_probabilities, within_edits
from opencdp.model.matching import FEATURES
from opencdp.store.engine import Engine
from tests.identity.scenario import typo

FEATURE = {f.name: f for f in FEATURES}


@pytest.mark.parametrize("seed", range(5))
def test_agreement_is_the_share_of_agreeing_pairs_among_filled_ones(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.choice([None, "a", "b", "c", "dd", f"x{rng.randint(0, 30)}"]) for _ in range(rng.randint(2, 60))]
    filled = [(a, b) for a, b in itertools.combinations(values, 2) if a is not None and b is not None]
    got = agreement(pa.chunked_array([values[:7], values[7:]], pa.string()))
    if not filled:
        assert got is None
    else:
        assert got == pytest.approx(sum(a == b for a, b in filled) / len(filled), abs=1e-12)


def test_agreement_needs_two_filled_values() -> None:
    assert agreement(pa.chunked_array([["a", None, None]], pa.string())) is None
    assert agreement(pa.chunked_array([["a", "b"]], pa.string())) == 0.0


def _records(rng: random.Random, n: int) -> pa.Table:
    """Names from a small pool, now and then typo'd; emails mostly distinct, some typo'd; some values missing."""
    firsts = ["martha", "john", "jon", "johanna", "peter", "petra", "anne", "ann", "li", "steven", "stephen"]
    rows = []
    for i in range(n):
        first = rng.choice(firsts)
        email = f"{first}.{rng.randint(0, n // 3)}@example.org"
        rows.append({
            "match_id": i * 3 + 7,  # not contiguous: pairs are drawn by position, not by id
            "first_name": typo(rng, first) if rng.random() < 0.2 else first,
            "email": None if rng.random() < 0.1 else (typo(rng, email) if rng.random() < 0.2 else email),
            "city": rng.choice(["leeds", "york", "hull", None]),
        })  # fmt: skip
    return pa.Table.from_pylist(
        rows, pa.schema([("match_id", pa.int64())] + [(c, pa.string()) for c in rows[0] if c != "match_id"])
    )


def _levels_over_all_pairs(records: pa.Table, levels: list[dict[str, object]], column: str) -> list[float]:
    """Each non-null level's share of all pairs with both values filled, every pair compared (DuckDB)."""
    con = duckdb.connect()
    con.register("records", records)
    conditions = [str(lv["sql_condition"]) for lv in levels]
    level = " ".join(f"WHEN {c} THEN {k}" for k, c in enumerate(conditions) if c != "ELSE")
    rows = con.execute(
        f"""SELECT CASE {level} ELSE {len(conditions) - 1} END AS k, count(*) FROM (
            SELECT l.{column} AS "{column}_l", r.{column} AS "{column}_r" FROM records AS l
            JOIN records AS r ON l.match_id < r.match_id
            WHERE l.{column} IS NOT NULL AND r.{column} IS NOT NULL) AS p GROUP BY k"""
    ).fetchall()
    counts = dict(rows)
    total = sum(counts.values())
    return [counts.get(k, 0) / total for k in range(len(conditions))]


@pytest.mark.parametrize("seed", range(3))
def test_u_probabilities_are_each_levels_share_of_all_pairs(seed: int) -> None:
    rng = random.Random(seed)
    records = _records(rng, 400)
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="match_id",
        comparisons=[comparison(FEATURE[c]) for c in ("first_name", "email", "city")],
    )
    model = settings.create_settings_dict("duckdb")
    db = DuckDBAPI()
    table = db.register(records)
    u_probabilities(db, table.physical_name, records, model["comparisons"])
    for c in model["comparisons"]:
        column = c["output_column_name"]
        levels = [lv for lv in c["comparison_levels"] if not lv.get("is_null_level")]
        truth = _levels_over_all_pairs(records, levels, column)
        got = [float(lv["u_probability"]) for lv in levels]
        assert got[0] == pytest.approx(truth[0], abs=1e-12)  # exact agreement: counted, not sampled
        for k, (g, t) in enumerate(zip(got, truth, strict=True)):
            if t == 0:
                assert g == UNOBSERVED_U, (column, k)
            else:  # sampled: 100k random pairs of 400 records, a share within a few standard errors
                assert g == pytest.approx(t, abs=0.01, rel=0.1), (column, k, g, t)
        observed = [g for g, t in zip(got, truth, strict=True) if t]
        assert sum(observed) == pytest.approx(1.0, abs=1e-9)


def test_u_probabilities_refuse_a_comparison_not_led_by_exact_agreement() -> None:
    records = _records(random.Random(1), 50)
    doc = {"output_column_name": "city", "comparison_levels": [
        {"sql_condition": '"city_l" IS NULL OR "city_r" IS NULL', "is_null_level": True},
        {"sql_condition": 'levenshtein("city_l", "city_r") <= 1'}, {"sql_condition": "ELSE"}]}  # fmt: skip
    db = DuckDBAPI()
    with pytest.raises(ValueError, match="exact agreement"):
        u_probabilities(db, db.register(records).physical_name, records, [doc])


def _edited(rng: random.Random, text: str, edits: int, alphabet: str) -> str:
    """``text`` with ``edits`` random insertions, deletions and substitutions anywhere (ends included)."""
    chars = list(text)
    for _ in range(edits):
        i = rng.randint(0, len(chars))
        kind = rng.choice(["insert", "delete", "substitute"]) if i < len(chars) else "insert"
        if kind == "insert":
            chars.insert(i, rng.choice(alphabet))
        elif kind == "delete":
            del chars[i]
        else:
            chars[i] = rng.choice(alphabet)
    return "".join(chars)


def test_levenshtein_levels_rule_out_cheaply_with_the_same_result_on_every_engine(engine: Engine) -> None:
    """The length and pieces conditions never rule out a pair within the distance: short words (empty
    pieces), unicode, and long values (emails) with up to four edits anywhere, checked against DuckDB's plain
    ``levenshtein`` on its own connection."""
    rng = random.Random(11)
    alphabet = "abcdeé日 "
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(120)]
    pairs = [(rng.choice(words), rng.choice(words)) for _ in range(400)]
    pairs += [(w, typo(rng, w)) for w in words if len(w) > 2] + [("", ""), ("ab", "abcd"), ("é", "e")]
    emails = [f"{''.join(rng.choice('abcdefg.') for _ in range(rng.randint(3, 20)))}@example.com" for _ in range(150)]
    pairs += [(m, _edited(rng, m, rng.randint(0, 4), "abcdefg.@x")) for m in emails]
    pairs += [(rng.choice(emails), rng.choice(emails)) for _ in range(150)]
    engine.execute('CREATE TABLE _lev_pairs (i INTEGER, "s_l" VARCHAR, "s_r" VARCHAR)')
    for i, (a, b) in enumerate(pairs):
        engine.execute("INSERT INTO _lev_pairs VALUES (?, ?, ?)", (i, a, b))
    reference = duckdb.connect()
    distances = [reference.execute("SELECT levenshtein(?, ?)", [a, b]).fetchone() for a, b in pairs]
    for k in (1, 2, 3):
        condition = within_edits("s", k).get_comparison_level("duckdb").sql_condition
        got = [bool(r[0]) for r in engine.fetch_all(f"SELECT {condition} FROM _lev_pairs ORDER BY i")]
        assert got == [d is not None and d[0] <= k for d in distances], k
        assert 0 < sum(got) < len(got)
        long_close = sum(g for g, (a, _) in zip(got, pairs, strict=True) if "@" in a)
        assert long_close > 20, k  # emails within k edits are among them, not only short words
