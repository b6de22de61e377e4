"""Date prefixes at their boundaries, and precisions whose length varies (28-, 29-, 30- and
31-day months), on SQLite and PostgreSQL.

The expected sets follow R4 search 3.1.1.4.2 (prefixes): the search value is a range [ps, pe)
by its precision, and so is the stored value [low, high):
  eq  [low, high) lies within [ps, pe)        ne  it does not
  gt  high > pe          ge  high > pe, or eq        sa  low >= pe   (starts after the value ends)
  lt  low < ps           le  low < ps, or eq         eb  high <= ps  (ends before the value starts)
A Condition's onsetDateTime of one day covers that whole day; an onsetPeriod of days covers
its start day to the end of its end day (so "p-14-15" is [2026-01-14, 2026-01-16)).
"""
from __future__ import annotations

import pytest

from search_clinic import Clinic  # type: ignore[import-not-found]

ONSETS = {
    "c-01-14": "2026-01-14", "c-01-15": "2026-01-15", "c-01-16": "2026-01-16",
    "c-feb": "2026-02", "c-02-28": "2026-02-28", "c-03-01": "2026-03-01",
    "c-04-30": "2026-04-30", "c-05-01": "2026-05-01",
    "c-2024-02-29": "2024-02-29", "c-2024-03-01": "2024-03-01",
}
PERIODS = {"p-14-15": {"start": "2026-01-14", "end": "2026-01-15"},     # ends with 15 January
           "p-15-16": {"start": "2026-01-15", "end": "2026-01-16"}}     # starts with 15 January
BOTH = set(PERIODS)
AFTER_JAN_15 = {"c-01-16", "c-feb", "c-02-28", "c-03-01", "c-04-30", "c-05-01"}
BEFORE_JAN_15 = {"c-01-14", "c-2024-02-29", "c-2024-03-01"}


@pytest.fixture(scope="module")
def onsets(module_store: Clinic) -> Clinic:
    """The Conditions above, stored once per module and backend (tests only read)."""
    module_store.store({"resourceType": "Patient", "id": "p"})
    for cid, onset in ONSETS.items():
        module_store.store({"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p"},
                            "onsetDateTime": onset})
    for cid, period in PERIODS.items():
        module_store.store({"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p"},
                            "onsetPeriod": period})
    return module_store


@pytest.mark.parametrize("query, expected", [
    # a day's boundaries: 2026-01-15 is [2026-01-15T00:00, 2026-01-16T00:00)
    ("onset-date=2026-01-15", {"c-01-15"}),
    ("onset-date=ne2026-01-15", AFTER_JAN_15 | BEFORE_JAN_15 | BOTH),   # neither period lies within the day
    ("onset-date=sa2026-01-15", AFTER_JAN_15),                  # the next day starts after it ends
    ("onset-date=gt2026-01-15", AFTER_JAN_15 | {"p-15-16"}),
    ("onset-date=ge2026-01-15", AFTER_JAN_15 | {"c-01-15", "p-15-16"}),   # not p-14-15: it ends with the day
    ("onset-date=eb2026-01-15", BEFORE_JAN_15),                 # the day before ends as it starts
    ("onset-date=lt2026-01-15", BEFORE_JAN_15 | {"p-14-15"}),
    ("onset-date=le2026-01-15", BEFORE_JAN_15 | {"c-01-15", "p-14-15"}),   # not p-15-16: it starts with the day
    ("onset-date=sa2026-01-14", AFTER_JAN_15 | {"c-01-15", "p-15-16"}),
    ("onset-date=eb2026-01-16", BEFORE_JAN_15 | {"c-01-15", "p-14-15"}),
    # a 28-day month: February 2026 ends on the 28th, so 1 March is outside it
    ("onset-date=2026-02", {"c-feb", "c-02-28"}),
    ("onset-date=sa2026-02", {"c-03-01", "c-04-30", "c-05-01"}),
    ("onset-date=eb2026-03", BEFORE_JAN_15 | BOTH | {"c-01-15", "c-01-16", "c-feb", "c-02-28"}),
    ("onset-date=gt2026-02", {"c-03-01", "c-04-30", "c-05-01"}),
    # the stored month "2026-02" is a 28-day range too: it starts after 31 January ends
    ("onset-date=sa2026-01-31", {"c-feb", "c-02-28", "c-03-01", "c-04-30", "c-05-01"}),
    ("onset-date=le2026-02-28", BEFORE_JAN_15 | BOTH | {"c-01-15", "c-01-16", "c-feb", "c-02-28"}),
    # a leap February has 29 days
    ("onset-date=2024-02", {"c-2024-02-29"}),
    ("onset-date=sa2024-02", AFTER_JAN_15 | BOTH | {"c-01-14", "c-01-15", "c-2024-03-01"}),   # not 29 Feb
    # a 30-day month
    ("onset-date=2026-04", {"c-04-30"}),
    ("onset-date=sa2026-04", {"c-05-01"}),
    ("onset-date=eb2026-05", BEFORE_JAN_15 | BOTH | {"c-01-15", "c-01-16", "c-feb", "c-02-28", "c-03-01",
                                                      "c-04-30"}),
])
def test_date_prefixes_at_their_boundaries(onsets: Clinic, query: str, expected: set[str]) -> None:
    assert onsets.ids(f"Condition?{query}") == expected
