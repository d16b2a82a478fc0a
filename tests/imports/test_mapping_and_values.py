"""Mappings (inferred and given) and the value normalisers, as pure functions."""

from __future__ import annotations

import importlib
from unittest import mock

import pytest
from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_domain_name
from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp.collect import values
from opencdp.collect.imports import decode_mapping, resolve_mapping
from opencdp.errors import Rejected
from opencdp.model.records import KINDS, FieldMapping, Mapping, column_key, infer_mapping

_email_validator_module = importlib.import_module("email_validator.validate_email")


def test_mapping_is_inferred_from_column_names() -> None:
    columns = ["Customer ID", "E-Mail", "Mobile Phone", "First Name", "Surname", "Date of Birth", "ZIP", "Tier"]
    mapping = infer_mapping(KINDS["customers"], columns)
    assert {k: m.column for k, m in mapping.fields.items()} == {
        "customer_id": "Customer ID",
        "email": "E-Mail",
        "phone": "Mobile Phone",
        "first_name": "First Name",
        "last_name": "Surname",
        "birth_date": "Date of Birth",
        "postal_code": "ZIP",
    }
    assert column_key("É-Mail Addr.") == "emailaddr"


def test_each_column_maps_to_one_field_at_most() -> None:
    mapping = infer_mapping(KINDS["orders"], ["id", "Total", "Date"])
    assert mapping.fields["order_id"].column == "id"
    assert "customer_id" not in mapping.fields and mapping.fields["ordered_at"].column == "Date"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"fields: [unclosed", "invalid_mapping"),
        (b"- just\n- a list\n", "invalid_mapping"),
        (b'{"fields": {"email": {"colum": "E"}}}', "invalid_mapping"),  # a typo is an error, not ignored
        (b'{"fields": {}, "attributes": "some"}', "invalid_mapping"),
    ],
)
def test_bad_mappings_are_refused_with_the_reason(text: bytes, code: str) -> None:
    with pytest.raises(Rejected) as info:
        decode_mapping(text)
    assert info.value.code == code


def test_a_yaml_mapping_reads() -> None:
    mapping = decode_mapping(
        b"fields:\n  customer_id: {column: Kundennr}\n  birth_date: {column: Geb, format: '%d.%m.%Y'}\n"
    )
    assert mapping.fields["birth_date"] == FieldMapping(column="Geb", format="%d.%m.%Y")


@pytest.mark.parametrize(
    ("mapping", "columns", "code"),
    [
        (Mapping(fields={"customer_id": FieldMapping(column="nope")}), ["id"], "mapping_column_missing"),
        (Mapping(fields={"shoe_size": FieldMapping(column="id")}), ["id"], "invalid_mapping"),
        (Mapping(fields={"email": FieldMapping(column="id")}), ["id"], "required_field_unmapped"),
        (None, ["a;b;c"], "required_field_unmapped"),  # a wrong delimiter: one column that names nothing
    ],
)
def test_mappings_that_do_not_fit_the_file(mapping: Mapping | None, columns: list[str], code: str) -> None:
    with pytest.raises(Rejected) as info:
        resolve_mapping(KINDS["customers"], columns, mapping)
    assert info.value.code == code
    assert str(columns) in info.value.message or code == "invalid_mapping"


def test_a_default_currency_fills_the_currency_field() -> None:
    mapping = Mapping(
        fields={"order_id": FieldMapping(column="id"), "amount": FieldMapping(column="t")}, default_currency="EUR"
    )
    used, _ = resolve_mapping(KINDS["orders"], ["id", "t"], mapping)
    assert used.fields["currency"] == FieldMapping(default="EUR")


@pytest.mark.parametrize(
    ("function", "value", "expected"),
    [
        (values.email, " Anna.Smith@EXAMPLE.com ", "Anna.Smith@example.com"),
        (values.email, "anna@bücher.de", "anna@bücher.de"),
        (values.email, "no-at-sign", None),
        (values.email, "a@b@c.com", None),
        (values.phone_in_region, "DE\x1f030 1234567", "+49301234567"),
        (values.phone_in_region, "\x1f+1 (415) 555-2671", "+14155552671"),
        (values.phone_in_region, "\x1f030 1234567", None),  # no country code and no region: not guessed
        (values.phone_in_region, "US\x1f12", None),
        (values.name, "  ANNA-LENA   O'NEIL ", "Anna-Lena O'Neil"),
        (values.name, "McDonald", "McDonald"),
        (values.name, "Zoe\u0308", "Zoë"),  # NFC
        (values.currency, "eur", "EUR"),
        (values.currency, "EURO", None),
    ],
)
def test_value_normalisers(function: values.Verdict, value: str, expected: str | None) -> None:
    normalised, reason = function(value)  # type: ignore[operator]
    assert normalised == expected
    assert (reason is None) == (expected is not None)


def test_normalising_many_values_in_worker_processes_gives_the_same_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"user{i}@Example.com" if i % 7 else f"broken{i}" for i in range(3000)]
    serial = values.normalise_all(values.email, texts)
    monkeypatch.setattr(values, "PARALLEL_FROM", 100)
    monkeypatch.setattr(values, "_CHUNK", 500)
    assert values.normalise_all(values.email, texts) == serial


@settings(max_examples=300, deadline=None)
@given(
    local=st.text(alphabet=st.sampled_from("abcXYZ.+_-é0"), min_size=0, max_size=12),
    domain=st.sampled_from(
        ["example.com", "Example.ORG", "bücher.example", "xn--bcher-kva.example", "-bad.com", "a..b", "localhost",
         "ex_ample.com", "1.2.3.4", "[127.0.0.1]", "x" * 64 + ".com", "example"]
    ),
)  # fmt: skip
def test_email_verdicts_equal_the_unmemoized_library(local: str, domain: str) -> None:
    """values.email memoizes email-validator's domain check: the verdicts must be the library's own."""
    address = f"{local}@{domain}"
    memoized = values.email(address)
    with mock.patch.object(_email_validator_module, "validate_email_domain_name", validate_email_domain_name):
        try:
            expected: values.Verdict = (validate_email(address, check_deliverability=False).normalized, None)
        except EmailNotValidError as exc:
            expected = (None, str(exc))
    assert memoized == expected
