"""Running a search: criteria + sort + keyset paging + _total + _include/_revinclude.

Stable paging: the first page records a snapshot bound — the highest rid stored at that moment —
and every page is a keyset page: the cursor carries the sort key values and rid of the last
(or, going back, the first) row shown. Resources created after the first page are never seen
by its later pages and do not shift them; unchanged resources are never repeated or skipped.
(A resource updated while a client pages shows its new content; if the update changed the
value it is sorted by, it may move across the page boundary.)
Cursors are opaque base64url JSON; every value in them is bound, never spliced into SQL.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (ColumnElement, Connection, and_, func, literal, or_, select)

from service.clock import Clock, SystemClock
from service.fhir.errors import BadRequest, Issue, Unprocessable
from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.extract import Extractor
from service.fhir.search.index_size import IndexSizeEstimator
from service.fhir.search.query import Include, SearchLimits, SearchParser, SearchQuery, SortKey
from service.fhir.search.values import HIGH_END, LOW_END, to_utc
from service.store.schema import UTCDateTime, resources
from service.store.search.compiler import TOP, Compiler
from service.store.search.indexer import SearchIndexer
from service.store.search.modifiers import resolve
from service.store.search.tables import TABLES, search_reference

MAX_INCLUDES = 1000
INCLUDE_ITERATIONS = 3
_FLOAT_TOP = 1e308


@dataclass(frozen=True)
class Found:
    """One resource row of a result (content is the stored JSON text)."""

    rid: int
    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    content: str


@dataclass
class SearchResult:
    matches: list[Found] = field(default_factory=list)
    includes: list[Found] = field(default_factory=list)
    total: int | None = None
    self_cursor: str | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None
    issues: list[Issue] = field(default_factory=list)


@dataclass(frozen=True)
class Cursor:
    """A page position: snapshot rid bound, and the keys of the row to start after/before."""

    snapshot: int
    after: tuple[Any, ...] | None = None
    before: tuple[Any, ...] | None = None

    def encode(self) -> str:
        body: dict[str, Any] = {"s": self.snapshot}
        if self.after is not None:
            body["a"] = [_jsonable(v) for v in self.after]
        if self.before is not None:
            body["b"] = [_jsonable(v) for v in self.before]
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, kinds: Sequence[str]) -> Cursor:
        """Parse a cursor made by encode() for a sort with these key kinds; raises BadRequest."""
        try:
            body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            snapshot = _rid(body["s"])
            after = _keys(body["a"], kinds) if "a" in body else None
            before = _keys(body["b"], kinds) if "b" in body else None
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise BadRequest("The paging cursor is not valid for this search", code="invalid",
                             expression=["_cursor"]) from exc
        return cls(snapshot, after, before)


def _jsonable(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _keys(raw: list[Any], kinds: Sequence[str]) -> tuple[Any, ...]:
    if len(raw) != len(kinds) + 1:
        raise ValueError("cursor does not match the sort")
    out: list[Any] = []
    for value, kind in zip(raw, kinds):
        if kind == "date":
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("cursor date without a zone")
            out.append(to_utc(moment))
        elif kind == "float":
            out.append(float(value))
        else:
            if not isinstance(value, str):
                raise ValueError("bad key")
            out.append(value)
    out.append(_rid(raw[-1]))
    return tuple(out)


def _rid(value: Any) -> int:
    """A row id from a cursor: an integer that fits a BIGINT; raises ValueError otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError("bad row id")
    return value


_KIND = {"date": "date", "number": "float", "quantity": "float", "string": "str",
         "token": "str", "uri": "str"}
_AGG_COLUMN = {"date": ("low", "high"), "number": ("value", "value"), "quantity": ("value", "value"),
               "string": ("norm", "norm"), "token": ("code", "code"), "uri": ("uri", "uri")}


class SearchEngine:
    """The search service of one application: definitions, extraction (write hook), parsing,
    execution, and the CapabilityStatement's searchParam lists."""

    def __init__(self, registry: SearchParameterRegistry | None = None, *, base_urls: Iterable[str] = (),
                 default_count: int = 50, max_count: int = 1000, clock: Clock | None = None,
                 limits: SearchLimits = SearchLimits(), max_index_entries: int = 50_000) -> None:
        self.registry = registry or SearchParameterRegistry.load()
        self.clock: Clock = clock or SystemClock()
        self.base_urls = tuple(b.rstrip("/") for b in base_urls if b)
        self.default_count = default_count
        self.max_count = max_count
        self.limits = limits
        self.max_index_entries = max_index_entries
        self.index_size = IndexSizeEstimator(self.registry)
        self.extractor = Extractor(self.registry, self.base_urls)
        self.indexer = SearchIndexer(self.extractor)
        self._compartment_types: dict[str, tuple[str, ...]] = {}   # compartment_types' answers (the registry is fixed)

    # --- integration points ------------------------------------------------------------------

    def init_database(self, database: Any) -> None:
        """Register the index write hook and the conditional-request finder on a Database."""
        database.add_hook(self.indexer)
        database.add_precheck(self.check_index_size)
        database.set_finder(self.find_ids)

    def check_index_size(self, resource: dict[str, Any]) -> None:
        """Refuse a resource whose search index would exceed max_index_entries rows (estimated
        in linear time, before the model check and the extraction); raises Unprocessable."""
        if self.index_size.exceeds(resource, self.max_index_entries):
            raise Unprocessable(
                f"The resource would need more than {self.max_index_entries} search index entries "
                "(TOH_MAX_INDEX_ENTRIES, an estimate: one per value its indexed elements hold)", code="too-costly")

    def capability_params(self, res_type: str) -> list[dict[str, str]]:
        """CapabilityStatement.rest.resource.searchParam for res_type."""
        return self.registry.capability(res_type)

    def parser(self, base_urls: Iterable[str] = ()) -> SearchParser:
        return SearchParser(self.registry, base_urls=tuple(self.base_urls) + tuple(base_urls),
                            default_count=self.default_count, max_count=self.max_count, limits=self.limits)

    def parse(self, res_type: str | None, params: list[tuple[str, str]], *,
              compartment: tuple[str, str] | None = None, base_urls: Iterable[str] = ()) -> SearchQuery:
        """Parse request parameters (see SearchParser.parse); never raises."""
        return self.parser(base_urls).parse(res_type, params, compartment=compartment)

    def find_ids(self, conn: Connection, res_type: str, params: list[tuple[str, str]],
                 limit: int | None = None) -> list[str]:
        """The ids matching a conditional request's criteria (If-None-Exist, conditional PUT),
        or every match a workflow asks for; ordered by storage order (rid), at most limit of
        them (None: all). Raises BadRequest for an unknown or malformed parameter (a condition
        must be exact) and when no search criterion is left (result parameters such as _count
        or _pretty alone would match every resource of the type)."""
        query = self.parse(res_type, params)
        query.raise_if_strict(True)
        if not query.criteria:
            raise BadRequest("a conditional request needs search criteria")
        query.criteria = resolve(conn, query.criteria)
        where = self._where(query, Compiler(self.registry, self.clock.now()), None)
        stmt = select(resources.c.res_id).where(*where).order_by(resources.c.rid)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [r.res_id for r in conn.execute(stmt)]

    def compartment_owners(self, resource: dict[str, Any]) -> set[str]:
        """Ids of the Patients in whose compartment resource is (R4 CompartmentDefinition
        patient: the Patient itself, or a reference through one of its type's linking
        parameters)."""
        res_type = resource.get("resourceType")
        owners: set[str] = set()
        if res_type == "Patient" and isinstance(resource.get("id"), str):
            owners.add(resource["id"])
        params = self.registry.compartment_members("Patient").get(str(res_type), ())
        if params:
            for row in self.extractor.extract(resource).reference:
                if row.param in params and row.target_type == "Patient" and row.target_id:
                    owners.add(row.target_id)
        return owners

    def in_patient_compartments(self, patient_ids: Sequence[str] | None) -> ColumnElement[bool]:
        """A condition on `resources`: the row is in the Patient compartment of one of
        patient_ids (None: of any patient), i.e. a Patient of them, or a resource of a member
        type referring to one through a linking parameter (R4 CompartmentDefinition patient).
        For Bulk Data's Patient- and Group-level export."""
        members = self.registry.compartment_members("Patient")
        ref = search_reference
        links = [and_(ref.c.res_type == t, ref.c.param.in_(params)) for t, params in members.items()]
        linked = select(ref.c.rid).where(ref.c.target_type == "Patient", or_(*links))
        patient = resources.c.res_type == "Patient"
        if patient_ids is not None:
            linked = linked.where(ref.c.target_id.in_(list(patient_ids)))
            patient = and_(patient, resources.c.res_id.in_(list(patient_ids)))
        return or_(patient, resources.c.rid.in_(linked))

    def compartment_types(self, compartment: str = "Patient") -> tuple[str, ...]:
        """The resource types that can be in a compartment (worked out once per compartment: every
        request's access guard asks)."""
        found = self._compartment_types.get(compartment)
        if found is None:
            found = self._compartment_types[compartment] = tuple(sorted(self.registry.compartment_members(compartment)))
        return found

    # --- search ------------------------------------------------------------------------------

    def search(self, conn: Connection, query: SearchQuery, *, now: datetime | None = None) -> SearchResult:
        """Run a parsed query; raises BadRequest for a cursor that does not fit the query, or
        for a :in/:not-in/:above/:below whose ValueSet or CodeSystem is not held."""
        query.criteria = resolve(conn, query.criteria)
        compiler = Compiler(self.registry, now or self.clock.now())
        result = SearchResult(issues=list(query.issues))
        sort = self._sort_columns(query)
        kinds = [kind for _, kind, _ in sort]
        cursor = Cursor.decode(query.cursor, kinds) if query.cursor else None
        snapshot = self._prepare(conn, need_snapshot=cursor is None)
        if cursor is None:
            cursor = Cursor(snapshot or 0)
        where = self._where(query, compiler, cursor.snapshot)
        if query.total in ("accurate", "estimate") or query.summary == "count" or query.count == 0:
            result.total = conn.execute(select(func.count()).select_from(resources).where(*where)).scalar_one()
        if query.summary == "count" or query.count == 0:
            result.self_cursor = cursor.encode()
            return result
        keys = [expr for expr, _, _ in sort] + [resources.c.rid]
        desc = [d for _, _, d in sort] + [False]
        backwards = cursor.before is not None
        page_where = list(where)
        if cursor.after is not None:
            page_where.append(_keyset(keys, desc, cursor.after, forward=True))
        if cursor.before is not None:
            page_where.append(_keyset(keys, desc, cursor.before, forward=False))
        order = [(k.desc() if d != backwards else k.asc()) for k, d in zip(keys, desc)]
        labelled = [k.label(f"k{i}") for i, k in enumerate(keys[:-1])]
        stmt = (select(resources.c.rid, resources.c.res_type, resources.c.res_id, resources.c.version,
                       resources.c.last_updated, resources.c.content, *labelled)
                .where(*page_where).order_by(*order).limit(query.count + 1))
        rows = conn.execute(stmt).all()
        more = len(rows) > query.count
        rows = rows[:query.count]
        if backwards:
            rows = rows[::-1]
        result.matches = [Found(r.rid, r.res_type, r.res_id, r.version, r.last_updated, r.content) for r in rows]
        first_page = cursor.after is None and cursor.before is None
        if result.total is None and first_page and not more:
            result.total = len(rows)
        row_keys = [tuple(getattr(r, f"k{i}") for i in range(len(keys) - 1)) + (r.rid,) for r in rows]
        result.self_cursor = cursor.encode()
        if rows:
            has_next = more if not backwards else True
            has_previous = (not first_page) if not backwards else more
            if has_next:
                result.next_cursor = Cursor(cursor.snapshot, after=row_keys[-1]).encode()
            if has_previous:
                result.previous_cursor = Cursor(cursor.snapshot, before=row_keys[0]).encode()
        if query.includes and result.matches:
            result.includes = self._includes(conn, query.includes, result.matches)
        return result

    @staticmethod
    def _prepare(conn: Connection, *, need_snapshot: bool) -> int | None:
        """One round trip before the page query: the snapshot bound (highest rid) if asked, and
        on PostgreSQL custom plans for this transaction — psycopg prepares repeated statements,
        and PostgreSQL's generic plan for them does not know which index is selective (3x slower)."""
        custom_plans = func.set_config("plan_cache_mode", "force_custom_plan", True)
        if need_snapshot:
            columns: list[Any] = [func.max(resources.c.rid)]
            if conn.dialect.name == "postgresql":
                columns.append(custom_plans)
            return conn.execute(select(*columns).select_from(resources)).scalar() or 0
        if conn.dialect.name == "postgresql":
            conn.execute(select(custom_plans))
        return None

    def _where(self, query: SearchQuery, compiler: Compiler, snapshot: int | None) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [resources.c.deleted.is_(False)]
        if query.res_type is not None:
            where.append(resources.c.res_type == query.res_type)
        elif query.types is not None:
            where.append(resources.c.res_type.in_(query.types))
        if snapshot is not None:
            where.append(resources.c.rid <= snapshot)
        if query.compartment is not None:
            where.append(compiler.compartment(resources, query.res_type, *query.compartment))
        where += compiler.conditions(resources, query.criteria)
        return where

    def _sort_columns(self, query: SearchQuery) -> list[tuple[Any, str, bool]]:
        """(SQL expression, key kind, descending) per _sort key; missing values sort last."""
        out: list[tuple[Any, str, bool]] = []
        for key in query.sort:
            out.append(self._sort_column(query.res_type, key))
        return out

    def _sort_column(self, res_type: str | None, key: SortKey) -> tuple[Any, str, bool]:
        if key.name == "_lastUpdated":
            return resources.c.last_updated, "date", key.descending
        if key.name == "_id":
            return resources.c.res_id, "str", key.descending
        table = TABLES[key.type]
        low_col, high_col = _AGG_COLUMN[key.type]
        kind = _KIND[key.type]
        agg: ColumnElement[Any]
        if key.descending:
            agg = func.max(table.c[high_col])
            missing: Any = {"date": LOW_END, "float": -_FLOAT_TOP, "str": ""}[kind]
        else:
            agg = func.min(table.c[low_col])
            missing = {"date": HIGH_END, "float": _FLOAT_TOP, "str": TOP}[kind]
        sub = (select(agg).where(table.c.rid == resources.c.rid, table.c.res_type == res_type,
                                 table.c.param == key.name).scalar_subquery())
        typ = UTCDateTime() if kind == "date" else None
        return func.coalesce(sub, literal(missing, typ) if typ else literal(missing)), kind, key.descending

    # --- _include / _revinclude --------------------------------------------------------------

    def _includes(self, conn: Connection, includes: list[Include], matches: list[Found]) -> list[Found]:
        seen = {m.rid for m in matches}
        found: list[Found] = []
        frontier = matches
        for round_ in range(INCLUDE_ITERATIONS):
            batch: list[Found] = []
            for inc in includes:
                if round_ > 0 and not inc.iterate:
                    continue
                rows = self._revinclude(conn, inc, frontier) if inc.reverse else self._include(conn, inc, frontier)
                for row in rows:
                    if row.rid not in seen and len(found) + len(batch) < MAX_INCLUDES:
                        seen.add(row.rid)
                        batch.append(row)
            found += batch
            if not batch or not any(i.iterate for i in includes):
                break
            frontier = batch
        return found

    def _include(self, conn: Connection, inc: Include, sources: list[Found]) -> list[Found]:
        rids = [s.rid for s in sources if s.res_type == inc.source_type]
        if not rids:
            return []
        ref = search_reference
        cond = [ref.c.rid.in_(rids), ref.c.res_type == inc.source_type, ref.c.param == inc.param,
                ref.c.target_id.is_not(None)]
        if inc.target_type:
            cond.append(ref.c.target_type == inc.target_type)
        targets: dict[str, set[str]] = {}
        for r in conn.execute(select(ref.c.target_type, ref.c.target_id).where(*cond)):
            targets.setdefault(r.target_type, set()).add(r.target_id)
        if not targets:
            return []
        alternatives = [and_(resources.c.res_type == t, resources.c.res_id.in_(sorted(ids)))
                        for t, ids in targets.items()]
        return self._fetch(conn, or_(*alternatives))

    def _revinclude(self, conn: Connection, inc: Include, targets: list[Found]) -> list[Found]:
        ref = search_reference
        by_type: dict[str, list[str]] = {}
        for t in targets:
            if inc.target_type in (None, t.res_type):
                by_type.setdefault(t.res_type, []).append(t.res_id)
        if not by_type:
            return []
        alternatives = [and_(ref.c.target_type == t, ref.c.target_id.in_(ids)) for t, ids in by_type.items()]
        rids = select(ref.c.rid).where(ref.c.res_type == inc.source_type, ref.c.param == inc.param,
                                       or_(*alternatives))
        return self._fetch(conn, resources.c.rid.in_(rids))

    @staticmethod
    def _fetch(conn: Connection, cond: ColumnElement[bool]) -> list[Found]:
        stmt = (select(resources.c.rid, resources.c.res_type, resources.c.res_id, resources.c.version,
                       resources.c.last_updated, resources.c.content)
                .where(cond, resources.c.deleted.is_(False)).order_by(resources.c.rid).limit(MAX_INCLUDES))
        return [Found(r.rid, r.res_type, r.res_id, r.version, r.last_updated, r.content)
                for r in conn.execute(stmt)]


def _keyset(keys: Sequence[Any], desc: Sequence[bool], values: Sequence[Any], *, forward: bool
            ) -> ColumnElement[bool]:
    """Rows strictly after (forward) or before the position `values` in the sort order."""
    alternatives = []
    for i, (key, d) in enumerate(zip(keys, desc)):
        eq = [k == v for k, v in zip(keys[:i], values[:i])]
        later = (key < values[i]) if (d == forward) else (key > values[i])
        alternatives.append(and_(*eq, later))
    return or_(*alternatives)

