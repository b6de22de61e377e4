"""The search index tables: one per value type, keyed by the resource's rid, its type and the
parameter code. Rows hold the current version only (the indexer replaces them on each write).

Indexes lead with (res_type, param, value...) so a criterion is a range scan of one index, and
end with rid so PostgreSQL can answer it from the index alone; search_reference also has
(target_type, target_id) for _revinclude and compartments. Created by the alembic revision
0002_search_index, 0003_token_case and 0004_composite (kept in step with this module by tests).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, Index, MetaData, String, Table, text

from service.store.schema import RowId, UTCDateTime

metadata = MetaData()

VALUE = 255   # the extractor cuts strings to this length
# Byte-order ("C") collation on PostgreSQL so a prefix search is a plain index range scan.
Sortable = String(VALUE).with_variant(String(VALUE, collation="C"), "postgresql")


def _table(name: str, *columns: Column) -> Table:  # type: ignore[type-arg]
    return Table(name, metadata,
                 Column("rid", RowId, nullable=False),
                 Column("res_type", String(64), nullable=False),
                 Column("param", String(64), nullable=False),
                 *columns)


search_token = _table("search_token",
                      Column("system", String(VALUE)), Column("code", String(VALUE)),
                      Column("text", Sortable),
                      # the case-folded code of a string-typed element (0003_token_case)
                      Column("code_ci", String(VALUE)))
search_string = _table("search_string",
                       Column("norm", Sortable, nullable=False),
                       Column("exact", String(VALUE), nullable=False))
search_reference = _table("search_reference",
                          Column("target_type", String(64)), Column("target_id", String(64)),
                          Column("url", String(VALUE)))
search_date = _table("search_date",
                     Column("low", UTCDateTime(), nullable=False),
                     Column("high", UTCDateTime(), nullable=False))
search_quantity = _table("search_quantity",
                         Column("value", Float, nullable=False), Column("system", String(VALUE)),
                         Column("code", String(VALUE)), Column("unit", String(VALUE)))
search_number = _table("search_number", Column("value", Float, nullable=False))
search_uri = _table("search_uri", Column("uri", Sortable, nullable=False))
# composite parameters (0004_composite): the token component, then the second in its kind's columns
search_composite = _table("search_composite",
                          Column("system", String(VALUE)), Column("code", String(VALUE)),
                          Column("v_system", String(VALUE)), Column("v_code", String(VALUE)),
                          Column("v_unit", String(VALUE)), Column("v_value", Float),
                          Column("v_norm", String(VALUE)),
                          Column("v_low", UTCDateTime()), Column("v_high", UTCDateTime()),
                          Column("v_target_type", String(64)), Column("v_target_id", String(64)))

TABLES: dict[str, Table] = {
    "token": search_token, "string": search_string, "reference": search_reference,
    "date": search_date, "quantity": search_quantity, "number": search_number, "uri": search_uri,
    "composite": search_composite,
}

# (index name, table, columns)
INDEXES: list[tuple[str, Table, tuple[str, ...]]] = [
    ("ix_search_token_code", search_token, ("res_type", "param", "code", "system", "rid")),
    ("ix_search_token_system", search_token, ("res_type", "param", "system", "rid")),
    ("ix_search_token_code_ci", search_token, ("res_type", "param", "code_ci", "rid")),
    ("ix_search_string_norm", search_string, ("res_type", "param", "norm", "rid")),
    ("ix_search_reference_target", search_reference,
     ("res_type", "param", "target_id", "target_type", "rid")),
    ("ix_search_reference_url", search_reference, ("res_type", "param", "url", "rid")),
    ("ix_search_reference_rev", search_reference, ("target_type", "target_id", "res_type", "param", "rid")),
    ("ix_search_date_range", search_date, ("res_type", "param", "low", "high", "rid")),
    ("ix_search_quantity_value", search_quantity, ("res_type", "param", "value", "rid")),
    ("ix_search_number_value", search_number, ("res_type", "param", "value", "rid")),
    ("ix_search_uri_uri", search_uri, ("res_type", "param", "uri", "rid")),
    ("ix_search_composite_code", search_composite, ("res_type", "param", "code", "system", "rid")),
]
INDEXES += [(f"ix_{t.name}_rid", t, ("rid",)) for t in TABLES.values()]

# Partial indexes (index name: the column a row must have to be in it), 0009_partial_indexes.
# These columns are empty in most rows (of a Synthea-shaped store, url in 1% of the references
# and code_ci in 8% of the tokens), and every criterion that uses the index compares the column
# with a value (url = ?, code_ci = ?), which implies it is not NULL, so SQLite and PostgreSQL
# both use the partial index for it
# (https://www.sqlite.org/partialindex.html#queries_using_partial_indexes,
# https://www.postgresql.org/docs/15/indexes-partial.html). The rows without it had filled
# pages of these B-trees at every write for nothing: about 140 of the 1,260 pages a
# 186-resource transaction Bundle wrote to SQLite's WAL, under its write lock (issue 11).
# ix_search_token_system stays whole although system is empty in 64% of the tokens: a token
# searched with an empty system (`code=|x`: system IS NULL AND (code = ? OR code_ci = ?)) is
# answered on SQLite from its NULL range; partial, SQLite read every (res_type, param) row of
# ix_search_token_code instead (57 ms against 0.02 on 400,000 rows).
PARTIAL: dict[str, str] = {
    "ix_search_token_code_ci": "code_ci",
    "ix_search_reference_url": "url",
}


def partial_where(index: str) -> dict[str, Any]:
    """The keyword arguments that make index partial (sqlite_where, postgresql_where) for
    sqlalchemy.Index or alembic's create_index; none for a full index."""
    column = PARTIAL.get(index)
    if column is None:
        return {}
    condition = text(f"{column} IS NOT NULL")
    return {"sqlite_where": condition, "postgresql_where": condition}


for _name, _table_, _cols in INDEXES:
    Index(_name, *(_table_.c[c] for c in _cols), **partial_where(_name))
