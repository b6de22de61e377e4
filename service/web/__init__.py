"""The clinic staff pages under /ui (server-rendered with Jinja2, no JavaScript): sign-in with
a token or through an OpenID Connect provider (service.security.oidc), the worklist, patient search and each patient's timeline as inline SVG.

Views (views.py) are thin: they call plain functions that read through the store and the
clinical engine with the signed-in principal's guard (reading, worklist, patient, patients,
timeline) or write through the repository (actions). Flask stays in views.py and session.py.
"""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the pages, their session cookie and CSRF protection (Flask-WTF) on the app, and
    the OpenID Connect client when TOH_OIDC_ISSUER is set (app.extensions["toh_oidc"]).
    CSRF is checked on the pages' POSTs only (the FHIR API takes bearer tokens, not cookies).
    Raises ValueError for incomplete OpenID Connect settings."""
    from service.security.oidc import OidcClient
    from service.web import session, views

    svc = app.extensions["toh"]
    oidc = svc.settings.oidc_settings()
    app.extensions["toh_oidc"] = OidcClient(oidc) if oidc is not None else None
    session.configure(app, svc.settings, svc.verifier)
    app.config.update(WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None)
    views.csrf.init_app(app)
    app.register_blueprint(views.bp)
