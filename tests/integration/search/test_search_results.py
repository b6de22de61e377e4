"""Result shaping over the clinic data: _sort, _count, _total, _summary, _include/_revinclude,
compartments, $everything and the reporting of ignored parameters."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from search_clinic import BASE, Clinic  # type: ignore[import-not-found]

from service.clock import FixedClock
from service.fhir.errors import BadRequest
from service.store.search import SearchEngine


def order(clinic: Clinic, url: str) -> list[str]:
    return [m.res_id for m in clinic.search(url).matches]


@pytest.mark.parametrize("url,expected", [
    ("Condition?_sort=onset-date", ["cond-toh-right", "cond-pain", "cond-toh-left"]),
    ("Condition?_sort=-onset-date", ["cond-pain", "cond-toh-left", "cond-toh-right"]),
    ("Condition?_sort=abatement-date", ["cond-toh-left", "cond-toh-right", "cond-pain"]),  # missing last
    ("Observation?_sort=date", ["obs-mri", "obs-pain", "obs-weight", "obs-group"]),
    ("Observation?_sort=-date", ["obs-group", "obs-weight", "obs-pain", "obs-mri"]),
    ("Patient?_sort=_lastUpdated", ["pat-anna", "pat-bob", "pat-zoe"]),
    ("Patient?_sort=-_lastUpdated", ["pat-zoe", "pat-bob", "pat-anna"]),
    ("Patient?_sort=-birthdate", ["pat-zoe", "pat-anna", "pat-bob"]),
    ("Patient?_sort=family,-given", ["pat-bob", "pat-anna", "pat-zoe"]),
    ("Patient?_sort=gender,_id", ["pat-anna", "pat-zoe", "pat-bob"]),
    ("Observation?_sort=value-quantity", ["obs-pain", "obs-weight", "obs-group", "obs-mri"]),
])
def test_sort(clinic: Clinic, url: str, expected: list[str]) -> None:
    assert order(clinic, url) == expected


@pytest.mark.parametrize("url", ["Observation?_sort=-date&_count=1", "Observation?_count=3",
                                 "Condition?_sort=onset-date&_count=2", "Patient?_sort=family,-given&_count=1"])
def test_pages_follow_the_sort_forwards_and_backwards(clinic: Clinic, url: str) -> None:
    everything = order(clinic, url.split("&_count")[0].split("?_count")[0] if "_sort" in url
                       else url.split("?")[0])
    pages, cursors, result = [], [], clinic.search(url)
    while True:
        pages.append([m.res_id for m in result.matches])
        cursors.append(result.previous_cursor)
        if not result.next_cursor:
            break
        result = clinic.search(f"{url}&_cursor={result.next_cursor}")
    assert [i for p in pages for i in p] == everything
    assert len(pages) > 1
    # walking back from the last page gives the same pages
    back = result
    for expected in reversed(pages[:-1]):
        back = clinic.search(f"{url}&_cursor={back.previous_cursor}")
        assert [m.res_id for m in back.matches] == expected
    assert back.previous_cursor is None


def test_total_and_summary_count(clinic: Clinic) -> None:
    result = clinic.search("Observation?_count=1&_total=accurate")
    assert result.total == 4 and len(result.matches) == 1
    assert clinic.search("Observation?_count=1").total is None
    assert clinic.search("Observation?status=final").total == 3       # one page: total is free
    summary = clinic.search("Observation?status=final&_summary=count")
    assert summary.total == 3 and summary.matches == []
    assert clinic.search("Observation?_count=0").total == 4


def test_include_and_revinclude(clinic: Clinic) -> None:
    result = clinic.search("CarePlan?status=active&_include=CarePlan:subject&_include=CarePlan:based-on")
    assert [m.res_id for m in result.matches] == ["cp-toh"]
    assert {i.res_id for i in result.includes} == {"pat-anna", "cp-old"}
    typed = clinic.search("Observation?_include=Observation:subject:Group")
    assert typed.includes == []                 # the Group is not stored
    rev = clinic.search("Patient?_id=pat-anna&_revinclude=Condition:subject&_revinclude=Flag:patient")
    assert {i.res_id for i in rev.includes} == {"cond-toh-left", "cond-pain", "flag-avn"}
    iterate = clinic.search("Observation?_id=obs-pain&_include=Observation:focus"
                            "&_include:iterate=Condition:subject")
    assert [i.res_id for i in iterate.includes] == ["cond-toh-left", "pat-anna"]
    no_iterate = clinic.search("Observation?_id=obs-pain&_include=Observation:focus&_include=Condition:subject")
    assert [i.res_id for i in no_iterate.includes] == ["cond-toh-left"]


def test_patient_compartment(clinic: Clinic) -> None:
    def compartment(res_type: str, params: str = "") -> set[str]:
        query = clinic.engine.parse(res_type, [tuple(p.split("=", 1)) for p in params.split("&") if p],
                                    compartment=("Patient", "pat-anna"))
        with clinic.database.unit_of_work(write=False) as uow:
            return {m.res_id for m in clinic.engine.search(uow.conn, query).matches}

    assert compartment("Condition") == {"cond-toh-left", "cond-pain"}
    assert compartment("Observation") == {"obs-mri", "obs-pain"}
    assert compartment("Observation", "code=72514-3") == {"obs-pain"}
    assert compartment("Patient") == {"pat-anna"}
    assert compartment("Practitioner") == set()
    assert compartment(None) == {  # type: ignore[arg-type]  # $everything
        "pat-anna", "cond-toh-left", "cond-pain", "obs-mri", "obs-pain", "cp-old", "cp-toh", "med-bisph",
        "flag-avn", "comm-1", "risk-1"}   # R4's Patient compartment does not hold Task


def test_unknown_parameters_are_reported_and_ignored(clinic: Clinic) -> None:
    result = clinic.search("Condition?patient=pat-anna&bogus=1&_sort=bogus")
    assert {m.res_id for m in result.matches} == {"cond-toh-left", "cond-pain"}
    assert [i.expression for i in result.issues] == [("bogus",), ("_sort",)]
    assert all(i.severity == "warning" for i in result.issues)


def test_malformed_values_are_refused_not_ignored(clinic: Clinic) -> None:
    with pytest.raises(BadRequest) as err:
        clinic.search("Condition?patient=pat-anna&onset-date=someday")
    assert [i.expression for i in err.value.issues] == [("onset-date",)]


def test_conditional_finder(clinic: Clinic) -> None:
    with clinic.database.unit_of_work(write=False) as uow:
        assert clinic.engine.find_ids(uow.conn, "Patient", [("identifier", "urn:mrn|M1")]) == ["pat-anna"]
        assert clinic.engine.find_ids(uow.conn, "Patient", [("identifier", "urn:mrn|M9")]) == []
        assert clinic.engine.find_ids(uow.conn, "Patient", [("identifier", "M1"), ("_pretty", "true")]) == [
            "pat-anna", "pat-zoe"]


def test_finder_returns_every_match_in_storage_order_unless_limited(clinic: Clinic) -> None:
    everyone = [("birthdate", "ge1900")]
    with clinic.database.unit_of_work(write=False) as uow:
        assert clinic.engine.find_ids(uow.conn, "Patient", everyone) == ["pat-anna", "pat-bob", "pat-zoe"]
        assert clinic.engine.find_ids(uow.conn, "Patient", everyone, limit=2) == ["pat-anna", "pat-bob"]
        assert clinic.engine.find_ids(uow.conn, "Patient", everyone, limit=0) == []


def test_finder_is_not_capped_by_max_count(fresh: Clinic) -> None:
    """A workflow that loads all of a patient's Observations gets all of them (max_count is 200)."""
    n = fresh.engine.max_count + 5
    with fresh.database.unit_of_work() as uow:
        for i in range(n):
            uow.repo.update("Observation", f"obs-{i:03d}", {
                "resourceType": "Observation", "id": f"obs-{i:03d}", "status": "final",
                "code": {"text": "pain"}, "subject": {"reference": "Patient/pat-anna"}})
        uow.commit()
    with fresh.database.unit_of_work(write=False) as uow:
        ids = fresh.engine.find_ids(uow.conn, "Observation", [("patient", "Patient/pat-anna")])
    assert ids == [f"obs-{i:03d}" for i in range(n)]


@pytest.mark.parametrize("params", [
    [], [("_pretty", "true")], [("_format", "json")], [("_count", "1")], [("_sort", "_id")],
    [("_summary", "count")], [("_elements", "id")], [("_total", "accurate")],
    [("_include", "Patient:general-practitioner")], [("_revinclude", "Observation:subject")],
    [("_pretty", "true"), ("_count", "10"), ("_sort", "-_lastUpdated")],
])
def test_finder_refuses_criteria_of_result_parameters_only(clinic: Clinic, params: list[tuple[str, str]]) -> None:
    """Result parameters select nothing: a conditional PUT /Patient?_pretty=true must not match
    (and overwrite) every Patient."""
    with clinic.database.unit_of_work(write=False) as uow, pytest.raises(BadRequest, match="needs search criteria"):
        clinic.engine.find_ids(uow.conn, "Patient", params)


def test_finder_reads_now_from_the_engine_clock(clinic: Clinic) -> None:
    """'ap' widens by 10% of the distance from now: a century away, every Observation is near."""
    criteria = [("date", "ap2026-02-10")]
    far = SearchEngine(clinic.engine.registry, base_urls=[BASE],
                       clock=FixedClock(datetime(2126, 1, 1, tzinfo=timezone.utc)))
    with clinic.database.unit_of_work(write=False) as uow:
        assert clinic.engine.find_ids(uow.conn, "Observation", criteria) == ["obs-pain"]
        assert set(far.find_ids(uow.conn, "Observation", criteria)) == {
            "obs-mri", "obs-pain", "obs-weight", "obs-group"}
