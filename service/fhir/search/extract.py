"""Write-time extraction: a resource (dict) -> the index rows of its search parameters.

Each parameter's FHIRPath (one type's part of the official expression) is evaluated by its
compiled accessor (service.fhir.search.accessors: plain Python over the JSON, for the path
expressions that are nearly all of R4's) or, for the few others, by fhirpathpy; both give
(type, value) pairs, which are turned into rows by parameter type:

    token      Coding / CodeableConcept / Identifier / ContactPoint / code / boolean / string
               -> (system, code, normalised display text, code case-folded if a string)
    string     string / HumanName / Address -> (normalised, exact)
    reference  Reference / canonical / uri -> (target type, target id) or absolute url
    date       date / dateTime / instant / Period / Timing -> UTC range [low, high)
    quantity   Quantity / Money / Age / Duration -> (value, system, code, unit)
    number     decimal / integer -> value
    uri        uri / url / canonical -> the string

    composite  two components of one element -> (token, second value) (composite.py)

Identifier tokens also give rows '<param>:of-type' (type system and code, value case-folded)
and references with an identifier give rows '<param>:identifier', for those modifiers.
Compiled expressions are cached per resource type on the Extractor instance (read-only once
built). ``Extractor(registry, compiled_accessors=False)`` evaluates every expression with
fhirpathpy (what the equivalence test compares against). Special parameters are not indexed.
Pure: no database, no Flask.

A parameter is *bound* when its values may depend on what the server assigns at write time:
reference parameters (a transaction rewrites urn:uuid: references to the ids it assigns, and
their target types are read from the rewritten string), and any expression that reads an id,
a reference, meta.versionId or meta.lastUpdated. The others are *unbound*: their rows are the
same for a create as it was sent and as it is stored, so ``extract(resource, UNBOUND)`` may run
before a transaction takes its write lock and ``extract(stored, BOUND)`` completes them under it
(issue 11; tests/unit/search/test_search_bound.py checks the split on the R4 examples).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import fhirpathpy
from fhirpathpy.models import models as _fhirpath_models

from service.fhir.search.composite import CompositeExtractor, CompositeRow
from service.fhir.search.accessors import Accessor, Node, compile_path, root_keys
from service.fhir.search.definitions import (ALL, BOUND, TABLE_PARAMS, UNBOUND, PathPart, SearchParameterRegistry,  # noqa: F401
                                            TypeParam, is_bound)
from service.fhir.search.values import HIGH_END, LOW_END, date_range, fold_case, normalize, parse_reference

log = logging.getLogger(__name__)

_MODEL = _fhirpath_models["r4"]
_OPTIONS = {"returnRawData": True}
MAX_STRING = 255  # index columns are bounded; longer strings are cut for the index


class TokenRow(NamedTuple):
    param: str
    system: str | None
    code: str | None
    text: str | None
    code_ci: str | None = None   # code case-folded, when it is a string (searched without case)


class StringRow(NamedTuple):
    param: str
    norm: str
    exact: str


class ReferenceRow(NamedTuple):
    param: str
    target_type: str | None
    target_id: str | None
    url: str | None


class DateRow(NamedTuple):
    param: str
    low: Any   # datetime (UTC)
    high: Any


class QuantityRow(NamedTuple):
    param: str
    value: float
    system: str | None
    code: str | None
    unit: str | None


class NumberRow(NamedTuple):
    param: str
    value: float


class UriRow(NamedTuple):
    param: str
    uri: str


@dataclass
class IndexRows:
    """Every index row of one resource, by kind (each a set, so duplicates collapse)."""

    token: set[TokenRow] = field(default_factory=set)
    string: set[StringRow] = field(default_factory=set)
    reference: set[ReferenceRow] = field(default_factory=set)
    date: set[DateRow] = field(default_factory=set)
    quantity: set[QuantityRow] = field(default_factory=set)
    number: set[NumberRow] = field(default_factory=set)
    uri: set[UriRow] = field(default_factory=set)
    composite: set[CompositeRow] = field(default_factory=set)

    def kinds(self) -> Iterator[tuple[str, set[Any]]]:
        yield from vars(self).items()


    def merge(self, other: IndexRows) -> IndexRows:
        """Add other's rows to these (in place); returns self."""
        for kind, items in other.kinds():
            getattr(self, kind).update(items)
        return self


INDEXED_TYPES = ("token", "string", "reference", "date", "quantity", "number", "uri")

@dataclass(frozen=True)
class _Compiled:
    param: TypeParam
    part: PathPart
    fn: Accessor   # resource -> [(type, value)]
    keys: frozenset[str]   # the resource keys the path can start from (empty: unknown, always run)
    bound: bool    # is_bound(): its values may depend on what the server assigns


def _with_fhirpathpy(expression: str) -> Accessor:
    """expression evaluated by fhirpathpy, as (type, value) pairs; raises what fhirpathpy
    raises when it cannot parse the expression."""
    fn = fhirpathpy.compile(expression, _MODEL, _OPTIONS)

    def evaluate(resource: Mapping[str, Any]) -> list[Node]:
        return [(getattr(node, "path", None), getattr(node, "data", node)) for node in fn(resource, {})]
    return evaluate


class Extractor:
    """Extracts index rows from resources; one per application (compiled paths cached here)."""

    def __init__(self, registry: SearchParameterRegistry, base_urls: Iterable[str] = (), *,
                 compiled_accessors: bool = True) -> None:
        self.registry = registry
        self.compiled_accessors = compiled_accessors
        self.base_urls = tuple(b.rstrip("/") for b in base_urls if b)
        self._compiled: dict[str, tuple[_Compiled, ...]] = {}
        self._subsets: dict[tuple[str, str], tuple[_Compiled, ...]] = {}
        self.composites = CompositeExtractor(registry, compiled_accessors=compiled_accessors)

    def compiled(self, res_type: str) -> tuple[_Compiled, ...]:
        """The compiled paths of every indexed parameter of res_type (built once)."""
        done = self._compiled.get(res_type)
        if done is None:
            items = []
            for code, param in self.registry.for_type(res_type).items():
                if code in TABLE_PARAMS or param.type not in INDEXED_TYPES:
                    continue
                for part in param.parts:
                    fn = compile_path(part.expression) if self.compiled_accessors else None
                    try:
                        fn = fn or _with_fhirpathpy(part.expression)
                    except Exception:  # noqa: BLE001 - a definition fhirpathpy cannot parse
                        log.warning("search parameter %s: cannot compile %r", param.url, part.expression)
                        continue
                    items.append(_Compiled(param, part, fn, root_keys(res_type, part.root),
                                           is_bound(param.type, part.expression)))
            done = self._compiled[res_type] = tuple(items)
        return done

    def _subset(self, res_type: str, which: str) -> tuple[_Compiled, ...]:
        """compiled(res_type), or its BOUND or UNBOUND parameters only (built once)."""
        if which == ALL:
            return self.compiled(res_type)
        done = self._subsets.get((res_type, which))
        if done is None:
            done = self._subsets[res_type, which] = tuple(
                c for c in self.compiled(res_type) if c.bound == (which == BOUND))
        return done

    def extract(self, resource: dict[str, Any], which: str = ALL) -> IndexRows:
        """Every index row of resource (which: ALL), or those of its BOUND or UNBOUND parameters
        only (see the module docstring). Never raises for odd content: a value that cannot be
        read is skipped (and logged), since the model validation has already run."""
        rows = IndexRows()
        keys = resource.keys()
        for c in self._subset(resource["resourceType"], which):
            if c.keys and c.keys.isdisjoint(keys):
                continue
            try:
                nodes = c.fn(resource)
            except Exception:  # noqa: BLE001 - fhirpathpy raises bare Exceptions
                log.warning("search parameter %s failed on %s/%s", c.param.url,
                            resource.get("resourceType"), resource.get("id"), exc_info=True)
                continue
            add = _ADDERS[c.param.type]
            for fhir_type, data in nodes:
                if data is None:
                    continue
                add(self, rows, c.param.code, c.part, fhir_type, data)
        rows.composite = self.composites.extract(resource, self.index_value, which)
        return rows

    def index_value(self, kind: str, code: str, fhir_type: str | None, value: Any) -> set[Any]:
        """The rows one value gives as a parameter of type kind (for composite components)."""
        rows = IndexRows()
        _ADDERS[kind](self, rows, code, _ANY_PART, fhir_type, value)
        return {r for r in getattr(rows, kind) if r.param == code}

    # --- one adder per parameter type -----------------------------------------------------

    def _token(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        out = rows.token
        if isinstance(v, bool):
            out.add(TokenRow(code, None, "true" if v else "false", None))
        elif isinstance(v, (str, int, Decimal, float)):
            plain = _cut(str(v))
            out.add(TokenRow(code, None, plain, None, fold_case(plain) if t == "string" else None))
        elif isinstance(v, dict):
            if "coding" in v or t == "CodeableConcept" or ("text" in v and "value" not in v and "code" not in v):
                for coding in v.get("coding") or ():
                    if isinstance(coding, dict):
                        self._coding(out, code, coding)
                if v.get("text"):
                    out.add(TokenRow(code, None, None, _norm(v["text"])))
            elif t == "Identifier" or ("value" in v and "code" not in v and t != "ContactPoint"):
                if v.get("value") is not None or v.get("system"):
                    text = (v.get("type") or {}).get("text") if isinstance(v.get("type"), dict) else None
                    ident = _s(v.get("value"))
                    out.add(TokenRow(code, _s(v.get("system")), ident, _norm(text) if text else None,
                                     fold_case(ident) if ident is not None else None))
                    type_ = v.get("type")
                    for coding in (type_.get("coding") or ()) if isinstance(type_, dict) and ident else ():
                        if isinstance(coding, dict) and coding.get("code"):   # for :of-type
                            out.add(TokenRow(f"{code}:of-type", _s(coding.get("system")), _s(coding["code"]),
                                             None, fold_case(ident or "")))
            elif t == "ContactPoint":
                if v.get("value") is not None:
                    contact = _s(v.get("value"))
                    out.add(TokenRow(code, _s(v.get("system")), contact, None, fold_case(contact or "")))
            else:   # Coding (or Quantity/other with code)
                self._coding(out, code, v)

    @staticmethod
    def _coding(out: set[TokenRow], code: str, c: dict[str, Any]) -> None:
        if c.get("code") is None and c.get("system") is None:
            return
        out.add(TokenRow(code, _s(c.get("system")), _s(c.get("code")),
                         _norm(c["display"]) if c.get("display") else None))

    def _string(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        for s in _strings(v):
            if s.strip():
                rows.string.add(StringRow(code, _norm(s), _cut(s)))

    def _reference(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        ident = v.get("identifier") if isinstance(v, dict) else None
        if isinstance(ident, dict) and ident.get("value") is not None:    # for :identifier
            value = _s(ident["value"]) or ""
            rows.token.add(TokenRow(f"{code}:identifier", _s(ident.get("system")), value, None, fold_case(value)))
        text = v.get("reference") if isinstance(v, dict) else v if isinstance(v, str) else None
        if not isinstance(text, str):
            return
        ref = parse_reference(text, self.base_urls)
        if ref is None:
            return
        if part.ref_types and ref.target_type not in part.ref_types:
            return
        rows.reference.add(ReferenceRow(code, ref.target_type, ref.target_id, _cut(ref.url) if ref.url else None))

    def _date(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        for low, high in _date_ranges(v):
            rows.date.add(DateRow(code, low, high))

    def _quantity(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        if not isinstance(v, dict) or not isinstance(v.get("value"), (int, float, Decimal)) or isinstance(v.get("value"), bool):
            return
        unit_code = v.get("code") or v.get("currency")
        rows.quantity.add(QuantityRow(code, float(v["value"]), _s(v.get("system")),
                                      _s(unit_code), _s(v.get("unit"))))

    def _number(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
            rows.number.add(NumberRow(code, float(v)))

    def _uri(self, rows: IndexRows, code: str, part: PathPart, t: str | None, v: Any) -> None:
        if isinstance(v, str) and v:
            rows.uri.add(UriRow(code, _cut(v)))


_ANY_PART = PathPart("")
_ADDERS: dict[str, Callable[..., None]] = {
    "token": Extractor._token, "string": Extractor._string, "reference": Extractor._reference,
    "date": Extractor._date, "quantity": Extractor._quantity, "number": Extractor._number,
    "uri": Extractor._uri,
}


def _cut(s: str) -> str:
    return s[:MAX_STRING]


def _s(v: Any) -> str | None:
    return None if v is None else _cut(str(v))


def _norm(s: str) -> str:
    return _cut(normalize(s))


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district",
               "state", "postalCode", "country")


def _strings(v: Any) -> Iterator[str]:
    """The searchable strings of a value: itself, or the parts of a HumanName/Address."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for key in _NAME_PARTS:
            item = v.get(key)
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from (i for i in item if isinstance(i, str))


def _date_ranges(v: Any) -> Iterator[tuple[Any, Any]]:
    """UTC ranges of a date, dateTime, instant, Period or Timing (malformed parts skipped)."""
    if isinstance(v, str):
        try:
            yield date_range(v)
        except ValueError:
            return
    elif isinstance(v, dict):
        if "start" in v or "end" in v:          # Period
            try:
                low = date_range(v["start"])[0] if v.get("start") else LOW_END
                high = date_range(v["end"])[1] if v.get("end") else HIGH_END
            except ValueError:
                return
            yield low, high
        else:                                   # Timing
            for event in v.get("event") or ():
                yield from _date_ranges(event)
            bounds = (v.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                yield from _date_ranges(bounds)
