"""Care plans for confirmed TOH episodes, kept in step with the course; a before-commit step
(after the clinical watch) and the plan side of the sweep.

- A TOH Condition that is confirmed (verificationStatus confirmed) and active gets one CarePlan
  from the follow-up PlanDefinition (`Settings.followup_plan`), with one Task per timed action,
  in the transaction that confirmed it. A second Condition in the same episode (an encounter
  copy of the problem-list entry) joins the episode's plan instead of making another.
- Resolution of the episode completes the plan and cancels its open Tasks; a refuted,
  entered-in-error or deleted Condition revokes it. Actions the PlanDefinition defers (the 18-
  and 24-month reviews, decided at 12 months) are added on their decision day by the sweep.
- The service tells its own writes from a clinician's by remembering, per managed CarePlan and
  Task, the status (and due window) it last wrote (store.followup). A stored resource holding
  another value was changed by someone else: the service leaves that plan or Task as it is.

Idempotent: a plan per Condition is looked up in the care_plans table under the patient's lock
(the same lock the clinical watch takes), so a second write of the same Condition, a retried
bundle or two workers at once make one plan.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from service.clinical import Episode, FlagFinding, Terminology, flag_resource, next_time_change
from service.clinical.model import RESOLVED
from service.fhir.canonical import (CONDITION_VER_STATUS, IG, SD_TOH_CAREPLAN, SD_TOH_FOLLOWUP_TASK, TOH_CODES,
                                    VS_FOLLOWUP_TASK_CODES)
from service.fhir.errors import FhirError, NotFound
from service.fhir.references import parse_reference
from service.fhir.resources import new_id
from service.store import Repository, UnitOfWork
from service.store.followup import DueItem, FollowUps, PlanRow, TaskRow
from service.store.repository import format_instant
from service.workflows.clinical_watch import ClinicalWatch, patient_of
from service.workflows.protocol import Actions, FollowUp, ProtocolError, plan_actions

log = logging.getLogger(__name__)

# Identifier system of the follow-up-overdue Flags (one per Task); not the rules' key system,
# so the clinical watch's reconciliation never touches them.
FOLLOW_UP_FLAG_KEY_SYSTEM = f"{IG}/NamingSystem/toh-follow-up-flag-key"
FOLLOW_UP_OVERDUE = "follow-up-overdue"
ENDED_PLAN = frozenset({"completed", "revoked", "entered-in-error"})
HELD_PLAN = frozenset({"on-hold", "completed", "revoked", "entered-in-error"})
OPEN_TASK = frozenset({"requested", "received", "accepted", "ready", "in-progress"})
SERVICE_TASK_STATUSES = frozenset({"requested", "ready"})  # the statuses the service sets
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})


def midnight(day: date) -> datetime:
    """00:00 UTC of a clinical date: when work that falls due on that date becomes due."""
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def _verification(condition: dict[str, Any]) -> set[str]:
    return {c.get("code") for c in (condition.get("verificationStatus") or {}).get("coding") or ()
            if c.get("system") in (CONDITION_VER_STATUS, None)}


def is_confirmed(condition: dict[str, Any]) -> bool:
    """verificationStatus is confirmed (condition-ver-status)."""
    return "confirmed" in _verification(condition)


def task_window(task: dict[str, Any]) -> tuple[date, date] | None:
    """A Task's due window (restriction.period start, end; a missing start is the end), or None."""
    from service.clinical.dates import parse_date
    period = (task.get("restriction") or {}).get("period") or {}
    end = parse_date(period.get("end"))
    start = parse_date(period.get("start")) or end
    return None if start is None or end is None else (start, end)


@dataclass
class Policy:
    """How the follow-ups run: the PlanDefinition (canonical URL or PlanDefinition/id), the
    lead time before a window opens (days) and the grace after it closes (days)."""

    plan: str
    lead_days: int = 7
    grace_days: int = 14

    def ready_on(self, window: tuple[date, date]) -> date:
        """The day a Task becomes ready: lead_days before its window opens."""
        return window[0] - timedelta(days=self.lead_days)

    def overdue_on(self, window: tuple[date, date]) -> date:
        """The first day a Task is overdue: more than grace_days after its window's last day."""
        return window[1] + timedelta(days=self.grace_days + 1)


class CarePlanner:
    """Makes and keeps the follow-up plans; the care-plan before-commit step and the sweep's
    handlers ("task" and "patient" due work)."""

    def __init__(self, watch: ClinicalWatch, terminology: Terminology, policy: Policy) -> None:
        self.watch = watch
        self.terminology = terminology
        self.policy = policy

    # -- the before-commit step ------------------------------------------------------------------
    def before_commit(self, uow: UnitOfWork) -> None:
        """Plans for the patients whose Conditions this transaction wrote; due work and overdue
        Flags for the follow-up Tasks and plans it wrote (including the plans' own Tasks)."""
        base = self.watch.base_urls
        patients: set[str] = set()
        for change in list(uow.changes):
            if change.res_type != "Condition":
                continue
            before = change.previous.resource() if change.previous and change.previous.content else None
            patients.update(p for p in (patient_of(change.resource, base), patient_of(before, base)) if p)
        today = uow.clock.now().date()
        for patient_id in sorted(patients):
            self.reconcile_patient(uow, patient_id, today)
        tasks: dict[str, dict[str, Any] | None] = {}
        created: set[str] = set()
        plans: set[str] = set()
        for change in uow.changes:
            if change.res_type == "Task":
                tasks[change.res_id] = change.resource
                if change.previous is None:
                    created.add(change.res_id)
            elif change.res_type == "CarePlan" and change.previous is not None:
                old = change.previous.resource().get("status") if change.previous.content else None
                new = (change.resource or {}).get("status")
                if old != new:
                    plans.add(change.res_id)
        for careplan_id in sorted(plans):
            for task_id in uow.repo.find_ids("Task", [("based-on", f"CarePlan/{careplan_id}")]):
                tasks.setdefault(task_id, uow.repo.read("Task", task_id).resource())
        for task_id, task in sorted(tasks.items()):
            self.task_written(uow, task_id, task, today, created=task_id in created)

    # -- plans --------------------------------------------------------------------------------------
    def plan_definition(self, repo: Repository) -> dict[str, Any]:
        """The configured PlanDefinition (canonical URL, or PlanDefinition/id); raises NotFound."""
        ref = self.policy.plan
        if ref.startswith("PlanDefinition/"):
            return repo.read("PlanDefinition", ref.split("/", 1)[1]).resource()
        ids = repo.find_ids("PlanDefinition", [("url", ref.split("|", 1)[0])])
        if not ids:
            raise NotFound(f"The follow-up PlanDefinition {ref} (TOH_FOLLOWUP_PLAN) is not stored")
        return repo.read("PlanDefinition", ids[-1]).resource()

    def reconcile_patient(self, uow: UnitOfWork, patient_id: str, today: date) -> list[str]:
        """Bring the patient's plans in line with their Conditions as of today, and schedule the
        next day their assessment or plans can change by time alone. Returns what it did."""
        repo = uow.repo
        repo.lock(f"toh-assessment:{patient_id}")
        followups = FollowUps(uow.conn, uow.database.dialect)
        assessment = self.watch.assessment(repo, patient_id, today)
        ids = repo.find_ids("Condition", [("patient", f"Patient/{patient_id}")])
        conditions = {s.res_id: s.resource() for s in repo.read_many("Condition", ids)}
        episodes: dict[str, list[Episode]] = {}
        for episode in assessment.episodes:
            for ref in episode.evidence:
                if ref.startswith("Condition/"):
                    episodes.setdefault(ref.split("/", 1)[1], []).append(episode)
        current: dict[str, PlanRow] = {}
        for row in followups.plans_of(patient_id):
            current[row.condition_id] = row   # the latest generation wins
        done: list[str] = []
        definition: dict[str, Any] | None = None
        decisions: list[date] = []

        def protocol(condition: dict[str, Any], onset: date) -> tuple[dict[str, Any], Actions] | None:
            """The PlanDefinition and what it asks; None (logged) when it is missing or cannot
            be applied: a clinic's broken protocol must not stop the clinical write itself."""
            nonlocal definition
            try:
                if definition is None:
                    definition = self.plan_definition(repo)
                return definition, self._actions(definition, condition, onset, today)
            except FhirError as exc:
                log.error("no follow-up plan for Patient/%s: %s", patient_id, exc)
                return None

        for condition_id, row in sorted(current.items()):
            if row.status in ENDED_PLAN:
                continue
            stored = repo.current("CarePlan", row.careplan_id)
            if stored is None or stored[1].deleted:
                continue
            careplan = stored[1].resource()
            if careplan.get("status") != row.status:
                continue  # a clinician's status (on hold, ended by hand): theirs
            condition = conditions.get(condition_id)
            eps = episodes.get(condition_id, [])
            if condition is None or _verification(condition) & EXCLUDED_VERIFICATION:
                done += self._end(uow, followups, row, careplan, "revoked", today,
                                  f"Diagnosis Condition/{condition_id} refuted or withdrawn")
            elif eps and all(e.status == RESOLVED for e in eps):
                resolved_on = max((e.resolution_date for e in eps if e.resolution_date), default=today)
                done += self._end(uow, followups, row, careplan, "completed", resolved_on,
                                  f"Episode resolved on {resolved_on.isoformat()}")
            elif eps and (applied := protocol(condition, date.fromisoformat(row.onset))) is not None:
                actions = applied[1]
                done += self._add_follow_ups(uow, followups, row, careplan, actions, today)
                if actions.next_decision():
                    decisions.append(actions.next_decision())  # type: ignore[arg-type]
        for condition_id, condition in sorted(conditions.items()):
            eps = episodes.get(condition_id, [])
            onsets = [e.onset for e in eps if e.onset is not None]
            if not is_confirmed(condition) or not onsets or all(e.status == RESOLVED for e in eps):
                continue
            previous = current.get(condition_id)
            if previous is not None and previous.status != "revoked":
                continue
            others = {ref.split("/", 1)[1] for e in eps for ref in e.evidence if ref.startswith("Condition/")}
            if any(current[o].status not in ENDED_PLAN for o in others - {condition_id} if o in current):
                continue  # a copy of a Condition whose episode already has a plan
            generation = 1 if previous is None else previous.generation + 1
            applied = protocol(condition, min(onsets))
            if applied is None:
                continue
            actions = applied[1]
            done += self._create(uow, followups, applied[0], patient_id, condition_id, generation,
                                 min(onsets), actions, today)
            if actions.next_decision():
                decisions.append(actions.next_decision())  # type: ignore[arg-type]
        upcoming = [d for d in (next_time_change(assessment.episodes, today), *decisions) if d]
        followups.schedule("patient", patient_id, midnight(min(upcoming)) if upcoming else None)
        return done

    @staticmethod
    def _actions(definition: dict[str, Any], condition: dict[str, Any], onset: date, today: date) -> Actions:
        try:
            return plan_actions(definition, condition, onset, today)
        except ProtocolError as exc:
            raise FhirError(f"The follow-up PlanDefinition cannot be applied: {exc}") from exc

    def _task(self, follow_up: FollowUp, plan_url: str, careplan: str, patient_id: str, condition_id: str,
              now: datetime) -> dict[str, Any]:
        task: dict[str, Any] = {
            "resourceType": "Task",
            "instantiatesUri": f"{plan_url}#{follow_up.action_id}",
            "basedOn": [{"reference": careplan}],
            "status": "requested",
            "intent": "order",
            "description": follow_up.title,
            "focus": {"reference": f"Condition/{condition_id}"},
            "for": {"reference": f"Patient/{patient_id}"},
            "authoredOn": format_instant(now),
            "restriction": {"period": {"start": follow_up.start.isoformat(), "end": follow_up.end.isoformat()}},
        }
        if follow_up.code is not None:
            task["code"] = follow_up.code
            if self.terminology.contains(VS_FOLLOWUP_TASK_CODES, follow_up.code, text="none"):
                task = {"resourceType": "Task", "meta": {"profile": [SD_TOH_FOLLOWUP_TASK]},
                        **{k: v for k, v in task.items() if k != "resourceType"}}
        return task

    def careplan_resource(self, definition: dict[str, Any], actions: Actions, patient_id: str,
                          condition_id: str, onset: date, now: datetime,
                          task_refs: list[str]) -> dict[str, Any]:
        """The CarePlan of one episode (profile toh-careplan): the untimed actions as activities
        in progress, the Tasks as activity references."""
        activity: list[dict[str, Any]] = []
        for act in actions.activities:
            detail: dict[str, Any] = {"kind": "ServiceRequest", "status": "in-progress", "description": act.title}
            if act.code is not None:
                detail["code"] = act.code
            activity.append({"detail": detail})
        activity += [{"reference": {"reference": ref}} for ref in task_refs]
        careplan: dict[str, Any] = {
            "resourceType": "CarePlan",
            "meta": {"profile": [SD_TOH_CAREPLAN]},
            "instantiatesCanonical": [definition.get("url") or self.policy.plan],
            "status": "active",
            "intent": "plan",
            "category": [{"coding": [{"system": TOH_CODES, "code": "toh-follow-up-plan",
                                      "display": "TOH follow-up plan"}]}],
            "title": definition.get("title") or "TOH follow-up plan",
            "subject": {"reference": f"Patient/{patient_id}"},
            "period": {"start": onset.isoformat()},
            "created": format_instant(now),
            "addresses": [{"reference": f"Condition/{condition_id}"}],
        }
        if activity:
            careplan["activity"] = activity
        return careplan

    def _create(self, uow: UnitOfWork, followups: FollowUps, definition: dict[str, Any], patient_id: str,
                condition_id: str, generation: int, onset: date, actions: Actions, today: date) -> list[str]:
        repo, now = uow.repo, uow.clock.now()
        careplan_id = new_id()
        plan_url = str(definition.get("url") or self.policy.plan)
        wanted = [f for f in actions.follow_ups if f.end >= today]  # a window already past is not planned
        task_ids = [new_id() for _ in wanted]
        careplan = self.careplan_resource(definition, actions, patient_id, condition_id, onset, now,
                                          [f"Task/{t}" for t in task_ids])
        repo.create(careplan, res_id=careplan_id)
        followups.add_plan(PlanRow(careplan_id, patient_id, condition_id, generation, plan_url,
                                   onset.isoformat(), "active"))
        for follow_up, task_id in zip(wanted, task_ids):
            repo.create(self._task(follow_up, plan_url, f"CarePlan/{careplan_id}", patient_id, condition_id, now),
                        res_id=task_id)
            followups.add_task(TaskRow(task_id, careplan_id, follow_up.action_id, "requested",
                                       follow_up.start.isoformat(), follow_up.end.isoformat()))
        return [f"CarePlan/{careplan_id} created for Condition/{condition_id} with {len(wanted)} Tasks"]

    def _add_follow_ups(self, uow: UnitOfWork, followups: FollowUps, row: PlanRow, careplan: dict[str, Any],
                        actions: Actions, today: date) -> list[str]:
        have = {t.action_id for t in followups.tasks_of(row.careplan_id)}
        new = [f for f in actions.follow_ups if f.action_id not in have and f.end >= today]
        if not new:
            return []
        repo, now = uow.repo, uow.clock.now()
        refs = []
        for follow_up in new:
            task_id = new_id()
            repo.create(self._task(follow_up, row.plan_url, f"CarePlan/{row.careplan_id}", row.patient_id,
                                   row.condition_id, now), res_id=task_id)
            followups.add_task(TaskRow(task_id, row.careplan_id, follow_up.action_id, "requested",
                                       follow_up.start.isoformat(), follow_up.end.isoformat()))
            refs.append(f"Task/{task_id}")
        updated = copy.deepcopy(careplan)
        updated["activity"] = list(updated.get("activity") or []) + [{"reference": {"reference": r}} for r in refs]
        repo.update("CarePlan", row.careplan_id, updated)
        return [f"CarePlan/{row.careplan_id}: added {', '.join(f.action_id for f in new)}"]

    def _end(self, uow: UnitOfWork, followups: FollowUps, row: PlanRow, careplan: dict[str, Any], status: str,
             day: date, reason: str) -> list[str]:
        repo = uow.repo
        updated = copy.deepcopy(careplan)
        updated["status"] = status
        period = dict(updated.get("period") or {})
        start = period.get("start")
        period["end"] = max(day.isoformat(), start[:10]) if isinstance(start, str) else day.isoformat()
        updated["period"] = period
        for activity in updated.get("activity") or ():
            detail = activity.get("detail")
            if detail and detail.get("status") in ("not-started", "scheduled", "in-progress"):
                detail["status"] = "completed" if status == "completed" else "cancelled"
        repo.update("CarePlan", row.careplan_id, updated)
        followups.set_plan_status(row.careplan_id, status)
        cancelled = 0
        for task_row in followups.tasks_of(row.careplan_id):
            found = repo.current("Task", task_row.task_id)
            if found is None or found[1].deleted:
                continue
            task = found[1].resource()
            if task.get("status") != task_row.status or task_row.status not in SERVICE_TASK_STATUSES:
                continue  # completed, cancelled or moved on by a clinician: theirs
            task["status"] = "cancelled"
            task["statusReason"] = {"text": reason}
            task["lastModified"] = format_instant(uow.clock.now())
            repo.update("Task", task_row.task_id, task)
            followups.set_task_status(task_row.task_id, "cancelled")
            cancelled += 1
        return [f"CarePlan/{row.careplan_id} {status}, {cancelled} open Tasks cancelled ({reason})"]

    def apply(self, repo: Repository, definition: dict[str, Any], patient_id: str, today: date, *,
              condition_id: str | None = None, encounter: str | None = None,
              practitioner: str | None = None) -> dict[str, Any]:
        """PlanDefinition/$apply for one patient: the CarePlan the service would create for the
        patient's TOH episode (the given Condition, else the latest active episode), its Tasks
        contained; nothing is stored. Raises Unprocessable when there is no episode to plan for.
        https://hl7.org/fhir/R4/plandefinition-operation-apply.html"""
        from service.fhir.errors import Unprocessable
        assessment = self.watch.assessment(repo, patient_id, today)
        candidates = [e for e in assessment.episodes if e.onset is not None]
        if condition_id is not None:
            candidates = [e for e in candidates if f"Condition/{condition_id}" in e.evidence]
        else:
            candidates = [e for e in candidates if e.status != RESOLVED]
        if not candidates:
            what = f"Condition/{condition_id}" if condition_id else f"Patient/{patient_id}"
            raise Unprocessable(f"{what}: no TOH episode with an onset to plan for")
        episode = max(candidates, key=lambda e: (e.onset or date.min, e.evidence))
        onset = episode.onset
        assert onset is not None
        chosen = condition_id or next(r for r in episode.evidence if r.startswith("Condition/")).split("/", 1)[1]
        condition = repo.read("Condition", chosen).resource()
        actions = self._actions(definition, condition, onset, today)
        plan_url = str(definition.get("url") or self.policy.plan)
        follow_ups = [f for f in actions.follow_ups if f.end >= today]
        now = datetime.combine(today, time(12), tzinfo=timezone.utc)
        tasks = []
        for follow_up in follow_ups:
            task = self._task(follow_up, plan_url, "#", patient_id, chosen, now)
            task["id"] = follow_up.action_id
            task.pop("authoredOn", None)
            if practitioner:
                task["requester"] = {"reference": practitioner}
            if encounter:
                task["encounter"] = {"reference": encounter}
            tasks.append(task)
        careplan = self.careplan_resource(definition, actions, patient_id, chosen, onset, now,
                                          [f"#{t['id']}" for t in tasks])
        careplan.pop("created", None)
        if tasks:
            careplan["contained"] = tasks
        if encounter:
            careplan["encounter"] = {"reference": encounter}
        if practitioner:
            careplan["author"] = {"reference": practitioner}
        return careplan

    # -- Tasks: due work and overdue Flags ------------------------------------------------------------
    def is_follow_up(self, task: dict[str, Any]) -> bool:
        """A Task coded from the guide's follow-up codes, with a due window."""
        return (self.terminology.contains(VS_FOLLOWUP_TASK_CODES, task.get("code"), text="none")
                and task_window(task) is not None)

    def _patient(self, task: dict[str, Any]) -> str | None:
        target = (task.get("for") or {}).get("reference")
        ref = parse_reference(target, self.watch.base_urls) if isinstance(target, str) else None
        return ref.target_id if ref is not None and ref.target_type == "Patient" else None

    def _held(self, repo: Repository, task: dict[str, Any]) -> bool:
        """The Task's CarePlan is on hold or ended, so its schedule is paused."""
        for based_on in task.get("basedOn") or ():
            ref = parse_reference(based_on.get("reference") or "", self.watch.base_urls)
            if ref is None or ref.target_type != "CarePlan" or ref.target_id is None:
                continue
            found = repo.current("CarePlan", ref.target_id)
            if found is not None and not found[1].deleted and found[1].resource().get("status") in HELD_PLAN:
                return True
        return False

    def _overdue_flags(self, repo: Repository, task_id: str) -> list[dict[str, Any]]:
        ids = repo.find_ids("Flag", [("identifier", f"{FOLLOW_UP_FLAG_KEY_SYSTEM}|Task/{task_id}")])
        return [s.resource() for s in repo.read_many("Flag", ids)]

    def next_due(self, repo: Repository, task_id: str, task: dict[str, Any] | None, today: date) -> date | None:
        """The clinical date of the Task's next transition (ready, then overdue), or None."""
        if task is None or task.get("status") not in OPEN_TASK or not self.is_follow_up(task):
            return None
        window = task_window(task)
        assert window is not None
        if self._held(repo, task):
            return None
        if task.get("status") == "requested":
            return self.policy.ready_on(window)
        overdue_on = self.policy.overdue_on(window)
        if overdue_on <= today and any(f.get("status") == "active" for f in self._overdue_flags(repo, task_id)):
            return None
        return overdue_on

    def task_written(self, uow: UnitOfWork, task_id: str, task: dict[str, Any] | None, today: date, *,
                     created: bool = False) -> None:
        """After a Task write: clear its overdue Flag if it is done, cancelled or moved out of
        overdue; cancel its pending reminders when it is closed; schedule its next transition.
        A Task created in this transaction has no Flag or reminder yet (nothing to clear)."""
        if task is not None and not self.is_follow_up(task):
            return
        repo = uow.repo
        followups = FollowUps(uow.conn, uow.database.dialect)
        closed = task is None or task.get("status") not in OPEN_TASK
        window = task_window(task) if task is not None else None
        if not created and (closed or (window is not None and today < self.policy.overdue_on(window))):
            for flag in self._overdue_flags(repo, task_id):
                if flag.get("status") == "active":
                    flag["status"] = "inactive"
                    flag["period"] = {**flag.get("period", {}), "end": max(today.isoformat(),
                                                                            flag.get("period", {}).get("start", ""))}
                    repo.update("Flag", flag["id"], flag)
        if closed and not created:
            followups.cancel_reminders(f"Task/{task_id}")
        due = self.next_due(repo, task_id, task, today)
        followups.schedule("task", task_id, midnight(due) if due else None)

    # -- the sweep's handlers --------------------------------------------------------------------------
    def advance_task(self, uow: UnitOfWork, item: DueItem, now: datetime) -> list[str]:
        """Due work "task": make the Task ready when its window (less the lead time) opens, raise
        its follow-up-overdue Flag (dated the day it became overdue) and queue the reminders."""
        repo, today, task_id = uow.repo, now.date(), item.subject
        followups = FollowUps(uow.conn, uow.database.dialect)
        found = repo.current("Task", task_id, for_update=True)
        task = None if found is None or found[1].deleted else found[1].resource()
        done: list[str] = []
        if task is None or not self.is_follow_up(task) or task.get("status") not in OPEN_TASK \
                or self._held(repo, task):
            return done
        window = task_window(task)
        patient_id = self._patient(task)
        assert window is not None
        if task.get("status") == "requested" and today >= self.policy.ready_on(window):
            task["status"] = "ready"
            task["lastModified"] = format_instant(now)
            repo.update("Task", task_id, task)
            if followups.task(task_id) is not None:
                followups.set_task_status(task_id, "ready")
            if patient_id:
                followups.queue_reminder(
                    key=f"follow-up-due|Task/{task_id}|{window[0].isoformat()}", kind="follow-up-due",
                    patient_id=patient_id, about=f"Task/{task_id}", due_on=self.policy.ready_on(window).isoformat(),
                    payload={"text": f"{task.get('description') or 'Follow-up'} due {_span(window)}",
                             "task": f"Task/{task_id}", "patient": f"Patient/{patient_id}",
                             "window": {"start": window[0].isoformat(), "end": window[1].isoformat()}},
                    now=now)
            done.append(f"Task/{task_id} ready (window {_span(window)})")
        overdue_on = self.policy.overdue_on(window)
        if not done and today >= overdue_on and patient_id:  # one transition per item: due order
            flags = self._overdue_flags(repo, task_id)
            if not any(f.get("status") == "active" for f in flags):
                text = (f"{task.get('description') or 'Follow-up'} was due {_span(window)} and is not done "
                        f"(overdue since {overdue_on.isoformat()})")
                finding = FlagFinding(FOLLOW_UP_OVERDUE, "Follow-up overdue", overdue_on, text,
                                      tuple(r for r in (f"Task/{task_id}", (task.get("focus") or {}).get("reference"))
                                            if r), f"Task/{task_id}")
                flag = flag_resource(finding, f"Patient/{patient_id}")
                flag["identifier"] = [{"system": FOLLOW_UP_FLAG_KEY_SYSTEM, "value": f"Task/{task_id}"}]
                if flags:   # raised before, cleared by a reschedule: the same Flag holds again
                    flag = {**flags[0], **{k: v for k, v in flag.items() if k != "meta"}}
                    stored = repo.update("Flag", flags[0]["id"], flag)[0]
                else:
                    stored = repo.create(flag)[0]
                followups.queue_reminder(
                    key=f"follow-up-overdue|Task/{task_id}|{window[1].isoformat()}", kind="follow-up-overdue",
                    patient_id=patient_id, about=f"Task/{task_id}", due_on=overdue_on.isoformat(),
                    payload={"text": text, "task": f"Task/{task_id}", "patient": f"Patient/{patient_id}",
                             "flag": stored.reference,
                             "window": {"start": window[0].isoformat(), "end": window[1].isoformat()}},
                    now=now)
                done.append(f"Task/{task_id} overdue since {overdue_on.isoformat()} ({stored.reference})")
        due = self.next_due(repo, task_id, task, today)
        followups.schedule("task", task_id, midnight(due) if due else None)
        return done

    def advance_patient(self, uow: UnitOfWork, item: DueItem, now: datetime) -> list[str]:
        """Due work "patient": re-assess the patient as of now (the rules' time-based Flags carry
        the clinical date they became true) and add the plan actions decided today."""
        repo, today, patient_id = uow.repo, now.date(), item.subject
        try:
            repo.read("Patient", patient_id)
        except FhirError:
            pass  # Conditions may name a Patient this server does not hold; assess them anyway
        changes = self.watch.evaluate(repo, patient_id, today)
        done = [f"Patient/{patient_id} re-assessed as of {today.isoformat()}: "
                f"{len(changes.create)} Flags raised, {len(changes.update) + len(changes.deactivate)} changed"]
        return done + self.reconcile_patient(uow, patient_id, today)


def _span(window: tuple[date, date]) -> str:
    start, end = window
    return start.isoformat() if start == end else f"{start.isoformat()} to {end.isoformat()}"
