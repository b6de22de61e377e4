"""The pages' two writes, each an ordinary FHIR update through the repository in the caller's
unit of work (so it is validated, versioned, indexed, and the before-commit steps run: the care
planner clears a completed Task's overdue Flag and reminders, and Provenance names the
principal). No Flask here; the view appends the AuditEvent and commits.

    complete_follow_up(uow, guard, "task-1", expected_version="3", now=...) -> StoredResource
    acknowledge_flag(uow, guard, "flag-9", expected_version="1", now=...)   -> StoredResource
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from service.fhir.errors import Conflict, NotFound, PreconditionFailed
from service.security import AccessGuard
from service.store import StoredResource, UnitOfWork
from service.store.repository import format_instant
from service.web.acknowledgement import acknowledge, acknowledged_by
from service.workflows.care_plans import OPEN_TASK


def _expected(version: str | None) -> int | None:
    return int(version) if version and version.isdigit() else None


def _to_update(uow: UnitOfWork, guard: AccessGuard, res_type: str, res_id: str, expected_version: str | None,
               noun: str) -> tuple[StoredResource, dict[str, Any]]:
    """The current version of a resource a page action is about to update, and its content:
    NotFound / Gone when unknown, deleted or not visible to the principal, Forbidden without
    update scope, PreconditionFailed when it changed since the page showed expected_version."""
    stored = uow.repo.read(res_type, res_id)
    resource = stored.resource()
    if not guard.visible(res_type, resource):
        raise NotFound(f"{res_type}/{res_id} is not known")
    guard.check("u", res_type, resource)
    expected = _expected(expected_version)
    if expected is not None and expected != stored.version:
        raise PreconditionFailed(f"This {noun} changed since the page was shown; look at it again")
    return stored, resource


def complete_follow_up(uow: UnitOfWork, guard: AccessGuard, task_id: str, *, expected_version: str | None,
                       now: datetime) -> StoredResource:
    """Set an open Task's status to completed (executionPeriod.end and lastModified = now).

    expected_version is the version the page showed: a Task changed since then is not
    overwritten. Raises NotFound / Gone for an unknown or deleted Task (NotFound also when the
    principal may not see it), Forbidden without Task update scope, PreconditionFailed when
    the Task changed since the page showed it, Conflict when it is no longer open."""
    stored, task = _to_update(uow, guard, "Task", task_id, expected_version, "follow-up")
    if task.get("status") not in OPEN_TASK:
        raise Conflict(f"This follow-up is already {task.get('status')}")
    instant = format_instant(now)
    task["status"] = "completed"
    task["executionPeriod"] = {**(task.get("executionPeriod") or {}), "end": instant}
    if "start" in task["executionPeriod"] and task["executionPeriod"]["start"] > instant:
        del task["executionPeriod"]["start"]
    task["lastModified"] = instant
    written, _ = uow.repo.update("Task", task_id, task, if_match=stored.version)
    return written


def acknowledge_flag(uow: UnitOfWork, guard: AccessGuard, flag_id: str, *, expected_version: str | None,
                     now: datetime) -> StoredResource:
    """Tag an active Flag as acknowledged by the principal today (service.web.acknowledgement).

    Raises NotFound / Gone, Forbidden without Flag update scope, PreconditionFailed when the
    Flag changed since the page showed it, Conflict when it is not active or already
    acknowledged."""
    stored, flag = _to_update(uow, guard, "Flag", flag_id, expected_version, "flag")
    if flag.get("status") != "active":
        raise Conflict(f"This flag is {flag.get('status')}, not active")
    if acknowledged_by(flag):
        raise Conflict("This flag is already acknowledged")
    who = guard.principal.subject
    written, _ = uow.repo.update("Flag", flag_id, acknowledge(flag, who, now.date()), if_match=stored.version)
    return written
