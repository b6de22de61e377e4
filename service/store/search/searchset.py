"""One search, parsed, run and rendered as a searchset Bundle (https://hl7.org/fhir/R4/bundle.html#searchset).

    searchset_json(engine, conn, res_type, params, base_url=..., now=..., strict=...) -> JSON text
    searchset(...)                                                                 -> the same, a dict

The Bundle holds the matches (search.mode=match), the _include/_revinclude results (include),
an OperationOutcome entry (outcome) listing ignored parameters, each resource subsetted
for _summary=true|text|data or _elements (service.fhir.subsetting), ``total`` when known, and
self/next/previous links whose opaque _cursor gives stable keyset paging. ``layout`` decides
all of that once; ``render_text`` splices the stored resources in as they are (not
re-serialised) and ``render_dict`` builds the dict directly. No web framework here: the
search routes (service.api.search) serve the text; batch and transaction bundles
(service.store.bundles) embed the dict as a GET entry's resource.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection

from service.fhir.errors import Issue, operation_outcome
from service.fhir.search.query import CURSOR, SearchQuery
from service.fhir.subsetting import SUMMARY_MODES, select_elements, summarize
from service.store.repository import format_instant
from service.store.search.engine import Found, SearchEngine, SearchResult

Visible = Callable[[str, dict[str, Any]], bool]   # (type, resource) -> may the asker see it?


def searchset_json(engine: SearchEngine, conn: Connection, res_type: str | None, params: list[tuple[str, str]], *,
                   base_url: str, now: datetime, strict: bool, path: str | None = None,
                   compartment: tuple[str, str] | None = None, types: Collection[str] | None = None,
                   visible: Visible | None = None) -> str:
    """Search res_type (None: every type of the compartment) and render the searchset Bundle.

    path is what the links point at below base_url (default: res_type). types (if given)
    bounds the types a compartment-wide search may return, and _include/_revinclude results
    that visible refuses are left out (the asker's access). Raises BadRequest when strict and
    a parameter is unknown or malformed, or when the _cursor does not fit.
    """
    return render_text(_bundle(engine, conn, res_type, params, base_url, now, strict, path, compartment,
                               types, visible))


def searchset(engine: SearchEngine, conn: Connection, res_type: str | None, params: list[tuple[str, str]], *,
              base_url: str, now: datetime, strict: bool, path: str | None = None,
              compartment: tuple[str, str] | None = None, types: Collection[str] | None = None,
              visible: Visible | None = None) -> dict[str, Any]:
    """searchset_json() as a dict, built directly (no text round trip); raises what it raises."""
    return render_dict(_bundle(engine, conn, res_type, params, base_url, now, strict, path, compartment,
                               types, visible))


@dataclass(frozen=True)
class Searchset:
    """A searchset Bundle before rendering: everything but the stored resources' content."""

    head: dict[str, Any]                     # resourceType .. link
    entries: list[tuple[str, Found, str]]    # (fullUrl, stored row, search mode)
    outcome: dict[str, Any] | None           # the OperationOutcome entry, if any issues
    elements: tuple[str, ...] | None         # _elements: the subset of each resource to show
    summary: str | None = None               # _summary=true|text|data: the summary view to show

    @property
    def subsetted(self) -> bool:
        return self.elements is not None or self.summary in SUMMARY_MODES

    def subset(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The view of a stored resource this Bundle shows (_summary, else _elements)."""
        if self.summary in SUMMARY_MODES:
            return summarize(resource, self.summary)
        if self.elements is not None:
            return select_elements(resource, self.elements)
        return resource


def _bundle(engine: SearchEngine, conn: Connection, res_type: str | None, params: list[tuple[str, str]],
            base_url: str, now: datetime, strict: bool, path: str | None,
            compartment: tuple[str, str] | None, types: Collection[str] | None = None,
            visible: Visible | None = None) -> Searchset:
    """Parse and run one search; raises BadRequest (strict, or a cursor that does not fit)."""
    base = base_url.rstrip("/")
    query = engine.parse(res_type, params, compartment=compartment, base_urls=(base,))
    query.raise_if_strict(strict)
    if types is not None and res_type is None:
        query.types = tuple(t for t in (query.types or types) if t in types)
    result = engine.search(conn, query, now=now)
    if visible is not None:
        result.includes = [f for f in result.includes if visible(f.res_type, json.loads(f.content))]
    return layout(query, result, base, path if path is not None else str(res_type), now)


def layout(query: SearchQuery, result: SearchResult, base: str, path: str, now: datetime) -> Searchset:
    """The Bundle's head, links and entries for a query's result (the one place that decides them)."""
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
    entries = [(f"{base}/{f.res_type}/{f.res_id}", f, "match") for f in result.matches]
    entries += [(f"{base}/{f.res_type}/{f.res_id}", f, "include") for f in result.includes]
    outcome = None
    if result.issues:   # lenient handling: unknown/unsupported parameters were left out
        resource = operation_outcome([Issue(i.severity, i.code, f"{i.diagnostics} (ignored)", i.expression)
                                      for i in result.issues])
        outcome = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "search": {"mode": "outcome"}}
    return Searchset(head, entries, outcome, query.elements, query.summary)


def render_text(bundle: Searchset) -> str:
    """The Bundle as JSON text, stored resources spliced in unchanged (not re-serialised)."""
    entries = [_entry_text(url, found, mode, bundle) for url, found, mode in bundle.entries]
    if bundle.outcome is not None:
        entries.append(json.dumps(bundle.outcome))
    text = json.dumps(bundle.head, separators=(",", ":"))
    if not entries:
        return text
    return text[:-1] + ',"entry":[' + ",".join(entries) + "]}"


def render_dict(bundle: Searchset) -> dict[str, Any]:
    """The Bundle as a dict (for embedding in a batch/transaction response)."""
    out = dict(bundle.head)
    entries: list[dict[str, Any]] = []
    for url, found, mode in bundle.entries:
        resource = bundle.subset(json.loads(found.content))
        entries.append({"fullUrl": url, "resource": resource, "search": {"mode": mode}})
    if bundle.outcome is not None:
        entries.append(bundle.outcome)
    if entries:
        out["entry"] = entries
    return out


def _entry_text(full_url: str, found: Found, mode: str, bundle: Searchset) -> str:
    content = found.content if not bundle.subsetted else json.dumps(
        bundle.subset(json.loads(found.content)), separators=(",", ":"), ensure_ascii=False)
    return f'{{"fullUrl":{json.dumps(full_url)},"resource":{content},"search":{{"mode":"{mode}"}}}}'
