"""A synthetic cohort written through the REST API, and a snapshot of everything a database
holds that a client can see, for tests that move data (migrations, export and import).

Two cohorts:
- `write_synth_cohort(client, clock, folder)`: `toh synth` writes SYNTH_PATIENTS two-year TOH
  courses (a fixed seed) as transaction Bundles, each POSTed to /fhir: Conditions, MRIs,
  radiographs, pain scores, weight-bearing, densitometry, pregnancies and bisphosphonates as
  EHRs send them, with the Flags, CarePlans, Tasks and Provenance the service derives.
  `SYNTH_SEARCHES` are the searches to compare over it.
- `write_cohort(client, clock)`: what `toh synth` bundles do not hold, updates and deletions:
  Synthea-style transaction bundles (tests/data/synthea) and, for each patient, a TOH course: a
  confirmed left-hip Condition (the service then makes a CarePlan, its Tasks and Provenance), an
  MRI, the Condition updated (version 2), a migration to the right knee (a Flag), and a deleted
  Observation (a tombstone version). `SEARCHES` are the searches to compare over it.

`snapshot(client, database_url, patient_ids, searches)` gives what must survive: every row of
the resource and version tables (ids, versions, lastUpdated, method, content), the answers to a
set of searches, and each patient's $toh-assessment.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import create_engine, select

from service.fhir.canonical import (
    ATC, CONDITION_CLINICAL, EXT_LATERALITY, ICD10CM, LOINC, OBSERVATION_CATEGORY, SNOMED, TOH_CODES,
)
from service.synth.bundle import MRN_SYSTEM
from service.store.schema import resource_versions, resources
from tests.data.synthea.generator import synthea_bundle

FHIR = {"Content-Type": "application/fhir+json"}
HIP, KNEE, LEFT, RIGHT = "24136001", "49076000", "7771000", "24028007"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ASSESSED_ON = "2026-01-05"

# Where write_cohort's patients come from: a function (seed) -> transaction Bundle (Synthea-style).
COHORT_SOURCE: Callable[[int], dict[str, Any]] = lambda seed: synthea_bundle(seed=seed, encounters=4)  # noqa: E731

# Searches whose answers must be the same after data moved (each: the ids matched, in order).
SEARCHES = (
    "Patient?_sort=_id&_count=1000",
    "Patient?name=Synth&_sort=_id&_count=1000",
    "Condition?code=http://snomed.info/sct|44054006&_sort=_id&_count=1000",
    f"Condition?code={TOH_CODES}|transient-osteoporosis-hip&_sort=_id&_count=1000",
    "Condition?body-site=http://snomed.info/sct|49076000&_sort=_id&_count=1000",
    "Observation?code=http://loinc.org|29463-7&value-quantity=gt70&_sort=-date,_id&_count=1000",
    "Observation?date=ge2024-03-01&_sort=date,_id&_count=1000",
    "Flag?status=active&_sort=_id&_count=1000",
    "CarePlan?status=active&_sort=_id&_count=1000",
    "Task?status=requested&_sort=_id&_count=1000",
    "Encounter?subject:Patient.name=Synth&_sort=_id&_count=1000",
    "Patient?_has:Condition:patient:code=http://snomed.info/sct|38341003&_sort=_id&_count=1000",
    "Provenance?_sort=_id&_count=1000",
    "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|&_sort=_id&_count=1000",
    "Observation?_lastUpdated=ge2025-01-01&_sort=_id&_count=1000",
)

# The `toh synth` cohort: its size, seed and share of migratory courses (seed 220 holds every
# special course: migration, recurrence, AVN, failure to resolve, a bisphosphonate in pregnancy),
# and the day its courses are drawn to.
SYNTH_PATIENTS, SYNTH_SEED, SYNTH_MIGRATION_SHARE, SYNTH_AS_OF = 10, 220, "0.4", "2026-01-01"
SYNTH_SEARCHES = (
    "Patient?_sort=_id&_count=1000",
    f"Patient?identifier={MRN_SYSTEM}|&_sort=_id&_count=1000",
    "Patient?gender=female&_sort=_id&_count=1000",
    "Patient?birthdate=lt1985&_sort=birthdate,_id&_count=1000",
    f"Condition?code={ICD10CM}|M81.6&_sort=_id&_count=1000",
    f"Condition?code={TOH_CODES}|regional-migratory-osteoporosis&_sort=_id&_count=1000",
    "Condition?body-site=http://snomed.info/sct|72696002&_sort=_id&_count=1000",
    "Condition?clinical-status=resolved&_sort=_id&_count=1000",
    f"Observation?code={LOINC}|36020-6,{LOINC}|36022-2&_sort=-date,_id&_count=1000",
    f"Observation?code={LOINC}|72514-3&value-quantity=ge6&_sort=date,_id&_count=1000",
    "Observation?category=imaging&date=ge2025-01-01&_sort=date,_id&_count=1000",
    f"Observation?subject:Patient.identifier={MRN_SYSTEM}|&code={LOINC}|72514-3&_sort=_id&_count=1000",
    "Procedure?code=http://snomed.info/sct|241639000&_sort=_id&_count=1000",
    f"MedicationRequest?code={ATC}|M05BA08,{ATC}|M05BA04&_sort=_id&_count=1000",
    f"Patient?_has:Condition:patient:code={TOH_CODES}|regional-migratory-osteoporosis&_sort=_id&_count=1000",
    "Flag?status=active&_sort=_id&_count=1000",
    "Flag?_sort=_id&_count=1000",
    "CarePlan?status=active&_sort=_id&_count=1000",
    "Task?status=ready,requested&_sort=_id&_count=1000",
    "Task?_sort=_id&_count=1000",
    "Provenance?_sort=_id&_count=1000",
    "Observation?_lastUpdated=ge2026-01-01T13:00:00Z&_sort=_id&_count=1000",
    "Condition?_include=Condition:subject&_sort=_id&_count=1000",
)


def _at(client: Any, clock: Any, when: str) -> None:
    clock.set(datetime.fromisoformat(when).replace(hour=12, tzinfo=timezone.utc))


def _put(client: Any, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                          headers=FHIR)
    assert response.status_code in (200, 201), response.get_json()


def _site(joint: str, side: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": joint}], "text": text,
            "extension": [{"url": EXT_LATERALITY,
                           "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": side}]}}]}


def _toh(cid: str, patient: str, joint: str, side: str, text: str, onset: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{patient}"},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
            "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
            "bodySite": [_site(joint, side, text)], "onsetDateTime": onset}


def _mri(oid: str, patient: str, joint: str, side: str, text: str, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "subject": {"reference": f"Patient/{patient}"},
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging"}]}],
            "code": {"text": f"MRI {text}"}, "effectiveDateTime": when, "bodySite": _site(joint, side, text),
            "component": [{"code": {"coding": [{"system": TOH_CODES, "code": "bone-marrow-oedema-diffuse"}]},
                           "valueBoolean": True}]}


def write_cohort(client: Any, clock: Any, patients: int = 3) -> list[str]:
    """Write `patients` patients (see module docstring) at moving clock times; their ids."""
    ids: list[str] = []
    for seed in range(1, patients + 1):
        n, day = f"{seed}", (seed - 1) % 18 + 1     # dates stay valid for any number of patients
        _at(client, clock, f"2025-01-{day:02d}")
        bundle = COHORT_SOURCE(seed)
        response = client.post("/fhir", data=json.dumps(bundle), headers=FHIR)
        assert response.status_code == 200, response.get_json()
        kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
        location = response.get_json()["entry"][kinds.index("Patient")]["response"]["location"]
        pid = location.split("/")[-3]
        ids.append(pid)
        _put(client, _toh(f"hip-{n}", pid, HIP, LEFT, "Left hip", f"2025-01-{day:02d}"))
        _at(client, clock, f"2025-01-{day + 10:02d}")
        _put(client, _mri(f"mri-{n}", pid, HIP, LEFT, "Left hip", f"2025-01-{day + 10:02d}"))
        hip = _toh(f"hip-{n}", pid, HIP, LEFT, "Left hip", f"2025-01-{day:02d}")
        hip["note"] = [{"text": "MRI confirms diffuse oedema"}]
        _put(client, hip)                                                  # version 2
        _at(client, clock, f"2025-06-{day:02d}")
        _put(client, _toh(f"knee-{n}", pid, KNEE, RIGHT, "Right knee", f"2025-06-{day:02d}"))  # migration
        _put(client, {"resourceType": "Observation", "id": f"typo-{n}", "status": "final",
                      "code": {"text": "entered by mistake"}, "subject": {"reference": f"Patient/{pid}"}})
        _at(client, clock, f"2025-06-{day + 1:02d}")
        assert client.delete(f"/fhir/Observation/typo-{n}").status_code in (200, 204)
    _at(client, clock, ASSESSED_ON)
    return ids


def write_synth_cohort(client: Any, clock: Any, folder: Path) -> list[str]:
    """Run `toh synth` (SYNTH_PATIENTS, SYNTH_SEED; its bundles in `folder`) and POST each
    patient's transaction Bundle to /fhir, an hour apart from 08:00 on SYNTH_AS_OF; the clock is
    left at ASSESSED_ON. The server-assigned Patient ids, in the files' order."""
    from service import cli
    assert cli.main(["synth", "--patients", str(SYNTH_PATIENTS), "--seed", str(SYNTH_SEED), "--out", str(folder),
                     "--migration-share", SYNTH_MIGRATION_SHARE, "--as-of", SYNTH_AS_OF]) == 0
    files = sorted(folder.glob("patient-*.json"))
    assert len(files) == SYNTH_PATIENTS
    start = datetime.fromisoformat(SYNTH_AS_OF).replace(hour=8, tzinfo=timezone.utc)
    ids: list[str] = []
    for n, path in enumerate(files):
        clock.set(start + timedelta(hours=n))
        text = path.read_text(encoding="utf-8")
        response = client.post("/fhir", data=text, headers=FHIR)
        assert response.status_code == 200, response.get_json()
        kinds = [e["resource"]["resourceType"] for e in json.loads(text)["entry"]]
        location = response.get_json()["entry"][kinds.index("Patient")]["response"]["location"]
        ids.append(location.split("/")[-3])          # {base}/Patient/{id}/_history/{version}
    _at(client, clock, ASSESSED_ON)
    return ids


def stored_rows(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every current resource row and every version row, sorted (no surrogate keys)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            current = sorted((r.res_type, r.res_id, r.version, r.last_updated.replace(tzinfo=None), r.deleted,
                              r.content) for r in conn.execute(select(resources)))
            versions = sorted((r.res_type, r.res_id, r.version, r.last_updated.replace(tzinfo=None), r.method,
                               r.deleted, r.content) for r in conn.execute(select(resource_versions)))
    finally:
        engine.dispose()
    return {"resources": current, "versions": versions}


def search_answers(client: Any, searches: Sequence[str] = SEARCHES) -> dict[str, list[str]]:
    """The ids each of `searches` matches, in the order returned."""
    answers = {}
    for query in searches:
        response = client.get(f"/fhir/{query}")
        assert response.status_code == 200, (query, response.get_json())
        answers[query] = [e["fullUrl"].rsplit("/", 2)[-2] + "/" + e["resource"]["id"]
                          for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"]
    return answers


def assessments(client: Any, patient_ids: list[str]) -> dict[str, Any]:
    """Each patient's $toh-assessment on ASSESSED_ON."""
    out = {}
    for pid in patient_ids:
        response = client.get(f"/fhir/Patient/{pid}/$toh-assessment?asOf={ASSESSED_ON}")
        assert response.status_code == 200, response.get_json()
        out[pid] = response.get_json()
    return out


def snapshot(client: Any, database_url: str, patient_ids: list[str], searches: Sequence[str] = SEARCHES
             ) -> dict[str, Any]:
    """What must survive moving the data (see module docstring)."""
    return {**stored_rows(database_url), "searches": search_answers(client, searches),
            "assessments": assessments(client, patient_ids)}
