"""FHIR Bulk Data export (Bulk Data Access IG v2, https://hl7.org/fhir/uv/bulkdata/export.html),
in the asynchronous request pattern (https://hl7.org/fhir/R4/async.html):

    GET [base]/$export, [base]/Patient/$export, [base]/Group/[id]/$export
        Prefer: respond-async; _type, _since, _outputFormat (application/fhir+ndjson)
        -> 202, Content-Location: [base]/$export-status/[job]
    GET [base]/$export-status/[job]
        -> 202 with X-Progress while it runs; 200 with the manifest (application/json) when
           complete; 500 with an OperationOutcome if it failed; 404 once deleted or expired
    DELETE [base]/$export-status/[job]    -> 202: cancelled, its files deleted
    GET [base]/$export-file/[job]/[Type].ndjson -> application/fhir+ndjson

A token with a system/ scope that reads is needed (a bulk export reaches every patient); with
`_type`, each type must be granted by a system/ scope; without, every stored type the system/
scopes read (a wildcard: all). Patient- and Group-level exports keep to the Patient compartment
of every patient, or of the Group's members. Status and files answer only the subject that
asked (404 to anyone else). The job runs outside the request (service.workflows.bulk_export).
"""
from __future__ import annotations

import re
import shutil
from datetime import datetime

from flask import Blueprint, Response, request, send_file
from werkzeug.http import http_date

from service.api.auth import guard, principal
from service.api.context import base_url, current_uow, services
from service.api.negotiation import json_response
from service.fhir.errors import BadRequest, Forbidden, Issue, NotFound, operation_outcome
from service.fhir.r4_types import R4_RESOURCE_TYPES
from service.fhir.resources import check_id
from service.store.bulk import ExportJob, ExportJobs
from service.workflows.bulk_export import NDJSON, OUTPUT_FORMATS

bp = Blueprint("bulk_export", __name__)
OWN_FORMATS = frozenset({"bulk_export.output_file"})   # answers NDJSON, whatever JSON-only negotiation says
UNSUPPORTED = ("_elements", "patient", "includeAssociatedData", "_typeFilter")
_FILE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}\.ndjson$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _system_readers() -> list[str]:
    """The types the token's system/ scopes read ('*' for all); raises Forbidden if none."""
    who = principal()
    types = [s.res_type for s in (who.scopes if who else ()) if s.context == "system" and "r" in s.actions]
    if not types:
        raise Forbidden("Bulk Data export needs a system/ scope that reads (e.g. system/*.rs)",
                        scope="system/*.rs")
    return types


def _types(readers: list[str]) -> list[str] | None:
    """The _type parameter, checked against R4 and the token (None: every type it reads).
    Raises BadRequest for an unknown type, Forbidden for one no system/ scope reads."""
    raw = [t.strip() for value in request.args.getlist("_type") for t in value.split(",") if t.strip()]
    if not raw:
        return None if "*" in readers else sorted(set(readers) - {"AuditEvent"})
    for res_type in raw:
        if res_type not in R4_RESOURCE_TYPES:
            raise BadRequest(f"_type names {res_type!r}, which is not an R4 resource type", expression=["_type"])
        if res_type == "AuditEvent":
            raise BadRequest("AuditEvent is not exported in bulk: search it at [base]/AuditEvent")
        if "*" not in readers and res_type not in readers:
            raise Forbidden(f"No system/ scope of the token reads {res_type}", scope=f"system/{res_type}.rs")
    return sorted(set(raw))


def _since() -> str | None:
    value = request.args.get("_since")
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"_since must be a FHIR instant, got {value!r}", expression=["_since"]) from exc
    if moment.tzinfo is None or "T" not in value:
        raise BadRequest("_since must be an instant with a time zone, e.g. 2025-01-01T00:00:00Z",
                         expression=["_since"])
    return moment.isoformat()


def _kick_off(level: str, patients: list[str] | None = None) -> Response:
    """Check the request, queue the job, start it; 202 with Content-Location.
    Raises BadRequest (no Prefer: respond-async, a bad or unsupported parameter), Forbidden."""
    prefer = [p.strip().lower() for value in request.headers.getlist("Prefer") for p in value.split(",")]
    if "respond-async" not in prefer:
        raise BadRequest("$export runs asynchronously: send Prefer: respond-async")
    for name in UNSUPPORTED:
        if name in request.args:
            raise BadRequest(f"$export parameter {name} is not supported by this server", expression=[name])
    output_format = request.args.get("_outputFormat")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise BadRequest(f"_outputFormat {output_format!r} is not supported; use application/fhir+ndjson",
                         expression=["_outputFormat"])
    readers = _system_readers()
    svc = services()
    params = {"level": level, "types": _types(readers), "since": _since(), "patients": patients,
              "compartment_types": ["Patient", *svc.search.compartment_types("Patient")], "base": base_url()}
    query = request.query_string.decode("utf-8", "replace")
    kick_off_url = base_url() + request.path.removeprefix("/fhir") + (f"?{query}" if query else "")
    who = principal()
    with svc.database.unit_of_work() as uow:
        job_id = ExportJobs(uow.conn, svc.database.dialect).create(
            request=kick_off_url, params=params, owner=who.subject if who else None, now=svc.clock.now())
        uow.conn.commit()
        uow.committed = True
    svc.exporter.start(job_id)
    outcome = operation_outcome([Issue("information", "informational", "The export has started; poll Content-Location")])
    response = json_response(outcome, status=202)
    response.headers["Content-Location"] = f"{base_url()}/$export-status/{job_id}"
    return response


@bp.get("/$export")
def export_system() -> Response:
    """System-level export: every resource of the types asked (see module docstring)."""
    return _kick_off("system")


@bp.get("/Patient/$export")
def export_patients() -> Response:
    """Patient-level export: the Patient compartments of every patient."""
    return _kick_off("patient")


@bp.get("/Group/<group_id>/$export")
def export_group(group_id: str) -> Response:
    """Group-level export: the Patient compartments of the Group's active members.
    Raises NotFound / Gone for an unknown or deleted Group, Forbidden without Group read."""
    check_id(group_id)
    _system_readers()
    guard().require("r", "Group")
    group = current_uow().repo.read("Group", group_id).resource()
    members = []
    for member in group.get("member") or []:
        reference = str((member.get("entity") or {}).get("reference") or "")
        parts = reference.split("/_history/")[0].split("/")
        if not member.get("inactive") and len(parts) >= 2 and parts[-2] == "Patient":
            members.append(parts[-1])
    return _kick_off("group", sorted(set(members)))


def _own_job(job_id: str) -> ExportJob:
    """The job, if the token's subject asked for it; raises NotFound otherwise (or if gone)."""
    _system_readers()
    job = ExportJobs(current_uow().conn, services().database.dialect).get(job_id) if _JOB_ID.match(job_id) else None
    who = principal()
    if job is None or job.status == "cancelled" or job.owner != (who.subject if who else None):
        raise NotFound(f"No export job {job_id} (finished jobs are deleted when their files expire)")
    return job


@bp.get("/$export-status/<job_id>")
def status(job_id: str) -> Response:
    """202 with X-Progress while the job runs, 200 with its manifest when done, 500 with an
    OperationOutcome if it failed. Raises NotFound."""
    job = _own_job(job_id)
    if job.status in ("pending", "running"):
        response = Response(status=202)
        response.headers["X-Progress"] = job.progress or job.status
        response.headers["Retry-After"] = "2"
        return response
    if job.status == "failed":
        return json_response(operation_outcome([Issue("error", "exception", f"The export failed: {job.error}")]),
                             status=500)
    response = json_response(job.manifest or {})
    response.mimetype = "application/json"
    if job.expires_at is not None:
        response.headers["Expires"] = http_date(job.expires_at)
    return response


@bp.delete("/$export-status/<job_id>")
def cancel(job_id: str) -> Response:
    """Cancel a job and delete its files: 202. Raises NotFound."""
    job = _own_job(job_id)
    svc = services()
    uow = current_uow()
    ExportJobs(uow.conn, svc.database.dialect).cancel(job.id, svc.clock.now())
    uow.commit()
    if job.status != "running":          # a running job's holder removes its own files
        shutil.rmtree(svc.exporter.job_folder(job.id), ignore_errors=True)
    return json_response(operation_outcome([Issue("information", "informational", "Export cancelled")]), status=202)


@bp.get("/$export-file/<job_id>/<name>")
def output_file(job_id: str, name: str) -> Response:
    """One NDJSON file of a complete job (requiresAccessToken: the same subject's token).
    Raises NotFound."""
    job = _own_job(job_id)
    path = services().exporter.job_folder(job.id) / name
    if job.status != "complete" or not _FILE_NAME.match(name) or not path.is_file():
        raise NotFound(f"Export {job_id} has no file {name}")
    return send_file(path, mimetype=NDJSON, conditional=False, etag=False)
