"""The resource repository: create, read, vread, update, delete and history over the
current-version and version tables, inside the unit of work's transaction.

Concurrency: an update is a compare-and-set on (rid, version), so two writers that hold
the same version cannot both win; the version table's primary key forbids a duplicate
version number whatever happens. A PUT that creates races on the (type, id) unique key.
See https://hl7.org/fhir/R4/http.html for the interactions.
"""
from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, and_, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from service.clock import Clock
from service.fhir import resources as fhir
from service.fhir.errors import (BadRequest, Conflict, FhirError, Gone, MethodNotAllowed, NotFound,
                                 PreconditionFailed)
from service.store.schema import resource_versions, resources

class Finder(Protocol):
    """Finds the ids of current resources matching FHIR search criteria (None: no limit)."""

    def __call__(self, conn: Connection, res_type: str, params: list[tuple[str, str]],
                 limit: int | None = None) -> list[str]: ...



Validator = Callable[[dict[str, Any]], None]
# Seals a resource of one type just before it is stored: (connection, stamped resource, the
# version it replaces) -> (what to store, what to answer this write with). E.g. a Subscription's
# signing secret is kept in a table of its own and never in the stored resource.
Sealer = Callable[[Connection, dict[str, Any], "StoredResource | None"], tuple[dict[str, Any], dict[str, Any]]]
APPEND_ONLY = frozenset({"AuditEvent"})   # kept in the audit trail (service.store.audit), not here


def format_instant(moment: datetime) -> str:
    """A FHIR instant with milliseconds, in UTC ('2026-11-21T10:00:00.000Z')."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _floor_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _ceil_ms(moment: datetime) -> datetime:
    floor = _floor_ms(moment)
    return floor if floor == moment else floor + timedelta(milliseconds=1)


def dump(resource: dict[str, Any]) -> str:
    """The compact JSON text the store keeps and serves (strict JSON: NaN or Infinity, which
    service.fhir.content refuses at the edge, would raise ValueError rather than be stored)."""
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource as stored; content is the JSON text (None if deleted)."""

    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    deleted: bool
    content: str | None
    method: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.res_type}/{self.res_id}"

    def resource(self) -> dict[str, Any]:
        """The resource as a dict; raises Gone if this version is a deletion."""
        if self.content is None:
            raise Gone(f"{self.reference} was deleted (version {self.version})")
        return json.loads(self.content)


@dataclass(frozen=True)
class Change:
    """What a write did, as write hooks see it inside the transaction."""

    rid: int
    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    method: str                      # POST, PUT or DELETE
    resource: dict[str, Any] | None  # None on delete
    previous: StoredResource | None
    prepared: Prepared | None = None  # a create's work done before the write lock (Prepared)


class WriteHook(Protocol):
    """Runs in the writer's transaction after each write (search index, clinical rules...).

    A hook may also have ``on_writes(conn, changes)``, called instead with the changes of a
    deferred batch (Repository.deferred) at once, in order; and ``prepare(resource)``, run on
    a create's resource as the client sent it before its unit of work takes the write lock
    (Database.prepare_create). What prepare returned comes back as
    ``change.prepared.by_hook[hook]`` when that create is written from the resource with no
    change but those the server makes to a create: the id it assigns, meta.versionId and
    meta.lastUpdated, and Reference.reference values a transaction rewrites
    (http.html#transaction). A hook must give the same result with or without it."""

    def on_write(self, conn: Connection, change: Change) -> None: ...


@dataclass(frozen=True)
class Prepared:
    """A create's resource passed the checks that depend on nothing but itself (passes_prechecks)
    before its unit of work took the write lock, and the write hooks with a ``prepare``
    method gave what they compute from it then (WriteHook), by hook."""

    by_hook: Mapping[object, Any]


class DeferredWriteFailed(Exception):
    """A create queued by Repository.deferred() failed when it was written: which one
    (res_type, res_id) and the FhirError it failed with (cause)."""

    def __init__(self, res_type: str, res_id: str, cause: FhirError) -> None:
        super().__init__(f"{res_type}/{res_id}: {cause}")
        self.res_type, self.res_id, self.cause = res_type, res_id, cause


# The statements of the hot read path, built once (immutable; values are bound per call).
_CURRENT = select(resources).where(resources.c.res_type == bindparam("res_type"),
                                   resources.c.res_id == bindparam("res_id"))
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()
_INSERT_RESOURCE = insert(resources).returning(resources.c.rid)
# executemany with RETURNING (SQLAlchemy's insertmanyvalues: one multi-row INSERT); the rows come
# back in no promised order, so each rid is matched to its row by (type, id)
_INSERT_RESOURCES = insert(resources).returning(resources.c.rid, resources.c.res_type, resources.c.res_id)
_INSERT_VERSION = insert(resource_versions)
_VERSION = select(resource_versions).where(resource_versions.c.res_type == bindparam("res_type"),
                                           resource_versions.c.res_id == bindparam("res_id"),
                                           resource_versions.c.version == bindparam("version"))


def passes_prechecks(prechecks: Sequence[Validator], resource: dict[str, Any]) -> bool:
    """Whether resource passes the checks that depend on nothing but the resource itself: the
    prechecks and R4 (service.fhir.resources.validate). False when any of them raises a
    FhirError; the write then runs them again and reports what they raise. Reads nothing, so
    it may run before a transaction takes its write lock (Repository.validate(checked=True))."""
    try:
        for check in prechecks:
            check(resource)
        fhir.validate(resource)
    except FhirError:
        return False
    return True


def prepare_create(prechecks: Sequence[Validator], hooks: Sequence[WriteHook],
                   resource: dict[str, Any]) -> Prepared | None:
    """passes_prechecks, then each hook's ``prepare`` (WriteHook) on resource: a Prepared, or
    None if a check fails (the write then runs it again and reports what it raises). Reads
    nothing, so it may run before a transaction takes its write lock."""
    if not passes_prechecks(prechecks, resource):
        return None
    return Prepared({hook: hook.prepare(resource)   # type: ignore[attr-defined]
                     for hook in hooks if hasattr(hook, "prepare")})


def _stored(row: Any, method: str = "") -> StoredResource:
    return StoredResource(row.res_type, row.res_id, row.version, row.last_updated, row.deleted,
                          row.content, method)


def current_version(found: StoredResource | None, res_type: str, res_id: str) -> StoredResource:
    """found, the current row of res_type/res_id as read, if it can be answered with; raises
    NotFound if there is none (never stored), Gone if it is a deletion."""
    if found is None:
        raise NotFound(f"{res_type}/{res_id} is not known")
    if found.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted")
    return found


def id_only_finder(conn: Connection, res_type: str, params: list[tuple[str, str]],
                   limit: int | None = None) -> list[str]:
    """Resolve a conditional request that only uses _id; the search package replaces this."""
    if any(name != "_id" for name, _ in params) or not params:
        raise BadRequest("Conditional requests support only _id until search is available")
    ids = {v for _, value in params for v in value.split(",")}
    rows = conn.execute(select(resources.c.res_id).where(
        resources.c.res_type == res_type, resources.c.res_id.in_(ids), resources.c.deleted.is_(False))
        .order_by(resources.c.rid).limit(limit))
    return [r.res_id for r in rows]


class Repository:
    """FHIR persistence over one connection/transaction (see module docstring)."""

    def __init__(self, conn: Connection, clock: Clock, hooks: Sequence[WriteHook] = (),
                 dialect: str = "sqlite", validators: Sequence[Validator] = (),
                 finder: Finder = id_only_finder, journal: list[Change] | None = None,
                 read_only: frozenset[tuple[str, str]] = frozenset(),
                 prechecks: Sequence[Validator] = (), sealers: dict[str, Sealer] | None = None) -> None:
        self.conn = conn
        self.sealers = sealers or {}
        self.prechecks = prechecks
        self.read_only = read_only
        self.journal = journal if journal is not None else []
        self.clock = clock
        self.hooks = hooks
        self.dialect = dialect
        self.validators = validators
        self.finder = finder
        self._pending: list[tuple[StoredResource, dict[str, Any], Prepared | None]] | None = None  # deferred()
        # What the steps of this transaction compute from it and may reuse (keyed by each
        # step's own tuple keys; e.g. workflows.clinical_watch's assessments). Dropped with it.
        self.memo: dict[tuple[Any, ...], Any] = {}

    # -- deferred creates ---------------------------------------------------------------
    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block, creates are validated and answered at once but written together:
        their resource rows, version rows and (through on_writes) index rows each with one
        executemany, when the block ends or before anything is read through this repository
        (every read and write method calls flush() first). Whoever reads the connection
        directly inside the block calls flush() first. If the block raises, what is still
        queued is dropped: the caller rolls the transaction back.
        Raises what flush() raises."""
        if self._pending is not None:
            yield
            return
        self._pending = []
        try:
            yield
            self.flush()
        finally:
            self._pending = None

    def flush(self) -> None:
        """Write the queued creates (see deferred()) and run the write hooks on them.

        Raises DeferredWriteFailed naming the create that failed and why: Conflict if it was
        written concurrently (its (type, id) is taken), or what a write hook raised (a hook
        with on_writes is given the whole batch, so its error is put on the batch's first)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        first = pending[0][0]
        try:
            returned = self.conn.execute(_INSERT_RESOURCES, [
                {"res_type": s.res_type, "res_id": s.res_id, "version": s.version, "last_updated": s.last_updated,
                 "deleted": False, "content": s.content} for s, _, _ in pending]).all()
            rid_of = {(row.res_type, row.res_id): row.rid for row in returned}
            rids = [rid_of[(s.res_type, s.res_id)] for s, _, _ in pending]
            self.conn.execute(_INSERT_VERSION, [
                {"res_type": s.res_type, "res_id": s.res_id, "version": s.version, "rid": rid,
                 "last_updated": s.last_updated, "method": s.method, "deleted": False, "content": s.content}
                for rid, (s, _, _) in zip(rids, pending)])
        except IntegrityError as exc:
            raise DeferredWriteFailed(first.res_type, first.res_id, Conflict(
                "A resource of this transaction was written concurrently")) from exc
        changes = [Change(rid, s.res_type, s.res_id, s.version, s.last_updated, s.method, stamped, None, prepared)
                   for rid, (s, stamped, prepared) in zip(rids, pending)]
        self.journal.extend(changes)
        for hook in self.hooks:
            on_writes = getattr(hook, "on_writes", None)
            if on_writes is not None:
                try:
                    on_writes(self.conn, changes)
                except FhirError as exc:
                    raise DeferredWriteFailed(first.res_type, first.res_id, exc) from exc
                continue
            for change in changes:
                try:
                    hook.on_write(self.conn, change)
                except FhirError as exc:
                    raise DeferredWriteFailed(change.res_type, change.res_id, exc) from exc

    # -- reads ------------------------------------------------------------------------
    def current(self, res_type: str, res_id: str, *, for_update: bool = False) -> tuple[int, StoredResource] | None:
        """The current row (rid, version) of a resource, deleted or not; None if never stored."""
        self.flush()
        query = _CURRENT_FOR_UPDATE if for_update and self.dialect == "postgresql" else _CURRENT
        row = self.conn.execute(query, {"res_type": res_type, "res_id": res_id}).first()
        return None if row is None else (row.rid, _stored(row))

    def read(self, res_type: str, res_id: str) -> StoredResource:
        """The current version; raises NotFound if never stored, Gone if deleted."""
        found = self.current(res_type, res_id)
        return current_version(None if found is None else found[1], res_type, res_id)

    def read_many(self, res_type: str, res_ids: Sequence[str]) -> list[StoredResource]:
        """The current, not deleted, versions of the given ids (unknown ones left out)."""
        if not res_ids:
            return []
        self.flush()
        rows = self.conn.execute(select(resources).where(
            resources.c.res_type == res_type, resources.c.res_id.in_(list(res_ids)),
            resources.c.deleted.is_(False)).order_by(resources.c.rid))
        return [_stored(row) for row in rows]

    def vread(self, res_type: str, res_id: str, version: int) -> StoredResource:
        """One version; raises NotFound if that version does not exist, Gone if it is a deletion."""
        self.flush()
        row = self.conn.execute(_VERSION, {"res_type": res_type, "res_id": res_id, "version": version}).first()
        if row is None:
            raise NotFound(f"{res_type}/{res_id} has no version {version}")
        if row.deleted:
            raise Gone(f"Version {version} of {res_type}/{res_id} is a deletion")
        return _stored(row, row.method)

    def history(self, res_type: str | None = None, res_id: str | None = None, *,
                since: datetime | None = None, at: tuple[datetime, datetime] | None = None,
                count: int = 50, offset: int = 0) -> tuple[list[StoredResource], int]:
        """Versions newest first, with the total; raises NotFound for an unknown instance.

        Times are compared as they are served, to the millisecond (format_instant):
        since keeps the versions created at or after it (R4 ``_since``); at = [low, high)
        keeps the versions that were current at some point in that range (R4 ``_at``): made
        before high, and not replaced by a next version at or before low.
        """
        self.flush()
        cond = []
        if res_type is not None:
            cond.append(resource_versions.c.res_type == res_type)
        if res_id is not None:
            cond.append(resource_versions.c.res_id == res_id)
            if self.current(res_type or "", res_id) is None:
                raise NotFound(f"{res_type}/{res_id} is not known")
        if since is not None:      # served(t) >= since  <=>  t >= ceil_ms(since)
            cond.append(resource_versions.c.last_updated >= _ceil_ms(since))
        if at is not None:         # served(t) < high; served(next) > low
            low, high = at
            nxt = resource_versions.alias("next_version")
            replaced = select(nxt.c.version).where(
                nxt.c.res_type == resource_versions.c.res_type, nxt.c.res_id == resource_versions.c.res_id,
                nxt.c.version == resource_versions.c.version + 1,
                nxt.c.last_updated < _floor_ms(low) + timedelta(milliseconds=1))
            cond += [resource_versions.c.last_updated < _ceil_ms(high), ~replaced.exists()]
        where = and_(*cond) if cond else None
        total_q = select(func.count()).select_from(resource_versions)
        rows_q = select(resource_versions).order_by(
            resource_versions.c.last_updated.desc(), resource_versions.c.res_type,
            resource_versions.c.res_id, resource_versions.c.version.desc()).limit(count).offset(offset)
        if where is not None:
            total_q, rows_q = total_q.where(where), rows_q.where(where)
        total = self.conn.execute(total_q).scalar_one()
        return [_stored(r, r.method) for r in self.conn.execute(rows_q)], total

    # -- writes -----------------------------------------------------------------------
    def validate(self, resource: dict[str, Any], expected_type: str | None = None, *,
                 checked: bool = False) -> str:
        """Check a resource with the cheap prechecks, then against R4 and the registered
        validators; returns its type. Raises what they raise (FhirErrors).

        checked: the prechecks and the R4 check have passed already on this resource, or on
        one that differs from it only in Reference.reference values rewritten to 'Type/id'
        (service.store.bundles.prechecked_creates: those checks depend only on the resource,
        and such a rewrite cannot make them fail); only the registered validators run."""
        if checked:
            res_type = fhir.check_type(str(resource.get("resourceType")))
        else:
            for check in self.prechecks:
                check(resource)
            res_type = fhir.validate(resource, expected_type)
        for validator in self.validators:
            validator(resource)
        return res_type

    def create(self, resource: dict[str, Any], *, if_none_exist: list[tuple[str, str]] | None = None,
               res_id: str | None = None, checked: bool = False,
               prepared: Prepared | None = None) -> tuple[StoredResource, bool]:
        """Store a new resource under a server-assigned id (client id ignored, as FHIR says).

        With if_none_exist, returns (existing, False) when exactly one resource matches and
        raises PreconditionFailed when several do, MethodNotAllowed for an AuditEvent (the
        audit trail is written by the service only). Raises what validate() raises (checked:
        see validate()). prepared: what prepare_create gave for this resource as sent, which
        differs from it at most as WriteHook says (it implies checked); ignored for a type
        whose stored content a sealer changes.
        """
        self._check_writable(str(resource.get("resourceType")), "")
        res_type = self.validate(resource, checked=checked or prepared is not None)
        if if_none_exist is not None:
            found = self.match_one(res_type, if_none_exist, "If-None-Exist")
            if found:
                return self.read(res_type, found), False
        if res_type in self.sealers:
            prepared = None
        return self._insert(res_type, res_id or fhir.new_id(), resource, "POST", prepared), True

    def find_ids(self, res_type: str, params: list[tuple[str, str]], limit: int | None = None) -> list[str]:
        """Ids of the current resources matching search criteria; raises BadRequest for bad criteria."""
        self.flush()
        return self.finder(self.conn, res_type, params, limit=limit)

    def match_one(self, res_type: str, criteria: list[tuple[str, str]], what: str = "The condition") -> str | None:
        """The id of the one resource matching search criteria, or None if none does.

        Raises PreconditionFailed if several match, BadRequest for criteria the finder rejects.
        """
        self.flush()
        self._serialise_conditional(res_type, criteria)
        matches = self.finder(self.conn, res_type, criteria, limit=2)
        if len(matches) > 1:
            raise PreconditionFailed(f"{what} matched more than one {res_type}")
        return matches[0] if matches else None

    def conditional_target(self, res_type: str, criteria: list[tuple[str, str]], body_id: Any) -> str:
        """The id a conditional update (PUT [type]?criteria) writes: the one match, else the
        body's id, else a new one. Raises PreconditionFailed if several match and BadRequest
        if the body's id differs from the match or is not a valid id."""
        found = self.match_one(res_type, criteria, "The conditional update")
        if found and body_id is not None and body_id != found:
            raise BadRequest(f"The conditional update matched {res_type}/{found} but the resource's id is '{body_id}'")
        if found:
            return found
        return fhir.check_id(body_id) if isinstance(body_id, str) else fhir.new_id()

    def update(self, res_type: str, res_id: str, resource: dict[str, Any], *,
               if_match: int | None = None, system: bool = False) -> tuple[StoredResource, bool]:
        """Store a new version, or create with the client's id; returns (stored, created).

        Raises BadRequest if the body's id differs from res_id, PreconditionFailed if
        if_match is not the current version, MethodNotAllowed for a read-only resource
        (unless system: the service itself writes its own, already validated, content),
        plus what validate() raises.
        """
        fhir.check_id(res_id)
        if not system:
            self._check_writable(res_type, res_id)
        if resource.get("resourceType") != res_type:
            raise BadRequest(f"resourceType '{resource.get('resourceType')}' does not match the URL's type '{res_type}'")
        if resource.get("id") is None:
            raise BadRequest("The resource in an update must carry its id", expression=[f"{res_type}.id"])
        if resource.get("id") != res_id:
            raise BadRequest(f"The body's id '{resource.get('id')}' does not match the URL's id '{res_id}'",
                             expression=[f"{res_type}.id"])
        if not system:  # the service's own content (the guide) is validated by its tests
            self.validate(resource, res_type)
        found = self.current(res_type, res_id, for_update=True)
        if found is None:
            if if_match is not None:
                raise PreconditionFailed(f"{res_type}/{res_id} does not exist, so If-Match cannot match")
            try:
                with self.conn.begin_nested():
                    return self._insert(res_type, res_id, resource, "PUT"), True
            except IntegrityError:  # another writer created it first: update theirs
                found = self.current(res_type, res_id, for_update=True)
                assert found is not None
        rid, previous = found
        if if_match is not None and if_match != previous.version:
            raise PreconditionFailed(
                f"If-Match version {if_match} is not the current version {previous.version} of {res_type}/{res_id}")
        return self._new_version(rid, previous, resource, "PUT"), False

    def delete(self, res_type: str, res_id: str, *, if_match: int | None = None) -> StoredResource | None:
        """Delete (a new version marked deleted); None, and nothing written, if it was already
        deleted or never existed (https://hl7.org/fhir/R4/http.html#delete: "...or if the
        resource does not exist at all, the server should return either a 200 OK ... or a
        204 No Content").

        Raises PreconditionFailed on a stale if_match (or any if_match when there is no such
        resource) and MethodNotAllowed for a read-only resource.
        """
        self._check_writable(res_type, res_id)
        found = self.current(res_type, res_id, for_update=True)
        if found is None:
            if if_match is not None:
                raise PreconditionFailed(f"{res_type}/{res_id} does not exist, so If-Match cannot match")
            return None
        rid, previous = found
        if if_match is not None and if_match != previous.version:
            raise PreconditionFailed(
                f"If-Match version {if_match} is not the current version {previous.version} of {res_type}/{res_id}")
        if previous.deleted:
            return None
        return self._new_version(rid, previous, None, "DELETE")

    def restore(self, chains: Sequence[Sequence[Any]]) -> int:
        """Put back resources exactly as another database held them (`toh import`): each chain is
        one resource's versions, oldest first (objects with res_type, res_id, version,
        last_updated, method, deleted, content, e.g. store.bulk.VersionRow), written with their
        ids, version numbers, lastUpdated and methods. The write hooks (the search index) run
        on each current version; the changes are not journaled, so the before-commit steps
        (rules, plans, Provenance) do not run again over data they already produced. Returns
        the number of versions written. Raises Conflict if a resource exists already."""
        self.flush()
        chains = [list(c) for c in chains if c]
        if not chains:
            return 0
        try:
            returned = self.conn.execute(_INSERT_RESOURCES, [
                {"res_type": c[-1].res_type, "res_id": c[-1].res_id, "version": c[-1].version,
                 "last_updated": c[-1].last_updated, "deleted": c[-1].deleted, "content": c[-1].content}
                for c in chains]).all()
            rid_of = {(row.res_type, row.res_id): row.rid for row in returned}
            self.conn.execute(_INSERT_VERSION, [
                {"res_type": v.res_type, "res_id": v.res_id, "version": v.version,
                 "rid": rid_of[(v.res_type, v.res_id)], "last_updated": v.last_updated, "method": v.method,
                 "deleted": v.deleted, "content": v.content} for c in chains for v in c])
        except IntegrityError as exc:
            raise Conflict("A restored resource is stored already") from exc
        changes = [Change(rid_of[(c[-1].res_type, c[-1].res_id)], c[-1].res_type, c[-1].res_id, c[-1].version,
                          c[-1].last_updated, c[-1].method, json.loads(c[-1].content), None)
                   for c in chains if not c[-1].deleted]
        for hook in self.hooks:
            on_writes = getattr(hook, "on_writes", None)
            if on_writes is not None:
                on_writes(self.conn, changes)
            else:
                for change in changes:
                    hook.on_write(self.conn, change)
        return sum(len(c) for c in chains)

    def lock(self, name: str) -> None:
        """Hold a named lock until this transaction ends, so two processes doing the same
        work one after the other see each other's result. PostgreSQL: an advisory
        transaction lock; SQLite: writers are serialised by BEGIN IMMEDIATE already."""
        if self.dialect == "postgresql":
            key = zlib.crc32(name.encode()) - 2**31
            self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    # -- internals --------------------------------------------------------------------
    def _check_writable(self, res_type: str, res_id: str) -> None:
        if res_type in APPEND_ONLY:
            raise MethodNotAllowed(f"{res_type} is append-only: the service records every interaction itself, "
                                   "and no one may create, change or delete its records")
        if (res_type, res_id) in self.read_only:
            raise MethodNotAllowed(f"{res_type}/{res_id} belongs to the TOH implementation guide and is "
                                   "read-only here; change it in fhir_profiles/")

    def _serialise_conditional(self, res_type: str, params: list[tuple[str, str]]) -> None:
        # Two conditional creates with the same criteria must not both create.
        self.lock(repr((res_type, sorted(params))))

    def _stamp(self, res_type: str, res_id: str, version: int, resource: dict[str, Any],
               moment: datetime) -> dict[str, Any]:
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(moment)
        body = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
        return {"resourceType": res_type, "id": res_id, "meta": meta, **body}

    def _insert(self, res_type: str, res_id: str, resource: dict[str, Any], method: str,
                prepared: Prepared | None = None) -> StoredResource:
        moment = self.clock.now()
        stamped, shown = self._seal(self._stamp(res_type, res_id, 1, resource, moment), None)
        content = dump(stamped)
        stored = StoredResource(res_type, res_id, 1, moment, False, content, method)
        answer = stored if shown is stamped else replace(stored, content=dump(shown))
        if self._pending is not None and method == "POST":
            self._pending.append((stored, stamped, prepared))
            return answer
        self.flush()
        rid = self.conn.execute(_INSERT_RESOURCE, {
            "res_type": res_type, "res_id": res_id, "version": 1, "last_updated": moment, "deleted": False,
            "content": content}).scalar_one()
        self._record(rid, stored, stamped, None, prepared)
        return answer

    def _seal(self, stamped: dict[str, Any], previous: StoredResource | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what to store, what to answer) of a stamped resource, by its type's sealer if any."""
        sealer = self.sealers.get(stamped["resourceType"])
        return (stamped, stamped) if sealer is None else sealer(self.conn, stamped, previous)

    def _new_version(self, rid: int, previous: StoredResource, resource: dict[str, Any] | None,
                     method: str) -> StoredResource:
        moment = self.clock.now()
        version = previous.version + 1
        stamped = None if resource is None else self._stamp(previous.res_type, previous.res_id, version,
                                                            resource, moment)
        shown = stamped
        if stamped is not None:
            stamped, shown = self._seal(stamped, previous)
        content = None if stamped is None else dump(stamped)
        result = self.conn.execute(update(resources).where(
            resources.c.rid == rid, resources.c.version == previous.version).values(
            version=version, last_updated=moment, deleted=stamped is None, content=content))
        if result.rowcount != 1:
            raise PreconditionFailed(
                f"{previous.reference} changed while it was being written (was version {previous.version})")
        stored = StoredResource(previous.res_type, previous.res_id, version, moment, stamped is None,
                                content, method)
        self._record(rid, stored, stamped, previous)
        return stored if shown is stamped or shown is None else replace(stored, content=dump(shown))

    def _record(self, rid: int, stored: StoredResource, resource: dict[str, Any] | None,
                previous: StoredResource | None, prepared: Prepared | None = None) -> None:
        try:
            with self.conn.begin_nested():
                self.conn.execute(_INSERT_VERSION, {
                    "res_type": stored.res_type, "res_id": stored.res_id, "version": stored.version, "rid": rid,
                    "last_updated": stored.last_updated, "method": stored.method, "deleted": stored.deleted,
                    "content": stored.content})
        except IntegrityError as exc:
            raise Conflict(f"Version {stored.version} of {stored.reference} was written concurrently") from exc
        change = Change(rid, stored.res_type, stored.res_id, stored.version, stored.last_updated,
                        stored.method, resource, previous, prepared)
        self.journal.append(change)
        for hook in self.hooks:
            hook.on_write(self.conn, change)
