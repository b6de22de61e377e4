"""Token modifiers that need terminology, resolved against what this server holds: :in and
:not-in name a ValueSet, :below and :above a code in a CodeSystem's hierarchy
(https://hl7.org/fhir/R4/search.html#token). The ValueSets and CodeSystems are the stored
ones (the guide's, installed at start-up, and any a client wrote), found by canonical URL
through the search index; service.fhir.terminology.ValueSets answers for them.

``resolve(conn, criteria)`` turns each such criterion into plain token values (:not-in into a
:not criterion), so the SQL compiler never sees these modifiers. A ValueSet or CodeSystem that
is not held makes the search fail with 400: ignoring the filter would widen the search.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, select

from service.fhir.errors import BadRequest
from service.fhir.search.model import Chain, Criterion, TokenValue, UriValue
from service.fhir.terminology import ValueSets, strip_version
from service.store.schema import resources
from service.store.search.tables import search_uri

MODIFIERS = frozenset({"in", "not-in", "above", "below"})
MAX_IMPORTS = 50   # ValueSets and CodeSystems read for one search


def resolve(conn: Connection, criteria: list[Criterion]) -> list[Criterion]:
    """criteria with every :in/:not-in/:above/:below token criterion (in chains and _has too)
    replaced by plain token values; raises BadRequest when the terminology is not held."""
    if not any(_needs(c) for c in criteria):
        return criteria
    held = _Held(conn)
    return [held.criterion(c) for c in criteria]


def _needs(c: Criterion) -> bool:
    if c.chain is not None:
        return any(_needs(i) for i in c.chain.criteria)
    if c.has is not None:
        return _needs(c.has.criterion)
    return c.type == "token" and c.modifier in MODIFIERS


class _Held:
    """The stored terminology one search reads (each canonical read once)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.read: dict[tuple[str, str], dict[str, Any] | None] = {}

    def canonical(self, res_type: str, url: str) -> dict[str, Any] | None:
        """The current stored resource of res_type with this canonical URL (None if none)."""
        key = (res_type, strip_version(url))
        if key not in self.read:
            if len(self.read) >= MAX_IMPORTS:
                raise BadRequest(f"{url}: more than {MAX_IMPORTS} ValueSets and CodeSystems to read",
                                 code="too-costly")
            rids = select(search_uri.c.rid).where(search_uri.c.res_type == res_type, search_uri.c.param == "url",
                                                  search_uri.c.uri == key[1])
            row = self.conn.execute(select(resources.c.content).where(
                resources.c.rid.in_(rids), resources.c.deleted.is_(False)).limit(1)).first()
            self.read[key] = json.loads(row.content) if row else None
        return self.read[key]

    def value_sets(self, url: str) -> ValueSets:
        """The ValueSet (and those it imports, and their CodeSystems) as ValueSets."""
        sets, systems, stack = [], [], [url]
        seen: set[str] = set()
        while stack:
            current = strip_version(stack.pop())
            if current in seen:
                continue
            seen.add(current)
            vs = self.canonical("ValueSet", current)
            if vs is None:
                continue
            sets.append(vs)
            for inc in [*(vs.get("compose") or {}).get("include", ()), *(vs.get("compose") or {}).get("exclude", ())]:
                stack.extend(inc.get("valueSet") or ())
                cs = self.canonical("CodeSystem", inc["system"]) if inc.get("system") else None
                if cs is not None and cs not in systems:
                    systems.append(cs)
        return ValueSets(sets, systems)

    def criterion(self, c: Criterion) -> Criterion:
        if c.chain is not None:
            return replace(c, chain=Chain(c.chain.target_types, tuple(self.criterion(i) for i in c.chain.criteria)))
        if c.has is not None:
            return replace(c, has=replace(c.has, criterion=self.criterion(c.has.criterion)))
        if c.type != "token" or c.modifier not in MODIFIERS:
            return c
        where = f"{c.name}:{c.modifier}"
        codes: set[tuple[str, str]] = set()
        for v in c.values:
            if isinstance(v, UriValue):             # :in / :not-in
                terminology = self.value_sets(v.uri)
                if not terminology.knows(v.uri):
                    raise BadRequest(f"{where}: the ValueSet {v.uri} is not held by this server",
                                     code="not-found", expression=[where])
                codes |= terminology.expand(v.uri)
            elif isinstance(v, TokenValue) and v.system and v.code:    # :above / :below
                cs = self.canonical("CodeSystem", v.system)
                found = ValueSets([], [cs] if cs else []).subsumed(v.system, v.code, c.modifier or "")
                if found is None:
                    raise BadRequest(f"{where}: the CodeSystem {v.system} is not held by this server",
                                     code="not-found", expression=[where])
                codes |= {(v.system, code) for code in found}
        values = tuple(TokenValue(system, code, True) for system, code in sorted(codes))
        return replace(c, modifier="not" if c.modifier == "not-in" else None, values=values)
