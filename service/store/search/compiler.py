"""Compiling parsed search criteria (service.fhir.search.query) to SQLAlchemy Core conditions
on the resources table.

Every criterion becomes ``resources.rid IN (SELECT rid FROM search_<type> WHERE res_type = :t
AND param = :p AND <value conditions>)`` — a range scan of one index per criterion, joined
to resources by primary key. A parameter repeated (``name=a&name=b``: both must hold, maybe
on different rows) is still one join: ``rid IN (SELECT rid ... GROUP BY rid HAVING
max(CASE WHEN <a> THEN 1 ELSE 0 END) = 1 AND max(CASE WHEN <b> ...) = 1)``, and repeated
``:not`` is one ``NOT IN`` over the union of the values, so the SQL grows with the number of
parameter names, not with repetition (a planner facing 100 semi-joins is what exhausts memory). All values are bound parameters; table and column names come
from tables.py only, never from the request. Range semantics follow
https://hl7.org/fhir/R4/search.html#prefix (ranges are half-open [low, high)).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, and_, case, false, func, literal, not_, or_, select

from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.model import CompositeValue, OfTypeValue
from service.fhir.search.query import (Criterion, DateValue, NumberValue, QuantityValue,
                                       RefValue, TextValue, TokenValue, UriValue)
from service.fhir.search.values import fold_case, normalize, shift
from service.store.schema import UTCDateTime, resources
from service.store.search.tables import TABLES, VALUE, search_composite, search_reference

# A repeated parameter's rows are pre-filtered by the union of its values up to this many
# terms; beyond, SQLite's expression depth limit (1000) is near, and its partition is scanned.
PREFILTER_TERMS = 100
TOP = "\U0010ffff"   # sorts after every character: [p, p + TOP) is "starts with p"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def starts_with(column: Any, prefix: str) -> ColumnElement[bool]:
    """column starts with prefix, as an index range (byte-order collation on PostgreSQL)."""
    prefix = prefix[:VALUE]
    return and_(column >= prefix, column < prefix + TOP)


class Compiler:
    """Builds SQL conditions for criteria; ``now`` anchors the 'ap' (approximately) prefix."""

    def __init__(self, registry: SearchParameterRegistry, now: datetime) -> None:
        self.registry = registry
        self.now = now

    # --- whole criteria --------------------------------------------------------------------

    def condition(self, res: FromClause, c: Criterion) -> ColumnElement[bool]:
        """The condition on the resources row res (resources or an alias) for criterion c."""
        if c.name == "_id":
            ids = [v.code for v in c.values if isinstance(v, TokenValue)]
            cond = res.c.res_id.in_(ids)
            return not_(cond) if c.modifier == "not" else cond
        if c.name == "_lastUpdated":
            return or_(*(self._point_date(res.c.last_updated, v) for v in c.values
                         if isinstance(v, DateValue)))
        if c.has is not None:
            return res.c.res_id.in_(self._has(c))
        table = TABLES[c.type]
        base = [table.c.res_type == c.res_type, table.c.param == c.name]
        if c.missing is not None:
            has = res.c.rid.in_(select(table.c.rid).where(*base))
            return not_(has) if c.missing else has
        if c.chain is not None:
            return res.c.rid.in_(self._chain(c))
        values = [self._value(c, v) for v in c.values]
        matching = select(table.c.rid).where(*base, or_(*values) if values else false())
        if c.modifier == "not":
            return not_(res.c.rid.in_(matching))
        return res.c.rid.in_(matching)

    def conditions(self, res: FromClause, criteria: Sequence[Criterion]) -> list[ColumnElement[bool]]:
        """The conditions for criteria ANDed, one join per repeated parameter (module docstring)."""
        groups: dict[tuple[str, str, str, bool], list[Criterion]] = {}
        out: list[ColumnElement[bool]] = []
        for c in criteria:
            if (c.name in ("_id", "_lastUpdated") or c.missing is not None or c.chain is not None
                    or c.has is not None or c.type not in TABLES):
                out.append(self.condition(res, c))
            else:
                groups.setdefault((c.res_type, c.name, c.type, c.modifier == "not"), []).append(c)
        for (res_type, name, kind, negated), group in groups.items():
            if len(group) == 1:
                out.append(self.condition(res, group[0]))
                continue
            table = TABLES[kind]
            base = [table.c.res_type == res_type, table.c.param == name]
            if negated:   # not a and not b = not (a or b)
                union = [self._value(c, v) for c in group for v in c.values]
                matching = select(table.c.rid).where(*base, or_(*union) if union else false())
                out.append(not_(res.c.rid.in_(matching)))
                continue
            each = [or_(*vals) if vals else false() for vals in ([self._value(c, v) for v in c.values] for c in group)]
            rows = select(table.c.rid).where(*base)
            if sum(len(c.values) for c in group) <= PREFILTER_TERMS:
                rows = rows.where(or_(*each))   # a row matching none of them counts for none
            out.append(res.c.rid.in_(rows.group_by(table.c.rid).having(
                and_(*(func.max(case((cond, 1), else_=0)) == 1 for cond in each)))))
        return out

    def compartment(self, res: FromClause, res_type: str | None, comp_type: str, comp_id: str
                    ) -> ColumnElement[bool]:
        """res is in the compartment comp_type/comp_id (for res_type, or for any type)."""
        members = self.registry.compartment_members(comp_type)
        ref = search_reference
        types = [res_type] if res_type else sorted(members)
        links = [and_(ref.c.res_type == t, ref.c.param.in_(members[t])) for t in types if t in members]
        conds: list[ColumnElement[bool]] = []
        if links:
            conds.append(res.c.rid.in_(select(ref.c.rid).where(
                ref.c.target_type == comp_type, ref.c.target_id == comp_id, or_(*links))))
        if res_type in (None, comp_type):
            conds.append(and_(res.c.res_type == comp_type, res.c.res_id == comp_id))
        return or_(*conds) if conds else false()

    def _chain(self, c: Criterion) -> Select[Any]:
        assert c.chain is not None
        ref = search_reference
        alternatives = []
        for target_type, inner in zip(c.chain.target_types, c.chain.criteria):
            target = resources.alias()
            ids = select(target.c.res_id).where(
                target.c.res_type == target_type, target.c.deleted.is_(False),
                self.condition(target, inner))
            alternatives.append(and_(ref.c.target_type == target_type, ref.c.target_id.in_(ids)))
        return select(ref.c.rid).where(ref.c.res_type == c.res_type, ref.c.param == c.name,
                                       or_(*alternatives))

    def _has(self, c: Criterion) -> Select[Any]:
        """The ids of c.res_type that a c.has.source_type matching its criterion refers to."""
        assert c.has is not None
        ref, source = search_reference, resources.alias()
        matching = select(source.c.rid).where(source.c.res_type == c.has.source_type, source.c.deleted.is_(False),
                                              self.condition(source, c.has.criterion))
        return select(ref.c.target_id).where(ref.c.res_type == c.has.source_type, ref.c.param == c.has.param,
                                             ref.c.target_type == c.res_type, ref.c.rid.in_(matching))

    # --- one value -------------------------------------------------------------------------

    @staticmethod
    def _token(system: Any, code: Any, v: TokenValue, code_ci: Any = None) -> ColumnElement[bool]:
        """A token value against (system, code) columns; code_ci: the case-folded code of a
        string-typed element, matched without case."""
        conds = []
        if v.code is not None:
            exact = code == v.code[:VALUE]
            conds.append(exact if code_ci is None else or_(exact, code_ci == fold_case(v.code)))
        if v.system is not None:
            conds.append(system == v.system[:VALUE])
        elif v.system_given:
            conds.append(system.is_(None))
        return and_(*conds)

    def _composite(self, v: CompositeValue) -> ColumnElement[bool]:
        t, s = search_composite, v.second
        conds = [self._token(t.c.system, t.c.code, v.first)]
        if isinstance(s, TokenValue):
            conds.append(self._token(t.c.v_system, t.c.v_code, s))
        elif isinstance(s, QuantityValue):
            conds.append(self._point_number(t.c.v_value, s))
            if s.system is not None:
                conds.append(t.c.v_system == s.system)
            if s.code is not None:
                conds.append(or_(t.c.v_code == s.code, t.c.v_unit == s.code))
        elif isinstance(s, NumberValue):
            conds.append(self._point_number(t.c.v_value, s))
        elif isinstance(s, DateValue):
            conds.append(self._range_date(t.c.v_low, t.c.v_high, s))
        elif isinstance(s, TextValue):
            conds.append(starts_with(t.c.v_norm, s.text))
        elif isinstance(s, RefValue):
            if s.target_id is None:
                return false()      # an absolute URL: composite rows keep local targets only
            conds.append(t.c.v_target_id == s.target_id)
            if s.target_type is not None:
                conds.append(t.c.v_target_type == s.target_type)
        else:
            raise TypeError(f"no SQL for {s!r}")
        return and_(*conds)

    def _value(self, c: Criterion, v: Any) -> ColumnElement[bool]:
        t = TABLES[c.type]
        if isinstance(v, TokenValue):   # a string-typed element's value matches without case
            return self._token(t.c.system, t.c.code, v, t.c.code_ci)
        if isinstance(v, OfTypeValue):
            return and_(t.c.system == v.system[:VALUE], t.c.code == v.code[:VALUE],
                        t.c.code_ci == fold_case(v.value))
        if isinstance(v, CompositeValue):
            return self._composite(v)
        if isinstance(v, TextValue):
            if c.type == "token":           # :text
                return starts_with(t.c.text, v.text)
            if c.modifier == "exact":
                return and_(t.c.norm == normalize(v.text)[:VALUE], t.c.exact == v.text[:VALUE])
            if c.modifier == "contains":
                return t.c.norm.like(f"%{_escape_like(v.text)}%", escape="\\")
            return starts_with(t.c.norm, v.text)
        if isinstance(v, RefValue):
            if v.url is not None:
                return t.c.url == v.url[:VALUE]
            conds = [t.c.target_id == v.target_id]
            if v.target_type is not None:
                conds.append(t.c.target_type == v.target_type)
            elif c.targets:
                conds.append(t.c.target_type.in_(c.targets))
            return and_(*conds)
        if isinstance(v, DateValue):
            return self._range_date(t.c.low, t.c.high, v)
        if isinstance(v, QuantityValue):
            conds = [self._point_number(t.c.value, v)]
            if v.system is not None:
                conds.append(t.c.system == v.system)
            if v.code is not None:
                conds.append(or_(t.c.code == v.code, t.c.unit == v.code))
            return and_(*conds)
        if isinstance(v, NumberValue):
            return self._point_number(t.c.value, v)
        if isinstance(v, UriValue):
            if c.modifier == "below":
                return starts_with(t.c.uri, v.uri)
            if c.modifier == "above":
                return literal(v.uri).like(t.c.uri + "%")
            return t.c.uri == v.uri[:VALUE]
        raise TypeError(f"no SQL for {v!r}")

    def _approx(self, low: datetime, high: datetime) -> tuple[datetime, datetime]:
        """The 'ap' range: widened by 10% of the distance from now (at least a day)."""
        distance = max(abs(self.now - low), abs(self.now - high))
        widen = max(distance / 10, timedelta(days=1))
        return shift(low, -widen), shift(high, widen)

    def _range_date(self, low: Any, high: Any, v: DateValue) -> ColumnElement[bool]:
        """Target range [low, high) against the parameter's range [v.low, v.high)."""
        ps, pe = v.low, v.high
        contained = and_(low >= ps, high <= pe)
        if v.prefix == "eq":
            return contained
        if v.prefix == "ne":
            return or_(low < ps, high > pe)
        if v.prefix == "gt":
            return high > pe
        if v.prefix == "lt":
            return low < ps
        if v.prefix == "ge":
            return or_(high > pe, contained)
        if v.prefix == "le":
            return or_(low < ps, contained)
        if v.prefix == "sa":
            return low >= pe
        if v.prefix == "eb":
            return high <= ps
        aps, ape = self._approx(ps, pe)     # ap: overlaps the widened range
        return and_(low < ape, high > aps)

    def _point_date(self, col: Any, v: DateValue) -> ColumnElement[bool]:
        """A stored instant (meta.lastUpdated) against [v.low, v.high)."""
        ps, pe = v.low, v.high
        tp = UTCDateTime()
        ps_, pe_ = literal(ps, tp), literal(pe, tp)
        return {
            "eq": lambda: and_(col >= ps_, col < pe_),
            "ne": lambda: or_(col < ps_, col >= pe_),
            "gt": lambda: col >= pe_, "sa": lambda: col >= pe_,
            "lt": lambda: col < ps_, "eb": lambda: col < ps_,
            "ge": lambda: col >= ps_, "le": lambda: col < pe_,
            "ap": lambda: and_(col >= literal(self._approx(ps, pe)[0], tp),
                               col < literal(self._approx(ps, pe)[1], tp)),
        }[v.prefix]()

    @staticmethod
    def _point_number(col: Any, v: NumberValue | QuantityValue) -> ColumnElement[bool]:
        value, low, high = float(v.value), float(v.low), float(v.high)
        if v.prefix == "eq":
            return and_(col >= low, col < high)
        if v.prefix == "ne":
            return or_(col < low, col >= high)
        if v.prefix in ("gt", "sa"):
            return col > value
        if v.prefix in ("lt", "eb"):
            return col < value
        if v.prefix == "ge":
            return col >= value
        if v.prefix == "le":
            return col <= value
        delta = abs(v.value) * Decimal("0.1")     # ap: within 10%
        return and_(col >= float(v.value - delta), col <= float(v.value + delta))
