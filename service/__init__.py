"""TOH follow-up service: a FHIR R4 server that tracks transient osteoporosis of the hip.

`create_app()` is the WSGI application factory (`gunicorn 'service:create_app()'`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from service.clock import Clock, SystemClock
from service.config import Settings


def create_app(config: Settings | Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the application from Settings (default: the environment) and an optional clock."""
    from service import api
    from service.api.context import Services
    from service.store import Database

    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env().with_overrides(config or {})
    clock = clock or SystemClock()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    database = Database(settings.database_url, clock=clock, echo=settings.sql_echo)
    if settings.migrate_on_start:
        database.migrate()
    app.extensions["toh"] = Services(settings=settings, database=database, clock=clock)
    api.init_app(app)
    return app
