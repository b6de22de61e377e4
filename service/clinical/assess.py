"""assess(): the course of one patient's TOH and the flags that hold on a clinical date."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence

from service.fhir.canonical import (
    VS_AVN_FEATURES, VS_BISPHOSPHONATES, VS_INSUFFICIENCY_FRACTURE, VS_LATERALITY, VS_MRI_HIP,
    VS_PREGNANCY_BREASTFEEDING, VS_PREGNANCY_ENDED, VS_TOH_CONDITIONS, VS_TRACKED_JOINTS,
)
from service.fhir.errors import BadRequest

from . import rules
from .dates import parse_date
from .episodes import build_episodes
from .facts import read_facts
from .model import Assessment, AssessmentIssue
from .terminology import Terminology

REQUIRED_VALUESETS = (VS_TOH_CONDITIONS, VS_TRACKED_JOINTS, VS_LATERALITY, VS_AVN_FEATURES,
                      VS_INSUFFICIENCY_FRACTURE, VS_BISPHOSPHONATES, VS_PREGNANCY_BREASTFEEDING,
                      VS_MRI_HIP, VS_PREGNANCY_ENDED)


def assess(resources: Iterable[dict[str, Any]], as_of: date, terminology: Terminology, *,
           base_urls: tuple[str, ...] = (),
           history: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> Assessment:
    """Episodes, flags and issues of one patient's resources (plain FHIR JSON dicts, any order)
    as of the clinical date `as_of`. Resources dated after `as_of` are ignored; a reference to
    `<one of base_urls>/Type/id` (this server) is read as `Type/id`. `history` maps "Type/id" to
    earlier versions of that resource (meta.versionId, meta.lastUpdated): it dates a reactivated
    Condition (a recurrence, issue 9) and the end of a stopped order. Pure: reads no clock, no
    store. Raises BadRequest if `as_of` is not a date (a datetime is truncated)."""
    if isinstance(as_of, datetime):
        as_of = as_of.date()
    if not isinstance(as_of, date):
        raise BadRequest(f"asOf must be a date, got {as_of!r}", expression=["asOf"])
    facts = read_facts(resources, as_of, terminology, base_urls, history)
    episodes, issues = build_episodes(facts.toh, facts.oedema, as_of)
    issues = facts.issues + issues
    for url in REQUIRED_VALUESETS:
        if not terminology.has(url):
            issues.append(AssessmentIssue("terminology", f"ValueSet {url} is not loaded: the rules "
                                          "that need it recognise nothing", "", "error"))
    flags = (rules.migration_and_recurrence(episodes, as_of, issues)
             + rules.unresolved_too_long(episodes, as_of)
             + rules.imaging_flags(facts)
             + rules.bisphosphonate_in_pregnancy(facts, as_of)
             + rules.full_weight_bearing(facts, episodes, as_of))
    flags.sort(key=lambda f: (f.start, f.code, f.key))
    unique_issues = sorted(set(issues), key=lambda i: (i.where, i.code, i.text))
    return Assessment(as_of, tuple(episodes), tuple(flags), tuple(unique_issues))


def parse_as_of(value: str | None, today: date) -> date:
    """The asOf query parameter as a date ("YYYY-MM-DD" or a dateTime); `today` when absent
    (the caller passes its clock's date). Raises BadRequest on anything else."""
    if value is None or value == "":
        return today
    day = parse_date(value) if len(value) >= 10 else None  # a whole date: no "2024" or "2024-06"
    if day is None:
        raise BadRequest(f"asOf must be a date YYYY-MM-DD, got {value!r}", expression=["asOf"])
    return day
