"""Bisphosphonates recognised by RxNorm code alone (issue 9, fault 8), over the guide's ValueSets.

Each code is sent the way an EHR sends it when it leaves the name out: a bare coding (no display,
no text) in MedicationRequest.medicationCodeableConcept, in a contained Medication, or in a
Medication resource the request references. Ordered while pregnant, it must raise
bisphosphonate-in-pregnancy; ordered while not pregnant, it must not. A non-bisphosphonate RxNorm
code never fires (and is reported as a code the rules do not know).

The tables are written here, from the published sources the guide's comments cite (an RxNav
ingredient table in github.com/dhimmel/indications, OHDSI concept sets, openFDA NDC records),
not read from fhir_profiles/: removing a code from the guide makes its rows fail.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from clinical_factories import cc, day, med_request, pregnancy_status
from service.clinical import assess

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
BIS = "bisphosphonate-in-pregnancy"
VALUESET = Path(__file__).resolve().parents[3] / "fhir_profiles" / "ValueSet" / "ValueSet-bisphosphonates.json"
COMMENT = "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments"

# (code, what it is) -- RxNorm ingredients (IN)
INGREDIENTS = [
    ("46041", "alendronate"), ("73056", "risedronate"), ("115264", "ibandronate"), ("77655", "zoledronic acid"),
]
# RxNorm drugs that contain them: clinical (SCD) and branded (SBD), and the two other kinds EHRs send
DRUGS = [
    ("904431", "alendronic acid 70 MG Oral Tablet"), ("904396", "alendronic acid 35 MG Oral Tablet"),
    ("904447", "alendronate 70 mg/75 mL oral solution"), ("905024", "risedronate sodium 35 mg tablet"),
    ("904932", "ibandronate 150 mg tablet"), ("904952", "ibandronate 3 mg/3 mL prefilled syringe"),
    ("705824", "zoledronic acid 5 mg/100 mL injection"), ("351114", "zoledronic acid 4 mg/5 mL injection"),
    ("1020064", "risedronate 35 mg delayed-release tablet"), ("1020065", "risedronate 35 mg delayed-release tablet"),
    ("1737449", "pamidronate disodium injection"), ("1737451", "pamidronate disodium injection"),
    ("1737453", "pamidronate disodium injection"),
    ("904433", "Fosamax 70 mg"), ("904421", "Fosamax 10 mg"), ("904450", "Fosamax oral solution"),
    ("904465", "Fosamax Plus D 70/5600"), ("904495", "Fosamax Plus D 70/2800"), ("905026", "Actonel 35 mg"),
    ("905034", "Actonel 30 mg"), ("905030", "Actonel 150 mg"), ("1020066", "Atelvia 35 mg"),
    ("904934", "Boniva 150 mg"), ("705875", "Reclast 5 mg/100 mL"),
    ("904420", "Alendronic acid 10 MG [Fosamax] (SBDC, Synthea)"), ("114265", "Fosamax (brand name)"),
]
# RxNorm ingredients that are not bisphosphonates (two of them are osteoporosis drugs too)
NOT_BISPHOSPHONATES = [("83367", "atorvastatin"), ("993449", "denosumab"), ("72143", "raloxifene")]

CARRIERS = ("medicationCodeableConcept", "contained Medication", "referenced Medication")


def ordered(code: str, carrier: str, when: date) -> list[dict[str, Any]]:
    """A MedicationRequest for RxNorm `code` with no display or text, carried as named."""
    concept = {"coding": [{"system": RXNORM, "code": code}]}
    request = med_request(when, concept, id=f"rx-{code}")
    if carrier == "medicationCodeableConcept":
        return [request]
    del request["medicationCodeableConcept"]
    medication = {"resourceType": "Medication", "id": f"med-{code}", "code": concept}
    if carrier == "contained Medication":
        return [request | {"contained": [medication], "medicationReference": {"reference": f"#med-{code}"}}]
    return [request | {"medicationReference": {"reference": f"Medication/med-{code}"}}, medication]


def run(code: str, carrier: str, pregnant: bool, terminology: Any) -> tuple[list[str], set[str]]:
    resources = [pregnancy_status(day(-2), pregnant)] + ordered(code, carrier, day(1))
    a = assess(resources, day(2), terminology)
    return a.flag_codes(), {i.code for i in a.issues}


CASES = [(code, name, carrier) for code, name in INGREDIENTS + DRUGS for carrier in CARRIERS]


@pytest.mark.parametrize("code, name, carrier", CASES, ids=[f"{c}-{n}-{k}" for c, n, k in CASES])
def test_fires_during_pregnancy(code, name, carrier, guide_terminology):
    flags, issues = run(code, carrier, True, guide_terminology)
    assert flags == [BIS], (name, issues)
    assert "code-unknown" not in issues


@pytest.mark.parametrize("code, name, carrier", CASES, ids=[f"{c}-{n}-{k}" for c, n, k in CASES])
def test_no_flag_outside_pregnancy(code, name, carrier, guide_terminology):
    flags, issues = run(code, carrier, False, guide_terminology)
    assert flags == [], name
    assert "code-unknown" not in issues


NEGATIVE = [(code, name, carrier) for code, name in NOT_BISPHOSPHONATES for carrier in CARRIERS]


@pytest.mark.parametrize("code, name, carrier", NEGATIVE, ids=[f"{c}-{n}-{k}" for c, n, k in NEGATIVE])
def test_other_rxnorm_codes_never_fire(code, name, carrier, guide_terminology):
    flags, issues = run(code, carrier, True, guide_terminology)
    assert flags == [], name
    assert "code-unknown" in issues      # a bare code the rules do not know is reported, not guessed


def test_a_listed_code_with_a_misleading_display_still_fires(guide_terminology):
    """The code decides: Reclast's SBD fires even when the display says something else."""
    resources = [pregnancy_status(day(-2)), med_request(day(1), cc(RXNORM, "705875", "IV infusion"))]
    assert assess(resources, day(2), guide_terminology).flag_codes() == [BIS]


def test_every_rxnorm_code_in_the_guide_is_verified_with_a_source():
    """Each RxNorm concept of the bisphosphonates ValueSet says `verified:` and names where it
    was read (a repository path, an openFDA query or TOH.md), and the tables above cover them all."""
    vs = json.loads(VALUESET.read_text())
    listed = {}
    for include in vs["compose"]["include"]:
        if include.get("system") == RXNORM:
            for concept in include["concept"]:
                marks = [e["valueString"] for e in concept.get("extension") or () if e["url"] == COMMENT]
                listed[concept["code"]] = marks
    assert set(listed) == {c for c, _ in INGREDIENTS + DRUGS}
    for code, marks in listed.items():
        assert len(marks) == 1 and marks[0].startswith("verified: "), code
        assert any(s in marks[0] for s in ("github.com/", "api.fda.gov", "TOH.md")), code
