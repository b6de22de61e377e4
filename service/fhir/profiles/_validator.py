"""Walk one instance along a compiled profile and collect the issues.

Checks, per element the snapshot lists: cardinality (min/max, slices included), the type of
choice elements, fixed[x] and pattern[x] values, required bindings held locally, Reference
target types, extension profiles held locally, and FHIRPath invariants. Locations are FHIRPath:
`Condition.bodySite[0].coding`, `Observation.value.ofType(Quantity)`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from service.fhir.errors import Issue

from ._constraints import ConstraintEvaluationError
from ._elements import Element, choice_type
from ._terminology import Terminology

_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")

Item = tuple[Any, str | None, str]  # (value, choice type or None, location)


class Resolver(Protocol):
    """What the walker needs from the package: other compiled definitions and their types, and
    the invariants evaluated by Python predicates instead of FHIRPath (Conformance.implement)."""

    terminology: Terminology

    @property
    def natives(self) -> Mapping[str, Callable[[Any, Mapping[str, Any]], bool]]: ...

    def element(self, url: str) -> Element | None: ...

    def type_of(self, url: str) -> str | None: ...


def matches_pattern(pattern: Any, value: Any) -> bool:
    """FHIR pattern[x] semantics: every property of the pattern is present with that value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            matches_pattern(p, value.get(k)) for k, p in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(
            any(matches_pattern(p, v) for v in value) for p in pattern)
    return pattern == value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _codes(value: Any, type_code: str | None) -> list[tuple[str | None, str | None]] | None:
    """(system, code) pairs of a coded value, or None if the value is not coded."""
    if isinstance(value, str):
        return [(None, value)] if type_code in (None, "code") else None
    if not isinstance(value, dict):
        return None
    if type_code == "CodeableConcept" or "coding" in value or (
            type_code is None and "text" in value):
        return [(c.get("system"), c.get("code")) for c in value.get("coding", ())]
    if type_code in (None, "Coding", "Quantity"):
        return [(value.get("system"), value.get("code"))]
    return None


def _show(codes: list[tuple[str | None, str | None]]) -> str:
    return ", ".join(f"{s}|{c}" if s else str(c) for s, c in codes) or "no coding"


class Walker:
    """Validate one resource against one compiled profile; issues collect in `issues`."""

    def __init__(self, resolver: Resolver, resource: Mapping[str, Any]) -> None:
        self.resolver = resolver
        self.terminology = resolver.terminology
        self.root = resource
        self.issues: list[Issue] = []

    def run(self, profile_root: Element) -> list[Issue]:
        self.check_value(profile_root, self.root, None, str(self.root["resourceType"]))
        return self.issues

    def _issue(self, code: str, text: str, location: str, severity: str = "error") -> None:
        self.issues.append(Issue(severity, code, text, (location,)))

    # --- one value at one element ------------------------------------------------------------
    def check_value(self, el: Element, value: Any, typ: str | None, loc: str) -> None:
        if value is None:  # a primitive carried only by its _element (id / extensions)
            return
        if el.is_choice and typ is not None and el.types and typ not in el.types:
            self._issue("structure", f"Type {typ} is not allowed at {el.path} "
                        f"(allowed: {', '.join(el.types)})", loc)
            return
        if el.fixed is not None and value != el.fixed:
            self._issue("value", f"Value must be exactly {el.fixed!r}", loc)
        if el.pattern is not None and not matches_pattern(el.pattern, value):
            self._issue("value", f"Value does not match the required pattern {el.pattern!r}", loc)
        if el.binding and el.binding[0] == "required" and self.terminology.knows(el.binding[1]):
            self._check_binding(el, value, typ, loc)
        if "Reference" in el.types and el.target_profiles and isinstance(value, dict):
            self._check_reference(el, value, loc)
        for constraint in el.constraints:
            native = self.resolver.natives.get(constraint.key)
            try:
                ok = native(value, self.root) if native is not None else constraint.holds(value, self.root)
            except ConstraintEvaluationError as exc:
                self._issue("informational", f"{constraint.key} could not be evaluated here: {exc}", loc, "warning")
                continue
            if not ok:
                self._issue("invariant", f"{constraint.key}: {constraint.human}", loc,
                            "warning" if constraint.severity == "warning" else "error")
        if not isinstance(value, dict):
            return
        if el.types == ("Extension",) and el.type_profiles:
            extension = self.resolver.element(el.type_profiles[0])
            if extension is not None and extension is not el:
                self.check_value(extension, value, None, loc)
        self._check_children(el, value, loc)

    def _check_binding(self, el: Element, value: Any, typ: str | None, loc: str) -> None:
        vs = el.binding[1] if el.binding else ""
        codes = _codes(value, typ or (el.types[0] if len(el.types) == 1 else None))
        if codes is None or self._any_in(vs, codes):
            return
        self._issue("code-invalid", f"{_show(codes)}: not in the required ValueSet {vs}", loc)

    def _any_in(self, vs: str, codes: list[tuple[str | None, str | None]]) -> bool:
        for system, code in codes:
            if code and (self.terminology.contains(vs, system, code) if system
                         else self.terminology.contains_code(vs, code)):
                return True
        return False

    def _check_reference(self, el: Element, value: dict[str, Any], loc: str) -> None:
        allowed = {self.resolver.type_of(p) for p in el.target_profiles} - {None}
        if not allowed or "Resource" in allowed:
            return
        match = _REFERENCE.search(str(value.get("reference", "")))
        found = value.get("type") or (match.group(1) if match else None)
        if found and found not in allowed:
            self._issue("structure", f"Reference to {found} is not allowed here "
                        f"(allowed: {', '.join(sorted(str(a) for a in allowed))})", loc)

    # --- the children of a complex value -----------------------------------------------------
    def _check_cardinality(self, path: str, least: int, most: int | None, found: int, where: str) -> None:
        if found < least:
            self._issue("required", f"{path}: minimum required = {least}, found {found}", where)
        if most is not None and found > most:
            self._issue("structure", f"{path}: maximum allowed = {most}, found {found}", where)

    def _check_children(self, el: Element, value: Mapping[str, Any], loc: str) -> None:
        for child in el.children:
            items = self._child_items(child, value, loc)
            where = f"{loc}.{child.name.removesuffix('[x]')}"
            self._check_cardinality(child.path, child.min, child.max, len(items), where)
            for item_value, item_type, item_loc in items:
                self.check_value(child, item_value, item_type, item_loc)
            if child.slices:
                self._check_slices(child, items, where)

    @staticmethod
    def _child_items(child: Element, value: Mapping[str, Any], loc: str) -> list[Item]:
        name = child.name
        if child.is_choice:
            prefix = name[:-3]
            types = [(k, choice_type(k[len(prefix):])) for k in value
                     if k.startswith(prefix) and len(k) > len(prefix) and k[len(prefix)].isupper()]
            return [(value[k], t, f"{loc}.{prefix}.ofType({t})") for k, t in types]
        raw = value.get(name)
        if raw is None:
            return [(None, None, f"{loc}.{name}")] if f"_{name}" in value else []
        if isinstance(raw, list):
            return [(v, None, f"{loc}.{name}[{i}]") for i, v in enumerate(raw)]
        return [(raw, None, f"{loc}.{name}")]

    # --- slicing -----------------------------------------------------------------------------
    def _check_slices(self, el: Element, items: list[Item], where: str) -> None:
        assigned: dict[str, list[Item]] = {str(s.slice_name): [] for s in el.slices}
        for item in items:
            if item[0] is None:
                continue
            slice_ = next((s for s in el.slices if self._in_slice(el, s, item)), None)
            if slice_ is not None:
                assigned[str(slice_.slice_name)].append(item)
            elif el.slicing_rules == "closed":
                self._issue("structure", f"{el.path}: matches no slice and the slicing is closed",
                            item[2])
        for s in el.slices:
            got = assigned[str(s.slice_name)]
            self._check_cardinality(f"{el.path}:{s.slice_name}", s.min, s.max, len(got), where)
            for item_value, item_type, item_loc in got:
                self.check_value(s, item_value, item_type, item_loc)

    def _in_slice(self, sliced: Element, s: Element, item: Item) -> bool:
        if not sliced.discriminators:
            return False
        return all(self._discriminator_matches(d.type, d.path, s, item)
                   for d in sliced.discriminators)

    def _discriminator_matches(self, kind: str, path: str, s: Element, item: Item) -> bool:
        value, typ, _ = item
        path = path.removeprefix("$this").lstrip(".")
        target: Element | None = s
        values = [value]
        for segment in path.split(".") if path else ():
            if "(" in segment:  # resolve(), extension(url): not supported -> no match
                return False
            target = target.child(segment) if target is not None else None
            values = [x for v in values if isinstance(v, dict) for x in _as_list(v.get(segment))]
        if kind == "type":
            return typ in s.types if typ else bool(values)
        if kind == "exists":
            return bool(values) == (target is None or target.max != 0)
        if kind not in ("value", "pattern"):
            return False  # 'profile' discriminators are not supported
        if target is not None and target.fixed is not None:
            return any(v == target.fixed for v in values)
        if target is not None and target.pattern is not None:
            return any(matches_pattern(target.pattern, v) for v in values)
        if path == "url" and s.type_profiles:
            return any(v == s.type_profiles[0] for v in values)
        if (target is not None and target.binding and target.binding[0] == "required"
                and self.terminology.knows(target.binding[1])):
            type_code = target.types[0] if len(target.types) == 1 else None
            return any((codes := _codes(v, type_code)) is not None
                       and self._any_in(target.binding[1], codes) for v in values)
        return False
