"""Every code issue 9 added to the guide says whether it is verified (read in a published source,
as shared/clinical/TOH.md lists it) or local, and the guide's ValueSets answer what the rules ask."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.fhir.canonical import ICD10CM, VS_BISPHOSPHONATES, VS_PREGNANCY_BREASTFEEDING, VS_PREGNANCY_ENDED

VALUESETS = Path(__file__).resolve().parents[3] / "fhir_profiles" / "ValueSet"
COMMENT = "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# (ValueSet file id, system, code or is-a value) added for issue 9.
NEW = [
    ("pregnancy-breastfeeding-findings", ICD10CM, "Z33.1"), ("pregnancy-breastfeeding-findings", ICD10CM, "Z3A"),
    ("pregnancy-breastfeeding-findings", ICD10CM, "O"), ("pregnancy-ended-findings", ICD10CM, "O80"),
    ("pregnancy-ended-findings", ICD10CM, "O82"), ("pregnancy-ended-findings", ICD10CM, "Z37"),
    ("pregnancy-ended-findings", ICD10CM, "Z39"), ("bisphosphonates", RXNORM, "77655"),
    ("bisphosphonates", "http://www.whocc.no/atc", "M05BB03"),
]


def _marks(vs_id: str, system: str, code: str) -> list[str]:
    vs = json.loads((VALUESETS / f"ValueSet-{vs_id}.json").read_text())
    found = []
    for inc in vs["compose"]["include"]:
        if inc.get("system") != system:
            continue
        for concept in inc.get("concept") or ():
            if concept["code"] == code:
                found += [e["valueString"] for e in concept.get("extension") or () if e["url"] == COMMENT]
        if any(f.get("value") == code for f in inc.get("filter") or ()):
            found += [e["valueString"] for e in inc.get("extension") or () if e["url"] == COMMENT]
    return found


@pytest.mark.parametrize("vs_id, system, code", NEW, ids=[f"{v}:{c}" for v, _, c in NEW])
def test_new_codes_are_marked_verified_or_local(vs_id, system, code):
    marks = _marks(vs_id, system, code)
    assert len(marks) == 1 and marks[0].split(":")[0] in ("verified", "local"), marks


@pytest.mark.parametrize("url, system, code, member", [
    (VS_PREGNANCY_BREASTFEEDING, ICD10CM, "Z3A.32", True), (VS_PREGNANCY_BREASTFEEDING, ICD10CM, "O09.511", True),
    (VS_PREGNANCY_BREASTFEEDING, ICD10CM, "Z33.1", True), (VS_PREGNANCY_BREASTFEEDING, ICD10CM, "M81.6", False),
    (VS_PREGNANCY_ENDED, ICD10CM, "Z39.2", True), (VS_PREGNANCY_ENDED, ICD10CM, "Z33.1", False),
    (VS_BISPHOSPHONATES, RXNORM, "77655", True), (VS_BISPHOSPHONATES, RXNORM, "999999", False),
    (VS_BISPHOSPHONATES, RXNORM, "46041", True), (VS_BISPHOSPHONATES, RXNORM, "904431", True),
    (VS_BISPHOSPHONATES, RXNORM, "83367", False),                 # atorvastatin
])
def test_guide_membership(url, system, code, member, guide_terminology):
    assert guide_terminology.contains_code(url, system, code) is member


@pytest.mark.parametrize("text, member", [
    ("Fosamax 70 mg", True), ("Reclast 5 mg/100 mL", True), ("alendronate sodium 70 MG Oral Tablet", True),
    ("Zoledronic acid 4 mg", True), ("Boniva 150 mg monthly", True), ("Prolia 60 mg", False),
])
def test_bisphosphonate_names(text, member, guide_terminology):
    assert guide_terminology.contains(VS_BISPHOSPHONATES, {"text": text}, "words") is member
