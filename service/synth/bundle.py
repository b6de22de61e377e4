"""A synthetic Course written as one FHIR R4 transaction Bundle, coded as EHRs send it.

Shape (https://hl7.org/fhir/R4/http.html#transaction): every entry a POST with a urn:uuid
fullUrl; the Patient a conditional create on its record number (ifNoneExist), so posting a
bundle twice adds the course again but not the patient. Only what is known on the course's
`as_of` is written (a Condition is written with its state on that day).

Codes: only those the guide holds (fhir_profiles/ ValueSets and the local CodeSystem) or that
../shared/clinical/TOH.md marks verified:
- TOH Conditions: ICD-10-CM M81.6 with the guide's local code (transient-osteoporosis-hip, or
  regional-migratory-osteoporosis for a migration), bodySite SNOMED CT joint (24136001 hip,
  72696002 knee, 70258002 ankle, 56459004 foot) and side (7771000 left, 24028007 right);
  profile toh-condition.
- hip MRI: LOINC 36020-6 / 36022-2 with the guide's finding components (profile
  toh-mri-observation) and a Procedure SNOMED CT 241639000; an MRI of another joint has no
  verified code: an imaging Observation with text only and the same components.
- AVN: the follow-up MRI's components (focal subchondral lesion, double-line sign) and a
  Condition ICD-10-CM M87.051 / M87.052 with SNOMED CT 444849002.
- radiographs: no verified code; an imaging Observation with text and a narrative value.
- pain: LOINC 72514-3 (toh-pain-score); weight-bearing: the guide's codes (toh-weight-bearing-status);
  densitometry in DXA_SHARE of the hips: LOINC 80946-7 / 80945-9 (DXA hip T-score, left / right).
- variety as EHRs send it: half the TOH Conditions carry ICD-10-CM alone (with text), and some
  body sites give the side by the guide's laterality extension rather than a second coding.
- pregnancy: LOINC 82810-3 valued SNOMED CT 77386006 / 60001007 (toh-pregnancy-status),
  breastfeeding LOINC 63895-7 valued 413712001 (toh-breastfeeding-status), delivery ICD-10-CM O80.
- bisphosphonates: zoledronic acid RxNorm 77655 with ATC M05BA08; alendronate ATC M05BA04 (its
  RxNorm code is not verified).
"""
from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from service.fhir.canonical import (
    ATC, CONDITION_CATEGORY, EXT_LATERALITY, CONDITION_CLINICAL, CONDITION_VER_STATUS, ICD10CM, LOINC, OBSERVATION_CATEGORY,
    SD_BREASTFEEDING_STATUS, SD_PAIN_SCORE, SD_PREGNANCY_STATUS, SD_TOH_CONDITION, SD_TOH_MRI,
    SD_WEIGHT_BEARING, SNOMED, TOH_CODES,
)

from .course import Course, Episode, rng_uuid

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
MRN_SYSTEM = "https://fhir.toh-service.org/NamingSystem/synthetic-mrn"

JOINT_CODES = {"hip": ("24136001", "Hip joint structure"), "knee": ("72696002", "Knee region structure"),
               "ankle": ("70258002", "Ankle joint structure"), "foot": ("56459004", "Foot structure")}
SIDE_CODES = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
DXA_HIP = {"left": ("80946-7", "DXA Hip [T-score] Bone density - left"),
           "right": ("80945-9", "DXA Hip [T-score] Bone density - right")}
DXA_SHARE = 0.3
MRI_HIP = {"left": ("36020-6", "MR Hip - left"), "right": ("36022-2", "MR Hip - right")}
DRUGS: dict[str, tuple[list[tuple[str, str, str]], str]] = {
    "zoledronic acid": ([(RXNORM, "77655", "zoledronic acid"), (ATC, "M05BA08", "zoledronic acid")],
                        "Zoledronic acid 5 mg/100 mL solution for infusion"),
    "alendronic acid": ([(ATC, "M05BA04", "alendronic acid")], "Alendronate 70 mg tablet, once weekly"),
}


def _cc(*codings: tuple[str, str, str], text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}
    if text:
        concept["text"] = text
    return concept


def _body_site(joint: str, side: str, *, extension: bool = False) -> dict[str, Any]:
    """The joint coded, and the side as a second coding or (extension=True) as the guide's
    laterality extension."""
    text = f"{side.capitalize()} {joint}"
    if not extension:
        return _cc((SNOMED, *JOINT_CODES[joint]), (SNOMED, *SIDE_CODES[side]), text=text)
    return {"extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": _cc((SNOMED, *SIDE_CODES[side]))}],
            **_cc((SNOMED, *JOINT_CODES[joint]), text=text)}


def _category(system: str, code: str, display: str) -> list[dict[str, Any]]:
    return [_cc((system, code, display))]


class _Writer:
    """Accumulates the entries of one patient's bundle."""

    def __init__(self, course: Course) -> None:
        self.course = course
        self.rng = random.Random(f"toh-synth-fhir:{course.seed}:{course.index}")
        self.entries: list[dict[str, Any]] = []
        self.patient = f"urn:uuid:{course.patient_uuid}"

    def at(self, day: date) -> str:
        """A dateTime on `day` during clinic hours (UTC)."""
        return f"{day.isoformat()}T{self.rng.randint(8, 16):02d}:{self.rng.choice((0, 15, 30, 45)):02d}:00Z"

    def add(self, resource: dict[str, Any], *, full_url: str | None = None, if_none_exist: str | None = None) -> str:
        url = full_url or f"urn:uuid:{rng_uuid(self.rng)}"
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist:
            request["ifNoneExist"] = if_none_exist
        self.entries.append({"fullUrl": url, "resource": resource, "request": request})
        return url

    def observation(self, profile: str | None, code: dict[str, Any], day: date, *,
                    category: tuple[str, str] | None = None, **rest: Any) -> str:
        resource: dict[str, Any] = {"resourceType": "Observation"}
        if profile:
            resource["meta"] = {"profile": [profile]}
        resource["status"] = "final"
        if category:
            resource["category"] = _category(OBSERVATION_CATEGORY, *category)
        resource.update({"code": code, "subject": {"reference": self.patient}, "effectiveDateTime": self.at(day)})
        resource.update(rest)
        return self.add(resource)


def _findings(oedema: bool, effusion: bool, avn: bool) -> list[dict[str, Any]]:
    values = (("bone-marrow-oedema-diffuse", "Diffuse bone marrow oedema", oedema),
              ("joint-effusion", "Joint effusion", effusion),
              ("focal-subchondral-lesion", "Focal subchondral lesion", avn),
              ("double-line-sign", "Double-line sign", avn),
              ("crescent-sign", "Crescent sign", False),
              ("subchondral-fracture-line", "Subchondral fracture line", False))
    return [{"code": _cc((TOH_CODES, code, display)), "valueBoolean": value} for code, display, value in values]


def _mri(w: _Writer, episode: Episode, day: date, *, oedema: bool, avn: bool, reason: str | None) -> str:
    """An MRI of the episode's joint on `day`, with the guide's finding components."""
    site = _body_site(episode.joint, episode.side)
    components = _findings(oedema, oedema and w.rng.random() < 0.6, avn)
    extra: dict[str, Any] = {"bodySite": site, "component": components}
    if episode.joint == "hip":
        code = _cc((LOINC, *MRI_HIP[episode.side]))
        w.add({"resourceType": "Procedure", "status": "completed",
               "code": _cc((SNOMED, "241639000", "Magnetic resonance imaging of hip"),
                           text=f"MRI {episode.side} hip"),
               "subject": {"reference": w.patient}, "performedDateTime": w.at(day), "bodySite": [site]})
        return w.observation(SD_TOH_MRI, code, day, category=("imaging", "Imaging"), **extra)
    code = {"text": f"MR {episode.joint.capitalize()} - {episode.side}"}
    if reason:
        extra["note"] = [{"text": reason}]
    return w.observation(None, code, day, category=("imaging", "Imaging"), **extra)


def _condition(w: _Writer, episode: Episode, as_of: date) -> str:
    if episode.kind == "migration":
        local = (TOH_CODES, "regional-migratory-osteoporosis", "Regional migratory osteoporosis")
        text = f"Regional migratory osteoporosis, {episode.side} {episode.joint}"
    else:
        local = (TOH_CODES, "transient-osteoporosis-hip", "Transient osteoporosis of the hip")
        text = f"Transient osteoporosis of the {episode.side} hip"
    resolved = episode.resolved is not None and episode.resolved <= as_of
    resource: dict[str, Any] = {
        "resourceType": "Condition", "meta": {"profile": [SD_TOH_CONDITION]},
        "clinicalStatus": _cc((CONDITION_CLINICAL, "resolved" if resolved else "active",
                               "Resolved" if resolved else "Active")),
        "verificationStatus": _cc((CONDITION_VER_STATUS, "confirmed", "Confirmed")),
        "category": _category(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"),
        "code": (_cc((ICD10CM, "M81.6", "Localized osteoporosis [Lequesne]"), local, text=text)
                 if w.rng.random() < 0.5 else _cc((ICD10CM, "M81.6", "Localized osteoporosis [Lequesne]"), text=text)),
        "bodySite": [_body_site(episode.joint, episode.side, extension=w.rng.random() < 0.3)],
        "subject": {"reference": w.patient},
        "onsetDateTime": episode.onset.isoformat(),
    }
    if resolved:
        assert episode.resolved is not None
        resource["abatementDateTime"] = episode.resolved.isoformat()
    resource["recordedDate"] = episode.diagnosed.isoformat()
    return w.add(resource)


def _weight_bearing(w: _Writer, episode: Episode, day: date, level: str, display: str) -> None:
    w.observation(SD_WEIGHT_BEARING, _cc((TOH_CODES, "weight-bearing-status", "Weight-bearing status")), day,
                  valueCodeableConcept=_cc((TOH_CODES, level, display)),
                  bodySite=_body_site(episode.joint, episode.side))


def _densitometry(w: _Writer, episode: Episode, as_of: date) -> None:
    """DXA hip T-scores (LOINC 80946-7 left / 80945-9 right) at 3 months and, once resolved,
    at resolution: low while the bone is demineralised, near normal after."""
    code = _cc((LOINC, *DXA_HIP[episode.side]))
    low = round(w.rng.uniform(-2.6, -1.2), 1)
    points = [(episode.onset + timedelta(days=91), low)]
    if episode.resolved is not None:
        points.append((episode.resolved, round(min(0.5, low + w.rng.uniform(1.0, 2.0)), 1)))
    for day, score in points:
        if day <= as_of:
            w.observation(None, code, day, category=("imaging", "Imaging"),
                          valueQuantity={"value": score, "unit": "{T-score}", "system": UCUM, "code": "{T-score}"})


def _episode(w: _Writer, episode: Episode, as_of: date, others: list[Episode]) -> str:
    """The Condition and the records of one episode; full weight-bearing from its resolution
    only if no other episode is active that day (weight-bearing is one instruction per patient)."""
    condition = _condition(w, episode, as_of)
    _mri(w, episode, episode.diagnosed, oedema=True, avn=False, reason="Pain on weight-bearing, no trauma")
    _weight_bearing(w, episode, episode.diagnosed, "partial-weight-bearing", "Partial (protected) weight-bearing")
    if episode.radiograph <= as_of:
        label = f"XR {episode.joint.capitalize()} 2 views - {episode.side}"
        w.observation(None, {"text": label}, episode.radiograph, category=("imaging", "Imaging"),
                      bodySite=_body_site(episode.joint, episode.side),
                      valueString=f"Regional osteopenia around the {episode.side} {episode.joint}. "
                                  "Joint space preserved.")
    if episode.joint == "hip" and w.rng.random() < DXA_SHARE:
        _densitometry(w, episode, as_of)
    if episode.avn_on is not None and episode.avn_on <= as_of:
        _mri(w, episode, episode.avn_on, oedema=True, avn=True, reason="Persistent pain")
        necrosis = {"left": ("M87.052", "Idiopathic aseptic necrosis of left femur"),
                    "right": ("M87.051", "Idiopathic aseptic necrosis of right femur")}[episode.side]
        w.add({"resourceType": "Condition",
               "clinicalStatus": _cc((CONDITION_CLINICAL, "active", "Active")),
               "verificationStatus": _cc((CONDITION_VER_STATUS, "provisional", "Provisional")),
               "category": _category(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"),
               "code": _cc((ICD10CM, *necrosis), (SNOMED, "444849002", "Avascular necrosis of bone of hip")),
               "bodySite": [_body_site(episode.joint, episode.side)], "subject": {"reference": w.patient},
               "onsetDateTime": episode.avn_on.isoformat(), "recordedDate": episode.avn_on.isoformat()})
    if episode.resolved is not None and episode.resolved <= as_of:
        if not any(o.active_on(episode.resolved) for o in others):
            _weight_bearing(w, episode, episode.resolved, "full-weight-bearing", "Full weight-bearing")
        if episode.joint == "hip":
            _mri(w, episode, episode.resolved, oedema=False, avn=False, reason=None)
    return condition


def course_bundle(course: Course) -> dict[str, Any]:
    """The transaction Bundle of `course` (plain JSON-ready dicts, same input -> same output)."""
    w = _Writer(course)
    as_of = course.as_of
    prefix = {"male": "Mr.", "female": "Ms."}[course.sex]
    w.add({"resourceType": "Patient",
           "identifier": [{"use": "usual", "type": _cc(("http://terminology.hl7.org/CodeSystem/v2-0203", "MR",
                                                        "Medical record number")),
                           "system": MRN_SYSTEM, "value": course.mrn}],
           "name": [{"use": "official", "family": course.family, "given": [course.given], "prefix": [prefix]}],
           "gender": course.sex, "birthDate": course.birth_date.isoformat()},
          full_url=w.patient, if_none_exist=f"identifier={MRN_SYSTEM}|{course.mrn}")
    first_condition = None
    for episode in sorted(course.episodes, key=lambda e: e.onset):
        reference = _episode(w, episode, as_of, [o for o in course.episodes if o is not episode])
        first_condition = first_condition or reference
    first = min(course.episodes, key=lambda e: e.onset) if course.episodes else None
    if course.delivery is not None and first is not None:
        if course.group == "pregnant":
            w.observation(SD_PREGNANCY_STATUS, _cc((LOINC, "82810-3", "Pregnancy status")), first.diagnosed,
                          valueCodeableConcept=_cc((SNOMED, "77386006", "Pregnant")))
        if course.delivery <= as_of:
            w.add({"resourceType": "Condition",
                   "clinicalStatus": _cc((CONDITION_CLINICAL, "resolved", "Resolved")),
                   "verificationStatus": _cc((CONDITION_VER_STATUS, "confirmed", "Confirmed")),
                   "category": _category(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis"),
                   "code": _cc((ICD10CM, "O80", "Encounter for full-term uncomplicated delivery")),
                   "subject": {"reference": w.patient}, "onsetDateTime": course.delivery.isoformat(),
                   "abatementDateTime": course.delivery.isoformat(),
                   "recordedDate": course.delivery.isoformat()})
        if course.group == "postpartum":
            w.observation(SD_BREASTFEEDING_STATUS, _cc((LOINC, "63895-7", "Breastfeeding status")), first.diagnosed,
                          valueCodeableConcept=_cc((SNOMED, "413712001", "Breastfeeding (mother)")))
    drug = course.bisphosphonate
    if drug is not None and drug.ordered <= as_of:
        codings, text = DRUGS[drug.drug]
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest", "status": "active" if drug.valid_until >= as_of else "completed",
            "intent": "order", "medicationCodeableConcept": _cc(*codings, text=text),
            "subject": {"reference": w.patient}, "authoredOn": w.at(drug.ordered),
            "dispenseRequest": {"validityPeriod": {"start": drug.ordered.isoformat(),
                                                   "end": drug.valid_until.isoformat()}}}
        if first_condition:
            request["reasonReference"] = [{"reference": first_condition}]
        w.add(request)
    pain_code = _cc((LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"))
    for day, score in course.pain:
        w.observation(SD_PAIN_SCORE, pain_code, day, category=("survey", "Survey"),
                      valueQuantity={"value": score, "unit": "{score}", "system": UCUM, "code": "{score}"})
    return {"resourceType": "Bundle", "type": "transaction", "entry": w.entries}
