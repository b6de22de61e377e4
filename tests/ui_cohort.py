"""Three patients for the page tests, the page benchmark and the screenshots, with dates
relative to a given `today`, written like an EHR writes them: one FHIR transaction Bundle over
REST, then the completed reviews as Task updates.

- ui-p1 "Thomas Becker" (m, 49): left hip since today-700 d, still active (delayed resolution),
  AVN features on the MRI of today-460 d, monthly pain scores for two years; migration to the
  right knee at today-42 d, whose 6-week review (planned by the service) is due today. The hip's
  past reviews come from the EHR's history as Tasks (the service plans only windows still
  ahead): 6 weeks and 3, 6 and 9 months completed, the 12-month one still open (overdue).
- ui-p2 "Maria Rossi" (f, 33, post-partum): left hip since today-80 d: the 6-week review (an
  EHR Task) overdue, the 3-month one (planned by the service) due within 14 days.
- ui-p3 "Jan Novak" (m, 52): left hip from today-400 d, resolved at today-150 d, with a
  subchondral fracture line on the MRI of today-300 d (insufficiency fracture).

    load(send, today)   # send(method, path, body or None) -> response JSON; raises on failure

"""
from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from service.fhir.canonical import (CONDITION_CLINICAL, CONDITION_VER_STATUS, EXT_LATERALITY, LOINC,
                                    OBSERVATION_CATEGORY, PD_TOH_PROTOCOL, SNOMED, TOH_CODES)

Send = Callable[[str, str, "dict[str, Any] | None"], Any]
HIP, KNEE, LEFT, RIGHT = "24136001", "49076000", "7771000", "24028007"
MRN = "https://hospital.example.org/mrn"
P1, P2, P3 = "ui-p1", "ui-p2", "ui-p3"
# the hip reviews of ui-p1 from the EHR's history: (action, title, days after onset, status)
P1_HIP_REVIEWS = (("review-6w", "Review at 6 weeks", 42, "completed"), ("review-3m", "Review at 3 months", 91, "completed"),
                  ("review-6m", "Review at 6 months", 182, "completed"),
                  ("review-9m", "Review at 9 months", 273, "completed"),
                  ("review-12m", "Review at 12 months", 365, "requested"))


def _site(joint: str, side: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": joint}], "text": text,
            "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": side}]}}]}


def _patient(pid: str, given: str, family: str, gender: str, born: date, mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"use": "official", "family": family, "given": [given]}], "gender": gender,
            "birthDate": born.isoformat()}


def _condition(cid: str, pid: str, joint: str, side: str, text: str, onset: date,
               resolved: date | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved" if resolved else "active"}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VER_STATUS, "code": "confirmed"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M81.6",
                             "display": "Localized osteoporosis [Lequesne]"},
                            {"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
        "bodySite": [_site(joint, side, text)], "onsetDateTime": onset.isoformat(),
        "recordedDate": (onset + timedelta(days=3)).isoformat()}
    if resolved:
        resource["abatementDateTime"] = resolved.isoformat()
    return resource


def _mri(oid: str, pid: str, joint: str, side: str, text: str, when: date, **findings: bool) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging"}]}],
            "code": {"coding": [{"system": LOINC, "code": "36013-1", "display": "MR Hip"}], "text": f"MRI {text}"},
            "effectiveDateTime": when.isoformat(), "bodySite": _site(joint, side, text),
            "component": [{"code": {"coding": [{"system": TOH_CODES, "code": code.replace("_", "-")}]},
                           "valueBoolean": present} for code, present in findings.items()]}


def _pain(oid: str, pid: str, when: date, score: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey"}]}],
            "code": {"coding": [{"system": LOINC, "code": "72514-3",
                                 "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported"}]},
            "effectiveDateTime": when.isoformat(),
            "valueQuantity": {"value": score, "unit": "{score}", "system": "http://unitsofmeasure.org",
                              "code": "{score}"}}


def _task(tid: str, pid: str, condition: str, action: str, title: str, due: date, status: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "instantiatesUri": f"{PD_TOH_PROTOCOL}#{action}", "status": status,
            "intent": "order", "description": title,
            "code": {"coding": [{"system": TOH_CODES, "code": "follow-up-review", "display": "TOH follow-up review"}]},
            "focus": {"reference": f"Condition/{condition}"}, "for": {"reference": f"Patient/{pid}"},
            "restriction": {"period": {"start": due.isoformat(), "end": due.isoformat()}}}


def resources(today: date) -> list[dict[str, Any]]:
    """Every resource of the cohort (see module docstring), dated relative to today."""
    d = lambda days: today - timedelta(days=days)   # noqa: E731 - days before today
    out: list[dict[str, Any]] = [
        _patient(P1, "Thomas", "Becker", "male", d(49 * 365 + 40), "MRN-1001"),
        _condition("ui-p1-hip", P1, HIP, LEFT, "Left hip", d(700)),
        _mri("ui-p1-mri-1", P1, HIP, LEFT, "left hip", d(697), bone_marrow_oedema_diffuse=True, joint_effusion=True),
        _mri("ui-p1-mri-2", P1, HIP, LEFT, "left hip", d(460), bone_marrow_oedema_diffuse=True,
             focal_subchondral_lesion=True),
        _mri("ui-p1-mri-3", P1, HIP, LEFT, "left hip", d(120), bone_marrow_oedema_diffuse=True),
        _condition("ui-p1-knee", P1, KNEE, RIGHT, "Right knee", d(42)),
        _mri("ui-p1-mri-4", P1, KNEE, RIGHT, "right knee", d(39), bone_marrow_oedema_diffuse=True),
        _patient(P2, "Maria", "Rossi", "female", d(33 * 365 + 100), "MRN-1002"),
        _condition("ui-p2-hip", P2, HIP, LEFT, "Left hip", d(80)),
        _mri("ui-p2-mri-1", P2, HIP, LEFT, "left hip", d(77), bone_marrow_oedema_diffuse=True),
        _patient(P3, "Jan", "Novak", "male", d(52 * 365 + 7), "MRN-1003"),
        _condition("ui-p3-hip", P3, HIP, LEFT, "Left hip", d(400), resolved=d(150)),
        _mri("ui-p3-mri-1", P3, HIP, LEFT, "left hip", d(398), bone_marrow_oedema_diffuse=True),
        _mri("ui-p3-mri-2", P3, HIP, LEFT, "left hip", d(300), bone_marrow_oedema_diffuse=True,
             subchondral_fracture_line=True),
        _mri("ui-p3-mri-3", P3, HIP, LEFT, "left hip", d(155), bone_marrow_oedema_diffuse=False),
    ]
    out += [_task(f"ui-p1-hip-{action}", P1, "ui-p1-hip", action, title, d(700 - days), status)
            for action, title, days, status in P1_HIP_REVIEWS]
    out.append(_task("ui-p2-hip-review-6w", P2, "ui-p2-hip", "review-6w", "Review at 6 weeks", d(80 - 42), "requested"))
    p1_scores = [7, 8, 8, 7, 6, 6, 5, 6, 5, 5, 4, 5, 4, 4, 5, 4, 3, 4, 3, 3, 4, 3, 6, 7]
    out += [_pain(f"ui-p1-pain-{i}", P1, d(700 - 29 * i), s) for i, s in enumerate(p1_scores)]
    out += [_pain(f"ui-p2-pain-{i}", P2, d(78 - 14 * i), s) for i, s in enumerate([8, 7, 7, 6, 6, 5])]
    out += [_pain(f"ui-p3-pain-{i}", P3, d(398 - 30 * i), s) for i, s in enumerate([7, 6, 6, 5, 4, 3, 3, 2, 1])]
    return out


def bundle(today: date) -> dict[str, Any]:
    """The cohort as one transaction Bundle of PUTs (ids are the cohort's own)."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources(today)]}


def load(send: Send, today: date) -> dict[str, Any]:
    """Write the cohort in one transaction; returns the transaction-response Bundle."""
    return send("POST", "", bundle(today))
