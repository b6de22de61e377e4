"""The HTTP edge: Flask blueprints for the FHIR REST API, its operations and errors."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from service.api import (adherence, audit, audit_events, auth, bulk_export, cds_hooks, context, errors, metadata,
                         negotiation, observability, plan_apply, rest, search, toh_assessment, validate)


class ServiceFlask(Flask):
    """Flask, with ensure_sync's answer kept per function: Flask asks it (inspect's coroutine
    check) of every hook and view of every request, about ten times for a read. A function
    that cannot be a dict key, or one past the first thousand, is asked as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synced: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._synced[func]
        except (KeyError, TypeError):
            pass
        found = super().ensure_sync(func)
        try:
            if len(self._synced) < 1000:
                self._synced[func] = found
        except TypeError:   # unhashable
            pass
        return found


def init_app(app: Flask) -> None:
    """Register the FHIR API, error handling and the per-request transaction."""
    observability.init_app(app)   # first: its timer starts before, and stops after, every other hook
    errors.init_app(app)
    audit.init_app(app)     # after_request runs in reverse: the request log comes last
    context.init_app(app)
    auth.init_app(app)

    @app.before_request
    def _negotiate() -> None:
        from flask import request
        if request.path.startswith(context.FHIR_PREFIX):
            negotiation.check_url_text()
        if request.path.startswith(context.FHIR_PREFIX) and request.endpoint not in (
                adherence.OWN_FORMATS | bulk_export.OWN_FORMATS):
            negotiation.check_accept()

    app.register_blueprint(metadata.bp, url_prefix=context.FHIR_PREFIX)
    app.register_blueprint(audit_events.bp, url_prefix=context.FHIR_PREFIX)
    app.register_blueprint(adherence.bp, url_prefix=context.FHIR_PREFIX)
    app.register_blueprint(toh_assessment.bp, url_prefix=context.FHIR_PREFIX)
    app.register_blueprint(validate.bp, url_prefix=context.FHIR_PREFIX)
    app.register_blueprint(plan_apply.bp, url_prefix=context.FHIR_PREFIX)
    app.register_blueprint(bulk_export.bp, url_prefix=context.FHIR_PREFIX)
    rest.init_app(app)
    search.init_app(app)
    cds_hooks.init_app(app)

