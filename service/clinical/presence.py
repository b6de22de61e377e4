"""Is a finding present, absent, or unknown? Three values read from an Observation's value.

What is read, in order (the first that answers decides):
- valueBoolean: true present, false absent;
- dataAbsentReason: unknown;
- valueCodeableConcept codings: SNOMED CT 52101004 |Present|, 373066001 |Yes|, 10828004
  |Positive| -> present; 2667000 |Absent|, 373067005 |No|, 260385009 |Negative| -> absent;
  HL7 v2 table 0136 Y / N; HL7 v3 ObservationInterpretation POS / DET -> present, NEG / ND ->
  absent, IND -> unknown;
- interpretation (same ObservationInterpretation codes);
- text: valueString, valueCodeableConcept.text or a coding display, read as a whole phrase
  ("Present", "Not identified", "none seen") and, failing that, by the narrative reader's
  negation and uncertainty rules;
- nothing readable -> unknown (the caller reports it as an issue; an unknown value raises no flag).

Codes: SNOMED CT qualifier values and HL7 v2-0136 as listed in shared/clinical/TOH.md
("verified"); 10828004 / 260385009 and the v3 interpretation codes are in the R4
observation-interpretation ValueSet (http://hl7.org/fhir/R4/valueset-observation-interpretation.html).
"""
from __future__ import annotations

from typing import Any

from service.fhir.canonical import SNOMED

from . import narrative
from .terminology import normalise

PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"

V2_0136 = "http://terminology.hl7.org/CodeSystem/v2-0136"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

_CODES: dict[tuple[str, str], str] = {
    (SNOMED, "52101004"): PRESENT, (SNOMED, "373066001"): PRESENT, (SNOMED, "10828004"): PRESENT,
    (SNOMED, "2667000"): ABSENT, (SNOMED, "373067005"): ABSENT, (SNOMED, "260385009"): ABSENT,
    (V2_0136, "Y"): PRESENT, (V2_0136, "N"): ABSENT,
    (V3_INTERPRETATION, "POS"): PRESENT, (V3_INTERPRETATION, "DET"): PRESENT,
    (V3_INTERPRETATION, "NEG"): ABSENT, (V3_INTERPRETATION, "ND"): ABSENT,
    (V3_INTERPRETATION, "IND"): UNKNOWN,
}

_PRESENT_WORDS = frozenset(("present", "yes", "y", "positive", "pos", "seen", "identified",
                            "detected", "demonstrated", "noted", "true", "found", "visible"))
_ABSENT_WORDS = frozenset(("absent", "no", "n", "negative", "neg", "none", "not present",
                           "not seen", "not identified", "not detected", "not demonstrated",
                           "not visualised", "not visualized", "none seen", "none identified",
                           "false", "nil", "not found", "not evident", "no evidence"))
_UNKNOWN_WORDS = frozenset(("unknown", "indeterminate", "equivocal", "uncertain", "not assessed",
                            "not evaluated", "cannot be assessed", "unclear", "possible",
                            "questionable", "not applicable", "n a", "na"))


def _coded(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict):
            found = _CODES.get((coding.get("system") or "", coding.get("code") or ""))
            if found:
                return found
    return None


def text_presence(text: Any) -> str:
    """present / absent / unknown of a short answer text ("Not identified" -> absent)."""
    if not isinstance(text, str) or not text.strip():
        return UNKNOWN
    norm = normalise(text)
    if norm in _PRESENT_WORDS:
        return PRESENT
    if norm in _ABSENT_WORDS:
        return ABSENT
    if norm in _UNKNOWN_WORDS:
        return UNKNOWN
    q = narrative.qualifier(text)
    if q == narrative.ABSENT:
        return ABSENT
    if q != narrative.PRESENT:
        return UNKNOWN
    words = set(norm.split())
    if words & _PRESENT_WORDS and not words & {"not", "no"}:
        return PRESENT
    return UNKNOWN


def value_presence(element: dict[str, Any]) -> str | None:
    """present / absent / unknown of an Observation or component's value[x] and
    interpretation; None when the element carries no value at all (no value[x], no
    dataAbsentReason, no interpretation)."""
    value = element.get("valueBoolean")
    if isinstance(value, bool):
        return PRESENT if value else ABSENT
    if element.get("dataAbsentReason") is not None:
        return UNKNOWN
    concept = element.get("valueCodeableConcept")
    found = _coded(concept)
    if found:
        return found
    for interpretation in element.get("interpretation") or ():
        found = _coded(interpretation)
        if found:
            return found
    if isinstance(concept, dict):
        texts = [concept.get("text")] + [c.get("display") for c in concept.get("coding") or ()
                                         if isinstance(c, dict)]
        for text in texts:
            if isinstance(text, str) and text.strip():
                answer = text_presence(text)
                if answer != UNKNOWN:
                    return answer
        return UNKNOWN
    if isinstance(element.get("valueString"), str):
        return text_presence(element["valueString"])
    if any(k.startswith("value") for k in element) or element.get("interpretation"):
        return UNKNOWN
    return None
