"""FHIR search, the pure part: parameter definitions, value helpers, write-time extraction
of index rows and parsing of search requests. No database, no Flask."""
from __future__ import annotations

from service.fhir.search.definitions import SearchParameterRegistry, SearchParamDef, TypeParam
from service.fhir.search.extract import Extractor, IndexRows

__all__ = ["Extractor", "IndexRows", "SearchParamDef", "SearchParameterRegistry", "TypeParam"]
