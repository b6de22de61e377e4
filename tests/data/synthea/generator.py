"""Synthea-style transaction Bundles, generated (real Synthea output cannot be fetched here).

A wide bundle (claims, immunizations, a closing Provenance) to exercise the bundle machinery;
realistic TOH courses are service/synth (`toh synth`), whose seeded UUIDs this shares.

The shape follows what Synthea's R4 exporter writes: every entry has a urn:uuid: fullUrl
and is a POST; Organization and Practitioner are conditional creates (ifNoneExist on their
identifier) that the clinical resources point to with conditional references
(``Organization?identifier=https://github.com/synthetichealth/synthea|...``) when
``conditional`` is true; everything else refers by urn:uuid, down to Claim.diagnosis,
ExplanationOfBenefit.claim and a closing Provenance whose targets are every resource.
"""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

from service.synth.course import rng_uuid

SYNTHEA = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"

CONDITIONS = [("444473006", "Transient osteoporosis of hip"), ("161891005", "Backache (finding)"),
              ("44054006", "Diabetes"), ("38341003", "Hypertension")]
OBSERVATIONS = [("29463-7", "Body Weight", "kg", 60, 95), ("8302-2", "Body Height", "cm", 150, 190),
                ("72514-3", "Pain severity - 0-10 verbal numeric rating", "{score}", 0, 10),
                ("2339-0", "Glucose", "mg/dL", 70, 140)]
PROCEDURES = [("113091000", "Magnetic resonance imaging (procedure)"), ("312681000", "Bone density scan")]
VACCINES = [("140", "Influenza, seasonal, injectable, preservative free"), ("133", "Pneumococcal conjugate PCV 13")]
MEDICATIONS = [("197361", "Amlodipine 5 MG Oral Tablet"), ("904419", "Alendronate 10 MG Oral Tablet")]


def _code(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _money(value: float) -> dict[str, Any]:
    return {"value": round(value, 2), "currency": "USD"}


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def synthea_bundle(seed: int = 1, encounters: int = 3, *, conditional: bool = True) -> dict[str, Any]:
    """A transaction Bundle for one patient with `encounters` encounters and all they bring."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any], if_none_exist: str | None = None) -> str:
        full_url = f"urn:uuid:{rng_uuid(rng)}"
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist:
            request["ifNoneExist"] = if_none_exist
        entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        return full_url

    org_id = rng_uuid(rng)
    org_url = add({"resourceType": "Organization",
                   "identifier": [{"system": SYNTHEA, "value": org_id}], "active": True,
                   "type": [_code("http://terminology.hl7.org/CodeSystem/organization-type", "prov",
                                  "Healthcare Provider")],
                   "name": "Hip and Bone Clinic", "telecom": [{"system": "phone", "value": "555-0100"}],
                   "address": [{"line": ["1 Clinic Way"], "city": "Springfield", "state": "MA",
                                "postalCode": "01101", "country": "US"}]},
                  f"identifier={SYNTHEA}|{org_id}" if conditional else None)
    npi = str(9_999_000_000 + rng.randrange(100_000))
    gp_url = add({"resourceType": "Practitioner", "identifier": [{"system": NPI, "value": npi}],
                  "active": True, "name": [{"family": "Osteo", "given": ["Rita"], "prefix": ["Dr."]}],
                  "gender": "female"},
                 f"identifier={NPI}|{npi}" if conditional else None)
    organization = {"reference": f"Organization?identifier={SYNTHEA}|{org_id}" if conditional else org_url,
                    "display": "Hip and Bone Clinic"}
    practitioner = {"reference": f"Practitioner?identifier={NPI}|{npi}" if conditional else gp_url,
                    "display": "Dr. Rita Osteo"}

    birth = date(1960, 1, 1) + timedelta(days=rng.randrange(15_000))
    patient_url = add({
        "resourceType": "Patient",
        "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                       "valueCode": "F"},
                      {"url": "http://example.org/fhir/StructureDefinition/registered-at",
                       "valueReference": {"reference": org_url}}],
        "identifier": [{"system": SYNTHEA, "value": rng_uuid(rng)},
                       {"type": _code("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"),
                        "system": "http://hospital.smarthealthit.org", "value": rng_uuid(rng)}],
        "name": [{"use": "official", "family": f"Synth{seed}", "given": ["Ann"], "prefix": ["Mrs."]}],
        "gender": "female", "birthDate": birth.isoformat(),
        "address": [{"line": ["22 Elm St"], "city": "Springfield", "state": "MA", "country": "US"}],
        "generalPractitioner": [practitioner], "managingOrganization": organization,
    })
    patient = {"reference": patient_url, "display": f"Mrs. Ann Synth{seed}"}

    start = datetime(2024, 1, 8, 9, 0, tzinfo=timezone.utc)
    for n in range(encounters):
        begin = start + timedelta(days=30 * n + rng.randrange(20), hours=rng.randrange(8))
        end = begin + timedelta(minutes=30)
        period = {"start": _instant(begin), "end": _instant(end)}
        encounter_url = add({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "type": [_code(SNOMED, "185349003", "Encounter for check up (procedure)")],
            "subject": patient, "period": period, "serviceProvider": organization,
            "participant": [{"individual": practitioner, "period": period}],
        })
        encounter = {"reference": encounter_url}
        code, display = CONDITIONS[n % len(CONDITIONS)]
        condition_url = add({
            "resourceType": "Condition",
            "clinicalStatus": _code("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "verificationStatus": _code("http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                        "confirmed", "Confirmed"),
            "category": [_code("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis",
                               "Encounter Diagnosis")],
            "code": _code(SNOMED, code, display), "subject": patient, "encounter": encounter,
            "onsetDateTime": _instant(begin), "recordedDate": _instant(begin),
        })
        observation_urls = []
        for loinc, name, unit, low, high in OBSERVATIONS:
            observation_urls.append(add({
                "resourceType": "Observation", "status": "final",
                "category": [_code("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs",
                                   "vital-signs")],
                "code": _code(LOINC, loinc, name), "subject": patient, "encounter": encounter,
                "effectiveDateTime": _instant(begin), "issued": _instant(begin),
                "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                                  "system": "http://unitsofmeasure.org", "code": unit},
            }))
        add({"resourceType": "DiagnosticReport", "status": "final",
             "code": _code(LOINC, "51990-0", "Basic metabolic panel"), "subject": patient, "encounter": encounter,
             "effectiveDateTime": _instant(begin), "issued": _instant(begin), "performer": [practitioner],
             "result": [{"reference": url} for url in observation_urls]})
        pcode, pname = PROCEDURES[n % len(PROCEDURES)]
        procedure_url = add({
            "resourceType": "Procedure", "status": "completed", "code": _code(SNOMED, pcode, pname),
            "subject": patient, "encounter": encounter, "performedPeriod": period,
            "reasonReference": [{"reference": condition_url}],
        })
        vcode, vname = VACCINES[n % len(VACCINES)]
        immunization_url = add({
            "resourceType": "Immunization", "status": "completed", "vaccineCode": _code(CVX, vcode, vname),
            "patient": patient, "encounter": encounter, "occurrenceDateTime": _instant(begin),
            "primarySource": True,
        })
        rxcode, rxname = MEDICATIONS[n % len(MEDICATIONS)]
        medication_url = add({
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": _code(RXNORM, rxcode, rxname), "subject": patient, "encounter": encounter,
            "authoredOn": _instant(begin), "requester": practitioner, "reasonReference": [{"reference": condition_url}],
            "dosageInstruction": [{"sequence": 1, "asNeededBoolean": False,
                                   "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}],
        })
        add({"resourceType": "CarePlan", "status": "active", "intent": "order",
             "category": [_code(SNOMED, "736285004", "Hyperlipidemia clinical management plan")],
             "subject": patient, "encounter": encounter, "period": {"start": _instant(begin)},
             "addresses": [{"reference": condition_url}],
             "activity": [{"detail": {"code": _code(SNOMED, "229065009", "Exercise therapy"),
                                      "status": "in-progress", "location": {"display": "Hip and Bone Clinic"}}}]})
        cost = round(rng.uniform(80, 900), 2)
        claim_url = add({
            "resourceType": "Claim", "status": "active",
            "type": _code(CLAIM_TYPE, "professional", "Professional"), "use": "claim", "patient": patient,
            "billablePeriod": period, "created": _instant(end), "provider": organization,
            "priority": _code("http://terminology.hl7.org/CodeSystem/processpriority", "normal", "Normal"),
            "prescription": {"reference": medication_url},
            "diagnosis": [{"sequence": 1, "diagnosisReference": {"reference": condition_url}}],
            "procedure": [{"sequence": 1, "procedureReference": {"reference": procedure_url}}],
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Medicare"}}],
            "item": [{"sequence": 1, "productOrService": _code(SNOMED, "185349003", "Encounter for check up"),
                      "encounter": [encounter], "diagnosisSequence": [1]},
                     {"sequence": 2, "productOrService": _code(CVX, vcode, vname),
                      "net": _money(140.52)}],
            "total": _money(cost),
        })
        add({
            "resourceType": "ExplanationOfBenefit", "status": "active",
            "type": _code(CLAIM_TYPE, "professional", "Professional"), "use": "claim", "patient": patient,
            "billablePeriod": period, "created": _instant(end), "insurer": {"display": "Medicare"},
            "provider": practitioner, "claim": {"reference": claim_url}, "outcome": "complete",
            "careTeam": [{"sequence": 1, "provider": practitioner,
                          "role": _code("http://terminology.hl7.org/CodeSystem/claimcareteamrole", "primary",
                                        "Primary provider")}],
            "diagnosis": [{"sequence": 1, "diagnosisReference": {"reference": condition_url}}],
            "insurance": [{"focal": True, "coverage": {"display": "Medicare"}}],
            "item": [{"sequence": 1, "productOrService": _code(SNOMED, "185349003", "Encounter for check up"),
                      "encounter": [encounter], "servicedPeriod": period}],
            "total": [{"category": _code("http://terminology.hl7.org/CodeSystem/adjudication", "submitted",
                                         "Submitted Amount"), "amount": _money(cost)}],
            "payment": {"amount": _money(cost * 0.8)},
            "extension": [{"url": "http://example.org/fhir/StructureDefinition/related-immunization",
                           "valueReference": {"reference": immunization_url}}],
        })
    targets = [{"reference": e["fullUrl"]} for e in entries
               if e["resource"]["resourceType"] not in ("Organization", "Practitioner") or not conditional]
    add({"resourceType": "Provenance", "target": targets, "recorded": _instant(start),
         "agent": [{"type": _code("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author",
                                  "Author"), "who": practitioner, "onBehalfOf": organization}]})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
