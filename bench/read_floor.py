"""The read floor of bench/run.py: a bare Flask app that fetches one row of the service's own
``resources`` table by its key (type, id) and returns its stored JSON. No token, no audit, no
negotiation: what any service pays to answer a read over HTTP from the same database. Run by
gunicorn with the same worker set-up as `toh serve`:

    FLOOR_DATABASE_URL=sqlite:///... gunicorn -w 2 --threads 4 -k gthread 'bench.read_floor:create_app()'
"""
from __future__ import annotations

import os

from flask import Flask, Response, abort
from sqlalchemy import text

from service.store.db import make_engine

_READ = text("SELECT version, content FROM resources WHERE res_type = :t AND res_id = :i AND NOT deleted")


def create_app() -> Flask:
    """The floor app on $FLOOR_DATABASE_URL (a database the service has written)."""
    engine = make_engine(os.environ["FLOOR_DATABASE_URL"])
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/fhir/<res_type>/<res_id>")
    def read(res_type: str, res_id: str) -> Response:
        with engine.connect() as conn:
            row = conn.execute(_READ, {"t": res_type, "i": res_id}).first()
        if row is None:
            abort(404)
        response = Response(row.content, mimetype="application/fhir+json")
        response.headers["ETag"] = f'W/"{row.version}"'
        return response

    return app
