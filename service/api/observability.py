"""Health, readiness and metrics over HTTP, and the per-request hooks that feed them.

- `GET /healthz`: the process is alive and answers (200 `{"status": "ok"}`); nothing else is
  checked, so an orchestrator restarts only a process that no longer answers.
- `GET /readyz`: the process should get traffic: the database answers, its schema is at the
  migrations this code ships (alembic heads), and the scheduler ticks when TOH_SCHEDULER asks
  for it. 200 `{"status": "ready", "checks": {name: "ok" | detail}}`, else 503 with an
  OperationOutcome holding one `transient` issue per failed check.
- `GET /metrics`: Prometheus' text format (service/observability/metrics.py); open like the two
  above, it holds no PHI (counts by interaction, type, status and flag code).

Every request is counted and timed (from before the first before_request hook to after the
commit) and runs with its request id in the logging context.
"""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, json, request

from service.api import audit
from service.api.context import services
from service.api.negotiation import FHIR_JSON
from service.clinical.codes import FLAG_DISPLAY
from service.observability import metrics
from service.observability.logs import REQUEST_ID
from service.store import TRANSIENT_ERRORS
from service.store.repository import Change

_FLAG_CODES = frozenset(FLAG_DISPLAY)   # the TOH CodeSystem's flag codes: the `code` label's values


def interaction() -> str:
    """The `interaction` label of this request: the FHIR restful interaction (read, search-type,
    create, transaction...), else the Flask endpoint (operations, health), else "unmatched"."""
    endpoint = request.endpoint
    if endpoint is None:
        return "unmatched"
    if endpoint in audit._SUBTYPES or endpoint == "fhir_rest.batch_or_transaction":  # noqa: SLF001
        return audit._subtype()[0]  # noqa: SLF001
    return endpoint


def readiness_checks() -> dict[str, str]:
    """Each check's result: "ok", or what is wrong (no PHI, no secrets)."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        svc.database.ping()
        checks["database"] = "ok"
    except TRANSIENT_ERRORS as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
    if checks["database"] == "ok":
        try:
            current, heads = svc.database.schema_revisions()
            if current == heads:
                checks["migrations"] = "ok"
            else:
                checks["migrations"] = (f"schema at {', '.join(sorted(current)) or 'nothing'}, code expects "
                                        f"{', '.join(sorted(heads))}; run `toh migrate`")
        except TRANSIENT_ERRORS as exc:
            checks["migrations"] = f"unknown ({type(exc).__name__})"
    else:
        checks["migrations"] = "unknown (no database)"
    if not svc.settings.scheduler:
        checks["scheduler"] = "ok"      # TOH_SCHEDULER=off: a `toh worker` sweeps
    elif svc.scheduler is None:
        checks["scheduler"] = "not started in this process (TOH_SCHEDULER is on)"
    elif not getattr(svc.scheduler, "running", False):
        checks["scheduler"] = "stopped"
    else:
        checks["scheduler"] = "ok"
    return checks


def _flags_raised(uow: Any) -> None:
    """After-commit step: count the Flags the rules created in this transaction, by code."""
    codes = []
    changes: list[Change] = uow.changes[uow.steps_started_at:]   # those of the before-commit steps
    for change in changes:
        if change.res_type == "Flag" and change.method == "POST" and change.resource is not None:
            for coding in change.resource.get("code", {}).get("coding", []):
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    codes.append(coding["code"])
                    break
    if codes:
        metrics.observe_flags_raised(codes, _FLAG_CODES)


def init_app(app: Flask) -> None:
    """Register the routes and hooks; call before the other blueprints' hooks so the timer starts
    first and stops last (after_request hooks run in reverse order)."""
    services_ = app.extensions["toh"]
    services_.database.add_after_commit(_flags_raised)

    @app.before_request
    def _start() -> None:
        g.toh_started = time.perf_counter()
        g.toh_log_token = REQUEST_ID.set(audit.request_id())

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("toh_started")
        if started is not None:
            args = request.view_args or {}
            metrics.observe_request(interaction(), args.get("res_type"), response.status_code,
                                    time.perf_counter() - started)
        return response

    @app.teardown_request
    def _forget_request_id(_exc: BaseException | None) -> None:
        token = g.pop("toh_log_token", None)
        if token is not None:
            REQUEST_ID.reset(token)

    @app.get("/healthz")
    def healthz() -> Response:
        """200 while the process answers."""
        return Response(json.dumps({"status": "ok"}), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        """200 when ready for traffic, else a 503 OperationOutcome naming what is not."""
        checks = readiness_checks()
        if all(value == "ok" for value in checks.values()):
            return Response(json.dumps({"status": "ready", "checks": checks}), mimetype="application/json")
        issues = [{"severity": "error", "code": "transient", "diagnostics": f"{name}: {value}"}
                  for name, value in checks.items() if value != "ok"]
        body = {"resourceType": "OperationOutcome", "issue": issues}
        return Response(json.dumps(body), status=503, mimetype=FHIR_JSON, headers={"Retry-After": "5"})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        """The metrics of every worker process of this instance, in Prometheus' text format."""
        metrics.run_probes(services().database)
        return Response(metrics.exposition(), mimetype=None, content_type=metrics.CONTENT_TYPE)
