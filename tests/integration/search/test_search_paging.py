"""Stable paging while other clients write: creates after the first page never appear in its
later pages nor shift them; unchanged resources are never repeated or skipped; updates show
their new content in place; deleted resources drop out; previous links still work."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from search_clinic import Clinic  # type: ignore[import-not-found]


def observation(i: int, status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"obs-{i:03d}", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": f"2026-01-{1 + i % 28:02d}",
            "valueQuantity": {"value": i}}


@pytest.mark.parametrize("sort", ["", "&_sort=date", "&_sort=-_lastUpdated", "&_sort=-value-quantity"])
def test_paging_while_writing(fresh: Clinic, sort: str) -> None:
    for i in range(35):
        fresh.clock.advance(timedelta(minutes=1))
        fresh.store(observation(i))
    url = "Observation?patient=p1&code=72514-3&_count=10" + sort
    first = fresh.search(url)
    assert len(first.matches) == 10 and first.next_cursor
    expected_order = [m.res_id for m in fresh.search(url.replace("_count=10", "_count=100")).matches]
    seen = [m.res_id for m in first.matches]
    pages = [seen[:]]
    result, n = first, 0
    while result.next_cursor:
        # Other clients write between our pages: new matches, an update, a deletion.
        n += 1
        fresh.clock.advance(timedelta(minutes=1))
        fresh.store(observation(100 + n))
        unseen = [i for i in expected_order if i not in seen]
        if n == 1:
            updated = unseen[-1]
            fresh.store({**observation(int(updated[4:]), status="amended")})
            deleted = unseen[-2]
            with fresh.database.unit_of_work() as uow:
                uow.repo.delete("Observation", deleted)
                uow.commit()
        result = fresh.search(f"{url}&_cursor={result.next_cursor}")
        pages.append([m.res_id for m in result.matches])
        seen += pages[-1]
    assert len(seen) == len(set(seen)), "a resource was repeated"
    assert not [i for i in seen if int(i[4:]) >= 100], "a resource created after the first page appeared"
    if sort != "&_sort=-_lastUpdated":   # the update moved it to the front: already paged past
        assert updated in seen
    assert deleted not in seen
    assert [i for i in expected_order if i not in (deleted, updated)] == [i for i in seen if i != updated]
    # previous links lead back through the same pages
    back = result
    for page in reversed(pages[:-1]):
        back = fresh.search(f"{url}&_cursor={back.previous_cursor}")
        assert [m.res_id for m in back.matches] == page
    if sort != "&_sort=-_lastUpdated":   # (there, the updated resource now sorts first)
        assert back.previous_cursor is None


def test_a_new_search_sees_the_new_writes(fresh: Clinic) -> None:
    fresh.store(observation(1))
    assert fresh.ids("Observation?patient=p1") == {"obs-001"}
    fresh.store(observation(2))
    assert fresh.ids("Observation?patient=p1") == {"obs-001", "obs-002"}


def test_a_malformed_cursor_is_a_bad_request(fresh: Clinic) -> None:
    from service.fhir.errors import BadRequest
    with pytest.raises(BadRequest):
        fresh.search("Observation?_cursor=not-a-cursor")
    fresh.store(observation(1))
    fresh.store(observation(2))
    first = fresh.search("Observation?_count=1")
    with pytest.raises(BadRequest):   # a cursor from another sort
        fresh.search(f"Observation?_sort=date&_cursor={first.next_cursor}")


def report(i: int, status: str = "final") -> dict[str, Any]:
    """A DiagnosticReport: another type whose status parameter holds the same codes."""
    return {"resourceType": "DiagnosticReport", "id": f"dr-{i:03d}", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]}}


def patient(i: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": f"pat-{i:03d}",
            "identifier": [{"system": "urn:mrn", "value": f"MRN-{i:03d}" if i % 2 else f"mrn-{i:03d}"}]}


def pages(store: Clinic, url: str) -> tuple[list[list[str]], Any]:
    """Every page of url by its next links: (ids per page, the last page's result)."""
    result = store.search(url)
    out = [[m.res_id for m in result.matches]]
    while result.next_cursor:
        result = store.search(f"{url}&_cursor={result.next_cursor}")
        out.append([m.res_id for m in result.matches])
    return out, result


def test_a_whole_store_search_pages_in_storage_order(fresh: Clinic) -> None:
    """Issue 18: a type-wide token search with more matches than _count (no _sort) pages its
    matches in storage order (rid): the rows, order, links and totals any faster plan for the
    first page must keep (one that walks the matches in rid order was tried; bench/RESULTS.md)
    — no other type holding the same code, no other code, every match once."""
    written: list[str] = []
    for i in range(40):
        fresh.clock.advance(timedelta(minutes=1))
        status = "amended" if i % 4 == 3 else "final"
        fresh.store(observation(i, status=status))
        written.append(f"obs-{i:03d}" if status == "final" else "")
        fresh.store(report(i))              # same parameter and code, another type
        if i % 5 == 0:
            fresh.store(patient(i))
    finals = [w for w in written if w]          # in the order written, i.e. rid order
    assert len(finals) == 30
    url = "Observation?status=final&_count=8"
    got, last = pages(fresh, url)
    assert [len(p) for p in got] == [8, 8, 8, 6]
    assert [i for p in got for i in p] == finals
    first = fresh.search(url)
    assert first.total is None and first.previous_cursor is None   # more than a page: not counted
    assert fresh.search(url + "&_total=accurate").total == 30
    assert fresh.search("Observation?status=final&_count=100").total == 30   # one page: counted
    back, shown = last, []
    while back.previous_cursor:
        back = fresh.search(f"{url}&_cursor={back.previous_cursor}")
        shown.insert(0, [m.res_id for m in back.matches])
    assert shown == got[:-1]
    # the type still bounds the search, and a :not or :missing criterion does not drop it
    assert fresh.ids("Observation?status=amended&_count=100") == {f"obs-{i:03d}" for i in range(3, 40, 4)}
    assert fresh.ids("Observation?status:not=final&_count=100") == {f"obs-{i:03d}" for i in range(3, 40, 4)}
    assert len(fresh.ids("DiagnosticReport?status=final&_count=100")) == 40
    # a string-typed element (Identifier.value) matches without regard to case, whether the
    # value given is its own case fold or not
    for value in ("mrn-005", "MRN-005", "Mrn-005"):
        assert fresh.ids(f"Patient?identifier={value}") == {"pat-005"}
        assert fresh.ids(f"Patient?identifier=urn:mrn|{value}") == {"pat-005"}
    assert fresh.ids("Patient?identifier=mrn-010") == {"pat-010"}
    assert [m.res_id for m in fresh.search("Patient?identifier:not=mrn-010&_count=3").matches] == \
        ["pat-000", "pat-005", "pat-015"]


@pytest.mark.parametrize("sort", ["date", "-date"])
def test_a_sort_by_a_value_some_matches_lack_pages_them_last_in_storage_order(fresh: Clinic, sort: str) -> None:
    """Issue 18: sorted by an index table's parameter, the matches with a value come by the
    value (ties by storage order), then those without one in storage order (R4 leaves where
    missing values go; ours: last both ways), page after page and back."""
    days: dict[str, int | None] = {}
    for i in range(30):
        fresh.clock.advance(timedelta(minutes=1))
        obs = observation(i)
        day = None if i % 3 == 0 else (i * 7) % 5 + 1     # ties on the day, and no date at all
        if day is None:
            del obs["effectiveDateTime"]
        else:
            obs["effectiveDateTime"] = f"2026-02-{day:02d}"
        fresh.store(obs)
        fresh.store(report(i))
        days[obs["id"]] = day
    dated = sorted((k for k, d in days.items() if d is not None),
                   key=lambda k: (-(days[k] or 0) if sort.startswith("-") else days[k] or 0, k))
    expected = dated + sorted(k for k, d in days.items() if d is None)
    url = f"Observation?status=final&_sort={sort}&_count=4"
    got, last = pages(fresh, url)
    assert [i for p in got for i in p] == expected
    assert all(len(p) == 4 for p in got[:-1])
    back, shown = last, []
    while back.previous_cursor:
        back = fresh.search(f"{url}&_cursor={back.previous_cursor}")
        shown.insert(0, [m.res_id for m in back.matches])
    assert shown == got[:-1]
    assert fresh.search(url + "&_total=accurate").total == 30
