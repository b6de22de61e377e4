"""The storage floor of bench_ingest.py: a bare Flask app that stores a transaction Bundle's
entries as JSON rows (one executemany, one transaction) and answers a transaction-response.

No validation, no index, no rules: what any service has to pay to take a bundle over HTTP
and put it in the same database. Run by gunicorn like the service:

    FLOOR_DATABASE_URL=sqlite:///... gunicorn -w 2 'bench.ingest_floor:create_app()'
"""
from __future__ import annotations

import json
import os
import uuid

from flask import Flask, Response, request
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, text

from service.store.db import make_engine

metadata = MetaData()
floor_resources = Table("floor_resources", metadata,
                        Column("rid", Integer, primary_key=True, autoincrement=True),
                        Column("res_type", String(64), nullable=False),
                        Column("res_id", String(64), nullable=False),
                        Column("content", Text, nullable=False))
_INSERT = insert(floor_resources)


def create_app() -> Flask:
    """The floor app on $FLOOR_DATABASE_URL (the table is created if missing)."""
    engine = make_engine(os.environ["FLOOR_DATABASE_URL"])
    with engine.connect() as conn:
        conn.execution_options(toh_write=True)
        if engine.dialect.name == "postgresql":   # both workers start at once: one creates, the other waits
            conn.execute(text("SELECT pg_advisory_xact_lock(7100)"))
        metadata.create_all(conn, checkfirst=True)
        conn.commit()
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.post("/fhir")
    def transaction() -> Response:
        bundle = json.loads(request.get_data())
        rows, responses = [], []
        for entry in bundle.get("entry") or []:
            resource = entry["resource"]
            res_id = str(uuid.uuid4())
            rows.append({"res_type": resource["resourceType"], "res_id": res_id,
                         "content": json.dumps({**resource, "id": res_id}, separators=(",", ":"))})
            responses.append({"response": {"status": "201 Created",
                                           "location": f"{resource['resourceType']}/{res_id}/_history/1"}})
        with engine.connect() as conn:
            conn = conn.execution_options(toh_write=True)
            with conn.begin():
                conn.execute(_INSERT, rows)
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}
        return Response(json.dumps(body), mimetype="application/fhir+json")

    return app
