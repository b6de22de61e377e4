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
