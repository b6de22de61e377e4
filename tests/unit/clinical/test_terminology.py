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


def test_the_rules_and_the_profile_validator_agree(guide, guide_terminology):
    t = guide_terminology
    codes = set().union(*(guide.expand(url) for url in t.urls()))
    codes |= {(c.ATC, "M05BB03"), (c.ATC, "M05BX04"), (c.SNOMED, "0"), (c.TOH_CODES, "flag")}
    assert t.urls() == sorted(r["url"] for r in guide.resources if r["resourceType"] == "ValueSet")
    for url in t.urls():
        for system, code in codes:
            assert t.contains_code(url, system, code) == guide.contains(url, system, code), (url, code)
    assert t.contains_code(c.VS_MRI_FINDINGS, c.TOH_CODES, "bone-marrow-oedema-diffuse")
