"""FHIRPath invariants (ElementDefinition.constraint) compiled once with fhirpathpy.

An invariant holds when its expression yields true or nothing; it fails on false. Expressions
fhirpathpy cannot parse are skipped at compile time; expressions that raise while evaluating are
skipped for that resource. Both are counted by the caller, never fatal.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

R4_MODEL = models["r4"]

# Deliberately not evaluated:
#   ele-1  "hasValue() or children()": every element, structural; the R4 model check covers it.
#   dom-3  contained resources referenced: walks all descendants and prints via trace().
#   dom-6  "should have narrative": a best-practice warning on every resource EHRs send.
EXCLUDED = frozenset({"ele-1", "dom-3", "dom-6"})


class ConstraintEvaluationError(Exception):
    """fhirpathpy raised while evaluating an invariant."""


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str
    source: str | None
    _parsed: Any
    _base: str | None  # model path of the context element, for type-aware functions

    def holds(self, value: Any, root: Mapping[str, Any]) -> bool:
        """Evaluate on `value` (the element or resource). Raises ConstraintEvaluationError."""
        data = value if self._base is None else ResourceNode.create_node(value, self._base)
        variables = {"resource": root, "rootResource": root}
        try:
            result = apply_parsed_path(data, self._parsed, variables, R4_MODEL)
        except Exception as exc:  # fhirpathpy raises many kinds; none may escape validation
            raise ConstraintEvaluationError(f"{self.key}: {exc}") from exc
        if not result:
            return True
        return all(r is not False for r in result) and bool(result[0])


def _model_base(path: str, types: tuple[str, ...]) -> str | None:
    """The fhirpathpy model path of an element's values, so ofType() and choices resolve."""
    if "." not in path:
        return path  # the root: a resource type, or Extension for an extension definition
    if len(types) == 1 and types[0][0].isupper() and types[0] not in ("BackboneElement", "Element"):
        return types[0]  # a complex datatype: Extension, CodeableConcept, Quantity...
    return None if "[x]" in path else path


def compile_constraint(raw: Mapping[str, Any], path: str,
                       types: tuple[str, ...] = ()) -> tuple[Constraint | None, str]:
    """Compile one ElementDefinition.constraint; returns (constraint, "") or (None, reason).

    The reason is empty for the deliberately EXCLUDED keys."""
    key = raw.get("key", "?")
    expression = raw.get("expression")
    if key in EXCLUDED:
        return None, ""
    if not expression:
        return None, "no FHIRPath expression"
    try:
        parsed = parse(expression)
    except Exception as exc:  # antlr / fhirpathpy parse errors
        return None, f"fhirpathpy cannot parse: {exc}"
    return Constraint(key, raw.get("severity", "error"), raw.get("human", ""), expression,
                      raw.get("source"), parsed, _model_base(path, types)), ""
