"""A cheap upper estimate of how many search index rows a resource would get, computed before
the resource is validated or indexed, so a resource whose index would be too large is refused
in time linear in its size (https://hl7.org/fhir/R4/search.html; the extraction itself is
service.fhir.search.extract).

Every index row of a parameter comes from at least one JSON leaf (string, number, boolean)
under the elements its expression reaches, so the estimate is, over the indexed parameters
of the type, the number of leaves under the elements its leading plain path reaches
(``Patient.name.given`` -> every name's given; ``Bundle.entry[0].resource`` -> the first
entry's resource; a path that starts with a function -> the whole resource). It may overshoot
(a Coding's system and code give one row, not two, and ``where(...)`` is not applied); it
never undershoots.
Pure: no database.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from service.fhir.search.definitions import TABLE_PARAMS, SearchParameterRegistry

_STEP = re.compile(r"\.(\w+)(?:\[(\d+)\])?(?![\w(\[])")
_TYPE_PREFIX = re.compile(r"^\(*[A-Z][A-Za-z]*")
Path = tuple[tuple[str, int | None], ...]

INDEXED_TYPES = frozenset({"token", "string", "reference", "date", "quantity", "number", "uri"})


class IndexSizeEstimator:
    """Estimates index rows per resource for one registry (per-type tables built once)."""

    def __init__(self, registry: SearchParameterRegistry) -> None:
        self.registry = registry
        self._paths: dict[str, Counter[Path]] = {}
        self._reads: dict[str, int] = {}   # res_type -> how many parts read a plain path (sum of paths())

    def paths(self, res_type: str) -> Counter[Path]:
        """How many indexed parameter parts of res_type read each leading plain path
        ((element, index or None) steps; () = the whole resource)."""
        found = self._paths.get(res_type)
        if found is None:
            found = Counter(plain_path(part.expression) for code, param in self.registry.for_type(res_type).items()
                            if code not in TABLE_PARAMS and param.type in INDEXED_TYPES
                            for part in param.parts)
            self._paths[res_type] = found
        return found

    def estimate(self, resource: dict[str, Any], limit: int | None = None) -> int:
        """The estimated number of index rows of resource (see the module docstring). With a
        limit, stops as soon as the estimate passes it (and returns a number above it), so the
        cost is bounded by the limit rather than by the resource."""
        res_type = resource.get("resourceType")
        if not isinstance(res_type, str):
            return 0
        total = 0
        for path, times in self.paths(res_type).items():
            nodes = reach(resource, path, limit)
            if limit is not None and len(nodes) > limit:
                return len(nodes) * times + total
            total += times * sum(leaves(node, None if limit is None else limit - total) for node in nodes)
            if limit is not None and total > limit:
                return total
        return total


    def exceeds(self, resource: dict[str, Any], limit: int) -> bool:
        """Whether estimate(resource, limit) > limit, decided first by a cheaper bound.

        The nodes one plain path reaches are disjoint parts of the resource (distinct keys
        and array items at each step), so each path counts at most the resource's own leaves,
        and the estimate is at most leaves(resource) * (the parts reading any path). When that
        product is within the limit the answer is no; otherwise the estimate decides, as before.
        One walk of the resource instead of one per path."""
        res_type = resource.get("resourceType")
        if not isinstance(res_type, str):
            return False
        reads = self._reads.get(res_type)
        if reads is None:
            reads = self._reads[res_type] = sum(self.paths(res_type).values())
        if reads == 0:
            return False
        if leaves(resource, limit // reads) * reads <= limit:
            return False
        return self.estimate(resource, limit) > limit


def plain_path(expression: str) -> Path:
    """The leading steps of a FHIRPath made only of names and [n] indexes:
    'Bundle.entry[0].resource' -> (('entry', 0), ('resource', None)); '' if none."""
    head = _TYPE_PREFIX.match(expression)
    if head is None:
        return ()
    steps: list[tuple[str, int | None]] = []
    at = head.end()
    while (step := _STEP.match(expression, at)) is not None:
        steps.append((step.group(1), int(step.group(2)) if step.group(2) is not None else None))
        at = step.end()
    return tuple(steps)


def reach(resource: dict[str, Any], path: Path, limit: int | None = None) -> list[Any]:
    """The JSON values a plain path reaches; a step also takes a choice element's typed keys
    ('value' -> 'valueQuantity'), and arrays are flattened as FHIRPath does. With a limit,
    stops once more than limit values are reached (the caller only needs to know that)."""
    nodes: list[Any] = [resource]
    for name, index in path:
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            value = node.get(name)
            values = [value] if value is not None else [
                v for k, v in node.items() if k.startswith(name) and k[len(name):][:1].isupper()]
            for value in values:
                items = value if isinstance(value, list) else [value]
                found.extend(items if index is None else items[index:index + 1])
            if limit is not None and len(found) > limit:
                return found
        nodes = found
    return nodes


def leaves(value: Any, limit: int | None = None) -> int:
    """The number of scalar values (strings, numbers, booleans) in a JSON value, iteratively;
    with a limit, counting stops once it is passed."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            count += 1
            if limit is not None and count > limit:
                return count
    return count
