"""A StructureDefinition snapshot compiled into a tree of element rules.

Each snapshot element becomes an Element; children hang under their parent by element id, and
slices (`id` ending in `:sliceName`) hang under the sliced element. The validator walks this tree
alongside the instance, so only elements the snapshot lists are visited.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._constraints import Constraint, compile_constraint

# FHIR primitive type codes as they appear as suffixes of choice elements (valueBoolean -> boolean).
PRIMITIVES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url",
    "uuid"})
_SUFFIX_TO_TYPE = {t[0].upper() + t[1:]: t for t in PRIMITIVES}


def choice_type(suffix: str) -> str:
    """The FHIR type code of a choice suffix: 'DateTime' -> 'dateTime', 'Quantity' -> 'Quantity'."""
    return _SUFFIX_TO_TYPE.get(suffix, suffix)


@dataclass(frozen=True)
class Discriminator:
    type: str
    path: str


@dataclass
class Element:
    """The rules of one snapshot element."""

    id: str
    path: str
    name: str                    # last path segment: 'coding', 'value[x]'
    slice_name: str | None
    min: int
    max: int | None              # None means '*'
    types: tuple[str, ...]
    type_profiles: tuple[str, ...]
    target_profiles: tuple[str, ...]
    fixed: Any = None
    pattern: Any = None
    binding: tuple[str, str] | None = None  # (strength, valueSet)
    constraints: list[Constraint] = field(default_factory=list)
    children: list[Element] = field(default_factory=list)
    discriminators: tuple[Discriminator, ...] = ()
    slicing_rules: str | None = None
    slices: list[Element] = field(default_factory=list)

    @property
    def is_choice(self) -> bool:
        return self.name.endswith("[x]")

    def child(self, name: str) -> Element | None:
        return next((c for c in self.children if c.name == name), None)


def _value_of(element: dict[str, Any], prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix):
            return value
    return None


def _split_id(element_id: str) -> tuple[str, str | None, str]:
    """Return (parent id, slice name, name) for an element id."""
    head, _, last = element_id.rpartition(".")
    name, _, slice_name = last.partition(":")
    if slice_name:
        return (f"{head}.{name}" if head else name), slice_name, name
    return head, None, name


def compile_snapshot(sd: dict[str, Any], skipped: list[tuple[str, str, str]]) -> Element:
    """Compile a StructureDefinition's snapshot into its root Element.

    Constraints fhirpathpy cannot compile are left out and recorded in `skipped` as
    (profile url, constraint key, reason). Raises KeyError if the snapshot is missing.
    """
    by_id: dict[str, Element] = {}
    root: Element | None = None
    for raw in sd["snapshot"]["element"]:
        element_id = raw.get("id") or raw["path"]
        parent_id, slice_name, name = _split_id(element_id)
        types = raw.get("type", ())
        targets = tuple(p for t in types for p in t.get("targetProfile", ()))
        binding = raw.get("binding")
        slicing = raw.get("slicing") or {}
        el = Element(
            id=element_id, path=raw["path"], name=name, slice_name=slice_name,
            min=int(raw.get("min", 0)),
            max=None if raw.get("max", "*") == "*" else int(raw["max"]),
            types=tuple(t["code"] for t in types),
            type_profiles=tuple(p for t in types for p in t.get("profile", ())),
            target_profiles=targets,
            fixed=_value_of(raw, "fixed"), pattern=_value_of(raw, "pattern"),
            binding=(binding["strength"], binding["valueSet"])
            if binding and binding.get("valueSet") else None,
            discriminators=tuple(Discriminator(d["type"], d["path"])
                                 for d in slicing.get("discriminator", ())),
            slicing_rules=slicing.get("rules"),
        )
        for raw_constraint in raw.get("constraint", ()):
            constraint, reason = compile_constraint(raw_constraint, el.path, el.types)
            if constraint is not None:
                el.constraints.append(constraint)
            elif reason:
                skipped.append((sd["url"], raw_constraint.get("key", "?"), reason))
        by_id[element_id] = el
        if root is None:
            root = el
        elif slice_name:
            by_id[parent_id].slices.append(el)
        else:
            by_id[parent_id].children.append(el)
    if root is None:
        raise KeyError(f"{sd['url']}: empty snapshot")
    return root
