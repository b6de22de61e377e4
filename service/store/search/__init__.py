"""The search index in the database: index tables, the write hook that fills them, compiling
parsed queries to SQLAlchemy Core, and running searches with stable keyset paging.

Integration (create_app): ``engine = SearchEngine(base_urls=[settings.base_url], clock=clock)``,
``engine.init_database(database)`` (write hook + conditional-request finder), and
``Services.search = engine`` (CapabilityStatement: ``engine.capability_params(type)``).
"""
from __future__ import annotations

from service.store.search.engine import Cursor, Found, SearchEngine, SearchResult
from service.store.search.indexer import SearchIndexer

__all__ = ["Cursor", "Found", "SearchEngine", "SearchIndexer", "SearchResult"]
