"""One patient's page: the timeline and the tables below it, read for the signed-in principal.
No Flask here.

    patient_page(reader, watch, is_follow_up, "p1", today) -> PatientPage

Episodes and flags come from the clinical engine's pure `assess` (service.clinical), and MRI
findings from its reading of the record (`read_facts`), over the resources the clinical watch
reads (`clinical_resources`, `earlier_versions`): nothing here decides a rule. Pain scores
are the LOINC 72514-3 Observations (0-10); follow-ups are the patient's follow-up Tasks, done
(completed), missed (window passed, not done), due (window open today) or upcoming.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from service.clinical import Assessment, Episode, FlagFinding, assess
from service.clinical.anatomy import Site
from service.clinical.codes import LOINC_PAIN_SEVERITY
from service.clinical.dates import parse_date
from service.clinical.facts import Finding, read_facts
from service.fhir.canonical import LOINC
from service.web.reading import Reader, local_id, patient_name
from service.web.timeline import BarInput, LaneInput, MarkInput, PainInput, Timeline, build_timeline
from service.workflows.care_plans import OPEN_TASK, task_window
from service.workflows.clinical_watch import ClinicalWatch, clinical_resources, earlier_versions

ASSESSMENT_TYPES = ("Condition", "Observation", "MedicationRequest", "CarePlan")   # as $toh-assessment
LaneKey = tuple[str | None, str | None]


@dataclass(frozen=True)
class FlagEntry:
    """A flag of the assessment with its number on the timeline (F1, F2...)."""

    number: int
    finding: FlagFinding
    site: str


@dataclass(frozen=True)
class FollowUpEntry:
    """A follow-up Task of the patient as the timeline shows it."""

    task_id: str
    title: str
    state: str            # done | missed | due | upcoming | cancelled
    window_start: date
    window_end: date
    site: str


@dataclass(frozen=True)
class PatientPage:
    """What /ui/patients/{id} shows."""

    patient_id: str
    name: str
    patient: dict[str, Any]
    today: date
    assessment: Assessment | None = None
    timeline: Timeline | None = None
    flags: list[FlagEntry] = field(default_factory=list)
    follow_ups: list[FollowUpEntry] = field(default_factory=list)
    pain: list[tuple[date, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def episodes(self) -> tuple[Episode, ...]:
        return self.assessment.episodes if self.assessment is not None else ()


def _lane_of_site(site: Site, lanes: dict[LaneKey, str]) -> LaneKey | None:
    side = next(iter(site.sides)) if len(site.sides) == 1 else None
    if (site.joint, side) in lanes:
        return (site.joint, side)
    same_joint = [k for k in lanes if k[0] == site.joint]
    return same_joint[0] if len(same_joint) == 1 else None


def _finding_kind(finding: Finding, avn: set[str], fracture: set[str]) -> str:
    if finding.ref in avn:
        return "avn"
    if finding.ref in fracture:
        return "fracture"
    return "oedema" if finding.present else "oedema-absent"


def pain_scores(resources: list[dict[str, Any]]) -> list[tuple[date, float, str]]:
    """(day, score, "Observation/id") of the pain severity Observations (LOINC 72514-3, 0-10
    verbal numeric rating) that are not cancelled or entered in error, by day."""
    found = []
    for res in resources:
        if res.get("resourceType") != "Observation" or res.get("status") in ("cancelled", "entered-in-error"):
            continue
        codes = {(c.get("system"), c.get("code")) for c in (res.get("code") or {}).get("coding") or ()}
        if (LOINC, LOINC_PAIN_SEVERITY) not in codes:
            continue
        value = (res.get("valueQuantity") or {}).get("value", res.get("valueInteger"))
        day = parse_date(res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start"))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and day is not None:
            found.append((day, float(value), f"Observation/{res.get('id')}"))
    return sorted(found)


def patient_page(reader: Reader, watch: ClinicalWatch, is_follow_up: Callable[[dict[str, Any]], bool],
                 patient_id: str, today: date) -> PatientPage:
    """The page of one patient on `today`. Raises NotFound (unknown, or not visible to the
    principal) and Gone (deleted) for the Patient; what the scopes do not allow is left out
    and said in notes."""
    patient = reader.read("Patient", patient_id)
    name = patient_name(patient, fallback=f"Patient/{patient_id}")
    missing = [t for t in ASSESSMENT_TYPES if not reader.can("r", t)]
    if missing:
        return PatientPage(patient_id, name, patient, today, notes=[
            f"Your sign-in's scopes do not allow reading {', '.join(missing)}, so the course cannot be shown."])
    repo = reader.uow.repo
    resources = clinical_resources(repo, patient_id, watch.base_urls)
    history = earlier_versions(repo, resources)
    assessment = assess(resources, today, watch.terminology, base_urls=watch.base_urls, history=history)
    facts = read_facts(resources, today, watch.terminology, watch.base_urls, history)
    notes: list[str] = []

    lanes: dict[LaneKey, str] = {}
    evidence_lane: dict[str, LaneKey] = {}
    for episode in sorted(assessment.episodes, key=lambda e: (e.onset or date.max, e.site)):
        key = (episode.joint, episode.side)
        lanes.setdefault(key, episode.site)
        for ref in episode.evidence:
            evidence_lane.setdefault(ref, key)
    bars = [_bar(e) for e in assessment.episodes if e.onset is not None]
    marks: list[MarkInput] = []
    avn, fracture = {f.ref for f in facts.avn}, {f.ref for f in facts.fracture}
    seen: set[tuple[str, date]] = set()
    for finding in sorted(facts.avn + facts.fracture + facts.oedema, key=lambda f: (f.day, f.ref)):
        if (finding.ref, finding.day) in seen:
            continue   # one mark per study, the gravest finding (AVN, fracture, then oedema)
        seen.add((finding.ref, finding.day))
        lane = _lane_of_site(finding.site, lanes)
        if lane is not None:
            evidence_lane.setdefault(finding.ref, lane)
        kind = _finding_kind(finding, avn, fracture)
        what = finding.name or ("diffuse bone marrow oedema" if finding.present else "no bone marrow oedema")
        marks.append(MarkInput(lane, finding.day, kind,
                               f"MRI {finding.day.isoformat()}, {finding.site.label()}: {what} ({finding.ref})"))
    flags: list[FlagEntry] = []
    for number, flag in enumerate(assessment.flags, start=1):
        lane = next((evidence_lane[r] for r in flag.evidence if r in evidence_lane), None)
        site = lanes.get(lane, "") if lane is not None else ""
        flags.append(FlagEntry(number, flag, site))
        marks.append(MarkInput(lane, flag.start, "flag", f"Flag F{number} from {flag.start.isoformat()}: "
                               f"{flag.display}. {flag.text}", f"F{number}"))
    follow_ups: list[FollowUpEntry] = []
    if reader.can("s", "Task"):
        for task in reader.find("Task", [("patient", f"Patient/{patient_id}")]).resources:
            entry = _follow_up(task, today, is_follow_up, evidence_lane, lanes)
            if entry is None:
                continue
            follow_ups.append(entry[0])
            if entry[0].state != "cancelled":
                marks.append(MarkInput(entry[1], entry[0].window_end, entry[0].state,
                                       f"{entry[0].title}: {entry[0].state} (due {_span(entry[0])}; Task/{entry[0].task_id})"))
        follow_ups.sort(key=lambda f: (f.window_start, f.title))
    else:
        notes.append("Your sign-in's scopes do not allow reading Tasks, so no follow-ups are shown.")
    pain = pain_scores(resources)
    timeline = build_timeline(today, [LaneInput(k, v) for k, v in lanes.items()], bars, marks,
                              [PainInput(d, s, f"Pain {s:g}/10 on {d.isoformat()} ({ref})") for d, s, ref in pain])
    return PatientPage(patient_id, name, patient, today, assessment, timeline, flags, follow_ups,
                       [(d, s) for d, s, _ in pain], notes)


def _span(entry: FollowUpEntry) -> str:
    if entry.window_start == entry.window_end:
        return entry.window_end.isoformat()
    return f"{entry.window_start.isoformat()} to {entry.window_end.isoformat()}"


def _bar(episode: Episode) -> BarInput:
    """An episode's bar: to its resolution (a resolved one without a date: a sliver at its
    onset, said in its title), or open (to today) while active."""
    assert episode.onset is not None
    months = f", {episode.months_since_onset} months since onset" if episode.months_since_onset is not None else ""
    if episode.status != "resolved":
        return BarInput((episode.joint, episode.side), episode.onset, None,
                        f"Episode {episode.site}: onset {episode.onset.isoformat()}, active{months}", "active")
    end = episode.resolution_date
    state = f"resolved on {end.isoformat()}" if end else "resolved (date unknown)"
    return BarInput((episode.joint, episode.side), episode.onset, end or episode.onset,
                    f"Episode {episode.site}: onset {episode.onset.isoformat()}, {state}{months}", "resolved")


def _follow_up(task: dict[str, Any], today: date, is_follow_up: Callable[[dict[str, Any]], bool],
               evidence_lane: dict[str, LaneKey], lanes: dict[LaneKey, str]) -> tuple[FollowUpEntry, LaneKey | None] | None:
    if not is_follow_up(task):
        return None
    window = task_window(task)
    assert window is not None
    status = task.get("status")
    if status == "completed":
        state = "done"
    elif status in OPEN_TASK:
        state = "missed" if window[1] < today else ("due" if window[0] <= today else "upcoming")
    else:
        state = "cancelled"
    condition = local_id(task.get("focus"), "Condition")
    lane = evidence_lane.get(f"Condition/{condition}") if condition else None
    title = str(task.get("description") or (task.get("code") or {}).get("text") or "Follow-up")
    return FollowUpEntry(str(task["id"]), title, state, window[0], window[1],
                         lanes.get(lane, "") if lane is not None else ""), lane
