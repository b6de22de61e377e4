"""GET [base]/CarePlan/$adherence-report?from=YYYY-MM-DD&to=YYYY-MM-DD&_format=csv|json: was each
care plan active in the period followed? (service.audit.adherence computes it; this view reads
the plans, their Tasks, the patients' Flags and the addressed Conditions, and renders CSV for
spreadsheets or JSON for tools.) Needs read access to CarePlan, Task, Flag and Condition across
patients (the auditor role has it); nothing is stored."""
from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from flask import Blueprint, Response, json, request

from service.api.auth import guard
from service.api.context import current_uow, services
from service.audit.adherence import adherence, csv_rows
from service.fhir.errors import BadRequest, Forbidden
from service.security import Reach
from service.store import Repository

bp = Blueprint("adherence", __name__)
OWN_FORMATS = frozenset({"adherence.report"})   # endpoints that answer CSV as well as JSON
CSV_FORMATS = frozenset({"csv", "text/csv"})
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
READS = ("CarePlan", "Task", "Flag", "Condition")


def _date(name: str) -> date:
    value = request.args.get(name)
    if not value:
        raise BadRequest(f"The report needs {name}=YYYY-MM-DD", code="required", expression=[name])
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"{name}={value} is not a date (YYYY-MM-DD)", expression=[name]) from exc


def _format() -> str:
    asked = request.args.get("_format")
    if asked is None:
        accept = request.accept_mimetypes
        return "csv" if accept and accept.best_match(["application/json", "text/csv"]) == "text/csv" else "json"
    if asked in CSV_FORMATS:
        return "csv"
    if asked in JSON_FORMATS:
        return "json"
    raise BadRequest(f"_format={asked}: the report comes as csv or json", code="not-supported",
                     expression=["_format"])


BATCH = 50   # values per search (a search's values are bounded)


def _all(repo: Repository, res_type: str, criteria: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [s.resource() for s in repo.read_many(res_type, repo.find_ids(res_type, criteria))]


def _referring(repo: Repository, res_type: str, param: str, targets: list[str]) -> list[dict[str, Any]]:
    """res_type resources whose param refers to any of targets (searched in batches)."""
    found: dict[str, dict[str, Any]] = {}
    for at in range(0, len(targets), BATCH):
        for resource in _all(repo, res_type, [(param, ",".join(targets[at:at + BATCH]))]):
            found[str(resource["id"])] = resource
    return list(found.values())


def report() -> Response:
    """The adherence report; raises BadRequest (dates, format), Forbidden (scopes)."""
    for res_type in READS:
        if guard().require("s", res_type) is not Reach.ALL:
            raise Forbidden("The adherence report spans patients; a patient/ scope cannot ask for it")
    start, end = _date("from"), _date("to")
    if end < start:
        raise BadRequest("to is before from", expression=["to"])
    fmt = _format()
    repo = current_uow().repo
    plans = _all(repo, "CarePlan", [("date", f"ge{start.isoformat()}"), ("date", f"le{end.isoformat()}")])
    plan_refs = [f"CarePlan/{p['id']}" for p in plans]
    patients = sorted({str(p.get("subject", {}).get("reference")) for p in plans if p.get("subject")})
    conditions = sorted({str(a.get("reference")).split("Condition/")[-1] for p in plans
                         for a in p.get("addresses") or [] if "Condition/" in str(a.get("reference"))})
    tasks = _referring(repo, "Task", "based-on", plan_refs)
    flags = _referring(repo, "Flag", "patient", patients)
    addressed = [s.resource() for s in repo.read_many("Condition", conditions)]
    today = services().clock.now().date()
    lines = adherence(plans, tasks, flags, addressed, start, end, today)
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(csv_rows(lines))
        response = Response(out.getvalue(), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="adherence-{start}-{end}.csv"'
        return response
    body = {"from": start.isoformat(), "to": end.isoformat(), "generated": services().clock.now().isoformat(),
            "carePlans": [line.as_json() for line in lines]}
    return Response(json.dumps(body), mimetype="application/json")


bp.add_url_rule("/CarePlan/$adherence-report", "report", report, methods=["GET"])
