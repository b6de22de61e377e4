"""The structured form of a search request (see query.py for how requests are parsed).

    SearchQuery      the whole request: criteria (AND), sort, count, total, summary,
                     elements, includes, compartment, paging cursor, issues
     +-- Criterion   one parameter occurrence; its values are ORed (comma-separated)
          +-- TokenValue, TextValue, RefValue, DateValue, NumberValue, QuantityValue, UriValue,
          |   OfTypeValue (identifier:of-type), CompositeValue (code$value)
          +-- Chain  a chained reference parameter: target types + the criteria on them
          +-- Has    _has: the resources of another type that refer to this one, and their criterion
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Union

from service.fhir.errors import BadRequest, Issue


@dataclass(frozen=True)
class TokenValue:
    """system|code, |code (system_given, system None), system| (code None) or code."""

    system: str | None
    code: str | None
    system_given: bool


@dataclass(frozen=True)
class TextValue:
    """A string to match (normalised unless :exact), or a token's :text."""

    text: str


@dataclass(frozen=True)
class RefValue:
    """A local target (type may be None: any of the parameter's targets) or an absolute URL."""

    target_type: str | None
    target_id: str | None
    url: str | None = None


@dataclass(frozen=True)
class DateValue:
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class NumberValue:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class QuantityValue:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None


@dataclass(frozen=True)
class UriValue:
    uri: str


@dataclass(frozen=True)
class OfTypeValue:
    """identifier:of-type=[type system]|[type code]|[value] (https://hl7.org/fhir/R4/search.html#token)."""

    system: str
    code: str
    value: str


Simple = Union[TokenValue, TextValue, RefValue, DateValue, NumberValue, QuantityValue, UriValue]


@dataclass(frozen=True)
class CompositeValue:
    """One value of a two-component composite parameter: the token, then the second component
    parsed as its own type (kind) (https://hl7.org/fhir/R4/search.html#composite)."""

    first: TokenValue
    second: Simple
    kind: str


Value = Union[Simple, OfTypeValue, CompositeValue]


@dataclass(frozen=True)
class Chain:
    """subject:Patient.identifier=x -> Chain(('Patient',), <identifier criterion on Patient>)."""

    target_types: tuple[str, ...]
    criteria: tuple[Criterion, ...]   # one per target type, ORed


@dataclass(frozen=True)
class Has:
    """_has:Flag:patient:code=x -> Has('Flag', 'patient', <code criterion on Flag>): the
    resources that a Flag matching the criterion refers to through its parameter 'patient'."""

    source_type: str
    param: str
    criterion: Criterion


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence. values are ORed; missing is set for :missing.

    modifier is None, 'not', 'exact', 'contains', 'text', 'below', 'above', 'in', 'not-in'
    (in/not-in/above/below on tokens are turned into plain token values, or 'not' ones, by the
    engine before SQL) or a reference type.
    """

    res_type: str
    name: str
    type: str
    modifier: str | None = None
    values: tuple[Value, ...] = ()
    missing: bool | None = None
    chain: Chain | None = None
    targets: tuple[str, ...] = ()     # for references: the parameter's target types
    has: Has | None = None


@dataclass(frozen=True)
class SortKey:
    name: str
    type: str
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """_include=Source:param[:Target] (reverse=False) or _revinclude (reverse=True)."""

    source_type: str
    param: str
    target_type: str | None
    reverse: bool
    iterate: bool = False


@dataclass
class SearchQuery:
    res_type: str | None                  # None: every type ($everything)
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 50
    total: str = "none"                   # none | estimate | accurate
    summary: str | None = None            # None | count | true | text | data (R4 _summary)
    elements: tuple[str, ...] | None = None
    includes: list[Include] = field(default_factory=list)
    compartment: tuple[str, str] | None = None   # ('Patient', id)
    types: tuple[str, ...] | None = None          # _type, when res_type is None
    cursor: str | None = None
    used: list[tuple[str, str]] = field(default_factory=list)   # applied params, for links
    issues: list[Issue] = field(default_factory=list)

    def raise_if_strict(self, strict: bool) -> None:
        """Under Prefer: handling=strict, any issue (an unknown or unsupported parameter) is an
        error: raises BadRequest with the issues as errors."""
        if strict and self.issues:
            raise BadRequest(issues=[Issue("error", i.code, i.diagnostics, i.expression)
                                     for i in self.issues])
