"""Reading import files with DuckDB in memory: every row numbered, unreadable rows kept as rejects."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencdp.errors import Rejected
from opencdp.store.files import FileReader


@pytest.fixture
def reader() -> FileReader:
    return FileReader()


def rows(reader: FileReader) -> list[dict[str, object]]:
    return reader.arrow("SELECT * FROM src ORDER BY _file, _row").to_pylist()


def test_csv_rows_are_text_and_numbered_and_ragged_rows_are_rejects(reader: FileReader, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,name,amount\n1,Ann,3.50\n2,Bob\n3,"Cy, Jr.",x\n4,Di,4,extra\n5,Ed,007\n')
    assert reader.load([path]) == ["id", "name", "amount"]
    assert [(r["_row"], r["id"], r["name"], r["amount"]) for r in rows(reader)] == [
        (1, "1", "Ann", "3.50"),  # as written: no type guessing at read time
        (3, "3", "Cy, Jr.", "x"),
        (5, "5", "Ed", "007"),
    ]
    rejects = reader.arrow("SELECT _row, reason, raw FROM src_rejects ORDER BY _row").to_pylist()
    assert [(r["_row"], r["raw"]) for r in rejects] == [(2, "2,Bob"), (4, "4,Di,4,extra")]
    assert "MISSING COLUMNS" in rejects[0]["reason"] and "TOO MANY COLUMNS" in rejects[1]["reason"]


def test_semicolon_delimited_csv_is_sniffed(reader: FileReader, tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("id;email\n1;a@example.com\n2;b@example.com\n")
    assert reader.load([path]) == ["id", "email"]
    assert [r["email"] for r in rows(reader)] == ["a@example.com", "b@example.com"]


def test_json_lines_with_a_malformed_line(reader: FileReader, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"id": 1, "props": {"a": [1, 2]}}\nnot json\n[1, 2]\n{"id": "x", "extra": true}\n')
    assert sorted(reader.load([path])) == ["extra", "id", "props"]
    got = rows(reader)
    assert [(r["_row"], r["id"], r["props"], r["extra"]) for r in got] == [
        (1, "1", '{"a":[1,2]}', None),
        (4, "x", None, "true"),
    ]
    assert reader.arrow("SELECT _row FROM src_rejects ORDER BY _row").column("_row").to_pylist() == [2, 3]


def test_parquet_keeps_row_numbers_and_turns_nested_values_into_json(reader: FileReader, tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [10, 20], "items": [[{"sku": "a"}], []], "price": [1.5, None]}), path)
    reader.load([path])
    assert [(r["_row"], r["id"], r["items"], r["price"]) for r in rows(reader)] == [
        (1, "10", '[{"sku":"a"}]', "1.5"),
        (2, "20", "[]", None),
    ]


def test_several_files_are_one_table(reader: FileReader, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,A\n")
    (tmp_path / "b.csv").write_text("name,id\nB,2\n")
    reader.load([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert [(r["_file"], r["_row"], r["id"], r["name"]) for r in rows(reader)] == [
        ("a.csv", 1, "1", "A"),
        ("b.csv", 1, "2", "B"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.csv", b"", "empty_file"),
        ("data.xlsx", b"PK\x03\x04", "unsupported_file_type"),
        ("fake.parquet", b"id,name\n1,A\n", "unreadable_file"),  # not what its extension says
        ("nothing.jsonl", b"garbage\n", "empty_file"),
    ],
)
def test_files_that_cannot_be_imported(
    reader: FileReader, tmp_path: Path, name: str, content: bytes, code: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(Rejected) as info:
        reader.load([path])
    assert info.value.code == code
    assert name in info.value.message


def test_a_missing_file(reader: FileReader, tmp_path: Path) -> None:
    with pytest.raises(Rejected) as info:
        reader.load([tmp_path / "nope.csv"])
    assert info.value.code == "file_not_found"
