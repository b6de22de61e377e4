"""Parsing search requests into SearchQuery (no database)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from service.fhir.errors import BadRequest
from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.model import CompositeValue, OfTypeValue
from service.fhir.search.query import (DateValue, Include, QuantityValue, RefValue, SearchParser,
                                       SortKey, TextValue, TokenValue, UriValue, split_escaped)

UTC = timezone.utc


@pytest.fixture(scope="module")
def parser() -> SearchParser:
    return SearchParser(SearchParameterRegistry.load(), base_urls=("http://toh.test/fhir",),
                        default_count=20, max_count=100)


def one(parser: SearchParser, res_type: str, name: str, value: str):  # type: ignore[no-untyped-def]
    q = parser.parse(res_type, [(name, value)])
    assert not q.issues, q.issues
    assert len(q.criteria) == 1
    return q.criteria[0]


@pytest.mark.parametrize("value,expected", [
    ("http://loinc.org|1234-5", TokenValue("http://loinc.org", "1234-5", True)),
    ("|1234-5", TokenValue(None, "1234-5", True)),
    ("http://loinc.org|", TokenValue("http://loinc.org", None, True)),
    ("1234-5", TokenValue(None, "1234-5", False)),
    ("a\\|b", TokenValue(None, "a|b", False)),
])
def test_token_forms(parser: SearchParser, value: str, expected: TokenValue) -> None:
    assert one(parser, "Observation", "code", value).values == (expected,)


def test_comma_is_or_and_escaped_comma_is_not(parser: SearchParser) -> None:
    c = one(parser, "Observation", "status", "final,amended")
    assert [v.code for v in c.values] == ["final", "amended"]
    assert [v.code for v in one(parser, "Observation", "status", "a\\,b").values] == ["a,b"]


def test_repeated_parameters_are_and(parser: SearchParser) -> None:
    q = parser.parse("Observation", [("date", "ge2026-01"), ("date", "lt2026-03")])
    assert [c.values[0].prefix for c in q.criteria] == ["ge", "lt"]


def test_token_modifiers(parser: SearchParser) -> None:
    assert one(parser, "Condition", "code:not", "1").modifier == "not"
    assert one(parser, "Condition", "code:text", "Ostéo").values == (TextValue("osteo"),)
    missing = one(parser, "Condition", "abatement-date:missing", "true")
    assert missing.missing is True


def test_string_modifiers(parser: SearchParser) -> None:
    assert one(parser, "Patient", "family", "MÜL").values == (TextValue("mul"),)
    exact = one(parser, "Patient", "family:exact", "Müller")
    assert exact.modifier == "exact" and exact.values == (TextValue("Müller"),)
    assert one(parser, "Patient", "name:contains", "ll").modifier == "contains"


@pytest.mark.parametrize("value,expected", [
    ("Patient/p1", RefValue("Patient", "p1")),
    ("p1", RefValue(None, "p1")),
    ("http://toh.test/fhir/Patient/p1", RefValue("Patient", "p1")),
    ("http://other.org/fhir/Patient/p1", RefValue(None, None, "http://other.org/fhir/Patient/p1")),
])
def test_reference_forms(parser: SearchParser, value: str, expected: RefValue) -> None:
    assert one(parser, "Observation", "subject", value).values == (expected,)


def test_reference_type_modifier_and_chain(parser: SearchParser) -> None:
    typed = one(parser, "Observation", "subject:Patient", "p1")
    assert typed.values == (RefValue("Patient", "p1"),)
    chained = one(parser, "Observation", "subject:Patient.identifier", "urn:mrn|M1")
    assert chained.chain is not None and chained.chain.target_types == ("Patient",)
    assert chained.chain.criteria[0].values == (TokenValue("urn:mrn", "M1", True),)
    untyped = one(parser, "Observation", "subject.name", "doe")     # Patient and Location have 'name'
    assert set(untyped.chain.target_types) == {"Patient", "Location"}


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_date_prefixes(parser: SearchParser, prefix: str) -> None:
    v = one(parser, "Condition", "onset-date", f"{prefix}2026-03").values[0]
    assert v == DateValue(prefix, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def test_date_with_plus_zone_from_a_query_string(parser: SearchParser) -> None:
    v = one(parser, "Observation", "date", "ge2026-03-01T10:00:00 02:00").values[0]
    assert v.low == datetime(2026, 3, 1, 8, tzinfo=UTC)


def test_quantity(parser: SearchParser) -> None:
    v = one(parser, "Observation", "value-quantity", "le5.4|http://unitsofmeasure.org|mg").values[0]
    assert v == QuantityValue("le", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"),
                              "http://unitsofmeasure.org", "mg")
    assert one(parser, "Observation", "value-quantity", "5.4||mg").values[0].code == "mg"


def test_uri_modifiers(parser: SearchParser) -> None:
    assert one(parser, "Patient", "_profile", "http://x/SD/p").values == (UriValue("http://x/SD/p"),)
    assert one(parser, "Subscription", "url:below", "http://x").modifier == "below"


@pytest.mark.parametrize("name,value", [
    ("bogus", "1"), ("code:nonsense", "x"), ("_sort", "bogus"), ("subject:Patient.bogus", "x"),
    ("_include", "Condition:nope"), ("onset-date", ""), ("_has:Nothing:patient:code", "x"),
    ("_has:Flag:nonsense:code", "x"),
])
def test_unknown_or_unsupported_parameters_become_issues(parser: SearchParser, name: str, value: str) -> None:
    """R4 search.html#errors: unknown and unsupported parameters may be ignored (lenient) or
    refused (Prefer: handling=strict)."""
    q = parser.parse("Observation" if "quantity" in name or name.startswith("subject") else "Condition",
                     [(name, value), ("_id", "ok")])
    assert len(q.issues) == 1 and q.issues[0].expression == (name,)
    assert [c.name for c in q.criteria] == ["_id"]
    with pytest.raises(BadRequest) as err:
        q.raise_if_strict(True)
    assert err.value.issues[0].severity == "error"
    assert "ignored" not in err.value.issues[0].diagnostics
    q.raise_if_strict(False)


@pytest.mark.parametrize("name,value", [
    ("onset-date", "yesterday"), ("onset-date", "zz2026"), ("_count", "-1"), ("_summary", "some"),
    ("subject:Patient", "Group/g1"), ("code:missing", "maybe"), ("_id", "bad id!"),
    ("_id", "x' OR '1'='1"), ("_include", "Condition"), ("_total", "all"),
])
def test_malformed_values_are_refused(parser: SearchParser, name: str, value: str) -> None:
    """R4 search.html#errors: a syntactically incorrect value SHOULD give an error; dropping the
    parameter would widen the search, so it is 400 in lenient handling too."""
    with pytest.raises(BadRequest) as err:
        parser.parse("Observation" if name.startswith("subject") else "Condition",
                     [("_id", "ok"), (name, value)])
    assert [(i.severity, i.code, i.expression) for i in err.value.issues] == [("error", "invalid", (name,))]
    assert "ignored" not in err.value.issues[0].diagnostics


@pytest.mark.parametrize("params", [
    [("_count", "1"), ("_count", "3")], [("_total", "accurate"), ("_total", "none")],
    [("_summary", "count"), ("_summary", "false")], [("_elements", "id"), ("_elements", "code")],
])
def test_a_repeated_single_valued_result_parameter_is_refused(parser: SearchParser,
                                                               params: list[tuple[str, str]]) -> None:
    """R4: the self link SHALL carry the parameters actually used; half-applying a repetition
    would make it lie."""
    with pytest.raises(BadRequest, match="only once"):
        parser.parse("Condition", params)


def test_a_repeated_sort_is_applied_as_if_comma_joined(parser: SearchParser) -> None:
    q = parser.parse("Patient", [("_sort", "gender"), ("_sort", "-birthdate")])
    assert q.sort == [SortKey("gender", "token", False), SortKey("birthdate", "date", True)]
    assert q.used == [("_sort", "gender"), ("_sort", "-birthdate")]


def test_the_count_used_is_the_count_in_the_link(parser: SearchParser) -> None:
    assert parser.parse("Patient", [("_count", "5000")]).used == [("_count", "100")]


@pytest.mark.parametrize("mode,expected", [("true", "true"), ("text", "text"), ("data", "data"),
                                           ("count", "count"), ("false", None)])
def test_summary_modes(parser: SearchParser, mode: str, expected: str | None) -> None:
    assert parser.parse("Patient", [("_summary", mode)]).summary == expected


def test_composite_values_pair_a_token_with_the_second_component() -> None:
    parser = SearchParser(SearchParameterRegistry.load())
    c = parser.parse("Observation", [("code-value-quantity", "http://loinc.org|72514-3$gt7,8480-6$le5.4||mg")]).criteria[0]
    assert c.type == "composite"
    assert c.values == (
        CompositeValue(TokenValue("http://loinc.org", "72514-3", True),
                       QuantityValue("gt", Decimal("7"), Decimal("6.5"), Decimal("7.5"), None, None), "quantity"),
        CompositeValue(TokenValue(None, "8480-6", False),
                       QuantityValue("le", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), None, "mg"), "quantity"))
    concept = parser.parse("Observation", [("code-value-concept", "x\\$y$http://snomed.info/sct|1")]).criteria[0]
    assert concept.values[0].first == TokenValue(None, "x$y", False)    # an escaped $ is not a separator


def test_has_token_modifiers_and_reference_identifier(parser: SearchParser) -> None:
    has = one(parser, "Patient", "_has:Observation:patient:code", "migration")
    assert has.has is not None and (has.has.source_type, has.has.param) == ("Observation", "patient")
    assert has.has.criterion.values == (TokenValue(None, "migration", False),)
    of_type = one(parser, "Patient", "identifier:of-type", "http://t|MR|m1")
    assert (of_type.name, of_type.values) == ("identifier:of-type", (OfTypeValue("http://t", "MR", "m1"),))
    assert one(parser, "Condition", "code:in", "http://vs/x").values == (UriValue("http://vs/x"),)
    below = one(parser, "Condition", "code:below", "http://sct|1")
    assert (below.modifier, below.values) == ("below", (TokenValue("http://sct", "1", True),))
    ident = one(parser, "Observation", "subject:identifier", "urn:mrn|M1")
    assert (ident.name, ident.type, ident.values) == ("subject:identifier", "token",
                                                      (TokenValue("urn:mrn", "M1", True),))


def test_result_parameters(parser: SearchParser) -> None:
    q = parser.parse("Condition", [("_count", "500"), ("_sort", "-onset-date,_lastUpdated"),
                                   ("_total", "accurate"), ("_elements", "code,subject"),
                                   ("_include", "Condition:subject:Patient"),
                                   ("_revinclude:iterate", "Observation:focus"), ("_format", "json")])
    assert not q.issues
    assert q.count == 100
    assert q.sort == [SortKey("onset-date", "date", True), SortKey("_lastUpdated", "date", False)]
    assert q.total == "accurate" and q.elements == ("code", "subject")
    assert q.includes == [Include("Condition", "subject", "Patient", False),
                          Include("Observation", "focus", None, True, True)]
    assert ("_format", "json") not in q.used


def test_split_escaped() -> None:
    assert split_escaped("a\\,b,c", ",") == ["a,b", "c"]
    assert split_escaped("s\\|x|c", "|") == ["s|x", "c"]
