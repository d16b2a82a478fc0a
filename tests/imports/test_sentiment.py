"""A ticket's sentiment: VADER's compound score of its subject and text, computed once per distinct text at import."""

from __future__ import annotations

from pathlib import Path

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from opencdp.api.runtime import Runtime
from opencdp.collect import values
from opencdp.collect.imports import resolve_mapping
from opencdp.errors import Rejected
from opencdp.model.records import KINDS, FieldMapping, Mapping, infer_mapping
from tests.imports.test_import_runs import records, write_csv

HAPPY = "Thank you so much, the replacement arrived quickly and works perfectly, great service!"
ANGRY = "This is the worst purchase ever, it broke after one day and nobody answers my emails. Terrible."
NEUTRAL = "My new delivery address is 12 High Street."


def score(text: str) -> float:
    verdict, reason = values.sentiment(text)
    assert verdict is not None and reason is None
    return float(verdict)


def test_texts_whose_sentiment_is_not_in_doubt() -> None:
    assert score(HAPPY) > 0.5
    assert score(ANGRY) < -0.5
    assert abs(score(NEUTRAL)) < 0.3
    # The library's own compound score, rounded to 4 places, as the text of a decimal field (as amounts are).
    assert score(ANGRY) == round(SentimentIntensityAnalyzer().polarity_scores(ANGRY)["compound"], 4)
    assert values.sentiment(NEUTRAL) == ("0", None) and values.sentiment("Good.") == ("0.4404", None)


def test_scores_in_worker_processes_equal_the_scores_in_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"{(HAPPY, ANGRY, NEUTRAL)[i % 3]} Order {i}." for i in range(600)]
    serial = values.normalise_all(values.sentiment, texts)
    monkeypatch.setattr(values, "PARALLEL_FROM", 100)
    monkeypatch.setattr(values, "_CHUNK", 150)
    assert values.normalise_all(values.sentiment, texts) == serial


def test_sentiment_is_computed_never_read_from_a_column() -> None:
    tickets = KINDS["tickets"]
    assert tickets.field("sentiment").computed_from == ("subject", "text")
    assert "sentiment" not in infer_mapping(tickets, ["id", "Text", "Sentiment"]).fields
    with pytest.raises(Rejected) as info:
        resolve_mapping(tickets, ["id", "Score"], Mapping(fields={"sentiment": FieldMapping(column="Score")}))
    assert info.value.code == "invalid_mapping" and "'sentiment'" in info.value.message


def test_each_ticket_is_scored_on_import_and_the_record_holds_the_score(runtime: Runtime, tmp_path: Path) -> None:
    rows = [
        ["T1", "ann@example.com", "", HAPPY, "0.99"],
        ["T2", "bob@example.com", "Complaint", ANGRY, "0.99"],
        ["T3", "cy@example.com", "", NEUTRAL, ""],
        ["T4", "dee@example.com", "", "", "0.5"],  # no subject, no text: no score
        ["T5", "eve@example.com", "Complaint", ANGRY, ""],  # T2's subject and text again
        ["T6", "fay@example.com", "Thank you!", "  ", ""],  # a subject alone is scored
        ["T7", "gus@example.com", "", ANGRY, ""],  # T2's text without its subject: another text
    ]
    path = write_csv(tmp_path / "tickets.csv", ["id", "email", "subject", "text", "sentiment"], rows)
    phases: dict[str, int] = {}
    result = runtime.import_files(
        "crm", "tickets", [path], progress=lambda phase, _done, total: phases.__setitem__(phase, total)
    )
    assert (result.accepted, result.rejected, result.flagged) == (7, 0, {})
    assert phases["checking sentiment"] == 5  # each distinct subject and text scored once (T2 and T5 are one)

    stored = records(runtime, "tickets")
    got = {key: r["fields"]["sentiment"] for key, r in stored.items()}
    assert float(got["T1"]) > 0.5 and float(got["T2"]) < -0.5 and abs(float(got["T3"])) < 0.3
    assert got["T4"] is None and "sentiment" in stored["T4"]["fields"]
    assert got["T5"] == got["T2"] == values.sentiment(f"Complaint. {ANGRY}")[0]
    assert got["T6"] == values.sentiment("Thank you!")[0] and float(got["T6"]) > 0
    assert got["T7"] == values.sentiment(ANGRY)[0]
    # The file's own "sentiment" column is not the score: it stays one of the record's attributes.
    assert stored["T1"]["attributes"] == {"sentiment": "0.99"} and got["T1"] != "0.99"

    # As the profile traits read it: `$.fields.sentiment` of the stored record, on either engine.
    from_sql = runtime.engine.fetch_all(
        "SELECT record_key, json_extract_string(fields, '$.sentiment') FROM records WHERE kind = 'tickets'"
    )
    assert dict(from_sql) == got
    assert runtime.import_files("crm", "tickets", [path]).duplicates == 7  # the same scores: still idempotent


def test_only_the_first_characters_of_a_long_text_are_scored(runtime: Runtime, tmp_path: Path) -> None:
    """VADER's time grows with the square of a text's length: a long quoted thread below is not scored."""
    text = HAPPY + " Order 12345." * 200 + " " + ANGRY * 20
    assert len(text) > values.SENTIMENT_CHARS > len(HAPPY) + 13 * 100
    path = write_csv(tmp_path / "tickets.csv", ["id", "text"], [["T1", text]])
    assert runtime.import_files("crm", "tickets", [path]).accepted == 1
    stored = records(runtime, "tickets")["T1"]["fields"]["sentiment"]
    assert stored == values.sentiment(text[: values.SENTIMENT_CHARS])[0] and float(stored) > 0.5
    assert score(text) < 0  # what the whole text would have scored
