"""Small factories for FHIR JSON test resources and a test Terminology.

Dates are given as months (and days) after ONSET so tables read like a clinical course.
"""
from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from dateutil.relativedelta import relativedelta

from service.clinical import Terminology
from service.fhir.canonical import (
    ATC, CONDITION_CLINICAL, CONDITION_VER_STATUS, EXT_LATERALITY, ICD10CM, LOINC,
    OBSERVATION_CATEGORY, SNOMED, TOH_CODES, VS_AVN_FEATURES, VS_BISPHOSPHONATES,
    VS_INSUFFICIENCY_FRACTURE, VS_LATERALITY, VS_MRI_HIP, VS_PREGNANCY_BREASTFEEDING, VS_PREGNANCY_ENDED,
    VS_TOH_CONDITIONS, VS_TRACKED_JOINTS,
)

ONSET = date(2023, 1, 10)
PATIENT = "Patient/p1"
JOINT_CODE = {"hip": "24136001", "knee": "49076000", "ankle": "70258002", "foot": "56459004"}
SIDE_CODE = {"left": "7771000", "right": "24028007", "both": "51440002"}
MRI_HIP_CODE = {"left": "36020-6", "right": "36022-2", "both": "36017-2", None: "36013-1"}

_ids = itertools.count(1)


def day(months: int = 0, days: int = 0, base: date = ONSET) -> date:
    """ONSET + months + days."""
    return base + relativedelta(months=months, days=days)


def _iso(when: date | str | None) -> str | None:
    return when.isoformat() if isinstance(when, date) else when


def _id(prefix: str, given: str | None) -> str:
    return given or f"{prefix}{next(_ids)}"


def cc(system: str, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def toh_code(code: str = "transient-osteoporosis-hip") -> dict[str, Any]:
    return cc(TOH_CODES, code)


def body_site(joint: str | None, side: str | None, style: str = "coded") -> dict[str, Any]:
    """bodySite in one of the shapes EHRs send:
    coded     joint coding + laterality extension (profile shape), codings without display
    qualifier joint coding + laterality as a second coding
    text      bodySite.text only, e.g. "left hip"
    joint     joint coding only (side unknown)"""
    if style == "text":
        return {"text": f"{side or ''} {joint or ''}".strip()}
    site: dict[str, Any] = {"coding": [{"system": SNOMED, "code": JOINT_CODE[joint]}]} if joint else {}
    if side and style == "coded":
        site["extension"] = [{"url": EXT_LATERALITY,
                              "valueCodeableConcept": cc(SNOMED, SIDE_CODE[side])}]
    elif side and style == "qualifier":
        site.setdefault("coding", []).append({"system": SNOMED, "code": SIDE_CODE[side]})
    return site


def condition(site: str | None = "left hip", onset: date | None = ONSET, *, id: str | None = None,
              status: str = "active", abated: date | None = None, verification: str = "confirmed",
              code: dict[str, Any] | None = None, style: str = "coded",
              recorded: date | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TOH Condition at "left hip" / "right knee" / "hip" (side unknown) / None (no bodySite)."""
    res: dict[str, Any] = {
        "resourceType": "Condition", "id": _id("c", id), "subject": {"reference": PATIENT},
        "code": code or toh_code(),
        "clinicalStatus": cc(CONDITION_CLINICAL, status),
        "verificationStatus": cc(CONDITION_VER_STATUS, verification),
    }
    if body is not None:
        res["bodySite"] = [body]
    elif site:
        words = site.split()
        side, joint = (words[0], words[1]) if len(words) == 2 else (None, words[0])
        res["bodySite"] = [body_site(joint, side, style)]
    if onset:
        res["onsetDateTime"] = _iso(onset)
    if abated:
        res["abatementDateTime"] = _iso(abated)
    if recorded:
        res["recordedDate"] = _iso(recorded)
    return res


def resolved(site: str, onset: date, abated: date, **kw: Any) -> dict[str, Any]:
    return condition(site, onset, status="resolved", abated=abated, **kw)


def mri(when: date, side: str | None = "left", joint: str = "hip", *, id: str | None = None,
        status: str = "final", **findings: bool) -> dict[str, Any]:
    """An MRI Observation; findings as keyword flags: oedema=True, double_line_sign=False...
    A hip MRI is coded with the LOINC laterality code; other joints get bodySite + category."""
    names = {"oedema": "bone-marrow-oedema-diffuse"}
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": _id("mri", id), "status": status,
        "subject": {"reference": PATIENT}, "effectiveDateTime": _iso(when),
        "category": [cc(OBSERVATION_CATEGORY, "imaging")],
        "component": [{"code": toh_code(names.get(k, k.replace("_", "-"))), "valueBoolean": v}
                       for k, v in findings.items()],
    }
    if joint == "hip":
        res["code"] = cc(LOINC, MRI_HIP_CODE[side])
    else:
        res["code"] = {"text": f"MRI {joint}"}
        res["bodySite"] = body_site(joint, side)
    return res


def radiograph(when: date, site: str = "left hip", **findings: bool) -> dict[str, Any]:
    side, joint = site.split()
    return {"resourceType": "Observation", "id": _id("xr", None), "status": "final",
            "subject": {"reference": PATIENT}, "effectiveDateTime": _iso(when),
            "code": {"text": "XR hip"}, "bodySite": {"text": site},
            "component": [{"code": toh_code(k.replace("_", "-")), "valueBoolean": v}
                          for k, v in findings.items()]}


def pain(when: date, score: int, *, id: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": _id("pain", id), "status": "final",
            "subject": {"reference": PATIENT}, "effectiveDateTime": _iso(when),
            "code": cc(LOINC, "72514-3"), "valueInteger": score}


def weight_bearing(when: date, level: str = "full-weight-bearing", *, id: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": _id("wb", id), "status": "final",
            "subject": {"reference": PATIENT}, "effectiveDateTime": _iso(when),
            "code": toh_code("weight-bearing-status"), "valueCodeableConcept": toh_code(level)}


def pregnancy_status(when: date, pregnant: bool = True, *, id: str | None = None) -> dict[str, Any]:
    value = cc(SNOMED, "77386006", "Pregnant") if pregnant else cc(SNOMED, "60001007", "Not pregnant")
    return {"resourceType": "Observation", "id": _id("preg", id), "status": "final",
            "subject": {"reference": PATIENT}, "effectiveDateTime": _iso(when),
            "code": cc(LOINC, "82810-3"), "valueCodeableConcept": value}


def breastfeeding_status(when: date, feeding: bool = True) -> dict[str, Any]:
    value = cc(SNOMED, "413712001") if feeding else {"text": "Not breastfeeding"}
    return {"resourceType": "Observation", "id": _id("bf", None), "status": "final",
            "subject": {"reference": PATIENT}, "effectiveDateTime": _iso(when),
            "code": cc(LOINC, "63895-7"), "valueCodeableConcept": value}


def drug(name: str | None = None, atc: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if atc:
        concept["coding"] = [{"system": ATC, "code": atc}]
    if name:
        concept["text"] = name
    return concept


def med_request(when: date, medication: dict[str, Any] | None = None, *, status: str = "active",
                end: date | None = None, id: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": _id("mr", id), "status": status,
        "intent": "order", "subject": {"reference": PATIENT}, "authoredOn": _iso(when),
        "medicationCodeableConcept": medication or drug("Alendronate 70 mg tablet weekly"),
    }
    if end:
        res["dispenseRequest"] = {"validityPeriod": {"start": _iso(when), "end": _iso(end)}}
    return res


def care_plan(start: date, product: dict[str, Any], *, end: date | None = None,
              status: str = "active") -> dict[str, Any]:
    period = {"start": _iso(start)} | ({"end": _iso(end)} if end else {})
    return {"resourceType": "CarePlan", "id": _id("cp", None), "status": status, "intent": "plan",
            "subject": {"reference": PATIENT}, "period": period,
            "activity": [{"detail": {"kind": "MedicationRequest", "status": "scheduled",
                                     "productCodeableConcept": product}}]}


def pregnant_condition(onset: date) -> dict[str, Any]:
    return condition(None, onset, code=cc(SNOMED, "77386006", "Pregnant"))


# -- a Terminology of small ValueSets, independent of fhir_profiles/ ---------------------------
def _vs(url: str, *includes: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "url": url, "status": "active",
            "compose": {"include": list(includes)}}


def _concepts(system: str, *pairs: tuple[str, str], designations: dict[str, list[str]] | None = None
              ) -> dict[str, Any]:
    designations = designations or {}
    return {"system": system, "concept": [
        {"code": c, "display": d, **({"designation": [{"value": v} for v in designations[c]]}
                                     if c in designations else {})}
        for c, d in pairs]}


def small_valuesets() -> list[dict[str, Any]]:
    return [
        _vs(VS_TOH_CONDITIONS,
            _concepts(TOH_CODES, ("transient-osteoporosis-hip", "Transient osteoporosis of the hip"),
                      ("bone-marrow-oedema-syndrome", "Bone marrow oedema syndrome")),
            _concepts(ICD10CM, ("M81.6", "Localized osteoporosis [Lequesne]"))),
        _vs(VS_TRACKED_JOINTS,
            _concepts(SNOMED, ("24136001", "Hip joint structure"), ("2812003", "Structure of head of femur"),
                      ("49076000", "Knee joint structure"), ("70258002", "Ankle joint structure"),
                      ("56459004", "Foot structure"))),
        _vs(VS_LATERALITY, _concepts(SNOMED, ("7771000", "Left"), ("24028007", "Right"),
                                     ("51440002", "Right and left"))),
        _vs(VS_AVN_FEATURES,
            _concepts(TOH_CODES, ("focal-subchondral-lesion", "Focal subchondral lesion"),
                      ("double-line-sign", "Double-line sign"), ("crescent-sign", "Crescent sign")),
            _concepts(SNOMED, ("444849002", "Avascular necrosis of bone of hip"))),
        _vs(VS_INSUFFICIENCY_FRACTURE,
            _concepts(TOH_CODES, ("subchondral-fracture-line", "Subchondral fracture line"),
                      ("subchondral-insufficiency-fracture", "Subchondral insufficiency fracture"))),
        _vs(VS_BISPHOSPHONATES,
            {"system": ATC, "filter": [{"property": "concept", "op": "is-a", "value": "M05BA"}]},
            _concepts(ATC, ("M05BA04", "alendronic acid"), ("M05BA08", "zoledronic acid"),
                      designations={"M05BA04": ["Fosamax"]})),
        _vs(VS_PREGNANCY_BREASTFEEDING,
            _concepts(SNOMED, ("77386006", "Pregnant"), ("413712001", "Breastfeeding (mother)"))),
        _vs(VS_PREGNANCY_ENDED, _concepts(ICD10CM, ("O80", "Encounter for full-term uncomplicated delivery"))),
        _vs(VS_MRI_HIP, _concepts(LOINC, ("36013-1", "MR Hip"), ("36020-6", "MR Hip - left"),
                                  ("36022-2", "MR Hip - right"), ("36017-2", "MR Hip - bilateral"))),
    ]


def small_terminology() -> Terminology:
    return Terminology(small_valuesets())

