"""One search, parsed, run and rendered as a searchset Bundle (https://hl7.org/fhir/R4/bundle.html#searchset).

    searchset_json(engine, conn, res_type, params, base_url=..., now=..., strict=...) -> JSON text
    searchset(...)                                                                 -> the same, a dict

The Bundle holds the matches (search.mode=match), the _include/_revinclude results (include),
an OperationOutcome entry (outcome) listing ignored parameters, ``total`` when known, and
self/next/previous links whose opaque _cursor gives stable keyset paging. Resources are
spliced in as stored, not re-serialised. No web framework here: the search routes
(service.api.search) serve the text; batch and transaction bundles (service.store.bundles)
embed the dict as a GET entry's resource.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection

from service.fhir.errors import Issue, operation_outcome
from service.fhir.search.query import CURSOR, SearchQuery
from service.store.repository import format_instant
from service.store.search.engine import Found, SearchEngine, SearchResult

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS_KEPT = ("resourceType", "id", "meta")


def searchset_json(engine: SearchEngine, conn: Connection, res_type: str | None, params: list[tuple[str, str]], *,
                   base_url: str, now: datetime, strict: bool, path: str | None = None,
                   compartment: tuple[str, str] | None = None) -> str:
    """Search res_type (None: every type of the compartment) and render the searchset Bundle.

    path is what the links point at below base_url (default: res_type). Raises BadRequest
    when strict and a parameter is unknown or malformed, or when the _cursor does not fit.
    """
    base = base_url.rstrip("/")
    query = engine.parse(res_type, params, compartment=compartment, base_urls=(base,))
    query.raise_if_strict(strict)
    result = engine.search(conn, query, now=now)
    return render(query, result, base, path if path is not None else str(res_type), now)


def searchset(engine: SearchEngine, conn: Connection, res_type: str | None, params: list[tuple[str, str]], *,
              base_url: str, now: datetime, strict: bool, path: str | None = None,
              compartment: tuple[str, str] | None = None) -> dict[str, Any]:
    """searchset_json() as a dict; raises what it raises."""
    bundle: dict[str, Any] = json.loads(searchset_json(engine, conn, res_type, params, base_url=base_url, now=now,
                                                       strict=strict, path=path, compartment=compartment))
    return bundle


def render(query: SearchQuery, result: SearchResult, base: str, path: str, now: datetime) -> str:
    """The searchset Bundle of a query's result as JSON text, stored resources spliced in unchanged."""
    def link(cursor: str | None) -> str:
        pairs = list(query.used) + ([(CURSOR, cursor)] if cursor else [])
        return f"{base}/{path}" + (f"?{urlencode(pairs)}" if pairs else "")

    links = [{"relation": "self", "url": link(query.cursor)}]
    if result.next_cursor:
        links.append({"relation": "next", "url": link(result.next_cursor)})
    if result.previous_cursor:
        links.append({"relation": "previous", "url": link(result.previous_cursor)})
    head: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                            "meta": {"lastUpdated": format_instant(now)}, "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head["link"] = links
    entries = [_entry(base, f, "match", query.elements) for f in result.matches]
    entries += [_entry(base, f, "include", query.elements) for f in result.includes]
    if result.issues:
        outcome = operation_outcome([Issue(i.severity, i.code, i.diagnostics, i.expression)
                                     for i in result.issues])
        entries.append(json.dumps({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": outcome,
                                   "search": {"mode": "outcome"}}))
    text = json.dumps(head, separators=(",", ":"))
    if not entries:
        return text
    return text[:-1] + ',"entry":[' + ",".join(entries) + "]}"


def _entry(base: str, found: Found, mode: str, elements: tuple[str, ...] | None) -> str:
    content = found.content if elements is None else _subset(found.content, elements)
    full_url = json.dumps(f"{base}/{found.res_type}/{found.res_id}")
    return f'{{"fullUrl":{full_url},"resource":{content},"search":{{"mode":"{mode}"}}}}'


def _subset(content: str, elements: tuple[str, ...]) -> str:
    """The resource with only the _elements asked for (plus id/meta), tagged SUBSETTED."""
    resource = json.loads(content)
    kept = {k: v for k, v in resource.items() if k in _ALWAYS_KEPT or k in elements}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = list(meta.get("tag") or []) + [SUBSETTED]
    kept["meta"] = meta
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)
