"""FHIR date handling for the rules: the clinical date a resource carries, whole months between dates.

Only the dates in the data count (onset, effective, abatement, authoredOn; issued as a fallback);
never the time a resource was received (meta.lastUpdated is not read here).
"""
from __future__ import annotations

from datetime import date
from typing import Any

from dateutil.relativedelta import relativedelta


def parse_date(value: Any) -> date | None:
    """The calendar date of a FHIR date, dateTime or instant, as written (time zone not shifted).

    Partial dates take their first day ("2024" -> 2024-01-01, "2024-03" -> 2024-03-01).
    Returns None for anything that is not a FHIR date string.
    """
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) >= 10:
            return date.fromisoformat(value[:10])
        if len(value) == 7:
            return date(int(value[:4]), int(value[5:7]), 1)
        if len(value) == 4:
            return date(int(value), 1, 1)
    except ValueError:
        return None
    return None


def period_start(period: Any) -> date | None:
    """Period.start as a date, or None."""
    return parse_date(period.get("start")) if isinstance(period, dict) else None


def period_end(period: Any) -> date | None:
    """Period.end as a date, or None."""
    return parse_date(period.get("end")) if isinstance(period, dict) else None


def choice_date(resource: dict[str, Any], prefix: str) -> date | None:
    """The date of a choice element `prefix[x]`: DateTime, Instant, Date, Period.start, String."""
    for suffix in ("DateTime", "Instant", "Date"):
        value = resource.get(prefix + suffix)
        if value is not None:
            return parse_date(value)
    period = resource.get(prefix + "Period")
    if period is not None:
        return period_start(period) or period_end(period)
    return parse_date(resource.get(prefix + "String"))


def observation_date(obs: dict[str, Any]) -> date | None:
    """The clinical date of an Observation: effective[x], else issued."""
    return choice_date(obs, "effective") or parse_date(obs.get("issued"))


def add_months(day: date, months: int) -> date:
    """`day` plus whole months; a day missing in the target month clamps to its last day
    (2024-02-29 + 12 months = 2025-02-28)."""
    return day + relativedelta(months=months)


def whole_months(start: date, end: date) -> int:
    """Completed months from start to end: the largest n with add_months(start, n) <= end,
    so that "12 months have passed" and whole_months(...) >= 12 always agree
    (2024-02-29 -> 2025-02-28 is 12 months). 0 if end is before start."""
    if end <= start:
        return 0
    delta = relativedelta(end, start)
    n = delta.years * 12 + delta.months
    while add_months(start, n + 1) <= end:
        n += 1
    return n
