"""Read plain FHIR JSON resources into the facts the rules reason about.

One pass, as of a clinical date: a resource whose clinical date is after `as_of` did not exist
yet and is skipped. How each resource is read:

- Condition: skipped if verificationStatus is refuted / entered-in-error. code is matched against
  toh-conditions (an episode), avn-features, insufficiency-fracture-findings and
  pregnancy-breastfeeding-findings (codings, else text/display equal to a member's display).
  Date: onset[x] (dateTime, Period.start, string), else recordedDate. Resolved when
  clinicalStatus is resolved/remission/inactive (or absent with an abatement); resolution date
  = abatement[x]; an abatement after as_of means still active on as_of; an abatement with an
  active status is ignored with an issue. Joint and side: see anatomy.
- Observation: skipped if entered-in-error / cancelled or without effective[x]/issued.
  * LOINC 82810-3 / 63895-7: pregnancy / breastfeeding status, positive when
    valueCodeableConcept is in pregnancy-breastfeeding-findings.
  * TOH weight-bearing-status: value TOH full-weight-bearing (or text "full weight bearing").
  * anything else: findings, each read as present, absent or unknown (service.clinical.presence:
    valueBoolean, SNOMED Present/Absent/Yes/No, v2-0136 Y/N, interpretation codes, text). Each
    component whose code is in avn-features / insufficiency-fracture-findings, or TOH
    bone-marrow-oedema-diffuse on an imaging Observation; also an Observation coded as the finding
    itself (no value = present) or valued with it. An unknown value raises nothing and is an issue
    (value-unknown); an imaging component whose code is not one of the guide's MRI findings is an
    issue (code-unknown, information). Reported-absent AVN/fracture findings are dropped;
    reported-absent oedema is kept (resolution suggested).
  * narrative of an imaging Observation (valueString, note): service.clinical.narrative; an
    uncertain mention is an issue (finding-uncertain), a hypothetical one is ignored.
- DiagnosticReport: conclusionCode (a finding code, else its text as narrative) and conclusion,
  dated effective[x] else issued.
- Condition text: a code outside toh-conditions whose text or display names a member or a
  synonym (the ValueSet's designations, as whole words) is TOH unless the text negates, doubts
  or only questions it; reported as diagnosis-from-text (information).
- Condition history (assess(history=...)): a TOH Condition now `recurrence` / `relapse` whose
  earlier version was resolved with an abatement is two episodes: the first from onset to that
  abatement, the second from the first MRI showing oedema at the site after it, or the day the
  change was stored (meta.lastUpdated), whichever is first. Without such a version: undated, an
  issue (recurrence-undated), no time-based flag. Category encounter-diagnosis marks a copy
  (see episodes).
- Pregnancy: status Observations (positive, negative, or an issue when neither), Conditions in
  pregnancy-breastfeeding-findings (SNOMED, ICD-10-CM Z33.1 / Z3A / O), ended by Conditions in
  pregnancy-ended-findings (delivery, postpartum); how long each holds: rules.pregnancy_intervals.
- Weight-bearing: the guide's Observation, an Observation whose code text names weight-bearing,
  a ServiceRequest (code, orderDetail, note; dated occurrence[x] else authoredOn) and a CarePlan
  activity (detail.code, description) that name it; read from the guide's codes or text
  (weight_bearing_level); unreadable -> an issue.
- MedicationRequest: status active/draft/on-hold/completed, or stopped (active from authoredOn
  to the day its history shows it stopped); medicationCodeableConcept, or
  medicationReference to a Medication in the input or contained, in bisphosphonates (codes,
  ATC is-a, or drug name as words of text/display). From authoredOn (else dosage boundsPeriod /
  validityPeriod start) to dispenseRequest.validityPeriod.end (else boundsPeriod.end);
  completed without an end = that day only.
- CarePlan: status active/draft/on-hold/completed; each activity.detail (not cancelled/stopped/
  entered-in-error) with productCodeableConcept / productReference in bisphosphonates, from
  scheduledPeriod (else CarePlan.period, else created).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable, Mapping, Sequence

from service.fhir.canonical import (
    CONDITION_CATEGORY, CONDITION_CLINICAL, CONDITION_VER_STATUS, LOINC, OBSERVATION_CATEGORY, TOH_CODES, VS_AVN_FEATURES,
    VS_BISPHOSPHONATES, VS_INSUFFICIENCY_FRACTURE, VS_MRI_FINDINGS, VS_MRI_HIP,
    VS_PREGNANCY_BREASTFEEDING, VS_PREGNANCY_ENDED, VS_TOH_CONDITIONS, VS_WEIGHT_BEARING, SNOMED,
)
from service.fhir.references import parse_reference

from . import codes, narrative
from .anatomy import Site, parse_text, read_site
from .dates import choice_date, observation_date, parse_date, period_end, period_start
from .model import AssessmentIssue
from .presence import ABSENT, PRESENT, UNKNOWN, value_presence
from .terminology import Terminology, normalise

_RESOLVED_STATUSES = {"resolved", "remission", "inactive"}
_REACTIVATED = {"recurrence", "relapse"}
_SERVICE_REQUEST_STATUSES = {"active", "completed", "on-hold"}
_FULL, _RESTRICTED = "full", "restricted"
_WB_LOCAL = {codes.FULL_WEIGHT_BEARING: _FULL, "partial-weight-bearing": _RESTRICTED,
             "non-weight-bearing": _RESTRICTED}
_WB_MENTION = ("weight bearing", "weightbearing", "wb", "nwb", "pwb", "fwb", "wbat", "ttwb", "tdwb", "pwbat")
_WB_RESTRICTED = ("non weight bearing", "nonweightbearing", "no weight bearing", "nwb", "partial", "pwb",
                  "protected", "toe touch", "ttwb", "touch down", "touchdown", "tdwb", "limited",
                  "restricted", "feather", "crutches", "pwbat")
_WB_FULL = ("full weight bearing", "full weightbearing", "fwb", "weight bearing as tolerated", "wbat",
            "full", "unrestricted", "as tolerated", "fully weight bearing")
_EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
_EXCLUDED_OBS_STATUS = {"entered-in-error", "cancelled"}
_MEDREQ_STATUSES = {"active", "draft", "on-hold", "completed"}
_CAREPLAN_STATUSES = {"active", "draft", "on-hold", "completed"}
_EXCLUDED_ACTIVITY_STATUS = {"cancelled", "stopped", "entered-in-error"}
_CONDITION_SETS = (VS_TOH_CONDITIONS, VS_AVN_FEATURES, VS_INSUFFICIENCY_FRACTURE, VS_PREGNANCY_BREASTFEEDING)
_FINDING_SETS = (VS_AVN_FEATURES, VS_INSUFFICIENCY_FRACTURE)
_IMAGING_WORDS = frozenset(("mri", "mr", "magnetic", "xr", "x", "radiograph", "radiography",
                            "radiographs", "ct", "imaging", "scan", "scintigraphy"))
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


def _texts(concept: Any) -> list[str]:
    """CodeableConcept.text and its codings' displays."""
    if not isinstance(concept, dict):
        return []
    out = [concept.get("text")] + [c.get("display") for c in concept.get("coding") or () if isinstance(c, dict)]
    return [x for x in out if isinstance(x, str) and x.strip()]


def _has_words(norm: str, phrases: tuple[str, ...]) -> bool:
    padded = f" {norm} "
    return any(f" {p} " in padded for p in phrases)


def _mentions_weight_bearing(texts: list[str]) -> bool:
    return any(_has_words(normalise(t), _WB_MENTION) for t in texts)


def weight_bearing_level(text: str) -> str | None:
    """"full" / "restricted" / None of a weight-bearing text: "WBAT", "Full weight bearing" ->
    full; "PWB with crutches", "toe-touch", "non-weight-bearing", "No full weight-bearing",
    "avoid full weight bearing" -> restricted; "progress to full weight bearing if pain settles"
    (hypothetical) or anything else -> None."""
    norm = normalise(text)
    if _has_words(norm, _WB_RESTRICTED):
        return _RESTRICTED
    if _has_words(norm, _WB_FULL):
        q = narrative.qualifier(text)
        if q == narrative.ABSENT:
            return _RESTRICTED
        return _FULL if q == narrative.PRESENT else None
    return None


def _names_breastfeeding(concept: Any) -> bool:
    """A concept whose text or display speaks of breastfeeding or lactation."""
    if not isinstance(concept, dict):
        return False
    texts = [concept.get("text")] + [c.get("display") for c in concept.get("coding") or () if isinstance(c, dict)]
    return any(isinstance(x, str) and ("breast" in x.lower() or "lactat" in x.lower()) for x in texts)


def _unknown_component(t: Terminology, concept: Any) -> bool:
    """A component code that is neither one of the guide's MRI findings nor a known non-finding."""
    return isinstance(concept, dict) and not t.contains(VS_MRI_FINDINGS, concept)


def _value_text(res: dict[str, Any], concept: Any) -> str:
    """The value[x] of the component or Observation coded `concept`, as text for an issue."""
    for element in [*(res.get("component") or ()), res]:
        if isinstance(element, dict) and element.get("code") is concept:
            for key, value in element.items():
                if key.startswith("value") or key == "dataAbsentReason":
                    return value if isinstance(value, str) else _concept_name(value) \
                        if isinstance(value, dict) else str(value)
            return "no value"
    return "?"


@dataclass(frozen=True)
class ConditionFact:
    """A TOH (or AVN / fracture / pregnancy) Condition as known on as_of."""

    ref: str
    site: Site
    onset: date | None
    recorded: date | None
    resolved: bool               # clinicalStatus resolved/remission/inactive by as_of
    resolved_on: date | None     # abatement date (None if resolved without a date, or active)
    copy: bool = False           # an encounter-diagnosis (a copy of a problem-list entry)


@dataclass(frozen=True)
class Finding:
    """One imaging finding: `name` present (True) or reported absent (False) at a site."""

    ref: str
    day: date
    site: Site
    name: str
    present: bool
    imaging: bool                # an MRI coded in mri-joint-codes, or category imaging


@dataclass(frozen=True)
class Exposure:
    """A bisphosphonate ordered or planned, from `start` to `end` (None: open-ended)."""

    ref: str
    drug: str
    start: date
    end: date | None


@dataclass(frozen=True)
class StatusPoint:
    """A dated status Observation: pregnancy, breastfeeding or weight-bearing."""

    ref: str
    day: date
    positive: bool


@dataclass(frozen=True)
class Window:
    """A pregnancy or breastfeeding Condition: from start to end (None: not ended by an
    abatement; a pregnancy still expires, see rules.pregnancy_intervals)."""

    ref: str
    start: date
    end: date | None
    breastfeeding: bool = False


@dataclass
class Facts:
    """Everything the rules need, read from one patient's resources."""

    toh: list[ConditionFact] = field(default_factory=list)
    avn_conditions: list[ConditionFact] = field(default_factory=list)
    fracture_conditions: list[ConditionFact] = field(default_factory=list)
    oedema: list[Finding] = field(default_factory=list)        # MRI diffuse oedema present/absent
    avn: list[Finding] = field(default_factory=list)           # present only
    fracture: list[Finding] = field(default_factory=list)      # present only
    exposures: list[Exposure] = field(default_factory=list)
    pregnancy: list[StatusPoint] = field(default_factory=list)
    breastfeeding: list[StatusPoint] = field(default_factory=list)
    pregnancy_conditions: list[Window] = field(default_factory=list)
    pregnancy_ended: list[StatusPoint] = field(default_factory=list)   # delivery, postpartum
    weight_bearing: list[StatusPoint] = field(default_factory=list)  # positive = full
    issues: list[AssessmentIssue] = field(default_factory=list)


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', '?')}"


def _codes(concept: Any, system: str) -> set[str]:
    if not isinstance(concept, dict):
        return set()
    return {c.get("code") for c in concept.get("coding") or () if c.get("system") == system}


def _keys(concept: Any) -> set[tuple[Any, Any]]:
    """{(system, code)} of a CodeableConcept's codings."""
    if not isinstance(concept, dict):
        return set()
    return {(c.get("system"), c.get("code")) for c in concept.get("coding") or ()}


def _has_code(concept: Any, system: str, code: str) -> bool:
    if not isinstance(concept, dict):
        return False
    return any(c.get("system") == system and c.get("code") == code
               for c in concept.get("coding") or ())


def _concept_name(concept: Any) -> str:
    if not isinstance(concept, dict):
        return "?"
    for coding in concept.get("coding") or ():
        if coding.get("display"):
            return coding["display"]
    if concept.get("text"):
        return concept["text"]
    for coding in concept.get("coding") or ():
        if coding.get("code"):
            return coding["code"].replace("-", " ")
    return "?"


def _versions(history: Mapping[str, Sequence[dict[str, Any]]], ref: str) -> list[dict[str, Any]]:
    """The earlier versions of `ref`, oldest first (by meta.versionId)."""
    def number(version: dict[str, Any]) -> int:
        value = (version.get("meta") or {}).get("versionId")
        return int(value) if isinstance(value, str) and value.isdigit() else 0
    return sorted((v for v in history.get(ref) or () if isinstance(v, dict)), key=number)


def _updated(version: dict[str, Any]) -> date | None:
    """The date a version was written (meta.lastUpdated)."""
    return parse_date((version.get("meta") or {}).get("lastUpdated"))


@dataclass(frozen=True)
class _Reactivation:
    """A Condition resolved on `resolved_on` and later set back to recurrence/relapse/active,
    a change first stored on `changed_on` (None: not known)."""

    ref: str
    site: Site
    resolved_on: date
    changed_on: date | None


class _Reader:
    def __init__(self, as_of: date, terminology: Terminology, base_urls: tuple[str, ...],
                 history: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        self.as_of = as_of
        self.t = terminology
        self.base_urls = base_urls
        self.history = history
        self.facts = Facts()
        self.medications: dict[str, dict[str, Any]] = {}
        self.reactivations: list[_Reactivation] = []

    def issue(self, code: str, text: str, where: str = "", severity: str = "warning") -> None:
        self.facts.issues.append(AssessmentIssue(code, text, where, severity))

    # -- Condition ------------------------------------------------------------------------
    def condition(self, res: dict[str, Any]) -> None:
        if _codes(res.get("verificationStatus"), CONDITION_VER_STATUS) & _EXCLUDED_VERIFICATION:
            return
        code = res.get("code")
        t = self.t
        toh, avn, fracture, pregnant = t.memberships(code, _CONDITION_SETS)
        pregnant = pregnant or t.memberships(code, (VS_PREGNANCY_ENDED,))[0]
        ref = _ref(res)
        if not toh and isinstance(code, dict) and t.memberships(code, (VS_TOH_CONDITIONS,), "words")[0]:
            toh = self._text_diagnosis(code, ref)
        kinds = [(toh, self.facts.toh), (avn, self.facts.avn_conditions),
                 (fracture, self.facts.fracture_conditions)]
        if not pregnant and not any(hit for hit, _ in kinds):
            return
        onset = choice_date(res, "onset")
        recorded = parse_date(res.get("recordedDate"))
        start = onset or recorded
        if start is not None and start > self.as_of:
            return
        status = _codes(res.get("clinicalStatus"), CONDITION_CLINICAL)
        abatement = choice_date(res, "abatement")
        if abatement is not None and abatement > self.as_of:
            abatement = None                       # resolved later: still active on as_of
            resolved = False
        elif status & _RESOLVED_STATUSES or (not status and abatement is not None):
            resolved = True
        else:
            resolved = False
            if abatement is not None:
                self.issue("abated-but-active", "abatement date given but clinicalStatus is "
                           "not resolved/remission/inactive: treated as active", ref)
                abatement = None
        if pregnant and start is not None and t.memberships(code, (VS_PREGNANCY_ENDED,))[0]:
            self.facts.pregnancy_ended.append(StatusPoint(ref, start, True))
        elif pregnant and start is not None and not (resolved and abatement is None):
            feeding = (SNOMED, "413712001") in _keys(code) or _names_breastfeeding(code)
            self.facts.pregnancy_conditions.append(
                Window(ref, start, abatement if resolved else None, feeding))
        if not any(hit for hit, _ in kinds):
            return
        site = read_site(res, t)
        categories = set().union(*(_codes(c, CONDITION_CATEGORY) for c in res.get("category") or ()))
        copy = "encounter-diagnosis" in categories and "problem-list-item" not in categories
        if toh and not resolved and status & _REACTIVATED and onset is not None:
            earlier = self._reactivated(res, ref, site, onset)
            self.facts.toh.append(earlier or ConditionFact(ref, site, None, None, False, None, copy))
            return
        fact = ConditionFact(ref, site, onset, recorded, resolved, abatement if resolved else None, copy)
        for hit, bucket in kinds:
            if hit:
                bucket.append(fact)

    def _reactivated(self, res: dict[str, Any], ref: str, site: Site, onset: date) -> ConditionFact | None:
        """The resolved episode a Condition with clinicalStatus recurrence / relapse had before
        (from its version history), with the reactivation kept for read_facts to date; None
        when the history shows no earlier resolution: then the recurrence cannot be dated, and
        rather than count it from the first onset (a false delayed-resolution) the caller keeps
        it as an undated episode, with an issue."""
        versions = _versions(self.history, ref)
        current = (res.get("meta") or {}).get("versionId")
        if not any((v.get("meta") or {}).get("versionId") == current for v in versions):
            versions.append(res)                 # the history may or may not hold the current one
        resolved_at = None
        for i, version in enumerate(versions):
            if _codes(version.get("clinicalStatus"), CONDITION_CLINICAL) & _RESOLVED_STATUSES:
                ended = choice_date(version, "abatement")
                if ended is not None and onset <= ended <= self.as_of:
                    resolved_at = (i, ended)
        if resolved_at is None:
            self.issue("recurrence-undated", "clinicalStatus is recurrence/relapse but no earlier "
                       "version resolved it with an abatement date: the recurrence cannot be dated, "
                       "no time-based flag is raised from it", ref)
            return None
        i, ended = resolved_at
        later = [_updated(v) for v in versions[i + 1:]
                 if not _codes(v.get("clinicalStatus"), CONDITION_CLINICAL) & _RESOLVED_STATUSES]
        changed = next((d for d in later if d is not None), None)
        self.reactivations.append(_Reactivation(ref, site, ended, changed))
        return ConditionFact(ref, site, onset, None, True, ended)

    def date_reactivations(self, facts_oedema: list[Finding]) -> None:
        """Each reactivation becomes a new episode from its first MRI showing oedema at the
        same site after the resolution, or from the day the change was stored, whichever is
        first; not yet on as_of if both are later; undated (an issue) if neither is known."""
        for r in self.reactivations:
            mris = [f.day for f in facts_oedema if f.present and f.site.joint == r.site.joint
                    and (not r.site.sides or not f.site.sides or f.site.sides == r.site.sides)
                    and r.resolved_on < f.day <= self.as_of]
            candidates = [d for d in (min(mris, default=None), r.changed_on) if d is not None]
            if not candidates:
                self.issue("recurrence-undated", "reactivated after its resolution on "
                           f"{r.resolved_on}, but neither a later MRI nor its history dates the "
                           "recurrence: not counted", r.ref)
                self.facts.toh.append(ConditionFact(r.ref, r.site, None, None, False, None))
                continue
            start = min(candidates)
            if start > self.as_of:
                continue
            self.facts.toh.append(ConditionFact(r.ref, r.site, start, None, False, None))

    def _text_diagnosis(self, code: dict[str, Any], ref: str) -> bool:
        """A Condition whose code names TOH (or a synonym) only in text: recognised unless the
        text negates it, doubts it or names it as a history or a question."""
        texts = [code.get("text")] + [c.get("display") for c in code.get("coding") or () if isinstance(c, dict)]
        label = next((x for x in texts if isinstance(x, str) and x.strip()), "")
        assertion = narrative.qualifier(" ".join(x for x in texts if isinstance(x, str)))
        if assertion == narrative.PRESENT:
            codings = ", ".join(f"{c.get('system')}|{c.get('code')}" for c in code.get("coding") or ()
                                if isinstance(c, dict))
            self.issue("diagnosis-from-text", f"TOH recognised from the text {label!r} only"
                       + (f" (its code {codings} is not in the toh-conditions ValueSet)" if codings else
                          " (no code)"), ref, "information")
            return True
        if assertion == narrative.UNCERTAIN:
            self.issue("diagnosis-uncertain", f"the diagnosis {label!r} is uncertain: not followed "
                       "as a TOH episode", ref)
        return False

    # -- Observation ----------------------------------------------------------------------
    def observation(self, res: dict[str, Any]) -> None:
        if res.get("status") in _EXCLUDED_OBS_STATUS:
            return
        code = res.get("code")
        day = observation_date(res)
        if day is None:
            self.issue("missing-date", "Observation without effective[x] or issued: ignored", _ref(res))
            return
        if day > self.as_of:
            return
        ref = _ref(res)
        keys = _keys(code)
        pregnancy = (LOINC, codes.LOINC_PREGNANCY_STATUS) in keys
        if pregnancy or (LOINC, codes.LOINC_BREASTFEEDING_STATUS) in keys:
            value = res.get("valueCodeableConcept")
            positive = self.t.contains(VS_PREGNANCY_BREASTFEEDING, value)
            if not positive and not (_has_code(value, SNOMED, "60001007")
                                     or value_presence(res) == ABSENT):
                self.issue("value-unknown", f"{'pregnancy' if pregnancy else 'breastfeeding'} status "
                           f"{_value_text(res, res.get('code'))!r} is neither positive nor negative: "
                           "ignored", ref)
                return
            point = StatusPoint(ref, day, positive)
            (self.facts.pregnancy if pregnancy else self.facts.breastfeeding).append(point)
            return
        if (TOH_CODES, codes.WEIGHT_BEARING_STATUS) in keys or _mentions_weight_bearing(_texts(code)):
            value = res.get("valueCodeableConcept")
            level = self._wb_level([value], [res.get("valueString")])
            if level is None:
                self.issue("value-unknown", f"weight-bearing status {_value_text(res, code)!r} cannot "
                           "be read as full or restricted: ignored", ref)
            else:
                self.facts.weight_bearing.append(StatusPoint(ref, day, level == _FULL))
            return
        self._findings(res, ref, day)

    def _findings(self, res: dict[str, Any], ref: str, day: date) -> None:
        t = self.t
        imaging = self._imaging(res)
        # (concept naming the finding, presence, where it was read) in the order met.
        found: list[tuple[Any, str]] = []
        for comp in res.get("component") or ():
            if not isinstance(comp, dict):
                continue
            concept = comp.get("code")
            if not self._is_finding(concept, imaging):
                if imaging and _unknown_component(t, concept):
                    self.issue("code-unknown", f"imaging component {_concept_name(concept)!r} is "
                               "not a finding the rules know: not read", ref, "information")
                continue
            found.append((concept, value_presence(comp) or UNKNOWN))
        code = res.get("code")
        value = res.get("valueCodeableConcept")
        if self._is_finding(code, imaging):          # coded as the finding itself
            answer = value_presence(res)
            found.append((code, PRESENT if answer is None else answer))
        elif isinstance(value, dict) and self._is_finding(value, imaging):
            found.append((value, PRESENT))           # valued with the finding
        texts: list[str] = []
        if imaging or found:
            if isinstance(res.get("valueString"), str) and not self._is_finding(code, imaging):
                texts.append(res["valueString"])
            texts += [n["text"] for n in res.get("note") or ()
                      if isinstance(n, dict) and isinstance(n.get("text"), str)]
        site: Site | None = None
        for concept, presence in found:
            if site is None:
                site = read_site(res, t)
            if presence == UNKNOWN:
                self.issue("value-unknown", f"{self._finding_name(concept)}: the value "
                           f"{_value_text(res, concept)!r} cannot be read as present or absent: "
                           "no flag raised from it", ref)
                continue
            if site.joint is None and not imaging:
                self.issue("joint-unknown", "finding at no tracked joint: ignored", ref, "information")
                return
            self._add(ref, day, site, concept, presence == PRESENT, imaging)
        for text in texts:
            self._narrative(res, ref, day, text, imaging)

    def _narrative(self, res: dict[str, Any], ref: str, day: date, text: str, imaging: bool) -> None:
        """The findings a report text names, with their negation and uncertainty."""
        mentions = narrative.read_text(text)
        if not mentions:
            return
        site = read_site(res, self.t)
        for m in mentions:
            if m.assertion == narrative.HYPOTHETICAL:
                continue
            if m.assertion == narrative.UNCERTAIN:
                self.issue("finding-uncertain", f"the report says {m.sentence!r}: "
                           f"{m.name.lower()} is uncertain, no flag raised from it; review the report", ref)
                continue
            here = site
            if m.sides:
                joints, _, _ = parse_text(m.sentence)
                joint = next(iter(joints)) if len(joints) == 1 else site.joint
                here = Site(joint, m.sides)
            if here.joint is None and not imaging:
                continue
            concept = {"coding": [{"system": TOH_CODES, "code": m.key, "display": m.name}]}
            self._add(ref, day, here, concept, m.assertion == narrative.PRESENT, imaging,
                      key=m.key, name=m.name)

    def _is_finding(self, concept: Any, imaging: bool) -> bool:
        if not isinstance(concept, dict):
            return False
        is_avn, is_fracture = self.t.memberships(concept, _FINDING_SETS)
        return is_avn or is_fracture or (imaging and (TOH_CODES, codes.FINDING_OEDEMA) in _keys(concept))

    def _add(self, ref: str, day: date, site: Site, concept: Any, present: bool, imaging: bool,
             key: str | None = None, name: str | None = None) -> None:
        if key is not None:
            is_avn, is_fracture = key in narrative.AVN_KEYS, key in narrative.FRACTURE_KEYS
            is_oedema = imaging and key == narrative.OEDEMA
        else:
            is_avn, is_fracture = self.t.memberships(concept, _FINDING_SETS)
            is_oedema = imaging and (TOH_CODES, codes.FINDING_OEDEMA) in _keys(concept)
        if not (is_oedema or (present and (is_avn or is_fracture))):
            return                                   # absent AVN/fracture findings are not findings
        label = name or (self._finding_name(concept) if present and (is_avn or is_fracture) else "")
        finding = Finding(ref, day, site, label if (is_avn or is_fracture) else "", present, imaging)
        if is_oedema:
            self.facts.oedema.append(finding)
        if present and is_avn:
            self.facts.avn.append(finding)
        if present and is_fracture:
            self.facts.fracture.append(finding)

    def _imaging(self, res: dict[str, Any]) -> bool:
        """An MRI or radiograph: code in mri-joint-codes, category imaging (Observation) or RAD
        (DiagnosticReport, v2-0074), or a code whose text or display names an imaging study."""
        code = res.get("code")
        if self.t.contains(VS_MRI_HIP, code, text="none"):
            return True
        for cat in res.get("category") or ():
            if "imaging" in _codes(cat, OBSERVATION_CATEGORY) or _codes(cat, V2_0074) & {"RAD", "MR", "RX", "CT"}:
                return True
        if isinstance(code, dict):
            names = [code.get("text")] + [c.get("display") for c in code.get("coding") or () if isinstance(c, dict)]
            return any(isinstance(n, str) and set(normalise(n).split()) & _IMAGING_WORDS for n in names)
        return False

    # -- weight-bearing ---------------------------------------------------------------------
    def _wb_level(self, concepts: list[Any], strings: list[Any]) -> str | None:
        """"full" or "restricted" from the guide's weight-bearing codes, else from text
        (service.clinical.weight_bearing_text); None when it cannot be read."""
        for concept in concepts:
            for coding in (concept.get("coding") or ()) if isinstance(concept, dict) else ():
                system, code = coding.get("system"), coding.get("code")
                if system == TOH_CODES and code in _WB_LOCAL:
                    return _WB_LOCAL[code]
                if self.t.contains_code(VS_WEIGHT_BEARING, system, code):   # a clinic's own code
                    shown = self.t.display(VS_WEIGHT_BEARING, system, code) or coding.get("display")
                    level = weight_bearing_level(shown) if shown else None
                    if level is not None:
                        return level
        texts = [t for c in concepts for t in _texts(c)] + [x for x in strings if isinstance(x, str)]
        return weight_bearing_level(" ".join(texts)) if texts else None

    def _wb_order(self, ref: str, day: date | None, concepts: list[Any], strings: list[Any]) -> None:
        """A ServiceRequest or CarePlan activity that sets weight-bearing (coded or in text)."""
        coded = any(isinstance(c, dict) and (self.t.contains(VS_WEIGHT_BEARING, c, text="none") or any(
            x.get("system") == TOH_CODES and x.get("code") in _WB_LOCAL for x in c.get("coding") or ()))
            for c in concepts)
        texts = [t for c in concepts for t in _texts(c)] + [x for x in strings if isinstance(x, str)]
        if not coded and not _mentions_weight_bearing(texts):
            return
        if day is None:
            self.issue("missing-date", "weight-bearing order without a date: cannot be placed in time", ref)
            return
        if day > self.as_of:
            return
        level = self._wb_level(concepts, strings)
        if level is None:
            self.issue("value-unknown", f"weight-bearing order {' '.join(texts)!r} cannot be read as "
                       "full or restricted: ignored", ref)
            return
        self.facts.weight_bearing.append(StatusPoint(ref, day, level == _FULL))

    def service_request(self, res: dict[str, Any]) -> None:
        if res.get("status") not in _SERVICE_REQUEST_STATUSES:
            return
        day = choice_date(res, "occurrence") or parse_date(res.get("authoredOn"))
        self._wb_order(_ref(res), day, [res.get("code"), *(res.get("orderDetail") or ())],
                       [n.get("text") for n in res.get("note") or () if isinstance(n, dict)])

    # -- DiagnosticReport -----------------------------------------------------------------
    def diagnostic_report(self, res: dict[str, Any]) -> None:
        if res.get("status") in _EXCLUDED_OBS_STATUS:
            return
        ref = _ref(res)
        day = observation_date(res)
        if day is None:
            if res.get("conclusion") or res.get("conclusionCode"):
                self.issue("missing-date", "DiagnosticReport without effective[x] or issued: "
                           "its conclusion cannot be placed in time", ref)
            return
        if day > self.as_of:
            return
        imaging = self._imaging(res)
        for concept in res.get("conclusionCode") or ():
            if not isinstance(concept, dict):
                continue
            if self._is_finding(concept, imaging):
                self._add(ref, day, read_site(res, self.t), concept, True, imaging)
            elif isinstance(concept.get("text"), str):
                self._narrative(res, ref, day, concept["text"], imaging)
        if isinstance(res.get("conclusion"), str):
            self._narrative(res, ref, day, res["conclusion"], imaging)

    def _finding_name(self, concept: dict[str, Any]) -> str:
        """Coding.display, else the display the AVN / fracture ValueSet gives, else text or code."""
        for coding in concept.get("coding") or ():
            if coding.get("display"):
                return str(coding["display"])
            for url in (VS_AVN_FEATURES, VS_INSUFFICIENCY_FRACTURE):
                shown = self.t.display(url, coding.get("system"), coding.get("code"))
                if shown:
                    return shown
        return _concept_name(concept)

    # -- Medication orders and care plans -------------------------------------------------
    def _medication(self, owner: dict[str, Any], concept: Any, reference: Any) -> Any:
        if isinstance(concept, dict):
            return concept
        target = reference.get("reference") if isinstance(reference, dict) else None
        if not target:
            return None
        if target.startswith("#"):
            for contained in owner.get("contained") or ():
                if contained.get("id") == target[1:]:
                    return contained.get("code")
            return None
        ref = parse_reference(target, self.base_urls)   # also .../_history/n and <base>/Medication/id
        if ref is None or ref.target_type != "Medication" or ref.target_id is None:
            return None                  # another type, or another server's URL
        med = self.medications.get(ref.target_id)
        return med.get("code") if med else None

    def _is_bisphosphonate(self, concept: Any, ref: str) -> bool:
        """Member of the bisphosphonates ValueSet by code or by name; a medication with codes
        but no name that the ValueSet does not list is reported (it may be one)."""
        if self.t.memberships(concept, (VS_BISPHOSPHONATES,), "words")[0]:
            return True
        if isinstance(concept, dict) and concept.get("coding") and not concept.get("text") and not any(
                isinstance(c, dict) and c.get("display") for c in concept["coding"]):
            codings = ", ".join(f"{c.get('system')}|{c.get('code')}" for c in concept["coding"] if isinstance(c, dict))
            self.issue("code-unknown", f"medication {codings} has no name and is not a code the rules "
                       "know: not checked for bisphosphonates", ref, "information")
        return False

    def medication_request(self, res: dict[str, Any]) -> None:
        status = res.get("status")
        if status not in _MEDREQ_STATUSES and status != "stopped":
            return
        ref = _ref(res)
        concept = self._medication(res, res.get("medicationCodeableConcept"), res.get("medicationReference"))
        if not self._is_bisphosphonate(concept, ref):
            return
        bounds: dict[str, Any] = {}
        for dosage in res.get("dosageInstruction") or ():
            bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
            if bounds:
                break
        validity = (res.get("dispenseRequest") or {}).get("validityPeriod")
        start = parse_date(res.get("authoredOn")) or period_start(bounds) or period_start(validity)
        end = period_end(validity) or period_end(bounds)
        if status == "stopped":
            stopped = next((_updated(v) for v in _versions(self.history, ref) if v.get("status") == "stopped"), None)
            candidates = [d for d in (stopped or _updated(res), end) if d is not None]
            if not candidates:
                self.issue("missing-date", "stopped order without a stop date in its history: "
                           "counted as active on its start day only", ref, "information")
                end = start
            else:
                end = max(start, min(candidates)) if start else min(candidates)
        self._exposure(ref, concept, start, end, status in ("completed", "stopped"))

    def care_plan(self, res: dict[str, Any]) -> None:
        if res.get("status") not in _CAREPLAN_STATUSES:
            return
        plan_start = period_start(res.get("period")) or parse_date(res.get("created"))
        plan_end = period_end(res.get("period"))
        for activity in res.get("activity") or ():
            detail = activity.get("detail") or {}
            if detail.get("status") in _EXCLUDED_ACTIVITY_STATUS:
                continue
            scheduled_day = period_start(detail.get("scheduledPeriod")) or \
                parse_date(detail.get("scheduledString")) or plan_start
            self._wb_order(_ref(res), scheduled_day, [detail.get("code")], [detail.get("description")])
            concept = self._medication(res, detail.get("productCodeableConcept"), detail.get("productReference"))
            if not self._is_bisphosphonate(concept, _ref(res)):
                continue
            scheduled = detail.get("scheduledPeriod")
            start = period_start(scheduled) or parse_date(detail.get("scheduledString")) or plan_start
            end = period_end(scheduled) or plan_end
            self._exposure(_ref(res), concept, start, end,
                           res.get("status") == "completed" or detail.get("status") == "completed")

    def _exposure(self, ref: str, concept: Any, start: date | None, end: date | None,
                  completed: bool) -> None:
        if start is None:
            self.issue("missing-date", "bisphosphonate with no authoredOn or period start: "
                       "cannot be placed in time", ref)
            return
        if start > self.as_of:
            return
        if completed and end is None:
            end = start
        self.facts.exposures.append(Exposure(ref, _concept_name(concept), start, end))


def read_facts(resources: Iterable[dict[str, Any]], as_of: date, terminology: Terminology,
               base_urls: tuple[str, ...] = (),
               history: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> Facts:
    """The Facts of one patient's resources as of `as_of` (order of the input does not matter).
    A reference to one of `base_urls` (this server) counts as a local one. `history` maps
    "Type/id" to earlier versions of that resource (dicts with meta.versionId and
    meta.lastUpdated, any order): it dates a reactivated Condition and a stopped order."""
    reader = _Reader(as_of, terminology, base_urls, history or {})
    buckets: dict[str, list[dict[str, Any]]] = {}
    for res in resources:
        if isinstance(res, dict):
            buckets.setdefault(res.get("resourceType", ""), []).append(res)
    for med in buckets.get("Medication", ()):
        if med.get("id"):
            reader.medications[med["id"]] = med
    for res in buckets.get("Condition", ()):
        reader.condition(res)
    for res in buckets.get("Observation", ()):
        reader.observation(res)
    for res in buckets.get("DiagnosticReport", ()):
        reader.diagnostic_report(res)
    reader.date_reactivations(reader.facts.oedema)
    for res in buckets.get("MedicationRequest", ()):
        reader.medication_request(res)
    for res in buckets.get("CarePlan", ()):
        reader.care_plan(res)
    for res in buckets.get("ServiceRequest", ()):
        reader.service_request(res)
    return reader.facts
