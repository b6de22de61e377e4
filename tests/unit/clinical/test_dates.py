"""The clinical date a resource carries (R4 choice elements: onset[x], effective[x], ...) and
the calendar edges of parse_date and whole_months. Expected dates are read off the inputs by
the rules in service/clinical/dates.py's docstrings (as written, no time-zone shift)."""
from __future__ import annotations

from datetime import date

import pytest

from service.clinical.dates import choice_date, observation_date, parse_date, period_end, period_start, whole_months


@pytest.mark.parametrize("resource, expected", [
    ({"onsetDateTime": "2024-03-10T23:30:00-05:00"}, date(2024, 3, 10)),
    ({"onsetInstant": "2024-03-11T08:00:00.000Z"}, date(2024, 3, 11)),
    ({"onsetDate": "2024-03-12"}, date(2024, 3, 12)),
    ({"onsetPeriod": {"start": "2024-03-13", "end": "2024-04-01"}}, date(2024, 3, 13)),
    ({"onsetPeriod": {"end": "2024-04"}}, date(2024, 4, 1)),          # no start: the end
    ({"onsetPeriod": {}}, None),
    ({"onsetString": "2024-05"}, date(2024, 5, 1)),
    ({"onsetString": "last spring"}, None),
    ({"onsetAge": {"value": 40, "unit": "a"}}, None),                  # no calendar date
    ({}, None),
])
def test_choice_date(resource, expected) -> None:  # type: ignore[no-untyped-def]
    assert choice_date(resource, "onset") == expected


def test_observation_date_is_effective_else_issued() -> None:
    assert observation_date({"effectiveDateTime": "2024-03-10", "issued": "2024-03-20T10:00:00Z"}) == date(2024, 3, 10)
    assert observation_date({"effectivePeriod": {"start": "2024-03-09"}, "issued": "2024-03-20T10:00:00Z"}) \
        == date(2024, 3, 9)
    assert observation_date({"issued": "2024-03-20T10:00:00Z"}) == date(2024, 3, 20)
    assert observation_date({"effectiveTiming": {"event": ["2024-03-01"]}}) is None
    assert observation_date({}) is None


def test_period_start_and_end() -> None:
    assert period_start({"start": "2024-01-02", "end": "2024-02-03"}) == date(2024, 1, 2)
    assert period_end({"start": "2024-01-02", "end": "2024-02-03"}) == date(2024, 2, 3)
    assert period_start({"end": "2024-02-03"}) is None and period_end({"start": "2024-01-02"}) is None
    assert period_start(None) is None and period_end("2024-01-02") is None


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "2024-1", "20240", "abcd", "202", "", "2024-03-1",
                                  "2024-00"])
def test_parse_date_refuses_what_is_not_a_date(text: str) -> None:
    assert parse_date(text) is None


def test_parse_date_needs_a_string() -> None:
    assert parse_date(2024) is None and parse_date(None) is None


@pytest.mark.parametrize("start, end, months", [
    (date(2024, 1, 15), date(2024, 1, 15), 0),
    (date(2024, 1, 15), date(2024, 2, 14), 0),
    (date(2024, 1, 15), date(2024, 2, 15), 1),
    (date(2024, 1, 31), date(2024, 2, 28), 0),
    (date(2024, 1, 31), date(2024, 2, 29), 1),        # 31 January + 1 month = 29 February 2024
    (date(2023, 1, 31), date(2023, 2, 28), 1),        # ... = 28 February 2023
    (date(2024, 3, 31), date(2024, 4, 30), 1),
    (date(2024, 1, 1), date(2026, 1, 1), 24),
    (date(2024, 1, 1), date(2025, 12, 31), 23),
])
def test_whole_months_at_month_ends(start: date, end: date, months: int) -> None:
    assert whole_months(start, end) == months
