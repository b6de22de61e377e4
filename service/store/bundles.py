"""Batch and transaction Bundles over a Repository (https://hl7.org/fhir/R4/http.html#transaction).

    process_bundle(repo, bundle, base_url=..., max_entries=..., search=...) -> the response Bundle

A transaction is one unit of work. Every entry is parsed first; then identities are fixed
before anything is written: a POST gets its id up front (so entries can refer to entries
processed later), a conditional create (ifNoneExist) or update (PUT Type?search) is
matched through the repository's finder, and each urn:uuid:/urn:oid: fullUrl is mapped to
the id it will have. Every ``reference`` in the bundle, at any depth, is rewritten to those
ids, as are conditional references (``Organization?identifier=s|v``, matched against the
bundle's own conditional entries first, then the store). The entries then run in the R4
order DELETE, POST, PUT, GET/HEAD on the caller's transaction, so a search entry
(GET [type]?params, answered with its searchset Bundle) sees the bundle's own writes. The
first failing entry raises EntryFailed (its own status, saying which entry failed and why)
and the caller rolls everything back.

A batch runs its entries in their own order, each inside a savepoint: a failing entry rolls
back only itself and is reported in its response.outcome. A batch entry may refer to the
fullUrl of an earlier entry that succeeded.

No web framework here: the caller passes the base URL, the client's Prefer choice and the
search to run for search entries (a Search: (type, parameters) -> searchset Bundle, raising
BadRequest for what it refuses, e.g. unknown parameters under Prefer: handling=strict).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from service.fhir.errors import (BadRequest, Conflict, FhirError, Issue, MethodNotAllowed, PayloadTooLarge,
                                 PreconditionFailed, operation_outcome)
from service.fhir.http import bounded_int, Criteria, conditional_criteria, etag_version
from service.fhir.resources import check_id, check_type, new_id
from service.security import AccessGuard, Reach
from service.security.guard import OWNED_TYPES
from service.store.repository import DeferredWriteFailed, Prepared, Repository, StoredResource, format_instant

log = logging.getLogger(__name__)

_T = TypeVar("_T")

KINDS = ("batch", "transaction")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
_PROCESSING_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3, "HEAD": 3}  # http.html#trules
_LOCAL_PREFIXES = ("urn:uuid:", "urn:oid:")
_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")

Search = Callable[[str, Criteria], dict[str, Any]]


class EntryFailed(FhirError):
    """A transaction entry failed: the entry's own status, and issues that name the entry."""

    def __init__(self, index: int, full_url: str | None, cause: FhirError) -> None:
        where = f"Bundle.entry[{index}]"
        label = f"{where}" + (f" ({full_url})" if full_url else "")
        first, *others = cause.issues or [Issue("error", cause.default_code, str(cause))]
        lead = Issue(first.severity, first.code, f"{label} failed: {first.diagnostics or cause.diagnostics}",
                     (where, *(_within(where, e) for e in first.expression)))
        issues = [lead] + [Issue(i.severity, i.code, i.diagnostics, tuple(_within(where, e) for e in i.expression))
                           for i in others]
        super().__init__(lead.diagnostics, issues=issues)
        self.status = cause.status
        self.index, self.full_url, self.cause = index, full_url, cause


def _within(where: str, expression: str) -> str:
    """An issue's FHIRPath, moved inside the entry ('Patient.birthDate' -> '...resource.birthDate')."""
    head, dot, rest = expression.partition(".")
    if head[:1].isupper() and "[" not in head:
        return f"{where}.resource{dot}{rest}"
    return f"{where}.{expression}"


@dataclass
class Entry:
    """One request of the bundle, parsed; res_id is fixed before any write runs."""

    index: int
    full_url: str | None
    method: str
    res_type: str
    res_id: str | None = None
    version: int | None = None
    criteria: Criteria | None = None        # PUT Type?search: a conditional update
    if_none_exist: Criteria | None = None   # POST with ifNoneExist: a conditional create
    search: Criteria | None = None          # GET/HEAD [type]?params: a search (maybe no params)
    if_match: int | None = None
    resource: dict[str, Any] | None = None
    matched: bool = False                   # a conditional create found its resource: no write

    @property
    def writes(self) -> bool:
        return self.method in ("PUT", "DELETE") or (self.method == "POST" and not self.matched)


@dataclass(frozen=True)
class Result:
    """What one entry did: its HTTP status and the version it stored or read, or the
    searchset Bundle of a search."""

    status: int
    stored: StoredResource | None = None
    with_resource: bool = True
    searchset: dict[str, Any] | None = None


class Prechecked(frozenset[int]):
    """The indexes of the create entries that passed prechecked_creates (a frozenset); for
    those that passes gave a Prepared, that Prepared (by index); and for each, the objects of
    its resource that hold a Reference.reference string (reference_holders), so that under the
    write lock the transaction rewrites those strings in place rather than copying the resource."""

    prepared: Mapping[int, Prepared]
    holders: Mapping[int, list[dict[str, Any]]]

    def __new__(cls, passed: Mapping[int, object],
                holders: Mapping[int, list[dict[str, Any]]] | None = None) -> Prechecked:
        made = super().__new__(cls, passed)
        made.prepared = {i: p for i, p in passed.items() if isinstance(p, Prepared)}
        made.holders = holders or {}
        return made


def reference_holders(value: Any, found: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every object within value (at any depth, contained resources and extensions included)
    with a 'reference' string: those _Processor._localised rewrites."""
    found = [] if found is None else found
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            found.append(value)
        for item in value.values():
            if isinstance(item, (dict, list)):
                reference_holders(item, found)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                reference_holders(item, found)
    return found


def prechecked_creates(bundle: Any, passes: Callable[[dict[str, Any]], object], max_entries: int) -> frozenset[int]:
    """The indexes of a batch or transaction Bundle's create entries (POST) whose resource, as
    sent, passes the checks that depend on nothing but the resource (passes: e.g.
    Database.passes_prechecks, true if it passes; or Database.prepare_create, a Prepared or
    None, kept for the entry in the Prechecked returned). Run before the unit of work takes
    its write lock, so that on SQLite two workers check their bundles, and do what the write
    hooks prepare (the search index's unbound rows), side by side rather than in turn.

    process_bundle then skips those checks for these entries (Repository.validate(checked=
    True)). What it writes differs from what was checked only in reference strings rewritten
    to 'Type/id' of this server (a Type and an id, no whitespace): every R4 element named
    'reference' that holds a string is a string or uri (tests/integration/
    test_bundle_prechecks.py checks the models), which such a value always satisfies, and
    neither the index-size estimate nor the required codes read it. So an entry passes here
    only if it would pass there; one that fails here is checked again there, where its error
    is reported as before. Never raises: a malformed bundle is left for process_bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") not in KINDS:
        return frozenset()
    entries = bundle.get("entry")
    if not isinstance(entries, list) or len(entries) > max_entries:
        return frozenset()
    passed: dict[int, object] = {}
    holders: dict[int, list[dict[str, Any]]] = {}
    for index, raw in enumerate(entries):
        request = raw.get("request") if isinstance(raw, dict) else None
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if isinstance(request, dict) and str(request.get("method")).upper() == "POST" and isinstance(resource, dict):
            result = passes(resource)
            if result:
                passed[index] = result
                holders[index] = reference_holders(resource)
    return Prechecked(passed, holders)


def process_bundle(repo: Repository, bundle: Any, *, base_url: str, max_entries: int,
                   minimal: bool = False, search: Search | None = None,
                   guard: AccessGuard | None = None, checked: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Process a batch or transaction Bundle; returns the batch-response/transaction-response.

    minimal (Prefer: return=minimal) leaves stored resources out of the response entries;
    a search entry always carries its searchset Bundle. checked: the indexes of the create
    entries whose resource passed prechecked_creates (their context-free checks are not run again). Without search, search entries are
    refused (400 not-supported). With a guard, every entry is checked as its own request
    would be (scopes, and in a patient context the patient's compartment): a refused entry
    is a 403 (in a transaction, the whole bundle's); the search gets the same guard's limits
    from the caller.

    Raises BadRequest if bundle is not a batch or transaction Bundle, PayloadTooLarge if it
    has more than max_entries entries, and for a transaction EntryFailed when any entry fails.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST [base] takes a Bundle of type batch or transaction", code="structure")
    kind = bundle.get("type")
    if kind not in KINDS:
        raise BadRequest(f"Bundle.type must be batch or transaction, not {kind!r}", expression=["Bundle.type"])
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be a list", code="structure", expression=["Bundle.entry"])
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(f"The Bundle has {len(raw_entries)} entries; this server takes at most {max_entries}",
                              expression=["Bundle.entry"])
    processor = _Processor(repo, base_url.rstrip("/"), minimal, search, guard, checked)
    responses = processor.transaction(raw_entries) if kind == "transaction" else processor.batch(raw_entries)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses}


class _Processor:
    def __init__(self, repo: Repository, base: str, minimal: bool, search: Search | None,
                 guard: AccessGuard | None = None, checked: frozenset[int] = frozenset()) -> None:
        self.repo = repo
        self.checked = checked
        self.prepared = checked.prepared if isinstance(checked, Prechecked) else {}
        self.holders = checked.holders if isinstance(checked, Prechecked) else {}
        self.guard = guard
        self.base = base
        self.minimal = minimal
        self.search = search
        self.local: dict[str, str] = {}                           # fullUrl -> Type/id
        self.conditional: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}  # entry criteria -> Type/id
        self.found: dict[str, str] = {}                           # conditional reference -> Type/id
        self.in_batch = False

    # -- the two kinds ----------------------------------------------------------------
    def transaction(self, raw_entries: list[Any]) -> list[dict[str, Any]]:
        """Resolve every identity, then run the entries in R4 order; raises EntryFailed."""
        entries = [self._guarded(i, raw, partial(self._parse, i, raw)) for i, raw in enumerate(raw_entries)]
        seen: dict[str, int] = {}
        for entry in entries:
            if entry.full_url is not None:
                if entry.full_url in seen:
                    self._fail(entry, BadRequest(f"fullUrl {entry.full_url} is also the fullUrl of entry "
                                                 f"{seen[entry.full_url]}", code="duplicate"))
                seen[entry.full_url] = entry.index
        for entry in entries:
            self._guarded(entry.index, entry, partial(self._resolve, entry))
        written: dict[tuple[str, str | None], int] = {}
        for entry in entries:
            if entry.writes:
                key = (entry.res_type, entry.res_id)
                if key in written:
                    self._fail(entry, BadRequest(f"{entry.res_type}/{entry.res_id} is also written by entry "
                                                 f"{written[key]}; a transaction writes a resource once",
                                                 code="duplicate"))
                written[key] = entry.index
            self._claim(entry)
        results: dict[int, Result] = {}
        try:
            with self.repo.deferred():   # the creates are written together, the first failure named
                for entry in sorted(entries, key=lambda e: _PROCESSING_ORDER[e.method]):
                    results[entry.index] = self._guarded(entry.index, entry, partial(self._run, entry))
        except DeferredWriteFailed as exc:
            failed = next(e for e in entries if e.method == "POST" and (e.res_type, e.res_id) == (exc.res_type, exc.res_id))
            raise EntryFailed(failed.index, failed.full_url, exc.cause) from exc.cause
        return [self._response(entry, results[entry.index]) for entry in entries]

    def batch(self, raw_entries: list[Any]) -> list[dict[str, Any]]:
        """Run each entry in order in its own savepoint; a failure is that entry's outcome only."""
        self.in_batch = True
        seen: set[str] = set()
        responses = []
        for index, raw in enumerate(raw_entries):
            mark = len(self.repo.journal)
            try:
                with self.repo.conn.begin_nested():
                    entry = self._parse(index, raw)
                    if entry.full_url is not None and entry.full_url in seen:
                        raise BadRequest(f"fullUrl {entry.full_url} was used by an earlier entry", code="duplicate")
                    self._resolve(entry)
                    result = self._run(entry)
                if entry.full_url is not None:
                    seen.add(entry.full_url)
                self._claim(entry)
                responses.append(self._response(entry, result))
            except FhirError as exc:
                del self.repo.journal[mark:]   # rolled back: the later steps must not see it
                responses.append(_failure(exc.status, exc.outcome()))
            except Exception:  # one broken entry must not take the others down
                del self.repo.journal[mark:]
                log.exception("batch entry %d failed", index)
                issue = Issue("fatal", "exception", "Internal error while processing this entry")
                responses.append(_failure(500, operation_outcome([issue])))
        return responses

    # -- steps ------------------------------------------------------------------------
    def _parse(self, index: int, raw: Any) -> Entry:
        """One entry's request; raises BadRequest, NotFound (type), MethodNotAllowed (PATCH)."""
        here = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict):
            raise BadRequest("The entry is not a JSON object", code="structure", expression=[here])
        request = raw.get("request")
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            raise BadRequest("The entry needs request.method and request.url", code="required",
                             expression=[f"{here}.request"])
        method = str(request["method"]).upper()
        if method == "PATCH":
            raise MethodNotAllowed("PATCH is not supported; send a PUT with the whole resource",
                                   expression=[f"{here}.request.method"])
        if method not in METHODS:
            raise BadRequest(f"request.method {method!r} is not one of {', '.join(METHODS)}",
                             expression=[f"{here}.request.method"])
        url = str(request["url"])
        path, _, query = self._relative(url).partition("?")
        parts = path.strip("/").split("/")
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        entry = Entry(index, full_url, method, check_type(parts[0]), if_match=etag_version(request.get("ifMatch"), "ifMatch"))
        if method == "POST" and len(parts) == 1 and not query:
            condition = request.get("ifNoneExist")
            if condition is not None:
                entry.if_none_exist = conditional_criteria(str(condition), "ifNoneExist")
        elif method == "PUT" and len(parts) == 1 and query:
            entry.criteria = conditional_criteria(query, "The conditional update")
        elif method in ("GET", "HEAD") and len(parts) == 1 and self.search is not None:
            entry.search = parse_qsl(query, keep_blank_values=True)
        elif method in ("PUT", "DELETE", "GET", "HEAD") and len(parts) == 2 and not query:
            entry.res_id = check_id(parts[1])
        elif method in ("GET", "HEAD") and len(parts) == 4 and parts[2] == "_history" and not query:
            entry.res_id = check_id(parts[1])
            entry.version = bounded_int(parts[3], f"{here}.request.url's version", low=1)
        else:
            raise BadRequest(f"{method} {url} is not supported in a bundle (read, vread, search, create, update, "
                             "conditional create/update and delete are)", code="not-supported",
                             expression=[f"{here}.request.url"])
        if method in ("POST", "PUT"):
            resource = raw.get("resource")
            if not isinstance(resource, dict):
                raise BadRequest(f"A {method} entry needs a resource", code="required", expression=[f"{here}.resource"])
            if resource.get("resourceType") != entry.res_type:
                raise BadRequest(f"resourceType '{resource.get('resourceType')}' does not match the request's "
                                 f"type '{entry.res_type}'", expression=[f"{here}.resource.resourceType"])
            entry.resource = resource
        return entry

    def _relative(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            if not url.startswith(self.base + "/"):
                raise BadRequest(f"request.url {url} is not on this server ({self.base})")
            return url[len(self.base) + 1:]
        return url

    def _resolve(self, entry: Entry) -> None:
        """Fix the id the entry will write: a new one, the matched one, or the URL's."""
        if entry.method == "POST":
            found = None if entry.if_none_exist is None else self.repo.match_one(entry.res_type, entry.if_none_exist,
                                                                        "ifNoneExist")
            entry.res_id, entry.matched = (found, True) if found else (new_id(), False)
        elif entry.method == "PUT" and entry.criteria is not None:
            assert entry.resource is not None
            entry.res_id = self.repo.conditional_target(entry.res_type, entry.criteria, entry.resource.get("id"))

    def _claim(self, entry: Entry) -> None:
        """Record where the entry's fullUrl and conditional criteria point, for references."""
        if entry.method not in ("POST", "PUT") or entry.res_id is None:
            return
        reference = f"{entry.res_type}/{entry.res_id}"
        if entry.full_url is not None:
            self.local[entry.full_url] = reference
        for criteria in (entry.if_none_exist, entry.criteria):
            if criteria is not None:
                self.conditional[(entry.res_type, _key(criteria))] = reference

    def _run(self, entry: Entry) -> Result:
        """Perform the entry on the repository; raises what the repository raises."""
        repo = self.repo
        if entry.search is not None:
            assert self.search is not None
            repo.flush()   # the search reads the connection: it must see the creates queued so far
            return Result(200, searchset=self.search(entry.res_type, entry.search),
                          with_resource=entry.method == "GET")
        assert entry.res_id is not None
        if entry.method == "DELETE":
            self._check_existing("d", entry)
            return Result(204, repo.delete(entry.res_type, entry.res_id, if_match=entry.if_match), False)
        if entry.method in ("GET", "HEAD"):
            if self.guard is not None:
                self.guard.require("r", entry.res_type)
            stored = (repo.read(entry.res_type, entry.res_id) if entry.version is None
                      else repo.vread(entry.res_type, entry.res_id, entry.version))
            if self.guard is not None:
                self.guard.check("r", entry.res_type, stored.resource)
            return Result(200, stored, entry.method == "GET")
        assert entry.resource is not None
        holders = self.holders.get(entry.index)
        if holders is None:
            resource = self._localised(entry.resource)
        else:   # the bundle as sent is this request's own: its references are rewritten where they are
            for holder in holders:
                holder["reference"] = self._reference(holder["reference"])
            resource = entry.resource
        if self.guard is not None:
            action = "c" if entry.method == "POST" else "u"
            self.guard.claim(entry.res_type, resource)
            self.guard.check(action, entry.res_type, resource)
            if action == "u":
                self._check_existing("u", entry)
        if entry.method == "POST":
            # what was prepared from the resource as sent holds unless the guard's claim changed it
            prepared = self.prepared.get(entry.index) if entry.res_type not in OWNED_TYPES else None
            stored, created = repo.create(resource, if_none_exist=entry.if_none_exist, res_id=entry.res_id,
                                          checked=entry.index in self.checked, prepared=prepared)
            if created == entry.matched or stored.res_id != entry.res_id:
                raise Conflict(f"ifNoneExist matched {stored.reference} only after the bundle's ids were "
                               "assigned (another entry of the bundle changed what it matches)")
            return Result(201 if created else 200, stored)
        if entry.criteria is not None:
            resource["id"] = entry.res_id
        stored, created = repo.update(entry.res_type, entry.res_id, resource, if_match=entry.if_match)
        return Result(201 if created else 200, stored)

    def _check_existing(self, action: str, entry: Entry) -> None:
        """Raise Forbidden unless the guard allows action on the entry's current version."""
        if self.guard is None or entry.res_id is None:
            return
        if self.guard.checks_existing(action, entry.res_type):
            found = self.repo.current(entry.res_type, entry.res_id)
            if found is not None and not found[1].deleted:
                self.guard.check(action, entry.res_type, found[1].resource)

    # -- references -------------------------------------------------------------------
    def _localised(self, value: Any) -> Any:
        """A copy of value with every 'reference' pointing at the ids this bundle assigned
        (primitives are shared, not visited: they are most of a resource's values)."""
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "reference" and isinstance(item, str):
                    out[key] = self._reference(item)
                elif isinstance(item, (dict, list)):
                    out[key] = self._localised(item)
                else:
                    out[key] = item
            return out
        if isinstance(value, list):
            return [self._localised(item) if isinstance(item, (dict, list)) else item for item in value]
        return value

    def _reference(self, reference: str) -> str:
        """Raises BadRequest for a urn: that no entry has, PreconditionFailed for a conditional
        reference that does not match exactly one resource."""
        if reference in self.local:
            return self.local[reference]
        if reference.startswith(_LOCAL_PREFIXES):
            where = "an earlier entry that succeeded" if self.in_batch else "any entry"
            raise BadRequest(f"The reference {reference} is not the fullUrl of {where} in the bundle",
                             code="not-found")
        match = _CONDITIONAL_REFERENCE.match(reference)
        if match is None:
            return reference
        if reference not in self.found:
            res_type, criteria = check_type(match.group(1)), conditional_criteria(match.group(2), "A conditional reference")
            in_bundle = self.conditional.get((res_type, _key(criteria)))
            found = in_bundle or self.repo.match_one(res_type, criteria, f"The conditional reference {reference}")
            if found is None:
                raise PreconditionFailed(f"The conditional reference {reference} matches no resource")
            self.found[reference] = found if in_bundle else f"{res_type}/{found}"
        return self.found[reference]


    # -- responses --------------------------------------------------------------------
    def _response(self, entry: Entry, result: Result) -> dict[str, Any]:
        response: dict[str, Any] = {"status": _status(result.status)}
        out: dict[str, Any] = {}
        stored = result.stored
        if stored is not None:
            out["fullUrl"] = f"{self.base}/{stored.reference}"
            if entry.method in ("POST", "PUT"):
                response["location"] = f"{self.base}/{stored.reference}/_history/{stored.version}"
            response["etag"] = stored.etag
            response["lastModified"] = format_instant(stored.last_updated)
            if result.with_resource and not self.minimal:
                out["resource"] = stored.resource()
        if result.searchset is not None and result.with_resource:
            out["resource"] = result.searchset
        out["response"] = response
        return out

    def _guarded(self, index: int, entry: Any, step: Callable[[], _T]) -> _T:
        try:
            return step()
        except FhirError as exc:
            full_url = entry.full_url if isinstance(entry, Entry) else (
                entry.get("fullUrl") if isinstance(entry, dict) else None)
            raise EntryFailed(index, full_url, exc) from exc

    def _fail(self, entry: Entry, error: FhirError) -> None:
        raise EntryFailed(entry.index, entry.full_url, error)


def _failure(status: int, outcome: dict[str, Any]) -> dict[str, Any]:
    return {"response": {"status": _status(status), "outcome": outcome}}


def _status(code: int) -> str:
    """'201 Created', '412 Precondition Failed'..."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _key(criteria: Criteria) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(criteria))
