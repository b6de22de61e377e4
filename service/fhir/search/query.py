"""Parsing a search request — a list of (name, value) pairs — into a SearchQuery.

The result is a SearchQuery (model.py): criteria ANDed, each with ORed values.
A parameter that is unknown or unsupported (or has an empty value) is left out of the query
and recorded in ``issues`` (OperationOutcome issues); the caller reports them in the Bundle,
or raises BadRequest with them under ``Prefer: handling=strict`` (see ``raise_if_strict``),
as https://hl7.org/fhir/R4/search.html#errors allows. A known parameter whose value is
malformed is never dropped (that would widen the search): parse raises BadRequest (400)
naming every such parameter, whatever the handling.
No SQL here: parameter names are only ever looked up in the registry.
https://hl7.org/fhir/R4/search.html
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.fhir.errors import BadRequest, Issue
from service.fhir.search.definitions import SearchParameterRegistry, TypeParam
from service.fhir.r4_types import R4_RESOURCE_TYPES
from service.fhir.search.composite import components
from service.fhir.search.model import (Chain, CompositeValue, Criterion, DateValue, Has, Include,
                                       NumberValue, OfTypeValue, QuantityValue, RefValue, SearchQuery,
                                       Simple, SortKey, TextValue, TokenValue, UriValue, Value)
from service.fhir.search.values import (date_range, is_id, is_type_name, normalize,
                                        number_range, parse_reference, split_prefix)

__all__ = ["CURSOR", "Chain", "Criterion", "DateValue", "Include", "NumberValue", "QuantityValue",
           "RefValue", "SearchLimits", "SearchParser", "SearchQuery", "SortKey", "TextValue", "TokenValue",
           "UriValue", "Value", "split_escaped"]


@dataclass(frozen=True)
class SearchLimits:
    """What one search may ask for, so its cost is bounded whatever a client sends.

    max_params: parameters in the request (every name=value pair, result parameters included;
    TOH_SEARCH_MAX_PARAMS); max_values: comma-separated values of one parameter
    (TOH_SEARCH_MAX_VALUES); max_chain_depth: links of a chain, 'subject:Patient.name' is one
    (TOH_SEARCH_MAX_CHAIN_DEPTH). Beyond any of them a search is refused with 400 (too-costly).
    """

    max_params: int = 64
    max_values: int = 100
    max_chain_depth: int = 3


MAX_CHAIN_DEPTH = SearchLimits.max_chain_depth
# Result-shaping parameters; the paging cursor is ours (opaque to clients).
CURSOR = "_cursor"
_IGNORED = frozenset({"_format", "_pretty"})
# Result parameters that take one value: a repetition is refused rather than half-applied.
_SINGLE = frozenset({"_count", "_total", "_summary", "_elements", "_type", CURSOR})
_SUMMARY_MODES = ("true", "text", "data", "count", "false")
_URI = re.compile(r"^\S+$")                              # R4 datatypes: uri is \S*
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")     # scheme:rest, no spaces
_SORTABLE_TYPES = frozenset({"date", "string", "token", "number", "quantity", "uri"})
_MODIFIERS = {
    "token": {"not", "missing", "text", "of-type", "in", "not-in", "above", "below"},
    "string": {"exact", "contains", "missing"},
    "reference": {"missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
}


class _Malformed(ValueError):
    """A parameter value that is malformed: the search is refused (400); the message goes
    into the OperationOutcome."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class _Unsupported(_Malformed):
    """A parameter the server does not know or support (or an empty value): left out of the
    search and reported (lenient), or refused (strict)."""

    def __init__(self, message: str, code: str = "not-supported") -> None:
        super().__init__(message, code)


def split_escaped(text: str, sep: str, *, keep_escapes: bool = False) -> list[str]:
    """Split on sep except where escaped with a backslash; unescape \\, \\| \\$ and \\\\
    unless keep_escapes (for a value that a later split will take apart further)."""
    out, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            cur.append(ch + nxt if keep_escapes or nxt not in ",|$\\" else nxt)
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(text: str) -> str:
    return split_escaped(text, ",")[0]


class SearchParser:
    """Turns request parameters into a SearchQuery against one registry."""

    def __init__(self, registry: SearchParameterRegistry, *, base_urls: tuple[str, ...] = (),
                 default_count: int = 50, max_count: int = 1000,
                 limits: SearchLimits = SearchLimits()) -> None:
        self.registry = registry
        self.limits = limits
        self.base_urls = base_urls
        self.default_count = default_count
        self.max_count = max_count

    def parse(self, res_type: str | None, params: list[tuple[str, str]], *,
              compartment: tuple[str, str] | None = None) -> SearchQuery:
        """Parse params for res_type (None for any type).

        Unknown and unsupported parameters become warning issues (see raise_if_strict).
        Raises BadRequest (400, one issue per parameter, its name as the expression) when
        a value is malformed (https://hl7.org/fhir/R4/search.html#errors).
        """
        q = SearchQuery(res_type, count=self.default_count, compartment=compartment)
        errors: list[Issue] = []
        if len(params) > self.limits.max_params:
            raise BadRequest(f"The search has {len(params)} parameters; at most {self.limits.max_params} are "
                             "allowed (TOH_SEARCH_MAX_PARAMS)", code="too-costly")
        for name, value in params:
            try:
                if self._control(q, name, value):
                    continue
                if res_type is None:
                    raise _Unsupported(f"parameter {name!r} is not supported here")
                q.criteria.append(self.criterion(res_type, name, value))
                q.used.append((name, value))
            except _Unsupported as exc:
                q.issues.append(Issue("warning", exc.code, f"{name}={value}: {exc}", (name,)))
            except _Malformed as exc:
                errors.append(Issue("error", exc.code, f"{name}={value}: {exc}", (name,)))
        if errors:
            raise BadRequest("; ".join(i.diagnostics for i in errors), issues=errors)
        return q

    # --- result parameters -------------------------------------------------------------------

    def _control(self, q: SearchQuery, name: str, value: str) -> bool:
        """Apply a result parameter to q; False if name is not one. Raises _Malformed."""
        if name in _IGNORED:
            return True
        if name in _SINGLE:
            if any(used == name for used, _ in q.used) or (name == CURSOR and q.cursor is not None):
                raise _Malformed(f"{name} may be given only once")
        if name == CURSOR:
            q.cursor = value
            return True
        if name == "_count":
            try:
                n = int(value)
            except ValueError:
                raise _Malformed("_count must be a non-negative integer") from None
            if n < 0:
                raise _Malformed("_count must be a non-negative integer")
            q.count = min(n, self.max_count)
            value = str(q.count)          # the self link carries the count actually used
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise _Malformed("_total must be none, estimate or accurate")
            q.total = value
        elif name == "_summary":
            if value not in _SUMMARY_MODES:
                raise _Malformed("_summary must be true, text, data, count or false")
            q.summary = None if value == "false" else value
        elif name == "_type" and q.res_type is None:
            types = tuple(t.strip() for t in value.split(",") if t.strip())
            if not types or not all(is_type_name(t) for t in types):
                raise _Malformed("_type takes a comma-separated list of resource types")
            q.types = types
        elif name == "_elements":
            q.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name == "_sort":    # repeated, as if comma-joined
            q.sort += [self._sort_key(q.res_type, s.strip()) for s in value.split(",") if s.strip()]
        elif name.split(":")[0] in ("_include", "_revinclude"):
            q.includes.append(self._include(name, value))
        else:
            return False
        q.used.append((name, value))
        return True

    def _sort_key(self, res_type: str | None, spec: str) -> SortKey:
        desc = spec.startswith("-")
        name = spec[1:] if desc else spec
        if name in ("_lastUpdated", "_id"):
            return SortKey(name, "date" if name == "_lastUpdated" else "token", desc)
        param = self.registry.get(res_type, name) if res_type else None
        if param is None or param.type not in _SORTABLE_TYPES:
            raise _Unsupported(f"cannot sort by {name!r}")
        return SortKey(name, param.type, desc)

    def _include(self, name: str, value: str) -> Include:
        reverse = name.startswith("_revinclude")
        modifier = name.partition(":")[2]
        if modifier not in ("", "iterate", "recurse"):
            raise _Unsupported(f"unknown modifier {modifier!r}")
        bits = value.split(":")
        if len(bits) not in (2, 3) or not is_type_name(bits[0]):
            raise _Malformed("expected Type:parameter[:TargetType]")
        param = self.registry.get(bits[0], bits[1])
        if param is None or param.type != "reference":
            raise _Unsupported(f"{bits[0]} has no reference parameter {bits[1]!r}")
        target = bits[2] if len(bits) == 3 else None
        if target is not None and not is_type_name(target):
            raise _Malformed(f"bad target type {target!r}")
        return Include(bits[0], bits[1], target, reverse, bool(modifier))

    # --- criteria ----------------------------------------------------------------------------

    def criterion(self, res_type: str, name: str, value: str, depth: int = 0) -> Criterion:
        """One parameter occurrence on res_type; raises _Malformed."""
        if name.startswith("_has:"):
            return self._has(res_type, name, value, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        mod = modifier or None
        if code == "_id":
            return self._id(res_type, mod, value)
        if code == "_lastUpdated":
            if mod is not None:
                raise _Unsupported(f"unsupported modifier :{mod}")
            return Criterion(res_type, code, "date", values=self._values(value, self._date))
        param = self.registry.get(res_type, code)
        if param is None:
            raise _Unsupported(f"unknown search parameter for {res_type}")
        if dot:
            return self._chain(res_type, param, mod, rest, value, depth)
        if mod == "missing":
            if value not in ("true", "false"):
                raise _Malformed(":missing takes true or false")
            return Criterion(res_type, code, param.type, "missing", missing=value == "true",
                             targets=param.targets)
        if param.type == "reference":
            return self._reference(res_type, param, mod, value)
        if param.type == "composite":
            return self._composite(res_type, param, mod, value)
        allowed = _MODIFIERS.get(param.type)
        if allowed is None:
            raise _Unsupported(f"{param.type} parameters are not supported")
        if mod is not None and mod not in allowed:
            raise _Unsupported(f"unsupported modifier :{mod}")
        if param.type == "token" and mod in ("of-type", "in", "not-in", "above", "below"):
            return self._token_modifier(res_type, code, mod, value)
        parse_one = {
            "token": self._text if mod == "text" else self._token,
            "string": (lambda v: TextValue(_unescape(v))) if mod == "exact" else self._text,
            "date": self._date, "number": self._number, "quantity": self._quantity,
            "uri": self._uri,
        }[param.type]
        return Criterion(res_type, code, param.type, mod, self._values(value, parse_one))

    def _values(self, value: str, parse_one: Any) -> tuple[Value, ...]:
        parts = [p for p in split_escaped(value, ",", keep_escapes=True) if p != ""]
        if not parts:
            raise _Unsupported("empty value", "invalid")
        self._check_values(len(parts))
        try:
            return tuple(parse_one(p) for p in parts)
        except ValueError as exc:
            raise _Malformed(str(exc)) from None

    def _id(self, res_type: str, mod: str | None, value: str) -> Criterion:
        if mod not in (None, "not"):
            raise _Unsupported(f"unsupported modifier :{mod}")
        values = tuple(TokenValue(None, v, False) for v in split_escaped(value, ",") if v)
        self._check_values(len(values))
        if not values or not all(is_id(v.code or "") for v in values):
            raise _Malformed("not a valid id")
        return Criterion(res_type, "_id", "token", mod, values)

    def _check_values(self, n: int) -> None:
        if n > self.limits.max_values:
            raise BadRequest(f"A parameter has {n} values; at most {self.limits.max_values} are allowed "
                             "(TOH_SEARCH_MAX_VALUES)", code="too-costly")

    @staticmethod
    def _token(text: str) -> TokenValue:
        bits = split_escaped(text, "|")
        if len(bits) == 1:
            return TokenValue(None, bits[0], False)
        if len(bits) != 2:
            raise ValueError(f"bad token {text!r}")
        system, code = bits
        if not system and not code:
            raise ValueError("empty token")
        return TokenValue(system or None, code or None, True)

    @staticmethod
    def _text(text: str) -> TextValue:
        t = normalize(_unescape(text))
        if not t:
            raise ValueError("empty string")
        return TextValue(t)

    @staticmethod
    def _uri(text: str) -> UriValue:
        uri = _unescape(text)
        if not _URI.match(uri):
            raise ValueError(f"not a uri: {uri!r}")
        return UriValue(uri)

    @staticmethod
    def _date(text: str) -> DateValue:
        prefix, rest = split_prefix(text)
        low, high = date_range(rest.replace(" ", "+"))  # '+' arrives as ' ' in query strings
        return DateValue(prefix, low, high)

    @staticmethod
    def _number(text: str) -> NumberValue:
        prefix, rest = split_prefix(text)
        value, low, high = number_range(rest)
        return NumberValue(prefix, value, low, high)

    @staticmethod
    def _quantity(text: str) -> QuantityValue:
        prefix, rest = split_prefix(text)
        bits = split_escaped(rest, "|")
        if len(bits) not in (1, 3):
            raise ValueError(f"bad quantity {text!r}: expected number|system|code")
        value, low, high = number_range(bits[0])
        system = bits[1] or None if len(bits) == 3 else None
        code = bits[2] or None if len(bits) == 3 else None
        return QuantityValue(prefix, value, low, high, system, code)

    def _token_modifier(self, res_type: str, code: str, mod: str, value: str) -> Criterion:
        """:of-type (identifier type and value), :in / :not-in (a ValueSet's canonical URL),
        :above / :below (system|code in a CodeSystem's hierarchy); the engine resolves the last
        four against the terminology the server holds."""
        if mod == "of-type":
            return Criterion(res_type, f"{code}:of-type", "token", mod, self._values(value, self._of_type))
        if mod in ("in", "not-in"):
            return Criterion(res_type, code, "token", mod, self._values(value, self._uri))

        def coded(text: str) -> TokenValue:
            token = self._token(text)
            if token.system is None or token.code is None:
                raise ValueError(f":{mod} takes system|code, not {text!r}")
            return token
        return Criterion(res_type, code, "token", mod, self._values(value, coded))

    @staticmethod
    def _of_type(text: str) -> OfTypeValue:
        bits = split_escaped(text, "|")
        if len(bits) != 3 or not all(bits):
            raise ValueError(f":of-type takes [type system]|[type code]|[value], not {text!r}")
        return OfTypeValue(bits[0], bits[1], bits[2])

    def _composite(self, res_type: str, param: TypeParam, mod: str | None, value: str) -> Criterion:
        comps = components(self.registry, param)
        if comps is None:
            raise _Unsupported("composite parameters of this shape are not supported")
        if mod is not None:
            raise _Unsupported(f"unsupported modifier :{mod}")
        kind = comps[1][0]
        parsers: dict[str, Callable[[str], Simple]] = {
            "token": self._token, "quantity": self._quantity, "number": self._number,
            "date": self._date, "string": self._text,
            "reference": lambda text: self._ref_value(text, None)}
        second = parsers[kind]

        def one(text: str) -> CompositeValue:
            parts = split_escaped(text, "$", keep_escapes=True)
            if len(parts) != 2:
                raise ValueError(f"expected [token]$[{kind}], not {text!r}")
            return CompositeValue(self._token(parts[0]), second(parts[1]), kind)
        return Criterion(res_type, param.code, "composite", None, self._values(value, one))

    def _has(self, res_type: str, name: str, value: str, depth: int) -> Criterion:
        """_has:[type]:[reference parameter]:[parameter]=value (https://hl7.org/fhir/R4/search.html#has)."""
        bits = name.split(":", 3)
        if len(bits) != 4 or not bits[3]:
            raise _Malformed("expected _has:[type]:[reference parameter]:[parameter]")
        _, source, ref_code, rest = bits
        if depth >= MAX_CHAIN_DEPTH:
            raise _Malformed("chain too deep", "too-costly")
        if source not in R4_RESOURCE_TYPES:
            raise _Unsupported(f"{source!r} is not a resource type")
        ref = self.registry.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise _Unsupported(f"{source} has no reference parameter {ref_code!r}")
        if ref.targets and res_type not in ref.targets:
            raise _Malformed(f"{source}:{ref_code} does not refer to a {res_type}")
        inner = self.criterion(source, rest, value, depth + 1)
        return Criterion(res_type, name, "reference", has=Has(source, ref_code, inner))

    def _ref_value(self, text: str, type_mod: str | None) -> RefValue:
        """One reference search value: [type]/[id], an id, or an absolute URL; raises ValueError."""
        text = _unescape(text)
        ref = parse_reference(text, self.base_urls)
        if ref is None:
            raise ValueError(f"bad reference {text!r}")
        if ref.url is None:
            if type_mod and ref.target_type != type_mod:
                raise ValueError(f"{text!r} is not a {type_mod}")
            return RefValue(ref.target_type, ref.target_id)
        if is_id(text):          # a bare id, e.g. 'patient=123'
            return RefValue(type_mod, text)
        if not _ABSOLUTE.match(text):
            raise ValueError(f"{text!r} is neither [type]/[id], an id nor an absolute URL")
        return RefValue(None, None, ref.url)

    def _reference(self, res_type: str, param: TypeParam, mod: str | None, value: str) -> Criterion:
        if mod == "identifier":     # Reference.identifier (https://hl7.org/fhir/R4/search.html#reference)
            return Criterion(res_type, f"{param.code}:identifier", "token", None, self._values(value, self._token))
        type_mod = None
        if mod is not None:
            if not is_type_name(mod):
                raise _Unsupported(f"unsupported modifier :{mod}")
            if param.targets and mod not in param.targets:
                raise _Malformed(f"{mod} is not a target of {param.code}")
            type_mod = mod

        def one(text: str) -> RefValue:
            return self._ref_value(text, type_mod)

        return Criterion(res_type, param.code, "reference", type_mod,
                         self._values(value, one), targets=param.targets)

    def _chain(self, res_type: str, param: TypeParam, mod: str | None, rest: str, value: str,
               depth: int) -> Criterion:
        if param.type != "reference":
            raise _Malformed(f"{param.code} is not a reference; it cannot be chained")
        if depth >= self.limits.max_chain_depth:
            raise BadRequest(f"The chain is longer than {self.limits.max_chain_depth} links "
                             "(TOH_SEARCH_MAX_CHAIN_DEPTH)", code="too-costly")
        if mod is not None and not is_type_name(mod):
            raise _Unsupported(f"unsupported modifier :{mod} in a chain")
        candidates = (mod,) if mod else param.targets
        types, criteria = [], []
        for target in candidates:
            try:
                criteria.append(self.criterion(target, rest, value, depth + 1))
                types.append(target)
            except _Unsupported:
                if mod:
                    raise
        if not criteria:
            raise _Unsupported(f"no target of {param.code} has a parameter {rest.split(':')[0]!r}")
        return Criterion(res_type, param.code, "reference", mod,
                         chain=Chain(tuple(types), tuple(criteria)), targets=param.targets)
