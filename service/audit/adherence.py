"""The adherence report: was each care plan followed? A pure function over the CarePlans,
their Tasks, the patients' Flags and the Conditions the plans address, for a period.

    adherence(plans, tasks, flags, conditions, start, end, today) -> [PlanAdherence]

For each CarePlan active in [start, end] (its period overlaps it; draft and entered-in-error
plans are left out), the follow-ups due in the period are counted from what is stored:

- a Task based on the plan (the scheduling work creates one per follow-up; `restriction.period.end`
  is its due date, as the guide's toh-followup-task profile says), or an activity of the plan
  with a `detail` and a scheduled date (`scheduledPeriod.end`, else `.start`, else the first
  `scheduledTiming.event`), when no Task stands for it;
- done on time: completed by its due date (completion = Task.executionPeriod.end, else
  Task.lastModified, else meta.lastUpdated); done late: completed after it; an activity marked
  completed carries no completion date, so it counts as done on time;
- missed: due before `today` (or before the end of the period, if earlier), not done, not
  cancelled; cancelled: status cancelled (or revoked / stopped for an activity);
- open: due, but neither done nor missed yet.

Flags raised: the plan patient's Flags whose period starts within the period, each with the
days it stayed open (period.end, else open until today). Onset to resolution: from the
addressed Condition's onset to its abatement, in days (None while unresolved).

Dates are compared as calendar dates (the first 10 characters of a FHIR date/dateTime).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

ACTIVE_STATUSES = frozenset({"active", "on-hold", "completed", "revoked", "unknown"})
DONE = frozenset({"completed"})
CANCELLED = frozenset({"cancelled", "revoked", "stopped", "entered-in-error"})


def fhir_date(value: Any) -> date | None:
    """The calendar date of a FHIR date/dateTime/instant (year or month precision: its first day)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    parts = value[:10].split("-")
    try:
        return date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None


@dataclass
class FlagSpell:
    """One Flag raised in the period: its code, when it opened and how long it stayed open."""

    flag: str
    code: str
    opened: str
    closed: str | None
    days_open: int


@dataclass
class PlanAdherence:
    """One care plan's line of the report."""

    care_plan: str
    patient: str | None
    status: str
    period_start: str | None
    period_end: str | None
    followups_due: int = 0
    done_on_time: int = 0
    done_late: int = 0
    missed: int = 0
    cancelled: int = 0
    open: int = 0
    flags_raised: int = 0
    flags: list[FlagSpell] = field(default_factory=list)
    onset: str | None = None
    resolution: str | None = None
    onset_to_resolution_days: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _ref_id(reference: Any, res_type: str) -> str | None:
    text = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(text, str) or f"{res_type}/" not in text:
        return None
    return text.split(f"{res_type}/")[-1].split("/")[0]


def _overlaps(period: Mapping[str, Any] | None, start: date, end: date) -> bool:
    if not period:
        return False
    begins, ends = fhir_date(period.get("start")), fhir_date(period.get("end"))
    return (begins is None or begins <= end) and (ends is None or ends >= start)


def _task_due(task: Mapping[str, Any]) -> date | None:
    period = (task.get("restriction") or {}).get("period") or {}
    return fhir_date(period.get("end")) or fhir_date(period.get("start"))


def _task_done(task: Mapping[str, Any]) -> date | None:
    return (fhir_date((task.get("executionPeriod") or {}).get("end")) or fhir_date(task.get("lastModified"))
            or fhir_date((task.get("meta") or {}).get("lastUpdated")))


def _activity_due(detail: Mapping[str, Any]) -> date | None:
    period = detail.get("scheduledPeriod") or {}
    events = (detail.get("scheduledTiming") or {}).get("event") or []
    return fhir_date(period.get("end")) or fhir_date(period.get("start")) or (fhir_date(events[0]) if events else None)


def _count(line: PlanAdherence, status: str, due: date, done: date | None, cutoff: date) -> None:
    line.followups_due += 1
    if status in DONE:
        if done is not None and done > due:
            line.done_late += 1
        else:
            line.done_on_time += 1
    elif status in CANCELLED:
        line.cancelled += 1
    elif due < cutoff:
        line.missed += 1
    else:
        line.open += 1


def adherence(plans: Iterable[Mapping[str, Any]], tasks: Iterable[Mapping[str, Any]],
              flags: Iterable[Mapping[str, Any]], conditions: Iterable[Mapping[str, Any]],
              start: date, end: date, today: date) -> list[PlanAdherence]:
    """One line per care plan active in [start, end] (see module docstring), by plan id."""
    tasks_by_plan: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        for based_on in task.get("basedOn") or []:
            plan_id = _ref_id(based_on, "CarePlan")
            if plan_id:
                tasks_by_plan.setdefault(plan_id, []).append(task)
    flags_by_patient: dict[str, list[Mapping[str, Any]]] = {}
    for flag in flags:
        patient = _ref_id(flag.get("subject"), "Patient")
        if patient:
            flags_by_patient.setdefault(patient, []).append(flag)
    conditions_by_id = {str(c.get("id")): c for c in conditions}
    cutoff = min(today, end)
    lines = []
    for plan in sorted(plans, key=lambda p: str(p.get("id"))):
        period = plan.get("period") or {}
        if plan.get("status") not in ACTIVE_STATUSES or not _overlaps(period, start, end):
            continue
        patient = _ref_id(plan.get("subject"), "Patient")
        line = PlanAdherence(f"CarePlan/{plan.get('id')}", patient, str(plan.get("status")),
                             period.get("start"), period.get("end"))
        plan_tasks = tasks_by_plan.get(str(plan.get("id")), [])
        task_ids = {str(t.get("id")) for t in plan_tasks}
        for task in plan_tasks:
            due = _task_due(task)
            if due is not None and start <= due <= end:
                _count(line, str(task.get("status")), due, _task_done(task), cutoff)
        for activity in plan.get("activity") or []:
            if _ref_id(activity.get("reference"), "Task") in task_ids:
                continue   # counted through its Task
            detail = activity.get("detail") or {}
            due = _activity_due(detail)
            if due is not None and start <= due <= end:
                _count(line, str(detail.get("status")), due, None, cutoff)
        for flag in flags_by_patient.get(patient or "", []):
            flag_period = flag.get("period") or {}
            opened = fhir_date(flag_period.get("start"))
            if opened is None or not start <= opened <= end:
                continue
            closed = fhir_date(flag_period.get("end"))
            codes = ((flag.get("code") or {}).get("coding") or [{}])
            line.flags.append(FlagSpell(f"Flag/{flag.get('id')}", str(codes[0].get("code")), opened.isoformat(),
                                        closed.isoformat() if closed else None,
                                        ((closed or today) - opened).days))
        line.flags_raised = len(line.flags)
        for address in plan.get("addresses") or []:
            condition = conditions_by_id.get(_ref_id(address, "Condition") or "")
            if condition is None:
                continue
            onset = fhir_date(condition.get("onsetDateTime")) or fhir_date((condition.get("onsetPeriod") or {}).get("start"))
            resolved = (fhir_date(condition.get("abatementDateTime"))
                        or fhir_date((condition.get("abatementPeriod") or {}).get("end"))
                        or fhir_date((condition.get("abatementPeriod") or {}).get("start")))
            line.onset = onset.isoformat() if onset else None
            line.resolution = resolved.isoformat() if resolved else None
            line.onset_to_resolution_days = (resolved - onset).days if onset and resolved else None
            break
        lines.append(line)
    return lines


CSV_COLUMNS = ("care_plan", "patient", "status", "period_start", "period_end", "followups_due", "done_on_time",
               "done_late", "missed", "cancelled", "open", "flags_raised", "flags", "onset", "resolution",
               "onset_to_resolution_days")


def csv_rows(lines: Iterable[PlanAdherence]) -> list[list[str]]:
    """The report as CSV rows (header first); flags as 'code opened..closed (N days)' joined by '; '."""
    rows = [list(CSV_COLUMNS)]
    for line in lines:
        values = line.as_json()
        values["flags"] = "; ".join(f"{f.code} {f.opened}..{f.closed or 'open'} ({f.days_open} days)"
                                    for f in line.flags)
        rows.append(["" if values[c] is None else str(values[c]) for c in CSV_COLUMNS])
    return rows
