"""Which joint and which side a Condition or Observation is about.

Sources, in order: bodySite codings (tracked-joints and laterality ValueSets, read through the
display the ValueSet gives the code, so a clinic's pre-coordinated "Left hip joint" code works;
a post-coordinated SNOMED CT expression is read concept by concept, so
"24136001:272741003=7771000" is the left hip joint),
Coding.display, bodySite.text ("Left hip", "R knee"), the laterality extension (on the resource or
on bodySite), and last the resource's own code (an MRI LOINC code with its side, "TOH of the
left hip"). Conflicting answers give no answer and a problem, never a guess.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from service.fhir.canonical import EXT_LATERALITY, LOINC, SNOMED, VS_LATERALITY, VS_MRI_HIP, VS_TRACKED_JOINTS

from .terminology import Terminology, normalise

JOINTS = ("hip", "knee", "ankle", "foot")
LEFT, RIGHT = "left", "right"
BOTH = frozenset((LEFT, RIGHT))
NO_SIDE: frozenset[str] = frozenset()

_JOINT_WORDS = {
    "hip": "hip", "hips": "hip", "acetabulum": "hip", "acetabular": "hip", "coxa": "hip",
    "knee": "knee", "knees": "knee", "patella": "knee", "patellar": "knee",
    "condyle": "knee", "condylar": "knee",
    "ankle": "ankle", "ankles": "ankle", "talus": "ankle", "talar": "ankle",
    "foot": "foot", "feet": "foot", "midfoot": "foot", "calcaneus": "foot", "calcaneal": "foot",
    "metatarsal": "foot", "tarsal": "foot", "navicular": "foot", "cuboid": "foot",
}
_FEMUR_WORDS = {"femur", "femoral"}          # hip, unless "distal"/"condyle" says knee
_LEFT_WORDS = {"left", "l", "lt", "lft", "sinistra"}
_RIGHT_WORDS = {"right", "r", "rt", "dextra"}
_BILATERAL_WORDS = {"bilateral", "both", "bilat"}

# Pre-coordinated laterality of the verified LOINC MR hip codes, used when the ValueSet gives
# no display to read the side from.
_LOINC_MRI = {"36013-1": ("hip", NO_SIDE), "36020-6": ("hip", frozenset((LEFT,))),
              "36022-2": ("hip", frozenset((RIGHT,))), "36017-2": ("hip", BOTH)}


@dataclass(frozen=True)
class Site:
    """A joint ("hip", "knee", "ankle", "foot" or None if unknown) and its sides (empty when
    unknown, both for bilateral), with the problems met while reading them."""

    joint: str | None
    sides: frozenset[str]
    problems: tuple[str, ...] = ()

    def label(self) -> str:
        """"left hip", "hip (side unknown)", "both knees", "unknown joint"."""
        return site_label(self.joint, self.sides)


def site_label(joint: str | None, sides: Iterable[str] | str | None) -> str:
    """Human label of a joint and side(s)."""
    if isinstance(sides, str):
        sides = {sides}
    sides = frozenset(sides or ())
    name = joint or "unknown joint"
    if sides == BOTH:
        return f"both {name}s" if joint else name
    if len(sides) == 1:
        return f"{next(iter(sides))} {name}"
    return f"{name} (side unknown)"


@lru_cache(maxsize=4096)
def parse_text(text: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """(joints, sides, side_conflict) named in free text. "Left hip" -> ({hip}, {left});
    "right and left hip" -> ({hip}, {left, right}); "left or right hip" -> side conflict."""
    words = normalise(text).split()
    joints = {_JOINT_WORDS[w] for w in words if w in _JOINT_WORDS}
    if any(w in _FEMUR_WORDS for w in words):
        if "distal" in words or "condyle" in words or "condylar" in words:
            joints.add("knee")
        else:
            joints.add("hip")
    left = any(w in _LEFT_WORDS for w in words)
    right = any(w in _RIGHT_WORDS for w in words)
    bilateral = any(w in _BILATERAL_WORDS for w in words)
    conflict = False
    if bilateral or (left and right and "and" in words):
        sides = BOTH
    elif left and right:
        sides, conflict = NO_SIDE, True
    elif left:
        sides = frozenset((LEFT,))
    elif right:
        sides = frozenset((RIGHT,))
    else:
        sides = NO_SIDE
    return frozenset(joints), sides, conflict


class _Collector:
    __slots__ = ("joints", "sides", "conflict")

    def __init__(self) -> None:
        self.joints: set[str] = set()
        self.sides: set[frozenset[str]] = set()
        self.conflict = False

    def text(self, text: Any, joints: bool = True, sides: bool = True) -> None:
        if not isinstance(text, str) or not text:
            return
        found_joints, found_sides, conflict = parse_text(text)
        if joints:
            self.joints |= found_joints
        if sides:
            if found_sides:
                self.sides.add(found_sides)
            self.conflict |= conflict


def _laterality_value(ext: dict[str, Any], terminology: Terminology, out: _Collector) -> None:
    concept = ext.get("valueCodeableConcept")
    if concept is None and isinstance(ext.get("valueCoding"), dict):
        concept = {"coding": [ext["valueCoding"]]}
    if concept is None and isinstance(ext.get("valueCode"), str):
        out.text(ext["valueCode"], joints=False)
        return
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            out.text(terminology.display(VS_LATERALITY, coding.get("system"), coding.get("code"))
                     or coding.get("display") or coding.get("code"), joints=False)
        out.text(concept.get("text"), joints=False)


def _extensions(element: dict[str, Any], terminology: Terminology, out: _Collector) -> None:
    for ext in element.get("extension") or ():
        if ext.get("url") == EXT_LATERALITY:
            _laterality_value(ext, terminology, out)


_SCTID = re.compile(r"\b\d{6,18}\b")


def _expanded(codings: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """Codings, with a post-coordinated SNOMED CT expression ("24136001 |Hip joint| :
    272741003 |Laterality| = 7771000 |Left|") read as one coding per concept id in it
    (SNOMED CT compositional grammar; the attribute 272741003 itself names nothing here)."""
    for coding in codings:
        if not isinstance(coding, dict):
            continue
        code = coding.get("code")
        if coding.get("system") == SNOMED and isinstance(code, str) and not code.isdigit():
            ids = [i for i in _SCTID.findall(code) if i != "272741003"]
            yield from ({"system": SNOMED, "code": i} for i in ids)
        else:
            yield coding


def _body_site(concept: dict[str, Any], terminology: Terminology, out: _Collector) -> None:
    for coding in _expanded(concept.get("coding") or ()):
        system, code = coding.get("system"), coding.get("code")
        if terminology.contains_code(VS_TRACKED_JOINTS, system, code):
            out.text(terminology.display(VS_TRACKED_JOINTS, system, code) or coding.get("display"))
        elif terminology.contains_code(VS_LATERALITY, system, code):
            out.text(terminology.display(VS_LATERALITY, system, code) or coding.get("display"),
                     joints=False)
        else:
            out.text(coding.get("display"))
    out.text(concept.get("text"))
    _extensions(concept, terminology, out)


def _own_code(concept: dict[str, Any], terminology: Terminology, out: _Collector) -> None:
    for coding in concept.get("coding") or ():
        system, code = coding.get("system"), coding.get("code")
        known = _LOINC_MRI.get(code or "") if system == LOINC else None
        text = terminology.display(VS_MRI_HIP, system, code) or coding.get("display")
        if text:
            out.text(text)
        elif known:
            out.joints.add(known[0])
            if known[1]:
                out.sides.add(known[1])
    out.text(concept.get("text"))


def read_site(resource: dict[str, Any], terminology: Terminology, code_key: str = "code") -> Site:
    """The joint and side of a Condition or Observation (see the module docstring)."""
    out = _Collector()
    body_sites = resource.get("bodySite")
    if isinstance(body_sites, dict):            # Observation.bodySite is a single concept
        body_sites = [body_sites]
    for concept in body_sites or ():
        if isinstance(concept, dict):
            _body_site(concept, terminology, out)
    _extensions(resource, terminology, out)
    if not out.joints or not out.sides:
        fallback = _Collector()
        concept = resource.get(code_key)
        if isinstance(concept, dict):
            _own_code(concept, terminology, fallback)
        if not out.joints:
            out.joints = fallback.joints
        if not out.sides and not out.conflict:
            out.sides, out.conflict = fallback.sides, fallback.conflict
    problems: list[str] = []
    joint: str | None = None
    if len(out.joints) == 1:
        joint = next(iter(out.joints))
    elif out.joints:
        problems.append("names more than one joint (" + ", ".join(sorted(out.joints)) + ")")
    else:
        problems.append("joint not recorded")
    sides: frozenset[str] = NO_SIDE
    if out.conflict or len(out.sides) > 1:
        problems.append("laterality is contradictory")
    elif out.sides:
        sides = next(iter(out.sides))
    else:
        problems.append("side not recorded")
    return Site(joint, sides, tuple(problems))
