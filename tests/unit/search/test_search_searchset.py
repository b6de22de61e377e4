"""Rendering a searchset Bundle: the text and dict forms come from one layout and agree."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from service.fhir.errors import Issue
from service.fhir.search.query import SearchQuery
from service.store.search.engine import Found, SearchResult
from service.store.search.searchset import layout, render_dict, render_text

BASE = "http://toh.test/fhir"
AT = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def found(rid: int, res_type: str, res_id: str, **body: object) -> Found:
    content = json.dumps({"resourceType": res_type, "id": res_id, "meta": {"versionId": "1"}, **body},
                         ensure_ascii=False)
    return Found(rid, res_type, res_id, 1, AT, content)


@pytest.mark.parametrize("elements", [None, ("gender",)])
def test_text_and_dict_forms_are_the_same_bundle(elements: tuple[str, ...] | None) -> None:
    query = SearchQuery("Patient", used=[("name", "Zoë")], elements=elements)
    result = SearchResult(
        matches=[found(1, "Patient", "pat-zoe", gender="female", name=[{"family": "Ølsen"}])],
        includes=[found(2, "Practitioner", "dr-x", name=[{"family": "House"}])],
        total=1, next_cursor="abc",
        issues=[Issue("warning", "not-supported", "bogus=1: unknown (ignored)", ("bogus",))])
    bundle = layout(query, result, BASE, "Patient", AT)
    text, as_dict = render_text(bundle), render_dict(bundle)
    assert json.loads(text) == as_dict
    assert [e["search"]["mode"] for e in as_dict["entry"]] == ["match", "include", "outcome"]
    assert as_dict["entry"][0]["fullUrl"] == f"{BASE}/Patient/pat-zoe"
    assert [link["relation"] for link in as_dict["link"]] == ["self", "next"]
    patient = as_dict["entry"][0]["resource"]
    if elements:
        assert "name" not in patient and patient["gender"] == "female"
        assert patient["meta"]["tag"][-1]["code"] == "SUBSETTED"
    else:
        assert patient["name"] == [{"family": "Ølsen"}]
        assert '"Ølsen"' in text   # spliced in as stored


def test_an_empty_result_has_no_entry() -> None:
    bundle = layout(SearchQuery("Patient"), SearchResult(total=0), BASE, "Patient", AT)
    assert "entry" not in render_dict(bundle)
    assert json.loads(render_text(bundle)) == render_dict(bundle)
