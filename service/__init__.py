"""TOH follow-up service: a FHIR R4 server that tracks transient osteoporosis of the hip.

`create_app()` is the WSGI application factory (`gunicorn 'service:create_app()'`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
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
    from service.workflows.bulk_export import BulkExporter
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
    app = api.ServiceFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    database = Database(settings.database_url, clock=clock, echo=settings.sql_echo,
                        statement_timeout=settings.statement_timeout, audit_fsync=settings.audit_fsync)
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
    from service.notify import EndpointPolicy
    from service.store.notifications import SubscriptionMirror
    from service.workflows.notifications import OutboxStep, SubscriptionRules
    policy = EndpointPolicy.from_settings(settings.webhook_allowlist, settings.webhook_allow_http)
    mirror = SubscriptionMirror()
    database.add_validator(SubscriptionRules(search.parse, policy))
    database.add_sealer("Subscription", mirror.seal)
    database.add_hook(mirror)
    database.add_before_commit(OutboxStep(search.find_ids, _public_base(settings)).before_commit)   # last
    from service.observability import metrics
    from service.workflows.delivery import outbox_probe
    metrics.add_scrape_probe(outbox_probe)   # /metrics: the outbox's depth and oldest age
    if settings.migrate_on_start:
        database.migrate()      # raises SchemaTooNew on a newer release's schema
        install_guide(database, conformance)
        try:
            database.settle_audit()   # what a killed process left in the audit journal (SQLite)
        except Exception:  # noqa: BLE001 - kept in the journal for the next drain
            logging.getLogger(__name__).warning("draining the audit journal failed", exc_info=True)
    else:
        _refuse_newer_schema(database)

    exporter = BulkExporter(database, settings.export_folder, search.in_patient_compartments,
                            expiry=timedelta(hours=settings.export_expiry_hours), clock=clock)
    app.extensions["toh"] = Services(settings=settings, database=database, clock=clock,
                                     conformance=conformance, search=search, clinical=clinical,
                                     planner=planner, verifier=verifier, channels=channels(settings, policy),
                                     exporter=exporter)
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


def _public_base(settings: Settings) -> str:
    """The FHIR base URL notifications and emails point at (TOH_BASE_URL, else host and port)."""
    return settings.base_url or f"http://{settings.host}:{settings.port}/fhir"


def channels(settings: Settings, policy: Any) -> Any:
    """The delivery channels (service.workflows.delivery.Channels) the settings describe."""
    from service.notify import RestHookSender, SmtpSender, SmtpSettings
    from service.workflows.delivery import Channels
    rest_hook = RestHookSender(policy, connect_timeout=settings.webhook_connect_timeout,
                               read_timeout=settings.webhook_read_timeout,
                               max_response_bytes=settings.webhook_max_response_bytes)
    smtp = SmtpSender(SmtpSettings(settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_user,
                                   settings.smtp_password, settings.smtp_starttls))
    return Channels(rest_hook, smtp, _public_base(settings), settings.patient_link, settings.email_patient_name)


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
