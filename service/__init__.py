"""TOH follow-up service: a FHIR R4 server that tracks transient osteoporosis of the hip.

`create_app()` is the WSGI application factory (`gunicorn 'service:create_app()'`).
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from flask import Flask

from service.clock import Clock, SystemClock
from service.config import Settings


def create_app(config: Settings | Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the application from Settings (default: the environment) and an optional clock.

    Raises ConformanceError if fhir_profiles/ cannot be loaded, SchemaTooNew if a newer release
    migrated the database, and the database's errors if it cannot be migrated.
    """
    from service import api, web
    from service.api.context import Services
    from service.fhir.search.query import SearchLimits
    from service.audit import ProvenanceStep
    from service.security import TokenVerifier
    from service.store import Database
    from service.store.search import SearchEngine
    from service.workflows.care_plans import CarePlanner, Policy
    from service.workflows.clinical_watch import ClinicalWatch
    from service.workflows.conformance import (guide_keys, install_guide, profile_validator,
                                               side_as_the_rules_read_it)

    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env().with_overrides(config or {})
    clock = clock or SystemClock()
    verifier = TokenVerifier(settings.token_settings())  # a weak secret stops the start here
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    database = Database(settings.database_url, clock=clock, echo=settings.sql_echo,
                        statement_timeout=settings.statement_timeout)
    conformance = _guide()
    side_as_the_rules_read_it(conformance, _terminology())
    limits = SearchLimits(settings.max_search_params, settings.max_search_values, settings.max_chain_depth)
    search = SearchEngine(_search_parameters(), base_urls=[settings.base_url] if settings.base_url else [],
                          default_count=settings.default_page_size, max_count=settings.max_page_size, clock=clock,
                          limits=limits, max_index_entries=settings.max_index_entries)
    search.init_database(database)
    database.add_validator(profile_validator(conformance))
    database.set_read_only(guide_keys(conformance))
    clinical = ClinicalWatch(_terminology(), base_urls=(settings.base_url,) if settings.base_url else ())
    database.add_before_commit(clinical.before_commit)
    planner = CarePlanner(clinical, _terminology(), Policy(settings.followup_plan, settings.followup_lead_days,
                                                           settings.overdue_grace_days))
    database.add_before_commit(planner.before_commit)
    database.add_due_handler("task", planner.advance_task)
    database.add_due_handler("patient", planner.advance_patient)
    database.add_before_commit(ProvenanceStep().before_commit)   # after the steps that write
    if settings.migrate_on_start:
        database.migrate()      # raises SchemaTooNew on a newer release's schema
        install_guide(database, conformance)
    else:
        _refuse_newer_schema(database)

    app.extensions["toh"] = Services(settings=settings, database=database, clock=clock,
                                     conformance=conformance, search=search, clinical=clinical,
                                     planner=planner, verifier=verifier)
    api.init_app(app)
    web.init_app(app)
    return app


def _refuse_newer_schema(database: Any) -> None:
    """Raise SchemaTooNew if a newer release migrated the database. An unreachable database
    does not stop the start (it may come up later; /healthz says 503 meanwhile)."""
    from sqlalchemy.exc import OperationalError
    try:
        database.check_schema()
    except OperationalError:
        import logging
        logging.getLogger(__name__).warning("the database cannot be reached; its schema was not checked")


@lru_cache(maxsize=1)
def _guide() -> Any:
    """The TOH implementation guide, loaded once per process (it is immutable)."""
    from service.fhir.profiles import Conformance
    return Conformance.load()


@lru_cache(maxsize=1)
def _terminology() -> Any:
    """The rules' ValueSet membership, on the guide's own (one reading of the ValueSets)."""
    from service.clinical import Terminology
    return Terminology.from_value_sets(_guide().terminology.value_sets)


@lru_cache(maxsize=1)
def _search_parameters() -> Any:
    """R4's search parameters plus the guide's own, built once per process (immutable)."""
    from service.fhir.search.definitions import SearchParameterRegistry
    guide = [r for r in _guide().resources if r["resourceType"] == "SearchParameter"]
    return SearchParameterRegistry.load().with_search_parameters(guide)
