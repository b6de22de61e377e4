"""Per-request access to the application's services and the request's unit of work.

Each request gets one transaction (opened on first use, write-locked for methods that
write), committed after the view succeeds and rolled back otherwise, so everything a
request writes — resources, index rows, flags, later the outbox and audit rows — lands
together or not at all.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, request

from service.clock import Clock
from service.config import FHIR_PREFIX, Settings
from service.fhir.errors import FhirError, ServiceUnavailable
from service.store import TRANSIENT_ERRORS, Database, StoredResource, UnitOfWork

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler
    from service.fhir.profiles import Conformance
    from service.security import TokenVerifier
    from service.store.search import SearchEngine
    from service.workflows.care_plans import CarePlanner
    from service.workflows.bulk_export import BulkExporter
    from service.workflows.clinical_watch import ClinicalWatch
    from service.workflows.delivery import Channels

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Services:
    """What the application is made of; stored in app.extensions['toh']."""

    settings: Settings
    database: Database
    clock: Clock
    conformance: Conformance
    search: SearchEngine
    clinical: ClinicalWatch
    planner: CarePlanner
    verifier: TokenVerifier
    channels: Channels
    exporter: BulkExporter
    scheduler: BaseScheduler | None = None   # the running APScheduler of this process (`toh serve` with TOH_SCHEDULER on)


def services() -> Services:
    """The current application's services."""
    return current_app.extensions["toh"]


def current_uow() -> UnitOfWork:
    """The request's unit of work, opened on first use."""
    uow = g.get("toh_uow")
    if uow is None:
        stack = contextlib.ExitStack()
        g.toh_uow_stack = stack
        write = request.method not in READ_METHODS
        uow = stack.enter_context(services().database.unit_of_work(write=write))
        uow.principal = g.get("toh_principal")
        g.toh_uow = uow
    return uow


def _statements() -> Any:
    """The request's connection for statements that stand alone (Database.statements), taken
    from the pool on first use and returned at the end of the request."""
    found = g.get("toh_statements")
    if found is None:
        stack: contextlib.ExitStack | None = g.get("toh_uow_stack")
        if stack is None:
            stack = g.toh_uow_stack = contextlib.ExitStack()
        found = g.toh_statements = stack.enter_context(services().database.statements())
    return found


def read_current(res_type: str, res_id: str) -> StoredResource:
    """The current version of a resource (Repository.read): in the request's unit of work if it
    has one, else by a single SELECT outside any transaction (Database.read_current), which
    sees one committed state as a read-only unit of work would, for less. Raises NotFound,
    Gone, and OperationalError when the database is away."""
    uow: UnitOfWork | None = g.get("toh_uow")
    if uow is not None:
        return uow.repo.read(res_type, res_id)
    return services().database.read_current(res_type, res_id, _statements())


def base_url() -> str:
    """The FHIR base URL clients use (configured, or from the request)."""
    configured = services().settings.base_url
    return configured.rstrip("/") if configured else request.url_root.rstrip("/") + FHIR_PREFIX


def request_url() -> str:
    """This request's URL (without its query) under the FHIR base URL clients use."""
    return base_url() + request.path.removeprefix(FHIR_PREFIX)


def init_app(app: Flask) -> None:
    """Commit the request's transaction after a successful view; roll back otherwise."""

    @app.after_request
    def _commit(response: Response) -> Response:
        from service.api import audit
        from service.api.errors import outcome_response
        uow: UnitOfWork | None = g.get("toh_uow")
        row = audit.audit_row(audit.describe(response)) if audit.audited() else None
        if uow is not None and response.status_code < 400 and not uow.committed:
            with_write = row is not None and request.method not in READ_METHODS
            if with_write and row is not None:
                uow.audit_events.append(row)   # lands with the write, or not at all
            try:
                uow.commit()
                row = None if with_write else row
            except FhirError as exc:
                response = outcome_response(exc)
                row = audit.audit_row(audit.describe(response)) if row is not None else None
        if row is not None:  # reads and refusals: durable before the response leaves
            if uow is not None and not uow.committed:
                uow.conn.rollback()   # a refused write lets go of the write lock first
            try:
                services().database.append_audit([row], via=uow.conn if uow is not None else g.get("toh_statements"))
            except TRANSIENT_ERRORS:
                return outcome_response(ServiceUnavailable("The audit trail cannot be written; try again"))
        return response

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        stack: contextlib.ExitStack | None = g.pop("toh_uow_stack", None)
        g.pop("toh_uow", None)
        g.pop("toh_statements", None)
        if stack is not None:
            stack.close()
