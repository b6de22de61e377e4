"""Terminology: membership from ValueSet dicts, names, is-a, and over the guide's ValueSets."""
from __future__ import annotations

import pytest

from service.clinical import Terminology
from service.fhir import canonical as c

VS = "http://example.org/ValueSet/x"


def vs(*includes, exclude=(), expansion=None, url=VS):
    out = {"resourceType": "ValueSet", "url": url, "compose": {"include": list(includes)}}
    if exclude:
        out["compose"]["exclude"] = list(exclude)
    if expansion:
        out["expansion"] = {"contains": expansion}
    return out


@pytest.mark.parametrize("valuesets, system, code, expected", [
    ([vs({"system": "s", "concept": [{"code": "a"}]})], "s", "a", True),
    ([vs({"system": "s", "concept": [{"code": "a"}]})], "s", "b", False),
    ([vs({"system": "s", "concept": [{"code": "a"}]})], "other", "a", False),
    ([vs({"system": "s"})], "s", "anything", True),                       # whole system
    ([vs({"system": c.ATC, "filter": [{"property": "concept", "op": "is-a", "value": "M05BA"}]})],
     c.ATC, "M05BA04", True),
    ([vs({"system": c.ATC, "filter": [{"property": "concept", "op": "is-a", "value": "M05BA"}]})],
     c.ATC, "M05BX04", False),
    ([vs({"system": c.ATC, "filter": [{"property": "concept", "op": "descendent-of", "value": "M05BA"}]})],
     c.ATC, "M05BA", False),
    ([vs({"system": "s", "filter": [{"property": "concept", "op": "is-a", "value": "a"}]})],
     "s", "ab", False),                                                   # prefix only for ATC
    ([vs({"system": "s"}, exclude=[{"system": "s", "concept": [{"code": "x"}]}])], "s", "x", False),
    ([vs({"valueSet": ["urn:b"]}), vs({"system": "s", "concept": [{"code": "b"}]}, url="urn:b")],
     "s", "b", True),                                                     # import
    ([vs(expansion=[{"system": "s", "code": "e", "contains": [{"system": "s", "code": "f"}]}])],
     "s", "f", True),
    ([], "s", "a", False),                                                # unknown ValueSet
])
def test_code_membership(valuesets, system, code, expected):
    assert Terminology(valuesets).contains_code(VS, system, code) is expected


DRUGS = vs({"system": c.ATC, "concept": [
    {"code": "M05BA04", "display": "alendronic acid", "designation": [{"value": "Fosamax"}]},
    {"code": "M05BA08", "display": "zoledronic acid"}]})


@pytest.mark.parametrize("concept, mode, expected", [
    ({"text": "Alendronic acid"}, "exact", True),
    ({"text": "alendronic acid 70 mg"}, "exact", False),
    ({"text": "alendronic acid 70 mg"}, "words", True),
    ({"text": "Alendronate sodium 70 mg weekly"}, "words", True),         # acid -> salt name
    ({"text": "Zoledronate 5 mg/100 mL infusion"}, "words", True),
    ({"coding": [{"system": "http://other", "code": "1", "display": "FOSAMAX 70mg"}]}, "words", True),
    ({"text": "Paracetamol 1 g"}, "words", False),
    ({"text": "alendronic acid"}, "none", False),
    ({"text": "malendronic acidity"}, "words", False),                    # whole words only
])
def test_name_matching(concept, mode, expected):
    assert Terminology([DRUGS]).contains(VS, concept, text=mode) is expected


def test_not_pregnant_is_not_pregnant(terminology):
    assert terminology.contains(c.VS_PREGNANCY_BREASTFEEDING, {"text": "Pregnant"})
    assert not terminology.contains(c.VS_PREGNANCY_BREASTFEEDING, {"text": "Not pregnant"})


def test_display_comes_from_the_valueset(terminology):
    assert terminology.display(c.VS_TRACKED_JOINTS, c.SNOMED, "49076000") == "Knee joint structure"
    assert terminology.display(c.VS_TRACKED_JOINTS, c.SNOMED, "0") is None


def test_the_guide_valuesets_hold_what_the_rules_need(guide_terminology):
    t = guide_terminology
    for url in (c.VS_TOH_CONDITIONS, c.VS_TRACKED_JOINTS, c.VS_LATERALITY, c.VS_AVN_FEATURES,
                c.VS_INSUFFICIENCY_FRACTURE, c.VS_BISPHOSPHONATES, c.VS_PREGNANCY_BREASTFEEDING,
                c.VS_MRI_HIP):
        assert t.has(url), url
    assert t.contains(c.VS_TOH_CONDITIONS, {"coding": [{"system": c.ICD10CM, "code": "M81.6"}]})
    assert t.contains(c.VS_BISPHOSPHONATES, {"coding": [{"system": c.ATC, "code": "M05BA08"}]})
    assert t.contains(c.VS_BISPHOSPHONATES, {"text": "Alendronate 70 mg"}, text="words")


@pytest.mark.parametrize("valuesets, system, code, expected", [
    # one include importing two ValueSets holds what both hold (R4: intersection)
    ([vs({"valueSet": ["urn:b", "urn:c"]}),
      vs({"system": "s", "concept": [{"code": "b"}, {"code": "bc"}]}, url="urn:b"),
      vs({"system": "s", "concept": [{"code": "bc"}]}, url="urn:c")], "s", "bc", True),
    ([vs({"valueSet": ["urn:b", "urn:c"]}),
      vs({"system": "s", "concept": [{"code": "b"}, {"code": "bc"}]}, url="urn:b"),
      vs({"system": "s", "concept": [{"code": "bc"}]}, url="urn:c")], "s", "b", False),
    # excludes follow the include rules: here an ATC subtree
    ([vs({"system": c.ATC, "filter": [{"property": "concept", "op": "is-a", "value": "M05B"}]},
         exclude=[{"system": c.ATC, "filter": [{"property": "concept", "op": "is-a", "value": "M05BX"}]}])],
     c.ATC, "M05BX04", False),
    ([vs({"system": "s", "filter": [{"property": "concept", "op": "=", "value": "a"}]})], "s", "a", True),
    ([vs({"valueSet": [VS]})], "s", "a", False),                          # an import cycle: nothing
])
def test_compose_rules_shared_with_the_validator(valuesets, system, code, expected):
    assert Terminology(valuesets).contains_code(VS, system, code) is expected


def test_an_excluded_concept_is_not_named():
    t = Terminology([vs({"system": "s", "concept": [{"code": "a", "display": "Alpha"},
                                                    {"code": "b", "display": "Beta"}]},
                        exclude=[{"system": "s", "concept": [{"code": "b"}]}])])
    assert t.contains(VS, {"text": "alpha"}) and not t.contains(VS, {"text": "beta"})


def test_codesystem_hierarchy_and_names():
    cs = {"resourceType": "CodeSystem", "url": "urn:cs", "concept": [
        {"code": "finding", "concept": [{"code": "oedema", "display": "Bone marrow oedema"}]}]}
    below = vs({"system": "urn:cs", "filter": [{"property": "concept", "op": "descendent-of",
                                               "value": "finding"}]})
    assert not Terminology([below]).contains_code(VS, "urn:cs", "oedema")   # no CodeSystem: unknown
    t = Terminology([below], [cs])
    assert t.contains_code(VS, "urn:cs", "oedema") and not t.contains_code(VS, "urn:cs", "finding")
    assert t.display(VS, "urn:cs", "oedema") == "Bone marrow oedema"
    assert t.contains(VS, {"text": "Bone marrow oedema"})


IG = "https://fhir.toh-service.org"
TOH, SCT, ICD, ATC_SYS, LNC = (f"{IG}/CodeSystem/toh", "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm",
                               "http://www.whocc.no/atc", "http://loinc.org")

# Written out from fhir_profiles/ValueSet/*.json and CodeSystem-toh.json (the guide), not from the
# code under test: (ValueSet, system, code, member?).
GUIDE_MEMBERSHIP = [
    ("toh-conditions", TOH, "transient-osteoporosis-hip", True),
    ("toh-conditions", TOH, "regional-migratory-osteoporosis", True),
    ("toh-conditions", ICD, "M81.6", True),
    ("toh-conditions", ICD, "M81.0", False),
    ("toh-conditions", TOH, "toh-condition", False),            # the parent is not listed
    ("toh-conditions", SCT, "M81.6", False),                    # right code, wrong system
    ("tracked-joints", SCT, "24136001", True),                  # hip joint
    ("tracked-joints", SCT, "2812003", True),                   # head of femur
    ("tracked-joints", SCT, "49076000", True),                  # knee joint
    ("tracked-joints", SCT, "56459004", True),                  # foot
    ("tracked-joints", SCT, "7771000", False),                  # "left" is a laterality
    ("laterality", SCT, "7771000", True),
    ("laterality", SCT, "51440002", True),
    ("laterality", SCT, "24136001", False),
    ("avn-features", TOH, "crescent-sign", True),
    ("avn-features", TOH, "bone-marrow-oedema-diffuse", False),
    ("avn-features", SCT, "444849002", True),
    ("avn-features", ICD, "M87.052", True),
    ("avn-features", ICD, "M87.05", False),
    ("insufficiency-fracture-findings", TOH, "subchondral-fracture-line", True),
    ("insufficiency-fracture-findings", TOH, "subchondral-insufficiency-fracture", True),
    ("insufficiency-fracture-findings", TOH, "crescent-sign", False),
    ("bisphosphonates", ATC_SYS, "M05BA04", True),              # listed
    ("bisphosphonates", ATC_SYS, "M05BA99", True),              # is-a M05BA
    ("bisphosphonates", ATC_SYS, "M05BB03", True),              # is-a M05BB
    ("bisphosphonates", ATC_SYS, "M05BX04", False),             # denosumab: M05BX is not included
    ("bisphosphonates", ATC_SYS, "M05B", False),                # the parent group
    ("bisphosphonates", TOH, "bisphosphonate", True),
    ("bisphosphonates", SCT, "M05BA04", False),
    ("pregnancy-breastfeeding-findings", SCT, "77386006", True),
    ("pregnancy-breastfeeding-findings", SCT, "413712001", True),
    ("pregnancy-breastfeeding-findings", SCT, "60001007", False),   # not pregnant
    ("pregnancy-ended-findings", ICD, "O80", True),                  # listed concept
    ("pregnancy-ended-findings", ICD, "Z39.2", True),                # is-a Z39
    ("pregnancy-ended-findings", ICD, "Z33.1", False),               # pregnant state
    ("pregnancy-status-values", SCT, "60001007", True),
    ("pregnancy-status-values", SCT, "261665006", True),
    ("pregnancy-status-values", SCT, "413712001", False),
    ("mri-joint-codes", LNC, "36020-6", True),
    ("mri-joint-codes", LNC, "36013-1", True),
    ("mri-joint-codes", LNC, "72514-3", False),
    ("mri-findings", TOH, "bone-marrow-oedema-diffuse", True),       # descendent-of mri-finding
    ("mri-findings", TOH, "joint-effusion", True),
    ("mri-findings", TOH, "mri-finding", False),                     # descendent-of excludes itself
    ("mri-findings", TOH, "migration", False),
    ("toh-flags", TOH, "migration", True),                           # descendent-of flag
    ("toh-flags", TOH, "full-weight-bearing-active-oedema", True),
    ("toh-flags", TOH, "follow-up-overdue", True),
    ("toh-flags", TOH, "flag", False),
    ("toh-flags", TOH, "repeat-mri", False),
    ("weight-bearing-status", TOH, "full-weight-bearing", True),
    ("weight-bearing-status", TOH, "weight-bearing-level", False),
    ("followup-task-codes", TOH, "repeat-mri", True),
    ("followup-task-codes", TOH, "follow-up-review", True),
    ("followup-task-codes", TOH, "toh-follow-up-plan", False),
]


def test_the_guide_valuesets_are_all_known(guide, guide_terminology):
    urls = sorted({f"{IG}/ValueSet/{name}" for name, *_ in GUIDE_MEMBERSHIP})
    assert guide_terminology.urls() == urls
    assert sorted(r["url"] for r in guide.resources if r["resourceType"] == "ValueSet") == urls


@pytest.mark.parametrize("name, system, code, expected", GUIDE_MEMBERSHIP)
def test_the_rules_and_the_profile_validator_agree_with_the_guide(guide, guide_terminology, name, system, code,
                                                                   expected):
    """Both the rules' Terminology and the profile validator answer what the guide's JSON says."""
    url = f"{IG}/ValueSet/{name}"
    assert guide_terminology.contains_code(url, system, code) is expected
    assert guide.contains(url, system, code) is expected
